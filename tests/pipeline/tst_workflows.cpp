// The workflows of pipeline/workflows.h, driven directly on the bundled demo model as the window
// and the CLI drive them: results agree with the jobs they compose, errors are clear, progress
// covers the whole workflow (phases in order, overall monotone up to 1), cancel leaves files
// alone, and a saved project opens again with the same runs and every run's grids (each run
// exports byte for byte as before saving; a version 1.0 file with one run's grids still opens).

#include "export/project_bundle.h"
#include "io/checkpoint.h"
#include "io/zip_bundle.h"
#include "pipeline/workflows.h"

#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

using namespace qb;

namespace {

std::string demoPath(const char* f = "") { return std::string(QB_DEMO_DIR) + f; }

// The F32 demo model on eval.txt, ctx 128, every token scored (README; PyTorch float64 golden).
constexpr double kDemoPerplexityCtx128 = 41.4575;

// Records the phases entered and checks that overall never decreases.
struct ProgressLog {
    std::vector<std::string> phases;
    std::vector<std::string> stages;
    double last = 0;
    bool monotone = true;
    double maxOverall = 0;
    RunContext::Sink sink()
    {
        return [this](const Progress& p) {
            if (!p.phase.empty() && (phases.empty() || phases.back() != p.phase)) phases.push_back(p.phase);
            if (stages.empty() || stages.back() != p.stage) stages.push_back(p.stage);
            if (p.overall + 1e-12 < last) monotone = false;
            last = p.overall;
            maxOverall = std::max(maxOverall, p.overall);
        };
    }
};

pipeline::QuantizeRequest smallQuantize(std::shared_ptr<const io::Checkpoint> ck)
{
    pipeline::QuantizeRequest req;
    req.checkpoint = std::move(ck);
    req.plan = pipeline::uniformQuantPlan(quant::Method::Gptq, 4, 32);
    req.calibration.textPath = demoPath("/calib.txt");
    req.calibration.options.nsamples = 4;
    req.calibration.options.seqlen = 64;
    req.options.batch = 4;
    return req;
}

QByteArray readAll(const std::string& path)
{
    QFile f(QString::fromStdString(path));
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
}

// A GGUF export of the run (verified); its bytes, empty on failure (the error in *error).
QByteArray exportGgufBytes(const std::shared_ptr<const io::Checkpoint>& ck, const pipeline::ProjectRun& run,
                           const std::string& out, std::string* error)
{
    pipeline::ExportRequest req;
    req.checkpoint = ck;
    req.run = run;
    req.target.out = out;
    req.target.format = pipeline::ExportFormat::Gguf;
    auto r = pipeline::exportRun(req);
    if (!r) {
        *error = r.error().toString();
        return {};
    }
    if (!r->verified) *error = "not verified: " + r->verifySummary;
    return r->verified ? readAll(out) : QByteArray();
}

} // namespace

class TestWorkflows : public QObject {
    Q_OBJECT

    std::shared_ptr<const io::Checkpoint> m_ck;
    std::shared_ptr<const pipeline::QuantizeOutcome> m_run; // one quantization shared by several tests

    // A further small run of the demo model with this plan (no evaluation).
    pipeline::ProjectRun quickRun(const pipeline::QuantPlan& plan, const std::string& summary)
    {
        auto req = smallQuantize(m_ck);
        req.plan = plan;
        auto r = pipeline::quantizeModel(req);
        if (!r) qFatal("%s", r.error().toString().c_str());
        return {summary,    pipeline::quantPlanToJson(plan), r->result,    std::nullopt,
                r->seconds, req.calibration.toJson(),        std::nullopt, {}};
    }

    const pipeline::QuantizeOutcome& run()
    {
        if (!m_run) {
            auto req = smallQuantize(m_ck);
            req.keepBaseLayers = true;
            auto r = pipeline::quantizeModel(req);
            if (!r) qFatal("%s", r.error().toString().c_str());
            m_run = std::make_shared<const pipeline::QuantizeOutcome>(std::move(*r));
        }
        return *m_run;
    }

private Q_SLOTS:
    void initTestCase()
    {
        auto ck = io::openCheckpoint(demoPath());
        QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
        m_ck = std::make_shared<const io::Checkpoint>(std::move(*ck));
    }

    void evaluateMatchesThePerplexityJob()
    {
        pipeline::EvaluateRequest req;
        req.checkpoint = m_ck;
        req.textPath = demoPath("/eval.txt");
        req.options.ctx = 128;
        ProgressLog log;
        RunContext ctx(log.sink());
        auto out = pipeline::evaluateModel(req, &ctx);
        QVERIFY2(out.ok(), out.ok() ? "" : out.error().toString().c_str());
        QCOMPARE(log.phases, (std::vector<std::string>{"load", "perplexity"}));
        QVERIFY(log.monotone);
        QCOMPARE(log.maxOverall, 1.0);

        // The same numbers as the jobs it composes.
        auto tok = io::loadCheckpointTokenizer(*m_ck);
        auto text = pipeline::readTextFile(req.textPath);
        auto model = pipeline::loadModel(*m_ck);
        QVERIFY(tok.ok() && text.ok() && model.ok());
        auto direct = pipeline::runPerplexity(**model, *tok, *text, req.options);
        QVERIFY(direct.ok());
        QCOMPARE(out->perplexity.perplexity, direct->perplexity);
        QCOMPARE(out->perplexity.tokensScored, direct->tokensScored);

        // A given model is evaluated as is (no load phase).
        req.model = *model;
        ProgressLog log2;
        RunContext ctx2(log2.sink());
        auto again = pipeline::evaluateModel(req, &ctx2);
        QVERIFY(again.ok());
        QCOMPARE(log2.phases, (std::vector<std::string>{"perplexity"}));
        QCOMPARE(again->perplexity.perplexity, direct->perplexity);
    }

