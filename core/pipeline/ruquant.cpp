#include "pipeline/ruquant.h"

#include "model/forward.h"
#include "model/hadamard.h"
#include "model/int8_product.h"
#include "pipeline/ruquant_finetune.h"
#include "quant/gptq.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <span>

namespace qb::pipeline {

using model::LinearKind;
using model::RowMatrix;

std::vector<int> RuquantRng::permutation(int n)
{
    std::vector<int> p(static_cast<std::size_t>(n));
    std::iota(p.begin(), p.end(), 0);
    for (int i = n - 1; i > 0; --i)
        std::swap(p[std::size_t(i)], p[std::size_t(below(std::uint64_t(i) + 1))]);
    return p;
}

Eigen::Index ruquantBlockSize(Eigen::Index width, int requested)
{
    for (Eigen::Index b = std::min<Eigen::Index>(requested, width); b >= 2; --b)
        if (b % 2 == 0 && width % b == 0) return b;
    return 0;
}

namespace {

// Below this many entries a pass over the signal runs on one thread: a parallel region per
// operation costs more than the operation on a small signal (the demo's 128 x 128), and far more on
// a busy machine. A 1.1B model's 128 x 2048 signal is split over the threads.
constexpr Eigen::Index kParallelEntries = Eigen::Index(1) << 16;

// body(row, scratch) on every row of y, then the row's max |entry|; returns the first row holding
// the largest. One pass per operation of the greedy fit, which needs the maximum after each.
template <typename Body>
Eigen::Index transformRowsAndScan(Eigen::Ref<MatrixXdRow> y, Body&& body)
{
    const Eigen::Index n = y.rows(), k = y.cols();
    double best = -1;
    Eigen::Index bestRow = 0;
#pragma omp parallel if (n * k >= kParallelEntries)
    {
        double tBest = -1;
        Eigen::Index tRow = 0;
        std::vector<double> scratch(static_cast<std::size_t>(k));
#pragma omp for schedule(static) nowait
        for (Eigen::Index r = 0; r < n; ++r) {
            double* row = y.data() + r * y.outerStride();
            body(row, scratch.data());
            double m = 0;
            for (Eigen::Index j = 0; j < k; ++j)
                m = std::max(m, std::abs(row[j]));
            if (m > tBest) tBest = m, tRow = r;
        }
#pragma omp critical
        if (tBest > best || (tBest == best && tRow < bestRow)) best = tBest, bestRow = tRow;
    }
    return bestRow;
}

// The row holding the largest |entry| (the first such row); the empty body writes nothing.
Eigen::Index maxAbsRow(const Eigen::Ref<const MatrixXdRow>& y)
{
    Eigen::Map<MatrixXdRow, 0, Eigen::OuterStride<>> rows(const_cast<double*>(y.data()), y.rows(), y.cols(),
                                                          Eigen::OuterStride<>(y.outerStride()));
    return transformRowsAndScan(rows, [](double*, double*) {});
}

// A positive uniform random vector of norm `norm` (RUQuant's "uniformly sampled" target).
Eigen::VectorXd positiveTarget(Eigen::Index n, double norm, RuquantRng& rng)
{
    Eigen::VectorXd t(n);
    for (Eigen::Index i = 0; i < n; ++i)
        t[i] = rng.uniform();
    const double tn = t.norm();
    if (tn > 0) t *= norm / tn;
    return t;
}

} // namespace

model::OrthoOp givensTowards(const Eigen::VectorXd& v, const Eigen::VectorXd& t, bool repoGivens)
{
    const Eigen::Index pairs = v.size() / 2;
    std::vector<double> c(static_cast<std::size_t>(pairs), 1.0), s(static_cast<std::size_t>(pairs), 0.0);
    for (Eigen::Index i = 0; i < pairs; ++i) {
        const double a0 = v[2 * i], a1 = v[2 * i + 1], b0 = t[2 * i], b1 = t[2 * i + 1];
        const double n = std::hypot(a0, a1) * std::hypot(b0, b1);
        if (!(n > 0)) continue;
        c[std::size_t(i)] = (a0 * b0 + a1 * b1) / n;
        const double sn = (a0 * b1 - a1 * b0) / n;
        s[std::size_t(i)] = repoGivens ? -sn : sn;
    }
    return model::OrthoOp::givens(std::move(c), std::move(s));
}

model::OrthoOpList buildGreedyBlockRotation(Eigen::Ref<MatrixXdRow> blocks, const RuquantOptions& o, RuquantRng& rng)
{
    // Every operation is applied to the block vectors in the same pass that finds the next
    // largest one; a permutation within the vectors leaves their maxima where they were, so it
    // joins the Givens layer that follows it.
    const Eigen::Index b = blocks.cols();
    model::OrthoOpList list(b);
    Eigen::Index best = maxAbsRow(blocks);
    for (int k = 0; k < o.householderSteps; ++k) {
        {
            const Eigen::VectorXd v = blocks.row(best).transpose();
            const Eigen::VectorXd omega = v - positiveTarget(b, v.norm(), rng);
            if (omega.squaredNorm() >= 1e-10) {
                model::OrthoOp op = model::OrthoOp::householder(omega);
                const Eigen::VectorXd& u = op.u;
                best = transformRowsAndScan(blocks, [&](double* row, double*) {
                    Eigen::Map<Eigen::VectorXd> x(row, b);
                    const double d = 2.0 * x.dot(u);
                    x.noalias() -= d * u;
                });
                list.push(std::move(op));
            }
        }
        for (int r = 0; r < o.givensRounds; ++r) {
            model::OrthoOp perm = model::OrthoOp::permutation(rng.permutation(int(b)));
            const int* p = perm.perm.data();
            Eigen::VectorXd v(b);
            for (Eigen::Index i = 0; i < b; ++i)
                v[i] = blocks(best, p[i]);
            Eigen::VectorXd t(b);
            for (Eigen::Index i = 0; i + 1 < b; i += 2) {
                double x = rng.uniform(), y = rng.uniform();
                const double n = std::hypot(x, y);
                if (!(n > 0)) x = 1, y = 0;
                else x /= n, y /= n;
                const double r2 = std::hypot(v[i], v[i + 1]);
                t[i] = r2 * x;
                t[i + 1] = r2 * y;
            }
            model::OrthoOp g = givensTowards(v, t, o.repoGivens);
            const double* c = g.c.data();
            const double* s = g.s.data();
            best = transformRowsAndScan(blocks, [&](double* row, double* tmp) {
                for (Eigen::Index i = 0; i < b; ++i)
                    tmp[i] = row[p[i]];
                for (Eigen::Index i = 0; i + 1 < b; i += 2) {
                    const double a0 = tmp[i], a1 = tmp[i + 1];
                    row[i] = c[i / 2] * a0 - s[i / 2] * a1;
                    row[i + 1] = s[i / 2] * a0 + c[i / 2] * a1;
                }
                if (b % 2) row[b - 1] = tmp[b - 1];
            });
            list.push(std::move(perm));
            list.push(std::move(g));
        }
    }
    return list;
}

std::vector<int> zigzagPermutation(std::span<const double> channelMaxAbs, Eigen::Index blockSize)
{
    const Eigen::Index c = Eigen::Index(channelMaxAbs.size());
    std::vector<int> order(static_cast<std::size_t>(c));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return channelMaxAbs[std::size_t(a)] > channelMaxAbs[std::size_t(b)]; });
    const Eigen::Index nb = c / blockSize;
    std::vector<std::vector<int>> blocks(static_cast<std::size_t>(nb));
    for (Eigen::Index i = 0; i < c; ++i) {
        const Eigen::Index pos = i % (2 * nb);
        const Eigen::Index blk = pos < nb ? pos : 2 * nb - 1 - pos;
        blocks[std::size_t(blk)].push_back(order[std::size_t(i)]);
    }
    std::vector<int> perm;
    perm.reserve(static_cast<std::size_t>(c));
    for (const auto& bl : blocks)
        perm.insert(perm.end(), bl.begin(), bl.end());
    return perm;
}

