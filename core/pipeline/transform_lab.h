#pragma once
// Transform lab: what a function-preserving transform (SmoothQuant smoothing, a Hadamard rotation,
// RUQuant's stages: pipeline/ruquant_lab.h) does to the activations of one linear input, and what that buys at a
// given activation quantizer. This is where a user sees why W4A4 fails on outlier channels.
//
// 1. Capture (captureLabInput): the calibration windows run through decoder layers 0..L-1 and
//    layer L up to the chosen input (layer, LinearKind), as the forward pass computes it (a layer
//    runtime, model/runtime.h, is applied: the capture is what the linears multiply). Kept: at
//    most maxTokens rows X [n, C], evenly spaced over all calibration tokens (row floor(i·N/n),
//    window-major: deterministic); over all N tokens the per-channel max |x| (the smoothing
//    statistic, as the activation job gathers it) and the mean over windows per position
//    [seqlen, C] (RUQuant's calibration signal, METHODS.md §4(a) item 1); and the group's weights
//    (q, k, v; o; gate, up; down).
// 2. Stages (analyzeLabStages): a stage is optional smoothing with exponent α (factors from
//    smoothingFactors() with all of the group's weights, the convention of smoothing.cpp), then a
//    list of orthogonal RowTransforms applied in order: X_t = (X·diag(1/s))·T, W_t = (W·diag(s))·T,
//    so X_t·W_tᵀ = X·Wᵀ. Stages whose transforms are fitted to the data (RUQuant's greedy
//    rotations, built cumulatively) come from LabStageBuilders called with the capture.
//    Per stage: a histogram over one range common to every stage (LabResult::histLo/histHi, so the
//    stages compare side by side), all-value moments (excess kurtosis), per-channel max |x| and
//    excess kurtosis (over tokens), the per-token max |x| and excess kurtosis (over channels),
//    and for the ActQuantSpec: the relative quantization error per channel
//    Σ_t (Q(X_t) − X_t)²_tj / Σ_t X_t,tj² and in all, and the output error
//    ‖X·Wᵀ − Q(X_t)·W_tᵀ‖ / ‖X·Wᵀ‖ over the group's weights (W_t fake-quantized per output
//    channel with LabOptions::weightBits, unquantized by default). Channel j is an input
//    channel of the original model when the stage has no rotation (the relative error is the same
//    before and after a diagonal scaling) and coordinate j of the rotated basis when it has one
//    (LabStageResult::rotated).
// 3. Within-cell distribution (withinCellStats; RUQuant's argument, METHODS.md §4): under Lloyd–Max
//    the best level of a quantization cell is the centroid of the data inside it, a uniform
//    quantizer reconstructs at the cell's midpoint; the closer the data is to uniform inside each
//    cell, the less that costs. Per stage, pooled over every channel and for one chosen channel
//    (LabOptions::cellChannel; a rotated coordinate where the stage rotates).
// Progress: stage "capture", one unit per (layer, batch) up to L; stage "transform lab", two units
// per stage. Cancel is polled between batches and stages (ErrorCode::Cancelled). Memory: the
// hidden states of all windows [N, K], X and two transformed copies of it, the group's weights
// twice; runTransformLab's result keeps the capture (X [n, C], the group's weights) for
// labWithinCell. Threading: calling thread (the forward pass and GEMMs use OpenMP). No Qt.

#include "base/result.h"
#include "base/run_context.h"
#include "eval/tensor_stats.h"
#include "io/checkpoint.h"
#include "io/json_value.h"
#include "model/model.h"
#include "model/runtime.h"
#include "pipeline/calibration.h"
#include "pipeline/ruquant.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qb::pipeline {

struct LabCapture {
    int layer = 0;
    model::LinearKind kind = model::LinearKind::Qkv;
    int seqlen = 0, windows = 0;
    std::int64_t totalTokens = 0;
    model::RowMatrix x;                    // [n, C] the sampled rows
    std::vector<std::int64_t> rows;        // window-major index of each sampled row
    std::vector<float> channelMaxAbs;      // [C] over all calibration tokens
    model::RowMatrix meanPerPosition;      // [seqlen, C] mean over windows
    std::vector<model::RowMatrix> weights; // the group's linears, [out_i, C]
    std::vector<std::string> weightNames;  // "q_proj", ...
    Eigen::Index channels() const { return x.cols(); }
};

struct LabStage {
    std::string label;
    std::optional<double> smoothAlpha;                                  // smoothing first, when set
    std::vector<std::shared_ptr<const model::RowTransform>> transforms; // then these, in order
};

// Stages fitted to the captured data (e.g. RUQuant: stage 1, zig-zag, stage 1 again, global
// Householder, each a LabStage holding the transforms so far); called once per analysis.
using LabStageBuilder = std::function<Result<std::vector<LabStage>>(const LabCapture&, RunContext*)>;

