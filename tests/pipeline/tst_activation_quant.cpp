// Weight-and-activation quantization end to end: the plan's "activations"/"kv"/"transform" objects
// (parse, round trip, errors), SmoothQuant smoothing (function preserved for GQA and MHA with
// biases; flatter per-channel maxima after it), and the quantize workflow with activation bits:
// W8A8 within 1 % of FP perplexity on the demo model, fewer bits cost more, static ranges work.

#include "model/forward.h"
#include "model/runtime.h"
#include "model_test_util.h"
#include "pipeline/activation_setup.h"
#include "pipeline/smoothing.h"
#include "pipeline/workflows.h"
#include "quant_test_models.h"

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>

using namespace qb;
using namespace qb::pipeline;
using model::LinearKind;

namespace {

model::RowMatrix logitsOf(const model::Model& m, const CalibrationSet& calib)
{
    model::Workspace ws;
    auto r = model::forwardLogits(m, calib.ids, calib.seqlen, ws);
    return r.ok() ? *r : model::RowMatrix();
}

double relDiff(const model::RowMatrix& a, const model::RowMatrix& b) { return (a - b).norm() / b.norm(); }

// max over channels / median over channels of the per-channel max |x| of one input.
double outlierRatio(const ActivationReport& r, int layer, LinearKind k)
{
    std::vector<float> m = r.taps.at({layer, k}).channelMaxAbs();
    std::sort(m.begin(), m.end());
    return double(m.back()) / double(m[m.size() / 2]);
}

std::shared_ptr<io::Checkpoint> demoCheckpoint()
{
    auto ck = io::openCheckpoint(qbtest::demoDir());
    return ck.ok() ? std::make_shared<io::Checkpoint>(std::move(*ck)) : nullptr;
}

} // namespace

