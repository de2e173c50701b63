#include "pipeline/workflows.h"

#include "pipeline/activation_setup.h"
#include "pipeline/quantize_checkpoint.h"

#include "quant/cmpq.h"

#include "export/project_bundle.h"
#include "io/tokenizer.h"
#include "model/forward.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <filesystem>
#include <numeric>

namespace qb::pipeline {

namespace {

// Models the workflows evaluate stay in their stored encoding (model_loader.h): never an F32 copy.
const LoadOptions kCompact{.loadLayers = true, .compact = true};

// Evaluation tokens from the tokens per byte of the text's first 64 KiB (not a second encoding of
// the whole text), whole windows only.
std::int64_t estimateEvalTokens(const io::Tokenizer& tok, std::string_view text, int ctx)
{
    constexpr std::size_t kSampleBytes = std::size_t(1) << 16;
    const std::string_view sample = text.substr(0, kSampleBytes);
    const double perByte = sample.empty() ? 0 : double(tok.encode(sample).size()) / double(sample.size());
    const std::int64_t ctxLen = std::max(1, ctx);
    return std::int64_t(perByte * double(text.size())) / ctxLen * ctxLen;
}

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void phases(RunContext* ctx, std::vector<PhaseWeight> list)
{
    if (ctx) ctx->setPhases(std::move(list));
}
void phase(RunContext* ctx, const char* name)
{
    if (ctx) ctx->beginPhase(name);
}

Status checkRequest(const std::shared_ptr<const io::Checkpoint>& ck, const char* workflow)
{
    if (!ck) return makeError(ErrorCode::InvalidArgument, std::string(workflow) + ": no model is open");
    return {};
}

// extras/runs.json of a project: {"grids_run": i, "runs": [{"id", "name", "summary", "plan", "metrics"}]}.
constexpr const char* kRunsExtra = "runs";

io::JsonValue runsExtra(const std::vector<ProjectRun>& runs, int gridsRun)
{
    io::JsonArray list;
    for (std::size_t i = 0; i < runs.size(); ++i) {
        const ProjectRun& r = runs[i];
        io::JsonValue e;
        e.set("id", int(i) + 1);
        e.set("name", !r.name.empty() || !r.result ? r.name : defaultRunName(*r.result));
        e.set("summary", r.summary);
        e.set("plan", r.plan);
        e.set("metrics", r.result ? runMetricsJson(*r.result, r.perplexity, r.seconds, r.kl) : io::JsonValue());
        e.set("calibration", r.calibration);
        list.push_back(std::move(e));
    }
    io::JsonValue extra;
    extra.set("grids_run", gridsRun);
    extra.set("runs", std::move(list));
    return extra;
}

bool layersLoaded(const model::Model& m)
{
    for (int l = 0; l < m.numLayers(); ++l)
        if (!m.layer(l)) return false;
    return true;
}

std::string stringOr(const io::JsonValue* v, const std::string& fallback)
{
    return v && v->isString() ? v->asString() : fallback;
}

} // namespace

io::JsonValue CalibrationSource::toJson() const
{
    io::JsonValue j;
    j.set("text", textPath);
    j.set("nsamples", options.nsamples);
    j.set("seqlen", options.seqlen);
    j.set("seed", double(options.seed));
    return j;
}

Result<CalibrationSource> CalibrationSource::fromJson(const io::JsonValue& j)
{
    const io::JsonValue* text = j.find("text");
    if (!text || !text->isString() || text->asString().empty())
        return makeError(ErrorCode::InvalidArgument, "the calibration settings name no text file");
    CalibrationSource s;
    s.textPath = text->asString();
    auto count = [&](const char* key, double lo, double hi, double fallback) -> Result<double> {
        const io::JsonValue* v = j.find(key);
        if (!v) return fallback;
        if (!v->isNumber() || !(v->asNumber() >= lo && v->asNumber() <= hi) ||
            v->asNumber() != std::floor(v->asNumber()))
            return makeError(ErrorCode::InvalidArgument,
                             std::string("calibration setting \"") + key + "\" is not a whole number in range");
        return v->asNumber();
    };
    QB_TRY(n, count("nsamples", 1, 1e6, s.options.nsamples));
    QB_TRY(len, count("seqlen", 2, 1e7, s.options.seqlen));
    QB_TRY(seed, count("seed", 0, 9007199254740992.0, double(s.options.seed)));
    s.options.nsamples = int(*n);
    s.options.seqlen = int(*len);
    s.options.seed = std::uint64_t(*seed);
    return s;
}

Result<CalibrationSet> loadCalibration(const io::Tokenizer& tokenizer, const CalibrationSource& source, RunContext* ctx)
{
    if (ctx) ctx->beginStage("calibrate", 0, "read " + source.textPath);
    QB_TRY(text, readTextFile(source.textPath));
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError(source.textPath);
    return buildCalibrationSet(tokenizer, *text, source.options, ctx, source.textPath);
}

// ---- evaluate -----------------------------------------------------------------------------------

Result<PreflightEstimate> preflightEvaluateRequest(const EvaluateRequest& req)
{
    QB_TRY_STATUS(checkRequest(req.checkpoint, "evaluate"));
    auto tok = io::loadCheckpointTokenizer(*req.checkpoint);
    if (!tok && req.reference) tok = io::loadCheckpointTokenizer(*req.reference);
    if (!tok) return tok.error();
    QB_TRY(text, readTextFile(req.textPath));
    PreflightEstimate e = preflightEvaluate(req.checkpoint->config, estimateEvalTokens(*tok, *text, req.options.ctx),
                                            req.options.ctx, req.options.batch, req.reference != nullptr,
                                            measureMachineRate(req.options.threads), req.checkpoint->fileBytes);
    if (req.memoryLimitBytes) e.availableBytes = req.memoryLimitBytes;
    return e;
}

Result<EvaluateOutcome> evaluateModel(const EvaluateRequest& req, RunContext* ctx)
{
    QB_TRY_STATUS(checkRequest(req.checkpoint, "evaluate"));
    if (req.reference && req.reference->config.vocabSize != req.checkpoint->config.vocabSize)
        return makeError(ErrorCode::InvalidArgument,
                         "the reference model has another vocabulary (" +
                             std::to_string(req.reference->config.vocabSize) + " tokens, the model " +
                             std::to_string(req.checkpoint->config.vocabSize) + "): KL needs the same tokens",
                         req.reference->path);
    std::vector<PhaseWeight> list;
    if (!req.model) list.push_back({"load", 1});
    if (req.reference) list.push_back({"reference", 1});
    list.push_back({"perplexity", req.reference ? 8.0 : 4.0});
    phases(ctx, std::move(list));
    // A GGUF export has no tokenizer.json beside it; its original (the reference, same vocabulary) does.
    auto tok = io::loadCheckpointTokenizer(*req.checkpoint);
    if (!tok && req.reference) tok = io::loadCheckpointTokenizer(*req.reference);
    if (!tok) return tok.error();
    QB_TRY(text, readTextFile(req.textPath));
    EvaluateOutcome out;
    out.preflight = preflightEvaluate(req.checkpoint->config, estimateEvalTokens(*tok, *text, req.options.ctx),
                                      req.options.ctx, req.options.batch, req.reference != nullptr,
                                      measureMachineRate(req.options.threads), req.checkpoint->fileBytes);
    if (req.memoryLimitBytes) out.preflight.availableBytes = req.memoryLimitBytes;
    if (req.checkMemory && !req.model && !out.preflight.fits())
        return makeError(ErrorCode::OutOfMemory, "evaluate: " + out.preflight.refusal());
    if (req.options.threads > 0) model::setNumThreads(req.options.threads);
    std::shared_ptr<const model::Model> m = req.model;
    if (!m) {
        phase(ctx, "load");
        QB_TRY(loaded, loadModel(*req.checkpoint, ctx, &out.loadWarnings, kCompact));
        m = std::move(*loaded);
    }
    std::shared_ptr<const model::Model> reference;
    if (req.reference) {
        phase(ctx, "reference");
        QB_TRY(loaded, loadModel(*req.reference, ctx, &out.loadWarnings, kCompact));
        reference = std::move(*loaded);
    }
    phase(ctx, "perplexity");
    if (reference) {
        QB_TRY(r, runKlDivergence(*m, *reference, *tok, *text, req.options, ctx));
        out.perplexity = std::move(r->perplexity);
        out.kl = r->kl;
    } else {
        QB_TRY(r, runPerplexity(*m, *tok, *text, req.options, ctx));
        out.perplexity = std::move(*r);
    }
    return out;
}

// ---- calibrate ----------------------------------------------------------------------------------

Result<ActivationReport> calibrateActivations(const CalibrateRequest& req, RunContext* ctx)
{
    QB_TRY_STATUS(checkRequest(req.checkpoint, "calibrate"));
    phases(ctx, {{"calibrate", 1}, {"activations", 9}});
    phase(ctx, "calibrate");
    QB_TRY(tok, io::loadCheckpointTokenizer(*req.checkpoint));
    QB_TRY(calib, loadCalibration(*tok, req.calibration, ctx));
    phase(ctx, "activations");
    return collectActivationStats(*req.checkpoint, *calib, req.options, ctx);
}

// ---- sensitivity atlas --------------------------------------------------------------------------

Result<SensitivityOutcome> sensitivityAnalysis(const SensitivityRequest& req, RunContext* ctx)
{
    const auto t0 = Clock::now();
    QB_TRY_STATUS(checkRequest(req.checkpoint, "sensitivity"));
    const io::Checkpoint& ck = *req.checkpoint;
    if (req.candidates.empty()) return makeError(ErrorCode::InvalidArgument, "sensitivity: no candidates");
    QB_TRY(tok, io::loadCheckpointTokenizer(ck));
    std::optional<std::string> evalText;
    if (req.measureCount > 0) {
        if (!req.evalTextPath)
            return makeError(ErrorCode::InvalidArgument,
                             "sensitivity: measuring the true effect needs an evaluation text");
        QB_TRY(t, readTextFile(*req.evalTextPath));
        evalText = std::move(*t);
    }
    std::vector<PhaseWeight> list{{"calibrate", 1}, {"sensitivity", 20}};
    if (evalText) {
        list.push_back({"load", 1});
        list.push_back({"measure", 4.0 * req.measureCount});
    }
    phases(ctx, std::move(list));
    if (req.options.threads > 0) model::setNumThreads(req.options.threads);
    phase(ctx, "calibrate");
    QB_TRY(calib, loadCalibration(*tok, req.calibration, ctx));

    SensitivityOutcome out;
    const std::string fingerprint = sensitivityFingerprint(ck, *calib, req.candidates);
    if (!req.cacheDir.empty()) out.cachePath = sensitivityCachePath(req.cacheDir, fingerprint);
    bool cached = false;
    if (!out.cachePath.empty() && !req.recompute && std::filesystem::exists(out.cachePath)) {
        auto a = loadSensitivityAtlas(out.cachePath);
        // A damaged cache file is recomputed, not an error.
        if (a && a->fingerprint == fingerprint) {
            out.atlas = std::move(*a);
            out.fromCache = cached = true;
        }
    }
    phase(ctx, "sensitivity");
    if (!cached) {
        QB_TRY(base, loadModel(ck, ctx, nullptr, LoadOptions{.loadLayers = false, .compact = true}));
        QB_TRY(atlas, computeSensitivity(**base, ck, *calib, req.candidates, req.options, ctx));
        out.atlas = std::move(*atlas);
        if (!out.cachePath.empty()) QB_TRY_STATUS(saveSensitivityAtlas(out.atlas, out.cachePath));
    }
    if (evalText) {
        phase(ctx, "load");
        QB_TRY(base, loadModel(ck, ctx, nullptr, kCompact));
        QB_TRY(windows, textWindows(*tok, *evalText, req.evalOptions, ctx));
        std::optional<std::size_t> cand;
        if (!req.measureCandidate.empty()) {
            cand = out.atlas.findCandidate(req.measureCandidate);
            if (!cand)
                return makeError(ErrorCode::InvalidArgument, "sensitivity: \"" + req.measureCandidate +
                                                                 "\" is not a candidate (" +
                                                                 candidateListText(out.atlas.candidates) + ")");
        } else {
            double fewest = 1e300;
            for (std::size_t c = 0; c < out.atlas.candidates.size(); ++c)
                if (!out.atlas.candidates[c].settings.skip.value_or(false) && !out.atlas.cells.empty() &&
                    out.atlas.cells[0][c].bitsPerWeight < fewest) {
                    fewest = out.atlas.cells[0][c].bitsPerWeight;
                    cand = c;
                }
            if (!cand) return makeError(ErrorCode::InvalidArgument, "sensitivity: no quantized candidate to measure");
        }
        // Measurements made on other windows (another text or context) are not these: dropped.
        out.droppedMeasurements = out.atlas.useMeasurementWindows(measurementKey(*windows));
        // Tensors spread evenly over the predicted ranking (so the rank correlation sees the range).
        std::vector<std::size_t> order(out.atlas.tensors.size());
        std::iota(order.begin(), order.end(), std::size_t(0));
        std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
            return out.atlas.cells[a][*cand].proxyLoss > out.atlas.cells[b][*cand].proxyLoss;
        });
        const std::size_t n = std::min<std::size_t>(std::size_t(req.measureCount), order.size());
        phase(ctx, "measure");
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t t = order[n == 1 ? 0 : i * (order.size() - 1) / (n - 1)];
            if (out.atlas.findMeasured(t, *cand)) continue;
            QB_TRY(measured, measureTensorEffect(**base, out.atlas, t, *cand, *calib, *windows, ctx));
            (void)measured;
            if (!out.cachePath.empty()) QB_TRY_STATUS(saveSensitivityAtlas(out.atlas, out.cachePath));
        }
    }
    out.seconds = secondsSince(t0);
    return out;
}

