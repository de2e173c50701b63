// Perplexity job and the `eval`/`bench` CLI on the bundled demo model: our tokenizer reproduces
// the golden token ids, the job reproduces the golden perplexity, short text is a clear error.

#include "io/tokenizer.h"
#include "model/forward.h"
#include "model_test_util.h"
#include "pipeline/perplexity_job.h"

#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;

namespace {
constexpr double kPplRelTolerance = 5e-4; // 0.05 %

struct Run {
    int code = -1;
    QByteArray out, err;
};
Run runCli(const QStringList& args)
{
    QProcess p;
    p.start(QStringLiteral(QB_CLI_PATH), args);
    Run r;
    if (!p.waitForFinished(300000)) return r;
    r.code = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -1;
    r.out = p.readAllStandardOutput();
    r.err = p.readAllStandardError();
    return r;
}
QString demo() { return QStringLiteral(QB_DEMO_DIR); }
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

    void cliEvalJson()
    {
        const Run r = runCli({"eval", demo(), "--text", demo() + "/eval.txt", "--ctx", "128", "--threads", "2",
                              "--batch", "8", "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(r.out).object();
        QCOMPARE(o.keys(), (QStringList{"perplexity", "seconds", "tokens_per_second", "tokens_scored", "windows"}));
        const QJsonObject g = qbtest::goldenJson();
        const QJsonObject all = g.value("perplexity").toObject().value("all").toObject();
        QVERIFY(std::abs(o.value("perplexity").toDouble() / all.value("value").toDouble() - 1) < kPplRelTolerance);
        QCOMPARE(o.value("tokens_scored").toInteger(), all.value("tokens_scored").toInteger());
        QCOMPARE(o.value("windows").toInt(), g.value("windows").toInt());
    }

    void cliEvalShortTextFails()
    {
        QTemporaryDir dir;
        const QString path = dir.filePath("short.txt");
        QFile f(path);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write("Too short for a window.\n");
        f.close();
        const Run r = runCli({"eval", demo(), "--text", path, "--ctx", "128"});
        QVERIFY(r.code != 0);
        QVERIFY(r.out.isEmpty());
        // Progress lines ("[ 3%] load: ...") may come first; the error is one line, the last.
        const QList<QByteArray> lines = r.err.trimmed().split('\n');
        QVERIFY2(lines.last().startsWith("quantbench-cli eval: ") && lines.last().contains("too short"), r.err.constData());
        for (const QByteArray& l : lines.mid(0, lines.size() - 1)) QVERIFY2(l.startsWith("["), r.err.constData());
        const Run bad = runCli({"eval", demo(), "--text", path, "--score", "middle"});
        QCOMPARE(bad.code, 2);
        const Run missing = runCli({"eval", demo() + "/nope", "--text", path});
        QVERIFY(missing.code != 0);
    }

    void cliBench()
    {
        const Run r = runCli({"bench", demo(), "--ctx", "64", "--windows", "2", "--threads", "2", "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(r.out).object();
        QVERIFY(o.value("tokens_per_second").toDouble() > 0);
        QVERIFY(o.value("peak_rss_mib").toDouble() > 1);
        const Run t = runCli({"bench", demo(), "--ctx", "64", "--windows", "1"});
        QVERIFY2(t.code == 0, t.err.constData());
        QVERIFY(t.out.contains("tokens/s") && t.out.contains("peak resident memory"));
    }
};

QTEST_GUILESS_MAIN(TestPerplexityJob)
#include "tst_perplexity_job.moc"
