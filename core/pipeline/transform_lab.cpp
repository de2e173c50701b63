#include "pipeline/transform_lab.h"

#include "model/forward.h"
#include "model/hadamard.h"
#include "pipeline/model_loader.h"
#include "pipeline/ruquant_lab.h"
#include "pipeline/smoothing.h"
#include "pipeline/workflows.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

namespace qb::pipeline {

using model::LinearKind;
using model::RowMatrix;

namespace {

Result<LabCapture> capture(const model::Model& model, const LayerSource& layerOf, const CalibrationSet& calib,
                           int layer, LinearKind kind, const LabOptions& options, RunContext* ctx)
{
    if (calib.count < 1 || calib.seqlen < 1) return makeError(ErrorCode::InvalidArgument, "empty calibration set");
    if (layer < 0 || layer >= model.numLayers())
        return makeError(ErrorCode::InvalidArgument, "layer " + std::to_string(layer) + " is not in [0, " +
                                                         std::to_string(model.numLayers()) + ")");
    if (options.maxTokens < 1) return makeError(ErrorCode::InvalidArgument, "maxTokens must be positive");
    const int T = calib.seqlen;
    const int batch = std::max(1, options.batch);
    const int batches = (calib.count + batch - 1) / batch;
    if (ctx) ctx->beginStage("capture", std::int64_t(layer + 1) * batches);

    LabCapture cap;
    cap.layer = layer;
    cap.kind = kind;
    cap.seqlen = T;
    cap.windows = calib.count;
    cap.totalTokens = calib.tokens();
    const std::int64_t n = std::min<std::int64_t>(options.maxTokens, cap.totalTokens);
    cap.rows.resize(std::size_t(n));
    for (std::int64_t i = 0; i < n; ++i)
        cap.rows[std::size_t(i)] = i * cap.totalTokens / n;

    RowMatrix hidden;
    QB_TRY_STATUS(model::embed(model, calib.ids, hidden));
    model::Workspace ws;
    RowMatrix block;
    std::size_t next = 0; // the next sampled row to copy
    std::vector<double> posSum;
    std::int64_t blockFirst = 0;
    const model::ActivationTap collect = [&](int, LinearKind k, const Eigen::Ref<const RowMatrix>& x) {
        if (k != kind) return;
        const Eigen::Index C = x.cols();
        if (cap.x.cols() != C) {
            cap.x.resize(n, C);
            cap.channelMaxAbs.assign(std::size_t(C), 0.f);
            posSum.assign(std::size_t(T) * std::size_t(C), 0.0);
        }
        for (Eigen::Index r = 0; r < x.rows(); ++r) {
            const std::int64_t g = blockFirst + r;
            const float* row = x.row(r).data();
            for (Eigen::Index j = 0; j < C; ++j)
                cap.channelMaxAbs[std::size_t(j)] = std::max(cap.channelMaxAbs[std::size_t(j)], std::abs(row[j]));
            double* pos = posSum.data() + std::size_t(g % T) * std::size_t(C);
            for (Eigen::Index j = 0; j < C; ++j)
                pos[j] += double(row[j]);
            while (next < cap.rows.size() && cap.rows[next] == g)
                cap.x.row(Eigen::Index(next++)) = x.row(r);
        }
    };

    for (int l = 0; l <= layer; ++l) {
        if (ctx) ctx->setDetail("layer " + std::to_string(l));
        QB_TRY(weights, layerOf(l));
        const model::DecoderLayerWeights& w = **weights;
        for (int b = 0; b < batches; ++b) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError("capture, layer " + std::to_string(l));
            const int first = b * batch;
            const int count = std::min(batch, calib.count - first);
            block = hidden.middleRows(Eigen::Index(first) * T, Eigen::Index(count) * T);
            if (l < layer) {
                QB_TRY_STATUS(model::runLayer(model.config(), w, l, block, T, ws));
                hidden.middleRows(Eigen::Index(first) * T, Eigen::Index(count) * T) = block;
            } else {
                blockFirst = std::int64_t(first) * T;
                const bool attention = kind == LinearKind::Qkv || kind == LinearKind::O;
                if (!attention)
                    QB_TRY_STATUS(
                        model::runLayerBlock(model.config(), w, l, model::LayerBlock::Attention, block, T, ws));
                QB_TRY_STATUS(model::runLayerBlock(model.config(), w, l,
                                                   attention ? model::LayerBlock::Attention : model::LayerBlock::Mlp,
                                                   block, T, ws, collect, kind));
            }
            if (ctx) ctx->advance();
        }
        if (l == layer) {
            const model::DecoderLayerWeights& w = *model::unpackedLayer(*weights); // F32 copies
            switch (kind) {
            case LinearKind::Qkv:
                cap.weights = {w.q, w.k, w.v};
                cap.weightNames = {"q_proj", "k_proj", "v_proj"};
                break;
            case LinearKind::O:
                cap.weights = {w.o};
                cap.weightNames = {"o_proj"};
                break;
            case LinearKind::GateUp:
                cap.weights = {w.gate, w.up};
                cap.weightNames = {"gate_proj", "up_proj"};
                break;
            case LinearKind::Down:
                cap.weights = {w.down};
                cap.weightNames = {"down_proj"};
                break;
            }
        }
    }
    if (next != cap.rows.size())
        return makeError(ErrorCode::Internal, "the " + std::string(model::linearKindName(kind)) +
                                                  " input was not tapped in layer " + std::to_string(layer));
    const Eigen::Index C = cap.x.cols();
    cap.meanPerPosition.resize(T, C);
    for (int t = 0; t < T; ++t)
        for (Eigen::Index j = 0; j < C; ++j)
            cap.meanPerPosition(t, j) = float(posSum[std::size_t(t) * std::size_t(C) + std::size_t(j)] / calib.count);
    return cap;
}

// Excess kurtosis of n values read through `at`, in double; 0 for a constant.
template <typename At>
double excessKurtosis(Eigen::Index n, At at)
{
    if (n < 1) return 0;
    double mean = 0;
    for (Eigen::Index i = 0; i < n; ++i)
        mean += at(i);
    mean /= double(n);
    double m2 = 0, m4 = 0;
    for (Eigen::Index i = 0; i < n; ++i) {
        const double d = at(i) - mean, d2 = d * d;
        m2 += d2;
        m4 += d2 * d2;
    }
    m2 /= double(n);
    m4 /= double(n);
    return m2 > 0 ? m4 / (m2 * m2) - 3.0 : 0.0;
}

double median(std::vector<double> v)
{
    if (v.empty()) return 0;
    std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
    return v[v.size() / 2];
}

// The stage applied to rows (activations, or weights when `weights`): smoothing, then transforms.
Status transformRows(RowMatrix& rows, const LabStage& stage, const model::RowVector& s, bool weights)
{
    if (s.size() > 0) {
        if (weights) rows = rows * s.asDiagonal();
        else rows = rows * s.cwiseInverse().asDiagonal();
    }
    for (const auto& t : stage.transforms) {
        if (!t || t->size() != rows.cols())
            return makeError(ErrorCode::Shape, "stage \"" + stage.label + "\": transform " +
                                                   (t ? t->describe() : "(null)") + " does not fit an input of " +
                                                   std::to_string(rows.cols()) + " channels");
        t->apply(rows);
    }
    return {};
}

// model/runtime.h's RangeQuantizer: every value lands in the level the fake quantizer gives it.
using CellQuantizer = model::RangeQuantizer;

struct CellAccumulator {
    int bins;
    float qmin;
    std::vector<std::int64_t> positions, count;
    std::vector<double> sum, sumSq, midSq;
    std::int64_t clipped = 0, exact = 0;
    CellAccumulator(int b, const model::ActQuantSpec& spec)
        : bins(b), qmin(spec.sym ? -float(1 << (spec.bits - 1)) : 0.f), positions(std::size_t(b), 0)
    {
        const std::size_t levels = std::size_t(1) << spec.bits;
        count.assign(levels, 0);
        sum.assign(levels, 0.0);
        sumSq.assign(levels, 0.0);
        midSq.assign(levels, 0.0);
    }
    void add(float x, const CellQuantizer& q)
    {
        if (q.scale == 0) {
            ++exact;
            return;
        }
        const float r = std::nearbyint(x * q.invScale);
        const float level = r + q.zero;
        if (level < q.qmin || level > q.qmax) {
            ++clipped;
            return;
        }
        double u = double(x * q.invScale - r) + 0.5;
        u = std::clamp(u, 0.0, std::nextafter(1.0, 0.0));
        const std::size_t k = std::size_t(level - qmin);
        ++count[k];
        sum[k] += u;
        sumSq[k] += u * u;
        midSq[k] += (u - 0.5) * (u - 0.5);
        positions[std::min(std::size_t(u * bins), std::size_t(bins - 1))]++;
    }
    WithinCellStats finish(int channel) const
    {
        WithinCellStats st;
        st.channel = channel;
        st.positions = positions;
        st.cellCount = count;
        st.centroidOffset.assign(count.size(), 0.0);
        st.clipped = clipped;
        st.exact = exact;
        double mid = 0, cen = 0, off = 0;
        for (std::size_t k = 0; k < count.size(); ++k) {
            if (count[k] == 0) continue;
            const double n = double(count[k]), c = sum[k] / n;
            st.values += count[k];
            st.centroidOffset[k] = c - 0.5;
            off += n * std::abs(c - 0.5);
            mid += midSq[k];
            cen += std::max(0.0, sumSq[k] - n * c * c); // Σ (u − c)²
        }
        if (st.values > 0) {
            const double n = double(st.values);
            st.meanAbsOffset = off / n;
            st.mseMidpoint = mid / n;
            st.mseCentroid = cen / n;
            st.mseRatio = st.mseCentroid > 0 ? st.mseMidpoint / st.mseCentroid : 0;
        }
        return st;
    }
};

} // namespace