// ---- quantize -----------------------------------------------------------------------------------

io::JsonValue QuantizeOutcome::metricsJson() const
{
    if (!result) return {};
    io::JsonValue m =
        runMetricsJson(*result, perplexity ? std::optional(perplexity->perplexity) : std::nullopt, seconds, kl);
    m.set("seconds", seconds);
    if (io::JsonValue* timings = m.find("timings"); timings && perplexity)
        timings->set("perplexity", perplexity->seconds);
    if (distill) {
        io::JsonValue d;
        d.set("loss", std::string(distill->loss == model::DistillLoss::Kl ? "kl" : "hidden_mse"));
        d.set("loss_before", distill->lossBefore);
        d.set("loss_after", distill->lossAfter);
        d.set("steps", distill->steps);
        d.set("batch", distill->batch);
        d.set("lr", distill->lr);
        d.set("norm_gains", distill->normGains);
        d.set("trained_tensors", distill->trainedTensors);
        io::JsonArray frozen, curve;
        for (const auto& f : distill->frozen)
            frozen.push_back(io::JsonValue(f));
        for (double l : distill->stepLoss)
            curve.push_back(io::JsonValue(l));
        d.set("frozen", std::move(frozen));
        d.set("step_loss", std::move(curve));
        d.set("seconds", distill->seconds);
        m.set("distill", std::move(d));
        if (io::JsonValue* timings = m.find("timings")) timings->set("distill", distill->seconds);
    }
    return m;
}