    void evaluateAgainstAReference()
    {
        pipeline::EvaluateRequest req;
        req.checkpoint = m_ck;
        req.textPath = demoPath("/eval.txt");
        req.options.ctx = 128;
        auto plain = pipeline::evaluateModel(req);
        QVERIFY(plain.ok());
        QVERIFY(!plain->kl);
        // Against itself: KL 0, every top token the same, the same perplexity.
        req.reference = m_ck;
        ProgressLog log;
        RunContext ctx(log.sink());
        auto self = pipeline::evaluateModel(req, &ctx);
        QVERIFY2(self.ok(), self.ok() ? "" : self.error().toString().c_str());
        QCOMPARE(log.phases, (std::vector<std::string>{"load", "reference", "perplexity"}));
        QVERIFY(self->kl);
        QVERIFY(std::abs(self->kl->mean) < 1e-9);
        QCOMPARE(self->kl->top1Agreement, 1.0);
        QCOMPARE(self->perplexity.perplexity, plain->perplexity.perplexity);
        QVERIFY(std::abs(self->kl->referencePerplexity - plain->perplexity.perplexity) <=
                1e-9 * plain->perplexity.perplexity);
        // Another vocabulary cannot be compared token by token.
        auto other = std::make_shared<io::Checkpoint>(*m_ck);
        other->config.vocabSize += 1;
        req.reference = other;
        auto bad = pipeline::evaluateModel(req);
        QVERIFY(!bad.ok());
        QVERIFY2(bad.error().toString().find("vocabulary") != std::string::npos, bad.error().toString().c_str());
    }

    void evaluateErrorsSayWhat()
    {
        pipeline::EvaluateRequest req;
        req.textPath = demoPath("/eval.txt");
        auto none = pipeline::evaluateModel(req);
        QVERIFY(!none.ok());
        QVERIFY(none.error().toString().find("no model") != std::string::npos);
        req.checkpoint = m_ck;
        req.textPath = demoPath("/no-such-text.txt");
        auto missing = pipeline::evaluateModel(req);
        QVERIFY(!missing.ok());
        QVERIFY2(missing.error().toString().find("no-such-text.txt") != std::string::npos,
                 missing.error().toString().c_str());
    }

    void calibrateCollectsEveryTap()
    {
        pipeline::CalibrateRequest req;
        req.checkpoint = m_ck;
        req.calibration.textPath = demoPath("/calib.txt");
        req.calibration.options.nsamples = 4;
        req.calibration.options.seqlen = 64;
        ProgressLog log;
        RunContext ctx(log.sink());
        auto r = pipeline::calibrateActivations(req, &ctx);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QCOMPARE(r->windows, 4);
        QCOMPARE(r->seqlen, 64);
        QCOMPARE(int(r->taps.size()), int(m_ck->config.numHiddenLayers) * 4);
        QVERIFY(r->forTensor("model.layers.2.mlp.down_proj.weight"));
        QCOMPARE(log.phases, (std::vector<std::string>{"calibrate", "activations"}));
        QVERIFY(log.monotone);
        QCOMPARE(log.maxOverall, 1.0);
    }

