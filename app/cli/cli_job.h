#pragma once
// What every long-running quantbench-cli command shares around a pipeline workflow
// (pipeline/workflows.h): a RunContext whose progress goes to stderr as
// "[ 42%  ETA 1 min 05 s] solve: layer 3 mlp.down_proj" (one line per stage change, at most one
// per second otherwise; silent with --json) and which Ctrl-C cancels (exit 130); exit codes for
// workflow errors; and the printing of an export outcome.
// Threading: one CliJob per command, on the main thread; the sink is called from worker threads
// and serialises its output.

#include "base/run_context.h"
#include "eval/kl_divergence.h"
#include "io/json_value.h"
#include "pipeline/preflight.h"
#include "pipeline/project.h"

#include <chrono>
#include <mutex>
#include <string>

namespace qb::cli {

class CliJob {
public:
    explicit CliJob(bool quiet);
    ~CliJob(); // restores the default SIGINT handler
    CliJob(const CliJob&) = delete;
    CliJob& operator=(const CliJob&) = delete;

    RunContext& context() { return m_ctx; }
    RunContext* operator->() { return &m_ctx; }

private:
    void print(const Progress& p);

    bool m_quiet;
    std::mutex m_mutex;
    std::string m_lastStage;
    std::chrono::steady_clock::time_point m_lastPrint{};
    RunContext m_ctx;
};

// Exit code of a failed workflow: 130 cancelled, else 1 (usage errors are caught before it runs).
int exitCode(const Error& error);
// fail(cmd, prefix + error + suffix) with exitCode(error).
int fail(const std::string& cmd, const Error& error, const std::string& prefix = {}, const std::string& suffix = {});

// Prints an export outcome: the human summary on stdout, or (json != nullptr) its JSON into *json;
// GPTQ analysis and warnings on stderr.
void reportExport(const std::string& cmd, const pipeline::ModelExportOutcome& outcome, io::JsonValue* json);
// The pre-flight estimate: with json, {"seconds", "peak_bytes", "available_bytes", "fits",
// "memory": {part: bytes}}; else one line "estimate: about ..., largest parts ..." on stdout.
io::JsonValue preflightJson(const pipeline::PreflightEstimate& e);
void printPreflight(const pipeline::PreflightEstimate& e, bool json);
// "KL divergence from the reference (perplexity P): mean ... nats; same top token ... %" (one line).
std::string klSummary(const eval::KlStats& kl, const std::string& reference);
// The usage error for a bad --gguf-type, or "" when the name is valid.
std::string ggufTypeUsageError(const std::string& name);

} // namespace qb::cli
