#include "pipeline/quantize_job.h"

#include "base/dtype.h"
#include "export/ggml_quantize.h"
#include "model/forward.h"
#include "pipeline/importance.h"
#include "pipeline/model_loader.h"
#include "pipeline/parallel_for.h"
#include "pipeline/quantize_checkpoint.h"
#include "quant/error_metrics.h"
#include "quant/cmpq.h"
#include "quant/container_grid.h"
#include "quant/gptq.h"
#include "quant/hessian.h"

#include <array>
#include <chrono>
#include <optional>

namespace qb::pipeline {

namespace {

using Clock = std::chrono::steady_clock;
double secondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Sublayer groups in the order of the true-sequential reference: each group's inputs come from
// the already-quantized groups before it.
constexpr std::array<std::array<model::Linear, 3>, 4> kGroups{{
    {model::Linear::Q, model::Linear::K, model::Linear::V},
    {model::Linear::O, model::Linear::O, model::Linear::O},
    {model::Linear::Gate, model::Linear::Up, model::Linear::Up},
    {model::Linear::Down, model::Linear::Down, model::Linear::Down},
}};
constexpr std::array<int, 4> kGroupSizes{3, 1, 2, 1};

std::string layerDetail(int layer, const std::string& what) { return "layer " + std::to_string(layer) + " " + what; }

Error cannotResume(const std::string& dir, const Error& e)
{
    return makeError(e.code,
                     "quantize: cannot resume from the checkpoint in " + dir + ": " + e.message +
                         " (remove the directory to start over)",
                     e.context);
}

// The calibration hidden states of the current layer and the partial layer runs over them. A
// group's Hessian needs the layer only as far as that group's input (model::runLayerBlock stops
// right after the tap): {q,k,v} needs the input norm, {o} the attention, {gate,up} and {down} the
// MLP block on the post-attention residual. The o and down passes keep their tapped inputs (they
// depend only on the groups before, already final), so that finishing a block once its last
// linear is solved is one GEMM: the attention and the gate/up GEMMs run once per layer.
struct Runner {
    const model::Model& base;
    const CalibrationSet& calib;
    const QuantizeJobOptions& opt;
    RunContext* ctx;
    model::Workspace ws;
    model::RowMatrix hidden; // [n·L, K]: the layer input, then (attentionDone) the post-attention residual
    // Kept inputs of o_proj [n·L, heads·d] and down_proj [n·L, I], by block; valid when kept[b].
    std::array<model::RowMatrix, 2> inputs;
    std::array<bool, 2> kept{false, false};
    bool attentionDone = false;
    Eigen::Index chunkRow = 0; // first row of the chunk being run, for taps

    // Runs `block` of layer w over every chunk of hidden in place, or only up to the tap of stop's
    // input (hidden untouched). Progress advances by windows when `advance` is set.
    Status pass(const model::DecoderLayerWeights& w, int layer, model::LayerBlock block,
                std::optional<model::LinearKind> stop, const model::ActivationTap& tap, bool advance)
    {
        const int L = calib.seqlen;
        for (int b0 = 0; b0 < calib.count; b0 += opt.batch) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError(layerDetail(layer, "forward"));
            const int nb = std::min(opt.batch, calib.count - b0);
            chunkRow = Eigen::Index(b0) * L;
            QB_TRY_STATUS(model::runLayerBlock(base.config(), w, layer, block,
                                               hidden.middleRows(chunkRow, Eigen::Index(nb) * L), L, ws, tap, stop));
            if (ctx && advance) ctx->advance(nb);
        }
        return {};
    }

    // Taps the inputs of `kind` (and of the linears before it) over the whole calibration set.
    Status tapInputs(const model::DecoderLayerWeights& w, int layer, model::LinearKind kind,
                     const model::ActivationTap& tap)
    {
        using model::LinearKind;
        if (kind == LinearKind::Qkv) return pass(w, layer, model::LayerBlock::Attention, kind, tap, true);
        const bool mlp = kind == LinearKind::GateUp || kind == LinearKind::Down;
        const model::LayerBlock block = mlp ? model::LayerBlock::Mlp : model::LayerBlock::Attention;
        if (mlp) QB_TRY_STATUS(finishAttention(w, layer));
        if (kind == LinearKind::GateUp) return pass(w, layer, block, kind, tap, true);
        // o or down: the input of the block's last linear, kept when it fits the limit.
        const std::size_t b = std::size_t(block);
        const Eigen::Index width = mlp ? w.down.cols() : w.o.cols();
        const bool keep = double(hidden.rows()) * double(width) * sizeof(float) <= double(opt.keepInputsBytes);
        if (keep) inputs[b].resize(hidden.rows(), width);
        QB_TRY_STATUS(pass(
            w, layer, block, kind,
            [&](int l, LinearKind k, const Eigen::Ref<const model::RowMatrix>& x) {
                if (keep && k == kind) inputs[b].middleRows(chunkRow, x.rows()) = x;
                tap(l, k, x);
            },
            true));
        kept[b] = keep;
        return {};
    }

