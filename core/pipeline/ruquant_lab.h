#pragma once
// RUQuant in the transform lab (pipeline/transform_lab.h): a LabStageBuilder whose stages are
// RUQuant's cumulative transforms fitted on the captured input, so the lab shows the activations
// after each stage next to SmoothQuant's and Hadamard's.
//
// The fit follows METHODS.md §4(a): the calibration signal is the capture's mean over windows per
// position (LabCapture::meanPerPosition), smoothed with the stage's α (the factors of the lab's
// smoothed stages: applyLabStage on the signal), and fitRuquantTransform (pipeline/ruquant.h) runs
// on it seeded with ruquantGroupSeed(options.seed, layer, kind) — the same transforms ruquantModel
// builds for that group, except that the lab's capture is the FP forward pass (no quantization in
// the groups and layers before), where the full pipeline passes the signal through the quantized
// layers. Stages, each holding smoothing α and the transforms so far: "RUQuant stage 1",
// "RUQuant zig-zag", "RUQuant stage 1 again", "RUQuant global Householder" (with more permutation
// rounds the extra stage-1 / zig-zag pairs in between; the global Householder left out where the
// signal needs none). Errors: a width with no even block size (named), an α outside [0, 1].
// Threading: the calling thread.

#include "pipeline/ruquant.h"
#include "pipeline/transform_lab.h"

#include <optional>

namespace qb::pipeline {

// smoothAlpha: the smoothing before the transforms (nullopt: none).
LabStageBuilder ruquantLabBuilder(const RuquantOptions& options, std::optional<double> smoothAlpha);

} // namespace qb::pipeline
