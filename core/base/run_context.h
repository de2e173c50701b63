#pragma once
// RunContext: how a long-running core job reports progress and learns it should stop.
//
// Threading contract: a job runs on one worker thread (or a team of them) and calls beginStage(),
// advance() and isCancelled() as often as it likes; any thread may call requestCancel() and
// progress(). Every member is thread-safe. The optional sink is called synchronously on the
// thread that made progress, so it must be cheap and thread-safe; the UI bridge (ui/tasks)
// throttles what it forwards to the GUI thread. Jobs poll isCancelled() between chunks (a column
// block, a layer, a window) and, when it is set, return ErrorCode::Cancelled leaving every input
// untouched.

#include "base/result.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace qb {

struct Progress {
    std::string stage;   // "load", "calibrate", "hessian", "search", "solve", "evaluate", ...
    std::string detail;  // free text, e.g. the current layer
    std::int64_t done = 0;
    std::int64_t total = 0; // 0 = unknown
    double fraction() const { return total > 0 ? double(done) / double(total) : 0.0; }
};

class RunContext {
public:
    using Sink = std::function<void(const Progress&)>;

    RunContext() = default;
    explicit RunContext(Sink sink) : m_sink(std::move(sink)) {}
    RunContext(const RunContext&) = delete;
    RunContext& operator=(const RunContext&) = delete;

    void setSink(Sink sink);

    // Starts a named stage with `total` units of work; resets done to 0.
    void beginStage(std::string stage, std::int64_t total, std::string detail = {});
    void setDetail(std::string detail);
    // Adds n finished units. Safe to call from several threads at once.
    void advance(std::int64_t n = 1);
    void setDone(std::int64_t done);
    Progress progress() const;

    void requestCancel() { m_cancel.store(true, std::memory_order_relaxed); }
    bool isCancelled() const;
    // An additional cancel source polled by isCancelled() (e.g. a QPromise owned by the UI
    // bridge). Set it before the job starts; it must be thread-safe.
    void setCancelSource(std::function<bool()> source);
    // An Error with code Cancelled, for jobs that stop early.
    static Error cancelledError(const std::string& where = {});

private:
    void notify();

    mutable std::mutex m_mutex;
    Sink m_sink;
    std::function<bool()> m_cancelSource;
    std::string m_stage;
    std::string m_detail;
    std::atomic<std::int64_t> m_done{0};
    std::atomic<std::int64_t> m_total{0};
    mutable std::atomic<bool> m_cancel{false};
};

} // namespace qb
