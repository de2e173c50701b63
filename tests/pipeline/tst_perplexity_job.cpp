// Perplexity job on the bundled demo model (the `eval`/`bench` CLI: tests/app): our tokenizer reproduces
// the golden token ids, the job reproduces the golden perplexity, short text is a clear error.

#include "io/tokenizer.h"
#include "model/forward.h"
#include "model_test_util.h"
#include "pipeline/perplexity_job.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;

namespace {
constexpr double kPplRelTolerance = 5e-4; // 0.05 %

} // namespace

class TestPerplexityJob : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }

    void tokenizerMatchesGoldenIds()
    {
        auto tok = io::Tokenizer::fromFile(qbtest::demoDir() + "/tokenizer.json");
        QVERIFY2(tok.ok(), tok.ok() ? "" : tok.error().toString().c_str());
        QVERIFY(!tok->addsBos());
        QCOMPARE(tok->vocabSize(), 2048);
        auto text = pipeline::readTextFile(qbtest::demoDir() + "/eval.txt");
        QVERIFY(text.ok());
        const auto ids = tok->encode(*text, true);
        const auto golden = qbtest::goldenTokens();
        QCOMPARE(ids.size(), golden.size());
        for (std::size_t i = 0; i < ids.size(); ++i)
            if (ids[i] != golden[i]) QFAIL(qPrintable(QStringLiteral("first mismatch at token %1").arg(i)));
        QCOMPARE(tok->decode(ids), *text);
    }

    void jobMatchesGoldenPerplexity()
    {
        std::string err;
        auto m = qbtest::loadModelDir(qbtest::demoDir(), &err);
        QVERIFY2(m, err.c_str());
        auto tok = io::Tokenizer::fromFile(qbtest::demoDir() + "/tokenizer.json");
        QVERIFY(tok.ok());
        auto text = pipeline::readTextFile(qbtest::demoDir() + "/eval.txt");
        QVERIFY(text.ok());
        pipeline::PerplexityJobOptions o;
        o.ctx = 128;
        o.mode = eval::ScoreMode::SecondHalf;
        o.batch = 16;
        RunContext rc;
        auto r = pipeline::runPerplexity(*m, *tok, *text, o, &rc);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        const QJsonObject g = qbtest::goldenJson().value("perplexity").toObject().value("second-half").toObject();
        const double want = g.value("value").toDouble();
        QCOMPARE(r->tokensScored, qint64(g.value("tokens_scored").toInteger()));
        QVERIFY(std::abs(r->perplexity - want) / want < kPplRelTolerance);
        QVERIFY(r->tokensPerSecond > 0);
        QCOMPARE(rc.progress().stage, std::string("evaluate"));
    }

    void shortTextIsAClearError()
    {
        auto m = qbtest::loadModelDir(qbtest::demoDir());
        QVERIFY(m);
        auto tok = io::Tokenizer::fromFile(qbtest::demoDir() + "/tokenizer.json");
        QVERIFY(tok.ok());
        pipeline::PerplexityJobOptions o;
        o.ctx = 128;
        auto r = pipeline::runPerplexity(*m, *tok, "Just a few words.", o);
        QVERIFY(!r.ok());
        QVERIFY2(r.error().message.find("too short") != std::string::npos, r.error().message.c_str());
        QVERIFY(!pipeline::readTextFile("/nonexistent/x.txt").ok());
    }
};

QTEST_GUILESS_MAIN(TestPerplexityJob)
#include "tst_perplexity_job.moc"
