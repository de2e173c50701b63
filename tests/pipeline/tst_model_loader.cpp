// Model loading: demo model shapes, progress, cancel, NaN/Inf warnings, missing tensors,
// layer-at-a-time loading.

#include "model/forward.h"
#include "model_test_util.h"
#include "pipeline/model_loader.h"

#include <QDir>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <limits>

using namespace qb;

namespace {
// Copies a fixture directory, letting `patch` edit the safetensors bytes.
bool copyFixture(const std::string& from, const QString& to, const std::function<void(QByteArray&)>& patch)
{
    for (const char* f : {"config.json", "model.safetensors"}) {
        QFile in(QString::fromStdString(from) + "/" + f);
        if (!in.open(QIODevice::ReadOnly)) return false;
        QByteArray b = in.readAll();
        if (QByteArray(f) == "model.safetensors") patch(b);
        QFile out(to + "/" + f);
        if (!out.open(QIODevice::WriteOnly)) return false;
        out.write(b);
    }
    return true;
}

// Byte offset (in the file) of the first element of `tensor`.
qsizetype tensorOffset(const QByteArray& file, const char* tensor)
{
    quint64 n = 0;
    std::memcpy(&n, file.constData(), 8);
    const QJsonObject h = QJsonDocument::fromJson(file.mid(8, qsizetype(n))).object();
    return qsizetype(8 + n) + qsizetype(h.value(tensor).toObject().value("data_offsets").toArray().at(0).toInteger());
}
} // namespace

class TestModelLoader : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void demoModelLoadsWithProgress()
    {
        auto ck = io::openCheckpoint(qbtest::demoDir());
        QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
        const ModelConfig& c = ck->config;
        QCOMPARE(c.numHiddenLayers, 4);
        QCOMPARE(c.numKeyValueHeads, 2);
        QVERIFY(!c.tieWordEmbeddings);
        std::vector<Progress> seen;
        RunContext rc([&](const Progress& p) { seen.push_back(p); });
        std::vector<pipeline::LoadWarning> warnings;
        auto m = pipeline::loadModel(*ck, &rc, &warnings);
        QVERIFY2(m.ok(), m.ok() ? "" : m.error().toString().c_str());
        QVERIFY((*m)->validate().ok());
        QVERIFY(warnings.empty());
        QCOMPARE(rc.progress().stage, std::string("load"));
        QCOMPARE(rc.progress().done, rc.progress().total);
        QCOMPARE(rc.progress().total, qint64(3 + 4 * 9));
        QVERIFY(seen.size() >= 39);
        QCOMPARE((*m)->embedding().rows(), c.vocabSize);
    }

    void cancelDuringLoad()
    {
        auto ck = io::openCheckpoint(qbtest::demoDir());
        QVERIFY(ck.ok());
        RunContext rc([&](const Progress& p) {
            if (p.done == 5) rc.requestCancel();
        });
        auto m = pipeline::loadModel(*ck, &rc);
        QVERIFY(!m.ok());
        QCOMPARE(int(m.error().code), int(ErrorCode::Cancelled));
    }

    void skeletonThenLayerAtATime()
    {
        auto ck = io::openCheckpoint(qbtest::fixtureDir("qwen2_bias"));
        QVERIFY(ck.ok());
        pipeline::LoadOptions o;
        o.loadLayers = false;
        auto m = pipeline::loadModel(*ck, nullptr, nullptr, o);
        QVERIFY(m.ok());
        QVERIFY(!(*m)->validate().ok()); // layers missing
        for (int l = 0; l < (*m)->numLayers(); ++l) {
            auto w = pipeline::loadDecoderLayer(*ck, l);
            QVERIFY(w.ok());
            QCOMPARE((*w)->qBias.size(), Eigen::Index(32)); // Qwen2: q/k/v biases, no o bias
            QCOMPARE((*w)->oBias.size(), Eigen::Index(0));
            (*m)->setLayer(l, *w);
        }
        QVERIFY((*m)->validate().ok());
        QVERIFY(!pipeline::loadDecoderLayer(*ck, 2).ok());
    }

    void nonFiniteWeightIsAWarningNamingTheTensor()
    {
        QTemporaryDir dir;
        const char* name = "model.layers.1.mlp.up_proj.weight";
        QVERIFY(copyFixture(qbtest::fixtureDir("llama_gqa"), dir.path(), [&](QByteArray& b) {
            const qsizetype off = tensorOffset(b, name);
            const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
            std::memcpy(b.data() + off + 4 * 3, &nan, 4);
            std::memcpy(b.data() + off + 4 * 7, &inf, 4);
        }));
        auto ck = io::openCheckpoint(dir.path().toStdString());
        QVERIFY(ck.ok());
        std::vector<pipeline::LoadWarning> warnings;
        auto m = pipeline::loadModel(*ck, nullptr, &warnings);
        QVERIFY(m.ok());
        QCOMPARE(int(warnings.size()), 1);
        QCOMPARE(warnings[0].tensor, std::string(name));
        QCOMPARE(warnings[0].detail, std::string("1 NaN, 1 Inf of 1536 values"));
    }

    void wrongShapeIsAnErrorNamingTheTensor()
    {
        // A config whose intermediate_size disagrees with the stored tensors.
        QTemporaryDir dir;
        QVERIFY(copyFixture(qbtest::fixtureDir("llama_gqa"), dir.path(), [](QByteArray&) {}));
        QFile cfg(dir.path() + "/config.json");
        QVERIFY(cfg.open(QIODevice::ReadOnly));
        QByteArray text = cfg.readAll().replace("\"intermediate_size\": 48", "\"intermediate_size\": 40");
        cfg.close();
        QVERIFY(cfg.open(QIODevice::WriteOnly | QIODevice::Truncate));
        cfg.write(text);
        cfg.close();
        auto ck = io::openCheckpoint(dir.path().toStdString());
        if (!ck.ok()) return; // io may already refuse it, which is also fine
        auto m = pipeline::loadModel(*ck);
        QVERIFY(!m.ok());
        QVERIFY2(m.error().toString().find("mlp.") != std::string::npos, m.error().toString().c_str());
    }
};

QTEST_GUILESS_MAIN(TestModelLoader)
#include "tst_model_loader.moc"