Eigen::VectorXd globalHouseholderOmega(const MatrixXdRow& x, RuquantRng& rng)
{
    const Eigen::VectorXd v = x.row(maxAbsRow(x)).transpose();
    Eigen::VectorXd omega = v - positiveTarget(x.cols(), v.norm(), rng);
    if (omega.squaredNorm() < 1e-10) return {};
    return omega;
}

std::shared_ptr<const model::ChainTransform> RuquantFit::total() const
{
    std::string what;
    for (const std::string& s : stageLabels)
        what += (what.empty() ? "" : ", ") + s;
    return std::make_shared<const model::ChainTransform>(
        parts, "RUQuant " + std::to_string(parts.empty() ? 0 : parts.front()->size()) + " (B " +
                   std::to_string(blockSize) + ": " + what + ")");
}

Result<RuquantFit> fitRuquantTransform(const Eigen::Ref<const RowMatrix>& signal, const RuquantOptions& o,
                                       std::uint64_t seed)
{
    const Eigen::Index c = signal.cols(), n = signal.rows();
    if (c == 0 || n == 0) return makeError(ErrorCode::InvalidArgument, "RUQuant: empty calibration signal");
    if (!signal.allFinite())
        return makeError(ErrorCode::InvalidArgument, "RUQuant: the calibration signal holds NaN/Inf");
    if (o.householderSteps < 0 || o.givensRounds < 0 || o.permutationRounds < 0)
        return makeError(ErrorCode::InvalidArgument, "RUQuant: negative step counts");
    RuquantFit fit;
    fit.blockSize = ruquantBlockSize(c, o.blockSize);
    if (fit.blockSize == 0)
        return makeError(ErrorCode::Unsupported, "RUQuant needs an even block size dividing the width; width " +
                                                     std::to_string(c) + " has none up to " +
                                                     std::to_string(o.blockSize));
    const Eigen::Index b = fit.blockSize;
    MatrixXdRow x = signal.cast<double>();
    RuquantRng rng(seed);
    const std::string bs = std::to_string(b);
    for (int round = 0; round <= o.permutationRounds; ++round) {
        Eigen::Map<MatrixXdRow> blocks(x.data(), n * (c / b), b);
        auto list = std::make_shared<model::OrthoOpList>(buildGreedyBlockRotation(blocks, o, rng));
        const std::string label = "RUQuant block rotation " + std::to_string(round + 1) + " (B " + bs + ", " +
                                  list->describeOps() + (o.repoGivens ? ", repo Givens" : "") + ")";
        fit.parts.push_back(std::make_shared<const model::BlockOpTransform>(
            c, std::move(list), label,
            o.applyOpLists ? model::BlockOpTransform::Apply::OpList : model::BlockOpTransform::Apply::Dense));
        fit.stageLabels.push_back(round == 0   ? "stage 1"
                                  : round == 1 ? "stage 1 again"
                                               : "stage 1 (" + std::to_string(round + 1) + ")");
        if (round == o.permutationRounds) break;
        const Eigen::RowVectorXd colMax = x.cwiseAbs().colwise().maxCoeff();
        std::vector<int> perm = zigzagPermutation(std::span<const double>(colMax.data(), std::size_t(c)), b);
        Eigen::VectorXd tmp(c);
        for (Eigen::Index i = 0; i < n; ++i) {
            for (Eigen::Index j = 0; j < c; ++j)
                tmp[j] = x(i, perm[std::size_t(j)]);
            x.row(i) = tmp.transpose();
        }
        fit.parts.push_back(std::make_shared<const model::PermutationTransform>(
            std::move(perm), "zig-zag permutation (" + std::to_string(c / b) + " blocks of " + bs + ")"));
        fit.stageLabels.push_back(round == 0 ? "zig-zag" : "zig-zag " + std::to_string(round + 1));
    }
    if (o.globalHouseholder) {
        Eigen::VectorXd omega = globalHouseholderOmega(x, rng);
        if (omega.size() > 0) {
            fit.parts.push_back(std::make_shared<const model::HouseholderTransform>(
                omega, "global Householder (" + std::to_string(c) + ")"));
            fit.stageLabels.push_back("global Householder");
        }
    }
    return fit;
}

