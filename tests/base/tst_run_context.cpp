#include "base/run_context.h"

#include <QTest>

#include <cmath>
#include <thread>
#include <vector>

using namespace qb;

class TestRunContext : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void stagesAndProgress()
    {
        std::vector<Progress> seen;
        RunContext ctx([&](const Progress& p) { seen.push_back(p); });
        ctx.beginStage("calibrate", 10, "layer 0");
        ctx.advance(3);
        ctx.advance();
        const Progress p = ctx.progress();
        QCOMPARE(p.stage, std::string("calibrate"));
        QCOMPARE(p.detail, std::string("layer 0"));
        QCOMPARE(p.done, 4);
        QCOMPARE(p.total, 10);
        QCOMPARE(p.fraction(), 0.4);
        QCOMPARE(int(seen.size()), 3);
        QCOMPARE(seen.back().done, 4);
        ctx.beginStage("solve", 2);
        QCOMPARE(ctx.progress().done, 0);
    }
    void overallFromPhasesPartsAndSteps()
    {
        RunContext ctx;
        ctx.setPhases({{"load", 1}, {"quantize", 2}, {"perplexity", 1}});
        ctx.beginPhase("load");
        ctx.beginStage("load", 10);
        ctx.advance(5);
        QCOMPARE(ctx.progress().overall, 0.125); // half of 1/4
        QCOMPARE(ctx.progress().phase, std::string("load"));
        QCOMPARE(ctx.progress().phaseIndex, 0);
        QCOMPARE(ctx.progress().phaseCount, 3);
        ctx.beginPhase("quantize");
        QCOMPARE(ctx.progress().overall, 0.25);
        // Layer 1 of 4, step 2 of 8, its stage half done: 0.25 + 0.5 * (1 + (2 + 0.5) / 8) / 4.
        ctx.setPart("layer", 1, 4, 8);
        ctx.setStep(2);
        ctx.beginStage("solve", 4);
        ctx.advance(2);
        const Progress p = ctx.progress();
        QCOMPARE(p.partName, std::string("layer"));
        QCOMPARE(p.part, 1);
        QCOMPARE(p.parts, 4);
        QCOMPARE(p.step, 2);
        QCOMPARE(p.steps, 8);
        QVERIFY(std::abs(p.overall - (0.25 + 0.5 * (1.0 + 2.5 / 8.0) / 4.0)) < 1e-12);
        // A new stage of the same step starts at 0 units: overall does not go back.
        ctx.beginStage("hessian", 10);
        QVERIFY(std::abs(ctx.progress().overall - p.overall) < 1e-12);
        ctx.beginPhase("perplexity");
        QCOMPARE(ctx.progress().overall, 0.75);
        QCOMPARE(ctx.progress().parts, 0); // parts belong to their phase
        ctx.beginStage("evaluate", 2);
        ctx.advance(2);
        QCOMPARE(ctx.progress().overall, 1.0);
        ctx.beginPhase("unknown"); // ignored: stays in "perplexity"
        QCOMPARE(ctx.progress().phase, std::string("perplexity"));
    }
    void overallWithoutPhasesIsTheStageOrParts()
    {
        RunContext ctx;
        ctx.beginStage("evaluate", 4);
        ctx.advance();
        QCOMPARE(ctx.progress().overall, 0.25);
        RunContext layers;
        layers.setPart("layer", 3, 4);
        layers.beginStage("solve", 2);
        layers.advance();
        QCOMPARE(layers.progress().overall, (3 + 0.5) / 4);
    }
    void etaFromElapsedAndOverall()
    {
        Progress p;
        p.overall = 0.25;
        p.elapsedSeconds = 10;
        QCOMPARE(*p.etaSeconds(), 30.0);
        p.overall = 0.001; // too early to extrapolate
        QVERIFY(!p.etaSeconds());
        p.overall = 1;
        QCOMPARE(*p.etaSeconds(), 0.0);
        QCOMPARE(formatDuration(42.4), std::string("42 s"));
        QCOMPARE(formatDuration(185), std::string("3 min 05 s"));
        QCOMPARE(formatDuration(3720), std::string("1 h 02 min"));
    }
    void concurrentAdvanceCountsEveryUnit()
    {
        RunContext ctx;
        ctx.beginStage("work", 4 * 10000);
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t)
            threads.emplace_back([&] {
                for (int i = 0; i < 10000; ++i)
                    ctx.advance();
            });
        for (auto& t : threads)
            t.join();
        QCOMPARE(ctx.progress().done, 40000);
    }
    void cancelIsSeenByAnotherThread()
    {
        RunContext ctx;
        QVERIFY(!ctx.isCancelled());
        std::atomic<int> chunks{0};
        std::thread worker([&] {
            while (!ctx.isCancelled()) {
                chunks.fetch_add(1);
                std::this_thread::yield();
            }
        });
        while (chunks.load() < 10)
            std::this_thread::yield();
        ctx.requestCancel();
        worker.join();
        QVERIFY(ctx.isCancelled());
        QCOMPARE(int(RunContext::cancelledError("layer 3").code), int(ErrorCode::Cancelled));
    }
    void externalCancelSource()
    {
        RunContext ctx;
        std::atomic<bool> external{false};
        ctx.setCancelSource([&] { return external.load(); });
        QVERIFY(!ctx.isCancelled());
        external = true;
        QVERIFY(ctx.isCancelled());
        external = false; // once seen, cancellation sticks
        QVERIFY(ctx.isCancelled());
    }
};

QTEST_GUILESS_MAIN(TestRunContext)
#include "tst_run_context.moc"
