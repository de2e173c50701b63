// transformers itself as the reference (issue 18): for every architecture a small random model
// built with the real transformers classes (tests/model/transformers/make_transformers_goldens.py,
// outputs committed) must give transformers' logits (window 0) to float tolerance and its
// perplexity over all windows to 1e-6 relative, from the safetensors original and from the GGUF
// that llama.cpp's own Python writer (`gguf`) made of the same weights; that GGUF's embedded
// tokenizer must encode as the tokenizer.json it was made from. The demo model is checked against
// transformers' goldens too (next to the hand-written port's, resources/demo/golden).

#include "io/checkpoint.h"
#include "model/forward.h"
#include "model_test_util.h"

#include <QTest>

#include <cmath>

using namespace qb;
using namespace qb::model;

namespace {
// References are float64 transformers forwards of the stored weights; our F32 pass must agree to
// this (absolute; these random models have logits up to about 30).
constexpr double kLogitTolerance = 1e-4;
constexpr double kPerplexityRelTolerance = 1e-6;

std::string caseDir(const QString& name)
{
    return std::string(QB_TESTS_DIR) + "/model/transformers/" + name.toStdString();
}

double maxAbsDiff(const RowMatrix& a, const std::vector<float>& b)
{
    double m = 0;
    for (Eigen::Index i = 0; i < a.size(); ++i)
        m = std::max(m, std::abs(double(a.data()[i]) - double(b[std::size_t(i)])));
    return m;
}

// exp(mean NLL) over positions [0, T-1) of every window, as the generator computes it.
double perplexity(const Model& m, const std::vector<std::int32_t>& ids, int T)
{
    Workspace ws;
    RowMatrix hidden;
    if (!runDecoder(m, ids, T, hidden, ws).ok()) return -1;
    std::vector<float> lp;
    if (!logProbs(m, hidden, T, ids, 0, lp, ws).ok()) return -1;
    double sum = 0;
    for (float x : lp)
        sum -= double(x);
    return std::exp(sum / double(lp.size()));
}

struct Golden {
    int T = 0;
    std::vector<std::int32_t> ids; // every window, concatenated
    double perplexity = 0;
    std::vector<float> logits; // window 0, [T, V]
};

Golden readGolden(const std::string& dir)
{
    Golden g;
    const QJsonObject e = qbtest::readJson(dir + "/expected.json");
    g.T = e.value("seq_len").toInt();
    for (const auto w : e.value("windows").toArray())
        for (const auto v : w.toArray())
            g.ids.push_back(std::int32_t(v.toInt()));
    g.perplexity = e.value("perplexity").toDouble();
    g.logits = qbtest::readRaw<float>(dir + "/logits.f32");
    return g;
}
} // namespace