    void quantizeWithEvaluation()
    {
        auto req = smallQuantize(m_ck);
        req.evalTextPath = demoPath("/eval.txt");
        req.evalOptions.ctx = 128;
        std::vector<int> layersDone;
        req.options.onLayerDone = [&](int l, const std::vector<pipeline::TensorReport>& reports) {
            layersDone.push_back(l);
            QCOMPARE(int(reports.size()), 7);
        };
        ProgressLog log;
        std::vector<std::int64_t> parts;
        RunContext ctx([&](const Progress& p) {
            log.sink()(p);
            if (p.partName == "layer" && (parts.empty() || parts.back() != p.part)) parts.push_back(p.part);
        });
        auto out = pipeline::quantizeModel(req, &ctx);
        QVERIFY2(out.ok(), out.ok() ? "" : out.error().toString().c_str());
        const int layers = int(m_ck->config.numHiddenLayers);
        QCOMPARE(int(out->result->tensors.size()), layers * 7);
        QCOMPARE(int(layersDone.size()), layers);
        QVERIFY(out->perplexity && std::isfinite(out->perplexity->perplexity));
        QCOMPARE(out->calibration->count, 4);
        QVERIFY(!out->base); // layer by layer: no base model kept (the reference is released too)
        // KL against the original, whose layers were loaded for it ("reference") on the same windows.
        QVERIFY(out->kl);
        QCOMPARE(out->kl->tokens, out->perplexity->tokensScored);
        QVERIFY(out->kl->mean > 0 && out->kl->mean < 1);
        QVERIFY(out->kl->median <= out->kl->p99 && out->kl->p99 <= out->kl->max);
        QVERIFY(out->kl->top1Agreement > 0.5 && out->kl->top1Agreement < 1);
        QVERIFY(std::abs(out->kl->referencePerplexity / kDemoPerplexityCtx128 - 1) < 5e-4);
        // Phases in order; layers reported as parts 0..n-1; overall monotone, ending at 1.
        QCOMPARE(log.phases, (std::vector<std::string>{"calibrate", "load", "quantize", "reference", "perplexity"}));
        QCOMPARE(parts, (std::vector<std::int64_t>{0, 1, 2, 3}));
        QVERIFY(log.monotone);
        QCOMPARE(log.maxOverall, 1.0);
        // One metrics schema: what `quantize --json` prints and a project stores.
        const io::JsonValue m = out->metricsJson();
        for (const char* k :
             {"bits_per_weight", "size_bytes", "perplexity", "timings", "tensors", "warnings", "seconds"})
            QVERIFY2(m.find(k), k);
        QVERIFY(m.find("timings")->find("perplexity"));
        QCOMPARE(int(m.find("tensors")->asArray().size()), layers * 7);
        const io::JsonValue* kl = m.find("kl");
        QVERIFY(kl && kl->isObject());
        for (const char* k : {"tokens", "mean", "mean_stderr", "median", "p99", "max", "top1_agreement",
                              "top1_agreement_stderr", "reference_perplexity"})
            QVERIFY2(kl->find(k) && kl->find(k)->isNumber(), k);
        QCOMPARE(kl->find("mean")->asNumber(), out->kl->mean);
        QCOMPARE(kl->find("top1_agreement")->asNumber(), out->kl->top1Agreement);
    }

    // Without KL: perplexity alone, the original's layers never loaded, no "kl" in the metrics.
    // With the base's layers at hand (as the window keeps them): KL without a "reference" phase,
    // and the same numbers as when the layers were loaded for it.
    void quantizeEvaluationWithAndWithoutKl()
    {
        auto req = smallQuantize(m_ck);
        req.evalTextPath = demoPath("/eval.txt");
        req.evalOptions.ctx = 128;
        req.klDivergence = false;
        ProgressLog log;
        RunContext ctx(log.sink());
        auto plain = pipeline::quantizeModel(req, &ctx);
        QVERIFY2(plain.ok(), plain.ok() ? "" : plain.error().toString().c_str());
        QVERIFY(plain->perplexity && !plain->kl);
        QVERIFY(!plain->metricsJson().find("kl"));
        QCOMPARE(log.phases, (std::vector<std::string>{"calibrate", "load", "quantize", "perplexity"}));

        req.klDivergence = true;
        auto withLayers = pipeline::loadModel(*m_ck);
        QVERIFY(withLayers.ok());
        req.base = *withLayers;
        ProgressLog log2;
        RunContext ctx2(log2.sink());
        auto kl = pipeline::quantizeModel(req, &ctx2);
        QVERIFY2(kl.ok(), kl.ok() ? "" : kl.error().toString().c_str());
        QCOMPARE(log2.phases, (std::vector<std::string>{"calibrate", "quantize", "perplexity"}));
        QVERIFY(log2.monotone);
        QVERIFY(kl->kl);
        // The paired pass reports the same perplexity as the plain one.
        QCOMPARE(kl->perplexity->perplexity, plain->perplexity->perplexity);
        QVERIFY(std::abs(kl->kl->referencePerplexity / kDemoPerplexityCtx128 - 1) < 5e-4);
    }

    void workEstimateFollowsTheWork()
    {
        const ModelConfig& c = m_ck->config;
        auto plan = pipeline::resolveQuantPlan(pipeline::uniformQuantPlan(quant::Method::Gptq, 4, 32), c);
        QVERIFY(plan.ok());
        const auto w = pipeline::estimateQuantizeWork(c, *plan, 128 * 256, 256, 100000, 64 * 128, 128, false);
        QVERIFY(w.calibrate > 0 && w.load > 0 && w.quantize > 0 && w.perplexity > 0);
        // Twice the evaluation text, twice the perplexity work; nothing else moves.
        const auto w2 = pipeline::estimateQuantizeWork(c, *plan, 128 * 256, 256, 100000, 2 * 64 * 128, 128, false);
        QCOMPARE(w2.perplexity, 2 * w.perplexity);
        QCOMPARE(w2.quantize, w.quantize);
        // lm_head counts: with a 32k vocabulary (a 7.7 M LLaMA's) the evaluation's share of the work
        // grows over threefold, where a fixed split would have kept it at 15 % (the ETA that was 5x off).
        ModelConfig big = c;
        big.vocabSize = 32000;
        const auto wb = pipeline::estimateQuantizeWork(big, *plan, 128 * 256, 256, 100000, 64 * 128, 128, false);
        const double share = w.perplexity / (w.quantize + w.perplexity);
        const double bigShare = wb.perplexity / (wb.quantize + wb.perplexity);
        QVERIFY2(bigShare > 3 * share, qPrintable(QStringLiteral("%1 vs %2").arg(bigShare).arg(share)));
        // RTN solves nothing: less work than GPTQ; skipping tensors removes theirs; all layers cost more to load.
        auto rtn = pipeline::resolveQuantPlan(pipeline::uniformQuantPlan(quant::Method::Rtn, 4, 32), c);
        QVERIFY(rtn.ok());
        QVERIFY(pipeline::estimateQuantizeWork(c, *rtn, 128 * 256, 256, 100000, 0, 128, false).quantize < w.quantize);
        QVERIFY(pipeline::estimateQuantizeWork(c, *plan, 128 * 256, 256, 100000, 0, 128, true).load > w.load);
    }

