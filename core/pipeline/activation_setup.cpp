#include "pipeline/activation_setup.h"

#include "model/runtime.h"
#include "pipeline/activation_job.h"
#include "pipeline/rotation.h"
#include "pipeline/smoothing.h"

#include <cstdio>

namespace qb::pipeline {

using model::LinearKind;

namespace {
constexpr LinearKind kKinds[] = {LinearKind::Qkv, LinearKind::O, LinearKind::GateUp, LinearKind::Down};

Status checkLoaded(const model::Model& m)
{
    for (int l = 0; l < m.numLayers(); ++l)
        if (!m.layer(l))
            return makeError(ErrorCode::InvalidArgument, "activation transforms need every decoder layer loaded",
                             "model.layers." + std::to_string(l));
    return {};
}
} // namespace

Result<std::shared_ptr<const model::Model>> prepareActivationModel(std::shared_ptr<const model::Model> base,
                                                                   const ActivationPlan& plan,
                                                                   const CalibrationSet& calib, int batch,
                                                                   RunContext* ctx, ActivationSetupNotes* notes,
                                                                   SignalWeights weights)
{
    if (!base) return makeError(ErrorCode::InvalidArgument, "no model to transform");
    if (!plan.transforms()) return base;
    QB_TRY_STATUS(checkLoaded(*base));
    auto out = std::make_shared<model::Model>(*base); // layers shared until replaced
    if (plan.smoothAlpha) {
        ActivationJobOptions o;
        o.batch = batch;
        o.bins = 16;
        QB_TRY(stats, collectActivationStats(*out, calib, o, ctx));
        QB_TRY(sum, smoothModel(*out, *stats, *plan.smoothAlpha));
        if (notes) {
            char buf[200];
            std::snprintf(buf, sizeof buf,
                          "SmoothQuant alpha %.2f: %d groups folded, %d online (GQA o_proj), factors %.3g .. %.3g",
                          *plan.smoothAlpha, sum->foldedGroups, sum->onlineGroups, sum->minFactor, sum->maxFactor);
            notes->lines.push_back(buf);
        }
    }
    if (plan.rotate == PlanRotation::Ruquant) {
        QB_TRY(r, ruquantModel(*out, calib, ruquantOptionsFromPlan(plan, weights), batch, ctx));
        out = std::move(r->model);
        if (notes) {
            const RuquantPlanOptions& o = plan.ruquant;
            char buf[300];
            std::snprintf(
                buf, sizeof buf,
                "RUQuant (seed %llu): B %d, K %d, lambda %d, T %d%s, %zu groups in %.1f s%s; signal max |x| "
                "%.3g -> %.3g (layer 0 qkv)",
                (unsigned long long)plan.seed, o.blockSize, o.householderSteps, o.givensRounds, o.permutationRounds,
                o.repoGivens ? ", repo Givens" : "", r->groups.size(), r->seconds,
                r->finetuneSeconds > 0 ? (", fine-tuned " + std::to_string(o.finetuneEpochs) + " epochs").c_str() : "",
                r->groups.empty() ? 0.0 : r->groups.front().signalMaxBefore,
                r->groups.empty() ? 0.0 : r->groups.front().signalMaxAfter);
            notes->lines.push_back(buf);
            if (r->finetuneSeconds > 0) {
                std::string losses = "RUQuant fine-tuning, layer output MSE before -> after:";
                for (const RuquantGroupReport& g : r->groups)
                    if (g.kind == LinearKind::Qkv) {
                        if (g.finetuneReverted) // no epoch lowered the loss: the initial ω's were kept
                            std::snprintf(buf, sizeof buf, " L%d %.3g (reverted)", g.layer, g.finetuneLossBefore);
                        else
                            std::snprintf(buf, sizeof buf, " L%d %.3g -> %.3g (epoch %d)", g.layer,
                                          g.finetuneLossBefore, g.finetuneLossAfter, g.finetuneBestEpoch);
                        losses += buf;
                    }
                std::snprintf(buf, sizeof buf, " (%.1f s)", r->finetuneSeconds);
                notes->lines.push_back(losses + buf);
            }
        }
    } else if (plan.rotate != PlanRotation::None) {
        // After smoothing: its statistics are in the unrotated basis, and the runtime divides
        // before it rotates. A residual rotation folds the norm gains into the weights, which
        // absorbs the qkv and gate_up smoothing; that of o and down stays.
        const bool online = plan.rotate == PlanRotation::Hadamard;
        RotationOptions ro;
        ro.seed = plan.seed;
        ro.onlineDown = ro.onlineO = ro.qk = online;
        QB_TRY(r, rotateModel(*out, ro, ctx));
        out = std::move(r->model);
        if (notes) {
            notes->lines.push_back(std::string("Hadamard rotation (seed ") + std::to_string(plan.seed) +
                                   "): residual " + r->residual->describe() +
                                   (online ? "; online on the o_proj and down_proj inputs and per head on q/k" : ""));
            if (plan.smoothAlpha)
                notes->lines.push_back("the residual rotation folds the norm gains into the weights: the qkv and "
                                       "gate_up smoothing is absorbed, that of o and down stays");
        }
    }
    if (notes && out->numLayers() > 0 && out->layer(0)->runtime)
        notes->online = out->layer(0)->runtime->onlineTransforms();
    return std::shared_ptr<const model::Model>(std::move(out));
}

RuquantOptions ruquantOptionsFromPlan(const ActivationPlan& plan, SignalWeights weights)
{
    RuquantOptions o;
    const RuquantPlanOptions& p = plan.ruquant;
    o.blockSize = p.blockSize;
    o.householderSteps = p.householderSteps;
    o.givensRounds = p.givensRounds;
    o.permutationRounds = p.permutationRounds;
    o.repoGivens = p.repoGivens;
    o.seed = plan.seed;
    o.finetuneEpochs = p.finetuneEpochs;
    o.finetuneLr = p.finetuneLr;
    o.weightBits = weights.bits;
    o.weightClip = weights.clip;
    for (LinearKind k : kKinds) {
        model::ActQuantSpec s = plan.spec(k);
        s.staticRange.reset(); // static ranges are calibrated after the weights; the signal uses dynamic ones
        o.act[std::size_t(k)] = s;
    }
    o.k = o.v = plan.kvSpec();
    o.q = plan.qSpec();
    return o;
}

Status installActivationQuantizers(model::Model& model, const ActivationPlan& plan, const CalibrationSet* calib,
                                   int batch, RunContext* ctx)
{
    if (!plan.quantizesActivations()) return {};
    QB_TRY_STATUS(checkLoaded(model));
    bool anyStatic = false;
    for (LinearKind k : kKinds)
        anyStatic = anyStatic || (plan.staticRange(k) && plan.spec(k).enabled());
    std::optional<ActivationReport> ranges;
    if (anyStatic) {
        if (!calib || calib->count < 1)
            return makeError(ErrorCode::InvalidArgument, "static activation ranges need calibration windows");
        ActivationJobOptions o;
        o.batch = batch;
        o.bins = 16;
        if (ctx) ctx->setDetail("static ranges");
        QB_TRY(r, collectActivationStats(model, *calib, o, ctx));
        ranges = std::move(*r);
    }
    for (int l = 0; l < model.numLayers(); ++l) {
        const auto old = model.layer(l);
        auto w = std::make_shared<model::DecoderLayerWeights>(*old); // weights untouched: packed ones stay packed
        auto rt = std::make_shared<model::LayerRuntime>(old->runtime ? *old->runtime : model::LayerRuntime{});
        for (LinearKind k : kKinds) {
            model::ActQuantSpec s = plan.spec(k);
            if (s.enabled() && plan.staticRange(k)) {
                const auto it = ranges->taps.find({l, k});
                if (it == ranges->taps.end())
                    return makeError(ErrorCode::InvalidArgument, "no calibration range",
                                     "model.layers." + std::to_string(l) + " " + model::linearKindName(k));
                const eval::Moments m = it->second.moments();
                s.staticRange = std::array<float, 2>{float(m.min), float(m.max)};
            }
            rt->input(k).quant = s;
        }
        rt->kv.k = rt->kv.v = plan.kvSpec();
        rt->kv.q = plan.qSpec();
        w->runtime = rt->empty() ? nullptr : std::shared_ptr<const model::LayerRuntime>(rt);
        model.setLayer(l, std::move(w));
    }
    return {};
}

} // namespace qb::pipeline