QuantizeWork estimateQuantizeWork(const ModelConfig& c, const ResolvedPlan& plan, std::int64_t calibTokens, int seqlen,
                                  std::uint64_t calibTextBytes, std::int64_t evalTokens, int evalCtx,
                                  bool loadAllLayers, bool klDivergence)
{
    const double layers = double(std::max<std::int64_t>(1, c.numHiddenLayers));
    double linearMacs = 0; // per token, all layers
    for (const TensorPlan& t : plan.tensors)
        linearMacs += double(t.rows) * double(t.cols);
    const double attention = double(c.numAttentionHeads) * double(c.headDim); // per token, per context position
    const auto forward = [&](double ctx) { return linearMacs + layers * attention * ctx; };
    const double head = double(c.vocabSize) * double(c.hiddenSize);

    QuantizeWork w;
    constexpr double kTokenizeMacsPerByte = 50;  // BPE encoding, measured against a forward pass
    constexpr double kLoadMacsPerWeight = 4;     // reading and converting one weight (memory-bound)
    constexpr double kForwardPasses = 1.3;       // partial passes up to each group's input, kept o/down inputs
    constexpr double kNeuqiSearchPerWeight = 64; // NeUQI's scale candidates per weight
    constexpr double kRtnPerWeight = 16;
    w.calibrate = kTokenizeMacsPerByte * double(calibTextBytes);
    const double embedAndHead = 2 * head;
    w.load = kLoadMacsPerWeight * (loadAllLayers ? linearMacs + embedAndHead : embedAndHead);
    w.quantize = kForwardPasses * double(calibTokens) * forward(seqlen);
    for (const TensorPlan& t : plan.tensors) {
        if (t.skip) continue;
        const double rows = double(t.rows), cols = double(t.cols);
        const bool needsHessian = quant::methodTraits(t.method).needsHessian;
        if (t.linear == model::Linear::Q || t.linear == model::Linear::O || t.linear == model::Linear::Gate ||
            t.linear == model::Linear::Down) {
            w.quantize += double(calibTokens) * cols * cols; // the group's Hessian X^T X
            // GPTQ's factor of it, shared by the group (n^3 / 3 MACs, at about 2/3 of GEMM speed)
            if (needsHessian) w.quantize += 0.5 * cols * cols * cols;
        }
        // The lazy block updates (rows x cols^2 / 2) and the reference trace of the error metric.
        if (needsHessian) w.quantize += rows * cols * cols;
        else w.quantize += kRtnPerWeight * rows * cols;
        if (t.options.init == quant::GridInit::Neuqi) w.quantize += kNeuqiSearchPerWeight * rows * cols;
    }
    w.perplexity = double(evalTokens) * (forward(double(evalCtx)) + head);
    if (klDivergence) {
        constexpr double kKlMacsPerLogit = 8; // two log-softmaxes and the KL sum, in double
        w.perplexity = 2 * w.perplexity + double(evalTokens) * kKlMacsPerLogit * double(c.vocabSize);
        w.reference = kLoadMacsPerWeight * linearMacs; // the base's decoder layers, when not loaded
    }
    return w;
}

namespace {

PreflightEstimate preflightFor(const QuantizeRequest& req, const ResolvedPlan& plan, std::int64_t evalTokens)
{
    QuantizePreflightInput in;
    in.nsamples = req.calibration.options.nsamples;
    in.seqlen = req.calibration.options.seqlen;
    in.batch = req.options.batch;
    std::error_code ec;
    const auto calibBytes = std::filesystem::file_size(req.calibration.textPath, ec);
    in.calibTextBytes = ec ? 0 : std::uint64_t(calibBytes);
    in.evalTokens = evalTokens;
    in.evalCtx = req.evalOptions.ctx;
    in.evalBatch = req.evalOptions.batch;
    in.klDivergence = evalTokens > 0 && req.klDivergence;
    in.keepBaseLayers = req.keepBaseLayers || (req.base && layersLoaded(*req.base));
    in.keepCodes = req.options.keepCodes;
    in.storedBytes = req.checkpoint->fileBytes;
    if (req.distill) {
        in.distill = true;
        in.distillSteps = req.distill->steps;
        in.distillBatch = req.distill->batch;
    }
    return preflightQuantize(req.checkpoint->config, plan, in, measureMachineRate(req.options.threads));
}

} // namespace

Result<PreflightEstimate> preflightQuantizeRequest(const QuantizeRequest& req)
{
    QB_TRY_STATUS(checkRequest(req.checkpoint, "quantize"));
    QB_TRY(plan, resolveQuantPlan(req.plan, req.checkpoint->config));
    std::int64_t evalTokens = 0;
    if (req.evalTextPath) {
        QB_TRY(tok, io::loadCheckpointTokenizer(*req.checkpoint));
        QB_TRY(text, readTextFile(*req.evalTextPath));
        evalTokens = estimateEvalTokens(*tok, *text, req.evalOptions.ctx);
    }
    PreflightEstimate e = preflightFor(req, *plan, evalTokens);
    if (req.memoryLimitBytes) e.availableBytes = req.memoryLimitBytes;
    return e;
}