Result<WithinCellStats> withinCellStats(const Eigen::Ref<const RowMatrix>& x, int channel,
                                        const model::ActQuantSpec& spec, int bins)
{
    if (!spec.enabled() || spec.bits < 2 || spec.bits > 16)
        return makeError(ErrorCode::InvalidArgument,
                         "within-cell statistics need an activation quantizer of 2..16 bits");
    if (bins < 2) return makeError(ErrorCode::InvalidArgument, "within-cell statistics need at least 2 position bins");
    if (channel < -1 || channel >= x.cols())
        return makeError(ErrorCode::InvalidArgument,
                         "channel " + std::to_string(channel) + " is not in [0, " + std::to_string(x.cols()) + ")");
    const Eigen::Index n = x.rows(), c = x.cols();
    CellAccumulator acc(bins, spec);
    const bool oneRange = spec.staticRange || spec.granularity == model::ActGranularity::PerTensor;
    std::optional<CellQuantizer> tensorQ;
    if (oneRange) {
        float lo = 0, hi = 0;
        if (spec.staticRange) {
            lo = (*spec.staticRange)[0];
            hi = (*spec.staticRange)[1];
        } else if (x.size() > 0) {
            lo = std::min(0.f, x.minCoeff());
            hi = std::max(0.f, x.maxCoeff());
        }
        tensorQ.emplace(lo, hi, spec);
    }
    for (Eigen::Index r = 0; r < n; ++r) {
        const float* row = x.row(r).data();
        CellQuantizer q = tensorQ ? *tensorQ : CellQuantizer(0, 0, spec);
        if (!tensorQ) {
            float lo = 0, hi = 0;
            for (Eigen::Index j = 0; j < c; ++j) {
                lo = std::min(lo, row[j]);
                hi = std::max(hi, row[j]);
            }
            q = CellQuantizer(lo, hi, spec);
        }
        if (channel >= 0) {
            acc.add(row[channel], q);
        } else {
            for (Eigen::Index j = 0; j < c; ++j)
                acc.add(row[j], q);
        }
    }
    return acc.finish(channel);
}

