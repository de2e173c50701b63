#pragma once
// From a plan's activation part (activation_plan.h) to a model that runs it: the
// function-preserving transforms first (prepareActivationModel: smoothing, then rotation), then,
// after the weights are quantized in that transformed basis, the activation and K/V quantizers
// (installActivationQuantizers). The weight solvers see the transformed weights and, through the
// forward pass's taps, the transformed inputs (model/runtime.h), so RTN/GPTQ/NeUQI/CMPQ work
// unchanged on a rotated or smoothed model; as in QuaRot, the activations are left unquantized
// while the weights are calibrated.
// Threading: calling thread (the forward passes use OpenMP). Memory: the transformed model is a
// second F32 copy of every decoder layer that changes (all of them when a transform is asked).

#include "base/result.h"
#include "base/run_context.h"
#include "model/model.h"
#include "pipeline/activation_plan.h"
#include "pipeline/calibration.h"
#include "pipeline/ruquant.h"

#include <memory>
#include <string>
#include <vector>

namespace qb::pipeline {

struct ActivationSetupNotes {
    std::vector<std::string> lines; // what was done, for logs and the run's notes
    // Online transforms a plain weights file cannot hold (LayerRuntime::onlineTransforms of
    // layer 0, "" when everything is folded).
    std::string online;
};

// The weight quantizer RUQuant's calibration signal passes through (per output channel,
// asymmetric Min-Max with this range ratio; bits 0: weights unquantized).
struct SignalWeights {
    int bits = 0;
    double clip = 1.0;
};

// `base` (all layers loaded) with the plan's smoothing (statistics from `calib`, stage
// "smooth") and rotation applied; `base` itself when the plan transforms nothing. RUQuant
// (stage "ruquant") calibrates with the plan's activation/KV quantizers on and `weights`.
Result<std::shared_ptr<const model::Model>> prepareActivationModel(
    std::shared_ptr<const model::Model> base, const ActivationPlan& plan, const CalibrationSet& calib, int batch,
    RunContext* ctx = nullptr, ActivationSetupNotes* notes = nullptr, SignalWeights weights = {});
// RUQuant's options from a plan (construction settings, seed, the quantizers of the signal).
RuquantOptions ruquantOptionsFromPlan(const ActivationPlan& plan, SignalWeights weights);

// Sets every layer's activation and K/V quantizers from the plan, in place (new runtime objects).
// Groups asking for a static range get [min, max] of their input over `calib` from one pass with
// the quantizers off (stage "static ranges"); calib may be null when no group is static.
Status installActivationQuantizers(model::Model& model, const ActivationPlan& plan, const CalibrationSet* calib,
                                   int batch, RunContext* ctx = nullptr);

} // namespace qb::pipeline
