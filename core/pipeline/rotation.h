#pragma once
// QuaRot-style Hadamard rotation of a loaded model (METHODS.md §5): a copy of the model that
// computes the same function in exact arithmetic, with outlier-free (rotated) activations.
//
//   1. RMSNorm gains folded into the following linears: q, k, v <- W·diag(γ_in); gate, up <-
//      W·diag(γ_post); lm_head <- W·diag(γ_final); the gains become 1 (plain RMS scaling commutes
//      with an orthogonal map, since ‖xQ‖ = ‖x‖). A tied lm_head is untied first (it gets its own
//      copy of the embedding), because the embedding and lm_head are rotated on different sides.
//   2. The residual stream is rotated by a randomized Hadamard Q = diag(±1)·H/√K of the hidden size
//      (model/hadamard.h, seeded): E <- E·Q; q, k, v, gate, up, lm_head <- W·Q; o, down <- Qᵀ·W
//      and their biases b <- b·Q. Every hidden state is then h·Q.
//   3. Optional online Hadamards (plain, normalised), held in each layer's LayerRuntime
//      (model/runtime.h) because no fold is possible on an activation's own side:
//      down_proj input  x <- x·H_I,  W_down <- W_down·H_I   (runtime inputs[Down].rotate);
//      o_proj input     x <- x·H_A,  W_o <- W_o·H_A, A = heads·head_dim (inputs[O].rotate);
//      q and k per head after RoPE, x <- x·H_d (kv.qkRotate): nothing folded, it cancels in QKᵀ.
// Steps 1–2 give ordinary weights (export as safetensors/GGUF like any model); step 3 does not, and
// RotationResult::online says which transforms would be lost in a plain weights file.
// Refused: architectures where the invariance does not hold, i.e. Gemma's RMSNorms of the attention
// and MLP outputs before the residual add (ModelConfig::gemmaNorms): their gains act on the
// rotated residual coordinates and cannot be folded past the normalisation. Also refused: layers
// that already carry online transforms (rotate before smoothing or other runtime transforms).
// Threading: the job runs on the caller's thread (the transforms parallelise over rows with OpenMP)
// and polls ctx between layers; the input model is never modified (also on cancel). Memory: the
// result is a full F32 copy of the model.

#include "base/result.h"
#include "base/run_context.h"
#include "model/hadamard.h"
#include "model/model.h"

#include <cstdint>
#include <memory>
#include <string>

namespace qb::pipeline {

struct RotationOptions {
    std::uint64_t seed = 0; // signs of the residual Hadamard (std::mt19937_64, see model/hadamard.h)
    bool onlineDown = false;
    bool onlineO = false;
    bool qk = false;
    // Where a width has no Hadamard construction, use the block-diagonal form (still orthogonal,
    // so still exact) instead of failing.
    bool allowBlocks = true;
};

struct RotationResult {
    std::shared_ptr<model::Model> model;
    std::shared_ptr<const model::HadamardTransform> residual;    // Q of the residual stream
    std::shared_ptr<const model::HadamardTransform> down, o, qk; // online ones (null when off)
    // LayerRuntime::onlineTransforms() of the layers: what a plain weights file cannot hold ("" when
    // every rotation is folded into the weights).
    std::string online;
};

Result<RotationResult> rotateModel(const model::Model& model, const RotationOptions& options,
                                   RunContext* ctx = nullptr);

// The folds on their own (for tests and for other rotations): W <- W·diag(gain) on every row.
void scaleInputColumns(model::RowMatrix& w, const model::RowVector& gain);
// W <- Tᵀ·W (the output side: W's columns rotated), for W [T.size(), in].
void rotateOutputRows(model::RowMatrix& w, const model::RowTransform& t);

} // namespace qb::pipeline
