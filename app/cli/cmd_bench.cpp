// quantbench-cli bench: prefill throughput of the F32 forward pass and peak resident memory.

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "eval/perplexity.h"
#include "io/checkpoint.h"
#include "model/forward.h"
#include "pipeline/model_loader.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

namespace {

// Peak resident set size in MiB: VmHWM from /proc (Linux), else getrusage's ru_maxrss (KiB).
double peakRssMiB()
{
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return double(ru.ru_maxrss) / 1024.0;
}

int runBench(const std::vector<std::string>& argv)
{
    using namespace qb;
    const char* cmd = "bench";
    cli::CliArgs args(argv, {"ctx", "threads", "windows", "batch"}, {"json"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    const int ctx = int(args.intValue("ctx", 256, 2, 1 << 20));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    const int windows = int(args.intValue("windows", 4, 1, 1 << 20));
    const int batch = int(args.intValue("batch", 4, 1, 4096));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);

    model::setNumThreads(threads);
    const auto t0 = std::chrono::steady_clock::now();
    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    auto m = pipeline::loadModel(*ck);
    if (!m) return cli::fail(cmd, "cannot load model: " + m.error().toString());
    const double loadSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    // Deterministic pseudo-text: the forward pass cost does not depend on the ids.
    const std::int64_t V = (*m)->config().vocabSize;
    std::vector<std::int32_t> ids(std::size_t(windows) * std::size_t(ctx));
    std::uint64_t s = 0x9E3779B97F4A7C15ull;
    for (auto& id : ids) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        id = std::int32_t((s >> 33) % std::uint64_t(V));
    }
    auto w = eval::makeWindows(ids, ctx);
    if (!w) return cli::fail(cmd, w.error().toString());
    eval::PerplexityOptions po;
    po.batch = batch;
    // Warm-up on one window so first-touch allocation is not timed.
    eval::TokenWindows one{ctx, 1, std::vector<std::int32_t>(ids.begin(), ids.begin() + ctx)};
    if (auto warm = eval::evaluatePerplexity(**m, one, po); !warm)
        return cli::fail(cmd, warm.error().toString());
    auto r = eval::evaluatePerplexity(**m, *w, po);
    if (!r) return cli::fail(cmd, r.error().toString());
    const double rss = peakRssMiB();

    char buf[512];
    if (args.has("json")) {
        std::snprintf(buf, sizeof buf,
                      "{\"ctx\":%d,\"windows\":%d,\"threads\":%d,\"seconds\":%.4f,\"tokens_per_second\":%.1f,"
                      "\"load_seconds\":%.3f,\"peak_rss_mib\":%.1f}\n",
                      ctx, windows, model::numThreads(), r->seconds, r->tokensPerSecond, loadSeconds, rss);
    } else {
        std::snprintf(buf, sizeof buf,
                      "prefill: %.1f tokens/s  (%d windows x %d tokens in %.3f s, %d threads, batch %d)\n"
                      "load: %.3f s, F32 weights %.1f MiB\n"
                      "peak resident memory: %.1f MiB\n",
                      r->tokensPerSecond, windows, ctx, r->seconds, model::numThreads(), batch, loadSeconds,
                      double((*m)->bytes()) / (1024.0 * 1024.0), rss);
    }
    std::cout << buf << std::flush;
    return 0;
}

} // namespace

QB_CLI_COMMAND("bench", "prefill tokens/second and peak memory of the F32 forward pass",
               "Usage: quantbench-cli bench MODEL [--ctx 256] [--threads N] [--windows N] [--batch N] [--json]\n"
               "  MODEL        model directory or file\n"
               "  --ctx N      tokens per window (default 256)\n"
               "  --threads N  OpenMP/Eigen threads (default: all)\n"
               "  --windows N  windows to time after one warm-up window (default 4)\n"
               "  --batch N    windows per forward pass (default 4)\n"
               "  --json       machine-readable output\n",
               &runBench);
