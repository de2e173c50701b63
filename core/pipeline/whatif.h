#pragma once
// What-if and per-channel analysis of one tensor after a quantization run.
//
// What: layerInputHessians() runs the calibration windows through layers 0..l-1 of `inputs` (the
// fake-quantized model of the last run, so the inputs are those the sequential job saw; or the
// base model) and accumulates, at layer l of `base`, the input Hessian H = (2/N) X^T X of each
// sublayer kind (q/k/v share one, o, gate/up share one, down). This is the job's Hessian for the
// first group of the layer; later groups of the job saw already-quantized earlier groups of the
// same layer, which this pass (using the original layer l) does not replicate.
// previewTensor() quantizes one tensor with given settings against a cached H (CMPQ: scores from
// its diagonal, mean x², the other options at their defaults) and reports
// sqrt(tr(dW H dW^T) / tr(W H W^T)) (quant/error_metrics.h), the number the run reports.
// channelErrors(): with dW = W - Q,
//   per output channel i:  e_i = sqrt(dW_i H dW_i^T / W_i H W_i^T)   (relative error of output i)
//   per input channel j:   e_j = sqrt(H_jj ||dW[:,j]||^2 / tr(W H W^T)) (channel j's diagonal share
//                          of the total relative error: sum_j e_j^2 = relative error^2 minus the
//                          off-diagonal terms of H).
// Threading: pure functions on the calling thread; the forward pass uses the OpenMP team.
// Memory: the calibration hidden states [n*L, hidden] F32 and four Hessians (in x in, double).

#include "base/result.h"
#include "base/run_context.h"
#include "model/model.h"
#include "pipeline/calibration.h"
#include "quant/method_traits.h"
#include "quant/uniform_grid.h"

#include <Eigen/Core>

#include <array>
#include <memory>
#include <optional>
#include <vector>

namespace qb::pipeline {

struct LayerHessians {
    int layer = 0;
    std::array<Eigen::MatrixXd, 4> byKind; // indexed by model::LinearKind
    const Eigen::MatrixXd& forLinear(model::Linear l) const { return byKind[std::size_t(model::linearKind(l))]; }
};

Result<LayerHessians> layerInputHessians(const model::Model& base, const model::Model* inputs,
                                         const CalibrationSet& calib, int layer, int batch = 8,
                                         RunContext* ctx = nullptr);

struct PreviewSettings {
    quant::Method method = quant::Method::Rtn;
    int bits = 4;
    int groupSize = 128;
    bool sym = false;
    double avgBits = 0; // cmpq: the average (everything counted); 0 = bits. Its score is diag(H)/2.
};

struct PreviewResult {
    double relativeError = 0;
    double bitsPerWeight = 0;
    double seconds = 0;
    std::shared_ptr<const quant::QuantizedRows> rows; // with `dequantized`
};

Result<PreviewResult> previewTensor(Eigen::Ref<const quant::MatrixXfR> w, const Eigen::MatrixXd& h,
                                    const PreviewSettings& settings, RunContext* ctx = nullptr);

struct ChannelErrors {
    std::vector<float> outChannel; // per row
    std::vector<float> inChannel;  // per column
    double relativeError = 0;
};

ChannelErrors channelErrors(Eigen::Ref<const quant::MatrixXfR> w, Eigen::Ref<const quant::MatrixXfR> q,
                            const Eigen::MatrixXd& h);

} // namespace qb::pipeline