Result<LabCapture> captureLabInput(const model::Model& model, const CalibrationSet& calibration, int layer,
                                   LinearKind kind, const LabOptions& options, RunContext* ctx)
{
    return capture(model, modelLayers(model), calibration, layer, kind, options, ctx);
}

Result<LabCapture> captureLabInput(const io::Checkpoint& checkpoint, const CalibrationSet& calibration, int layer,
                                   LinearKind kind, const LabOptions& options, RunContext* ctx)
{
    LoadOptions lo;
    lo.loadLayers = false;
    QB_TRY(model, loadModel(checkpoint, nullptr, nullptr, lo));
    return capture(**model, checkpointLayers(checkpoint), calibration, layer, kind, options, ctx);
}

Result<LabResult> analyzeLabStages(const LabCapture& cap, const std::vector<LabStage>& fixed,
                                   const std::vector<LabStageBuilder>& builders, const LabOptions& options,
                                   RunContext* ctx)
{
    const auto t0 = std::chrono::steady_clock::now();
    const Eigen::Index N = cap.x.rows(), C = cap.x.cols();
    if (N < 1 || C < 1) return makeError(ErrorCode::InvalidArgument, "the lab capture holds no activations");
    if (options.bins < 2) return makeError(ErrorCode::InvalidArgument, "the histogram needs at least 2 bins");
    if (options.weightBits < 0 || options.weightBits == 1 || options.weightBits > 8)
        return makeError(ErrorCode::InvalidArgument, "weight bits must be 0 (unquantized) or 2..8");
    if (options.cellBins < 2)
        return makeError(ErrorCode::InvalidArgument, "the within-cell view needs at least 2 bins");
    if (options.cellChannel < -1 || options.cellChannel >= C)
        return makeError(ErrorCode::InvalidArgument, "within-cell channel " + std::to_string(options.cellChannel) +
                                                         " is not in [0, " + std::to_string(C) + ")");
    model::ActQuantSpec weightQuant; // per row = per output channel
    weightQuant.bits = options.weightBits;
    std::vector<LabStage> stages = fixed;
    for (const auto& build : builders) {
        if (!build) continue;
        QB_TRY(more, build(cap, ctx));
        stages.insert(stages.end(), more->begin(), more->end());
    }
    if (stages.empty()) return makeError(ErrorCode::InvalidArgument, "the lab has no stages");

    LabResult res;
    res.layer = cap.layer;
    res.kind = cap.kind;
    res.channels = C;
    res.sampledTokens = N;
    res.totalTokens = cap.totalTokens;
    res.quant = options.quant;
    res.weightBits = options.weightBits;
    res.cellChannel = options.cellChannel;
    res.cellBins = options.cellBins;
    if (ctx) ctx->beginStage("transform lab", std::int64_t(stages.size()) * 2);

    // The reference outputs X·Wᵀ of every weight of the group, and their energy.
    double refEnergy = 0;
    std::vector<RowMatrix> reference;
    for (const RowMatrix& w : cap.weights) {
        RowMatrix y = cap.x * w.transpose();
        refEnergy += double(y.squaredNorm());
        reference.push_back(std::move(y));
    }
    std::vector<const RowMatrix*> weightPtrs;
    for (const RowMatrix& w : cap.weights)
        weightPtrs.push_back(&w);

    std::vector<model::RowVector> factors(stages.size());
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (std::size_t si = 0; si < stages.size(); ++si) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("transform lab");
        const LabStage& stage = stages[si];
        if (ctx) ctx->setDetail(stage.label);
        LabStageResult sr;
        sr.label = stage.label;
        sr.rotated = !stage.transforms.empty();
        for (const auto& t : stage.transforms)
            if (t) sr.transform += (sr.transform.empty() ? "" : "; ") + t->describe();
        if (stage.smoothAlpha) {
            const double a = *stage.smoothAlpha;
            if (!(a >= 0 && a <= 1))
                return makeError(ErrorCode::InvalidArgument,
                                 "stage \"" + stage.label + "\": the smoothing exponent must be in [0, 1]");
            factors[si] = smoothingFactors(cap.channelMaxAbs, weightPtrs, a);
            sr.smoothFactors.assign(factors[si].data(), factors[si].data() + C);
        }
        RowMatrix xt = cap.x;
        QB_TRY_STATUS(transformRows(xt, stage, factors[si], false));
        sr.moments = eval::computeMoments(xt);
        lo = std::min(lo, sr.moments.min);
        hi = std::max(hi, sr.moments.max);

        // Per channel (over tokens) and per token (over channels).
        sr.channelMaxAbs.resize(std::size_t(C));
        sr.channelKurtosis.resize(std::size_t(C));
        for (Eigen::Index j = 0; j < C; ++j) {
            sr.channelMaxAbs[std::size_t(j)] = xt.col(j).cwiseAbs().maxCoeff();
            sr.channelKurtosis[std::size_t(j)] = float(excessKurtosis(N, [&](Eigen::Index i) { return xt(i, j); }));
        }
        std::vector<double> tokenMax(static_cast<std::size_t>(N));
        double kurtSum = 0;
        for (Eigen::Index i = 0; i < N; ++i) {
            tokenMax[std::size_t(i)] = xt.row(i).cwiseAbs().maxCoeff();
            kurtSum += excessKurtosis(C, [&](Eigen::Index j) { return xt(i, j); });
        }
        sr.tokens.maxAbsMax = *std::max_element(tokenMax.begin(), tokenMax.end());
        sr.tokens.maxAbsMedian = median(tokenMax);
        sr.tokens.kurtosisMean = kurtSum / double(N);
        {
            std::vector<double> m(sr.channelMaxAbs.begin(), sr.channelMaxAbs.end());
            const double med = median(m);
            sr.channelRatio = med > 0 ? *std::max_element(m.begin(), m.end()) / med : 0;
        }

        // Quantization error, per channel and in all.
        RowMatrix q = xt;
        model::fakeQuantizeActivations(q, options.quant);
        const RowMatrix e = q - xt;
        sr.channelQuantError.resize(std::size_t(C));
        for (Eigen::Index j = 0; j < C; ++j) {
            const double den = double(xt.col(j).squaredNorm());
            sr.channelQuantError[std::size_t(j)] = den > 0 ? float(double(e.col(j).squaredNorm()) / den) : 0.f;
        }
        const double xe = double(xt.squaredNorm());
        sr.quantError = xe > 0 ? double(e.squaredNorm()) / xe : 0;
        if (options.quant.enabled()) {
            QB_TRY(all, withinCellStats(xt, -1, options.quant, options.cellBins));
            sr.cells = std::move(*all);
            if (options.cellChannel >= 0) {
                QB_TRY(one, withinCellStats(xt, options.cellChannel, options.quant, options.cellBins));
                sr.channelCells = std::move(*one);
            }
        }

        // Output error with the weights transformed to match.
        double errEnergy = 0;
        for (std::size_t k = 0; k < cap.weights.size(); ++k) {
            RowMatrix wt = cap.weights[k];
            QB_TRY_STATUS(transformRows(wt, stage, factors[si], true));
            if (weightQuant.enabled()) model::fakeQuantizeActivations(wt, weightQuant);
            const RowMatrix y = q * wt.transpose();
            errEnergy += double((reference[k] - y).squaredNorm());
        }
        sr.outputError = refEnergy > 0 ? std::sqrt(errEnergy / refEnergy) : 0;
        res.stages.push_back(std::move(sr));
        if (ctx) ctx->advance();
    }

    // Histograms over the common range (the stages are transformed again rather than all kept).
    if (!(hi > lo)) {
        lo -= 0.5;
        hi += 0.5;
    }
    res.histLo = lo;
    res.histHi = hi;
    for (std::size_t si = 0; si < stages.size(); ++si) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("transform lab");
        RowMatrix xt = cap.x;
        QB_TRY_STATUS(transformRows(xt, stages[si], factors[si], false));
        res.stages[si].histogram = eval::computeHistogram(xt, options.bins, lo, hi);
        if (ctx) ctx->advance();
    }
    res.stageList = std::move(stages);
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
}