    void quantizeRefusesABadPlanBeforeWorking()
    {
        auto req = smallQuantize(m_ck);
        req.plan = pipeline::uniformQuantPlan(quant::Method::Neuqi, 4, 32, true); // NeUQI has no symmetric grid
        ProgressLog log;
        RunContext ctx(log.sink());
        auto out = pipeline::quantizeModel(req, &ctx);
        QVERIFY(!out.ok());
        QCOMPARE(int(out.error().code), int(ErrorCode::InvalidArgument));
        QVERIFY(log.stages.empty()); // nothing started
    }

    void quantizeCancelsMidRun()
    {
        auto req = smallQuantize(m_ck);
        RunContext ctx;
        ctx.setSink([&](const Progress& p) {
            if (p.stage == "solve" && p.part == 1) ctx.requestCancel();
        });
        auto out = pipeline::quantizeModel(req, &ctx);
        QVERIFY(!out.ok());
        QCOMPARE(int(out.error().code), int(ErrorCode::Cancelled));
    }

    void analyzeTensorReproducesTheRunError()
    {
        const auto& r = run();
        QVERIFY(r.base && r.base->layer(0));
        pipeline::TensorAnalysisRequest req;
        req.base = r.base;
        req.run = r.result;
        req.calibration = r.calibration;
        req.tensor = "model.layers.1.self_attn.q_proj";
        auto a = pipeline::analyzeTensor(req);
        QVERIFY2(a.ok(), a.ok() ? "" : a.error().toString().c_str());
        const auto& rep = r.result->tensors[a->index];
        QCOMPARE(rep.name, std::string("model.layers.1.self_attn.q_proj.weight"));
        // q_proj is the first group of its layer: the analysis sees the job's exact Hessian.
        QVERIFY(std::abs(a->errors.relativeError - rep.relativeError) <= 1e-6 * std::max(1.0, rep.relativeError));
        QCOMPARE(int(a->errors.outChannel.size()), int(m_ck->config.hiddenSize));
        QCOMPARE(int(a->gridLevels.size()), 16);
        QVERIFY(a->before.counts.size() == a->after.counts.size());
        // The cached Hessians of the layer are reused for its other tensors.
        req.cached = a->hessians;
        req.tensor = "model.layers.1.self_attn.k_proj.weight";
        auto b = pipeline::analyzeTensor(req);
        QVERIFY(b.ok());
        QCOMPARE(b->hessians.get(), a->hessians.get());
        req.tensor = "lm_head.weight";
        QVERIFY(!pipeline::analyzeTensor(req).ok());
    }