class TestTransformersReference : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { setNumThreads(2); }

    void architectures_data()
    {
        QTest::addColumn<QString>("name");
        QTest::addColumn<QString>("modelType");
        QTest::newRow("Llama (GQA)") << "llama" << "llama";
        QTest::newRow("Qwen2 (biases, tied, use_sliding_window from layer 1)") << "qwen2" << "qwen2";
        QTest::newRow("Mistral (sliding_window 6)") << "mistral" << "mistral";
        QTest::newRow("Qwen3 (q/k norms, tied)") << "qwen3" << "qwen3";
        QTest::newRow("Gemma 2 (softcaps, sliding/global, GeGLU)") << "gemma2" << "gemma2";
        QTest::newRow("Gemma 3 (q/k norms, local rope base)") << "gemma3" << "gemma3_text";
        QTest::newRow("Phi-3 (fused qkv and gate_up, sliding_window 7)") << "phi3" << "phi3";
    }
    void architectures()
    {
        QFETCH(QString, name);
        QFETCH(QString, modelType);
        const std::string dir = caseDir(name);
        const Golden g = readGolden(dir);
        QVERIFY(g.T > 1);
        QVERIFY(g.ids.size() >= std::size_t(2 * g.T));

        std::string err;
        auto m = qbtest::loadModelDir(dir, &err);
        QVERIFY2(m, err.c_str());
        QCOMPARE(QString::fromStdString(m->config().modelType), modelType);
        QCOMPARE(g.logits.size(), std::size_t(g.T) * std::size_t(m->config().vocabSize));
        Workspace ws;
        auto logits = forwardLogits(*m, std::span(g.ids.data(), std::size_t(g.T)), g.T, ws);
        QVERIFY2(logits.ok(), logits.ok() ? "" : logits.error().toString().c_str());
        const double diff = maxAbsDiff(*logits, g.logits);
        const double ppl = perplexity(*m, g.ids, g.T);
        const double rel = std::abs(ppl / g.perplexity - 1);
        qInfo("%s safetensors: max |logit - transformers| = %.3g, perplexity %.9g vs %.9g (rel %.2g)", qPrintable(name),
              diff, ppl, g.perplexity, rel);
        QVERIFY2(diff < kLogitTolerance, qPrintable(QString::number(diff)));
        QVERIFY2(rel < kPerplexityRelTolerance, qPrintable(QString::number(rel)));

        // The same weights as llama.cpp's writer stored them, with its embedded tokenizer.
        const std::string gguf = dir + "/model.gguf";
        auto ck = io::openCheckpoint(gguf);
        QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
        QCOMPARE(ck->format, io::CheckpointFormat::Gguf);
        auto gm = pipeline::loadModel(*ck);
        QVERIFY2(gm.ok(), gm.ok() ? "" : gm.error().toString().c_str());
        auto glogits = forwardLogits(**gm, std::span(g.ids.data(), std::size_t(g.T)), g.T, ws);
        QVERIFY2(glogits.ok(), glogits.ok() ? "" : glogits.error().toString().c_str());
        const double gdiff = (*glogits - *logits).cwiseAbs().maxCoeff();
        const double gppl = perplexity(**gm, g.ids, g.T);
        qInfo("%s gguf: max |logit - safetensors| = %.3g, perplexity rel diff to transformers %.2g", qPrintable(name),
              gdiff, std::abs(gppl / g.perplexity - 1));
        QVERIFY2(gdiff < 1e-5, qPrintable(QString::number(gdiff)));
        QVERIFY(std::abs(gppl / g.perplexity - 1) < kPerplexityRelTolerance);

        auto embedded = io::loadCheckpointTokenizer(*ck);
        QVERIFY2(embedded.ok(), embedded.ok() ? "" : embedded.error().toString().c_str());
        auto json = io::Tokenizer::fromFile(qbtest::demoDir() + "/tokenizer.json");
        QVERIFY(json.ok());
        const std::string text = "The quick brown fox, 12345 times: \"don't\"\r\n\tjumps  over the lazy dog.";
        QCOMPARE(embedded->encode(text, false), json->encode(text, false));
    }

    void demoModelAgainstTransformers()
    {
        std::string err;
        auto m = qbtest::loadModelDir(qbtest::demoDir(), &err);
        QVERIFY2(m, err.c_str());
        const QJsonObject g = qbtest::readJson(qbtest::demoDir() + "/golden/transformers.json");
        const int ctx = g.value("ctx").toInt();
        const int windows = g.value("windows").toInt();
        QCOMPARE(ctx, 128);
        const auto tokens = qbtest::goldenTokens();
        QVERIFY(tokens.size() >= std::size_t(ctx) * std::size_t(windows));
        const auto golden = qbtest::readRaw<float>(qbtest::demoDir() + "/golden/transformers_logits_window0.f32");
        const int rows = g.value("logits_rows").toInt();
        QVERIFY(rows > 0 && rows <= ctx);
        QCOMPARE(golden.size(), std::size_t(rows) * std::size_t(m->config().vocabSize));
        Workspace ws;
        auto logits = forwardLogits(*m, std::span(tokens.data(), std::size_t(ctx)), ctx, ws);
        QVERIFY(logits.ok());
        const RowMatrix firstRows = logits->topRows(rows);
        const double diff = maxAbsDiff(firstRows, golden);
        const std::vector<std::int32_t> ids(tokens.begin(), tokens.begin() + std::ptrdiff_t(ctx) * windows);
        const double ppl = perplexity(*m, ids, ctx);
        const double ref = g.value("perplexity").toObject().value("all").toObject().value("value").toDouble();
        const double rel = std::abs(ppl / ref - 1);
        qInfo("demo: max |logit - transformers| = %.3g, perplexity %.9g vs %.9g (rel %.2g)", diff, ppl, ref, rel);
        QVERIFY2(diff < kLogitTolerance, qPrintable(QString::number(diff)));
        QVERIFY2(rel < kPerplexityRelTolerance, qPrintable(QString::number(rel)));
    }
};

QTEST_GUILESS_MAIN(TestTransformersReference)
#include "tst_transformers_reference.moc"
