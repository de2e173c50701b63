// quantbench-cli quantize: sequential layer-by-layer quantization with a plan (or one method for
// every linear), optional perplexity of the fake-quantized model.

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/export_support.h"
#include "eval/perplexity.h"
#include "io/checkpoint.h"
#include "io/json_value.h"
#include "io/tokenizer.h"
#include "model/forward.h"
#include "pipeline/calibration.h"
#include "pipeline/model_loader.h"
#include "pipeline/perplexity_job.h"
#include "pipeline/project.h"
#include "pipeline/quant_plan.h"
#include "pipeline/quantize_job.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>

namespace {

std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void onSigint(int) { g_interrupted.store(true); }

std::string methodList()
{
    std::string s;
    for (const auto& t : qb::quant::allMethodTraits()) {
        if (!s.empty()) s += '|';
        s += t.id;
    }
    return s;
}

int runQuantizeCmd(const std::vector<std::string>& argv)
{
    using namespace qb;
    const char* cmd = "quantize";
    cli::CliArgs args(argv,
                      {"calib", "nsamples", "seqlen", "seed", "plan", "method", "bits", "group", "eval", "ctx", "score",
                       "threads", "batch", "save-plan", "out", "format", "gguf-type"},
                      {"sym", "act-order", "json", "round-grids"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    const auto calibPath = args.value("calib");
    if (!calibPath) return cli::fail(cmd, "--calib FILE is required", 2);
    pipeline::CalibrationOptions co;
    co.nsamples = int(args.intValue("nsamples", 128, 1, 1 << 20));
    co.seqlen = int(args.intValue("seqlen", 256, 2, 1 << 20));
    co.seed = std::uint64_t(args.intValue("seed", 0, 0, (1LL << 62)));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    pipeline::PerplexityJobOptions po;
    po.ctx = int(args.intValue("ctx", 512, 2, 1 << 20));
    po.batch = int(args.intValue("batch", 4, 1, 4096));
    const auto mode = eval::parseScoreMode(args.value("score", "all"));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (!mode) return cli::fail(cmd, "--score must be 'all' or 'second-half'", 2);
    po.mode = *mode;
    const bool json = args.has("json");
    // Optional export of the result (--out PATH --format ...).
    std::optional<cli::ExportFormat> exportFormat;
    if (args.has("out") != args.has("format")) return cli::fail(cmd, "--out and --format go together", 2);
    if (args.has("out")) {
        exportFormat = cli::parseExportFormat(*args.value("format"));
        if (!exportFormat) return cli::fail(cmd, "--format must be gguf, gptq, safetensors or qbproj", 2);
    }
    // Refuse a bad --gguf-type before the (long) quantization, not after it.
    if (const auto t = args.value("gguf-type"); t && *t != "auto" && !exporting::parseGgufExportType(*t))
        return cli::fail(cmd, "--gguf-type: " + pipeline::ggufExportTypeError(), 2);

    // The plan: a file, or one method for every decoder linear.
    pipeline::QuantPlan plan;
    if (args.has("plan")) {
        for (const char* k : {"method", "bits", "group", "sym", "act-order"})
            if (args.has(k)) return cli::fail(cmd, std::string("--plan and --") + k + " are exclusive", 2);
        auto p = pipeline::loadQuantPlan(*args.value("plan"));
        if (!p) return cli::fail(cmd, "bad plan: " + p.error().toString(), 2);
        plan = std::move(*p);
    } else {
        if (!args.has("method") || !args.has("bits"))
            return cli::fail(cmd, "give --plan PLAN.json, or --method " + methodList() + " and --bits B", 2);
        const auto method = quant::methodFromId(*args.value("method"));
        if (!method)
            return cli::fail(cmd, "unknown method '" + *args.value("method") + "' (valid: " + methodList() + ")", 2);
        const int bits = int(args.intValue("bits", 4, quant::kMinBits, quant::kMaxBits));
        std::optional<int> group;
        if (args.has("group")) group = int(args.intValue("group", 128, -1, 1 << 24));
        if (!args.ok()) return cli::fail(cmd, args.error(), 2);
        if (group && *group == 0) return cli::fail(cmd, "--group must be positive (or -1 for per channel)", 2);
        plan = pipeline::uniformQuantPlan(*method, bits, group, args.has("sym") ? std::optional(true) : std::nullopt,
                                          args.has("act-order") ? std::optional(true) : std::nullopt);
    }
    if (auto save = args.value("save-plan")) {
        Status st = pipeline::saveQuantPlan(plan, *save);
        if (!st.ok()) return cli::fail(cmd, st.error().toString());
    }

    const std::string modelPath = args.positionals().front();
    auto ck = io::openCheckpoint(modelPath);
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    auto resolved = pipeline::resolveQuantPlan(plan, ck->config);
    if (!resolved) return cli::fail(cmd, "bad plan: " + resolved.error().toString(), 2);
    for (const auto& w : resolved->warnings) std::cerr << "quantbench-cli quantize: warning: " << w.detail << "\n";
    auto tok = io::loadCheckpointTokenizer(*ck);
    if (!tok) return cli::fail(cmd, "cannot load tokenizer: " + tok.error().toString());
    auto calibText = pipeline::readTextFile(*calibPath);
    if (!calibText) return cli::fail(cmd, "cannot read calibration text: " + calibText.error().toString());
    std::optional<std::string> evalText;
    if (auto ev = args.value("eval")) {
        auto t = pipeline::readTextFile(*ev);
        if (!t) return cli::fail(cmd, "cannot read eval text: " + t.error().toString());
        evalText = std::move(*t);
    }

    // Progress on stderr (stage/detail changes only); Ctrl-C cancels through the RunContext.
    std::mutex printMutex;
    std::string lastLine;
    RunContext rc([&](const Progress& p) {
        if (json) return;
        std::string line = "[" + p.stage + "] " + p.detail;
        std::lock_guard lock(printMutex);
        if (line == lastLine) return;
        lastLine = line;
        std::cerr << line << "\n";
    });
    rc.setCancelSource([] { return g_interrupted.load(); });
    std::signal(SIGINT, onSigint);
    auto cancelled = [&](const Error& e) { return e.code == ErrorCode::Cancelled; };

    const auto t0 = std::chrono::steady_clock::now();
    if (threads > 0) model::setNumThreads(threads);
    auto calib = pipeline::buildCalibrationSet(*tok, *calibText, co, &rc, *calibPath);
    if (!calib) return cli::fail(cmd, calib.error().toString(), cancelled(calib.error()) ? 130 : 1);
    pipeline::LoadOptions lo;
    lo.loadLayers = false; // decoder layers come one at a time
    std::vector<pipeline::LoadWarning> loadWarnings;
    auto base = pipeline::loadModel(*ck, &rc, &loadWarnings, lo);
    if (!base) return cli::fail(cmd, "cannot load model: " + base.error().toString(), cancelled(base.error()) ? 130 : 1);
    for (const auto& w : loadWarnings) std::cerr << "quantbench-cli quantize: warning: " << w.toString() << "\n";
    pipeline::QuantizeJobOptions qo;
    qo.threads = threads;
    qo.keepCodes = exportFormat.has_value();
    auto q = pipeline::runQuantize(**base, &*ck, *resolved, *calib, qo, &rc);
    if (!q) return cli::fail(cmd, q.error().toString(), cancelled(q.error()) ? 130 : 1);
    const double quantSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::optional<eval::PerplexityResult> ppl;
    if (evalText) {
        auto r = pipeline::runPerplexity(*q->model, *tok, *evalText, po, &rc);
        if (!r) return cli::fail(cmd, "evaluation: " + r.error().toString(), cancelled(r.error()) ? 130 : 1);
        ppl = *r;
    }

    io::JsonValue exportJson;
    if (exportFormat) {
        const std::string out = *args.value("out");
        int rc2 = 0;
        if (*exportFormat == cli::ExportFormat::Qbproj) {
            io::JsonValue cal;
            cal.set("text", *calibPath);
            cal.set("nsamples", co.nsamples);
            cal.set("seqlen", co.seqlen);
            cal.set("seed", double(co.seed));
            auto bundle = cli::bundleFromRun(*ck, *q, plan, std::move(cal),
                                             ppl ? std::optional(ppl->perplexity) : std::nullopt, quantSeconds);
            Status st = exporting::writeProjectBundle(out, bundle, {}, &rc);
            if (!st.ok()) return cli::fail(cmd, st.error().toString(), cancelled(st.error()) ? 130 : 1);
            exportJson.set("path", out);
            exportJson.set("format", "qbproj");
            if (!json) std::cout << "wrote " << out << " (project, " << bundle.tensors.size() << " quantized tensors)\n";
        } else {
            const auto grids = pipeline::gridsFromResult(*q);
            cli::ModelExportRequest req;
            req.out = out;
            req.format = *exportFormat;
            req.ggufType = args.value("gguf-type", "auto");
            req.roundGrids = args.has("round-grids");
            rc2 = cli::writeModelExport(
                cmd, *ck, grids.lookup(), req, &rc, json ? &exportJson : nullptr);
        }
        if (rc2 != 0) return rc2;
    }
    std::signal(SIGINT, SIG_DFL);

    if (json) {
        io::JsonValue o;
        if (exportFormat) o.set("export", exportJson);
        if (ppl) o.set("perplexity", ppl->perplexity);
        o.set("bits_per_weight", q->bitsPerWeight);
        o.set("size_bytes", double(q->sizeBytes));
        o.set("seconds", quantSeconds);
        io::JsonValue t;
        t.set("calibrate", q->seconds.calibrate);
        t.set("hessian", q->seconds.hessian);
        t.set("search", q->seconds.search);
        t.set("solve", q->seconds.solve);
        t.set("evaluate", q->seconds.evaluate);
        if (ppl) t.set("perplexity", ppl->seconds);
        o.set("timings", std::move(t));
        io::JsonArray tensors;
        for (const auto& r : q->tensors) {
            io::JsonValue e;
            e.set("name", r.name);
            e.set("method", r.skipped ? std::string("none") : std::string(quant::methodTraits(r.method).id));
            e.set("bits", r.bits);
            e.set("group_size", r.groupSize);
            e.set("bits_per_weight", r.bitsPerWeight);
            e.set("relative_error", r.relativeError);
            e.set("proxy_loss", r.proxyLoss);
            tensors.push_back(std::move(e));
        }
        o.set("tensors", std::move(tensors));
        io::JsonArray warns;
        for (const auto& w : q->plan.warnings) warns.push_back(io::JsonValue(w.detail));
        o.set("warnings", std::move(warns));
        std::cout << io::toJsonText(o, -1) << "\n" << std::flush;
        return 0;
    }
    std::printf("%-40s %-6s %4s %6s %8s %12s %12s\n", "tensor", "method", "bits", "group", "bpw", "rel. error",
                "proxy loss");
    for (const auto& r : q->tensors)
        std::printf("%-40s %-6s %4d %6d %8.3f %12.5f %12.5g\n", r.name.c_str(),
                    r.skipped ? "skip" : std::string(quant::methodTraits(r.method).id).c_str(), r.bits, r.groupSize,
                    r.bitsPerWeight, r.relativeError, r.proxyLoss);
    std::printf("\nbits per weight %.4f (decoder linears), size %.3f MiB, %.2f s (calibrate %.2f, hessian %.2f, "
                "search %.2f, solve %.2f, evaluate %.2f)\n",
                q->bitsPerWeight, double(q->sizeBytes) / (1024.0 * 1024.0), quantSeconds, q->seconds.calibrate,
                q->seconds.hessian, q->seconds.search, q->seconds.solve, q->seconds.evaluate);
    if (ppl)
        std::printf("perplexity %.4f (score %s, ctx %d, %lld windows)\n", ppl->perplexity, eval::scoreModeName(ppl->mode),
                    ppl->ctx, (long long)ppl->windows);
    std::fflush(stdout);
    return 0;
}

} // namespace

QB_CLI_COMMAND("quantize", "quantize a model layer by layer (RTN, GPTQ, NeUQI) with a plan",
               "Usage: quantbench-cli quantize MODEL --calib FILE [--nsamples 128] [--seqlen 256] [--seed 0]\n"
               "         (--plan PLAN.json | --method rtn|gptq|neuqi --bits B [--group G] [--sym] [--act-order])\n"
               "         [--eval FILE --ctx N --score all|second-half] [--batch N] [--threads N]\n"
               "         [--save-plan FILE] [--json]\n"
               "         [--out PATH --format gguf|gptq|safetensors|qbproj [--gguf-type auto|q4_0|...] [--round-grids]]\n"
               "  --calib FILE   calibration text; --nsamples random windows of --seqlen tokens (seeded)\n"
               "  --plan FILE    JSON plan: {\"default\": {\"method\": \"neuqi\", \"bits\": 4, \"group_size\": 128},\n"
               "                 \"rules\": [{\"match\": \"model.layers.*.mlp.down_proj\", \"bits\": 8}, ...]}\n"
               "  --method M     one method for every decoder linear; neuqi = GPTQ with NeUQI initialisation\n"
               "  --bits B       2..8;  --group G: columns per group (-1 = per channel; default 128)\n"
               "  --sym          symmetric grid (rtn, gptq);  --act-order: GPTQ act-order (on for neuqi)\n"
               "  --eval FILE    perplexity of the fake-quantized model (--ctx, --score, --batch as `eval`)\n"
               "  --save-plan F  write the effective plan as JSON\n"
               "  --json         print {perplexity, bits_per_weight, size_bytes, seconds, timings, tensors[]}\n"
               "  --out PATH     export the result: gguf (grids stored exactly, --gguf-type forces a type),\n"
               "                 gptq (HF GPTQ directory; --round-grids rounds what GPTQ cannot hold instead of\n"
               "                 refusing), safetensors (fake-quantized HF directory), qbproj (project file)\n"
               "Ctrl-C cancels cleanly (exit 130).\n",
               &runQuantizeCmd);