    // A run as a project reopens it (grids, plan and calibration settings; no models, no windows)
    // is rebuilt for inspection: the same weights value for value and the same analysis; what it
    // cannot rebuild is refused with the reason.
    void reopenedRunIsRebuiltForInspection()
    {
        const auto& r = run();
        auto stripped = std::make_shared<pipeline::QuantizeResult>(*r.result);
        stripped->model.reset();
        const io::JsonValue plan = pipeline::quantPlanToJson(pipeline::uniformQuantPlan(quant::Method::Gptq, 4, 32));
        const io::JsonValue calib = smallQuantize(m_ck).calibration.toJson();
        auto src = pipeline::CalibrationSource::fromJson(calib);
        QVERIFY(src.ok());
        QCOMPARE(src->textPath, demoPath("/calib.txt"));
        QCOMPARE(src->options.nsamples, 4);
        QCOMPARE(src->options.seqlen, 64);
        auto rebuilt = pipeline::rebuildRunForInspection(*m_ck, *stripped, plan, calib);
        QVERIFY2(rebuilt.ok(), rebuilt.ok() ? "" : rebuilt.error().toString().c_str());
        QVERIFY(rebuilt->result->model && rebuilt->base && rebuilt->calibration);
        QCOMPARE(rebuilt->calibration->ids, r.calibration->ids);
        for (int l = 0; l < int(m_ck->config.numHiddenLayers); ++l)
            for (model::Linear lin : model::kAllLinears)
                QVERIFY(model::unpackedLayer(rebuilt->result->model->layer(l))->weight(lin) ==
                        model::unpackedLayer(r.result->model->layer(l))->weight(lin));
        pipeline::TensorAnalysisRequest a, b;
        a.base = r.base;
        a.run = r.result;
        a.calibration = r.calibration;
        a.tensor = b.tensor = "model.layers.2.mlp.up_proj";
        b.base = rebuilt->base;
        b.run = rebuilt->result;
        b.calibration = rebuilt->calibration;
        auto ea = pipeline::analyzeTensor(a), eb = pipeline::analyzeTensor(b);
        QVERIFY(ea.ok() && eb.ok());
        QVERIFY(std::abs(ea->errors.relativeError - eb->errors.relativeError) <= 1e-12 * ea->errors.relativeError);
        // Refusals: transformed runs, no grids, bad calibration settings, a missing text.
        io::JsonValue rotated = plan;
        io::JsonValue transform;
        transform.set("rotate", std::string("hadamard"));
        rotated.set("transform", transform);
        auto t = pipeline::rebuildRunForInspection(*m_ck, *stripped, rotated, calib);
        QVERIFY(!t.ok() && t.error().message.find("does not store those transforms") != std::string::npos);
        pipeline::QuantizeResult empty = *stripped;
        empty.codes.clear();
        auto e = pipeline::rebuildRunForInspection(*m_ck, empty, plan, calib);
        QVERIFY(!e.ok() && e.error().message.find("no stored quantization grids") != std::string::npos);
        io::JsonValue bad = calib;
        bad.set("nsamples", 2.5);
        QVERIFY(!pipeline::rebuildRunForInspection(*m_ck, *stripped, plan, bad).ok());
        io::JsonValue missing = calib;
        missing.set("text", std::string("/nonexistent/calib.txt"));
        QVERIFY(!pipeline::rebuildRunForInspection(*m_ck, *stripped, plan, missing).ok());
    }

    void exportRunWritesVerifiedFiles()
    {
        const auto& r = run();
        QTemporaryDir dir;
        pipeline::ExportRequest req;
        req.checkpoint = m_ck;
        req.run = {"GPTQ 4b g32", pipeline::quantPlanToJson(smallQuantize(m_ck).plan),
                   r.result,      std::nullopt,
                   r.seconds,     smallQuantize(m_ck).calibration.toJson(),
                   std::nullopt,  {}};
        req.target.out = dir.filePath("m.gguf").toStdString();
        req.target.format = pipeline::ExportFormat::Gguf;
        auto gguf = pipeline::exportRun(req);
        QVERIFY2(gguf.ok(), gguf.ok() ? "" : gguf.error().toString().c_str());
        QVERIFY(gguf->verified);
        QVERIFY(gguf->gguf && gguf->bytes > 0);

        req.target.out = dir.filePath("m.qbproj").toStdString();
        req.target.format = pipeline::ExportFormat::Qbproj;
        auto proj = pipeline::exportRun(req);
        QVERIFY2(proj.ok(), proj.ok() ? "" : proj.error().toString().c_str());
        QVERIFY(proj->verified);
        QCOMPARE(proj->projectTensors, r.result->tensors.size());
        QVERIFY(proj->summary().find("project") != std::string::npos);
        auto back = exporting::readProjectBundle(req.target.out);
        QVERIFY(back.ok());
        QCOMPARE(back->calibration.find("nsamples")->asNumber(), 4.0);
    }

    // Issue 19 item 5: the default name says what was quantized.
    void defaultRunNames()
    {
        pipeline::QuantizeResult r;
        pipeline::TensorReport t;
        t.method = quant::Method::Gptq;
        t.bits = 4;
        t.groupSize = 128;
        r.tensors = {t, t};
        r.bitsPerWeight = 4.25;
        QCOMPARE(pipeline::defaultRunName(r), std::string("GPTQ 4b g128"));
        r.tensors[0].sym = r.tensors[1].sym = true;
        r.tensors[0].groupSize = r.tensors[1].groupSize = -1;
        QCOMPARE(pipeline::defaultRunName(r), std::string("GPTQ 4b per-ch sym"));
        r.tensors[1].bits = 6; // one rule changed a tensor: mixed, named by bits per weight
        r.bitsPerWeight = 5.0625;
        QCOMPARE(pipeline::defaultRunName(r), std::string("mixed 5.06 b"));
        r.tensors[1] = r.tensors[0];
        r.tensors[1].skipped = true;
        QCOMPARE(pipeline::defaultRunName(r), std::string("mixed 5.06 b"));
        r.tensors[0].skipped = true;
        QCOMPARE(pipeline::defaultRunName(r), std::string("unquantized"));
        for (auto& x : r.tensors) {
            x.skipped = false;
            x.method = quant::Method::Rtn;
            x.target = "Q4_K";
        }
        QCOMPARE(pipeline::defaultRunName(r), std::string("RTN Q4_K"));
        for (auto& x : r.tensors) {
            x.method = quant::Method::Cmpq;
            x.target.clear();
        }
        r.bitsPerWeight = 3.5;
        QCOMPARE(pipeline::defaultRunName(r), std::string("CMPQ 3.50 b"));
    }

