// JobRunner: results arrive as snapshots, progress is forwarded and throttled, cancel reaches
// the job through RunContext, errors and exceptions become outcomes, and the destructor waits.

#include "tasks/job_runner.h"

#include <QFutureWatcher>
#include <QSignalSpy>
#include <QTest>

#include <atomic>
#include <chrono>
#include <optional>
#include <memory>
#include <vector>
#include <thread>

using namespace qb;
using namespace qb::ui;

class TestJobRunner : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void deliversValue()
    {
        JobRunner runner;
        auto f = runner.run<int>([](RunContext& ctx) -> Result<int> {
            ctx.beginStage("sum", 10);
            int s = 0;
            for (int i = 0; i < 10; ++i) {
                s += i;
                ctx.advance();
            }
            return s;
        });
        QFutureWatcher<JobOutcome<int>> w;
        QSignalSpy done(&w, &QFutureWatcherBase::finished);
        w.setFuture(f);
        QVERIFY(done.wait(10000));
        QVERIFY(!w.isCanceled());
        QVERIFY(w.result().ok());
        QCOMPARE(*w.result().value, 45);
        QCOMPARE(w.progressMaximum(), 1000);
        QCOMPARE(w.progressValue(), 1000);
        QCOMPARE(w.progressText(), QStringLiteral("sum"));
    }
    void deliversErrorAndException()
    {
        JobRunner runner;
        auto f1 = runner.run<int>(
            [](RunContext&) -> Result<int> { return makeError(ErrorCode::Format, "bad bytes", "x.gguf"); });
        f1.waitForFinished();
        QVERIFY(!f1.result().ok());
        QCOMPARE(f1.result().error->toString(), std::string("bad bytes (x.gguf)"));
        auto f2 = runner.run<int>([](RunContext&) -> Result<int> { throw std::runtime_error("boom"); });
        f2.waitForFinished();
        QCOMPARE(f2.result().error->message, std::string("internal error: boom"));
        auto f3 = runner.run<int>([](RunContext&) -> Result<int> { throw 42; }); // not a std::exception
        f3.waitForFinished();
        QVERIFY(!f3.result().ok());
        QCOMPARE(f3.result().error->code, ErrorCode::Internal);
    }
    // Regression: track() kept every finished future, so every result (an opened checkpoint with
    // its mappings) lived until the runner died.
    void releasesFinishedJobs()
    {
        JobRunner runner;
        std::weak_ptr<const std::vector<char>> weak;
        {
            auto f = runner.track(runner.run<std::vector<char>>(
                [](RunContext&) -> Result<std::vector<char>> { return std::vector<char>(1 << 20, 'x'); }));
            QFutureWatcher<JobOutcome<std::vector<char>>> w;
            QSignalSpy done(&w, &QFutureWatcherBase::finished);
            w.setFuture(f);
            QVERIFY(done.wait(10000));
            weak = f.result().value;
            QVERIFY(!weak.expired());
        }
        QTRY_COMPARE(runner.runningCount(), std::size_t(0));
        QTRY_VERIFY(weak.expired());
    }
    // start(): one call runs, observes, shows and reports a job; cancel arrives as an outcome.
    void startDeliversOutcomesAndShowsStatus()
    {
        JobRunner runner;
        QStringList shown;
        runner.setStatusHook([&shown](QFutureWatcherBase*, const QString& title) { shown << title; });
        QObject context;
        std::optional<JobOutcome<int>> got;
        runner.start<int>(
            &context, QStringLiteral("Adding"), [](RunContext&) -> Result<int> { return 42; },
            [&got](const JobOutcome<int>& o) { got = o; });
        QTRY_VERIFY(got.has_value());
        QVERIFY(got->ok());
        QCOMPARE(*got->value, 42);
        QCOMPARE(shown, QStringList{QStringLiteral("Adding")});

        std::atomic<bool> started{false};
        std::optional<JobOutcome<int>> cancelled;
        auto* w = runner.start<int>(
            &context, QString(),
            [&started](RunContext& ctx) -> Result<int> {
                started = true;
                while (!ctx.isCancelled())
                    std::this_thread::sleep_for(std::chrono::milliseconds(2));
                return RunContext::cancelledError("spin");
            },
            [&cancelled](const JobOutcome<int>& o) { cancelled = o; });
        QTRY_VERIFY(started.load());
        w->cancel();
        QTRY_VERIFY(cancelled.has_value());
        QVERIFY(!cancelled->ok());
        QCOMPARE(cancelled->error->code, ErrorCode::Cancelled);
        QCOMPARE(shown.size(), 1); // an empty title stays out of the status strip
        QTRY_COMPARE(runner.runningCount(), std::size_t(0));
    }
    void cancelReachesJob()
    {
        JobRunner runner;
        std::atomic<bool> started{false};
        auto f = runner.track(runner.run<int>([&](RunContext& ctx) -> Result<int> {
            ctx.beginStage("spin", 0);
            started = true;
            while (!ctx.isCancelled())
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            return RunContext::cancelledError("spin");
        }));
        QTRY_VERIFY(started.load());
        QFutureWatcher<JobOutcome<int>> w;
        QSignalSpy done(&w, &QFutureWatcherBase::finished);
        w.setFuture(f);
        f.cancel();
        QVERIFY(done.count() == 1 || done.wait(10000));
        QVERIFY(w.isCanceled());
    }
    void progressIsThrottled()
    {
        ProgressThrottle t(100);
        Progress p;
        p.stage = "calibrate";
        p.total = 1000;
        int updates = 0;
        for (int i = 0; i < 1000; ++i) {
            p.done = i;
            p.overall = p.fraction();
            if (t.update(p)) ++updates;
        }
        QVERIFY2(updates <= 3, qPrintable(QString::number(updates))); // a burst: first (+ maybe one)
        p.done = 1000;
        p.overall = 1.0;
        const auto final = t.update(p);
        QVERIFY(final.has_value());   // the final 100 % always passes
        QCOMPARE(final->value, 1000); // the bar shows the overall fraction
        p.stage = "evaluate";
        p.done = 1;
        QVERIFY(t.update(p).has_value()); // a stage change always passes
    }
    void destructorCancelsAndWaits()
    {
        std::atomic<bool> finished{false};
        {
            JobRunner runner;
            runner.track(runner.run<int>([&](RunContext& ctx) -> Result<int> {
                while (!ctx.isCancelled())
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                finished = true;
                return 0;
            }));
            QTest::qWait(20);
        }
        QVERIFY(finished.load());
    }
};

QTEST_GUILESS_MAIN(TestJobRunner)
#include "tst_job_runner.moc"
