// quantbench-cli quantize: sequential layer-by-layer quantization with a plan (or one method for
// every linear), optional perplexity of the fake-quantized model and its KL divergence from the
// original.

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/cli_job.h"
#include "io/json_value.h"
#include "pipeline/importance.h"
#include "pipeline/quantize_checkpoint.h"
#include "pipeline/workflows.h"
#include "quant/container_grid.h"

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <iostream>

namespace {

std::string methodList()
{
    std::string s;
    for (const auto& t : qb::quant::allMethodTraits()) {
        if (!s.empty()) s += '|';
        s += t.id;
    }
    return s;
}

// --abits/--kvbits/--smooth/--rotate... into the plan's activation part (over a --plan's own);
// returns a usage error or "".
std::string applyActivationFlags(qb::cli::CliArgs& args, qb::pipeline::ActivationPlan& a)
{
    using namespace qb;
    auto bits = [&](const char* key, int& out) -> std::string {
        if (!args.has(key)) return "";
        const auto v = args.value(key);
        const int b = v ? std::atoi(v->c_str()) : -1;
        if (!v || std::to_string(b) != *v || b < 0 || b > 8 || (b > 0 && b < 2))
            return std::string("--") + key + " must be 0 (off) or 2..8";
        out = b;
        return "";
    };
    if (args.has("abits")) {
        int b = 0;
        if (auto e = bits("abits", b); !e.empty()) return e;
        a.defaults.bits = b;
        a.hasActivations = true;
    }
    if (args.has("kvbits") || args.has("qbits")) {
        if (auto e = bits("kvbits", a.kvBits); !e.empty()) return e;
        if (auto e = bits("qbits", a.qBits); !e.empty()) return e;
        a.hasKv = true;
    }
    if (args.has("aclip")) {
        const double c = std::atof(args.value("aclip")->c_str());
        if (!(c > 0 && c <= 1)) return "--aclip must be in (0, 1]";
        a.defaults.clip = c;
        a.hasActivations = true;
    }
    if (args.has("a-sym")) {
        a.defaults.sym = true;
        a.hasActivations = true;
    }
    if (args.has("astatic")) {
        a.defaults.staticRange = true;
        a.hasActivations = true;
    }
    if (auto g = args.value("agranularity")) {
        if (*g != "token" && *g != "tensor") return "--agranularity must be token or tensor";
        a.defaults.granularity = *g == "token" ? model::ActGranularity::PerToken : model::ActGranularity::PerTensor;
        a.hasActivations = true;
    }
    if (auto sm = args.value("smooth")) {
        char* end = nullptr;
        const double alpha = std::strtod(sm->c_str(), &end);
        if (end == sm->c_str() || *end != 0 || !(alpha >= 0 && alpha <= 1)) return "--smooth must be in [0, 1]";
        a.smoothAlpha = alpha;
        a.hasTransform = true;
    }
    if (auto r = args.value("rotate")) {
        if (*r == "none") a.rotate = pipeline::PlanRotation::None;
        else if (*r == "residual") a.rotate = pipeline::PlanRotation::Residual;
        else if (*r == "hadamard") a.rotate = pipeline::PlanRotation::Hadamard;
        else if (*r == "ruquant") a.rotate = pipeline::PlanRotation::Ruquant;
        else return "--rotate must be none, residual, hadamard or ruquant";
        a.hasTransform = true;
    }
    // RUQuant's construction and fine-tuning (with --method ruquant or --rotate ruquant).
    const bool ruquantFlags = args.has("ruquant-finetune") || args.has("ruquant-epochs") || args.has("ruquant-lr") ||
                              args.has("ruquant-block") || args.has("repo-givens");
    if (ruquantFlags && a.rotate != pipeline::PlanRotation::Ruquant)
        return "--ruquant-* and --repo-givens go with --method ruquant or --rotate ruquant";
    if (args.has("ruquant-finetune") || args.has("ruquant-epochs"))
        a.ruquant.finetuneEpochs = int(args.intValue("ruquant-epochs", 20, 1, 1000));
    if (args.has("ruquant-lr")) {
        const double lr = args.doubleValue("ruquant-lr", 1e-2);
        if (!(lr > 0 && lr <= 1)) return "--ruquant-lr must be in (0, 1]";
        a.ruquant.finetuneLr = lr;
    }
    if (args.has("ruquant-block")) {
        const int b = int(args.intValue("ruquant-block", 128, 2, 4096));
        if (b % 2) return "--ruquant-block must be even";
        a.ruquant.blockSize = b;
    }
    if (args.has("repo-givens")) a.ruquant.repoGivens = true;
    if (!args.ok()) return args.error();
    if (args.has("rotate-seed")) {
        a.seed = std::uint64_t(args.intValue("rotate-seed", 0, 0, (1LL << 62)));
        a.hasTransform = true;
    }
    return "";
}

int runQuantizeCmd(const std::vector<std::string>& argv)
{
    using namespace qb;
    const char* cmd = "quantize";
    cli::CliArgs args(argv,
                      {"calib",         "nsamples",   "seqlen",        "seed",         "plan",           "method",
                       "bits",          "group",      "eval",          "ctx",          "score",          "threads",
                       "batch",         "save-plan",  "out",           "format",       "gguf-type",      "target",
                       "embed-type",    "head-type",  "imatrix",       "memory-limit", "abits",          "kvbits",
                       "qbits",         "aclip",      "agranularity",  "smooth",       "rotate",         "rotate-seed",
                       "distill-steps", "distill-lr", "distill-batch", "distill-loss", "ruquant-epochs", "ruquant-lr",
                       "ruquant-block", "wclip",      "checkpoint-dir"},
                      {"sym", "act-order", "json", "round-grids", "no-kl", "dry-run", "a-sym", "astatic", "distill",
                       "distill-gains", "ruquant-finetune", "repo-givens", "resume"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    const auto calibPath = args.value("calib");
    if (!calibPath) return cli::fail(cmd, "--calib FILE is required", 2);
    pipeline::CalibrationOptions co;
    co.nsamples = int(args.intValue("nsamples", 128, 1, 1 << 20));
    co.seqlen = int(args.intValue("seqlen", 0, 2, 1 << 20)); // 0: the model's default, once it is open
    co.seed = std::uint64_t(args.intValue("seed", 0, 0, (1LL << 62)));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    const auto memoryLimit = args.bytesValue("memory-limit", 0);
    pipeline::PerplexityJobOptions po;
    po.ctx = int(args.intValue("ctx", 512, 2, 1 << 20));
    po.batch = int(args.intValue("batch", 4, 1, 4096));
    const auto mode = eval::parseScoreMode(args.value("score", "all"));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (!mode) return cli::fail(cmd, "--score must be 'all' or 'second-half'", 2);
    po.mode = *mode;
    const bool json = args.has("json");
    if (args.has("no-kl") && !args.has("eval")) return cli::fail(cmd, "--no-kl goes with --eval", 2);
    // Optional export of the result (--out PATH --format ...).
    std::optional<pipeline::ExportFormat> exportFormat;
    if (args.has("out") != args.has("format")) return cli::fail(cmd, "--out and --format go together", 2);
    if (args.has("out")) {
        exportFormat = pipeline::parseExportFormat(*args.value("format"));
        if (!exportFormat) return cli::fail(cmd, "--format must be gguf, gptq, safetensors or qbproj", 2);
    }
    // Per-layer checkpoints: --checkpoint-dir, else OUT.checkpoint beside an export.
    std::string checkpointDir = args.value("checkpoint-dir", "");
    if (checkpointDir.empty() && args.has("out")) { // beside the file or directory, never inside it
        std::string out = *args.value("out");
        while (out.size() > 1 && out.back() == '/')
            out.pop_back();
        checkpointDir = out + ".checkpoint";
    }
    if (args.has("resume") && checkpointDir.empty())
        return cli::fail(cmd,
                         "--resume needs --checkpoint-dir DIR (or --out PATH, whose checkpoint is PATH.checkpoint)", 2);
    // Refuse a bad --gguf-type before the (long) quantization, not after it.
    if (const auto e = cli::ggufTypeUsageError(args.value("gguf-type", "auto")); !e.empty())
        return cli::fail(cmd, e, 2);

    // The plan: a file, or one method for every decoder linear.
    pipeline::QuantPlan plan;
    if (args.has("plan")) {
        for (const char* k : {"method", "bits", "group", "sym", "act-order", "target"})
            if (args.has(k)) return cli::fail(cmd, std::string("--plan and --") + k + " are exclusive", 2);
        auto p = pipeline::loadQuantPlan(*args.value("plan"));
        if (!p) return cli::fail(cmd, "bad plan: " + p.error().toString(), 2);
        plan = std::move(*p);
    } else if (args.value("method") && *args.value("method") == "ruquant") {
        // RUQuant's setting as a preset plan (RTN weights with clipping, activations, K/V, smoothing,
        // RUQuant transforms); --abits defaults to --bits, other activation flags override it.
        for (const char* k : {"group", "sym", "act-order", "target"})
            if (args.has(k))
                return cli::fail(cmd, std::string("--method ruquant fixes its weight grid; drop --") + k, 2);
        const int bits = int(args.intValue("bits", 4, quant::kMinBits, quant::kMaxBits));
        const int abits = int(args.intValue("abits", bits, 2, 8));
        if (!args.ok()) return cli::fail(cmd, args.error(), 2);
        plan = pipeline::ruquantPresetPlan(bits, abits);
    } else {
        if (!args.has("method"))
            return cli::fail(cmd,
                             "give --plan PLAN.json, or --method " + methodList() + " and --bits B (or --target T)", 2);
        const auto method = quant::methodFromId(*args.value("method"));
        if (!method)
            return cli::fail(cmd, "unknown method '" + *args.value("method") + "' (valid: " + methodList() + ")", 2);
        // A storage target implies bits, group and symmetry: an agreeing --bits is accepted.
        std::optional<std::string> target;
        const quant::ContainerSpec* spec = nullptr;
        if (auto t = args.value("target")) {
            auto parsed = pipeline::parsePlanTarget(*t);
            if (!parsed) return cli::fail(cmd, "--target: " + parsed.error().message, 2);
            target = *parsed;
            spec = quant::findContainerSpec(*target);
            for (const char* k : {"group", "sym"})
                if (spec && args.has(k))
                    return cli::fail(cmd, std::string("--") + k + " is implied by --target " + *t + " (drop it)", 2);
        }
        if (!args.has("bits") && !spec)
            return cli::fail(cmd, "give --plan PLAN.json, or --method " + methodList() + " and --bits B", 2);
        // Fractional bits only for methods that allocate per channel (cmpq); the others refuse.
        const quant::MethodTraits& traits = quant::methodTraits(*method);
        const double bitsAsked = args.doubleValue("bits", spec ? spec->bits : 4);
        if (!args.ok()) return cli::fail(cmd, args.error(), 2);
        if (bitsAsked != std::floor(bitsAsked) && !traits.fractionalBits)
            return cli::fail(cmd,
                             "--bits " + *args.value("bits") + ": " + std::string(traits.id) +
                                 " takes integer bits (2..8); fractional averages need --method cmpq",
                             2);
        if (traits.fractionalBits ? !(bitsAsked >= 1 && bitsAsked <= quant::kMaxBits)
                                  : !(bitsAsked >= quant::kMinBits && bitsAsked <= quant::kMaxBits))
            return cli::fail(cmd,
                             "--bits must be in [" + std::to_string(traits.fractionalBits ? 1 : quant::kMinBits) +
                                 ", 8], got " + *args.value("bits"),
                             2);
        if (traits.codebooks && (spec || target))
            return cli::fail(cmd,
                             std::string(traits.id) + " stores per-channel codebooks, which no GGUF type or GPTQ "
                                                      "checkpoint can hold: drop --target",
                             2);
        const int bits = int(bitsAsked);
        if (spec && bits != spec->bits)
            return cli::fail(cmd,
                             "--bits " + std::to_string(bits) + " conflicts with --target " + *args.value("target") +
                                 ", which stores " + std::to_string(spec->bits) + "-bit codes",
                             2);
        std::optional<int> group;
        if (args.has("group")) group = int(args.intValue("group", 128, -1, 1 << 24));
        if (!args.ok()) return cli::fail(cmd, args.error(), 2);
        if (group && *group == 0) return cli::fail(cmd, "--group must be positive (or -1 for per channel)", 2);
        if (traits.codebooks && group)
            return cli::fail(cmd, std::string(traits.id) + " has no groups: drop --group", 2);
        plan = pipeline::uniformQuantPlanBits(*method, bitsAsked, group,
                                              args.has("sym") ? std::optional(true) : std::nullopt,
                                              args.has("act-order") ? std::optional(true) : std::nullopt);
        plan.defaults.target = target;
    }
    for (const auto& [key, slot] : {std::pair("embed-type", &plan.embedType), std::pair("head-type", &plan.headType)})
        if (auto t = args.value(key)) {
            auto parsed = pipeline::parsePlanTarget(*t);
            if (!parsed || *parsed == "none")
                return cli::fail(cmd, std::string("--") + key + ": not a GGUF type: " + *t, 2);
            *slot = *parsed;
        }
    if (const std::string e = applyActivationFlags(args, plan.activation); !e.empty()) return cli::fail(cmd, e, 2);
    if (args.has("wclip")) {
        const double c = args.doubleValue("wclip", 1.0);
        if (!args.ok() || !(c > 0 && c <= 1)) return cli::fail(cmd, "--wclip must be in (0, 1]", 2);
        plan.defaults.clip = c;
    }
    if (auto save = args.value("save-plan")) {
        Status st = pipeline::saveQuantPlan(plan, *save);
        if (!st.ok()) return cli::fail(cmd, st.error().toString());
    }

    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    if (co.seqlen == 0) co.seqlen = pipeline::defaultCalibrationLength(ck->config);
    // A plan that does not fit the model is a usage error, reported before any work.
    auto resolved = pipeline::resolveQuantPlan(plan, ck->config);
    if (!resolved) return cli::fail(cmd, "bad plan: " + resolved.error().toString(), 2);
    for (const auto& w : resolved->warnings)
        std::cerr << "quantbench-cli quantize: warning: " << w.detail << "\n";
    // An importance matrix that does not cover the plan is refused before the calibration runs.
    std::shared_ptr<const io::ImportanceMatrix> importance;
    if (auto path = args.value("imatrix")) {
        auto m = io::readImportanceMatrix(*path);
        if (!m) return cli::fail(cmd, "bad importance matrix: " + m.error().toString());
        Status st = pipeline::checkImportanceMatrix(*m, *resolved, *path);
        if (!st.ok()) return cli::fail(cmd, "bad importance matrix: " + st.error().toString());
        importance = std::make_shared<const io::ImportanceMatrix>(std::move(*m));
    }
    // With GGUF targets the file is known before anything runs: say how big it will be.
    std::optional<std::uint64_t> plannedBytes;
    if (resolved->ggufTargets) {
        auto planned = pipeline::planGgufExport(*ck, *resolved);
        if (!planned) return cli::fail(cmd, "bad plan: " + planned.error().toString(), 2);
        plannedBytes = planned->bytes;
        if (!json)
            std::printf("planned GGUF file: %llu bytes (%.3f MiB), decoder linears %.4f bits/weight, embedding %s, "
                        "head %s\n",
                        (unsigned long long)planned->bytes, double(planned->bytes) / (1024.0 * 1024.0),
                        resolved->bitsPerWeight, resolved->embedType.c_str(), resolved->headType.c_str());
    }

    pipeline::QuantizeRequest req;
    req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
    req.plan = plan;
    req.calibration = {*calibPath, co};
    if (auto ev = args.value("eval")) req.evalTextPath = *ev;
    req.evalOptions = po;
    req.klDivergence = !args.has("no-kl");
    req.options.threads = threads;
    req.options.importance = importance;
    req.options.keepCodes = exportFormat.has_value();
    // Exports rebuild from the codes; a transformed run also needs its embedding, norms and head.
    req.options.keepModel = req.evalTextPath.has_value() || plan.activation.transforms();
    req.memoryLimitBytes = memoryLimit;
    req.options.checkpoint.dir = checkpointDir;
    req.options.checkpoint.resume = args.has("resume");
    req.keepCheckpoint = true; // removed below, once the export is written too
    // NeUQI's lightweight distillation of the scales and zeros (pipeline/distill.h).
    if (args.has("distill")) {
        pipeline::DistillOptions d;
        d.steps = int(args.intValue("distill-steps", 0, 0, 1 << 24));
        d.batch = int(args.intValue("distill-batch", 1, 1, 1 << 16));
        d.lr = args.doubleValue("distill-lr", d.lr);
        d.normGains = args.has("distill-gains");
        const std::string loss = args.value("distill-loss", "kl");
        if (!args.ok()) return cli::fail(cmd, args.error(), 2);
        if (!(d.lr > 0 && d.lr < 1)) return cli::fail(cmd, "--distill-lr must be in (0, 1)", 2);
        if (loss != "kl" && loss != "mse") return cli::fail(cmd, "--distill-loss must be 'kl' or 'mse'", 2);
        d.loss = loss == "kl" ? model::DistillLoss::Kl : model::DistillLoss::HiddenMse;
        d.threads = threads;
        req.distill = d;
    } else {
        for (const char* k : {"distill-steps", "distill-lr", "distill-batch", "distill-loss", "distill-gains"})
            if (args.has(k)) return cli::fail(cmd, std::string("--") + k + " goes with --distill", 2);
    }
    if (args.has("dry-run")) {
        auto e = pipeline::preflightQuantizeRequest(req);
        if (!e) return cli::fail(cmd, e.error());
        cli::printPreflight(*e, json);
        return 0;
    }
    cli::CliJob job(json);
    auto q = pipeline::quantizeModel(req, &job.context());
    if (!q) {
        // Say where the finished layers are, so that the next run continues instead of redoing them.
        auto kept = checkpointDir.empty() ? Result<std::optional<pipeline::QuantizeCheckpointManifest>>(std::nullopt)
                                          : pipeline::readQuantizeCheckpointManifest(checkpointDir);
        if (kept.ok() && *kept && q.error().message.find("from another run") == std::string::npos &&
            q.error().message.find("interrupted quantize run") == std::string::npos)
            std::cerr << "quantbench-cli quantize: " << (*kept)->done << " of " << (*kept)->layers
                      << " layers are checkpointed in " << checkpointDir << ": add --resume to continue\n";
        return cli::fail(cmd, q.error());
    }
    for (const auto& w : q->loadWarnings)
        std::cerr << "quantbench-cli quantize: warning: " << w.toString() << "\n";
    if (const int resumed = q->result->resumedLayers; resumed > 0)
        std::cerr << "quantbench-cli quantize: resumed from " << checkpointDir << ": layers 0.." << resumed - 1
                  << " taken from the checkpoint\n";

    io::JsonValue exportJson;
    if (exportFormat) {
        pipeline::ExportRequest ex;
        ex.checkpoint = req.checkpoint;
        ex.run = {pipeline::describeQuantPlan(plan),
                  pipeline::quantPlanToJson(plan),
                  q->result,
                  q->perplexity ? std::optional(q->perplexity->perplexity) : std::nullopt,
                  q->seconds,
                  req.calibration.toJson(),
                  q->kl,
                  pipeline::defaultRunName(*q->result)};
        ex.target.out = *args.value("out");
        ex.target.format = *exportFormat;
        ex.target.ggufType = args.value("gguf-type", "auto");
        ex.target.roundGrids = args.has("round-grids");
        auto r = pipeline::exportRun(ex, &job.context());
        if (!r) {
            if (!checkpointDir.empty()) // the quantization is done: it need not run again
                std::cerr << "quantbench-cli quantize: every layer is checkpointed in " << checkpointDir
                          << ": add --resume to export without quantizing again\n";
            if (r.error().code == ErrorCode::Unsupported && *exportFormat == pipeline::ExportFormat::Gptq &&
                !ex.target.roundGrids)
                return cli::fail(cmd, r.error(), "", "; pass --round-grids to round");
            return cli::fail(cmd, r.error());
        }
        cli::reportExport(cmd, *r, json ? &exportJson : nullptr);
    }
    if (!checkpointDir.empty())
        if (Status st = pipeline::removeQuantizeCheckpoint(checkpointDir); !st.ok())
            std::cerr << "quantbench-cli quantize: warning: " << st.error().toString() << "\n";

    if (json) {
        io::JsonValue o = q->metricsJson();
        if (plannedBytes) o.set("planned_gguf_bytes", double(*plannedBytes));
        o.set("estimate", cli::preflightJson(q->preflight));
        if (exportFormat) o.set("export", exportJson);
        std::cout << io::toJsonText(o, -1) << "\n" << std::flush;
        return 0;
    }
    const pipeline::QuantizeResult& res = *q->result;
    std::printf("%-40s %-6s %4s %6s %8s %12s %12s\n", "tensor", "method", "bits", "group", "bpw", "rel. error",
                "proxy loss");
    for (const auto& r : res.tensors)
        std::printf("%-40s %-6s %4d %6d %8.3f %12.5f %12.5g\n", r.name.c_str(),
                    r.skipped ? "skip" : std::string(quant::methodTraits(r.method).id).c_str(), r.bits, r.groupSize,
                    r.bitsPerWeight, r.relativeError, r.proxyLoss);
    std::printf("\nbits per weight %.4f (decoder linears), size %.3f MiB, %.2f s (calibrate %.2f, load %.2f, hessian "
                "%.2f, search %.2f, solve %.2f, metrics %.2f, evaluate %.2f)\n",
                res.bitsPerWeight, double(res.sizeBytes) / (1024.0 * 1024.0), q->seconds, res.seconds.calibrate,
                res.seconds.load, res.seconds.hessian, res.seconds.search, res.seconds.solve, res.seconds.metrics,
                res.seconds.evaluate);
    if (const auto& ppl = q->perplexity)
        std::printf("perplexity %.4f (score %s, ctx %d, %lld windows)\n", ppl->perplexity,
                    eval::scoreModeName(ppl->mode), ppl->ctx, (long long)ppl->windows);
    if (const auto& d = q->distill)
        std::printf("distill: %s %.5f -> %.5f over %d steps of %d window(s), %d tensors trained, %.2f s\n",
                    d->loss == model::DistillLoss::Kl ? "KL" : "hidden MSE", d->lossBefore, d->lossAfter, d->steps,
                    d->batch, d->trainedTensors, d->seconds);
    if (const auto& kl = q->kl) std::fputs(cli::klSummary(*kl, "the original").c_str(), stdout);
    if (const std::string a = res.plan.activation.describe(); !a.empty()) {
        std::printf("activations: %s\n", a.c_str());
        for (const std::string& n : res.notes)
            std::printf("  %s\n", n.c_str());
        if (!res.onlineTransforms.empty())
            std::printf("  online (not storable in a plain weights file): %s\n", res.onlineTransforms.c_str());
    }
    std::fflush(stdout);
    return 0;
}

} // namespace

QB_CLI_COMMAND(
    "quantize", "quantize a model layer by layer (RTN, GPTQ, NeUQI, CMPQ (reconstruction)) with a plan",
    "Usage: quantbench-cli quantize MODEL --calib FILE [--nsamples 128] [--seqlen 2048] [--seed 0]\n"
    "         (--plan PLAN.json | --method rtn|gptq|neuqi|cmpq (--bits B [--group G] [--sym] | --target T)\n"
    "          [--act-order] [--wclip C] | --method ruquant --bits B --abits A [--ruquant-finetune [--ruquant-epochs "
    "N]\n"
    "          [--ruquant-lr X]] [--ruquant-block B] [--repo-givens]) [--embed-type T] [--head-type T]\n"
    "         [--eval FILE --ctx N --score all|second-half [--no-kl]] [--batch N] [--threads N]\n"
    "         [--imatrix FILE] [--save-plan FILE] [--json] [--dry-run] [--memory-limit SIZE]\n"
    "         [--out PATH --format gguf|gptq|safetensors|qbproj [--gguf-type auto|q4_0|...] [--round-grids]]\n"
    "         [--abits A [--aclip C] [--a-sym] [--astatic] [--agranularity token|tensor]] [--kvbits B]\n"
    "         [--qbits B] [--smooth ALPHA] [--rotate none|residual|hadamard|ruquant [--rotate-seed S]]\n"
    "         [--distill [--distill-steps N] [--distill-lr X] [--distill-batch N] [--distill-loss kl|mse]\n"
    "          [--distill-gains]] [--checkpoint-dir DIR] [--resume]\n"
    "  --calib FILE   calibration text; --nsamples random windows of --seqlen tokens (seeded); the\n"
    "                 default 128 x 2048 (the GPTQ/NeUQI papers') is capped at the model's context;\n"
    "                 --dry-run shows what it costs\n"
    "  --plan FILE    JSON plan: {\"default\": {\"method\": \"neuqi\", \"bits\": 4, \"group_size\": 128},\n"
    "                 \"rules\": [{\"match\": \"model.layers.*.mlp.down_proj\", \"bits\": 8}, ...]}\n"
    "  --method M     one method for every decoder linear; neuqi = GPTQ with NeUQI initialisation\n"
    "  --bits B       2..8;  --group G: columns per group (-1 = per channel; default 128)\n"
    "                 cmpq = CMPQ (reconstruction): bits per input channel from activation scores,\n"
    "                 per-channel k-means codebooks, F16 outliers; --bits is the average with\n"
    "                 everything counted and may be fractional (--bits 2.5); the other methods refuse\n"
    "                 fractions. Its knobs (levels, score, kmeans, act_outliers, quant_outliers,\n"
    "                 error_feedback, bits_scope) are plan keys\n"
    "  --sym          symmetric grid (rtn, gptq);  --act-order: GPTQ act-order (on for neuqi)\n"
    "  --wclip C      rtn/gptq: the Min-Max weight range times C in (0, 1] (plan key \"clip\")\n"
    "  --target T     storage target: solve inside a GGUF block type (gguf:Q4_K, Q5_K, Q6_K, Q3_K, Q2_K,\n"
    "                 Q8_0, Q5_1, Q5_0, Q4_1, Q4_0), so the GGUF export is exact; it implies bits, group\n"
    "                 and symmetry (an agreeing --bits is accepted). gguf:F16/BF16/F32 keep the linears\n"
    "                 unquantized. gptq: the --bits/--group/--sym grid with f16 scales and integer\n"
    "                 zero-points, so a GPTQ export is exact. Plans set \"target\" per tensor (rules)\n"
    "                 and embed_type / head_type.\n"
    "  --embed-type T, --head-type T   GGUF types of the token embedding and output head (default with\n"
    "                 a target: as llama.cpp's Q4_K_M, the target's type and Q6_K)\n"
    "  --imatrix FILE llama.cpp importance matrix (GGUF or legacy .dat, e.g. from `imatrix`): its mean\n"
    "                 x^2 per column weights the grid fits instead of the Hessian diagonal - RTN searches\n"
    "                 its scales under it (a symmetric free grid stays Min-Max), every method's fit inside\n"
    "                 a --target container is weighted by it. Every quantized tensor needs an entry.\n"
    "  --eval FILE    perplexity of the fake-quantized model (--ctx, --score, --batch as `eval`) and,\n"
    "                 on the same windows, its KL divergence from the original model (mean ± error,\n"
    "                 median, p99, max in nats) and how often both predict the same top token;\n"
    "                 the original's decoder layers are mapped for it: both models stay compact (the\n"
    "                 original in its stored encoding, the quantized one as its codes)\n"
    "  --no-kl        perplexity only (half the evaluation time, the original model is not loaded)\n"
    "  --save-plan F  write the effective plan as JSON\n"
    "  --dry-run      print the estimated time and peak memory (and its parts), quantize nothing\n"
    "  --memory-limit SIZE  refuse when the estimate exceeds SIZE (800M, 16G; default: the memory\n"
    "                 available); the message says what to change\n"
    "  --json         print {perplexity, kl, bits_per_weight, size_bytes, seconds, timings, tensors[]}\n"
    "  --abits A      weight-and-activation quantization (W8A8, W6A6, W4A4): every linear input\n"
    "                 fake-quantized to A bits (2..8, 0 off), per token, asymmetric, dynamic Min-Max;\n"
    "                 --aclip C scales the range (RUQuant's lac), --a-sym symmetric, --astatic one\n"
    "                 range per input calibrated once, --agranularity tensor one range per batch.\n"
    "                 Per group (qkv, o, gate_up, down) settings are plan keys (\"activations\")\n"
    "  --kvbits B     keys and values quantized per (head, token); --qbits B the queries too\n"
    "  --smooth ALPHA SmoothQuant: per-channel factors max|x|^a / max|W|^(1-a) folded into the norms\n"
    "                 and v/up_proj (online for the o_proj input under GQA); 0.6 is usual\n"
    "  --rotate R     residual: a randomized Hadamard rotation of the residual stream folded into\n"
    "                 every weight (norm gains fused first); hadamard: also QuaRot's online Hadamards\n"
    "                 on the o_proj and down_proj inputs and per head on q/k (not storable in GGUF);\n"
    "                 ruquant: RUQuant's data-driven transforms per layer and input (online)\n"
    "  --method ruquant  RUQuant (W4A4, W6A6): RTN weights per channel (range x0.8 at <= 4 bits),\n"
    "                 activations per token at --abits (default --bits; clip 0.9 at <= 4 bits), Q/K/V\n"
    "                 per (head, token) at --abits, SmoothQuant 0.6, then per layer and input greedy\n"
    "                 block rotations (Householder + Givens, B 128), zig-zag permutation and a global\n"
    "                 Householder reflection; --ruquant-finetune trains each reflection (AdamW,\n"
    "                 --ruquant-epochs 20, --ruquant-lr 0.01) on the layer output error; --ruquant-block\n"
    "                 sets B (even; the largest even divisor of a width not above it is used);\n"
    "                 --repo-givens reproduces the public code's mirrored Givens rotations\n"
    "  --out PATH     export the result: gguf (grids stored exactly, --gguf-type forces a type),\n"
    "                 gptq (HF GPTQ directory; --round-grids rounds what GPTQ cannot hold instead of\n"
    "                 refusing), safetensors (fake-quantized HF directory), qbproj (project file)\n"
    "  --distill      then train every group's scale and zero with the codes frozen (NeUQI's light\n"
    "                 distillation): KL from the original model's next-token distributions on the\n"
    "                 calibration windows (--distill-loss mse: final hidden states), AdamW with a cosine\n"
    "                 schedule; --distill-steps (default one pass over the windows), --distill-lr (3e-4),\n"
    "                 --distill-batch windows per step (1), --distill-gains also trains the RMSNorm\n"
    "                 gains; parameters stay storable in the --target container (K-quants stay as\n"
    "                 they are). --eval then scores the distilled model; --json adds \"distill\"\n"
    "                 {loss_before, loss_after, steps, seconds, step_loss, ...}\n"
    "  --checkpoint-dir DIR  after every decoder layer, write its results and the next layer's inputs\n"
    "                 atomically into DIR (default with --out: PATH.checkpoint); removed when the run\n"
    "                 (and its export) succeeded. A DIR holding a checkpoint is refused without --resume\n"
    "  --resume       continue the interrupted run whose checkpoint is in DIR (killed, crashed, Ctrl-C):\n"
    "                 same model, plan, calibration, --batch and --threads, or it is refused with what\n"
    "                 differs; the result is bit-identical to an uninterrupted run (none in DIR: start)\n"
    "Ctrl-C cancels cleanly (exit 130).\n",
    &runQuantizeCmd);