    void saveAndOpenProjectRoundTrip()
    {
        const auto& r = run();
        QTemporaryDir dir;
        const std::string path = dir.filePath("p.qbproj").toStdString();
        pipeline::SaveProjectRequest save;
        save.path = path;
        save.checkpoint = m_ck;
        save.plan = pipeline::uniformQuantPlan(quant::Method::Rtn, 3, 64);
        save.calibration = smallQuantize(m_ck).calibration.toJson();
        pipeline::QuantizeResult metricsOnly = *r.result; // a run whose grids are not stored
        metricsOnly.codes.assign(metricsOnly.codes.size(), nullptr);
        save.runs.push_back({"first",
                             io::JsonValue(),
                             std::make_shared<const pipeline::QuantizeResult>(metricsOnly),
                             12.5,
                             1.0,
                             {},
                             {},
                             {}}); // no name: the default is stored
        eval::KlStats kl;
        kl.tokens = 25400;
        kl.mean = 0.1208977967101265;
        kl.meanStderr = 7.468770509562058e-4;
        kl.median = 0.0869298;
        kl.p99 = 0.5772975899071964;
        kl.max = 2.6083337984760195;
        kl.top1Agreement = 0.7504724409448819;
        kl.top1AgreementStderr = 0.0027153031558706554;
        kl.referencePerplexity = 41.457531259554415;
        save.runs.push_back({"second",
                             pipeline::quantPlanToJson(smallQuantize(m_ck).plan),
                             r.result,
                             11.25,
                             2.0,
                             {},
                             kl,
                             "my tuned run"});
        save.gridsRun = 1;
        ProgressLog log;
        RunContext ctx(log.sink());
        auto saved = pipeline::saveProject(save, &ctx);
        QVERIFY2(saved.ok(), saved.ok() ? "" : saved.error().toString().c_str());
        QVERIFY(saved->verified);
        QCOMPARE(saved->tensors, r.result->tensors.size());
        QCOMPARE(log.phases, (std::vector<std::string>{"bundle", "write", "verify"}));
        QVERIFY(log.monotone);

        ProgressLog openLog;
        RunContext openCtx(openLog.sink());
        auto opened = pipeline::openProject({path, ""}, &openCtx);
        QVERIFY2(opened.ok(), opened.ok() ? "" : opened.error().toString().c_str());
        QVERIFY(openLog.monotone);
        QCOMPARE(opened->checkpoint->config.hiddenSize, m_ck->config.hiddenSize);
        QVERIFY(opened->plan && *opened->plan == *save.plan);
        QCOMPARE(opened->calibration, save.calibration);
        QCOMPARE(int(opened->runs.size()), 2);
        QCOMPARE(opened->gridsRun, 1);
        QCOMPARE(opened->runs[0].summary, std::string("first"));
        QCOMPARE(opened->runs[1].summary, std::string("second"));
        // Run names: the one given comes back; a run saved without one gets the default.
        QCOMPARE(opened->runs[0].name, std::string("GPTQ 4b g32"));
        QCOMPARE(opened->runs[1].name, std::string("my tuned run"));
        QCOMPARE(*opened->runs[0].perplexity, 12.5);
        QCOMPARE(*opened->runs[1].perplexity, 11.25);
        // The KL block comes back exactly; a run without one has none.
        QVERIFY(!opened->runs[0].kl);
        QVERIFY(opened->runs[1].kl);
        const eval::KlStats& klBack = *opened->runs[1].kl;
        QCOMPARE(klBack.tokens, kl.tokens);
        QCOMPARE(klBack.mean, kl.mean);
        QCOMPARE(klBack.meanStderr, kl.meanStderr);
        QCOMPARE(klBack.median, kl.median);
        QCOMPARE(klBack.p99, kl.p99);
        QCOMPARE(klBack.max, kl.max);
        QCOMPARE(klBack.top1Agreement, kl.top1Agreement);
        QCOMPARE(klBack.top1AgreementStderr, kl.top1AgreementStderr);
        QCOMPARE(klBack.referencePerplexity, kl.referencePerplexity);
        // metrics.json of the grids run carries it too (the file a project's reader sees first).
        auto bundle = exporting::readProjectBundle(path);
        QVERIFY(bundle.ok());
        QVERIFY(bundle->metrics.find("kl") && bundle->metrics.find("kl")->find("p99"));
        QCOMPARE(bundle->metrics.find("kl")->find("p99")->asNumber(), kl.p99);
        QCOMPARE(opened->runs[1].plan, save.runs[1].plan);
        // The grids run carries its codes, equal to the run's own; the other has none.
        const auto& back = *opened->runs[1].result;
        QCOMPARE(back.tensors.size(), r.result->tensors.size());
        for (std::size_t i = 0; i < back.tensors.size(); ++i) {
            QCOMPARE(back.tensors[i].relativeError, r.result->tensors[i].relativeError);
            QVERIFY((back.codes[i] != nullptr));
            QVERIFY(exporting::sameGrid(back.codes[i]->unpack(), r.result->codes[i]->unpack()));
        }
        for (const auto& c : opened->runs[0].result->codes)
            QVERIFY(!c);
        QCOMPARE(opened->grids.grids.size(), r.result->tensors.size());

        // Another model path is used when given; a missing one is a clear error.
        auto wrong = pipeline::openProject({path, demoPath("/no-such-model")});
        QVERIFY(!wrong.ok());
        QVERIFY2(wrong.error().toString().find("no-such-model") != std::string::npos, wrong.error().toString().c_str());
    }