inline model::ActQuantSpec fourBitsPerToken()
{
    model::ActQuantSpec s;
    s.bits = 4;
    return s;
}

// Where the values of X sit inside the cells of the activation quantizer `spec` (the convention of
// model/runtime.cpp's RangeQuantizer: per token, or one range for the tensor with PerTensor or a
// static range; lo = clip·min(min x, 0), hi = clip·max(max x, 0), asymmetric s = (hi − lo)/(2^b − 1)
// and zero z = round(−lo/s), symmetric s = max(−lo, hi)/(2^(b−1) − 1); level q = clamp(rint(x/s) + z)).
// The cell of level q is [(q − z − ½)·s, (q − z + ½)·s); a value's position in it is
// u = x/s − (q − z) + ½ in [0, 1) (the midpoint, where the quantizer reconstructs, is u = ½).
// Pooled over the rows, per level index q (cells of different tokens have different widths: every
// number is in cell units): the centroid c_q = mean u of the values at level q, and
//   mseMidpoint = mean (u − ½)²,  mseCentroid = mean (u − c_{q(u)})²,  mseRatio = mseMidpoint / mseCentroid
// (≥ 1: what reconstructing at the centroids instead of the midpoints would gain; 1 for data
// uniform inside its cells, above 1 where the data piles up off-centre inside the cells).
// Values beyond the clipped range (clip < 1) sit in no cell and are counted in `clipped`; rows
// whose range is 0 (all values 0: quantized exactly) in `exact`.
struct WithinCellStats {
    int channel = -1;                    // -1: every channel
    std::vector<std::int64_t> positions; // histogram of u, `bins` equal bins over [0, 1)
    std::vector<std::int64_t> cellCount; // per level, index q − qmin (2^b entries)
    std::vector<double> centroidOffset;  // per level: c_q − ½ (0 where the level is empty)
    std::int64_t values = 0;             // in cells
    std::int64_t clipped = 0, exact = 0; // outside the range, in zero-range rows
    double meanAbsOffset = 0;            // Σ_q count_q·|c_q − ½| / values
    double mseMidpoint = 0, mseCentroid = 0;
    double mseRatio = 0; // 0 where mseCentroid is 0 or there are no values
    bool empty() const { return values == 0; }
};

// The statistics for channel `channel` of x (-1: every channel), `bins` >= 2 position bins. Errors:
// quantization off, a channel outside [−1, cols), bins < 2.
Result<WithinCellStats> withinCellStats(const Eigen::Ref<const model::RowMatrix>& x, int channel,
                                        const model::ActQuantSpec& spec, int bins = 20);

struct LabOptions {
    int maxTokens = 4096;
    int bins = 128;
    int batch = 8;                                  // windows per forward call
    model::ActQuantSpec quant = fourBitsPerToken(); // 4-bit per token, asymmetric, clip 1
    // 0: the output error uses the transformed weights as they are; 2..8: fake-quantized per output
    // channel first (round to nearest, asymmetric Min-Max, the runtime quantizer's convention), so
    // that it is a WxAy number and smoothing's cost on the weights shows.
    int weightBits = 0;
    // Within-cell statistics (with the activation quantizer on): the chosen channel (-1: none;
    // pooled over every channel always) and the number of position bins.
    int cellChannel = -1;
    int cellBins = 20;
};

struct LabTokenSummary {
    double maxAbsMedian = 0, maxAbsMax = 0; // per-token max |x|
    double kurtosisMean = 0;                // mean per-token excess kurtosis (over channels)
};

struct LabStageResult {
    std::string label;
    std::string transform;     // describe() of every transform, "; "-joined ("" for none)
    bool rotated = false;      // channels are coordinates of the rotated basis
    eval::Histogram histogram; // over [LabResult::histLo, histHi]
    eval::Moments moments;     // every value (kurtosis: excess)
    std::vector<float> channelMaxAbs, channelKurtosis, channelQuantError;
    LabTokenSummary tokens;
    double channelRatio = 0;          // max / median of channelMaxAbs
    double quantError = 0;            // ‖Q(X_t) − X_t‖² / ‖X_t‖²
    double outputError = 0;           // ‖X·Wᵀ − Q(X_t)·W_tᵀ‖ / ‖X·Wᵀ‖
    std::vector<float> smoothFactors; // s (empty without smoothing)
    WithinCellStats cells;            // pooled over every channel (empty with quantization off)
    WithinCellStats channelCells;     // LabOptions::cellChannel (empty when -1 or quantization off)
};

struct LabResult {
    int layer = 0;
    model::LinearKind kind = model::LinearKind::Qkv;
    Eigen::Index channels = 0;
    std::int64_t sampledTokens = 0, totalTokens = 0;
    model::ActQuantSpec quant;
    int weightBits = 0;
    double histLo = 0, histHi = 0;
    std::vector<LabStageResult> stages;
    std::vector<std::string> notes; // stages left out and why
    double seconds = 0;
    int cellChannel = -1, cellBins = 20;
    // What labWithinCell needs to redo the within-cell statistics for another channel: every stage
    // analysed (the builders' included) and, from runTransformLab, the capture.
    std::vector<LabStage> stageList;
    std::shared_ptr<const LabCapture> capture;
};