    // Completes `block` on hidden with the current (quantized) weights: from its kept last input
    // when there is one (one GEMM), else by running the block again.
    Status finishBlock(const model::DecoderLayerWeights& w, int layer, model::LayerBlock block, bool advance)
    {
        const std::size_t b = std::size_t(block);
        if (!kept[b]) return pass(w, layer, block, std::nullopt, {}, advance);
        const int L = calib.seqlen;
        for (int b0 = 0; b0 < calib.count; b0 += opt.batch) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError(layerDetail(layer, "forward"));
            const int nb = std::min(opt.batch, calib.count - b0);
            const Eigen::Index r0 = Eigen::Index(b0) * L, rows = Eigen::Index(nb) * L;
            QB_TRY_STATUS(model::addBlockOutput(base.config(), w, layer, block, inputs[b].middleRows(r0, rows),
                                                hidden.middleRows(r0, rows), ws));
            if (ctx && advance) ctx->advance(nb);
        }
        kept[b] = false;
        return {};
    }

    Status finishAttention(const model::DecoderLayerWeights& w, int layer)
    {
        if (attentionDone) return {};
        QB_TRY_STATUS(finishBlock(w, layer, model::LayerBlock::Attention, false));
        attentionDone = true;
        return {};
    }

    // The fully quantized layer's output: the next layer's input, in hidden.
    Status finishLayer(const model::DecoderLayerWeights& w, int layer)
    {
        QB_TRY_STATUS(finishAttention(w, layer));
        QB_TRY_STATUS(finishBlock(w, layer, model::LayerBlock::Mlp, true));
        attentionDone = false;
        return {};
    }
};