class TestActivationQuant : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }

    void planRoundTrip()
    {
        const char* text = "{\"default\": {\"method\": \"gptq\", \"bits\": 4},"
                           " \"activations\": {\"bits\": 4, \"clip\": 0.9, \"groups\": {\"down\": {\"bits\": 8,"
                           " \"static\": true}}},"
                           " \"kv\": {\"bits\": 4, \"q_bits\": 6},"
                           " \"transform\": {\"smooth\": 0.6, \"rotate\": \"hadamard\", \"seed\": 3}}";
        auto plan = quantPlanFromText(text);
        QVERIFY2(plan.ok(), plan.ok() ? "" : plan.error().toString().c_str());
        const ActivationPlan& a = plan->activation;
        QCOMPARE(a.spec(LinearKind::Qkv).bits, 4);
        QCOMPARE(a.spec(LinearKind::Qkv).clip, 0.9f);
        QCOMPARE(a.spec(LinearKind::Down).bits, 8);
        QVERIFY(a.staticRange(LinearKind::Down) && !a.staticRange(LinearKind::O));
        QCOMPARE(a.kvBits, 4);
        QCOMPARE(a.qBits, 6);
        QCOMPARE(*a.smoothAlpha, 0.6);
        QVERIFY(a.rotate == PlanRotation::Hadamard);
        QCOMPARE(a.seed, std::uint64_t(3));
        QCOMPARE(a.describe(), std::string("A4-8 KV4 Q6 +smooth 0.6 +hadamard"));
        auto again = quantPlanFromJson(quantPlanToJson(*plan));
        QVERIFY(again.ok());
        QVERIFY(*again == *plan);
        // A weight-only plan writes none of the three objects.
        const std::string plain = io::toJsonText(quantPlanToJson(uniformQuantPlan(quant::Method::Rtn, 4)), -1);
        QVERIFY(plain.find("activations") == std::string::npos && plain.find("transform") == std::string::npos);
    }

    void planErrors_data()
    {
        QTest::addColumn<QString>("json");
        QTest::addColumn<QString>("needle");
        const QString d = "{\"default\": {\"method\": \"rtn\", \"bits\": 4}, ";
        QTest::newRow("bits 9") << d + "\"activations\": {\"bits\": 9}}" << "activations.bits";
        QTest::newRow("bits 1") << d + "\"activations\": {\"bits\": 1}}" << "[2, 8]";
        QTest::newRow("clip 0") << d + "\"activations\": {\"clip\": 0}}" << "(0, 1]";
        QTest::newRow("unknown group") << d + "\"activations\": {\"groups\": {\"mlp\": {}}}}" << "unknown group";
        QTest::newRow("unknown key") << d + "\"kv\": {\"bitz\": 4}}" << "unknown key";
        QTest::newRow("rotate") << d + "\"transform\": {\"rotate\": \"spin\"}}" << "hadamard";
        QTest::newRow("alpha") << d + "\"transform\": {\"smooth\": 1.5}}" << "[0, 1]";
    }

    void planErrors()
    {
        QFETCH(QString, json);
        QFETCH(QString, needle);
        auto plan = quantPlanFromText(json.toStdString());
        QVERIFY(!plan.ok());
        QVERIFY2(plan.error().toString().find(needle.toStdString()) != std::string::npos,
                 plan.error().toString().c_str());
    }

    void smoothingPreservesTheFunction_data()
    {
        QTest::addColumn<int>("kvHeads");
        QTest::addColumn<bool>("biases");
        QTest::newRow("GQA (o online)") << 1 << false;
        QTest::newRow("MHA with biases (o folded into v)") << 2 << true;
    }

    void smoothingPreservesTheFunction()
    {
        QFETCH(int, kvHeads);
        QFETCH(bool, biases);
        ModelConfig c = qbtest::syntheticConfig(2);
        c.numKeyValueHeads = kvHeads;
        c.attentionBias = c.mlpBias = biases;
        c.attentionOutputBias = biases;
        auto m = qbtest::syntheticModelFor(c);
        QVERIFY(m->validate().ok());
        const CalibrationSet calib = qbtest::syntheticCalibration(4, 16);
        const model::RowMatrix ref = logitsOf(*m, calib);
        ActivationJobOptions o;
        auto stats = collectActivationStats(*m, calib, o);
        QVERIFY(stats.ok());
        auto smoothed = std::make_shared<model::Model>(*m);
        auto sum = smoothModel(*smoothed, *stats, 0.6);
        QVERIFY2(sum.ok(), sum.ok() ? "" : sum.error().toString().c_str());
        QCOMPARE(sum->onlineGroups, kvHeads == 1 ? 2 : 0);
        QVERIFY(sum->maxFactor > sum->minFactor);
        QVERIFY(smoothed->validate().ok());
        const double d = relDiff(logitsOf(*smoothed, calib), ref);
        qInfo("smoothed: relative logit difference %.3g", d);
        QVERIFY2(d < 1e-5, qPrintable(QString::number(d)));
        // The base model is untouched (layers were replaced, not modified).
        QVERIFY(relDiff(logitsOf(*m, calib), ref) == 0);
        // Smoothing twice is refused only where it must be: a second pass on a runtime is an error.
        if (kvHeads == 1) QVERIFY(!smoothModel(*smoothed, *stats, 0.6).ok());
    }

    void smoothingFlattensOutlierChannels()
    {
        // The demo model with two input channels of layer 0's attention made loud: their RMSNorm
        // gains x 30, the matching q/k/v columns / 30 (same function).
        std::string err;
        auto m = qbtest::loadModelDir(qbtest::demoDir(), &err);
        QVERIFY2(m, err.c_str());
        auto w = std::make_shared<model::DecoderLayerWeights>(*m->layer(0));
        for (Eigen::Index j : {Eigen::Index(5), Eigen::Index(77)}) {
            w->inputNorm[j] *= 30.f;
            for (model::RowMatrix* x : {&w->q, &w->k, &w->v})
                x->col(j) /= 30.f;
        }
        m->setLayer(0, w);
        auto tok = io::loadCheckpointTokenizer(*io::openCheckpoint(qbtest::demoDir()));
        QVERIFY(tok.ok());
        const auto tokens = qbtest::goldenTokens();
        auto calib = sampleCalibrationWindows(tokens, {8, 64, 0});
        QVERIFY(calib.ok());
        ActivationJobOptions o;
        auto before = collectActivationStats(*m, *calib, o);
        QVERIFY(before.ok());
        ActivationPlan plan;
        plan.smoothAlpha = 0.6;
        auto smoothed = prepareActivationModel(m, plan, *calib, 4);
        QVERIFY(smoothed.ok());
        auto after = collectActivationStats(**smoothed, *calib, o);
        QVERIFY(after.ok());
        const double r0 = outlierRatio(*before, 0, LinearKind::Qkv), r1 = outlierRatio(*after, 0, LinearKind::Qkv);
        qInfo("layer 0 qkv input: max/median channel max |x| %.1f before, %.1f after smoothing", r0, r1);
        QVERIFY(r0 > 20);
        QVERIFY(r1 < r0 / 4);
    }

    void workflowActivationBits()
    {
        auto ck = demoCheckpoint();
        QVERIFY(ck);
        // The first 16 KiB of the demo's evaluation text keep the five runs short.
        QTemporaryDir dir;
        const std::string evalPath = dir.filePath("eval.txt").toStdString();
        const std::string calibPath = qbtest::demoDir() + "/calib.txt";
        {
            QFile in(QString::fromStdString(qbtest::demoDir() + "/eval.txt")), out(QString::fromStdString(evalPath));
            QVERIFY(in.open(QIODevice::ReadOnly) && out.open(QIODevice::WriteOnly));
            QByteArray text = in.read(16 << 10);
            while (!text.isEmpty() && (text.back() & 0xC0) == 0x80) // whole UTF-8 characters only
                text.chop(1);
            if (!text.isEmpty() && (text.back() & 0x80)) text.chop(1);
            out.write(text);
        }
        auto run = [&](int abits, int kvbits, bool isStatic, std::optional<double> smooth) {
            QuantizeRequest req;
            req.checkpoint = ck;
            req.plan = uniformQuantPlan(quant::Method::Rtn, 8, -1);
            req.plan.activation.hasActivations = abits > 0;
            req.plan.activation.defaults.bits = abits;
            if (isStatic) req.plan.activation.defaults.staticRange = true;
            req.plan.activation.kvBits = kvbits;
            req.plan.activation.hasKv = kvbits > 0;
            req.plan.activation.smoothAlpha = smooth;
            req.plan.activation.hasTransform = smooth.has_value();
            req.calibration.textPath = calibPath;
            req.calibration.options = {8, 128, 0};
            req.evalTextPath = evalPath;
            req.evalOptions.ctx = 128;
            req.klDivergence = true;
            auto r = quantizeModel(req);
            if (!r.ok()) qWarning("%s", r.error().toString().c_str());
            return r;
        };
        auto w8 = run(0, 0, false, std::nullopt);
        auto w8a8 = run(8, 8, false, std::nullopt);
        auto w8a4 = run(4, 4, false, std::nullopt);
        auto w8a4s = run(4, 0, true, std::nullopt);
        auto w8a4sm = run(4, 4, false, 0.6);
        QVERIFY(w8 && w8a8 && w8a4 && w8a4s && w8a4sm);
        const double fp = w8->kl->referencePerplexity;
        auto ppl = [](const auto& r) { return r->perplexity->perplexity; };
        qInfo("demo ppl: FP %.3f, W8 %.3f, W8A8KV8 %.3f, W8A4KV4 %.3f, W8A4 static %.3f, W8A4KV4 smooth %.3f", fp,
              ppl(w8), ppl(w8a8), ppl(w8a4), ppl(w8a4s), ppl(w8a4sm));
        QVERIFY(std::abs(ppl(w8a8) / fp - 1) < 0.01);
        QVERIFY(ppl(w8a4) > ppl(w8a8));
        QVERIFY(w8a4->kl->mean > 10 * w8a8->kl->mean);
        QVERIFY(std::isfinite(ppl(w8a4s)) && ppl(w8a4s) > ppl(w8a8));
        QVERIFY(!w8a4sm->result->notes.empty());
        QVERIFY(w8a4sm->result->onlineTransforms.find("o: smoothing") != std::string::npos);
        // The run's metrics carry the activation settings.
        const io::JsonValue mj = w8a4sm->metricsJson();
        QVERIFY(mj.find("activation") != nullptr);
        QCOMPARE(mj.find("activation")->find("activation_bits")->asInteger(), std::int64_t(4));
    }

    void checkpointOverModelRoundTrip()
    {
        // A model changed in memory (smoothed layers, an untied head) read back through the
        // derived checkpoint is the same model, value for value.
        auto ck = demoCheckpoint();
        QVERIFY(ck);
        auto m = loadModel(*ck);
        QVERIFY(m.ok());
        auto changed = std::make_shared<model::Model>(**m);
        auto w = std::make_shared<model::DecoderLayerWeights>(*changed->layer(1));
        w->postNorm *= 2.0f;
        w->up *= 0.5f;
        changed->setLayer(1, w);
        auto derived = checkpointOverModel(*ck, *changed);
        QVERIFY2(derived.ok(), derived.ok() ? "" : derived.error().toString().c_str());
        auto back = loadModel(*derived);
        QVERIFY(back.ok());
        QVERIFY(qbtest::bitwiseEqual((*back)->layer(1)->up, w->up));
        QVERIFY(((*back)->layer(1)->postNorm - w->postNorm).norm() == 0);
        QVERIFY(qbtest::bitwiseEqual((*back)->embedding(), changed->embedding()));
        QVERIFY(qbtest::bitwiseEqual((*back)->lmHead(), changed->lmHead()));
        QCOMPARE(derived->tensors.size(), ck->tensors.size());
    }

    void exportRefusesOnlineTransforms()
    {
        // The demo has GQA: its o_proj smoothing stays online, which no weights file holds.
        auto ck = demoCheckpoint();
        QVERIFY(ck);
        QuantizeRequest req;
        req.checkpoint = ck;
        req.plan = uniformQuantPlan(quant::Method::Rtn, 4, 32);
        req.plan.activation.smoothAlpha = 0.5;
        req.plan.activation.hasTransform = true;
        req.calibration.textPath = qbtest::demoDir() + "/calib.txt";
        req.calibration.options = {4, 64, 0};
        auto r = quantizeModel(req);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QTemporaryDir dir;
        ExportRequest ex;
        ex.checkpoint = ck;
        ex.run.result = r->result;
        ex.target.out = dir.filePath("out.gguf").toStdString();
        ex.target.format = ExportFormat::Gguf;
        auto e = exportRun(ex);
        QVERIFY(!e.ok());
        QVERIFY2(e.error().message.find("o: smoothing") != std::string::npos, e.error().message.c_str());
        QVERIFY(!QFile::exists(dir.filePath("out.gguf")));
    }

    void smoothThenRotatePreservesTheFunction_data()
    {
        QTest::addColumn<int>("rotation");
        QTest::newRow("smooth + residual") << int(PlanRotation::Residual);
        QTest::newRow("smooth + QuaRot (o divisor then Hadamard)") << int(PlanRotation::Hadamard);
    }

    void smoothThenRotatePreservesTheFunction()
    {
        QFETCH(int, rotation);
        std::string err;
        auto m = qbtest::loadModelDir(qbtest::demoDir(), &err);
        QVERIFY2(m, err.c_str());
        const auto tokens = qbtest::goldenTokens();
        auto calib = sampleCalibrationWindows(tokens, {4, 64, 0});
        QVERIFY(calib.ok());
        const model::RowMatrix ref = logitsOf(*m, *calib);
        ActivationPlan plan;
        plan.smoothAlpha = 0.6;
        plan.rotate = PlanRotation(rotation);
        plan.seed = 5;
        ActivationSetupNotes notes;
        auto t = prepareActivationModel(m, plan, *calib, 4, nullptr, &notes);
        QVERIFY2(t.ok(), t.ok() ? "" : t.error().toString().c_str());
        const double d = relDiff(logitsOf(**t, *calib), ref);
        qInfo("%s: relative logit difference %.3g; online: %s", QTest::currentDataTag(), d, notes.online.c_str());
        QVERIFY2(d < 1e-4, qPrintable(QString::number(d)));
        QVERIFY(notes.lines.size() >= 2);
        QVERIFY(notes.online.find("o: smoothing") != std::string::npos);
        QCOMPARE(notes.online.find("Hadamard") != std::string::npos, PlanRotation(rotation) == PlanRotation::Hadamard);
    }

    void residualRotationExportReproducesTheRun_data()
    {
        QTest::addColumn<int>("format");
        QTest::newRow("safetensors") << int(ExportFormat::Safetensors);
        QTest::newRow("gguf") << int(ExportFormat::Gguf);
    }

    void residualRotationExportReproducesTheRun()
    {
        // A run rotated in the residual stream only (every rotation folded) exports as an
        // ordinary model: the file, evaluated on its own, scores the run's perplexity.
        QFETCH(int, format);
        auto ck = demoCheckpoint();
        QVERIFY(ck);
        QTemporaryDir dir;
        const std::string evalPath = qbtest::demoDir() + "/eval.txt";
        QuantizeRequest req;
        req.checkpoint = ck;
        req.plan = uniformQuantPlan(quant::Method::Rtn, 4, 32, true);
        req.plan.defaults.target = std::string("Q8_0");
        req.plan.defaults.bits.reset();
        req.plan.defaults.groupSize.reset();
        req.plan.defaults.sym.reset();
        req.plan.activation.rotate = PlanRotation::Residual;
        req.plan.activation.seed = 11;
        req.plan.activation.hasTransform = true;
        req.plan.embedType = "F32";
        req.plan.headType = "F32";
        req.calibration.textPath = qbtest::demoDir() + "/calib.txt";
        req.calibration.options = {4, 64, 0};
        req.evalTextPath = evalPath;
        req.evalOptions.ctx = 128;
        req.klDivergence = false;
        auto r = quantizeModel(req);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QVERIFY(r->result->onlineTransforms.empty());
        ExportRequest ex;
        ex.checkpoint = ck;
        ex.run.result = r->result;
        ex.target.format = ExportFormat(format);
        ex.target.out = dir.filePath(format == int(ExportFormat::Gguf) ? "m.gguf" : "m").toStdString();
        auto e = exportRun(ex);
        QVERIFY2(e.ok(), e.ok() ? "" : e.error().toString().c_str());
        auto exported = io::openCheckpoint(ex.target.out);
        QVERIFY2(exported.ok(), exported.ok() ? "" : exported.error().toString().c_str());
        EvaluateRequest ev;
        ev.checkpoint = std::make_shared<io::Checkpoint>(std::move(*exported));
        ev.reference = ck; // lends its tokenizer to the GGUF
        ev.textPath = evalPath;
        ev.options.ctx = 128;
        auto p = evaluateModel(ev);
        QVERIFY2(p.ok(), p.ok() ? "" : p.error().toString().c_str());
        const double run = r->perplexity->perplexity, file = p->perplexity.perplexity;
        qInfo("rotated Q8_0 run %.5f, exported %s %.5f (original %.5f)", run, QTest::currentDataTag(), file,
              p->kl->referencePerplexity);
        QVERIFY2(std::abs(file / run - 1) < 1e-4, qPrintable(QString("%1 vs %2").arg(file).arg(run)));
    }
};

QTEST_GUILESS_MAIN(TestActivationQuant)
#include "tst_activation_quant.moc"
