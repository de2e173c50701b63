// Distillation job (pipeline/distill.h) on the bundled demo model quantized with NeUQI at W2 g64:
// the KL to the teacher falls over the calibration windows (and the held-out perplexity with it),
// cancel stops between steps with the inputs untouched and a resume reaches the uninterrupted
// run's result, GPTQ-storable parameters stay storable (f16 scales, integer zeros in range) and
// the distilled weights are exactly the codes' dequantisation, the schedule, and bad inputs; the
// window's workflow (distillRun: a finished run into a new result, scored, the run untouched) and
// its refusals before any work (checkDistillable).

#include "base/dtype.h"
#include "model/forward.h"
#include "model_test_util.h"
#include "pipeline/calibration.h"
#include "pipeline/distill.h"
#include "pipeline/perplexity_job.h"
#include "pipeline/quantize_job.h"
#include "pipeline/workflows.h"
#include "quant/method_traits.h"

#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <memory>

using namespace qb;

namespace {

constexpr int kCalibWindows = 16; // 16 x 128 tokens, as tst_quantize_job
constexpr int kEvalWindows = 32;

struct Demo {
    std::shared_ptr<model::Model> model;
    io::Tokenizer tok;
    pipeline::CalibrationSet calib;
    eval::TokenWindows windows;
};

pipeline::QuantizeResult quantize(const model::Model& m, const pipeline::CalibrationSet& calib, const char* json)
{
    auto plan = pipeline::quantPlanFromText(json);
    if (!plan.ok()) qFatal("%s", plan.error().toString().c_str());
    auto resolved = pipeline::resolveQuantPlan(*plan, m.config());
    if (!resolved.ok()) qFatal("%s", resolved.error().toString().c_str());
    auto r = pipeline::runQuantize(m, nullptr, *resolved, calib);
    if (!r.ok()) qFatal("%s", r.error().toString().c_str());
    return std::move(*r);
}

constexpr const char* kNeuqiW2 = R"({"default": {"method": "neuqi", "bits": 2, "group_size": 64}})";
constexpr const char* kNeuqiW2Gptq =
    R"({"default": {"method": "neuqi", "bits": 2, "group_size": 64, "target": "gptq"}})";

} // namespace

class TestDistill : public QObject {
    Q_OBJECT
    std::unique_ptr<Demo> m_demo;
    std::unique_ptr<pipeline::QuantizeResult> m_w2;