// Captures the input of (layer, kind) over `calibration` from a model whose decoder layers are
// all loaded, or from a checkpoint (layers 0..layer loaded one at a time).
Result<LabCapture> captureLabInput(const model::Model& model, const CalibrationSet& calibration, int layer,
                                   model::LinearKind kind, const LabOptions& options, RunContext* ctx = nullptr);
Result<LabCapture> captureLabInput(const io::Checkpoint& checkpoint, const CalibrationSet& calibration, int layer,
                                   model::LinearKind kind, const LabOptions& options, RunContext* ctx = nullptr);

// Every stage of `stages`, then of each builder's stages, on the capture. A transform whose size
// is not C, or an α outside [0, 1], is an error naming the stage.
Result<LabResult> analyzeLabStages(const LabCapture& capture, const std::vector<LabStage>& stages,
                                   const std::vector<LabStageBuilder>& builders, const LabOptions& options,
                                   RunContext* ctx = nullptr);

// The rows X_t of one stage on the capture (smoothing factors as analyzeLabStages computes them,
// then the transforms): e.g. the within-cell distribution of one channel (RUQuant's argument).
Result<model::RowMatrix> applyLabStage(const LabCapture& capture, const LabStage& stage);

// The within-cell statistics of `channel` for every stage of `result` (its capture, stages,
// quantizer and bins), in stage order: the GUI's channel switch. Errors: no capture kept,
// quantization off, a channel outside [0, C). Stage "within-cell", one unit per stage; cancel polled
// between stages.
Result<std::vector<WithinCellStats>> labWithinCell(const LabResult& result, int channel, RunContext* ctx = nullptr);

// The randomized Hadamard rotation the lab uses for width n (block-diagonal where no full order is
// constructible); an error where no Hadamard is available.
Result<std::shared_ptr<const model::RowTransform>> labHadamard(Eigen::Index n, std::uint64_t seed);

// ---- workflow (window and CLI) ------------------------------------------------------------------

struct TransformLabRequest {
    std::shared_ptr<const io::Checkpoint> checkpoint; // tokenizer, and weights unless `model`
    std::shared_ptr<const model::Model> model;        // all layers loaded; used instead of loading
    std::string calibrationText;
    CalibrationOptions calibration{32, 256, 0};
    int layer = 0;
    model::LinearKind kind = model::LinearKind::Qkv;
    double smoothAlpha = 0.6;
    bool hadamard = true;
    std::uint64_t seed = 0;
    // RUQuant's stages (ruquantLabBuilder, pipeline/ruquant_lab.h) after the standard ones, fitted
    // on the capture smoothed with smoothAlpha; ruquantOptions' block size and seed are used.
    bool ruquant = false;
    RuquantOptions ruquantOptions;
    // In order after the standard stages (original, smoothed α, Hadamard, smoothed + Hadamard):
    // extraStages, RUQuant's (with `ruquant`), then each builder's.
    std::vector<LabStage> extraStages;
    std::vector<LabStageBuilder> builders;
    LabOptions options;
};

// The standard stages for width n: original, smoothed (α), and with `hadamard` Hadamard and
// smoothed + Hadamard (left out, with a note, where labHadamard fails).
std::vector<LabStage> standardLabStages(Eigen::Index n, double smoothAlpha, bool hadamard, std::uint64_t seed,
                                        std::vector<std::string>* notes = nullptr);

// {"layer", "input", "channels", "sampled_tokens", "total_tokens", "abits", "sym", "clip", "wbits",
//  "hist_range": [lo, hi], "notes": [...], "stages": [{"label", "transform", "rotated",
//  "channel_ratio", "kurtosis", "token_kurtosis", "token_max_median", "token_max", "quant_rel_mse",
//  "output_error", "top_channels": [5 largest max |x|], "cells": {within-cell stats pooled over every
//  channel}, "channel_cells": {... of "cell_channel", with it} (+ "channel_max_abs",
//  "channel_kurtosis", "channel_quant_error", "histogram" with `perChannel`)], "cell_channel"}; a
//  within-cell object is {"channel", "values", "clipped", "exact", "mse_midpoint", "mse_centroid",
//  "mse_ratio", "mean_abs_offset", "positions": [...], "centroid_offsets": [...]}: what `lab --json`
//  prints.
io::JsonValue transformLabJson(const LabResult& result, bool perChannel = false);

// Phases: "calibrate" (tokenize and sample), "capture", "transform lab".
Result<LabResult> runTransformLab(const TransformLabRequest& request, RunContext* ctx = nullptr);

} // namespace qb::pipeline
