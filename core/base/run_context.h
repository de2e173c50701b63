#pragma once
// RunContext: how a long-running core job reports progress and learns it should stop.
//
// Structured progress: a workflow declares its phases with weights (setPhases: "load" 1,
// "quantize" 16, "perplexity" 3) and enters them (beginPhase); a job marks where it is in a
// repeated sequence (setPart: layer 3 of 22, in 8 steps; setStep: step 5) and reports units of its
// current stage (beginStage/advance: 120 of 512 columns). From these numbers alone the context
// computes one monotone overall fraction in [0, 1] and an ETA; every UI shows those, none parses
// text. Without phases the job is one phase of weight 1; without parts the stage fraction counts.
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
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace qb {

struct Progress {
    std::string stage;  // "load", "calibrate", "hessian", "search", "solve", "evaluate", ...
    std::string detail; // free text for people, e.g. "layer 3 mlp.down_proj"; never parsed
    std::int64_t done = 0;
    std::int64_t total = 0; // 0 = unknown
    // The workflow phase (setPhases/beginPhase): index of count, "" when none was declared.
    std::string phase;
    int phaseIndex = 0, phaseCount = 0;
    // The sub-range: part `part` (0-based) of `parts` ("layer" 3 of 22), and step `step` of `steps`
    // within the part; parts/steps 0 = none.
    std::string partName;
    std::int64_t part = 0, parts = 0;
    std::int64_t step = 0, steps = 0;
    double overall = 0;        // the whole workflow, [0, 1], never decreases
    double elapsedSeconds = 0; // since the context was made
    double fraction() const { return total > 0 ? double(done) / double(total) : 0.0; }
    // Seconds left, extrapolated from elapsed and overall; nullopt before 1 % or 1 s.
    std::optional<double> etaSeconds() const;
};

struct PhaseWeight {
    std::string name;
    double weight = 1;
};

// "42 s", "3 min 05 s", "1 h 02 min": for ETAs and timings in the CLI and the window.
std::string formatDuration(double seconds);

class RunContext {
public:
    using Sink = std::function<void(const Progress&)>;

    RunContext() = default;
    explicit RunContext(Sink sink) : m_sink(std::move(sink)) {}
    RunContext(const RunContext&) = delete;
    RunContext& operator=(const RunContext&) = delete;

    void setSink(Sink sink);

    // Declares the workflow's phases in order with their relative weights (resets overall).
    void setPhases(std::vector<PhaseWeight> phases);
    // Enters a declared phase (an undeclared name is ignored); clears the part and step.
    void beginPhase(const std::string& phase);
    // Part `part` of `parts` of a repeated sequence named `name`, each in `steps` steps (0: none).
    void setPart(std::string name, std::int64_t part, std::int64_t parts, std::int64_t steps = 0);
    // Step `step` of the current part has started.
    void setStep(std::int64_t step);
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
    double overallLocked(std::int64_t done, std::int64_t total) const;

    mutable std::mutex m_mutex;
    Sink m_sink;
    std::vector<PhaseWeight> m_phases;
    int m_phase = -1;
    std::string m_partName;
    std::int64_t m_part = 0, m_parts = 0, m_step = 0, m_steps = 0;
    mutable double m_overall = 0; // the largest overall reported so far
    std::chrono::steady_clock::time_point m_start = std::chrono::steady_clock::now();
    std::function<bool()> m_cancelSource;
    std::string m_stage;
    std::string m_detail;
    std::atomic<std::int64_t> m_done{0};
    std::atomic<std::int64_t> m_total{0};
    mutable std::atomic<bool> m_cancel{false};
};

} // namespace qb