Result<std::vector<WithinCellStats>> labWithinCell(const LabResult& result, int channel, RunContext* ctx)
{
    if (!result.capture) return makeError(ErrorCode::InvalidArgument, "the lab result keeps no capture");
    if (!result.quant.enabled())
        return makeError(ErrorCode::InvalidArgument, "the within-cell view needs the activation quantizer on");
    if (channel < 0 || channel >= result.capture->channels())
        return makeError(ErrorCode::InvalidArgument, "channel " + std::to_string(channel) + " is not in [0, " +
                                                         std::to_string(result.capture->channels()) + ")");
    if (ctx) ctx->beginStage("within-cell", std::int64_t(result.stageList.size()));
    std::vector<WithinCellStats> out;
    for (const LabStage& stage : result.stageList) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("within-cell statistics");
        if (ctx) ctx->setDetail(stage.label);
        QB_TRY(xt, applyLabStage(*result.capture, stage));
        QB_TRY(st, withinCellStats(*xt, channel, result.quant, result.cellBins));
        out.push_back(std::move(*st));
        if (ctx) ctx->advance();
    }
    return out;
}

Result<model::RowMatrix> applyLabStage(const LabCapture& cap, const LabStage& stage)
{
    model::RowVector s;
    if (stage.smoothAlpha) {
        if (!(*stage.smoothAlpha >= 0 && *stage.smoothAlpha <= 1))
            return makeError(ErrorCode::InvalidArgument,
                             "stage \"" + stage.label + "\": the smoothing exponent must be in [0, 1]");
        std::vector<const RowMatrix*> weights;
        for (const RowMatrix& w : cap.weights)
            weights.push_back(&w);
        s = smoothingFactors(cap.channelMaxAbs, weights, *stage.smoothAlpha);
    }
    RowMatrix x = cap.x;
    QB_TRY_STATUS(transformRows(x, stage, s, false));
    return x;
}