// One tensor: search (NeUQI's up-front fit, inside the GPTQ kernel before its first column block)
// and solve, told apart by the kernel's first progress report.
// With an importance matrix its entry's mean x² (damped like the Hessian) weights the grid fits.
// factor (optional): GPTQ's factor of h, kept for the next tensor that reads the same h.
Result<quant::QuantizedRows> solveTensor(const TensorPlan& tp, const model::RowMatrix& w, const Eigen::MatrixXd& h,
                                         const quant::CmpqChannelStats* stats, const io::ImportanceMatrix* imatrix,
                                         RunContext* ctx, TensorReport& rep, QuantizeTimings& timings,
                                         std::optional<quant::GptqFactor>* factor = nullptr)
{
    if (tp.method == quant::Method::Cmpq) {
        // CMPQ: channel scores from the same tap as H; k-means over channels on the OpenMP team.
        if (!stats) return makeError(ErrorCode::Internal, "CMPQ without channel statistics", tp.name);
        const auto t0 = Clock::now();
        if (ctx) ctx->beginStage("solve", w.cols(), layerDetail(tp.layer, model::linearName(tp.linear)));
        RunContext child([&](const Progress& p) {
            if (ctx) ctx->setDone(p.done);
        });
        if (ctx) child.setCancelSource([ctx] { return ctx->isCancelled(); });
        const quant::ParallelFor par = openmpParallelFor();
        quant::CmpqOptions cmpqOptions = tp.cmpq;
        cmpqOptions.factorCache = factor; // made (if it does not fit) beside the first codebooks
        Result<quant::QuantizedRows> q =
            quant::quantizeRowsCmpq(w, h, stats->score(tp.cmpq.score), cmpqOptions, &child, &par);
        rep.solveSeconds = secondsSince(t0);
        timings.solve += rep.solveSeconds;
        if (!q.ok()) return q.error().code == ErrorCode::Cancelled ? q.error() : q.error().withContext(tp.name);
        return q;
    }
    const io::ImportanceEntry* imp = imatrix ? imatrix->find(tp.name) : nullptr;
    if (imatrix && !imp) return makeError(ErrorCode::InvalidArgument, "no importance matrix entry", tp.name);
    const Eigen::VectorXd weights = imp ? importanceWeights(*imp) : Eigen::VectorXd(h.diagonal());
    const Eigen::VectorXd hDiag = (weights.array() + quant::hessianDampingLambda(weights, tp.options.damping)).matrix();
    // RTN under an imatrix searches its scales weighted (as llama.cpp does); Min-Max ignores weights.
    const bool weightedRtn = imp && tp.method == quant::Method::Rtn;
    const quant::GridInit init = weightedRtn ? quant::GridInit::Neuqi : tp.options.init;
    const std::string detail = layerDetail(tp.layer, model::linearName(tp.linear));
    const bool gptq = quant::methodTraits(tp.method).needsHessian;
    const bool search = gptq && tp.options.init == quant::GridInit::Neuqi;
    const std::int64_t solveUnits = gptq ? w.cols() : w.rows();
    const auto t0 = Clock::now();
    auto tSolve = t0;
    bool solving = !search;
    const quant::ParallelFor par = openmpParallelFor(); // NeUQI search over rows x groups
    if (tp.inContainer()) {
        // Inside a storage container: the (sub-)block parameters first ("search", over rows),
        // weighted by the damped Hessian diagonal, then RTN or GPTQ with them fixed ("solve").
        const quant::ContainerSpec* spec = quant::findContainerSpec(tp.target);
        if (!spec) return makeError(ErrorCode::Internal, "unknown storage target " + tp.target, tp.name);
        if (ctx) ctx->beginStage("search", w.rows(), detail);
        RunContext fitCtx([&](const Progress& p) { // forwards the fit's and the solve's progress
            if (ctx) ctx->setDone(p.done);
        });
        if (ctx) fitCtx.setCancelSource([ctx] { return ctx->isCancelled(); });
        Result<quant::QuantizedRows> fit =
            quant::fitContainerGrid(*spec, w, &hDiag, init, tp.options.neuqi, &fitCtx, &par);
        tSolve = Clock::now();
        rep.searchSeconds = std::chrono::duration<double>(tSolve - t0).count();
        timings.search += rep.searchSeconds;
        if (!fit.ok()) return fit.error().code == ErrorCode::Cancelled ? fit.error() : fit.error().withContext(tp.name);
        if (ctx) ctx->beginStage("solve", solveUnits, detail);
        solving = true;
        Result<quant::QuantizedRows> q =
            gptq ? quant::quantizeRowsGptq(w, h, quant::containerGptqOptions(*spec, tp.options, *fit), &fitCtx, &par)
                 : quant::quantizeRowsUniform(w, spec->bits, fit->scales, fit->zeros, fit->groupIndex, fit->offsets);
        if (q.ok() && !gptq) {
            q->container = fit->container;
            q->superScales = fit->superScales;
        }
        rep.solveSeconds = secondsSince(tSolve);
        timings.solve += rep.solveSeconds;
        if (!q.ok()) return q.error().code == ErrorCode::Cancelled ? q.error() : q.error().withContext(tp.name);
        return q;
    }
    if (ctx) ctx->beginStage(search ? "search" : "solve", search ? 0 : solveUnits, detail);
    RunContext child([&](const Progress& p) {
        if (!solving) {
            solving = true;
            tSolve = Clock::now();
            if (ctx) ctx->beginStage("solve", solveUnits, detail);
        }
        if (ctx) ctx->setDone(p.done);
    });
    if (ctx) child.setCancelSource([ctx] { return ctx->isCancelled(); });

    quant::GptqOptions gptqOptions = tp.options;
    if (gptq && factor) {
        auto f = quant::sharedGptqFactor(*factor, h, tp.options, nullptr, &par);
        if (!f.ok()) return f.error().withContext(tp.name);
        gptqOptions.factor = *f;
    }
    Result<quant::QuantizedRows> q =
        gptq ? quant::quantizeRowsGptq(w, h, gptqOptions, &child, &par)
        : weightedRtn && !tp.options.grid.sym
            ? quant::quantizeRowsRtn(w, tp.options.grid, init, &hDiag, tp.options.neuqi, &child)
            : quant::quantizeRowsRtn(w, tp.options.grid, tp.options.init, nullptr, tp.options.neuqi, &child);
    if (!solving) tSolve = Clock::now(); // no column block reported (cancel or error)
    rep.searchSeconds = std::chrono::duration<double>(tSolve - t0).count();
    rep.solveSeconds = secondsSince(tSolve);
    timings.search += rep.searchSeconds;
    timings.solve += rep.solveSeconds;
    if (!q.ok()) return q.error().code == ErrorCode::Cancelled ? q.error() : q.error().withContext(tp.name);
    return q;
}

} // namespace

