#pragma once
// Activation statistics job: runs calibration windows through the model one decoder layer at a
// time and gathers, at the input of every linear layer, an eval::ActivationStats (histogram,
// per-channel max |x| and mean x², moments, kurtosis).
//
// Memory: the embedding/head weights, one decoder layer in F32 (loaded from the checkpoint, then
// dropped) and the hidden states of all calibration windows [n·L, K]. Progress: stage
// "calibrate" with one unit per (layer, batch); cancel is polled between batches and returns
// ErrorCode::Cancelled. Threading: runs on the calling thread (the forward pass uses OpenMP).

#include "base/result.h"
#include "base/run_context.h"
#include "eval/activation_stats.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "pipeline/calibration.h"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace qb::pipeline {

struct ActivationReport {
    int windows = 0;
    int seqlen = 0;
    // Keyed by (layer, which linear input).
    std::map<std::pair<int, model::LinearKind>, eval::ActivationStats> taps;
    double seconds = 0;

    // The statistics of the input that tensor `name` (an HF linear weight name) multiplies.
    const eval::ActivationStats* forTensor(const std::string& name) const;
};

// (layer, kind) of a linear weight name like "model.layers.3.mlp.down_proj.weight".
std::optional<std::pair<int, model::LinearKind>> linearInputOf(const std::string& name);

// Where a layer-at-a-time pass gets decoder layer l: a model's own (all loaded; a missing one is
// an error naming it) or the checkpoint's, read on demand. Both references must outlive the source.
using LayerSource = std::function<Result<std::shared_ptr<const model::DecoderLayerWeights>>(int layer)>;
LayerSource modelLayers(const model::Model& model);
LayerSource checkpointLayers(const io::Checkpoint& checkpoint);

struct ActivationJobOptions {
    int bins = 128;
    int batch = 8; // windows per forward call
};

Result<ActivationReport> collectActivationStats(const io::Checkpoint& checkpoint, const CalibrationSet& calibration,
                                                const ActivationJobOptions& options, RunContext* ctx = nullptr);
// The same over a model whose decoder layers are all loaded (e.g. after a transform: the taps see
// each layer's runtime transforms, model/runtime.h).
Result<ActivationReport> collectActivationStats(const model::Model& model, const CalibrationSet& calibration,
                                                const ActivationJobOptions& options, RunContext* ctx = nullptr);

} // namespace qb::pipeline
