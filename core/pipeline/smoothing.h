#pragma once
// SmoothQuant smoothing (METHODS.md §4(a) item 0): migrate activation outliers into the weights
// with per-input-channel factors s_j = max|x_j|^α / max_o |W_oj|^(1-α), so that x/s is easier to
// quantize and (W·diag(s)) only a little harder, with the function unchanged.
//
// Per decoder layer and linear input group, from calibration max |x_j| (ActivationReport) and the
// group's weights (all linears that read the input: q, k, v; o; gate, up; down):
//   qkv, gate_up: folded into the preceding RMSNorm gain (γ <- γ / s) and W <- W·diag(s);
//   down:         folded into up_proj's rows (up <- diag(1/s)·up, its bias too; exact because the
//                 gated activation is linear in up) and W_down <- W_down·diag(s);
//   o:            folded into v_proj's rows when every query head has its own value head (no GQA);
//                 with GQA one value channel feeds several o_proj inputs that want different
//                 factors, so the division runs online (LayerRuntime smoothDivisor) instead.
// Factors are clamped to >= 1e-5 as the reference code; a channel whose activation or weight
// maximum is 0 gets 1. Smoothing runs before any rotation (a layer whose runtime already rotates
// is refused: its statistics would be in the wrong basis).
// Threading: plain functions on a Model the caller owns exclusively; layers are replaced by new
// objects (copies), so a Model sharing the old layers is unaffected.

#include "base/result.h"
#include "model/model.h"
#include "pipeline/activation_job.h"

#include <span>
#include <string>
#include <vector>

namespace qb::pipeline {

// s_j for one input group: actMax[j] (per channel) against the column maxima of every weight.
model::RowVector smoothingFactors(std::span<const float> actMax, std::span<const model::RowMatrix* const> weights,
                                  double alpha);

struct SmoothingSummary {
    int foldedGroups = 0; // (layer, group) pairs folded into weights and norms
    int onlineGroups = 0; // kept online (GQA o_proj)
    double maxFactor = 0, minFactor = 0;
};

// Smooths every decoder layer of model (all loaded) in place with stats from that model.
Result<SmoothingSummary> smoothModel(model::Model& model, const ActivationReport& stats, double alpha);

} // namespace qb::pipeline