    Demo* demo()
    {
        if (m_demo) return m_demo.get();
        auto ck = io::openCheckpoint(qbtest::demoDir());
        auto tok = io::Tokenizer::fromFile(qbtest::demoDir() + "/tokenizer.json");
        auto calibText = pipeline::readTextFile(qbtest::demoDir() + "/calib.txt");
        auto evalText = pipeline::readTextFile(qbtest::demoDir() + "/eval.txt");
        if (!ck.ok() || !tok.ok() || !calibText.ok() || !evalText.ok()) return nullptr;
        auto m = pipeline::loadModel(*ck);
        auto calib = pipeline::buildCalibrationSet(*tok, *calibText, {kCalibWindows, 128, 0});
        auto windows = eval::makeWindows(tok->encode(*evalText, true), 128);
        if (!m.ok() || !calib.ok() || !windows.ok()) return nullptr;
        if (windows->count > kEvalWindows) {
            windows->count = kEvalWindows;
            windows->ids.resize(std::size_t(kEvalWindows) * 128);
        }
        m_demo.reset(new Demo{std::move(*m), std::move(*tok), std::move(*calib), std::move(*windows)});
        return m_demo.get();
    }
    const pipeline::QuantizeResult& w2()
    {
        if (!m_w2) m_w2 = std::make_unique<pipeline::QuantizeResult>(quantize(*demo()->model, demo()->calib, kNeuqiW2));
        return *m_w2;
    }
    double perplexity(const model::Model& m)
    {
        auto r = eval::evaluatePerplexity(m, demo()->windows, {eval::ScoreMode::All, 16});
        return r.ok() ? r->perplexity : NAN;
    }

private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }

    void learningRateSchedule()
    {
        pipeline::DistillOptions o;
        o.lr = 1e-3;
        o.warmup = 0.1;
        QCOMPARE(pipeline::distillLearningRate(o, 0, 100), 0.0); // HF: warm-up starts at 0
        QVERIFY(std::abs(pipeline::distillLearningRate(o, 5, 100) - 5e-4) < 1e-12);
        QVERIFY(std::abs(pipeline::distillLearningRate(o, 10, 100) - 1e-3) < 1e-12);
        QVERIFY(std::abs(pipeline::distillLearningRate(o, 55, 100) - 5e-4) < 1e-12); // half-way down
        QVERIFY(pipeline::distillLearningRate(o, 99, 100) < 1e-5);
        o.warmup = 0;
        QCOMPARE(pipeline::distillLearningRate(o, 0, 10), 1e-3);
    }

    // The default loss (KL to the FP teacher) falls, and the held-out perplexity with it.
    void lossDecreasesOnDemoW2()
    {
        if (!demo()) QSKIP("demo model not available");
        const auto& q = w2();
        pipeline::DistillOptions o;
        o.steps = 48;
        o.batch = 2;
        o.lr = 1e-3;
        std::vector<double> seen;
        o.onStep = [&](const pipeline::DistillStepReport& r) { seen.push_back(r.loss); };
        RunContext ctx;
        auto r = pipeline::runDistill(*demo()->model, q, demo()->calib, o, &ctx);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QCOMPARE(int(seen.size()), 48);
        QCOMPARE(r->stepLoss.size(), seen.size());
        QCOMPARE(r->trainedTensors, 28);
        QVERIFY(r->frozen.empty());
        QCOMPARE(ctx.progress().done, std::int64_t(48));
        const double f32 = perplexity(*demo()->model), before = perplexity(*q.model), after = perplexity(*r->model);
        qInfo("NeUQI W2 g64 distill 48 x 2 windows: KL %.4f -> %.4f, ppl %.3f -> %.3f (F32 %.3f), %.2f s",
              r->lossBefore, r->lossAfter, before, after, f32, r->seconds);
        QVERIFY(r->lossBefore > 0);
        QVERIFY2(r->lossAfter < 0.9 * r->lossBefore, "distillation should cut the KL by at least 10 %");
        QVERIFY(after < before);
        // The quantize result is untouched: its model still gives the old perplexity.
        QCOMPARE(perplexity(*q.model), before);
        // Codes frozen; the distilled weights are exactly the codes under the new parameters.
        for (std::size_t i = 0; i < q.tensors.size(); ++i) {
            QCOMPARE(r->codes[i]->codes(), q.codes[i]->codes());
            const auto& t = q.tensors[i];
            const auto deq = r->codes[i]->values();
            QVERIFY(deq == r->model->layer(t.layer)->weight(t.linear));
        }
    }

    void hiddenMseLossDecreases()
    {
        if (!demo()) QSKIP("demo model not available");
        pipeline::DistillOptions o;
        o.steps = 24;
        o.batch = 2;
        o.lr = 1e-3;
        o.loss = model::DistillLoss::HiddenMse;
        o.normGains = true;
        auto r = pipeline::runDistill(*demo()->model, w2(), demo()->calib, o);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        qInfo("hidden MSE + gains: %.5f -> %.5f", r->lossBefore, r->lossAfter);
        QVERIFY(r->lossAfter < r->lossBefore);
        QVERIFY(r->model->finalNorm() != w2().model->finalNorm()); // the gains moved
    }

    // Cancel between steps: Cancelled, the state holds the steps done; a resume finishes with the
    // uninterrupted run's result.
    void cancelAndResume()
    {
        if (!demo()) QSKIP("demo model not available");
        pipeline::DistillOptions o;
        o.steps = 8;
        o.batch = 1;
        o.lr = 1e-3;
        auto full = pipeline::runDistill(*demo()->model, w2(), demo()->calib, o);
        QVERIFY(full.ok());

        RunContext ctx;
        pipeline::DistillState state;
        pipeline::DistillOptions oc = o;
        oc.onStep = [&](const pipeline::DistillStepReport& r) {
            if (r.step == 2) ctx.requestCancel();
        };
        auto cancelled = pipeline::runDistill(*demo()->model, w2(), demo()->calib, oc, &ctx, &state);
        QVERIFY(!cancelled.ok());
        QCOMPARE(cancelled.error().code, ErrorCode::Cancelled);
        QCOMPARE(state.step, 3);
        QCOMPARE(state.losses.size(), std::size_t(3));

        auto resumed = pipeline::runDistill(*demo()->model, w2(), demo()->calib, o, nullptr, &state);
        QVERIFY2(resumed.ok(), resumed.ok() ? "" : resumed.error().toString().c_str());
        QCOMPARE(state.step, 8);
        QCOMPARE(resumed->stepLoss.size(), std::size_t(8));
        QCOMPARE(resumed->lossBefore, full->lossBefore);
        QVERIFY(std::abs(resumed->lossAfter - full->lossAfter) <= 1e-6 * full->lossAfter);
        for (std::size_t i = 0; i < full->stepLoss.size(); ++i)
            QVERIFY(std::abs(resumed->stepLoss[i] - full->stepLoss[i]) <= 1e-6 * full->stepLoss[i]);

        // A cancel before the first step.
        RunContext early;
        early.requestCancel();
        auto none = pipeline::runDistill(*demo()->model, w2(), demo()->calib, o, &early);
        QVERIFY(!none.ok());
        QCOMPARE(none.error().code, ErrorCode::Cancelled);
    }

    // GPTQ target: every step's parameters are what a GPTQ checkpoint stores.
    void gptqTargetStaysStorable()
    {
        if (!demo()) QSKIP("demo model not available");
        const auto q = quantize(*demo()->model, demo()->calib, kNeuqiW2Gptq);
        pipeline::DistillOptions o;
        o.steps = 16;
        o.batch = 2;
        o.lr = 2e-3;
        auto r = pipeline::runDistill(*demo()->model, q, demo()->calib, o);
        QVERIFY(r.ok());
        QVERIFY(r->lossAfter < r->lossBefore);
        int changed = 0;
        for (std::size_t i = 0; i < q.tensors.size(); ++i) {
            const quant::QuantizedRows c = r->codes[i]->unpack();
            for (Eigen::Index j = 0; j < c.scales.size(); ++j) {
                const double s = c.scales.data()[j], z = c.zeros.data()[j];
                QCOMPARE(double(f16ToF32(f32ToF16(float(s)))), s);
                QVERIFY(s > 0);
                QCOMPARE(std::nearbyint(z), z);
                QVERIFY(z >= -3 && z <= -1);
                changed += s != q.codes[i]->params().scales.data()[j];
            }
            const auto& t = q.tensors[i];
            QVERIFY(quant::dequantizeRowsUniform(c) == r->model->layer(t.layer)->weight(t.linear));
        }
        QVERIFY(changed > 0);
        qInfo("gptq target: %d scales moved; KL %.4f -> %.4f", changed, r->lossBefore, r->lossAfter);
    }

    // A GGUF legacy block with a min (Q4_1): f16 scale and f16 min train, the block's integer zero
    // stays; the weights are the codes' dequantisation under the stored values.
    void ggufLegacyTargetStaysStorable()
    {
        if (!demo()) QSKIP("demo model not available");
        const auto q = quantize(*demo()->model, demo()->calib, R"({"default": {"method": "neuqi", "target": "Q4_1"}})");
        pipeline::DistillOptions o;
        o.steps = 8;
        o.batch = 2;
        o.lr = 2e-5; // 4-bit scales are small: Adam's steps are about lr in absolute terms
        auto r = pipeline::runDistill(*demo()->model, q, demo()->calib, o);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        qInfo("Q4_1: KL %.5f -> %.5f", r->lossBefore, r->lossAfter);
        QCOMPARE(r->trainedTensors, 28);
        QVERIFY(r->lossAfter < r->lossBefore);
        int scalesMoved = 0, minsMoved = 0;
        for (std::size_t i = 0; i < q.tensors.size(); ++i) {
            const quant::QuantizedRows c = r->codes[i]->unpack();
            const quant::QuantizedRows c0 = q.codes[i]->unpack();
            QCOMPARE(c.container, std::string("Q4_1"));
            QVERIFY(c.zeros == c0.zeros);
            for (Eigen::Index j = 0; j < c.scales.size(); ++j) {
                const double s = c.scales.data()[j], b = c.offsets.data()[j];
                QCOMPARE(double(f16ToF32(f32ToF16(float(s)))), s);
                QCOMPARE(double(f16ToF32(f32ToF16(float(b)))), b);
                scalesMoved += s != c0.scales.data()[j];
                minsMoved += b != c0.offsets.data()[j];
            }
            const auto& t = q.tensors[i];
            QVERIFY(quant::dequantizeRowsUniform(c) == r->model->layer(t.layer)->weight(t.linear));
        }
        QVERIFY(scalesMoved > 0 && minsMoved > 0);
    }

    // What the window refuses before any work, with the core's reasons.
    void checkDistillableRefusals()
    {
        if (!demo()) QSKIP("demo model not available");
        QVERIFY(pipeline::checkDistillable(w2()).ok());
        const pipeline::DistillScope scope = pipeline::distillScope(w2());
        QCOMPARE(scope.trained, 28);
        QVERIFY(scope.frozen.empty());

        pipeline::QuantizeResult act = w2();
        act.plan.activation.smoothAlpha = 0.5; // a weight-and-activation plan
        auto s = pipeline::checkDistillable(act);
        QVERIFY(!s.ok());
        QCOMPARE(s.error().code, ErrorCode::Unsupported);
        QVERIFY2(s.error().message.find("weight-and-activation") != std::string::npos, s.error().message.c_str());
        QVERIFY(!pipeline::runDistill(*demo()->model, act, demo()->calib).ok()); // runDistill refuses it too

        pipeline::QuantizeResult noModel = w2();
        noModel.model.reset();
        s = pipeline::checkDistillable(noModel);
        QVERIFY(!s.ok() && s.error().message.find("keepModel") != std::string::npos);

        // Nothing trainable (every tensor's parameters are codebooks): refused, the tensors named.
        pipeline::QuantizeResult codebooks = w2();
        for (auto& c : codebooks.codes) {
            quant::QuantizedRows u = c->unpack();
            u.scales.resize(0, 0);
            c = quant::storeGrid(u);
        }
        QCOMPARE(pipeline::distillScope(codebooks).trained, 0);
        QCOMPARE(pipeline::distillScope(codebooks).frozen.size(), std::size_t(28));
        s = pipeline::checkDistillable(codebooks);
        QVERIFY(!s.ok());
        QVERIFY2(s.error().message.find("nothing to train") != std::string::npos &&
                     s.error().message.find("and 27 more") != std::string::npos,
                 s.error().message.c_str());
    }

    // distillRun: the run stays as it was; the new result has the distilled parameters (codes
    // unchanged) and is scored, before and after; cancel leaves the state for a resume.
    void distillRunWorkflow()
    {
        if (!demo()) QSKIP("demo model not available");
        QTemporaryDir dir;
        QFile in(QString::fromStdString(qbtest::demoDir() + "/eval.txt"));
        QFile out(dir.filePath(QStringLiteral("eval.txt")));
        QVERIFY(in.open(QIODevice::ReadOnly) && out.open(QIODevice::WriteOnly));
        QVERIFY(out.write(in.read(12000)) > 0);
        out.close();
        auto ck = io::openCheckpoint(qbtest::demoDir());
        QVERIFY(ck.ok());

        auto run = std::make_shared<const pipeline::QuantizeResult>(w2());
        const quant::MatrixXdR scales0 = run->codes[0]->params().scales;
        const model::RowMatrix weight0 = run->model->layer(0)->weight(model::Linear::Q);
        pipeline::DistillRunRequest req;
        req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
        req.run = run;
        req.calibration = std::make_shared<const pipeline::CalibrationSet>(demo()->calib);
        req.base = demo()->model;
        req.options.steps = 6;
        req.options.lr = 2e-3;
        req.evalTextPath = dir.filePath(QStringLiteral("eval.txt")).toStdString();
        req.evalOptions.ctx = 128;
        req.evaluateBefore = true;
        // The pre-flight: time and the memory it adds; refused before any work when it does not fit.
        auto pre = pipeline::preflightDistillRequest(req);
        QVERIFY2(pre.ok(), pre.ok() ? "" : pre.error().toString().c_str());
        QVERIFY(pre->seconds > 0 && pre->peakBytes > 0);
        req.memoryLimitBytes = pre->peakBytes - 1;
        auto tooLarge = pipeline::distillRun(req);
        QVERIFY(!tooLarge.ok());
        QCOMPARE(tooLarge.error().code, ErrorCode::OutOfMemory);
        QVERIFY2(tooLarge.error().message.rfind("distill: ", 0) == 0, tooLarge.error().message.c_str());
        req.memoryLimitBytes = 0;
        int steps = 0;
        req.options.onStep = [&](const pipeline::DistillStepReport& r) {
            QCOMPARE(r.step, steps);
            ++steps;
        };
        auto d = pipeline::distillRun(req);
        QVERIFY2(d.ok(), d.ok() ? "" : d.error().toString().c_str());
        QCOMPARE(steps, 6);
        QCOMPARE(d->distill.stepLoss.size(), std::size_t(6));
        QCOMPARE(d->distill.trainedTensors, 28);
        QVERIFY(d->distill.lossAfter < d->distill.lossBefore);
        QVERIFY(d->perplexity && d->perplexityBefore && d->kl && d->klBefore);
        qInfo("distillRun: loss %.4f -> %.4f, perplexity %.3f -> %.3f, KL %.4f -> %.4f", d->distill.lossBefore,
              d->distill.lossAfter, d->perplexityBefore->perplexity, d->perplexity->perplexity, d->klBefore->mean,
              d->kl->mean);
        QVERIFY(d->kl->mean < d->klBefore->mean);
        QVERIFY(d->result != run && d->result->model != run->model);
        QVERIFY(run->codes[0]->params().scales == scales0);
        QVERIFY(run->model->layer(0)->weight(model::Linear::Q) == weight0);
        QVERIFY(d->result->codes[0]->params().scales != scales0);
        QVERIFY(d->result->codes[0]->codes() == run->codes[0]->codes());
        QCOMPARE(d->result->tensors.size(), run->tensors.size());

        // Cancelled after two steps: Cancelled, the run untouched, the state at step 2.
        RunContext ctx;
        pipeline::DistillState state;
        req.state = &state;
        req.options.onStep = [&](const pipeline::DistillStepReport& r) {
            if (r.step == 1) ctx.requestCancel();
        };
        auto c = pipeline::distillRun(req, &ctx);
        QVERIFY(!c.ok());
        QCOMPARE(c.error().code, ErrorCode::Cancelled);
        QCOMPARE(state.step, 2);
        QVERIFY(run->codes[0]->params().scales == scales0);
        req.options.onStep = nullptr;
        req.evalTextPath.reset();
        auto resumed = pipeline::distillRun(req);
        QVERIFY(resumed.ok());
        QCOMPARE(state.step, 6);
        QVERIFY(std::abs(resumed->distill.lossAfter - d->distill.lossAfter) <= 1e-6 * d->distill.lossAfter);

        // No calibration windows (a run restored from a project): refused before any work.
        req.calibration.reset();
        auto none = pipeline::distillRun(req);
        QVERIFY(!none.ok() && none.error().message.find("calibration windows") != std::string::npos);
    }

    void badInputsAreErrors()
    {
        if (!demo()) QSKIP("demo model not available");
        pipeline::QuantizeResult noCodes = w2();
        noCodes.codes.clear();
        QVERIFY(!pipeline::runDistill(*demo()->model, noCodes, demo()->calib).ok());
        pipeline::QuantizeResult noModel = w2();
        noModel.model.reset();
        QVERIFY(!pipeline::runDistill(*demo()->model, noModel, demo()->calib).ok());
        pipeline::DistillOptions o;
        o.lr = 0;
        QVERIFY(!pipeline::runDistill(*demo()->model, w2(), demo()->calib, o).ok());
        pipeline::CalibrationSet empty;
        QVERIFY(!pipeline::runDistill(*demo()->model, w2(), empty).ok());
        // A state from another run is refused, not misapplied.
        pipeline::DistillState state;
        state.step = 2;
        state.steps = 5;
        state.tensors.resize(3);
        o.lr = 1e-3;
        o.steps = 5;
        auto r = pipeline::runDistill(*demo()->model, w2(), demo()->calib, o, nullptr, &state);
        QVERIFY(!r.ok());
        QCOMPARE(r.error().code, ErrorCode::InvalidArgument);
    }
};

QTEST_GUILESS_MAIN(TestDistill)
#include "tst_distill.moc"
