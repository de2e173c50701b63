#include "pipeline/rotation.h"

#include <algorithm>

#include "model/runtime.h"

namespace qb::pipeline {

using model::DecoderLayerWeights;
using model::HadamardTransform;
using model::Linear;
using model::RowMatrix;
using model::RowVector;

void scaleInputColumns(RowMatrix& w, const RowVector& gain)
{
    for (Eigen::Index r = 0; r < w.rows(); ++r)
        w.row(r) = w.row(r).cwiseProduct(gain);
}

void rotateOutputRows(RowMatrix& w, const model::RowTransform& t)
{
    // Tᵀ·W = (Wᵀ·T)ᵀ: rotate the rows of Wᵀ.
    RowMatrix wt = w.transpose();
    t.apply(wt);
    w = wt.transpose();
}

namespace {

Result<std::shared_ptr<const HadamardTransform>> makeHadamard(Eigen::Index n, std::optional<std::uint64_t> seed,
                                                              bool allowBlocks, const std::string& what)
{
    auto t = HadamardTransform::create(n, seed, allowBlocks);
    if (!t.ok()) return t.error().withContext(what);
    return t;
}

Status checkRotatable(const model::Model& m)
{
    const ModelConfig& c = m.config();
    QB_TRY_STATUS(m.validate());
    for (int l = 0; l < m.numLayers(); ++l) {
        // Online smoothing composes (the runtime divides, then rotates; the weights hold W·diag(s)·H),
        // a rotation already in place does not.
        const auto& rt = m.layer(l)->runtime;
        const bool rotated = rt && (rt->kv.qkRotate || std::any_of(rt->inputs.begin(), rt->inputs.end(),
                                                                   [](const auto& in) { return bool(in.rotate); }));
        if (rotated)
            return makeError(ErrorCode::Unsupported, "the model is already rotated (" + rt->onlineTransforms() + ")",
                             "rotation, layer " + std::to_string(l));
    }
    if (c.gemmaNorms)
        return makeError(ErrorCode::Unsupported,
                         std::string("the Hadamard rotation does not preserve ") + architectureName(c.architecture) +
                             ": its RMSNorms of the attention and MLP outputs scale the residual-stream "
                             "coordinates after normalising, so their gains cannot be folded into a rotated model",
                         "rotation");
    return {};
}

} // namespace

Result<RotationResult> rotateModel(const model::Model& in, const RotationOptions& options, RunContext* ctx)
{
    QB_TRY_STATUS(checkRotatable(in));
    const ModelConfig& c = in.config();
    RotationResult out;
    QB_TRY(residual, makeHadamard(c.hiddenSize, options.seed, options.allowBlocks, "residual stream (hidden_size)"));
    out.residual = *residual;
    const model::RowTransform& q = *out.residual;
    // Online Hadamards: plain (not randomized), as QuaRot's online ones.
    if (options.onlineDown) {
        QB_TRY(t, makeHadamard(c.intermediateSize, std::nullopt, options.allowBlocks,
                               "down_proj input (intermediate_size)"));
        out.down = *t;
    }
    if (options.onlineO) {
        QB_TRY(t, makeHadamard(c.numAttentionHeads * c.headDim, std::nullopt, options.allowBlocks,
                               "o_proj input (num_attention_heads x head_dim)"));
        out.o = *t;
    }
    if (options.qk) {
        QB_TRY(t, makeHadamard(c.headDim, std::nullopt, options.allowBlocks, "q/k per head (head_dim)"));
        out.qk = *t;
    }
    // One runtime shared by every layer (immutable); quantizers stay off, a plan sets them later.
    std::shared_ptr<const model::LayerRuntime> runtime;
    if (out.down || out.o || out.qk) {
        auto rt = std::make_shared<model::LayerRuntime>();
        rt->input(model::LinearKind::Down).rotate = out.down;
        rt->input(model::LinearKind::O).rotate = out.o;
        rt->kv.qkRotate = out.qk;
        out.online = rt->onlineTransforms();
        runtime = std::move(rt);
    }

    if (ctx) ctx->beginStage("rotate", c.numHiddenLayers + 1, "embedding and lm_head");
    ModelConfig cfg = c;
    cfg.tieWordEmbeddings = false; // E·Q and lm_head·Q are different matrices
    auto m = std::make_shared<model::Model>(cfg);
    m->embedding() = in.embeddingF32();
    q.apply(m->embedding());
    m->lmHeadOwned() = in.lmHeadF32();
    scaleInputColumns(m->lmHeadOwned(), in.finalNorm());
    q.apply(m->lmHeadOwned());
    m->finalNorm() = RowVector::Ones(c.hiddenSize);
    if (ctx) ctx->advance();

    for (int l = 0; l < in.numLayers(); ++l) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("rotation, layer " + std::to_string(l));
        if (ctx) ctx->setDetail("layer " + std::to_string(l));
        auto w = model::unpackedCopy(*in.layer(l));
        for (Linear lin : {Linear::Q, Linear::K, Linear::V}) {
            scaleInputColumns(w->weight(lin), w->inputNorm);
            q.apply(w->weight(lin));
        }
        for (Linear lin : {Linear::Gate, Linear::Up}) {
            scaleInputColumns(w->weight(lin), w->postNorm);
            q.apply(w->weight(lin));
        }
        w->inputNorm.setOnes();
        w->postNorm.setOnes();
        for (Linear lin : {Linear::O, Linear::Down}) {
            rotateOutputRows(w->weight(lin), q);
            RowVector& b = w->bias(lin);
            if (b.size() > 0) q.apply(Eigen::Map<RowMatrix>(b.data(), 1, b.size()));
        }
        // x·H·(W·H)ᵀ = x·Wᵀ: the input side of the online rotations.
        if (out.down) out.down->apply(w->down);
        if (out.o) out.o->apply(w->o);
        if (runtime) {
            // Keep the quantizer settings a layer may already carry (checked free of transforms).
            if (w->runtime) {
                auto merged = std::make_shared<model::LayerRuntime>(*w->runtime);
                merged->input(model::LinearKind::Down).rotate = out.down;
                merged->input(model::LinearKind::O).rotate = out.o;
                merged->kv.qkRotate = out.qk;
                w->runtime = std::move(merged);
            } else {
                w->runtime = runtime;
            }
        }
        m->setLayer(l, std::move(w));
        if (ctx) ctx->advance();
    }
    QB_TRY_STATUS(m->validate());
    out.model = std::move(m);
    return out;
}

} // namespace qb::pipeline