Result<std::shared_ptr<const model::RowTransform>> labHadamard(Eigen::Index n, std::uint64_t seed)
{
    QB_TRY(h, model::HadamardTransform::create(n, seed, /*allowBlocks=*/true));
    return std::shared_ptr<const model::RowTransform>(std::move(*h));
}

std::vector<LabStage> standardLabStages(Eigen::Index n, double smoothAlpha, bool hadamard, std::uint64_t seed,
                                        std::vector<std::string>* notes)
{
    char alpha[32];
    std::snprintf(alpha, sizeof alpha, "%.2g", smoothAlpha);
    std::vector<LabStage> stages;
    stages.push_back({"original", std::nullopt, {}});
    stages.push_back({std::string("smoothed (α ") + alpha + ")", smoothAlpha, {}});
    if (hadamard) {
        auto h = labHadamard(n, seed);
        if (h) {
            stages.push_back({"Hadamard", std::nullopt, {*h}});
            stages.push_back({std::string("smoothed (α ") + alpha + ") + Hadamard", smoothAlpha, {*h}});
        } else if (notes) {
            notes->push_back("Hadamard stages left out: " + h.error().message);
        }
    }
    return stages;
}

Result<LabResult> runTransformLab(const TransformLabRequest& req, RunContext* ctx)
{
    const auto t0 = std::chrono::steady_clock::now();
    if (!req.checkpoint) return makeError(ErrorCode::InvalidArgument, "transform lab: no model");
    if (ctx) ctx->setPhases({{"calibrate", 1}, {"capture", 6}, {"transform lab", 3}});
    if (ctx) ctx->beginPhase("calibrate");
    QB_TRY(tok, io::loadCheckpointTokenizer(*req.checkpoint));
    CalibrationSource source;
    source.textPath = req.calibrationText;
    source.options = req.calibration;
    QB_TRY(calib, loadCalibration(*tok, source, ctx));
    if (ctx) ctx->beginPhase("capture");
    Result<LabCapture> cap = req.model
                                 ? captureLabInput(*req.model, *calib, req.layer, req.kind, req.options, ctx)
                                 : captureLabInput(*req.checkpoint, *calib, req.layer, req.kind, req.options, ctx);
    if (!cap) return cap.error();
    auto kept = std::make_shared<const LabCapture>(std::move(*cap));
    if (ctx) ctx->beginPhase("transform lab");
    std::vector<std::string> notes;
    std::vector<LabStage> stages = standardLabStages(kept->channels(), req.smoothAlpha, req.hadamard, req.seed, &notes);
    stages.insert(stages.end(), req.extraStages.begin(), req.extraStages.end());
    std::vector<LabStageBuilder> builders;
    if (req.ruquant) builders.push_back(ruquantLabBuilder(req.ruquantOptions, req.smoothAlpha));
    builders.insert(builders.end(), req.builders.begin(), req.builders.end());
    QB_TRY(res, analyzeLabStages(*kept, stages, builders, req.options, ctx));
    res->capture = std::move(kept);
    res->notes.insert(res->notes.begin(), notes.begin(), notes.end());
    res->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return std::move(*res);
}