Result<quant::QuantizedRows> quantizeTensor(const TensorPlan& tensor, const model::RowMatrix& weight,
                                            const Eigen::MatrixXd& h, const io::ImportanceMatrix* importance,
                                            RunContext* ctx, TensorReport* report, QuantizeTimings* timings,
                                            std::optional<quant::GptqFactor>* gptqFactor)
{
    TensorReport localReport;
    QuantizeTimings localTimings;
    return solveTensor(tensor, weight, h, nullptr, importance, ctx, report ? *report : localReport,
                       timings ? *timings : localTimings, gptqFactor);
}

Status fakeQuantizeGgml(const std::string& type, model::RowMatrix& m)
{
    const auto t = io::parseGgmlType(type);
    if (!t || !exporting::isGgufExportType(*t))
        return makeError(ErrorCode::InvalidArgument, "not a GGUF type: " + type);
    if (*t == io::GgmlType::F32) return {};
    QB_TRY(e, exporting::encodeMatrixGgml(*t, m.data(), m.rows(), m.cols()));
    const std::size_t rowBytes = io::ggmlRowBytes(*t, m.cols());
    for (Eigen::Index r = 0; r < m.rows(); ++r)
        QB_TRY_STATUS(
            io::dequantizeGgml(int(*t), e->bytes.data() + std::size_t(r) * rowBytes, m.row(r).data(), m.cols()));
    return {};
}

Result<PackedWeightPtr> packGgml(const std::string& type, const model::RowMatrix& m, const PackedWeightPtr& packed)
{
    const auto t = io::parseGgmlType(type);
    if (!t || !exporting::isGgufExportType(*t))
        return makeError(ErrorCode::InvalidArgument, "not a GGUF type: " + type);
    if (*t == io::GgmlType::F32) return PackedWeightPtr{};
    const Eigen::Index rows = packed ? Eigen::Index(packed->rows()) : m.rows();
    const Eigen::Index cols = packed ? Eigen::Index(packed->cols()) : m.cols();
    const std::size_t rowBytes = io::ggmlRowBytes(*t, cols);
    std::vector<std::uint8_t> bytes(std::size_t(rows) * rowBytes);
    // Row blocks, so that a packed source is never expanded whole.
    constexpr Eigen::Index kBlock = 256;
    model::RowMatrix buf;
    for (Eigen::Index r0 = 0; r0 < rows; r0 += kBlock) {
        const Eigen::Index n = std::min(kBlock, rows - r0);
        const float* src = m.data() + r0 * cols;
        if (packed) {
            buf.resize(n, cols);
            packed->decodeRows(r0, n, buf.data());
            src = buf.data();
        }
        QB_TRY(e, exporting::encodeMatrixGgml(*t, src, n, cols));
        std::copy(e->bytes.begin(), e->bytes.end(), bytes.begin() + std::ptrdiff_t(std::size_t(r0) * rowBytes));
    }
    const auto* traits = io::ggmlTypeTraits(int(*t));
    ByteRange view(MappedFile::fromBytes(std::move(bytes), "memory:" + type));
    PackedWeightPtr p = makeRowCodecWeight(std::move(view), rows, cols, rowBytes, traits->decode, traits->name);
    if (!p) return makeError(ErrorCode::Format, "cannot view the " + type + " rows");
    return p;
}

const TensorReport* QuantizeResult::find(const std::string& name) const
{
    for (const TensorReport& t : tensors)
        if (t.name == name || t.name == name + ".weight") return &t;
    return nullptr;
}

namespace {

// The compact output model (QuantizeJobOptions::compactModel), one layer at a time: quantized
// linears as codes when they decode to exactly the solved values, unquantized ones as the base's
// packed weight when the default loader gave them unchanged, the rest F32.
struct CompactLayer {
    std::array<PackedWeightPtr, model::kAllLinears.size()> packed;
    bool on = false;
    CompactLayer(const model::Model& base, int l, const QuantizeJobOptions& o, bool haveOutput)
        : on(haveOutput && o.compactModel)
    {
        if (on && !o.loader)
            if (const auto b = base.layer(l)) packed = b->packed;
    }
    // Linear `lin` now holds the values of grid `q` (`values`, or F32 when q is absent): the
    // model shares the run's stored grid when it decodes to exactly those values.
    void quantized(model::Linear lin, const quant::StoredGridPtr& q, const model::RowMatrix& values)
    {
        PackedWeightPtr& slot = packed[std::size_t(lin)];
        slot.reset();
        if (!on || !q) return;
        model::RowMatrix check(values.rows(), values.cols());
        q->decodeRows(0, check.rows(), check.data());
        if (check == values) slot = q;
    }
    // Moves the packed weights into w, emptying their F32 matrices.
    void install(model::DecoderLayerWeights& w)
    {
        for (model::Linear lin : model::kAllLinears)
            if (auto& p = packed[std::size_t(lin)]) {
                w.weight(lin).resize(0, 0);
                w.packed[std::size_t(lin)] = std::move(p);
            }
    }
};

} // namespace