Result<QuantizeOutcome> quantizeModel(const QuantizeRequest& req, RunContext* ctx)
{
    const auto t0 = Clock::now();
    QB_TRY_STATUS(checkRequest(req.checkpoint, "quantize"));
    const io::Checkpoint& ck = *req.checkpoint;
    // Cheap checks first: a bad plan, a missing tokenizer or text fail before any long work.
    QB_TRY(plan, resolveQuantPlan(req.plan, ck.config));
    QB_TRY(tok, io::loadCheckpointTokenizer(ck));
    std::optional<std::string> evalText;
    std::int64_t evalTokens = 0;
    if (req.evalTextPath) {
        QB_TRY(t, readTextFile(*req.evalTextPath));
        evalText = std::move(*t);
        evalTokens = estimateEvalTokens(*tok, *evalText, req.evalOptions.ctx);
    }
    // Transforms (smoothing, rotation) rewrite every layer: the base is loaded whole.
    const bool transforms = plan->activation.transforms();
    const bool needLayers = req.keepBaseLayers || transforms;
    const bool load = !req.base || (needLayers && !layersLoaded(*req.base));
    const bool kl = evalText && req.klDivergence;
    PreflightEstimate preflight = preflightFor(req, *plan, evalTokens);
    if (req.memoryLimitBytes) preflight.availableBytes = req.memoryLimitBytes;
    if (req.checkMemory && !preflight.fits())
        return makeError(ErrorCode::OutOfMemory, "quantize: " + preflight.refusal());
    // The base has its layers after the load phase when it is loaded with them or came with them.
    const bool loadReference = (kl || req.distill) && !needLayers && !(req.base && layersLoaded(*req.base));
    std::error_code ec;
    const auto calibBytes = std::filesystem::file_size(req.calibration.textPath, ec);
    const QuantizeWork work = estimateQuantizeWork(
        ck.config, *plan, std::int64_t(req.calibration.options.nsamples) * req.calibration.options.seqlen,
        req.calibration.options.seqlen, ec ? 0 : std::uint64_t(calibBytes), evalTokens, req.evalOptions.ctx,
        req.keepBaseLayers, kl);
    std::vector<PhaseWeight> list{{"calibrate", work.calibrate}};
    if (load) list.push_back({"load", work.load});
    list.push_back({"quantize", work.quantize});
    if (loadReference) list.push_back({"reference", work.reference});
    if (req.distill)
        list.push_back(
            {"distill", estimateDistillWork(ck.config, req.calibration.options.nsamples, req.calibration.options.seqlen,
                                            req.distill->steps, req.distill->batch)});
    if (evalText) list.push_back({"perplexity", work.perplexity});
    phases(ctx, std::move(list));
    if (req.options.threads > 0) model::setNumThreads(req.options.threads);

    QuantizeOutcome out;
    out.preflight = std::move(preflight);
    phase(ctx, "calibrate");
    QB_TRY(calib, loadCalibration(*tok, req.calibration, ctx));
    out.calibration = std::make_shared<const CalibrationSet>(std::move(*calib));
    out.base = req.base;
    std::shared_ptr<model::Model> loaded; // the base when this workflow loaded it
    if (load) {
        phase(ctx, "load");
        LoadOptions lo;
        lo.loadLayers = needLayers;
        lo.compact = true;
        QB_TRY(m, loadModel(ck, ctx, &out.loadWarnings, lo));
        loaded = std::move(*m);
        out.base = loaded;
    }
    phase(ctx, "quantize");
    // Weight-and-activation plans: the weights are solved in the transformed basis, then the
    // activation quantizers go into the result (activation_setup.h).
    if (req.distill)
        if (Status s = checkDistillablePlan(*plan); !s.ok())
            return makeError(s.error().code, "quantize: " + s.error().message);
    ActivationSetupNotes actNotes;
    const int batch = std::max(1, req.options.batch);
    SignalWeights signalWeights; // RUQuant calibrates through the plan's (first) weight quantizer
    for (const TensorPlan& t : plan->tensors)
        if (!t.skip && t.method != quant::Method::Cmpq) {
            signalWeights = {t.options.grid.bits, t.options.grid.clip};
            break;
        }
    QB_TRY(prepared,
           prepareActivationModel(out.base, plan->activation, *out.calibration, batch, ctx, &actNotes, signalWeights));
    QuantizeJobOptions qo = req.options;
    if (req.distill) qo.keepModel = qo.keepCodes = true; // the student
    qo.compactModel = true;                              // codes, not an F32 copy (model/model.h)
    QB_TRY(res, runQuantize(**prepared, &ck, *plan, *out.calibration, qo, ctx));
    prepared->reset();
    std::shared_ptr<const model::Model> reference = out.base;
    if (loadReference) {
        // Layers into the base this workflow loaded (no second embedding), else into a copy of
        // the caller's layer-less base; quantization is over, nothing reads it meanwhile.
        phase(ctx, "reference");
        // Held as stored (mapped BF16/F16, GGUF blocks), as the pre-flight counts it: in F32 a
        // 7B-class original alone would take 26 GB. Distillation's teacher is F32 (backward pass).
        auto full = loaded ? loaded : std::make_shared<model::Model>(*out.base);
        QB_TRY_STATUS(loadDecoderLayers(ck, *full, ctx, &out.loadWarnings, /*compact=*/!req.distill));
        reference = std::move(full);
    }
    if (req.distill) {
        phase(ctx, "distill");
        QB_TRY(d, runDistill(*reference, *res, *out.calibration, *req.distill, ctx));
        applyDistill(*res, *d);
        DistillSummary sum;
        sum.lossBefore = d->lossBefore;
        sum.lossAfter = d->lossAfter;
        sum.stepLoss = d->stepLoss;
        sum.steps = d->steps;
        sum.batch = std::min(req.distill->batch, out.calibration->count);
        sum.trainedTensors = d->trainedTensors;
        sum.lr = req.distill->lr;
        sum.loss = req.distill->loss;
        sum.normGains = d->normGains;
        sum.frozen = d->frozen;
        sum.seconds = d->seconds;
        out.distill = std::move(sum);
        if (!req.options.keepCodes)
            for (auto& c : res->codes)
                c.reset();
        if (!req.options.keepModel && !evalText) res->model.reset();
    }
    if (res->model)
        QB_TRY_STATUS(installActivationQuantizers(*res->model, plan->activation, out.calibration.get(), batch, ctx));
    res->notes = std::move(actNotes.lines);
    res->onlineTransforms = std::move(actNotes.online);
    out.result = std::make_shared<const QuantizeResult>(std::move(*res));
    if (evalText) {
        if (!out.result->model) return makeError(ErrorCode::InvalidArgument, "quantize: perplexity needs keepModel");
        phase(ctx, "perplexity");
        if (kl) {
            QB_TRY(r, runKlDivergence(*out.result->model, *reference, *tok, *evalText, req.evalOptions, ctx));
            out.perplexity = r->perplexity;
            out.kl = r->kl;
        } else {
            QB_TRY(ppl, runPerplexity(*out.result->model, *tok, *evalText, req.evalOptions, ctx));
            out.perplexity = std::move(*ppl);
        }
    }
    if (!req.keepBaseLayers && out.base && out.base != req.base) out.base.reset(); // layer-less: of no use
    // The whole workflow succeeded: its checkpoint is of no further use (a run killed during the
    // evaluation above resumes with every layer taken from it).
    if (!req.options.checkpoint.dir.empty() && !req.keepCheckpoint)
        QB_TRY_STATUS(removeQuantizeCheckpoint(req.options.checkpoint.dir));
    out.seconds = secondsSince(t0);
    return out;
}