namespace {

io::JsonValue floats(const std::vector<float>& v)
{
    io::JsonArray a;
    a.reserve(v.size());
    for (float x : v)
        a.emplace_back(double(x));
    return io::JsonValue(std::move(a));
}

io::JsonValue cellsJson(const WithinCellStats& c)
{
    io::JsonValue o;
    o.set("channel", c.channel);
    o.set("values", c.values);
    o.set("clipped", c.clipped);
    o.set("exact", c.exact);
    o.set("mse_midpoint", c.mseMidpoint);
    o.set("mse_centroid", c.mseCentroid);
    o.set("mse_ratio", c.mseRatio);
    o.set("mean_abs_offset", c.meanAbsOffset);
    io::JsonArray pos, off;
    for (auto n : c.positions)
        pos.emplace_back(n);
    for (double d : c.centroidOffset)
        off.emplace_back(d);
    o.set("positions", io::JsonValue(std::move(pos)));
    o.set("centroid_offsets", io::JsonValue(std::move(off)));
    return o;
}

} // namespace

io::JsonValue transformLabJson(const LabResult& r, bool perChannel)
{
    io::JsonValue o;
    o.set("layer", r.layer);
    o.set("input", std::string(model::linearKindName(r.kind)));
    o.set("channels", std::int64_t(r.channels));
    o.set("sampled_tokens", r.sampledTokens);
    o.set("total_tokens", r.totalTokens);
    o.set("abits", r.quant.bits);
    o.set("sym", r.quant.sym);
    o.set("clip", double(r.quant.clip));
    o.set("wbits", r.weightBits);
    o.set("hist_range", io::JsonValue(io::JsonArray{r.histLo, r.histHi}));
    io::JsonArray notes;
    for (const auto& n : r.notes)
        notes.emplace_back(n);
    o.set("notes", io::JsonValue(std::move(notes)));
    io::JsonArray stages;
    for (const LabStageResult& s : r.stages) {
        io::JsonValue j;
        j.set("label", s.label);
        j.set("transform", s.transform);
        j.set("rotated", s.rotated);
        j.set("channel_ratio", s.channelRatio);
        j.set("kurtosis", s.moments.kurtosis);
        j.set("token_kurtosis", s.tokens.kurtosisMean);
        j.set("token_max_median", s.tokens.maxAbsMedian);
        j.set("token_max", s.tokens.maxAbsMax);
        j.set("quant_rel_mse", s.quantError);
        j.set("output_error", s.outputError);
        io::JsonArray top;
        for (int i : eval::topIndices(s.channelMaxAbs, 5))
            top.emplace_back(i);
        j.set("top_channels", io::JsonValue(std::move(top)));
        if (r.quant.enabled()) j.set("cells", cellsJson(s.cells));
        if (r.quant.enabled() && r.cellChannel >= 0) j.set("channel_cells", cellsJson(s.channelCells));
        if (perChannel) {
            j.set("channel_max_abs", floats(s.channelMaxAbs));
            j.set("channel_kurtosis", floats(s.channelKurtosis));
            j.set("channel_quant_error", floats(s.channelQuantError));
            io::JsonArray counts;
            for (auto c : s.histogram.counts)
                counts.emplace_back(c);
            j.set("histogram", io::JsonValue(std::move(counts)));
        }
        stages.push_back(std::move(j));
    }
    o.set("stages", io::JsonValue(std::move(stages)));
    o.set("cell_channel", r.cellChannel);
    o.set("seconds", r.seconds);
    return o;
}

} // namespace qb::pipeline
