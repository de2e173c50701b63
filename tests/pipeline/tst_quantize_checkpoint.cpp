// Quantize checkpoints and resume (pipeline/quantize_checkpoint.h): a run stopped after layer k
// (k = 0, 1, 2 of 4) and resumed equals the uninterrupted run bit for bit (reports, codes, scales,
// zeros, CMPQ layouts, the fake-quantized model); a checkpoint of another model, plan,
// calibration or thread count is refused naming what differs; an existing checkpoint is not
// overwritten without asking; truncated and corrupt files are errors, not crashes; the workflow
// removes its checkpoint after success. The CLI's SIGKILL test: tests/app/tst_cli_resume.cpp.

#include "model/forward.h"
#include "pipeline/model_loader.h"
#include "pipeline/quantize_checkpoint.h"
#include "pipeline/quantize_job.h"
#include "pipeline/workflows.h"
#include "quant/cmpq.h"
#include "quant_test_models.h"

#include <QDir>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <cstring>
#include <filesystem>

using namespace qb;

namespace {

constexpr int kLayers = 4;

pipeline::ResolvedPlan resolvePlan(const char* json, const ModelConfig& c)
{
    auto p = pipeline::quantPlanFromText(json);
    if (!p.ok()) qFatal("%s", p.error().toString().c_str());
    auto r = pipeline::resolveQuantPlan(*p, c);
    if (!r.ok()) qFatal("%s", r.error().toString().c_str());
    return std::move(*r);
}

template <class M>
bool sameMatrix(const M& a, const M& b)
{
    // Empty matrices have null data, which memcmp must not see.
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           (a.size() == 0 || std::memcmp(a.data(), b.data(), std::size_t(a.size()) * sizeof(typename M::Scalar)) == 0);
}

template <class T>
bool sameVector(const std::vector<T>& a, const std::vector<T>& b)
{
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

bool sameDouble(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Every field of two results that an uninterrupted run fixes; timings are left out. Returns
// what differs, "" when nothing does.
std::string difference(const pipeline::QuantizeResult& a, const pipeline::QuantizeResult& b)
{
    if (a.tensors.size() != b.tensors.size()) return "tensor count";
    for (std::size_t i = 0; i < a.tensors.size(); ++i) {
        const pipeline::TensorReport &x = a.tensors[i], &y = b.tensors[i];
        if (x.name != y.name || x.layer != y.layer || x.linear != y.linear || x.skipped != y.skipped ||
            x.method != y.method || x.bits != y.bits || x.groupSize != y.groupSize || x.sym != y.sym ||
            x.actOrder != y.actOrder || x.target != y.target || !sameDouble(x.bitsPerWeight, y.bitsPerWeight) ||
            !sameDouble(x.relativeError, y.relativeError) || !sameDouble(x.proxyLoss, y.proxyLoss) ||
            !sameDouble(x.solverProxyLoss, y.solverProxyLoss) || x.dampingRetries != y.dampingRetries)
            return "report of " + x.name;
        if ((a.codes[i] == nullptr) != (b.codes[i] == nullptr)) return "codes present for " + x.name;
        if (!a.codes[i]) continue;
        const quant::QuantizedRows pu = a.codes[i]->unpack(), qu = b.codes[i]->unpack();
        const quant::QuantizedRows *p = &pu, *q = &qu;
        if (!sameMatrix(p->codes, q->codes) || !sameMatrix(p->scales, q->scales) || !sameMatrix(p->zeros, q->zeros) ||
            !sameMatrix(p->offsets, q->offsets) || p->groupIndex != q->groupIndex || p->container != q->container ||
            !sameMatrix(p->superScales, q->superScales) || p->bits != q->bits ||
            !sameDouble(p->proxyLoss, q->proxyLoss) || p->dampingRetries != q->dampingRetries)
            return "grid of " + x.name;
        if ((p->cmpq == nullptr) != (q->cmpq == nullptr)) return "cmpq presence of " + x.name;
        if (p->cmpq) {
            const quant::CmpqCodes &c = *p->cmpq, &d = *q->cmpq;
            if (!sameVector(c.channelBits, d.channelBits) || !sameVector(c.codebookOffset, d.codebookOffset) ||
                !sameVector(c.codebook, d.codebook) || !sameVector(c.keptChannels, d.keptChannels) ||
                !sameMatrix(c.keptValues, d.keptValues) || !sameVector(c.outlierIndex, d.outlierIndex) ||
                !sameVector(c.outlierValue, d.outlierValue) || !sameVector(c.channelScore, d.channelScore) ||
                c.levels != d.levels || !sameDouble(c.bits.total(), d.bits.total()) ||
                !sameDouble(c.targetBits, d.targetBits))
                return "cmpq layout of " + x.name;
        }
    }
    if (!sameDouble(a.bitsPerWeight, b.bitsPerWeight) || a.sizeBytes != b.sizeBytes) return "bits per weight/size";
    if (a.notes != b.notes || a.onlineTransforms != b.onlineTransforms) return "notes";
    if ((a.model == nullptr) != (b.model == nullptr)) return "model presence";
    if (a.model) {
        if (!sameMatrix(a.model->embedding(), b.model->embedding()) ||
            !sameMatrix(a.model->lmHead(), b.model->lmHead()))
            return "embedding/head";
        for (int l = 0; l < a.model->numLayers(); ++l) {
            const auto &u = *a.model->layer(l), &v = *b.model->layer(l);
            for (model::Linear lin : model::kAllLinears)
                if (!sameMatrix(u.weight(lin), v.weight(lin)))
                    return "model weight layer " + std::to_string(l) + " " + model::linearName(lin);
            if (!sameMatrix(u.inputNorm, v.inputNorm) || !sameMatrix(u.postNorm, v.postNorm))
                return "norms of layer " + std::to_string(l);
        }
    }
    return {};
}

struct Fixture {
    std::shared_ptr<model::Model> model = qbtest::syntheticModel(kLayers);
    pipeline::CalibrationSet calib = qbtest::syntheticCalibration(8, 16);
};

// A run that stops (cancel) right after layer `stopAfter` is done and checkpointed.
Result<pipeline::QuantizeResult> runStopping(const model::Model& m, const pipeline::ResolvedPlan& plan,
                                             const pipeline::CalibrationSet& calib, pipeline::QuantizeJobOptions o,
                                             int stopAfter)
{
    RunContext ctx;
    o.onLayerDone = [&](int layer, const std::vector<pipeline::TensorReport>&) {
        if (layer == stopAfter) ctx.requestCancel();
    };
    return pipeline::runQuantize(m, nullptr, plan, calib, o, &ctx);
}

int manifestDone(const std::string& dir)
{
    auto m = pipeline::readQuantizeCheckpointManifest(dir);
    return m.ok() && *m ? (*m)->done : -1;
}

} // namespace

class TestQuantizeCheckpoint : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase() { model::setNumThreads(1); }

    // Stopped after layer k and resumed: bit-identical to the uninterrupted run, for every grid
    // kind the job produces (GPTQ with groups and act-order, NeUQI, RTN with a skipped layer, CMPQ).
    void resumeIsBitIdentical_data()
    {
        QTest::addColumn<QString>("plan");
        QTest::addColumn<int>("stopAfter");
        QTest::addColumn<bool>("keepCodes");
        const char* gptq = R"({"default": {"method": "gptq", "bits": 3, "group_size": 16, "act_order": true}})";
        const char* neuqi = R"({"default": {"method": "neuqi", "bits": 4}})";
        const char* rtn = R"({"default": {"method": "rtn", "bits": 4, "group_size": 16}, )"
                          R"("rules": [{"match": "model.layers.1.*", "skip": true}]})";
        const char* cmpq = R"({"default": {"method": "cmpq", "bits": 5}})";
        for (int k : {0, 1, 2}) {
            const QByteArray s = QByteArray::number(k);
            QTest::newRow(("gptq, stop after layer " + s).constData()) << QString(gptq) << k << true;
            QTest::newRow(("neuqi, stop after layer " + s).constData()) << QString(neuqi) << k << true;
            QTest::newRow(("rtn skip layer 1, stop after layer " + s).constData()) << QString(rtn) << k << true;
            QTest::newRow(("cmpq, stop after layer " + s).constData()) << QString(cmpq) << k << true;
        }
        QTest::newRow("gptq without codes, stop after layer 1") << QString(gptq) << 1 << false;
        QTest::newRow("gptq, every layer done") << QString(gptq) << kLayers - 1 << true;
    }
    void resumeIsBitIdentical()
    {
        QFETCH(QString, plan);
        QFETCH(int, stopAfter);
        QFETCH(bool, keepCodes);
        Fixture f;
        const auto resolved = resolvePlan(plan.toUtf8().constData(), f.model->config());
        pipeline::QuantizeJobOptions o;
        o.batch = 3; // windows per forward call: 8 windows in chunks of 3, 3, 2
        o.keepCodes = keepCodes;
        auto reference = pipeline::runQuantize(*f.model, nullptr, resolved, f.calib, o);
        QVERIFY2(reference.ok(), reference.ok() ? "" : reference.error().toString().c_str());

        QTemporaryDir tmp;
        const std::string dir = tmp.filePath("ckpt").toStdString();
        o.checkpoint.dir = dir;
        auto stopped = runStopping(*f.model, resolved, f.calib, o, stopAfter);
        if (stopAfter < kLayers - 1) {
            QVERIFY(!stopped.ok());
            QCOMPARE(stopped.error().code, ErrorCode::Cancelled);
        } else {
            QVERIFY(stopped.ok()); // stopped after the last layer: the job is done, the checkpoint stays
        }
        QCOMPARE(manifestDone(dir), stopAfter + 1);
        // Only the newest hidden states are kept.
        const QStringList hidden = QDir(tmp.filePath("ckpt")).entryList({"hidden-*.bin"}, QDir::Files);
        QCOMPARE(hidden, QStringList{QStringLiteral("hidden-%1.bin").arg(stopAfter + 1)});

        o.checkpoint.resume = true;
        std::vector<int> seen;
        o.onLayerDone = [&](int layer, const std::vector<pipeline::TensorReport>&) { seen.push_back(layer); };
        auto resumed = pipeline::runQuantize(*f.model, nullptr, resolved, f.calib, o);
        QVERIFY2(resumed.ok(), resumed.ok() ? "" : resumed.error().toString().c_str());
        QCOMPARE(resumed->resumedLayers, stopAfter + 1);
        QCOMPARE(seen, (std::vector<int>{0, 1, 2, 3})); // taken layers are reported too
        const std::string diff = difference(*reference, *resumed);
        QVERIFY2(diff.empty(), diff.c_str());
        QCOMPARE(manifestDone(dir), kLayers); // complete; the workflow removes it (workflowRemoves...)
    }

    // A checkpoint of another model, plan, calibration or thread count is refused with a message
    // naming what differs; nothing is taken from it.
    void mismatchIsRefused_data()
    {
        QTest::addColumn<QString>("change");
        QTest::addColumn<QString>("message");
        QTest::newRow("other bits") << "plan" << "the plan";
        QTest::newRow("other calibration") << "calibration" << "the calibration";
        QTest::newRow("other model") << "model" << "the model";
        QTest::newRow("other threads") << "threads" << "the thread count (1 in the checkpoint, 2 now";
        QTest::newRow("other batch") << "batch" << "--batch (4 in the checkpoint, 2 now)";
    }
    void mismatchIsRefused()
    {
        QFETCH(QString, change);
        QFETCH(QString, message);
        Fixture f;
        const auto plan =
            resolvePlan(R"({"default": {"method": "gptq", "bits": 4, "group_size": 16}})", f.model->config());
        QTemporaryDir tmp;
        pipeline::QuantizeJobOptions o;
        o.batch = 4;
        o.checkpoint.dir = tmp.filePath("ckpt").toStdString();
        QVERIFY(!runStopping(*f.model, plan, f.calib, o, 1).ok());
        QCOMPARE(manifestDone(o.checkpoint.dir), 2);

        auto model = f.model;
        auto otherPlan = plan;
        auto calib = f.calib;
        if (change == "plan")
            otherPlan =
                resolvePlan(R"({"default": {"method": "gptq", "bits": 3, "group_size": 16}})", f.model->config());
        if (change == "calibration") calib = qbtest::syntheticCalibration(8, 16, 2);
        if (change == "model") model = qbtest::syntheticModel(kLayers, 8);
        if (change == "threads") o.threads = 2;
        if (change == "batch") o.batch = 2;
        o.checkpoint.resume = true;
        auto r = pipeline::runQuantize(*model, nullptr, otherPlan, calib, o);
        model::setNumThreads(1);
        QVERIFY(!r.ok());
        QCOMPARE(r.error().code, ErrorCode::InvalidArgument);
        QVERIFY2(QString::fromStdString(r.error().message).contains(message), r.error().message.c_str());
        QVERIFY2(r.error().message.find("from another run") != std::string::npos, r.error().message.c_str());
        QCOMPARE(manifestDone(o.checkpoint.dir), 2); // left as it was
    }

    // Without resume an existing checkpoint is refused (a forgotten --resume loses nothing), and
    // discarded only when asked; resume with none starts from the beginning.
    void existingCheckpointIsNotOverwritten()
    {
        Fixture f;
        const auto plan = resolvePlan(R"({"default": {"method": "rtn", "bits": 4}})", f.model->config());
        QTemporaryDir tmp;
        pipeline::QuantizeJobOptions o;
        o.checkpoint.dir = tmp.filePath("ckpt").toStdString();
        o.checkpoint.resume = true; // nothing there yet: a fresh run
        auto first = runStopping(*f.model, plan, f.calib, o, 0);
        QVERIFY(!first.ok());
        QCOMPARE(manifestDone(o.checkpoint.dir), 1);
        o.checkpoint.resume = false;
        auto refused = pipeline::runQuantize(*f.model, nullptr, plan, f.calib, o);
        QVERIFY(!refused.ok());
        QVERIFY2(refused.error().message.find("holds the checkpoint of an interrupted quantize run (1 of 4 layers "
                                              "done): resume it") != std::string::npos,
                 refused.error().message.c_str());
        QCOMPARE(manifestDone(o.checkpoint.dir), 1);
        o.checkpoint.overwrite = true;
        auto fresh = pipeline::runQuantize(*f.model, nullptr, plan, f.calib, o);
        QVERIFY(fresh.ok());
        QCOMPARE(fresh->resumedLayers, 0);
        QCOMPARE(manifestDone(o.checkpoint.dir), kLayers);
        QVERIFY(pipeline::removeQuantizeCheckpoint(o.checkpoint.dir).ok());
        QVERIFY(!QFileInfo::exists(tmp.filePath("ckpt")));
    }

    // A directory whose manifest.json is someone else's is never written into or cleaned up.
    void foreignManifestIsLeftAlone()
    {
        Fixture f;
        const auto plan = resolvePlan(R"({"default": {"method": "rtn", "bits": 4}})", f.model->config());
        QTemporaryDir tmp;
        const QByteArray foreign = R"({"name": "my project"})";
        QFile m(tmp.filePath("manifest.json"));
        QVERIFY(m.open(QIODevice::WriteOnly) && m.write(foreign) == foreign.size());
        m.close();
        pipeline::QuantizeJobOptions o;
        o.checkpoint.dir = tmp.path().toStdString();
        for (bool overwrite : {false, true}) {
            o.checkpoint.overwrite = overwrite;
            auto r = pipeline::runQuantize(*f.model, nullptr, plan, f.calib, o);
            QVERIFY(!r.ok());
            QVERIFY2(r.error().message.find("not a quantize checkpoint") != std::string::npos,
                     r.error().toString().c_str());
        }
        QVERIFY(pipeline::removeQuantizeCheckpoint(o.checkpoint.dir).error().code == ErrorCode::InvalidArgument);
        QVERIFY(m.open(QIODevice::ReadOnly));
        QCOMPARE(m.readAll(), foreign);
    }

    // A truncated layer file, a flipped byte in the hidden states, a missing layer file and a
    // broken manifest are clear errors naming the file.
    void damagedCheckpointIsAnError_data()
    {
        QTest::addColumn<QString>("file");
        QTest::addColumn<QString>("damage");
        QTest::addColumn<QString>("message");
        QTest::newRow("layer file truncated") << "layer-1.bin" << "truncate" << "truncated";
        QTest::newRow("layer file cut to 4 bytes") << "layer-0.bin" << "stub" << "truncated";
        QTest::newRow("hidden states truncated") << "hidden-3.bin" << "truncate" << "truncated";
        QTest::newRow("hidden states flipped byte") << "hidden-3.bin" << "flip" << "checksum";
        QTest::newRow("layer file flipped byte") << "layer-2.bin" << "flip" << "";
        QTest::newRow("layer file missing") << "layer-0.bin" << "remove" << "cannot open";
        QTest::newRow("manifest broken") << "manifest.json" << "truncate" << "";
    }
    void damagedCheckpointIsAnError()
    {
        QFETCH(QString, file);
        QFETCH(QString, damage);
        QFETCH(QString, message);
        Fixture f;
        const auto plan =
            resolvePlan(R"({"default": {"method": "gptq", "bits": 4, "group_size": 16}})", f.model->config());
        QTemporaryDir tmp;
        pipeline::QuantizeJobOptions o;
        o.checkpoint.dir = tmp.filePath("ckpt").toStdString();
        QVERIFY(!runStopping(*f.model, plan, f.calib, o, 2).ok());
        const QString path = tmp.filePath("ckpt/" + file);
        QFile fl(path);
        QVERIFY(fl.exists());
        if (damage == "truncate") {
            QVERIFY(fl.resize(fl.size() / 2));
        } else if (damage == "stub") {
            QVERIFY(fl.resize(4));
        } else if (damage == "remove") {
            QVERIFY(fl.remove());
        } else {
            QVERIFY(fl.open(QIODevice::ReadWrite));
            QVERIFY(fl.seek(fl.size() / 2 + 3));
            char c = 0;
            QVERIFY(fl.getChar(&c));
            QVERIFY(fl.seek(fl.size() / 2 + 3));
            QVERIFY(fl.putChar(char(c ^ 0x10)));
            fl.close();
        }
        o.checkpoint.resume = true;
        auto r = pipeline::runQuantize(*f.model, nullptr, plan, f.calib, o);
        QVERIFY(!r.ok());
        const QString text = QString::fromStdString(r.error().toString());
        qInfo("%s", qPrintable(text));
        QVERIFY2(text.contains(file), qPrintable(text));
        if (!message.isEmpty()) QVERIFY2(text.contains(message), qPrintable(text));
    }

    // The workflow on the demo model (real files: the model fingerprint reads their sizes and
    // mtimes): stopped after layer 1, resumed to the same result, the checkpoint gone after success.
    void workflowResumesAndRemovesCheckpoint()
    {
        const std::string demoDir = QB_DEMO_DIR;
        auto ck = io::openCheckpoint(demoDir);
        QVERIFY(ck.ok());
        pipeline::QuantizeRequest req;
        req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
        auto plan = pipeline::quantPlanFromText(R"({"default": {"method": "gptq", "bits": 4, "group_size": 32}})");
        QVERIFY(plan.ok());
        req.plan = *plan;
        req.calibration.textPath = demoDir + "/calib.txt";
        req.calibration.options = {8, 64, 0};
        req.options.threads = 1;
        req.checkMemory = false;
        auto reference = pipeline::quantizeModel(req);
        QVERIFY2(reference.ok(), reference.ok() ? "" : reference.error().toString().c_str());

        QTemporaryDir tmp;
        req.options.checkpoint.dir = tmp.filePath("ckpt").toStdString();
        RunContext ctx;
        req.options.onLayerDone = [&](int layer, const std::vector<pipeline::TensorReport>&) {
            if (layer == 1) ctx.requestCancel();
        };
        auto stopped = pipeline::quantizeModel(req, &ctx);
        QVERIFY(!stopped.ok());
        QCOMPARE(stopped.error().code, ErrorCode::Cancelled);
        QCOMPARE(manifestDone(req.options.checkpoint.dir), 2);
        req.options.onLayerDone = nullptr;
        req.options.checkpoint.resume = true;
        auto resumed = pipeline::quantizeModel(req);
        QVERIFY2(resumed.ok(), resumed.ok() ? "" : resumed.error().toString().c_str());
        QCOMPARE(resumed->result->resumedLayers, 2);
        const std::string diff = difference(*reference->result, *resumed->result);
        QVERIFY2(diff.empty(), diff.c_str());
        QVERIFY(!QFileInfo::exists(tmp.filePath("ckpt")));
    }
};

QTEST_GUILESS_MAIN(TestQuantizeCheckpoint)
#include "tst_quantize_checkpoint.moc"
