#include "pipeline/activation_job.h"

#include "model/forward.h"
#include "pipeline/model_loader.h"

#include <chrono>
#include <functional>
#include <regex>

namespace qb::pipeline {

std::optional<std::pair<int, model::LinearKind>> linearInputOf(const std::string& name)
{
    static const std::regex re(R"(^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj\.weight$)");
    std::smatch m;
    if (!std::regex_match(name, m, re)) return std::nullopt;
    const int layer = std::stoi(m[1]);
    const std::string p = m[3];
    if (p == "q" || p == "k" || p == "v") return std::make_pair(layer, model::LinearKind::Qkv);
    if (p == "o") return std::make_pair(layer, model::LinearKind::O);
    if (p == "gate" || p == "up") return std::make_pair(layer, model::LinearKind::GateUp);
    if (p == "down") return std::make_pair(layer, model::LinearKind::Down);
    return std::nullopt;
}

LayerSource modelLayers(const model::Model& model)
{
    return [&model](int l) -> Result<std::shared_ptr<const model::DecoderLayerWeights>> {
        auto w = model.layer(l);
        if (!w)
            return makeError(ErrorCode::InvalidArgument, "decoder layer not loaded",
                             "model.layers." + std::to_string(l));
        return w;
    };
}

LayerSource checkpointLayers(const io::Checkpoint& checkpoint)
{
    return [&checkpoint](int l) -> Result<std::shared_ptr<const model::DecoderLayerWeights>> {
        QB_TRY(w, loadDecoderLayer(checkpoint, l));
        return std::shared_ptr<const model::DecoderLayerWeights>(std::move(*w));
    };
}

const eval::ActivationStats* ActivationReport::forTensor(const std::string& name) const
{
    const auto key = linearInputOf(name);
    if (!key) return nullptr;
    const auto it = taps.find(*key);
    return it == taps.end() ? nullptr : &it->second;
}

namespace {

// Every calibration window through `model` one decoder layer at a time, the layers from `layerOf`.
Result<ActivationReport> collectStats(const model::Model& model, const LayerSource& layerOf,
                                      const CalibrationSet& calibration, const ActivationJobOptions& options,
                                      RunContext* ctx)
{
    const auto t0 = std::chrono::steady_clock::now();
    if (calibration.count < 1 || calibration.seqlen < 1)
        return makeError(ErrorCode::InvalidArgument, "empty calibration set");
    const int layers = model.numLayers();
    const int batch = std::max(1, options.batch);
    const int batches = (calibration.count + batch - 1) / batch;
    if (ctx) ctx->beginStage("calibrate", std::int64_t(layers) * batches);

    const auto T = calibration.seqlen;
    model::RowMatrix hidden;
    QB_TRY_STATUS(model::embed(model, calibration.ids, hidden));

    ActivationReport report;
    report.windows = calibration.count;
    report.seqlen = T;
    model::Workspace ws;
    model::RowMatrix block; // reused: same shape every full batch
    for (int l = 0; l < layers; ++l) {
        if (ctx) ctx->setDetail("layer " + std::to_string(l));
        QB_TRY(weights, layerOf(l));
        const model::ActivationTap tap = [&](int layer, model::LinearKind kind,
                                             const Eigen::Ref<const model::RowMatrix>& x) {
            auto [it, inserted] = report.taps.try_emplace({layer, kind}, options.bins);
            it->second.add(x);
        };
        for (int b = 0; b < batches; ++b) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError("calibration, layer " + std::to_string(l));
            const int first = b * batch;
            const int n = std::min(batch, calibration.count - first);
            block = hidden.middleRows(Eigen::Index(first) * T, Eigen::Index(n) * T);
            QB_TRY_STATUS(model::runLayer(model.config(), **weights, l, block, T, ws, tap));
            hidden.middleRows(Eigen::Index(first) * T, Eigen::Index(n) * T) = block;
            if (ctx) ctx->advance();
        }
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return report;
}

} // namespace

Result<ActivationReport> collectActivationStats(const io::Checkpoint& checkpoint, const CalibrationSet& calibration,
                                                const ActivationJobOptions& options, RunContext* ctx)
{
    LoadOptions lo;
    lo.loadLayers = false; // decoder layers come one at a time
    QB_TRY(model, loadModel(checkpoint, nullptr, nullptr, lo));
    return collectStats(**model, checkpointLayers(checkpoint), calibration, options, ctx);
}

Result<ActivationReport> collectActivationStats(const model::Model& model, const CalibrationSet& calibration,
                                                const ActivationJobOptions& options, RunContext* ctx)
{
    return collectStats(model, modelLayers(model), calibration, options, ctx);
}

} // namespace qb::pipeline
