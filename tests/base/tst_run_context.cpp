#include "base/run_context.h"

#include <QTest>

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
    void concurrentAdvanceCountsEveryUnit()
    {
        RunContext ctx;
        ctx.beginStage("work", 4 * 10000);
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t)
            threads.emplace_back([&] {
                for (int i = 0; i < 10000; ++i) ctx.advance();
            });
        for (auto& t : threads) t.join();
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
        while (chunks.load() < 10) std::this_thread::yield();
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
