// quantbench-cli eval: perplexity of a model on a text file (non-overlapping windows).

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/cli_job.h"
#include "io/json_value.h"
#include "model/forward.h"
#include "pipeline/workflows.h"

#include <cstdio>
#include <iostream>

namespace {

int runEval(const std::vector<std::string>& argv)
{
    using namespace qb;
    const char* cmd = "eval";
    cli::CliArgs args(argv, {"text", "ctx", "score", "threads", "batch", "reference", "memory-limit", "kernels"},
                      {"json", "dry-run"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    const auto textPath = args.value("text");
    if (!textPath) return cli::fail(cmd, "--text FILE is required", 2);
    pipeline::PerplexityJobOptions opt;
    opt.ctx = int(args.intValue("ctx", 512, 2, 1 << 20));
    opt.threads = int(args.intValue("threads", 0, 0, 4096));
    opt.batch = int(args.intValue("batch", 4, 1, 4096));
    const auto memoryLimit = args.bytesValue("memory-limit", 0);
    const auto mode = eval::parseScoreMode(args.value("score", "all"));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (!mode) return cli::fail(cmd, "--score must be 'all' or 'second-half'", 2);
    opt.mode = *mode;
    const std::string kernels = args.value("kernels", "f32");
    if (kernels != "f32" && kernels != "int8") return cli::fail(cmd, "--kernels must be f32 or int8", 2);
    opt.int8Products = kernels == "int8";

    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    pipeline::EvaluateRequest req;
    req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
    req.textPath = *textPath;
    req.options = opt;
    if (const auto ref = args.value("reference")) {
        auto rk = io::openCheckpoint(*ref);
        if (!rk) return cli::fail(cmd, "cannot open the reference model: " + rk.error().toString());
        req.reference = std::make_shared<const io::Checkpoint>(std::move(*rk));
    }
    req.memoryLimitBytes = memoryLimit;
    if (args.has("dry-run")) {
        auto e = pipeline::preflightEvaluateRequest(req);
        if (!e) return cli::fail(cmd, e.error());
        cli::printPreflight(*e, args.has("json"));
        return 0;
    }
    cli::CliJob job(args.has("json"));
    auto out = pipeline::evaluateModel(req, &job.context());
    if (!out) return cli::fail(cmd, out.error());
    for (const auto& w : out->loadWarnings)
        std::cerr << "quantbench-cli eval: warning: " << w.toString() << "\n";
    const eval::PerplexityResult* r = &out->perplexity;

    if (args.has("json")) {
        io::JsonValue o;
        o.set("perplexity", r->perplexity);
        o.set("tokens_scored", double(r->tokensScored));
        o.set("windows", double(r->windows));
        o.set("seconds", r->seconds);
        o.set("tokens_per_second", r->tokensPerSecond);
        if (opt.int8Products) o.set("int8_weights", double(r->int8Weights));
        if (out->kl) o.set("kl", pipeline::klStatsJson(*out->kl));
        o.set("estimate", cli::preflightJson(out->preflight));
        std::cout << io::toJsonText(o, -1) << "\n" << std::flush;
        return 0;
    }
    std::printf("perplexity %.4f  (score %s, ctx %d, %lld windows, %lld tokens scored)\n"
                "%.2f s, %.1f tokens/s, %d threads\n",
                r->perplexity, eval::scoreModeName(r->mode), r->ctx, (long long)r->windows, (long long)r->tokensScored,
                r->seconds, r->tokensPerSecond, model::numThreads());
    if (opt.int8Products)
        std::printf("kernels: int8 for %d Q4_0/Q8_0 linears (8-bit activations, integer dot products)\n",
                    r->int8Weights);
    if (out->kl) std::fputs(cli::klSummary(*out->kl, "the reference").c_str(), stdout);
    std::fflush(stdout);
    return 0;
}

} // namespace

QB_CLI_COMMAND("eval", "perplexity of a model on a text file",
               "Usage: quantbench-cli eval MODEL --text FILE --ctx N [--score all|second-half]\n"
               "                          [--reference MODEL] [--threads N] [--batch N] [--json]\n"
               "                          [--dry-run] [--memory-limit SIZE] [--kernels f32|int8]\n"
               "  --dry-run    print the estimated time and peak memory (and what they are made of), run nothing\n"
               "  --memory-limit SIZE  refuse when the estimate exceeds SIZE (800M, 16G; default: the memory\n"
               "               available); the message says what to change\n"
               "  MODEL        model directory or file (tokenizer.json must sit beside it)\n"
               "  --text FILE  UTF-8 text; cut into non-overlapping windows of N tokens from the start,\n"
               "               trailing partial window dropped (BOS set per window if the tokenizer adds one)\n"
               "  --ctx N      window length in tokens (default 512)\n"
               "  --score      all: every token but each window's first (default);\n"
               "               second-half: only the second half of each window (llama-perplexity)\n"
               "  --reference MODEL  also the KL divergence of MODEL's next-token distributions from this\n"
               "               one's (e.g. an exported GGUF against its original) and how often their top\n"
               "               token agrees, in the same pass; both held in their stored encoding\n"
               "  --threads N  OpenMP/Eigen threads (default: all)\n"
               "  --batch N    windows per forward pass (default 4)\n"
               "  --kernels int8  GGUF Q4_0/Q8_0 linears multiply as llama.cpp does: activations quantized to\n"
               "               8 bits per block of 32 (Q8_0), integer dot products (AVX-512 VNNI when the CPU\n"
               "               has it); default f32: F32 activations, so a quantized model's error is its weights'\n"
               "  --json       print {perplexity, tokens_scored, windows, seconds, tokens_per_second[, kl]}\n",
               &runEval);
