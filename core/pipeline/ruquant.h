#pragma once
// RUQuant (METHODS.md §4): data-driven orthogonal transforms that make the activations inside each
// uniform quantization cell closer to uniform, for weight-and-activation quantization (W4A4,
// W6A6).
//
// Per decoder layer and linear input group (qkv, o, gate_up, down, in the forward pass's order),
// on the calibration signal X̄ [T, C] (the layer input averaged over the calibration windows per
// position, passed through the layer with quantization on, so every group sees the output of the
// groups already transformed and quantized before it), after smoothing:
//   stage 1   R₁: one B×B orthogonal matrix shared by every B-wide block of every row, built
//                 greedily from K Householder reflections (the block vector holding the largest
//                 |entry| sent to a positive uniform random target of its norm), each followed by λ
//                 rounds of a random permutation and a layer of B/2 Givens rotations (each pair of
//                 the then largest block vector turned onto a random first-quadrant direction);
//   zig-zag   Π:  channels sorted by max |x| and dealt to the C/B blocks 0, 1, …, nb-1, nb-1, …, 0, …
//                 (T rounds of Π then R);
//   stage 1   R₂: the same greedy construction on the permuted data;
//   stage 2   P_ω: one Householder reflection over the full width, ω = v - t for the row v holding
//                 the largest |entry| and a positive uniform target t of its norm (optionally
//                 fine-tuned, ruquant_finetune.h).
// T_total = blockdiag(R₁)·Π·blockdiag(R₂)·P_ω acts on the activations online (x' = x·T_total,
// LayerRuntime::inputs[kind].rotate) and is folded into the group's weights offline (W' = W·T_total),
// so x'·W'ᵀ = x·Wᵀ in exact arithmetic. The parts are operation lists (model/ortho_ops.h): O(B)
// per vector and op, no dense matrix. Q and K get a per-head Hadamard after RoPE (it cancels in
// QKᵀ) and K/V (and Q) per-(head, token) quantization, as the activation plan's "kv" says.
// Givens: by default each pair is turned exactly onto its target (c = v·t/‖v‖‖t‖,
// s = (v₀t₁ - v₁t₀)/‖v‖‖t‖); `repoGivens` reproduces the public code, which sends the pair to the
// mirror image of the target about the source direction (METHODS.md §4(f)).
// Randomness: std::mt19937_64 seeded per (seed, layer, group); uniforms are the top 53 bits of a
// draw (the same numbers on every platform), permutations Fisher–Yates over them.
// Deviation from the public code, on purpose: the smoothing factors use all of a group's weights
// (smoothing.h), not only q_proj's / up_proj's.
// Threading: the calling thread (forward passes and op lists use OpenMP); ctx is polled between
// layers and groups. Memory: the hidden states of every calibration window [N·T, K] once (twice
// with fine-tuning: FP and quantized paths), plus one decoder layer's copies.

#include "base/result.h"
#include "base/run_context.h"
#include "model/model.h"
#include "model/ortho_ops.h"
#include "model/runtime.h"
#include "pipeline/calibration.h"

