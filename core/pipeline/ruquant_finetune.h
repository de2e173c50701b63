#pragma once
// RUQuant's fine-tuning of the global Householder vector ω (METHODS.md §4(a) item 5, "--lh"): per
// decoder layer, one trainable ω per linear input group, trained with AdamW (weight decay 0) to
// minimise the MSE between the FP layer's output on FP inputs and the quantized layer's output on
// quantized inputs, one calibration window per step, `epochs` passes, the best epoch kept.
//
// The quantized layer, as the runtime computes it: per group the input x is divided by the online
// smoothing divisor (if any), multiplied by the fixed part F = blockdiag(R₁)·Π·blockdiag(R₂), then
// by P_ω = I − 2uuᵀ (u = ω/‖ω‖), then fake-quantized per token; the group's weights are
// Q_w(M·P_ω), M = W_smoothed·F, per output channel RTN with clipping; q and k get the per-head
// Hadamard after RoPE and q/k/v their per-(head, token) quantizers. Gradients flow through the
// decoder layer's backward pass (model/backward.h, LayerHooks) with the straight-through estimator
// at every fake quantizer, so only P_ω's dependence on ω is differentiated:
//   for rows z (before P_ω) with gradient g of the rows after it:  ∂L/∂u = −2 (zᵀ(g·u) + gᵀ(z·u)),
//   the same for the weight rows M with their gradients, and ∂L/∂ω = (I − uuᵀ)·∂L/∂u / ‖ω‖.
// Before each step every |ω_i| < 1e-2 is pushed to ±1e-2 (the reference code's guard).
// Threading: calling thread (GEMMs and loops use OpenMP); ctx polled between steps.
// Memory: one window's layer intermediates (LayerCache) plus the group inputs z kept for the
// backward step, and the group weights M (F32) once more.

#include "base/result.h"
#include "base/run_context.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/runtime.h"

#include <Eigen/Core>

#include <array>
#include <memory>
#include <optional>
#include <vector>

namespace qb::pipeline {

struct ReflectionGroup {
    model::RowVector smoothDivisor;                   // empty: none
    std::shared_ptr<const model::RowTransform> fixed; // F (null: identity)
    Eigen::VectorXd omega;                            // the trainable vector (size C; empty: no P_ω)
    std::vector<model::Linear> linears;               // the group's linears
    std::vector<model::RowMatrix> base;               // M = W·F per linear
    model::ActQuantSpec act;                          // the group's activation quantizer
};

struct ReflectionSetup {
    std::array<std::optional<ReflectionGroup>, 4> groups; // by model::LinearKind; absent: not trained
    std::shared_ptr<const model::RowTransform> qkRotate;  // per head, may be null
    model::ActQuantSpec q, k, v;
    int weightBits = 0; // 0: weights unquantized
    double weightClip = 1.0;
    // Where P_ω is applied. Both (the method): x·P·(M·P)ᵀ = x·Mᵀ, so without quantization the loss
    // does not depend on ω at all and its gradient is 0; one side alone makes the loss a smooth
    // function of ω, which is how the tests check each side's gradient against finite differences.
    enum class Sides { Both, InputsOnly, WeightsOnly };
    Sides sides = Sides::Both;
};

struct ReflectionTraining {
    double lossBefore = 0, lossAfter = 0; // mean MSE over the windows, before and after
    int steps = 0;
    int bestEpoch = 0; // the epoch whose ω's were kept (0: none ended lower, the initial ones)
    double seconds = 0;
    bool kept = false; // no epoch lowered the loss: the initial ω's were restored
};

// Trains every present group's ω in place. After each epoch the mean loss over the windows is
// measured, and the ω's of the epoch with the lowest one are kept; where no epoch ended below the
// start, the initial ω's are (kept; lossAfter = lossBefore): fine-tuning never leaves a layer worse
// on its calibration windows. layer: a copy of the decoder layer (norms, biases and the
// weights of groups not in `setup` are used as they are); inputs [N·T, K] the quantized path's
// layer inputs, targets [N·T, K] the FP layer's outputs on the FP path's inputs.
Result<ReflectionTraining> trainReflections(const ModelConfig& cfg, const model::DecoderLayerWeights& layer,
                                            int layerIndex, ReflectionSetup& setup, const model::RowMatrix& inputs,
                                            const model::RowMatrix& targets, int T, int epochs, double lr,
                                            RunContext* ctx = nullptr);

// The loss and ∂L/∂ω of every present group on one batch of windows (no update): what a training
// step computes, for tests against finite differences.
Result<double> reflectionLossAndGrad(const ModelConfig& cfg, const model::DecoderLayerWeights& layer, int layerIndex,
                                     const ReflectionSetup& setup, const Eigen::Ref<const model::RowMatrix>& inputs,
                                     const Eigen::Ref<const model::RowMatrix>& targets, int T,
                                     std::array<Eigen::VectorXd, 4>* grads);

} // namespace qb::pipeline
