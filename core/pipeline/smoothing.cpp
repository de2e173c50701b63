#include "pipeline/smoothing.h"

#include "model/runtime.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

namespace qb::pipeline {

using model::LinearKind;
using model::RowMatrix;
using model::RowVector;

model::RowVector smoothingFactors(std::span<const float> actMax, std::span<const model::RowMatrix* const> weights,
                                  double alpha)
{
    RowVector s(Eigen::Index(actMax.size()));
    for (Eigen::Index j = 0; j < s.size(); ++j) {
        double w = 0;
        for (const RowMatrix* m : weights)
            w = std::max(w, double(m->col(j).cwiseAbs().maxCoeff()));
        const double a = actMax[std::size_t(j)];
        if (!(a > 0) || !(w > 0) || !std::isfinite(a) || !std::isfinite(w)) {
            s[j] = 1;
            continue;
        }
        s[j] = float(std::max(1e-5, std::pow(a, alpha) / std::pow(w, 1 - alpha)));
    }
    return s;
}

Result<SmoothingSummary> smoothModel(model::Model& model, const ActivationReport& stats, double alpha)
{
    if (!(alpha >= 0 && alpha <= 1))
        return makeError(ErrorCode::InvalidArgument, "the smoothing exponent must be in [0, 1]");
    const ModelConfig& c = model.config();
    const bool gqa = c.numKeyValueHeads != c.numAttentionHeads;
    SmoothingSummary sum;
    sum.minFactor = std::numeric_limits<double>::infinity();
    for (int l = 0; l < model.numLayers(); ++l) {
        const auto old = model.layer(l);
        const std::string where = "model.layers." + std::to_string(l);
        if (!old) return makeError(ErrorCode::InvalidArgument, "decoder layer not loaded", where);
        auto w = model::unpackedCopy(*old);
        auto rt = std::make_shared<model::LayerRuntime>(old->runtime ? *old->runtime : model::LayerRuntime{});
        for (const auto& in : rt->inputs)
            if (in.rotate || in.smoothDivisor.size() > 0)
                return makeError(ErrorCode::InvalidArgument,
                                 "the layer is already transformed (smooth before rotating, and only once)", where);
        auto maxAbs = [&](LinearKind k) -> Result<std::vector<float>> {
            const auto it = stats.taps.find({l, k});
            if (it == stats.taps.end())
                return makeError(
                    ErrorCode::InvalidArgument,
                    std::string("no calibration statistics for the ") + model::linearKindName(k) + " input", where);
            return it->second.channelMaxAbs();
        };
        auto note = [&](const RowVector& s) {
            sum.maxFactor = std::max(sum.maxFactor, double(s.maxCoeff()));
            sum.minFactor = std::min(sum.minFactor, double(s.minCoeff()));
        };
        // qkv and gate_up: into the norm gain.
        for (LinearKind k : {LinearKind::Qkv, LinearKind::GateUp}) {
            QB_TRY(a, maxAbs(k));
            const bool attn = k == LinearKind::Qkv;
            std::vector<RowMatrix*> ws = {attn ? &w->q : &w->gate, attn ? &w->k : &w->up};
            if (attn) ws.push_back(&w->v);
            const std::vector<const RowMatrix*> read(ws.begin(), ws.end());
            const RowVector s = smoothingFactors(*a, read, alpha);
            RowVector& gain = attn ? w->inputNorm : w->postNorm;
            if (s.size() != gain.size())
                return makeError(ErrorCode::Shape, "calibration statistics do not match the model", where);
            gain = gain.cwiseQuotient(s);
            for (RowMatrix* m : ws)
                *m = *m * s.asDiagonal();
            note(s);
            ++sum.foldedGroups;
        }
        // o: into v_proj without GQA, online with it.
        {
            QB_TRY(a, maxAbs(LinearKind::O));
            const RowMatrix* ws[1] = {&w->o};
            const RowVector s = smoothingFactors(*a, ws, alpha);
            if (s.size() != w->o.cols())
                return makeError(ErrorCode::Shape, "calibration statistics do not match the model", where);
            w->o = w->o * s.asDiagonal();
            if (gqa) {
                rt->input(LinearKind::O).smoothDivisor = s;
                ++sum.onlineGroups;
            } else {
                w->v = s.cwiseInverse().asDiagonal() * w->v;
                if (w->vBias.size() > 0) w->vBias = w->vBias.cwiseQuotient(s);
                ++sum.foldedGroups;
            }
            note(s);
        }
        // down: into up_proj's rows.
        {
            QB_TRY(a, maxAbs(LinearKind::Down));
            const RowMatrix* ws[1] = {&w->down};
            const RowVector s = smoothingFactors(*a, ws, alpha);
            if (s.size() != w->up.rows())
                return makeError(ErrorCode::Shape, "calibration statistics do not match the model", where);
            w->down = w->down * s.asDiagonal();
            w->up = s.cwiseInverse().asDiagonal() * w->up;
            if (w->upBias.size() > 0) w->upBias = w->upBias.cwiseQuotient(s);
            note(s);
            ++sum.foldedGroups;
        }
        w->runtime = rt->empty() ? nullptr : std::shared_ptr<const model::LayerRuntime>(rt);
        model.setLayer(l, std::move(w));
    }
    if (!std::isfinite(sum.minFactor)) sum.minFactor = 0;
    return sum;
}

} // namespace qb::pipeline