#include <Eigen/Core>

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace qb::pipeline {

using MatrixXdRow = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct RuquantOptions {
    int blockSize = 128;       // B; the largest even divisor of a group's width not above it is used
    int householderSteps = 16; // K
    int givensRounds = 3;      // λ
    int permutationRounds = 1; // T: (R, Π) × T, then R
    bool globalHouseholder = true;
    bool repoGivens = false;   // the public code's mirrored Givens pairs
    bool applyOpLists = false; // block rotations applied by walking the op lists (else the dense R)
    std::uint64_t seed = 0;
    // Quantizers on while the signal passes through the layer (the plan's, see activation_setup):
    // weights per output channel, asymmetric Min-Max with range ratio weightClip (0: weights
    // unquantized), activations per token (act), K/V and Q per (head, token).
    int weightBits = 4;
    double weightClip = 1.0;
    std::array<model::ActQuantSpec, 4> act; // by model::LinearKind
    model::ActQuantSpec k, v, q;
    // Fine-tuning of ω (stage 2) per group: AdamW epochs over the calibration windows (0: off).
    int finetuneEpochs = 0;
    double finetuneLr = 1e-2;
};

// Uniform random numbers as the construction draws them (portable: the top 53 bits of a draw).
class RuquantRng {
public:
    explicit RuquantRng(std::uint64_t seed) : m_gen(seed) {}
    double uniform() { return double(m_gen() >> 11) * 0x1.0p-53; } // [0, 1)
    std::uint64_t below(std::uint64_t n) { return std::uint64_t(uniform() * double(n)); }
    std::vector<int> permutation(int n); // Fisher–Yates

private:
    std::mt19937_64 m_gen;
};

// The block size used for a width (largest even divisor of width that is <= requested; 0 when the
// width is odd or requested < 2).
Eigen::Index ruquantBlockSize(Eigen::Index width, int requested);

// Stage 1 on the block vectors (rows of blocks, [M, B]): the greedy list, applied to `blocks` as it
// is built (so blocks ends as Y·Rᵀ).
model::OrthoOpList buildGreedyBlockRotation(Eigen::Ref<MatrixXdRow> blocks, const RuquantOptions& options,
                                            RuquantRng& rng);
// One Givens layer turning the pairs of v onto those of t (exactly, or mirrored as the public code).
model::OrthoOp givensTowards(const Eigen::VectorXd& v, const Eigen::VectorXd& t, bool repoGivens);
// The zig-zag permutation (x'_i = x_perm[i]) for per-channel max |x|: channels sorted descending
// and dealt to width/blockSize blocks in zig-zag order, each block's channels in dealing order.
std::vector<int> zigzagPermutation(std::span<const double> channelMaxAbs, Eigen::Index blockSize);
// ω of stage 2 for rows x [n, C] (empty when ‖v - t‖² < 1e-10: no reflection).
Eigen::VectorXd globalHouseholderOmega(const MatrixXdRow& x, RuquantRng& rng);

struct RuquantFit {
    Eigen::Index blockSize = 0;
    // In order: R₁, Π₁, R₂, … , P_ω (absent when skipped); T_total = their product.
    std::vector<std::shared_ptr<const model::RowTransform>> parts;
    std::vector<std::string> stageLabels; // "stage 1", "zig-zag", "stage 1 again", "global Householder"
    std::shared_ptr<const model::ChainTransform> total() const;
};

// The whole construction on one signal [T, C] (rows: positions, already smoothed).
Result<RuquantFit> fitRuquantTransform(const Eigen::Ref<const model::RowMatrix>& signal, const RuquantOptions& options,
                                       std::uint64_t seed);

// Per output channel RTN, asymmetric Min-Max with range ratio clip, in place (bits 0: unchanged):
// quant::quantizeRowsRtn's grid and values, rows in parallel (OpenMP).
Status fakeQuantizeWeightRows(model::RowMatrix& w, int bits, double clip);
// The same grid kept as codes (bits 1..8): a model::UniformCodesWeight that decodes to exactly
// what fakeQuantizeWeightRows leaves in w, and multiplies in integers with per-token quantized
// activations where the CPU can (RUQuant's quantized path through a layer).
Result<PackedWeightPtr> weightRowCodes(const model::RowMatrix& w, int bits, double clip);

// The seed of (layer, group) derived from the plan's seed.
std::uint64_t ruquantGroupSeed(std::uint64_t seed, int layer, model::LinearKind kind);

struct RuquantGroupReport {
    int layer = 0;
    model::LinearKind kind = model::LinearKind::Qkv;
    Eigen::Index width = 0, blockSize = 0;
    double signalMaxBefore = 0, signalMaxAfter = 0; // max |x̄| of the signal before / after T_total
    double finetuneLossBefore = 0, finetuneLossAfter = 0;
    int finetuneBestEpoch = 0;     // the epoch whose ω's were kept (0: the initial ones)
    bool finetuneReverted = false; // no epoch lowered the layer's loss: its initial ω's were kept
    std::string transform;         // describe()
};

struct RuquantResult {
    std::shared_ptr<model::Model> model;
    std::vector<RuquantGroupReport> groups;
    // Wall time in all; of it, the fine-tuning and the pass carrying the windows through each
    // quantized layer to the next (the rest: the signal, the fit and the weights).
    double seconds = 0, finetuneSeconds = 0, propagateSeconds = 0;
    // True when the carry multiplied in integers (per-row weight codes and per-token activation
    // codes on AVX-512 VNNI, model/int8_product.h), false when in F32 (or nothing was carried).
    bool integerProducts = false;
};

// Applies RUQuant's transforms to every decoder layer of `model` (all layers loaded; smoothing
// already applied, e.g. by prepareActivationModel): a copy whose layers hold W·T_total and a
// runtime with T_total online and the per-head q/k Hadamard. The quantizers of `options` are used
// only to build the signal; the returned runtime quantizes nothing (the plan installs its
// quantizers after the weights are quantized). Refused: layers that already rotate (a Hadamard
// plan). Stage "ruquant", one unit per layer.
Result<RuquantResult> ruquantModel(const model::Model& model, const CalibrationSet& calibration,
                                   const RuquantOptions& options, int batch, RunContext* ctx = nullptr);

} // namespace qb::pipeline
