// Forward pass against torch references: the demo model's golden logits, and tiny fixtures for
// GQA, Qwen2 biases (tied embeddings) and llama3 rope_scaling (+ Llama attention/mlp biases,
// head_dim != hidden/heads). Also: layer-at-a-time == whole pass, batch independence, taps.

#include "model/forward.h"
#include "model_test_util.h"

#include <QTest>

#include <array>
#include <cmath>

using namespace qb;
using namespace qb::model;

namespace {
// Golden logits are float64 torch; F32 C++ must agree to this (absolute, logits are O(10)).
constexpr double kLogitTolerance = 1e-4;
constexpr double kFixtureTolerance = 2e-5;

double maxAbsDiff(const RowMatrix& a, const std::vector<double>& b)
{
    double m = 0;
    for (Eigen::Index i = 0; i < a.size(); ++i)
        m = std::max(m, std::abs(double(a.data()[i]) - b[std::size_t(i)]));
    return m;
}
} // namespace

class TestForward : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { setNumThreads(2); }

    void demoGoldenLogits()
    {
        std::string err;
        auto m = qbtest::loadModelDir(qbtest::demoDir(), &err);
        QVERIFY2(m, err.c_str());
        QVERIFY(m->validate().ok());
        const auto tokens = qbtest::goldenTokens();
        const auto golden = qbtest::readRaw<float>(qbtest::demoDir() + "/golden/logits_window0.f32");
        const QJsonObject g = qbtest::goldenJson();
        const int ctx = g.value("ctx").toInt();
        QCOMPARE(ctx, 128);
        QVERIFY(int(tokens.size()) >= ctx);
        QCOMPARE(golden.size(), std::size_t(ctx) * std::size_t(m->config().vocabSize));
        Workspace ws;
        auto logits = forwardLogits(*m, std::span(tokens.data(), std::size_t(ctx)), ctx, ws);
        QVERIFY(logits.ok());
        const std::vector<double> ref(golden.begin(), golden.end());
        const double diff = maxAbsDiff(*logits, ref);
        qInfo("demo window 0: max |logit - golden| = %.3g", diff);
        QVERIFY2(diff < kLogitTolerance, qPrintable(QString::number(diff)));
    }

    void fixtures_data()
    {
        QTest::addColumn<QString>("name");
        QTest::newRow("GQA llama (4 heads, 2 kv)") << "llama_gqa";
        QTest::newRow("Qwen2 q/k/v biases, tied, theta 1e6, 1 kv head") << "qwen2_bias";
        QTest::newRow("llama3 rope_scaling, head_dim 16 != 32/4, attention+mlp bias") << "llama3_rope";
    }
    void fixtures()
    {
        QFETCH(QString, name);
        const std::string dir = qbtest::fixtureDir(name.toStdString());
        std::string err;
        auto m = qbtest::loadModelDir(dir, &err);
        QVERIFY2(m, err.c_str());
        const QJsonObject e = qbtest::readJson(dir + "/expected.json");
        const int T = e.value("seq_len").toInt();
        std::vector<std::int32_t> ids;
        for (const auto v : e.value("ids").toArray())
            ids.push_back(std::int32_t(v.toInt()));
        std::vector<double> ref;
        for (const auto v : e.value("logits").toArray())
            ref.push_back(v.toDouble());
        Workspace ws;
        auto logits = forwardLogits(*m, ids, T, ws);
        QVERIFY(logits.ok());
        QCOMPARE(std::size_t(logits->size()), ref.size());
        const double diff = maxAbsDiff(*logits, ref);
        qInfo("%s: max |logit - torch| = %.3g", qPrintable(name), diff);
        QVERIFY2(diff < kFixtureTolerance, qPrintable(QString::number(diff)));
    }

    void layerAtATimeMatchesWholePassAndTapsSeeEveryLinear()
    {
        auto m = qbtest::loadModelDir(qbtest::fixtureDir("llama_gqa"));
        QVERIFY(m);
        const int T = 16;
        std::vector<std::int32_t> ids(3 * T);
        for (std::size_t i = 0; i < ids.size(); ++i)
            ids[i] = std::int32_t((i * 7 + 3) % 64);
        Workspace ws;
        int calls = 0;
        bool shapesOk = true;
        const ModelConfig& c = m->config();
        ActivationTap tap = [&](int layer, LinearKind k, const Eigen::Ref<const RowMatrix>& x) {
            ++calls;
            const Eigen::Index want = k == LinearKind::O      ? c.numAttentionHeads * c.headDim
                                      : k == LinearKind::Down ? c.intermediateSize
                                                              : c.hiddenSize;
            shapesOk = shapesOk && x.rows() == Eigen::Index(ids.size()) && x.cols() == want && layer >= 0 &&
                       layer < m->numLayers();
        };
        auto whole = forwardLogits(*m, ids, T, ws, tap);
        QVERIFY(whole.ok());
        QCOMPARE(calls, 4 * m->numLayers());
        QVERIFY(shapesOk);

        RowMatrix hidden;
        QVERIFY(embed(*m, ids, hidden).ok());
        for (int l = 0; l < m->numLayers(); ++l)
            QVERIFY(runLayer(*m, l, hidden, T, ws).ok());
        RowMatrix out;
        logits(*m, hidden, out, ws);
        QCOMPARE((out - *whole).cwiseAbs().maxCoeff(), 0.0f);

        // A window's result does not depend on its batch neighbours.
        auto single = forwardLogits(*m, std::span(ids.data() + T, std::size_t(T)), T, ws);
        QVERIFY(single.ok());
        QVERIFY((*single - whole->middleRows(T, T)).cwiseAbs().maxCoeff() < 1e-5f);

        // logProbs == log_softmax(logits) at the targets.
        std::vector<float> lp;
        QVERIFY(logProbs(*m, hidden, T, ids, T / 2, lp, ws).ok());
        QCOMPARE(lp.size(), std::size_t(3 * (T - 1 - T / 2)));
        for (int b = 0; b < 3; ++b)
            for (int t = T / 2; t < T - 1; ++t) {
                const auto row = out.row(b * T + t);
                const double mx = row.maxCoeff();
                const double lse = mx + std::log((row.array() - float(mx)).exp().cast<double>().sum());
                const double want = row(ids[std::size_t(b * T + t + 1)]) - lse;
                QVERIFY(std::abs(lp[std::size_t(b * (T - 1 - T / 2) + t - T / 2)] - want) < 1e-5);
            }
    }

    // runLayerBlock stopped at a tap sees the same input as a full runLayer, leaves hidden as it
    // was, and Attention + Mlp (or a kept O/down input + addBlockOutput) is runLayer; also on a
    // block of rows of a larger matrix (the quantize job's chunks, no copy).
    void partialLayerRunsMatchFullRuns_data()
    {
        QTest::addColumn<QString>("name");
        QTest::newRow("GQA llama") << "llama_gqa";
        QTest::newRow("Qwen2 q/k/v biases") << "qwen2_bias";
        QTest::newRow("llama3 rope, attention/mlp biases") << "llama3_rope";
    }
    void partialLayerRunsMatchFullRuns()
    {
        QFETCH(QString, name);
        auto m = qbtest::loadModelDir(qbtest::fixtureDir(name.toStdString()));
        QVERIFY(m);
        const ModelConfig& c = m->config();
        const int T = 6, B = 3;
        std::vector<std::int32_t> ids(std::size_t(B * T));
        for (std::size_t i = 0; i < ids.size(); ++i)
            ids[i] = std::int32_t((i * 7 + 3) % std::size_t(c.vocabSize));
        Workspace ws;
        RowMatrix input;
        QVERIFY(embed(*m, ids, input).ok());
        QVERIFY(runLayer(*m, 0, input, T, ws).ok()); // layer 1's input: not just embeddings
        const DecoderLayerWeights& w = *m->layer(1);
        std::array<RowMatrix, 4> full; // inputs by LinearKind of a full run
        auto capture = [](std::array<RowMatrix, 4>& into) {
            return [&into](int, LinearKind k, const Eigen::Ref<const RowMatrix>& x) { into[std::size_t(k)] = x; };
        };
        RowMatrix out = input;
        QVERIFY(runLayer(c, w, 1, out, T, ws, capture(full)).ok());
        auto close = [](const RowMatrix& a, const RowMatrix& b) {
            return a.rows() == b.rows() && a.cols() == b.cols() &&
                   (a - b).cwiseAbs().maxCoeff() <= 1e-6f * std::max(1.0f, b.cwiseAbs().maxCoeff());
        };

        // Attention block stopped at q/k/v and at o: taps as the full run, hidden untouched.
        for (LinearKind stop : {LinearKind::Qkv, LinearKind::O}) {
            std::array<RowMatrix, 4> part;
            RowMatrix h = input;
            QVERIFY(runLayerBlock(c, w, 1, LayerBlock::Attention, h, T, ws, capture(part), stop).ok());
            QVERIFY(h == input);
            QVERIFY(close(part[std::size_t(stop)], full[std::size_t(stop)]));
            QCOMPARE(part[std::size_t(LinearKind::GateUp)].size(), Eigen::Index(0));
        }
        // The kept o input + addBlockOutput == the whole attention block.
        RowMatrix afterAttn = input, viaKept = input;
        QVERIFY(runLayerBlock(c, w, 1, LayerBlock::Attention, afterAttn, T, ws).ok());
        QVERIFY(addBlockOutput(c, w, 1, LayerBlock::Attention, full[std::size_t(LinearKind::O)], viaKept, ws).ok());
        QVERIFY(close(viaKept, afterAttn));
        // MLP block from the post-attention residual, stopped at gate/up and at down, then whole.
        for (LinearKind stop : {LinearKind::GateUp, LinearKind::Down}) {
            std::array<RowMatrix, 4> part;
            RowMatrix h = afterAttn;
            QVERIFY(runLayerBlock(c, w, 1, LayerBlock::Mlp, h, T, ws, capture(part), stop).ok());
            QVERIFY(h == afterAttn);
            QVERIFY(close(part[std::size_t(stop)], full[std::size_t(stop)]));
        }
        RowMatrix h = afterAttn;
        QVERIFY(runLayerBlock(c, w, 1, LayerBlock::Mlp, h, T, ws).ok());
        QVERIFY(close(h, out));
        h = afterAttn; // the kept down input + addBlockOutput == the whole MLP block
        QVERIFY(addBlockOutput(c, w, 1, LayerBlock::Mlp, full[std::size_t(LinearKind::Down)], h, ws).ok());
        QVERIFY(close(h, out));

        // On windows 1..2 of the matrix in place: the other rows stay, these match (batch
        // independence: another GEMM size, so a rounding tolerance).
        RowMatrix big = input;
        std::array<RowMatrix, 4> part;
        QVERIFY(
            runLayerBlock(c, w, 1, LayerBlock::Attention, big.middleRows(T, 2 * T), T, ws, capture(part), LinearKind::O)
                .ok());
        QVERIFY(big == input);
        const RowMatrix wantO = full[std::size_t(LinearKind::O)].middleRows(T, 2 * T);
        QVERIFY((part[std::size_t(LinearKind::O)] - wantO).cwiseAbs().maxCoeff() < 1e-5f);
        QVERIFY(runLayer(c, w, 1, big.middleRows(T, 2 * T), T, ws).ok());
        QVERIFY(big.topRows(T) == input.topRows(T));
        QVERIFY((big.middleRows(T, 2 * T) - out.middleRows(T, 2 * T)).cwiseAbs().maxCoeff() < 1e-5f);

        // A stop outside the block is an error, and so is an attention output of the wrong shape.
        RowMatrix bad = input;
        auto r = runLayerBlock(c, w, 1, LayerBlock::Attention, bad, T, ws, {}, LinearKind::Down);
        QVERIFY(!r.ok());
        QCOMPARE(r.error().code, ErrorCode::InvalidArgument);
        QVERIFY(bad == input);
        QCOMPARE(addBlockOutput(c, w, 1, LayerBlock::Attention, input.topRows(T), bad, ws).error().code,
                 ErrorCode::Shape);
        QCOMPARE(addBlockOutput(c, w, 1, LayerBlock::Mlp, input, bad, ws).error().code, ErrorCode::Shape);
    }

    void swappedLayerIsUsed()
    {
        auto m = qbtest::loadModelDir(qbtest::fixtureDir("llama_gqa"));
        QVERIFY(m);
        std::vector<std::int32_t> ids(8, 5);
        Workspace ws;
        auto before = forwardLogits(*m, ids, 8, ws);
        auto w = std::make_shared<DecoderLayerWeights>(*m->layer(1));
        w->down.setZero();
        m->setLayer(1, w);
        auto after = forwardLogits(*m, ids, 8, ws);
        QVERIFY(before.ok() && after.ok());
        QVERIFY((*before - *after).cwiseAbs().maxCoeff() > 1e-3f);
        m->setLayer(1, nullptr);
        QVERIFY(!forwardLogits(*m, ids, 8, ws).ok());
        QVERIFY(!m->validate().ok());
    }

    void badInputsAreErrors()
    {
        auto m = qbtest::loadModelDir(qbtest::fixtureDir("llama_gqa"));
        QVERIFY(m);
        Workspace ws;
        std::vector<std::int32_t> ids = {1, 2, 64, 3};
        auto r = forwardLogits(*m, ids, 4, ws);
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::OutOfRange));
        QVERIFY(!forwardLogits(*m, std::vector<std::int32_t>{1, 2, 3}, 2, ws).ok());
    }

    void llama3InverseFrequencies()
    {
        ModelConfig c;
        c.headDim = 16;
        c.ropeTheta = 10000;
        const auto plain = ropeInverseFrequencies(c);
        c.ropeScaling = {"llama3", 8.0, 1.0, 4.0, 16};
        const auto scaled = ropeInverseFrequencies(c);
        QCOMPARE(plain.size(), std::size_t(8));
        // pair 0: wavelength 2π lies between L/high = 4 and L/low = 16 -> smoothed
        const double s0 = (16.0 / (2 * M_PI / plain[0]) - 1.0) / 3.0;
        QVERIFY(s0 > 0 && s0 < 1);
        QVERIFY(std::abs(scaled[0] - ((1 - s0) * plain[0] / 8 + s0 * plain[0])) < 1e-15);
        QVERIFY(std::abs(scaled[7] - plain[7] / 8) < 1e-18); // long wavelength: divided by factor
    }
};

QTEST_GUILESS_MAIN(TestForward)
#include "tst_forward.moc"