// ---- distill a finished run ----------------------------------------------------------------------

namespace {

DistillPreflightInput distillPreflightInput(const DistillRunRequest& req, bool haveLayers, std::int64_t evalTokens)
{
    DistillPreflightInput in;
    in.nsamples = req.calibration ? req.calibration->count : 0;
    in.seqlen = req.calibration ? req.calibration->seqlen : 0;
    in.steps = req.options.steps;
    in.batch = req.options.batch;
    in.evalTokens = evalTokens;
    in.evalCtx = req.evalOptions.ctx;
    in.evalBatch = req.evalOptions.batch;
    in.klDivergence = evalTokens > 0 && req.klDivergence;
    in.evaluateBefore = evalTokens > 0 && req.evaluateBefore;
    in.loadTeacher = !haveLayers;
    return in;
}

} // namespace

Result<PreflightEstimate> preflightDistillRequest(const DistillRunRequest& req)
{
    if (!req.run) return makeError(ErrorCode::InvalidArgument, "distill: no run to distill");
    QB_TRY_STATUS(checkDistillable(*req.run));
    if (!req.calibration || req.calibration->count < 1)
        return makeError(ErrorCode::InvalidArgument, "distill: the run has no calibration windows");
    std::int64_t evalTokens = 0;
    if (req.evalTextPath) {
        QB_TRY_STATUS(checkRequest(req.checkpoint, "distill"));
        QB_TRY(tok, io::loadCheckpointTokenizer(*req.checkpoint));
        QB_TRY(text, readTextFile(*req.evalTextPath));
        evalTokens = estimateEvalTokens(*tok, *text, req.evalOptions.ctx);
    }
    PreflightEstimate e = preflightDistill(req.run->model->config(), req.run->plan,
                                           distillPreflightInput(req, req.base && layersLoaded(*req.base), evalTokens),
                                           measureMachineRate(req.options.threads));
    if (req.memoryLimitBytes) e.availableBytes = req.memoryLimitBytes;
    return e;
}

Result<DistillRunOutcome> distillRun(const DistillRunRequest& req, RunContext* ctx)
{
    const auto t0 = Clock::now();
    if (!req.run) return makeError(ErrorCode::InvalidArgument, "distill: no run to distill");
    const QuantizeResult& run = *req.run;
    QB_TRY_STATUS(checkDistillable(run));
    if (!req.calibration || req.calibration->count < 1)
        return makeError(ErrorCode::InvalidArgument,
                         "distill: the run has no calibration windows (a run restored from a project keeps only its "
                         "grids; quantize again to distill)");
    const bool haveLayers = req.base && layersLoaded(*req.base);
    if (!haveLayers) QB_TRY_STATUS(checkRequest(req.checkpoint, "distill"));
    const ModelConfig& cfg = run.model->config();
    const model::Model* shape = req.base ? req.base.get() : nullptr;
    if (shape && (shape->numLayers() != run.model->numLayers() || shape->config().hiddenSize != cfg.hiddenSize))
        return makeError(ErrorCode::Shape, "distill: the original model does not match the run's");
    if (!shape && req.checkpoint &&
        (req.checkpoint->config.numHiddenLayers != cfg.numHiddenLayers ||
         req.checkpoint->config.hiddenSize != cfg.hiddenSize))
        return makeError(ErrorCode::Shape, "distill: the open model is not the one the run quantized");
    std::shared_ptr<const io::Tokenizer> tok;
    std::optional<std::string> evalText;
    std::int64_t evalTokens = 0;
    if (req.evalTextPath) {
        QB_TRY_STATUS(checkRequest(req.checkpoint, "distill"));
        QB_TRY(t, io::loadCheckpointTokenizer(*req.checkpoint));
        tok = std::make_shared<const io::Tokenizer>(std::move(*t));
        QB_TRY(text, readTextFile(*req.evalTextPath));
        evalText = std::move(*text);
        evalTokens = estimateEvalTokens(*tok, *evalText, req.evalOptions.ctx);
    }
    const bool kl = evalText && req.klDivergence;
    const CalibrationSet& calib = *req.calibration;
    PreflightEstimate preflight = preflightDistill(cfg, run.plan, distillPreflightInput(req, haveLayers, evalTokens),
                                                   measureMachineRate(req.options.threads));
    if (req.memoryLimitBytes) preflight.availableBytes = req.memoryLimitBytes;
    if (req.checkMemory && !preflight.fits())
        return makeError(ErrorCode::OutOfMemory, "distill: " + preflight.refusal());
    const QuantizeWork work =
        estimateQuantizeWork(cfg, run.plan, 0, calib.seqlen, 0, evalTokens, req.evalOptions.ctx, false, kl);
    std::vector<PhaseWeight> list;
    if (!haveLayers) list.push_back({"reference", work.load + work.reference});
    list.push_back(
        {"distill", estimateDistillWork(cfg, calib.count, calib.seqlen, req.options.steps, req.options.batch)});
    if (evalText && req.evaluateBefore) list.push_back({"before", work.perplexity});
    if (evalText) list.push_back({"perplexity", work.perplexity});
    phases(ctx, std::move(list));

    std::shared_ptr<const model::Model> teacher = req.base;
    if (!haveLayers) {
        phase(ctx, "reference");
        if (req.base) { // a layer-less base: its layers into a copy (the caller's stays as it is)
            auto full = std::make_shared<model::Model>(*req.base);
            QB_TRY_STATUS(loadDecoderLayers(*req.checkpoint, *full, ctx, nullptr));
            teacher = std::move(full);
        } else {
            QB_TRY(m, loadModel(*req.checkpoint, ctx));
            teacher = std::move(*m);
        }
    }

    DistillRunOutcome out;
    phase(ctx, "distill");
    QB_TRY(d, runDistill(*teacher, run, calib, req.options, ctx, req.state));
    auto result = std::make_shared<QuantizeResult>(run);
    result->model = d->model;
    result->codes = std::move(d->codes);
    DistillSummary& sum = out.distill;
    sum.lossBefore = d->lossBefore;
    sum.lossAfter = d->lossAfter;
    sum.stepLoss = d->stepLoss;
    sum.steps = d->steps;
    sum.batch = std::min(req.options.batch, calib.count);
    sum.trainedTensors = d->trainedTensors;
    sum.lr = req.options.lr;
    sum.loss = req.options.loss;
    sum.normGains = d->normGains;
    sum.frozen = d->frozen;
    sum.seconds = d->seconds;
    out.result = std::move(result);

    if (evalText) {
        auto score = [&](const model::Model& m, std::optional<eval::PerplexityResult>& ppl,
                         std::optional<eval::KlStats>& stats) -> Status {
            if (kl) {
                QB_TRY(r, runKlDivergence(m, *teacher, *tok, *evalText, req.evalOptions, ctx));
                ppl = r->perplexity;
                stats = r->kl;
            } else {
                QB_TRY(r, runPerplexity(m, *tok, *evalText, req.evalOptions, ctx));
                ppl = std::move(*r);
            }
            return {};
        };
        if (req.evaluateBefore) {
            phase(ctx, "before");
            QB_TRY_STATUS(score(*run.model, out.perplexityBefore, out.klBefore));
        }
        phase(ctx, "perplexity");
        QB_TRY_STATUS(score(*out.result->model, out.perplexity, out.kl));
    }
    out.seconds = secondsSince(t0);
    return out;
}

