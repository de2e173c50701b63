#pragma once
// JobRunner: the only bridge between the GUI thread and core jobs.
//
// A job is a callable `Result<T>(RunContext&)` from core/pipeline. run() starts it on the
// runner's private QThreadPool through QtConcurrent::run in run-with-promise mode and returns a
// QFuture<JobOutcome<T>>. RunContext progress is forwarded to the promise (progress range and
// "stage: detail" text), throttled to about 10 updates per second; cancelling the future
// (QFuture::cancel) is seen by the job through RunContext::isCancelled() at its next chunk.
// The outcome carries either an immutable snapshot (shared_ptr<const T>) or the Error.
// Widgets run jobs with start(), which owns the watcher, the status-strip hookup and the
// cancelled check, and hands the outcome to a callback on the GUI thread. Finished jobs are
// released at once. The destructor cancels every running job and waits for the pool.

#include "base/result.h"
#include "base/run_context.h"

#include <QElapsedTimer>
#include <QFuture>
#include <QFutureWatcher>
#include <QMutex>
#include <QObject>
#include <QPromise>
#include <QThreadPool>
#include <QtConcurrent/QtConcurrentRun>

#include <functional>
#include <map>
#include <memory>
#include <optional>

namespace qb::ui {

template <typename T>
struct JobOutcome {
    std::shared_ptr<const T> value; // set on success
    std::optional<Error> error;     // set on failure (ErrorCode::Cancelled when cancelled)
    bool ok() const { return value != nullptr; }
};

// Thins RunContext progress out to at most one update every `intervalMs` (always passing the
// final 100 % and every stage change), as permille plus "stage: detail" text.
class ProgressThrottle {
public:
    struct Update {
        int range; // 0 = unknown total (busy indicator), else 1000
        int value; // permille
        QString text;
    };
    explicit ProgressThrottle(int intervalMs = 100);
    std::optional<Update> update(const Progress& p);

private:
    QMutex m_mutex;
    QElapsedTimer m_clock;
    qint64 m_lastMs = -1;
    std::string m_lastStage;
    int m_intervalMs;
};

// Gives the calling worker thread (and every thread it creates later, such as its OpenMP team)
// a lower scheduling priority than the GUI thread (nice +5 on Linux), so that numeric jobs on
// all cores never starve the event loop. Idempotent per thread.
void lowerWorkerPriority();

class JobRunner : public QObject {
    Q_OBJECT
public:
    explicit JobRunner(QObject* parent = nullptr);
    ~JobRunner() override;

    template <typename T>
    QFuture<JobOutcome<T>> run(std::function<Result<T>(RunContext&)> job)
    {
        return QtConcurrent::run(&m_pool, [job = std::move(job)](QPromise<JobOutcome<T>>& promise) {
            lowerWorkerPriority();
            RunContext ctx;
            auto throttle = std::make_shared<ProgressThrottle>();
            ctx.setSink([throttle, &promise](const Progress& p) {
                if (auto u = throttle->update(p)) {
                    promise.setProgressRange(0, u->range); // also resets the value
                    promise.setProgressValueAndText(u->value, u->text);
                }
            });
            ctx.setCancelSource([&promise] { return promise.isCanceled(); });
            JobOutcome<T> out;
            try {
                Result<T> r = job(ctx);
                if (r.ok()) out.value = std::make_shared<const T>(std::move(r).value());
                else out.error = r.error();
            } catch (const std::bad_alloc&) {
                out.error = makeError(ErrorCode::OutOfMemory, "out of memory");
            } catch (const std::exception& e) {
                out.error = makeError(ErrorCode::Internal, std::string("internal error: ") + e.what());
            } catch (...) {
                out.error = makeError(ErrorCode::Internal, "internal error (unknown exception)");
            }
            promise.addResult(std::move(out));
        });
    }

    // The one way widgets run a job: starts `job` (run + track), observes it with a watcher owned
    // by `context` (destroying the context drops the observation, never the job's cancel), shows
    // it in the status strip under `title` (when a status hook is set and title is not empty),
    // and calls onDone on the GUI thread with the outcome: a cancelled job arrives as an outcome
    // with ErrorCode::Cancelled. Returns the watcher for extra progress hookups (e.g. a dialog's
    // own bar); it deletes itself after onDone.
    template <typename T>
    QFutureWatcher<JobOutcome<T>>* start(QObject* context, const QString& title,
                                         std::function<Result<T>(RunContext&)> job,
                                         std::function<void(const JobOutcome<T>&)> onDone)
    {
        auto future = track(run<T>(std::move(job)));
        auto* watcher = new QFutureWatcher<JobOutcome<T>>(context);
        connect(watcher, &QFutureWatcherBase::finished, context, [watcher, onDone = std::move(onDone)] {
            watcher->deleteLater();
            JobOutcome<T> outcome;
            if (watcher->isCanceled() || watcher->future().resultCount() == 0)
                outcome.error = RunContext::cancelledError();
            else outcome = watcher->result();
            watcher->setFuture(QFuture<JobOutcome<T>>()); // the result lives on in `outcome` only
            onDone(outcome);
        });
        watcher->setFuture(future);
        if (m_statusHook && !title.isEmpty()) m_statusHook(watcher, title);
        return watcher;
    }
    // Where start() shows its jobs (the main window's status strip).
    void setStatusHook(std::function<void(QFutureWatcherBase*, const QString&)> hook)
    {
        m_statusHook = std::move(hook);
    }

    // Cancels every job still running and blocks until the pool is idle.
    void cancelAllAndWait();
    QThreadPool* pool() { return &m_pool; }

    // Registers a future so that cancelAllAndWait() and the destructor can cancel it. The runner
    // lets go of it as soon as it finishes, so a finished job's result (an opened checkpoint and
    // its file mappings, a quantized model) lives only as long as its observers keep it.
    template <typename T>
    QFuture<T> track(QFuture<T> f)
    {
        const quint64 id = m_nextId++;
        m_running.emplace(id, [f]() mutable { f.cancel(); });
        auto* watcher = new QFutureWatcher<T>(this);
        connect(watcher, &QFutureWatcherBase::finished, this, [this, id, watcher] {
            m_running.erase(id);
            watcher->setFuture(QFuture<T>()); // drop the watcher's copy of the result now
            watcher->deleteLater();
        });
        watcher->setFuture(f);
        return f;
    }
    // Jobs registered with track() that have not finished yet.
    std::size_t runningCount() const { return m_running.size(); }

private:
    QThreadPool m_pool;
    quint64 m_nextId = 0;
    std::map<quint64, std::function<void()>> m_running; // id -> cancel
    std::function<void(QFutureWatcherBase*, const QString&)> m_statusHook;
};

} // namespace qb::ui