namespace {

// Per output row: fitGroupMinMaxGptq's asymmetric grid over the row, and each value's code
// (quantizeRowsRtn's per-channel grid, the same kernels), rows in parallel.
template <typename Row>
Status forEachRowGrid(const RowMatrix& w, int bits, double clip, Row&& body)
{
    quant::GridSpec spec;
    spec.bits = bits;
    spec.clip = clip;
    QB_TRY_STATUS(quant::validateGridSpec(spec, int(w.cols())));
    const int levels = quant::gridLevels(bits), n = int(w.cols());
#pragma omp parallel
    {
        std::vector<double> row(static_cast<std::size_t>(n));
        std::vector<int> codes(static_cast<std::size_t>(n));
#pragma omp for schedule(static)
        for (Eigen::Index r = 0; r < w.rows(); ++r) {
            for (int c = 0; c < n; ++c)
                row[std::size_t(c)] = double(w(r, c));
            const quant::GroupParams p = quant::fitGroupMinMaxGptq(row.data(), n, bits, false, clip);
            for (int c = 0; c < n; ++c)
                codes[std::size_t(c)] = quant::quantizeCodeUniform(row[std::size_t(c)], p, levels);
            body(r, p, std::span<const int>(codes));
        }
    }
    return {};
}

} // namespace

