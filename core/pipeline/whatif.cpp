#include "pipeline/whatif.h"

#include "quant/cmpq.h"

#include "model/forward.h"
#include "quant/cmpq.h"
#include "quant/error_metrics.h"
#include "quant/gptq.h"
#include "quant/hessian.h"

#include <chrono>
#include <cmath>

namespace qb::pipeline {

Result<LayerHessians> layerInputHessians(const model::Model& base, const model::Model* inputs,
                                         const CalibrationSet& calib, int layer, int batch, RunContext* ctx)
{
    if (layer < 0 || layer >= base.numLayers())
        return makeError(ErrorCode::InvalidArgument, "what-if: no such layer", std::to_string(layer));
    if (calib.count < 1 || calib.ids.size() != std::size_t(calib.tokens()))
        return makeError(ErrorCode::InvalidArgument, "what-if: empty calibration set");
    const model::Model& pre = inputs ? *inputs : base;
    auto target = model::unpackedLayer(base.layer(layer));
    if (!target) return makeError(ErrorCode::InvalidArgument, "what-if: layer not loaded", std::to_string(layer));
    for (int l = 0; l < layer; ++l)
        if (!pre.layer(l)) return makeError(ErrorCode::InvalidArgument, "what-if: layer not loaded", std::to_string(l));

    const ModelConfig& cfg = base.config();
    std::array<std::unique_ptr<quant::HessianAccumulator>, 4> acc;
    const std::array<model::Linear, 4> first{model::Linear::Q, model::Linear::O, model::Linear::Gate,
                                             model::Linear::Down};
    for (std::size_t k = 0; k < 4; ++k)
        acc[k] = std::make_unique<quant::HessianAccumulator>(int(target->weight(first[k]).cols()),
                                                             quant::kGptqHessianFactor);
    model::Workspace ws;
    model::RowMatrix hidden;
    const int L = calib.seqlen;
    if (ctx) ctx->beginStage("hessian", calib.count, "layer " + std::to_string(layer));
    for (int b0 = 0; b0 < calib.count; b0 += batch) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("what-if hessian");
        const int nb = std::min(batch, calib.count - b0);
        QB_TRY_STATUS(model::embed(
            base, std::span<const std::int32_t>(calib.ids).subspan(std::size_t(b0) * L, std::size_t(nb) * L), hidden));
        for (int l = 0; l < layer; ++l)
            QB_TRY_STATUS(model::runLayer(cfg, *pre.layer(l), l, hidden, L, ws));
        Status st;
        QB_TRY_STATUS(model::runLayer(cfg, *target, layer, hidden, L, ws,
                                      [&](int, model::LinearKind which, const Eigen::Ref<const model::RowMatrix>& x) {
                                          if (st.ok()) st = acc[std::size_t(which)]->addBatch(x);
                                      }));
        QB_TRY_STATUS(st);
        if (ctx) ctx->advance(nb);
    }
    LayerHessians out;
    out.layer = layer;
    for (std::size_t k = 0; k < 4; ++k)
        out.byKind[k] = acc[k]->hessian();
    return out;
}

Result<PreviewResult> previewTensor(Eigen::Ref<const quant::MatrixXfR> w, const Eigen::MatrixXd& h,
                                    const PreviewSettings& s, RunContext* ctx)
{
    if (h.rows() != w.cols() || h.cols() != w.cols())
        return makeError(ErrorCode::InvalidArgument, "what-if: Hessian does not match the tensor width");
    const auto t0 = std::chrono::steady_clock::now();
    if (s.method == quant::Method::Cmpq) {
        // CMPQ from the cached H: the channel score is its diagonal's mean x² (H = 2/N X^T X).
        quant::CmpqOptions co = quant::defaultCmpqOptions();
        co.bits = s.avgBits > 0 ? s.avgBits : double(s.bits);
        co.score = quant::CmpqScore::MeanSquare;
        const Eigen::VectorXd scores = h.diagonal() / 2.0;
        QB_TRY(q, quant::quantizeRowsCmpq(w, h, scores, co, ctx));
        PreviewResult r;
        r.relativeError = quant::relativeOutputErrorHessian(w, q->dequantized, h);
        r.bitsPerWeight = q->cmpq->bitsPerWeight(w.rows());
        r.rows = std::make_shared<const quant::QuantizedRows>(std::move(*q));
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return r;
    }
    quant::GptqOptions opt = quant::defaultGptqOptions(s.method);
    opt.grid.bits = s.bits;
    opt.grid.groupSize = s.groupSize;
    opt.grid.sym = s.sym && quant::methodTraits(s.method).supportsSym;
    QB_TRY_STATUS(quant::validateGridSpec(opt.grid, int(w.cols())));
    const auto& traits = quant::methodTraits(s.method);
    Result<quant::QuantizedRows> q = [&]() -> Result<quant::QuantizedRows> {
        if (traits.needsHessian) return quant::quantizeRowsGptq(w, h, opt, ctx);
        const Eigen::VectorXd diag = h.diagonal();
        return quant::quantizeRowsRtn(w, opt.grid, opt.init, traits.needsDiagonal ? &diag : nullptr, opt.neuqi, ctx);
    }();
    if (!q.ok()) return q.error();
    PreviewResult r;
    r.relativeError = quant::hessianErrors(w, *q, h).relative();
    r.bitsPerWeight = quant::bitsPerWeightUniform(opt.grid.bits, opt.grid.groupSize, int(w.cols()), opt.grid.sym);
    r.rows = std::make_shared<const quant::QuantizedRows>(std::move(*q));
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

ChannelErrors channelErrors(Eigen::Ref<const quant::MatrixXfR> w, Eigen::Ref<const quant::MatrixXfR> q,
                            const Eigen::MatrixXd& h)
{
    ChannelErrors out;
    const Eigen::MatrixXd wd = w.cast<double>();
    const Eigen::MatrixXd dw = wd - q.cast<double>();
    const Eigen::MatrixXd dwH = dw * h;
    const Eigen::MatrixXd wH = wd * h;
    const Eigen::VectorXd num = (dwH.cwiseProduct(dw)).rowwise().sum();
    const Eigen::VectorXd den = (wH.cwiseProduct(wd)).rowwise().sum();
    out.outChannel.resize(std::size_t(w.rows()));
    for (Eigen::Index i = 0; i < w.rows(); ++i)
        out.outChannel[std::size_t(i)] = den(i) > 0 ? float(std::sqrt(std::max(0.0, num(i)) / den(i))) : 0.f;
    const double total = den.sum();
    out.relativeError = total > 0 ? std::sqrt(std::max(0.0, num.sum()) / total) : 0.0;
    const Eigen::VectorXd colSq = dw.colwise().squaredNorm().transpose();
    out.inChannel.resize(std::size_t(w.cols()));
    for (Eigen::Index j = 0; j < w.cols(); ++j)
        out.inChannel[std::size_t(j)] = total > 0 ? float(std::sqrt(std::max(0.0, h(j, j)) * colSq(j) / total)) : 0.f;
    return out;
}

} // namespace qb::pipeline