    // Issue 11 item 8: a project keeps the grids of every run, and each run exports after reopening
    // exactly as it did before saving.
    void everyRunKeepsItsGrids()
    {
        const auto& r = run();
        pipeline::QuantPlan q41 = pipeline::uniformQuantPlan(quant::Method::Rtn, 4, 32);
        q41.defaults.target = "Q4_1"; // solved inside a GGUF block type (offsets stored too)
        const std::vector<pipeline::ProjectRun> runs = {
            {"GPTQ 4b g32", pipeline::quantPlanToJson(smallQuantize(m_ck).plan), r.result, std::nullopt, r.seconds,
             smallQuantize(m_ck).calibration.toJson(), std::nullopt, "baseline"},
            quickRun(pipeline::uniformQuantPlan(quant::Method::Rtn, 3, 64), "RTN 3b g64"),
            quickRun(q41, "RTN Q4_1"),
        };
        for (const auto& run : runs)
            QVERIFY(!run.result->codes.empty() && run.result->codes[0] != nullptr);
        QVERIFY(!runs[2].result->codes[0]->params().container.empty());

        QTemporaryDir dir;
        // Exports before saving: runs 0 and 2 (neither is the grids run).
        std::string error;
        const QByteArray before0 = exportGgufBytes(m_ck, runs[0], dir.filePath("before0.gguf").toStdString(), &error);
        QVERIFY2(!before0.isEmpty(), error.c_str());
        const QByteArray before2 = exportGgufBytes(m_ck, runs[2], dir.filePath("before2.gguf").toStdString(), &error);
        QVERIFY2(!before2.isEmpty(), error.c_str());

        const pipeline::ProjectContents contents = pipeline::projectContents(runs);
        QCOMPARE(contents.runs, std::size_t(3));
        QCOMPARE(contents.gridRuns, std::size_t(3));
        pipeline::SaveProjectRequest save;
        save.path = dir.filePath("three.qbproj").toStdString();
        save.checkpoint = m_ck;
        save.runs = runs;
        save.gridsRun = 1;
        auto saved = pipeline::saveProject(save);
        QVERIFY2(saved.ok(), saved.ok() ? "" : saved.error().toString().c_str());
        QVERIFY2(saved->verified, saved->verifySummary.c_str());
        QCOMPARE(saved->gridRuns, std::size_t(3));
        QVERIFY2(saved->verifySummary.find("of 3 run(s) identical") != std::string::npos, saved->verifySummary.c_str());
        std::size_t tensors = 0;
        for (const auto& run : runs)
            tensors += run.result->tensors.size();
        QCOMPARE(saved->tensors, tensors);
        // The stored grids are what the dialog announced (the rest is JSON and zip framing).
        QVERIFY(saved->bytes > contents.gridBytes);
        QVERIFY2(saved->bytes < contents.gridBytes + contents.gridBytes / 4 + 200000,
                 (std::to_string(saved->bytes) + " vs " + std::to_string(contents.gridBytes)).c_str());

        // The layout: the grids run in tensors.safetensors, the others in runs/<index>.safetensors.
        auto bundle = exporting::readProjectBundle(save.path);
        QVERIFY(bundle.ok());
        QCOMPARE(bundle->version, std::string("1.1"));
        QCOMPARE(bundle->runGrids.size(), std::size_t(2));
        QCOMPARE(bundle->runGrids[0].run, 0);
        QCOMPARE(bundle->runGrids[1].run, 2);
        auto entries = io::readZipEntries(save.path);
        QVERIFY(entries.ok());
        QVERIFY(entries->count("tensors.safetensors") && entries->count("runs/0.safetensors") &&
                entries->count("runs/2.safetensors") && !entries->count("runs/1.safetensors"));

        auto opened = pipeline::openProject({save.path, ""});
        QVERIFY2(opened.ok(), opened.ok() ? "" : opened.error().toString().c_str());
        QCOMPARE(opened->runs.size(), std::size_t(3));
        QCOMPARE(opened->gridsRun, 1);
        for (std::size_t k = 0; k < runs.size(); ++k) {
            const auto& a = *opened->runs[k].result;
            const auto& b = *runs[k].result;
            QCOMPARE(opened->runs[k].summary, runs[k].summary);
            QCOMPARE(opened->runs[k].name, runs[k].name.empty() ? pipeline::defaultRunName(a) : runs[k].name);
            QCOMPARE(a.tensors.size(), b.tensors.size());
            QCOMPARE(a.codes.size(), a.tensors.size());
            for (std::size_t t = 0; t < a.tensors.size(); ++t) {
                QCOMPARE(a.tensors[t].name, b.tensors[t].name);
                QVERIFY2((a.codes[t] != nullptr), a.tensors[t].name.c_str());
                QVERIFY2(exporting::sameGrid(a.codes[t]->unpack(), b.codes[t]->unpack()), a.tensors[t].name.c_str());
            }
        }
        // Byte for byte the same GGUF files as before saving.
        const QByteArray after0 =
            exportGgufBytes(opened->checkpoint, opened->runs[0], dir.filePath("after0.gguf").toStdString(), &error);
        QVERIFY2(!after0.isEmpty(), error.c_str());
        QVERIFY(after0 == before0);
        const QByteArray after2 =
            exportGgufBytes(opened->checkpoint, opened->runs[2], dir.filePath("after2.gguf").toStdString(), &error);
        QVERIFY2(!after2.isEmpty(), error.c_str());
        QVERIFY(after2 == before2);
    }