Status fakeQuantizeWeightRows(RowMatrix& w, int bits, double clip)
{
    if (bits <= 0) return {};
    return forEachRowGrid(w, bits, clip, [&](Eigen::Index r, const quant::GroupParams& p, std::span<const int> codes) {
        for (std::size_t c = 0; c < codes.size(); ++c)
            w(r, Eigen::Index(c)) = float(quant::dequantizeCodeUniform(codes[c], p));
    });
}

Result<PackedWeightPtr> weightRowCodes(const RowMatrix& w, int bits, double clip)
{
    if (bits < 1 || bits > 8)
        return makeError(ErrorCode::InvalidArgument, "per-row codes hold 1 to 8 bits, not " + std::to_string(bits));
    const std::size_t n = std::size_t(w.cols());
    std::vector<std::uint8_t> codes(std::size_t(w.rows()) * n);
    std::vector<double> scale(std::size_t(w.rows()));
    std::vector<std::int32_t> zero(std::size_t(w.rows()));
    QB_TRY_STATUS(
        forEachRowGrid(w, bits, clip, [&](Eigen::Index r, const quant::GroupParams& p, std::span<const int> c) {
            // The asymmetric Min-Max grid: scale * (zero + code), zero integral and <= 0.
            scale[std::size_t(r)] = p.scale;
            zero[std::size_t(r)] = std::int32_t(-p.zero);
            for (std::size_t j = 0; j < n; ++j)
                codes[std::size_t(r) * n + j] = std::uint8_t(c[j]);
        }));
    return PackedWeightPtr(std::make_shared<model::UniformCodesWeight>(w.rows(), w.cols(), bits, codes,
                                                                       std::move(scale), std::move(zero)));
}