Result<QuantizeResult> runQuantize(const model::Model& base, const io::Checkpoint* checkpoint, const ResolvedPlan& plan,
                                   const CalibrationSet& calib, const QuantizeJobOptions& options, RunContext* ctx)
{
    const auto tStart = Clock::now();
    const ModelConfig& cfg = base.config();
    const int layers = base.numLayers();
    if (options.batch < 1) return makeError(ErrorCode::InvalidArgument, "quantize: batch must be >= 1");
    if (calib.count < 1 || calib.seqlen < 2 || calib.ids.size() != std::size_t(calib.tokens()))
        return makeError(ErrorCode::InvalidArgument, "quantize: empty or inconsistent calibration set");
    if (plan.tensors.size() != std::size_t(layers) * model::kAllLinears.size())
        return makeError(ErrorCode::InvalidArgument, "quantize: the plan was resolved for a different model",
                         std::to_string(plan.tensors.size()) + " tensors for " + std::to_string(layers) + " layers");
    if (options.importance) QB_TRY_STATUS(checkImportanceMatrix(*options.importance, plan));
    if (options.threads > 0) model::setNumThreads(options.threads);

    // Checkpoints: what this run is (fingerprints), and what the directory already holds.
    const QuantizeCheckpointOptions& cpo = options.checkpoint;
    const bool checkpointing = !cpo.dir.empty();
    if (checkpointing && options.observe)
        return makeError(ErrorCode::InvalidArgument, "quantize: checkpoints do not go with observe mode");
    QuantizeCheckpointManifest manifest;
    std::optional<QuantizeCheckpointManifest> resumeFrom;
    if (checkpointing) {
        manifest.fingerprint.model = fingerprintModel(base, checkpoint);
        manifest.fingerprint.plan = fingerprintPlan(plan);
        manifest.fingerprint.calibration = fingerprintCalibration(calib);
        // Eigen's thread count, which its GEMM blocking (hence the hidden states' last bits) follows.
        manifest.options = {options.batch, Eigen::nbThreads(), options.keepInputsBytes,
                            fingerprintImportance(options.importance.get())};
        manifest.fingerprint.options = fingerprintOptions(manifest.options);
        manifest.layers = layers;
        manifest.hiddenRows = calib.tokens();
        manifest.hiddenCols = cfg.hiddenSize;
        Result<std::optional<QuantizeCheckpointManifest>> stored = readQuantizeCheckpointManifest(cpo.dir);
        if (cpo.resume) {
            if (!stored.ok()) return cannotResume(cpo.dir, stored.error());
            if (*stored) {
                QB_TRY_STATUS(checkQuantizeCheckpoint(cpo.dir, **stored, manifest));
                resumeFrom = **stored;
            }
        } else if (!stored.ok() && !cpo.overwrite) {
            return makeError(stored.error().code,
                             "quantize: cannot keep checkpoints in " + cpo.dir + ": " + stored.error().message +
                                 " (remove it, or choose another directory)",
                             stored.error().context);
        } else if (!stored.ok() || *stored) {
            if (!cpo.overwrite) // a forgotten --resume must not throw the finished layers away
                return makeError(ErrorCode::InvalidArgument,
                                 "quantize: " + cpo.dir + " holds the checkpoint of an interrupted quantize run (" +
                                     std::to_string((*stored)->done) + " of " + std::to_string((*stored)->layers) +
                                     " layers done): resume it (--resume), or remove it to start over",
                                 cpo.dir);
            QB_TRY_STATUS(removeQuantizeCheckpoint(cpo.dir));
        }
    }

    LayerLoader loader = options.loader;
    if (!loader)
        loader = [&](int l) -> Result<std::shared_ptr<model::DecoderLayerWeights>> {
            if (auto p = base.layer(l)) return model::unpackedCopy(*p);
            if (!checkpoint)
                return makeError(ErrorCode::InvalidArgument, "quantize: layer not loaded and no checkpoint given",
                                 "layer " + std::to_string(l));
            return loadDecoderLayer(*checkpoint, l);
        };

    QuantizeResult res;
    res.plan = plan;
    res.bitsPerWeight = plan.bitsPerWeight;
    res.sizeBytes = plan.sizeBytes;
    res.tensors.resize(plan.tensors.size());
    res.codes.resize(plan.tensors.size());
    for (std::size_t i = 0; i < plan.tensors.size(); ++i) {
        const TensorPlan& tp = plan.tensors[i];
        TensorReport& r = res.tensors[i];
        r.name = tp.name;
        r.layer = tp.layer;
        r.linear = tp.linear;
        r.skipped = tp.skip;
        r.method = tp.method;
        r.bits = tp.skip ? kUnquantizedBits : tp.options.grid.bits;
        r.groupSize = tp.options.grid.groupSize;
        r.sym = tp.options.grid.sym;
        r.actOrder = tp.options.actOrder && quant::methodTraits(tp.method).needsHessian;
        r.bitsPerWeight = tp.bitsPerWeight;
        r.target = tp.target;
    }

    std::shared_ptr<model::Model> out;
    Runner run{base, calib, options, ctx, {}, {}, {}};
    try {
        if (options.keepModel) {
            out = std::make_shared<model::Model>(base);
            if (!plan.embedType.empty()) { // storage targets: as the file will store them, packed
                QB_TRY(e, packGgml(plan.embedType, base.embedding(), base.packedEmbedding()));
                if (*e) {
                    out->embedding().resize(0, 0);
                    out->setPackedEmbedding(std::move(*e));
                }
                if (!cfg.tieWordEmbeddings) {
                    QB_TRY(h, packGgml(plan.headType, base.lmHead(), base.packedLmHead()));
                    if (*h) {
                        out->lmHeadOwned().resize(0, 0);
                        out->setPackedLmHead(std::move(*h));
                    }
                }
            }
        }
        auto t0 = Clock::now();
        // Overall progress: layer l of n, in 8 steps (one per linear, hessian and solve, then the
        // output pass); the embedding counts into step 0 of layer 0.
        constexpr std::int64_t kSteps = std::int64_t(model::kAllLinears.size()) + 1;
        int firstLayer = 0;
        if (resumeFrom) {
            // Layers 0..done-1 as they were solved, and the hidden states entering the next one.
            firstLayer = resumeFrom->done;
            if (ctx) ctx->beginStage("resume", firstLayer, "checkpoint " + cpo.dir);
            if (firstLayer < layers) {
                Result<model::RowMatrix> hidden = readQuantizeCheckpointHidden(cpo.dir, *resumeFrom);
                if (!hidden.ok()) return cannotResume(cpo.dir, hidden.error());
                run.hidden = std::move(*hidden);
            }
            for (int l = 0; l < firstLayer; ++l) {
                if (ctx && ctx->isCancelled()) return RunContext::cancelledError(layerDetail(l, "resume"));
                Result<CheckpointLayer> saved = readQuantizeCheckpointLayer(cpo.dir, *resumeFrom, l, plan);
                if (!saved.ok()) return cannotResume(cpo.dir, saved.error());
                const std::size_t planBase = std::size_t(l) * model::kAllLinears.size();
                for (std::size_t i = 0; i < saved->reports.size(); ++i)
                    res.tensors[planBase + i] = std::move(saved->reports[i]);
                std::shared_ptr<model::DecoderLayerWeights> w;
                if (out) {
                    QB_TRY(loaded, loader(l));
                    w = std::move(*loaded);
                    if (!w) return makeError(ErrorCode::Internal, "layer loader returned nothing", layerDetail(l, ""));
                    QB_TRY_STATUS(w->validate(cfg, l));
                }
                CompactLayer compact(base, l, options, out != nullptr); // as the uninterrupted run packs it
                for (CheckpointTensor& t : saved->tensors) {
                    const model::Linear lin = plan.tensors[t.planIndex].linear;
                    const quant::StoredGridPtr grid = t.grid ? quant::storeGrid(*t.grid) : nullptr;
                    t.grid.reset();
                    compact.quantized(lin, grid, t.weight);
                    if (w) w->weight(lin) = std::move(t.weight);
                    if (options.keepCodes) {
                        if (!grid)
                            return makeError(ErrorCode::InvalidArgument,
                                             "quantize: the checkpoint holds no codes for " +
                                                 plan.tensors[t.planIndex].name,
                                             cpo.dir);
                        res.codes[t.planIndex] = grid;
                    }
                }
                if (options.onLayerDone)
                    options.onLayerDone(
                        l, std::vector<TensorReport>(res.tensors.begin() + std::ptrdiff_t(planBase),
                                                     res.tensors.begin() +
                                                         std::ptrdiff_t(planBase + model::kAllLinears.size())));
                if (out) {
                    compact.install(*w);
                    out->setLayer(l, std::make_shared<const model::DecoderLayerWeights>(std::move(*w)));
                }
                if (ctx) ctx->setDone(l + 1);
            }
            res.resumedLayers = firstLayer;
        } else {
            if (ctx) ctx->beginStage("calibrate", calib.count, "embed " + std::to_string(calib.count) + " windows");
            if (ctx) ctx->setPart("layer", 0, layers, kSteps);
            QB_TRY_STATUS(model::embed(base, calib.ids, run.hidden));
            if (ctx) ctx->setDone(calib.count);
        }
        res.seconds.calibrate = secondsSince(t0);

        for (int l = firstLayer; l < layers; ++l) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError(layerDetail(l, "load"));
            const auto tLoad = Clock::now();
            QB_TRY(loaded, loader(l));
            std::shared_ptr<model::DecoderLayerWeights> w = std::move(*loaded);
            if (!w) return makeError(ErrorCode::Internal, "layer loader returned nothing", layerDetail(l, ""));
            QB_TRY_STATUS(w->validate(cfg, l));
            res.seconds.load += secondsSince(tLoad);
            if (ctx) ctx->setPart("layer", l, layers, kSteps);
            CompactLayer compact(base, l, options, out != nullptr);
            const std::size_t planBase = std::size_t(l) * model::kAllLinears.size();

            for (std::size_t gi = 0; gi < kGroups.size(); ++gi) {
                std::vector<std::size_t> active;
                std::string names;
                for (int k = 0; k < kGroupSizes[gi]; ++k) {
                    const model::Linear lin = kGroups[gi][std::size_t(k)];
                    const std::size_t idx = planBase + std::size_t(lin);
                    if (plan.tensors[idx].linear != lin || plan.tensors[idx].layer != l)
                        return makeError(ErrorCode::Internal, "plan order mismatch", plan.tensors[idx].name);
                    if (plan.tensors[idx].skip && !options.observe) continue;
                    active.push_back(idx);
                    if (!names.empty()) names += '+';
                    names += model::linearName(lin);
                }
                if (active.empty()) continue;

                t0 = Clock::now();
                const model::LinearKind kind = model::linearKind(kGroups[gi][0]);
                const int cols = int(w->weight(kGroups[gi][0]).cols());
                quant::HessianAccumulator acc(cols, quant::kGptqHessianFactor);
                std::vector<quant::CmpqScore> cmpqScores; // what this group's CMPQ tensors rank channels by
                for (std::size_t idx : active)
                    if (plan.tensors[idx].method == quant::Method::Cmpq)
                        cmpqScores.push_back(plan.tensors[idx].cmpq.score);
                std::optional<quant::CmpqChannelStats> stats;
                if (!cmpqScores.empty()) stats.emplace(cols, cmpqScores);
                Status tapStatus;
                if (ctx) ctx->setStep(std::int64_t(plan.tensors[active.front()].linear));
                if (ctx) ctx->beginStage("hessian", calib.count, layerDetail(l, names));
                QB_TRY_STATUS(run.tapInputs(
                    *w, l, kind, [&](int, model::LinearKind which, const Eigen::Ref<const model::RowMatrix>& x) {
                        if (which != kind || !tapStatus.ok()) return;
                        // CMPQ's channel sums read each block of rows while the Hessian's GEMMs
                        // left it in cache.
                        tapStatus =
                            stats ? acc.addBatch(x, [&](auto rows) { return stats->add(rows); }) : acc.addBatch(x);
                    }));
                QB_TRY_STATUS(tapStatus);
                res.seconds.hessian += secondsSince(t0);
                const Eigen::MatrixXd& h = acc.hessian();
                // NaN/Inf would flow silently into every scale and, later, the perplexity.
                if (countNonFinite(h.data(), std::size_t(h.size())) != 0)
                    return makeError(ErrorCode::NumericalError,
                                     "the calibration activations entering " + names +
                                         " are not finite (NaN/Inf from the embeddings or an earlier layer)",
                                     layerDetail(l, names));

                std::optional<quant::GptqFactor> factor; // shared by this group's GPTQ tensors
                for (std::size_t idx : active) {
                    if (ctx && ctx->isCancelled()) return RunContext::cancelledError(plan.tensors[idx].name);
                    const TensorPlan& tp = plan.tensors[idx];
                    TensorReport& rep = res.tensors[idx];
                    model::RowMatrix& weight = w->weight(tp.linear);
                    if (const std::size_t bad = countNonFinite(weight.data(), std::size_t(weight.size())); bad != 0) {
                        return makeError(ErrorCode::NumericalError,
                                         std::to_string(bad) + " of " + std::to_string(weight.size()) +
                                             " weights are NaN/Inf: no quantization grid can hold them (repair the "
                                             "checkpoint, or skip this tensor in the plan)",
                                         tp.name);
                    }
                    if (ctx) ctx->setStep(std::int64_t(tp.linear));
                    if (options.observe) {
                        QB_TRY_STATUS(options.observe(tp, weight, h));
                        continue;
                    }
                    QB_TRY(q, solveTensor(tp, weight, h, stats ? &*stats : nullptr, options.importance.get(), ctx, rep,
                                          res.seconds, &factor));
                    const auto tMetrics = Clock::now();
                    const quant::HessianErrors errors = quant::hessianErrors(weight, *q, h);
                    res.seconds.metrics += secondsSince(tMetrics);
                    rep.relativeError = errors.relative();
                    rep.proxyLoss = 0.5 * errors.errorTrace;
                    rep.solverProxyLoss = q->proxyLoss;
                    rep.dampingRetries = q->dampingRetries;
                    if (q->cmpq) { // the bits it really takes, everything counted
                        rep.bitsPerWeight = q->cmpq->bitsPerWeight(weight.rows());
                        rep.bits = q->bits;
                    }
                    // One compact copy of the codes, shared by the result and the output model.
                    quant::StoredGridPtr stored;
                    if (options.keepCodes || checkpointing || (out && options.compactModel))
                        stored = quant::storeGrid(*q);
                    compact.quantized(tp.linear, stored, q->dequantized);
                    weight = std::move(q->dequantized); // later groups see the quantized sublayer
                    if (options.keepCodes || checkpointing)
                        res.codes[idx] = std::move(stored); // dropped after the checkpoint unless keepCodes
                }
            }

            t0 = Clock::now();
            if (ctx) ctx->setStep(kSteps - 1);
            if (ctx) ctx->beginStage("evaluate", calib.count, layerDetail(l, "output"));
            QB_TRY_STATUS(run.finishLayer(*w, l));
            res.seconds.evaluate += secondsSince(t0);
            if (checkpointing) {
                // The layer's grids (unpacked for the file) and final weights (lent and taken back).
                CheckpointLayer saved;
                saved.layer = l;
                saved.reports.assign(res.tensors.begin() + std::ptrdiff_t(planBase),
                                     res.tensors.begin() + std::ptrdiff_t(planBase + model::kAllLinears.size()));
                for (std::size_t i = planBase; i < planBase + model::kAllLinears.size(); ++i)
                    if (res.codes[i]) {
                        saved.tensors.push_back(
                            {i, res.codes[i]->unpack(), std::move(w->weight(plan.tensors[i].linear))});
                        if (!options.keepCodes) res.codes[i].reset();
                    }
                Status st = saveQuantizeCheckpointLayer(cpo.dir, manifest, saved, run.hidden);
                for (CheckpointTensor& t : saved.tensors)
                    w->weight(plan.tensors[t.planIndex].linear) = std::move(t.weight);
                if (!st.ok())
                    return makeError(st.error().code, "quantize: cannot write the checkpoint: " + st.error().message,
                                     st.error().context);
            }
            if (options.onLayerDone)
                options.onLayerDone(l, std::vector<TensorReport>(
                                           res.tensors.begin() + std::ptrdiff_t(planBase),
                                           res.tensors.begin() + std::ptrdiff_t(planBase + model::kAllLinears.size())));
            if (out) {
                compact.install(*w);
                out->setLayer(l, std::make_shared<const model::DecoderLayerWeights>(std::move(*w)));
            }
            w.reset(); // the F32 layer is gone before the next one is loaded
        }
    } catch (const std::bad_alloc&) {
        return makeError(ErrorCode::OutOfMemory, "quantize: not enough memory for the layer, Hessian or activations");
    }
    res.model = std::move(out);
    { // the average as run: CMPQ tensors report what they really take
        double bits = 0, n = 0;
        for (std::size_t i = 0; i < res.tensors.size(); ++i) {
            const double w = double(plan.tensors[i].rows * plan.tensors[i].cols);
            bits += res.tensors[i].bitsPerWeight * w;
            n += w;
        }
        if (n > 0) res.bitsPerWeight = bits / n;
    }
    res.seconds.total = secondsSince(tStart);
    return res;
}

} // namespace qb::pipeline
