#include "cli/cli_job.h"

#include "cli/cli_command.h"
#include "export/ggml_quantize.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>

namespace qb::cli {

namespace {

std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void onSigint(int) { g_interrupted.store(true); }

} // namespace

CliJob::CliJob(bool quiet) : m_quiet(quiet)
{
    g_interrupted.store(false);
    m_ctx.setSink([this](const Progress& p) { print(p); });
    m_ctx.setCancelSource([] { return g_interrupted.load(); });
    std::signal(SIGINT, onSigint);
}

CliJob::~CliJob() { std::signal(SIGINT, SIG_DFL); }

void CliJob::print(const Progress& p)
{
    if (m_quiet) return;
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(m_mutex);
    const bool newStage = p.stage != m_lastStage;
    if (!newStage && now - m_lastPrint < std::chrono::seconds(1)) return;
    m_lastStage = p.stage;
    m_lastPrint = now;
    char head[64];
    std::snprintf(head, sizeof head, "[%3d%%", int(p.overall * 100.0));
    std::string line = head;
    if (const auto eta = p.etaSeconds()) line += "  ETA " + formatDuration(*eta);
    line += "] " + p.stage;
    if (!p.detail.empty()) line += ": " + p.detail;
    std::cerr << line << "\n";
}

int exitCode(const Error& error) { return error.code == ErrorCode::Cancelled ? 130 : 1; }

int fail(const std::string& cmd, const Error& error, const std::string& prefix, const std::string& suffix)
{
    return fail(cmd, prefix + error.toString() + suffix, exitCode(error));
}

std::string klSummary(const eval::KlStats& kl, const std::string& reference)
{
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "KL divergence from %s (perplexity %.4f): mean %.6f ± %.6f, median %.6f, p99 %.6f, max %.6f nats; "
                  "same top token %.3f ± %.3f %% (%lld tokens)\n",
                  reference.c_str(), kl.referencePerplexity, kl.mean, kl.meanStderr, kl.median, kl.p99, kl.max,
                  100 * kl.top1Agreement, 100 * kl.top1AgreementStderr, (long long)kl.tokens);
    return buf;
}

std::string ggufTypeUsageError(const std::string& name)
{
    if (name == "auto" || exporting::parseGgufExportType(name)) return {};
    return "--gguf-type: " + pipeline::ggufExportTypeError();
}

io::JsonValue preflightJson(const pipeline::PreflightEstimate& e)
{
    io::JsonValue o;
    o.set("seconds", e.seconds);
    o.set("peak_bytes", double(e.peakBytes));
    o.set("mapped_bytes", double(e.mappedBytes));
    o.set("available_bytes", double(e.availableBytes));
    o.set("fits", e.fits());
    o.set("machine_macs_per_second", e.macsPerSecond);
    io::JsonValue parts(io::JsonObject{});
    for (const auto& [name, bytes] : e.memoryParts)
        parts.set(name, double(bytes));
    o.set("memory", std::move(parts));
    return o;
}

void printPreflight(const pipeline::PreflightEstimate& e, bool json)
{
    if (json) {
        io::JsonValue o;
        o.set("estimate", preflightJson(e));
        std::cout << io::toJsonText(o, -1) << "\n" << std::flush;
        return;
    }
    std::cout << "estimate: " << e.summary() << "\n";
    for (const auto& [name, bytes] : e.memoryParts)
        std::cout << "  " << name << ": " << pipeline::formatBytesShort(bytes) << "\n";
    if (!e.fits()) std::cout << "would be refused: " << e.refusal() << "\n";
    std::cout << std::flush;
}

void reportExport(const std::string& cmd, const pipeline::ModelExportOutcome& r, io::JsonValue* json)
{
    if (r.gptqAnalysis) std::cerr << r.gptqAnalysis->summary();
    for (const auto& w : r.warnings)
        std::cerr << "quantbench-cli " << cmd << ": warning: " << w << "\n";
    if (!json) {
        std::cout << r.summary() << std::flush;
        return;
    }
    io::JsonValue out;
    out.set("path", r.path);
    out.set("format", pipeline::exportFormatName(r.format));
    out.set("bytes", double(r.bytes));
    if (r.plannedBytes) out.set("planned_bytes", double(r.plannedBytes));
    if (r.gguf) {
        out.set("all_exact", r.gguf->allExact());
        double maxDiff = 0;
        io::JsonArray tensors;
        for (const auto& t : r.gguf->tensors) {
            maxDiff = std::max(maxDiff, t.maxAbsDiff);
            io::JsonValue e;
            e.set("name", t.name);
            e.set("hf_name", t.hfName);
            e.set("type", std::string(io::ggmlTypeName(int(t.type))));
            if (!t.planned.empty()) e.set("planned", t.planned);
            e.set("source", t.source);
            e.set("exact", t.exact);
            e.set("bytes", double(t.bytes));
            tensors.push_back(std::move(e));
        }
        out.set("max_abs_diff", maxDiff);
        out.set("tensors", std::move(tensors));
    } else if (r.gptq) {
        const auto& a = r.gptq->analysis;
        out.set("bits", a.bits);
        out.set("group_size", a.groupSize);
        out.set("desc_act", a.descAct);
        out.set("sym", a.sym);
        out.set("max_abs_change", a.maxAbsChange);
    } else if (r.safetensors) {
        out.set("dtype", dtypeName(r.safetensors->gridDtype));
    } else if (r.format == pipeline::ExportFormat::Qbproj) {
        out.set("tensors", double(r.projectTensors));
    }
    out.set("verified", r.verified);
    *json = std::move(out);
}

} // namespace qb::cli