std::uint64_t ruquantGroupSeed(std::uint64_t seed, int layer, LinearKind kind)
{
    // splitmix64 of (seed, layer, group): distinct, well mixed streams per group.
    std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (std::uint64_t(layer) * 4 + std::uint64_t(kind) + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ---- the model ----------------------------------------------------------------------------------

namespace {

constexpr LinearKind kOrder[] = {LinearKind::Qkv, LinearKind::O, LinearKind::GateUp, LinearKind::Down};

std::vector<model::Linear> groupLinears(LinearKind k)
{
    switch (k) {
    case LinearKind::Qkv: return {model::Linear::Q, model::Linear::K, model::Linear::V};
    case LinearKind::O: return {model::Linear::O};
    case LinearKind::GateUp: return {model::Linear::Gate, model::Linear::Up};
    case LinearKind::Down: return {model::Linear::Down};
    }
    return {};
}

std::string layerWhere(int l) { return "model.layers." + std::to_string(l); }

// The quantized path's copy of a transformed linear: per-row codes (weightRowCodes), or the
// fake-quantized F32 values where the bits do not fit a byte (or there are none).
Status setQuantizedLinear(model::DecoderLayerWeights& wq, model::Linear lin, const RowMatrix& transformed,
                          const RuquantOptions& o)
{
    if (o.weightBits >= 1 && o.weightBits <= 8) {
        QB_TRY(codes, weightRowCodes(transformed, o.weightBits, o.weightClip));
        wq.packed[std::size_t(lin)] = std::move(*codes);
        wq.weight(lin) = RowMatrix();
        return {};
    }
    wq.weight(lin) = transformed;
    wq.packed[std::size_t(lin)].reset();
    return fakeQuantizeWeightRows(wq.weight(lin), o.weightBits, o.weightClip);
}

} // namespace

Result<RuquantResult> ruquantModel(const model::Model& in, const CalibrationSet& calib, const RuquantOptions& o,
                                   int batch, RunContext* ctx)
{
    const auto t0 = std::chrono::steady_clock::now();
    const ModelConfig& cfg = in.config();
    QB_TRY_STATUS(in.validate());
    if (calib.count < 1 || calib.seqlen < 2)
        return makeError(ErrorCode::InvalidArgument, "RUQuant needs calibration windows");
    for (int l = 0; l < in.numLayers(); ++l) {
        const auto& rt = in.layer(l)->runtime;
        const bool rotated = rt && (rt->kv.qkRotate || std::any_of(rt->inputs.begin(), rt->inputs.end(),
                                                                   [](const auto& x) { return bool(x.rotate); }));
        if (rotated)
            return makeError(ErrorCode::Unsupported,
                             "RUQuant transforms unrotated inputs; the model is already rotated (" +
                                 rt->onlineTransforms() + ")",
                             layerWhere(l));
    }
    batch = std::max(1, batch);
    QB_TRY(qk, model::HadamardTransform::create(cfg.headDim, std::nullopt, /*allowBlocks=*/true));
    const std::shared_ptr<const model::RowTransform> qkRotate = *qk;

    RuquantResult result;
    auto out = std::make_shared<model::Model>(in);
    const int T = calib.seqlen, N = calib.count;
    model::Workspace ws;
    RowMatrix hidden; // the quantized path's hidden states of every window [N·T, K]
    QB_TRY_STATUS(model::embed(in, calib.ids, hidden));
    const bool finetune = o.finetuneEpochs > 0;
    RowMatrix fpHidden; // fine-tuning: the FP path's (the targets' inputs)
    if (finetune) {
        QB_TRY_STATUS(model::checkBackwardConfig(cfg));
        fpHidden = hidden;
    }
    if (ctx) ctx->beginStage("ruquant", in.numLayers(), "layer 0");

    for (int l = 0; l < in.numLayers(); ++l) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("RUQuant, layer " + std::to_string(l));
        if (ctx) ctx->setDetail("layer " + std::to_string(l));
        RowMatrix mean = RowMatrix::Zero(T, cfg.hiddenSize);
        for (int b = 0; b < N; ++b)
            mean += hidden.middleRows(Eigen::Index(b) * T, T);
        mean /= float(N);

        // w: the layer in F32, its linears transformed group by group below. wq: the quantized
        // path's copy; its linears are set from w as each group is done (until then it reads the
        // layer as stored: a packed tensor is not copied). orig: fine-tuning's untransformed weights.
        std::shared_ptr<model::DecoderLayerWeights> w = model::unpackedCopy(*in.layer(l));
        auto wq = std::make_shared<model::DecoderLayerWeights>(*in.layer(l));
        std::shared_ptr<const model::DecoderLayerWeights> orig;
        if (finetune) orig = std::make_shared<const model::DecoderLayerWeights>(*w);
        auto rt = std::make_shared<model::LayerRuntime>(w->runtime ? *w->runtime : model::LayerRuntime{});
        auto rtq = std::make_shared<model::LayerRuntime>(*rt);
        rt->kv.qkRotate = rtq->kv.qkRotate = qkRotate;
        rtq->kv.q = o.q;
        rtq->kv.k = o.k;
        rtq->kv.v = o.v;
        std::array<RuquantFit, 4> fits;
        RowMatrix afterAttention; // the signal after the attention block (input of the MLP block)
        for (LinearKind kind : kOrder) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError("RUQuant, layer " + std::to_string(l));
            wq->runtime = std::make_shared<const model::LayerRuntime>(*rtq);
            const bool attention = kind == LinearKind::Qkv || kind == LinearKind::O;
            if (!attention && afterAttention.size() == 0) {
                afterAttention = mean;
                QB_TRY_STATUS(model::runLayerBlock(cfg, *wq, l, model::LayerBlock::Attention, afterAttention, T, ws));
            }
            RowMatrix h = attention ? mean : afterAttention;
            RowMatrix signal;
            QB_TRY_STATUS(model::runLayerBlock(
                cfg, *wq, l, attention ? model::LayerBlock::Attention : model::LayerBlock::Mlp, h, T, ws,
                [&](int, LinearKind k, const Eigen::Ref<const RowMatrix>& x) {
                    if (k == kind) signal = x;
                },
                kind));
            QB_TRY(fit, fitRuquantTransform(signal, o, ruquantGroupSeed(o.seed, l, kind)));
            auto total = fit->total();
            RuquantGroupReport rep;
            rep.layer = l;
            rep.kind = kind;
            rep.width = signal.cols();
            rep.blockSize = fit->blockSize;
            rep.signalMaxBefore = signal.cwiseAbs().maxCoeff();
            total->apply(signal);
            rep.signalMaxAfter = signal.cwiseAbs().maxCoeff();
            rep.transform = total->describe();
            result.groups.push_back(std::move(rep));
            for (model::Linear lin : groupLinears(kind)) {
                total->apply(w->weight(lin));
                const Status st = setQuantizedLinear(*wq, lin, w->weight(lin), o);
                if (!st.ok()) return st.error().withContext(model::tensorName(l, lin));
            }
            rt->input(kind).rotate = total;
            rtq->input(kind).rotate = total;
            rtq->input(kind).quant = o.act[std::size_t(kind)];
            fits[std::size_t(kind)] = std::move(*fit);
        }
        if (finetune) {
            if (ctx) ctx->setDetail("layer " + std::to_string(l) + ", fine-tuning");
            RowMatrix targets = fpHidden;
            for (int b = 0; b < N; b += batch) {
                const int nb = std::min(batch, N - b);
                QB_TRY_STATUS(model::runLayer(cfg, *in.layer(l), l,
                                              targets.middleRows(Eigen::Index(b) * T, Eigen::Index(nb) * T), T, ws));
            }
            ReflectionSetup setup;
            setup.qkRotate = qkRotate;
            setup.q = o.q;
            setup.k = o.k;
            setup.v = o.v;
            setup.weightBits = o.weightBits;
            setup.weightClip = o.weightClip;
            std::array<std::string, 4> labels;
            for (LinearKind kind : kOrder) {
                const RuquantFit& fit = fits[std::size_t(kind)];
                ReflectionGroup g;
                g.smoothDivisor = rt->input(kind).smoothDivisor;
                std::vector<std::shared_ptr<const model::RowTransform>> fixed = fit.parts;
                if (const auto* hh = dynamic_cast<const model::HouseholderTransform*>(fixed.back().get())) {
                    g.omega = hh->omega();
                    fixed.pop_back();
                }
                g.fixed = std::make_shared<const model::ChainTransform>(std::move(fixed));
                g.linears = groupLinears(kind);
                for (model::Linear lin : g.linears) {
                    RowMatrix m = orig->weight(lin);
                    g.fixed->apply(m);
                    g.base.push_back(std::move(m));
                }
                g.act = o.act[std::size_t(kind)];
                labels[std::size_t(kind)] = rt->input(kind).rotate->describe();
                setup.groups[std::size_t(kind)] = std::move(g);
            }
            QB_TRY(trained,
                   trainReflections(cfg, *wq, l, setup, hidden, targets, T, o.finetuneEpochs, o.finetuneLr, ctx));
            result.finetuneSeconds += trained->seconds;
            // Where no epoch lowered the layer's loss the initial ω's are back: not "fine-tuned".
            const std::string tuning = trained->kept ? "fine-tuning reverted" : "fine-tuned";
            for (LinearKind kind : kOrder) {
                const ReflectionGroup& g = *setup.groups[std::size_t(kind)];
                std::vector<std::shared_ptr<const model::RowTransform>> parts;
                parts.push_back(g.fixed);
                std::shared_ptr<const model::RowTransform> hh;
                if (g.omega.size() > 0) {
                    hh = std::make_shared<const model::HouseholderTransform>(
                        g.omega, "global Householder (" + std::to_string(g.omega.size()) + ", " + tuning + ")");
                    parts.push_back(hh);
                }
                auto total = std::make_shared<const model::ChainTransform>(std::move(parts),
                                                                           labels[std::size_t(kind)] + ", " + tuning);
                for (std::size_t i = 0; i < g.linears.size(); ++i) {
                    RowMatrix wt = g.base[i];
                    if (hh) hh->apply(wt);
                    const Status st = setQuantizedLinear(*wq, g.linears[i], wt, o);
                    if (!st.ok()) return st.error().withContext(model::tensorName(l, g.linears[i]));
                    w->weight(g.linears[i]) = std::move(wt);
                }
                rt->input(kind).rotate = total;
                rtq->input(kind).rotate = total;
            }
            for (RuquantGroupReport& rep : result.groups)
                if (rep.layer == l) {
                    rep.finetuneLossBefore = trained->lossBefore;
                    rep.finetuneLossAfter = trained->lossAfter;
                    rep.finetuneBestEpoch = trained->bestEpoch;
                    rep.finetuneReverted = trained->kept;
                }
            fpHidden = std::move(targets);
        }
        wq->runtime = std::make_shared<const model::LayerRuntime>(*rtq);
        w->runtime = std::make_shared<const model::LayerRuntime>(*rt);
        out->setLayer(l, w);
        // The next layer's input through the quantized layer (none after the last).
        const auto tp = std::chrono::steady_clock::now();
        for (int b = 0; l + 1 < in.numLayers() && b < N; b += batch) {
            const int nb = std::min(batch, N - b);
            QB_TRY_STATUS(
                model::runLayer(cfg, *wq, l, hidden.middleRows(Eigen::Index(b) * T, Eigen::Index(nb) * T), T, ws));
            // The layer's last input (down_proj's) kept its codes: its products ran in integers.
            if (ws.m_codes.source) result.integerProducts = true;
        }
        result.propagateSeconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - tp).count();
        if (ctx) ctx->advance();
    }
    result.model = std::move(out);
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return result;
}

} // namespace qb::pipeline