// ---- sensitivity --------------------------------------------------------------------------------

Result<TensorAnalysis> analyzeTensor(const TensorAnalysisRequest& req, RunContext* ctx)
{
    if (!req.base || !req.run || !req.run->model || !req.calibration)
        return makeError(ErrorCode::InvalidArgument,
                         "tensor analysis needs the base model, a run with its quantized model and its calibration");
    const QuantizeResult& run = *req.run;
    std::optional<std::size_t> index;
    for (std::size_t i = 0; i < run.tensors.size(); ++i)
        if (run.tensors[i].name == req.tensor || run.tensors[i].name == req.tensor + ".weight") index = i;
    if (!index) return makeError(ErrorCode::InvalidArgument, "not a quantized tensor of this run", req.tensor);
    const TensorReport& rep = run.tensors[*index];
    const auto baseLayer = model::unpackedLayer(req.base->layer(rep.layer));
    const auto quantLayer = model::unpackedLayer(run.model->layer(rep.layer));
    if (!baseLayer || !quantLayer)
        return makeError(ErrorCode::InvalidArgument, "the base model's decoder layers are not loaded", rep.name);

    TensorAnalysis a;
    a.index = *index;
    a.hessians = req.cached && req.cached->layer == rep.layer ? req.cached : nullptr;
    if (!a.hessians) {
        QB_TRY(h, layerInputHessians(*req.base, run.model.get(), *req.calibration, rep.layer, 8, ctx));
        a.hessians = std::make_shared<const LayerHessians>(std::move(*h));
    }
    const auto& w = baseLayer->weight(rep.linear);
    const auto& q = quantLayer->weight(rep.linear);
    a.errors = channelErrors(w, q, a.hessians->forLinear(rep.linear));
    const double lo = w.minCoeff(), hi = w.maxCoeff();
    a.before = eval::computeHistogram(w, req.histogramBins, lo, hi);
    a.after = eval::computeHistogram(q, req.histogramBins, lo, hi);
    if (*index < run.codes.size()) {
        const quant::QuantizedRows* codes = run.codes[*index] ? &run.codes[*index]->params() : nullptr;
        if (codes && codes->cmpq) {
            const quant::CmpqCodes& c = *codes->cmpq;
            TensorAnalysis::CmpqView v;
            for (std::uint8_t b : c.channelBits)
                v.channelBits.push_back(b == 0 ? quant::kCmpqKeptBits : int(b));
            v.channelScore = c.channelScore;
            v.outliers = c.outlierIndex;
            const int cols = int(c.channelBits.size());
            v.channel = req.channel;
            if (v.channel < 0 || v.channel >= cols)
                v.channel =
                    int(std::max_element(c.channelScore.begin(), c.channelScore.end()) - c.channelScore.begin());
            const int j = v.channel;
            const Eigen::VectorXf wc = w.col(j), qc = q.col(j);
            const double clo = wc.minCoeff(), chi = wc.maxCoeff();
            a.before = eval::computeHistogram(wc.transpose(), req.histogramBins, clo, chi);
            a.after = eval::computeHistogram(qc.transpose(), req.histogramBins, clo, chi);
            for (std::int64_t k = c.codebookOffset[std::size_t(j)]; k < c.codebookOffset[std::size_t(j) + 1]; ++k)
                a.gridLevels.push_back(c.codebook[std::size_t(k)]);
            a.cmpq = std::move(v);
        } else if (codes && codes->scales.size() > 0) {
            const double s = codes->scales(0, 0), z = codes->zeros(0, 0);
            for (int k = 0; k < quant::gridLevels(codes->bits); ++k)
                a.gridLevels.push_back(s * (z + k));
        }
    }
    return a;
}

// ---- export and projects ------------------------------------------------------------------------

