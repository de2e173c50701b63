#pragma once
// Sensitivity atlas: how much each decoder linear suffers under each candidate quantization
// setting, measured from one calibration pass (issue 16).
//
// What: the calibration windows run once through the full-precision model, layer by layer (the
// quantize job's layer streaming, pipeline/quantize_job.h, in its observe mode: weights stay F32);
// at every tensor the input Hessian H = (2/N) X^T X of the calibration inputs is formed and the
// tensor is quantized with every candidate setting (a plan default: method, bits, group, sym or a
// storage target; quantizeTensor is the job's own solver, containers included). Recorded per
// tensor and candidate:
//   relative error  e = sqrt(tr(dW H dW^T) / tr(W H W^T))       (dW = W - Q; the run's figure)
//   proxy           ½ tr(dW H dW^T)                             (absolute output error)
//   bits per weight and bytes the plan accounting charges (quant_plan.h)
// The predicted damage the allocator sums (pipeline/allocator.h) is the proxy, calibrated per
// tensor by measured KL where the user measured it (SensitivityAtlas::damage): on the demo model the
// proxy ranks the tensors' true KL better than the relative error (Spearman 0.68 against 0.49 over
// 28 tensors at 2 bits), and one measurement per tensor fixes the scale between layers that the
// proxy misjudges (the first layer's attention output), while the proxy still orders the candidates
// of one tensor.
// On demand, measureTensorEffect() gives the true effect of one (tensor, candidate): the model
// with only that tensor quantized against the full-precision model, KL divergence of the
// next-token distributions and perplexity delta (eval/kl_divergence.h).
// Cache: an atlas is keyed by a fingerprint of the model files (paths, sizes, modification times,
// shapes), the calibration tokens and the candidate list; saveAtlas/loadAtlas write JSON, so the
// window reopens it instantly.
// Threading: computeSensitivity runs on the calling thread (a worker); the forward pass and the
// quantization kernels use the OpenMP team. Progress: stage "hessian" per group, "sensitivity"
// per tensor (one unit per candidate); cancel polled between candidates.
// Memory: the quantize job's (one layer in F32, the calibration hidden states, one Hessian) plus
// one candidate's codes at a time; the atlas itself is tensors x candidates numbers.

#include "base/result.h"
#include "base/run_context.h"
#include "eval/perplexity.h"
#include "io/checkpoint.h"
#include "io/json_value.h"
#include "model/model.h"
#include "pipeline/calibration.h"
#include "pipeline/quant_plan.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qb::pipeline {

// One candidate setting: a plan default (method + bits/group/sym, or a storage target; F16 keeps
// the tensor unquantized) and its label ("gptq:3:g128", "gptq:Q4_K", "F16").
struct SensitivityCandidate {
    std::string label;
    PlanSettings settings;
    bool operator==(const SensitivityCandidate&) const = default;
};

// "gptq:3:128", "rtn:4:-1", "neuqi:2:64", "gptq:4:128:sym", "gptq:Q4_K" (or "Q4_K": GPTQ inside
// that GGUF type), "gptq:3:128:gptq" (the GPTQ-checkpoint-storable grid), "F16"/"BF16" (kept).
Result<SensitivityCandidate> parseSensitivityCandidate(std::string_view text);
// The full plan settings of a candidate (method, skip and target always set, so that a plan rule
// made from them overrides everything). F16/BF16/F32 keep the tensor unquantized: with GGUF
// candidates (ggufFile) as that GGUF type, otherwise as a skipped tensor (which every format stores).
PlanSettings candidatePlanSettings(const SensitivityCandidate& candidate, bool ggufFile);
// A comma-separated list of the above (duplicates removed, order kept).
Result<std::vector<SensitivityCandidate>> parseSensitivityCandidates(std::string_view text);
// The default candidate set for an export target: "" / "none" (free grids, GPTQ 2..8 bits),
// "gguf" (GPTQ inside Q2_K..Q8_0), "gptq" (GPTQ-storable 2/3/4/8 bits, g128); each with F16.
Result<std::vector<SensitivityCandidate>> defaultSensitivityCandidates(std::string_view target);
// The candidate labels joined by commas (what --candidates accepts back).
std::string candidateListText(const std::vector<SensitivityCandidate>& candidates);

struct SensitivityCell {
    double relativeError = 0; // sqrt(tr(dW H dW^T) / tr(W H W^T))
    double proxyLoss = 0;     // ½ tr(dW H dW^T)
    double bitsPerWeight = 0; // plan accounting
    std::uint64_t bytes = 0;  // ceil(bpw * params / 8)
};

// The true effect of quantizing one tensor alone (measureTensorEffect).
struct MeasuredEffect {
    std::size_t tensor = 0, candidate = 0;
    double klMean = 0;     // nats per token, KL(FP || quantized)
    double top1 = 0;       // agreement of the argmax, 0..1
    double perplexity = 0; // of the model with only this tensor quantized
    double referencePerplexity = 0;
    double perplexityDelta() const { return perplexity - referencePerplexity; }
};

