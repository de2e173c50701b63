// quantbench-cli eval: perplexity of a model on a text file (non-overlapping windows).

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/cli_job.h"
#include "model/forward.h"
#include "pipeline/workflows.h"

#include <cstdio>
#include <iostream>

namespace {

int runEval(const std::vector<std::string>& argv)
{
    using namespace qb;
    const char* cmd = "eval";
    cli::CliArgs args(argv, {"text", "ctx", "score", "threads", "batch"}, {"json"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    const auto textPath = args.value("text");
    if (!textPath) return cli::fail(cmd, "--text FILE is required", 2);
    pipeline::PerplexityJobOptions opt;
    opt.ctx = int(args.intValue("ctx", 512, 2, 1 << 20));
    opt.threads = int(args.intValue("threads", 0, 0, 4096));
    opt.batch = int(args.intValue("batch", 4, 1, 4096));
    const auto mode = eval::parseScoreMode(args.value("score", "all"));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (!mode) return cli::fail(cmd, "--score must be 'all' or 'second-half'", 2);
    opt.mode = *mode;

    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    pipeline::EvaluateRequest req;
    req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
    req.textPath = *textPath;
    req.options = opt;
    cli::CliJob job(args.has("json"));
    auto out = pipeline::evaluateModel(req, &job.context());
    if (!out) return cli::fail(cmd, out.error());
    for (const auto& w : out->loadWarnings)
        std::cerr << "quantbench-cli eval: warning: " << w.toString() << "\n";
    const eval::PerplexityResult* r = &out->perplexity;

    char buf[512];
    if (args.has("json")) {
        std::snprintf(buf, sizeof buf,
                      "{\"perplexity\":%.6f,\"tokens_scored\":%lld,\"windows\":%lld,\"seconds\":%.4f,"
                      "\"tokens_per_second\":%.1f}\n",
                      r->perplexity, (long long)r->tokensScored, (long long)r->windows, r->seconds, r->tokensPerSecond);
    } else {
        std::snprintf(buf, sizeof buf,
                      "perplexity %.4f  (score %s, ctx %d, %lld windows, %lld tokens scored)\n"
                      "%.2f s, %.1f tokens/s, %d threads\n",
                      r->perplexity, eval::scoreModeName(r->mode), r->ctx, (long long)r->windows,
                      (long long)r->tokensScored, r->seconds, r->tokensPerSecond, model::numThreads());
    }
    std::cout << buf << std::flush;
    return 0;
}

} // namespace

QB_CLI_COMMAND("eval", "perplexity of a model on a text file",
               "Usage: quantbench-cli eval MODEL --text FILE --ctx N [--score all|second-half]\n"
               "                          [--threads N] [--batch N] [--json]\n"
               "  MODEL        model directory or file (tokenizer.json must sit beside it)\n"
               "  --text FILE  UTF-8 text; cut into non-overlapping windows of N tokens from the start,\n"
               "               trailing partial window dropped (BOS set per window if the tokenizer adds one)\n"
               "  --ctx N      window length in tokens (default 512)\n"
               "  --score      all: every token but each window's first (default);\n"
               "               second-half: only the second half of each window (llama-perplexity)\n"
               "  --threads N  OpenMP/Eigen threads (default: all)\n"
               "  --batch N    windows per forward pass (default 4)\n"
               "  --json       print {perplexity, tokens_scored, windows, seconds, tokens_per_second}\n",
               &runEval);