Result<ModelExportOutcome> exportRun(const ExportRequest& req, RunContext* ctx)
{
    QB_TRY_STATUS(checkRequest(req.checkpoint, "export"));
    if (!req.run.result) return makeError(ErrorCode::InvalidArgument, "export: no run to export");
    if (req.target.format == ExportFormat::Qbproj) {
        SaveProjectRequest s;
        s.path = req.target.out;
        s.checkpoint = req.checkpoint;
        if (!req.run.plan.isNull()) {
            QB_TRY(p, quantPlanFromJson(req.run.plan, "run plan"));
            s.plan = std::move(*p);
        }
        s.runs = {req.run};
        s.gridsRun = 0;
        s.verify = req.target.verify;
        QB_TRY(saved, saveProject(s, ctx));
        ModelExportOutcome o;
        o.format = ExportFormat::Qbproj;
        o.path = saved->path;
        o.bytes = saved->bytes;
        o.projectTensors = saved->tensors;
        o.verified = saved->verified;
        o.verifySummary = saved->verifySummary;
        return o;
    }
    if (ctx) ctx->beginStage("grids", 0, "rebuilding the quantized weights");
    const RunGrids grids = gridsFromResult(*req.run.result);
    if (grids.empty())
        return makeError(ErrorCode::InvalidArgument, "this run has no stored quantization grids to export");
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError(req.target.out);
    ModelExportRequest target = req.target;
    ResolvedPlan plan = req.run.result->plan;
    if (plan.tensors.empty() && !req.run.plan.isNull()) // a run reopened from a project: resolve again
        if (auto p = quantPlanFromJson(req.run.plan, "run plan"))
            if (auto r = resolveQuantPlan(*p, req.checkpoint->config)) plan = std::move(*r);
    if (target.embedType.empty()) target.embedType = plan.embedType;
    if (target.headType.empty()) target.headType = plan.headType;
    // A smoothed or rotated run: the grids are in the transformed basis, and so must be the
    // embedding, norms, biases and head written beside them - taken from the run's model. What
    // stays online (a rotation of the o/down inputs, smoothing under GQA) has no place in a
    // weights file: refused, naming it. Activation quantizers are not stored (noted).
    if (const QuantizeResult& run = *req.run.result; plan.activation.transforms()) {
        if (!run.onlineTransforms.empty())
            return makeError(ErrorCode::Unsupported,
                             "this run keeps transforms online (" + run.onlineTransforms +
                                 "), which a weights file cannot hold; export a run whose transforms are all "
                                 "folded (rotate \"residual\"; smoothing without GQA), or save a .qbproj",
                             req.target.out);
        if (!run.model)
            return makeError(ErrorCode::InvalidArgument,
                             "this transformed run kept no model to write its embedding, norms and head from",
                             req.target.out);
        QB_TRY(transformed, checkpointOverModel(*req.checkpoint, *run.model));
        QB_TRY(out, exportModel(*transformed, grids.lookup(), target, ctx));
        if (plan.activation.quantizesActivations())
            out->warnings.push_back("activation quantization (" + plan.activation.describe() +
                                    ") is a runtime setting: the file holds the weights only");
        return out;
    }
    return exportModel(*req.checkpoint, grids.lookup(), target, ctx);
}

Result<InspectableRun> rebuildRunForInspection(const io::Checkpoint& checkpoint, const QuantizeResult& result,
                                               const io::JsonValue& planJson, const io::JsonValue& calibration,
                                               std::shared_ptr<const model::Model> base, RunContext* ctx)
{
    InspectableRun out;
    if (!planJson.isNull()) {
        QB_TRY(plan, quantPlanFromJson(planJson, "run plan"));
        if (plan->activation.transforms())
            return makeError(ErrorCode::Unsupported,
                             "this run smooths or rotates the model, and a project does not store those transforms: "
                             "its per-channel views cannot be rebuilt (quantize it again to inspect it)");
    }
    const RunGrids grids = gridsFromResult(result);
    if (grids.empty()) return makeError(ErrorCode::InvalidArgument, "this run has no stored quantization grids");
    QB_TRY(source, CalibrationSource::fromJson(calibration));
    QB_TRY(tok, io::loadCheckpointTokenizer(checkpoint));
    QB_TRY(calib, loadCalibration(*tok, *source, ctx));
    if (!base) {
        QB_TRY(m, loadModel(checkpoint, ctx, nullptr, kCompact));
        base = std::move(*m);
    }
    auto q = std::make_shared<model::Model>(*base);
    std::map<int, std::shared_ptr<model::DecoderLayerWeights>> layers;
    for (const TensorReport& rep : result.tensors) {
        const auto g = grids.grids.find(rep.name);
        if (g == grids.grids.end()) continue; // kept unquantized
        if (rep.layer < 0 || rep.layer >= q->numLayers() || !q->layer(rep.layer))
            return makeError(ErrorCode::InvalidArgument, "the model has no layer for this tensor", rep.name);
        auto& lw = layers[rep.layer];
        if (!lw) lw = std::make_shared<model::DecoderLayerWeights>(*q->layer(rep.layer));
        const quant::StoredGridPtr& rows = g->second;
        if (rows->rows() != lw->outFeatures(rep.linear) || rows->cols() != lw->inFeatures(rep.linear))
            return makeError(ErrorCode::InvalidArgument, "the stored grid's shape does not match the model's tensor",
                             rep.name);
        // Held as codes, as the quantize workflow holds a live run (QuantizeJobOptions::compactModel),
        // and shared with the run's grids.
        lw->weight(rep.linear).resize(0, 0);
        lw->packed[std::size_t(rep.linear)] = rows;
    }
    for (auto& [l, lw] : layers)
        q->setLayer(l, lw);
    auto r = std::make_shared<QuantizeResult>(result);
    r->model = std::move(q);
    out.base = std::move(base);
    out.result = std::move(r);
    out.calibration = std::make_shared<const CalibrationSet>(std::move(*calib));
    return out;
}

ProjectContents projectContents(const std::vector<ProjectRun>& runs)
{
    ProjectContents c;
    c.runs = runs.size();
    for (const auto& r : runs) {
        if (!r.result) continue;
        const std::uint64_t bytes = projectGridBytes(*r.result);
        const bool any = std::any_of(r.result->codes.begin(), r.result->codes.end(),
                                     [](const auto& code) { return code != nullptr; });
        c.gridRuns += any ? 1 : 0;
        c.gridBytes += bytes;
    }
    return c;
}