struct SensitivityTensor {
    std::string name; // model.layers.N.<module>.weight
    int layer = 0;
    model::Linear linear = model::Linear::Q;
    std::int64_t rows = 0, cols = 0;
    std::int64_t params() const { return rows * cols; }
};

struct SensitivityAtlas {
    std::string fingerprint; // model + calibration + candidates (sensitivityFingerprint)
    std::string model;       // the checkpoint path, for people
    std::vector<SensitivityCandidate> candidates;
    std::vector<SensitivityTensor> tensors;          // plan order (layer-major, Linear order)
    std::vector<std::vector<SensitivityCell>> cells; // [tensor][candidate]
    std::vector<MeasuredEffect> measured;            // on demand, in the order measured
    // The evaluation windows every entry of `measured` was measured on (measurementKey(); "" when
    // unknown: an atlas saved before the key existed). One atlas holds measurements of one
    // evaluation only: measuring on other windows (another text, context or model) drops them.
    std::string measuredOn;
    // Bytes of everything that is not a decoder linear at the plan's accounting (embedding, head,
    // norms; GGUF types when the candidates are GGUF targets), for budgets in file size.
    std::uint64_t otherBytes = 0;
    std::string embedType, headType; // GGUF types the other bytes assume ("" without GGUF targets)
    int calibrationWindows = 0, calibrationSeqlen = 0;
    double seconds = 0;

    std::optional<std::size_t> findTensor(std::string_view name) const; // with or without ".weight"
    std::optional<std::size_t> findCandidate(std::string_view label) const;
    const MeasuredEffect* findMeasured(std::size_t tensor, std::size_t candidate) const;
    // Makes `key` the evaluation of the measurements; those made on another are dropped (returns
    // how many).
    std::size_t useMeasurementWindows(const std::string& key);
    // The predicted damage the allocator sums, [tensor][candidate]: the proxy loss ½ tr(dW H dW^T),
    // scaled to nats of KL where measurements exist. A measured tensor's candidate takes the ratio
    // measured KL / proxy of the tensor's measurement nearest in bits per weight (so measuring at
    // 2 and 4 bits pins both ends); an unmeasured tensor takes, per candidate, the median ratio of
    // the measured tensors of its kind (q, k, ... down), else of all measured tensors; without any
    // measurement the table is the plain proxy.
    std::vector<std::vector<double>> damageTable() const;
    double damage(std::size_t tensor, std::size_t candidate) const; // one entry of damageTable()
    // Spearman rank correlation between the unscaled proxy and the measured KL over the measured
    // cells; nullopt with fewer than 3.
    std::optional<double> rankCorrelation() const;
};

struct SensitivityOptions {
    int batch = 8;
    int threads = 0;
    // Top-level GGUF embed/head types assumed for the file size with GGUF candidates ("" = the
    // plan defaults for the cheapest candidate: see quant_plan.h).
    std::string embedType, headType;
};

// The fingerprint of (checkpoint files and shapes, calibration tokens, candidate labels), hex.
std::string sensitivityFingerprint(const io::Checkpoint& checkpoint, const CalibrationSet& calib,
                                   const std::vector<SensitivityCandidate>& candidates);

// One calibration pass (see the header comment). `base` may lack its decoder layers (they are then
// read from the checkpoint one at a time).
Result<SensitivityAtlas> computeSensitivity(const model::Model& base, const io::Checkpoint& checkpoint,
                                            const CalibrationSet& calib,
                                            const std::vector<SensitivityCandidate>& candidates,
                                            const SensitivityOptions& options = {}, RunContext* ctx = nullptr);

// The key of an evaluation's windows (context, count and token ids), hex.
std::string measurementKey(const eval::TokenWindows& windows);

// The model with only tensor `tensor` quantized with candidate `candidate` (its Hessian from the
// full-precision inputs of its layer on `calib`) against `base` on `windows`. base must hold all
// its decoder layers. Also appends the result to atlas.measured (replacing an earlier one), after
// dropping measurements made on other windows (useMeasurementWindows).
Result<MeasuredEffect> measureTensorEffect(const model::Model& base, SensitivityAtlas& atlas, std::size_t tensor,
                                           std::size_t candidate, const CalibrationSet& calib,
                                           const eval::TokenWindows& windows, RunContext* ctx = nullptr);

io::JsonValue sensitivityAtlasToJson(const SensitivityAtlas& atlas);
Result<SensitivityAtlas> sensitivityAtlasFromJson(const io::JsonValue& json);
// Atomic write / read of the JSON file.
Status saveSensitivityAtlas(const SensitivityAtlas& atlas, const std::string& path);
Result<SensitivityAtlas> loadSensitivityAtlas(const std::string& path);
// "<dir>/sensitivity-<fingerprint>.json".
std::string sensitivityCachePath(const std::string& dir, const std::string& fingerprint);

} // namespace qb::pipeline
