// Perplexity: windowing, scoring modes, and the demo model's golden perplexity (both modes)
// from the golden token ids (independent of the C++ tokenizer); progress and cancel.

#include "eval/perplexity.h"
#include "model/forward.h"
#include "model_test_util.h"

#include <QTest>

#include <cmath>

using namespace qb;
using namespace qb::eval;

namespace {
constexpr double kPplRelTolerance = 5e-4; // 0.05 %
}

class TestPerplexity : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }

    void windowsDropTrailingPartialAndSetBos()
    {
        std::vector<std::int32_t> t(10);
        for (int i = 0; i < 10; ++i)
            t[std::size_t(i)] = 100 + i;
        auto w = makeWindows(t, 4);
        QVERIFY(w.ok());
        QCOMPARE(w->count, 2);
        QCOMPARE(w->ids, (std::vector<std::int32_t>{100, 101, 102, 103, 104, 105, 106, 107}));
        auto b = makeWindows(t, 4, 1);
        QVERIFY(b.ok());
        QCOMPARE(b->ids, (std::vector<std::int32_t>{1, 101, 102, 103, 1, 105, 106, 107}));
        auto s = makeWindows(t, 11);
        QVERIFY(!s.ok());
        QVERIFY(s.error().message.find("too short") != std::string::npos);
        QVERIFY(!makeWindows(t, 1).ok());
    }

    void scoreModes()
    {
        QCOMPARE(firstScoredPosition(ScoreMode::All, 128), 0);
        QCOMPARE(firstScoredPosition(ScoreMode::SecondHalf, 128), 64);
        QCOMPARE(*parseScoreMode("second-half"), ScoreMode::SecondHalf);
        QCOMPARE(*parseScoreMode("all"), ScoreMode::All);
        QVERIFY(!parseScoreMode("half-ish"));
        QCOMPARE(std::string(scoreModeName(ScoreMode::SecondHalf)), std::string("second-half"));
        NllAccumulator a;
        QVERIFY(std::isnan(a.perplexity()));
        const float lp[] = {std::log(0.5f), std::log(0.25f)};
        a.add(lp);
        QVERIFY(std::abs(a.perplexity() - std::sqrt(8.0)) < 1e-6);
    }

    void demoGoldenPerplexity_data()
    {
        QTest::addColumn<int>("mode");
        QTest::addColumn<QString>("key");
        QTest::newRow("all") << int(ScoreMode::All) << "all";
        QTest::newRow("second-half") << int(ScoreMode::SecondHalf) << "second-half";
    }
    void demoGoldenPerplexity()
    {
        QFETCH(int, mode);
        QFETCH(QString, key);
        std::string err;
        auto m = qbtest::loadModelDir(qbtest::demoDir(), &err);
        QVERIFY2(m, err.c_str());
        const QJsonObject g = qbtest::goldenJson();
        const int ctx = g.value("ctx").toInt();
        const auto tokens = qbtest::goldenTokens();
        QCOMPARE(qint64(tokens.size()), qint64(g.value("tokens").toInteger()));
        auto w = makeWindows(tokens, ctx);
        QVERIFY(w.ok());
        QCOMPARE(w->count, g.value("windows").toInt());
        PerplexityOptions o;
        o.mode = ScoreMode(mode);
        o.batch = 8;
        RunContext rc;
        auto r = evaluatePerplexity(*m, *w, o, &rc);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        const QJsonObject ref = g.value("perplexity").toObject().value(key).toObject();
        const double want = ref.value("value").toDouble();
        QCOMPARE(r->tokensScored, qint64(ref.value("tokens_scored").toInteger()));
        QCOMPARE(r->windows, qint64(w->count));
        const double rel = std::abs(r->perplexity - want) / want;
        qInfo("%s: ppl %.6f golden %.6f rel diff %.2e, %.0f tok/s", qPrintable(key), r->perplexity, want, rel,
              r->tokensPerSecond);
        QVERIFY2(rel < kPplRelTolerance, qPrintable(QString::number(rel)));
        QCOMPARE(rc.progress().stage, std::string("evaluate"));
        QCOMPARE(rc.progress().done, qint64(w->count));
        QCOMPARE(rc.progress().total, qint64(w->count));
    }

    void cancelStopsEarly()
    {
        auto m = qbtest::loadModelDir(qbtest::fixtureDir("llama_gqa"));
        QVERIFY(m);
        std::vector<std::int32_t> t(16 * 20, 3);
        auto w = makeWindows(t, 16);
        QVERIFY(w.ok());
        int batches = 0;
        RunContext rc([&](const Progress& p) {
            if (p.stage == "evaluate" && p.done > 0 && ++batches == 2) rc.requestCancel();
        });
        PerplexityOptions o;
        o.batch = 2;
        auto r = evaluatePerplexity(*m, *w, o, &rc);
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::Cancelled));
        QVERIFY(rc.progress().done < 20);
    }
};

QTEST_GUILESS_MAIN(TestPerplexity)
#include "tst_perplexity.moc"