Result<SavedProject> saveProject(const SaveProjectRequest& req, RunContext* ctx)
{
    QB_TRY_STATUS(checkRequest(req.checkpoint, "save project"));
    if (req.gridsRun >= int(req.runs.size()))
        return makeError(ErrorCode::InvalidArgument, "save project: the grids run is not one of the runs");
    phases(ctx, {{"bundle", 2}, {"write", 2}, {"verify", 1}});
    phase(ctx, "bundle");
    if (ctx) ctx->beginStage("project", 0, "collecting " + req.path);
    const ProjectRun* gridsRun = req.gridsRun >= 0 ? &req.runs[std::size_t(req.gridsRun)] : nullptr;
    if (gridsRun && !gridsRun->result)
        return makeError(ErrorCode::InvalidArgument, "save project: the grids run has no result");
    const QuantizeResult none;
    const QuantPlan plan = req.plan.value_or(QuantPlan{});
    io::JsonValue calibration = req.calibration;
    if (calibration.isNull() && gridsRun) calibration = gridsRun->calibration;
    if (calibration.isNull()) calibration = io::JsonValue(io::JsonObject{});
    exporting::ProjectBundle b =
        bundleFromRun(*req.checkpoint, gridsRun ? *gridsRun->result : none, plan, std::move(calibration),
                      gridsRun ? gridsRun->perplexity : std::nullopt, gridsRun ? gridsRun->seconds : 0.0,
                      gridsRun ? gridsRun->kl : std::nullopt);
    if (!req.plan) b.plan = io::JsonValue();
    if (!gridsRun) b.metrics = io::JsonValue();
    b.extras.emplace_back(kRunsExtra, runsExtra(req.runs, req.gridsRun));
    // The other runs' grids, each in runs/<index>.safetensors.
    for (std::size_t i = 0; i < req.runs.size(); ++i) {
        if (int(i) == req.gridsRun || !req.runs[i].result) continue;
        exporting::BundleRunGrids rg;
        rg.run = int(i);
        rg.tensors = bundleTensorsFromResult(*req.runs[i].result);
        if (!rg.tensors.empty()) b.runGrids.push_back(std::move(rg));
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError(req.path);
    }
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError(req.path);

    phase(ctx, "write");
    QB_TRY_STATUS(exporting::writeProjectBundle(req.path, b, {}, ctx));
    SavedProject out;
    out.path = req.path;
    out.tensors = b.tensors.size();
    out.gridRuns = b.tensors.empty() ? 0 : 1;
    for (const auto& rg : b.runGrids) {
        out.tensors += rg.tensors.size();
        ++out.gridRuns;
    }
    std::error_code ec;
    out.bytes = std::uint64_t(std::filesystem::file_size(req.path, ec));
    if (!req.verify) return out;

    // Re-read: the project must open again with the same grids.
    phase(ctx, "verify");
    if (ctx) ctx->beginStage("verify", 0, req.path);
    QB_TRY(back, exporting::readProjectBundle(req.path));
    out.verified = exporting::sameGrids(back->tensors, b.tensors) && back->runGrids.size() == b.runGrids.size();
    for (std::size_t i = 0; out.verified && i < b.runGrids.size(); ++i)
        out.verified = back->runGrids[i].run == b.runGrids[i].run &&
                       exporting::sameGrids(back->runGrids[i].tensors, b.runGrids[i].tensors);
    out.verifySummary = out.verified ? "project re-read: " + std::to_string(out.tensors) + " grids of " +
                                           std::to_string(out.gridRuns) + " run(s) identical\n"
                                     : "project re-read: grids differ\n";
    return out;
}

Result<OpenedProject> openProject(const OpenProjectRequest& req, RunContext* ctx)
{
    phases(ctx, {{"read", 1}, {"open", 1}, {"grids", 2}});
    phase(ctx, "read");
    if (ctx) ctx->beginStage("project", 0, req.path);
    QB_TRY(bundle, exporting::readProjectBundle(req.path));
    OpenedProject out;
    out.model = bundle->model;
    out.calibration = bundle->calibration;
    const std::string modelPath = req.modelPath.empty() ? bundle->model.path : req.modelPath;
    phase(ctx, "open");
    if (ctx) ctx->beginStage("open", 0, modelPath);
    auto ck = io::openCheckpoint(modelPath);
    if (!ck)
        return makeError(ck.error().code,
                         "cannot open the project's model " + modelPath + ": " + ck.error().toString());
    out.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
    // The grids were computed on these files: warn when they changed size since.
    if (req.modelPath.empty()) out.warnings = modelFileWarnings(bundle->model);
    if (!bundle->plan.isNull()) {
        QB_TRY(plan, quantPlanFromJson(bundle->plan, "plan.json"));
        out.plan = std::move(*plan);
    }
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError(req.path);
    phase(ctx, "grids");
    if (ctx) ctx->beginStage("grids", 0, "checking the stored grids against the model");
    QB_TRY(grids, gridsFromBundle(*bundle, *out.checkpoint));
    out.grids = std::move(*grids);

    // Runs: extras/runs.json, else (projects of older versions) the one run of metrics.json.
    struct Entry {
        const io::JsonValue* metrics;
        std::string summary;
        io::JsonValue plan, calibration;
        int index;        // in the file's run list (what grids_run and run_grids refer to)
        std::string name; // "" in projects written before runs had names
    };
    std::vector<Entry> entries;
    int gridsIndex = 0;
    for (const auto& [name, value] : bundle->extras) {
        if (name != kRunsExtra) continue;
        if (const auto* g = value.find("grids_run"); g && g->isNumber()) gridsIndex = int(g->asNumber());
        if (const auto* list = value.find("runs"); list && list->isArray())
            for (std::size_t k = 0; k < list->asArray().size(); ++k) {
                const io::JsonValue& e = list->asArray()[k];
                const auto* m = e.find("metrics");
                if (!m || !m->isObject()) continue;
                const auto* pl = e.find("plan");
                const auto* cal = e.find("calibration");
                entries.push_back({m, stringOr(e.find("summary"), "restored run"), pl ? *pl : io::JsonValue(),
                                   cal ? *cal : bundle->calibration, int(k), stringOr(e.find("name"), "")});
            }
    }
    if (entries.empty() && bundle->metrics.isObject())
        entries.push_back({&bundle->metrics, "restored run", bundle->plan, bundle->calibration, 0, ""});
    out.gridsRun = entries.size() == 1 ? 0 : -1;
    for (std::size_t i = 0; i < entries.size(); ++i)
        if (entries[i].index == gridsIndex) out.gridsRun = int(i);
    for (std::size_t i = 0; i < entries.size(); ++i) {
        ProjectRun run;
        QB_TRY(res, resultFromMetrics(*entries[i].metrics, &run.perplexity, &run.seconds, &run.kl));
        if (int(i) == out.gridsRun) {
            for (std::size_t t = 0; t < res->tensors.size(); ++t)
                if (auto it = out.grids.grids.find(res->tensors[t].name); it != out.grids.grids.end())
                    res->codes[t] = it->second;
        } else {
            for (const auto& rg : bundle->runGrids) {
                if (rg.run != entries[i].index) continue;
                // Compact (codes and scales): an export rebuilds the values it needs.
                QB_TRY(own, gridsFromBundleTensors(rg.tensors, *out.checkpoint));
                for (std::size_t t = 0; t < res->tensors.size(); ++t)
                    if (auto it = own->grids.find(res->tensors[t].name); it != own->grids.end())
                        res->codes[t] = std::move(it->second);
            }
        }
        run.name = entries[i].name;
        if (run.name.empty()) { // a project written before runs had names
            run.name = defaultRunName(*res);
            if (res->plan.activation.empty() && entries[i].plan.isObject())
                if (auto p = quantPlanFromJson(entries[i].plan, "runs.json"); p.ok())
                    if (const std::string a = p->activation.describe(); !a.empty()) run.name += " " + a;
        }
        run.result = std::make_shared<const QuantizeResult>(std::move(*res));
        run.summary = entries[i].summary;
        run.plan = entries[i].plan;
        run.calibration = entries[i].calibration;
        out.runs.push_back(std::move(run));
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError(req.path);
    }
    return out;
}

} // namespace qb::pipeline