    // A project of version 1.0 (one run's grids in tensors.safetensors, no run_grids, no runs/)
    // opens: that run carries its codes and exports; the others have none and say so.
    void oldSingleGridsProjectOpens()
    {
        const auto& r = run();
        QTemporaryDir dir;
        const std::string path = dir.filePath("old.qbproj").toStdString();
        const pipeline::QuantPlan plan = smallQuantize(m_ck).plan;
        exporting::ProjectBundle b =
            pipeline::bundleFromRun(*m_ck, *r.result, plan, smallQuantize(m_ck).calibration.toJson(), 11.5, 1.0);
        b.version = "1.0";
        io::JsonArray list;
        for (int i = 0; i < 2; ++i) { // what the 1.0 writer stored for two runs, grids of the second
            io::JsonValue e;
            e.set("id", i + 1);
            e.set("summary", i == 0 ? "first" : "second");
            e.set("plan", pipeline::quantPlanToJson(plan));
            e.set("metrics", pipeline::runMetricsJson(*r.result, 11.5, 1.0));
            e.set("calibration", smallQuantize(m_ck).calibration.toJson());
            list.push_back(std::move(e));
        }
        io::JsonValue runsJson;
        runsJson.set("grids_run", 1);
        runsJson.set("runs", std::move(list));
        b.extras.emplace_back("runs", std::move(runsJson));
        QVERIFY(b.runGrids.empty());
        QVERIFY(exporting::writeProjectBundle(path, b).ok());
        auto entries = io::readZipEntries(path);
        QVERIFY(entries.ok());
        for (const auto& [name, bytes] : *entries)
            QVERIFY2(name.rfind("runs/", 0) != 0, name.c_str());
        auto man = io::parseJson(std::string((*entries)["manifest.json"].begin(), (*entries)["manifest.json"].end()));
        QVERIFY(man.ok() && !man->find("run_grids") && man->find("version")->asString() == "1.0");

        auto opened = pipeline::openProject({path, ""});
        QVERIFY2(opened.ok(), opened.ok() ? "" : opened.error().toString().c_str());
        QCOMPARE(opened->runs.size(), std::size_t(2));
        QCOMPARE(opened->gridsRun, 1);
        // No names in a 1.0 project: each run gets the default name of what it quantized.
        QCOMPARE(opened->runs[0].name, std::string("GPTQ 4b g32"));
        QCOMPARE(opened->runs[1].name, pipeline::defaultRunName(*r.result));
        for (const auto& c : opened->runs[0].result->codes)
            QVERIFY(!c);
        const auto& back = *opened->runs[1].result;
        for (std::size_t t = 0; t < back.tensors.size(); ++t)
            QVERIFY(back.codes[t] && exporting::sameGrid(back.codes[t]->unpack(), r.result->codes[t]->unpack()));
        std::string error;
        QVERIFY2(!exportGgufBytes(opened->checkpoint, opened->runs[1], dir.filePath("g1.gguf").toStdString(), &error)
                      .isEmpty(),
                 error.c_str());
        QVERIFY(exportGgufBytes(opened->checkpoint, opened->runs[0], dir.filePath("g0.gguf").toStdString(), &error)
                    .isEmpty());
        QVERIFY2(error.find("no stored quantization grids") != std::string::npos, error.c_str());
    }

    void cancelledSaveLeavesTheOldFile()
    {
        const auto& r = run();
        QTemporaryDir dir;
        const QString path = dir.filePath("keep.qbproj");
        {
            QFile f(path);
            QVERIFY(f.open(QIODevice::WriteOnly));
            f.write("previous contents");
        }
        pipeline::SaveProjectRequest save;
        save.path = path.toStdString();
        save.checkpoint = m_ck;
        save.runs.push_back({"run", io::JsonValue(), r.result, std::nullopt, 0.0, {}, std::nullopt, {}});
        save.gridsRun = 0;
        RunContext ctx;
        ctx.setSink([&](const Progress& p) {
            if (p.phase == "write" && p.done > 0) ctx.requestCancel();
        });
        auto saved = pipeline::saveProject(save, &ctx);
        QVERIFY(!saved.ok());
        QCOMPARE(int(saved.error().code), int(ErrorCode::Cancelled));
        QFile f(path);
        QVERIFY(f.open(QIODevice::ReadOnly));
        QCOMPARE(f.readAll(), QByteArray("previous contents"));
    }
};

QTEST_GUILESS_MAIN(TestWorkflows)
#include "tst_workflows.moc"
