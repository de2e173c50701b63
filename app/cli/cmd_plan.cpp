// quantbench-cli sensitivity / plan: the sensitivity atlas of a model (every decoder linear under
// every candidate setting, from one calibration pass; cached), and a mixed-precision plan allocated
// from it to a budget (pipeline/sensitivity.h, pipeline/allocator.h).

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/cli_job.h"
#include "io/json_value.h"
#include "model/forward.h"
#include "pipeline/allocator.h"
#include "pipeline/workflows.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace {

using namespace qb;

// $XDG_CACHE_HOME/quantbench, else ~/.cache/quantbench, else "" (no cache).
std::string defaultCacheDir()
{
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/quantbench";
    if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/quantbench";
    return {};
}

const std::set<std::string> kSensitivityOptions{
    "calib", "nsamples", "seqlen", "seed",    "candidates",        "target",     "cache",    "threads",
    "batch", "eval",     "ctx",    "measure", "measure-candidate", "embed-type", "head-type"};
const std::set<std::string> kSensitivityFlags{"json", "no-cache", "recompute"};

// The request both commands build from their flags; "" on success, else the usage error.
std::string sensitivityRequest(cli::CliArgs& args, pipeline::SensitivityRequest& req)
{
    if (args.positionals().size() != 1) return "expected one MODEL argument";
    const auto calibPath = args.value("calib");
    if (!calibPath) return "--calib FILE is required";
    pipeline::CalibrationOptions co;
    co.nsamples = int(args.intValue("nsamples", 128, 1, 1 << 20));
    co.seqlen = int(args.intValue("seqlen", 0, 2, 1 << 20));
    co.seed = std::uint64_t(args.intValue("seed", 0, 0, (1LL << 62)));
    req.options.threads = int(args.intValue("threads", 0, 0, 4096));
    req.options.batch = int(args.intValue("batch", 8, 1, 4096));
    req.measureCount = int(args.intValue("measure", 0, 0, 100000));
    req.evalOptions.ctx = int(args.intValue("ctx", 512, 2, 1 << 20));
    if (!args.ok()) return args.error();
    std::string target = args.value("target", "none");
    if (args.has("candidates") && args.has("target")) return "--candidates and --target are exclusive";
    auto candidates = args.has("candidates") ? pipeline::parseSensitivityCandidates(*args.value("candidates"))
                                             : pipeline::defaultSensitivityCandidates(target);
    if (!candidates) return candidates.error().message;
    req.candidates = std::move(*candidates);
    for (const auto& [key, slot] :
         {std::pair("embed-type", &req.options.embedType), std::pair("head-type", &req.options.headType)})
        if (auto t = args.value(key)) {
            auto parsed = pipeline::parsePlanTarget(*t);
            if (!parsed || *parsed == "none" || *parsed == "gptq")
                return std::string("--") + key + ": not a GGUF type: " + *t;
            *slot = *parsed;
        }
    if (req.measureCount > 0 && !args.has("eval"))
        return "--measure N needs --eval FILE (the text the KL is measured on)";
    if (auto ev = args.value("eval")) req.evalTextPath = *ev;
    req.measureCandidate = args.value("measure-candidate", "");
    req.cacheDir = args.has("no-cache") ? std::string() : args.value("cache", defaultCacheDir());
    req.recompute = args.has("recompute");
    req.calibration = {*calibPath, co};
    return {};
}

// Opens the model and runs the workflow; nullopt after printing the failure (code in *exit).
std::optional<pipeline::SensitivityOutcome> runSensitivity(const char* cmd, pipeline::SensitivityRequest& req,
                                                           const std::string& modelPath, bool json, int* exit)
{
    auto ck = io::openCheckpoint(modelPath);
    if (!ck) {
        *exit = cli::fail(cmd, "cannot open model: " + ck.error().toString());
        return std::nullopt;
    }
    auto& seqlen = req.calibration.options.seqlen;
    if (seqlen == 0) seqlen = pipeline::defaultCalibrationLength(ck->config);
    req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
    cli::CliJob job(json);
    auto r = pipeline::sensitivityAnalysis(req, &job.context());
    if (!r) {
        *exit = cli::fail(cmd, r.error());
        return std::nullopt;
    }
    if (!json)
        std::fprintf(stderr, "quantbench-cli %s: sensitivity atlas %s%s\n", cmd,
                     r->fromCache ? "from the cache " : "computed in ",
                     r->fromCache ? r->cachePath.c_str() : (std::to_string(r->atlas.seconds) + " s").c_str());
    if (!json && r->droppedMeasurements)
        std::fprintf(stderr,
                     "quantbench-cli %s: %zu measurements in the cache were made on another evaluation text or "
                     "context: measured again\n",
                     cmd, r->droppedMeasurements);
    return std::move(*r);
}

int runSensitivityCmd(const std::vector<std::string>& argv)
{
    const char* cmd = "sensitivity";
    std::set<std::string> values = kSensitivityOptions;
    values.insert("out");
    cli::CliArgs args(argv, values, kSensitivityFlags);
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    pipeline::SensitivityRequest req;
    if (const std::string e = sensitivityRequest(args, req); !e.empty()) return cli::fail(cmd, e, 2);
    const bool json = args.has("json");
    int exit = 0;
    auto r = runSensitivity(cmd, req, args.positionals().front(), json, &exit);
    if (!r) return exit;
    const pipeline::SensitivityAtlas& a = r->atlas;
    if (auto out = args.value("out")) {
        Status st = pipeline::saveSensitivityAtlas(a, *out);
        if (!st.ok()) return cli::fail(cmd, st.error());
    }
    if (json) {
        io::JsonValue o = pipeline::sensitivityAtlasToJson(a);
        o.set("from_cache", r->fromCache);
        o.set("cache_path", r->cachePath);
        std::cout << io::toJsonText(o, -1) << "\n" << std::flush;
        return 0;
    }
    // Relative output error per tensor and candidate.
    std::printf("%-40s", "tensor");
    for (const auto& c : a.candidates)
        std::printf(" %11s", c.label.size() > 11 ? c.label.substr(c.label.size() - 11).c_str() : c.label.c_str());
    std::printf("\n");
    for (std::size_t t = 0; t < a.tensors.size(); ++t) {
        std::printf("%-40s", a.tensors[t].name.c_str());
        for (const auto& cell : a.cells[t])
            std::printf(" %11.5f", cell.relativeError);
        std::printf("\n");
    }
    std::printf("\nrelative output error sqrt(tr(dW H dW^T) / tr(W H W^T)) on %d calibration windows of %d tokens\n",
                a.calibrationWindows, a.calibrationSeqlen);
    if (!a.measured.empty()) {
        std::printf("\nmeasured (only this tensor quantized):\n%-40s %-14s %12s %12s %10s %10s\n", "tensor",
                    "candidate", "predicted", "KL (nats)", "ppl", "top-1");
        for (const auto& m : a.measured)
            std::printf("%-40s %-14s %12.6f %12.6f %10.4f %9.2f%%\n", a.tensors[m.tensor].name.c_str(),
                        a.candidates[m.candidate].label.c_str(), a.cells[m.tensor][m.candidate].proxyLoss, m.klMean,
                        m.perplexity, 100.0 * m.top1);
        if (auto rho = a.rankCorrelation())
            std::printf("rank correlation (Spearman) of the proxy loss and the measured KL: %.3f\n", *rho);
    }
    std::fflush(stdout);
    return 0;
}

int runPlanCmd(const std::vector<std::string>& argv)
{
    const char* cmd = "plan";
    std::set<std::string> values = kSensitivityOptions;
    for (const char* k : {"budget", "out", "pin", "min-bits", "max-bits"})
        values.insert(k);
    std::set<std::string> flags = kSensitivityFlags;
    flags.insert("tie-qkv");
    flags.insert("proxy-only");
    cli::CliArgs args(argv, values, flags);
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    const auto budgetText = args.value("budget");
    if (!budgetText) return cli::fail(cmd, "--budget is required (e.g. 3.5bpw or 2.1GB)", 2);
    auto budget = pipeline::parseAllocationBudget(*budgetText);
    if (!budget) return cli::fail(cmd, budget.error().message, 2);
    const auto out = args.value("out");
    if (!out) return cli::fail(cmd, "--out PLAN.json is required", 2);
    pipeline::SensitivityRequest req;
    if (const std::string e = sensitivityRequest(args, req); !e.empty()) return cli::fail(cmd, e, 2);
    // Constraints: --pin NAME=CANDIDATE[,NAME=CANDIDATE...], --min-bits/--max-bits KIND=B[,...].
    pipeline::AllocationConstraints k;
    k.tieQkv = args.has("tie-qkv");
    if (auto pins = args.value("pin")) {
        std::string s = *pins;
        std::size_t start = 0;
        while (start <= s.size()) {
            const std::size_t end = std::min(s.find(',', start), s.size());
            const std::string item = s.substr(start, end - start);
            const std::size_t eq = item.find('=');
            if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
                return cli::fail(cmd, "--pin takes NAME=CANDIDATE items, e.g. model.layers.0.mlp.down_proj=F16", 2);
            k.pinned[item.substr(0, eq)] = item.substr(eq + 1);
            start = end + 1;
        }
    }
    for (const auto& [key, slot] : {std::pair("min-bits", &k.minBits), std::pair("max-bits", &k.maxBits)})
        if (auto v = args.value(key)) {
            std::string s = *v;
            std::size_t start = 0;
            while (start <= s.size()) {
                const std::size_t end = std::min(s.find(',', start), s.size());
                const std::string item = s.substr(start, end - start);
                const std::size_t eq = item.find('=');
                bool ok = false;
                if (eq != std::string::npos)
                    for (model::Linear l : model::kAllLinears) {
                        std::string name = model::linearName(l);
                        name = name.substr(name.find('.') + 1); // "q_proj"
                        if (item.substr(0, eq) == name || item.substr(0, eq) == name.substr(0, name.find('_'))) {
                            (*slot)[l] = std::atoi(item.c_str() + eq + 1);
                            ok = (*slot)[l] >= 2 && (*slot)[l] <= 32;
                        }
                    }
                if (!ok)
                    return cli::fail(cmd,
                                     std::string("--") + key +
                                         " takes KIND=BITS items (kinds q k v o gate up down), e.g. down=4",
                                     2);
                start = end + 1;
            }
        }
    const bool json = args.has("json");
    int exit = 0;
    auto r = runSensitivity(cmd, req, args.positionals().front(), json, &exit);
    if (!r) return exit;
    if (args.has("proxy-only")) r->atlas.measured.clear();
    const pipeline::SensitivityAtlas& a = r->atlas;
    auto alloc = pipeline::allocateToBudget(a, *budget, k);
    if (!alloc) return cli::fail(cmd, alloc.error());
    const pipeline::QuantPlan plan = pipeline::allocationToPlan(a, *alloc);
    // The plan must resolve to the sizes allocated (it is what `quantize --plan` will run).
    auto resolved = pipeline::resolveQuantPlan(plan, req.checkpoint->config);
    if (!resolved)
        return cli::fail(cmd, "internal error: the allocated plan does not resolve: " + resolved.error().toString());
    Status st = pipeline::saveQuantPlan(plan, *out);
    if (!st.ok()) return cli::fail(cmd, st.error());
    // The best uniform candidate within the same budget, for comparison.
    const std::optional<pipeline::Allocation> uniform = pipeline::bestUniformWithin(a, *budget);
    const std::string uniformLabel = uniform ? a.candidates[uniform->choice.front()].label : std::string();
    auto front = pipeline::paretoFront(a, k);
    if (json) {
        io::JsonValue o;
        o.set("plan", *out);
        o.set("budget", pipeline::describeBudget(*budget));
        o.set("bits_per_weight", alloc->bitsPerWeight);
        o.set("resolved_bits_per_weight", resolved->bitsPerWeight);
        o.set("size_bytes", double(alloc->totalBytes));
        o.set("predicted_damage", alloc->damage);
        o.set("rules", int(plan.rules.size()));
        if (uniform) {
            io::JsonValue u;
            u.set("candidate", uniformLabel);
            u.set("bits_per_weight", uniform->bitsPerWeight);
            u.set("size_bytes", double(uniform->totalBytes));
            u.set("predicted_damage", uniform->damage);
            o.set("best_uniform", u);
        }
        if (front) {
            io::JsonArray pts;
            for (const auto& p : *front) {
                io::JsonValue q;
                q.set("bits_per_weight", p.bitsPerWeight);
                q.set("size_bytes", double(p.totalBytes));
                q.set("predicted_damage", p.damage);
                pts.push_back(std::move(q));
            }
            o.set("pareto", io::JsonValue(std::move(pts)));
        }
        o.set("atlas_from_cache", r->fromCache);
        std::cout << io::toJsonText(o, -1) << "\n" << std::flush;
        return 0;
    }
    std::printf("wrote %s: %.4f bits/weight over the decoder linears, %.3f MB in all, predicted damage %.6g "
                "(%zu rules; budget %s)\n",
                out->c_str(), alloc->bitsPerWeight, double(alloc->totalBytes) / 1e6, alloc->damage, plan.rules.size(),
                pipeline::describeBudget(*budget).c_str());
    if (uniform)
        std::printf("best uniform setting within the budget: %s, %.4f bits/weight, predicted damage %.6g\n",
                    uniformLabel.c_str(), uniform->bitsPerWeight, uniform->damage);
    std::vector<std::size_t> count(a.candidates.size(), 0);
    for (std::size_t c : alloc->choice)
        ++count[c];
    for (std::size_t c = 0; c < a.candidates.size(); ++c)
        if (count[c]) std::printf("  %-16s %zu tensors\n", a.candidates[c].label.c_str(), count[c]);
    std::fflush(stdout);
    return 0;
}

const char* kCommonUsage =
    "  --calib FILE   calibration text (--nsamples 128, --seqlen: min(2048, the model's context), --seed 0)\n"
    "  --target none|gguf|gptq   default candidates for that export: free GPTQ grids 2..8 bits (none),\n"
    "                 GPTQ inside Q2_K..Q8_0 (gguf; the size is the GGUF file's with --embed-type\n"
    "                 (Q4_K) and --head-type (Q6_K)), GPTQ-storable 2/3/4/8 bits g128 (gptq); each with F16\n"
    "  --candidates LIST   instead: comma-separated method:bits[:group][:sym|:gptq], method:TYPE (GGUF\n"
    "                 block type, e.g. gptq:Q4_K), F16 - e.g. rtn:4:128,gptq:3:64,neuqi:2:64,F16\n"
    "  --eval FILE --measure N [--measure-candidate C] [--ctx 512]   also the true effect of N tensors\n"
    "                 (spread over the predicted ranking) quantized alone at candidate C (default: the\n"
    "                 smallest): KL divergence from the original and perplexity; the rank correlation\n"
    "                 of predicted damage and measured KL is printed\n"
    "  --cache DIR    where atlases are cached by model + calibration + candidates (default\n"
    "                 $XDG_CACHE_HOME/quantbench or ~/.cache/quantbench); --no-cache; --recompute\n"
    "  --threads N, --batch N (calibration windows per forward call), --json\n";

const std::string kSensitivityUsage =
    std::string("Usage: quantbench-cli sensitivity MODEL --calib FILE [--target none|gguf|gptq | --candidates LIST]\n"
                "         [--eval FILE --measure N] [--out ATLAS.json] [--json] ...\n"
                "  The sensitivity atlas: one calibration pass through the original model; at every decoder\n"
                "  linear, its input Hessian H, and the tensor quantized with every candidate (the quantize\n"
                "  job's own solver): relative output error sqrt(tr(dW H dW^T)/tr(W H W^T)), proxy loss\n"
                "  1/2 tr(dW H dW^T) and bits per weight. The predicted damage the planner sums is the proxy\n"
                "  loss, scaled per tensor by the measured KL (--measure) where there is one.\n") +
    kCommonUsage + "  --out FILE     also write the atlas JSON there\n";

const std::string kPlanUsage =
    std::string(
        "Usage: quantbench-cli plan MODEL --calib FILE --budget 3.5bpw|2.1GB --out PLAN.json\n"
        "         [--target none|gguf|gptq | --candidates LIST] [--pin NAME=CAND,...]\n"
        "         [--min-bits KIND=B,...] [--max-bits KIND=B,...] [--tie-qkv] [--eval FILE --measure N] [--json] ...\n"
        "  Allocates one candidate per decoder linear so that the summed predicted damage (from the\n"
        "  sensitivity atlas, computed or read from the cache) is smallest within the budget:\n"
        "  average bits per weight over the decoder linears (3.5 or 3.5bpw), or the whole model's\n"
        "  size (2.1GB, 800MB, 1.5GiB; with --target gguf, the GGUF file's tensor data).\n"
        "  Multiple-choice knapsack by its Lagrangian path plus a fill step: within one tensor's step\n"
        "  of the budget. Writes a plan for `quantize --plan` (most common setting as the default, one\n"
        "  rule per other tensor) and prints the best uniform candidate within the same budget.\n"
        "  --pin NAME=CAND  keep a tensor at a candidate (counted in the budget)\n"
        "  --min-bits / --max-bits KIND=B   bounds per kind (q k v o gate up down)\n"
        "  --tie-qkv        one setting for q, k and v of a layer (runtimes that fuse them)\n"
        "  --proxy-only     ignore measured KL (the plain proxy loss decides)\n"
        "  --json           {plan, bits_per_weight, size_bytes, predicted_damage, best_uniform, pareto[]}\n") +
    kCommonUsage;

} // namespace

QB_CLI_COMMAND("sensitivity", "per-tensor damage of every candidate setting (cached atlas; optional true KL)",
               kSensitivityUsage.c_str(), &runSensitivityCmd);
QB_CLI_COMMAND("plan", "allocate a mixed-precision plan to a bit or size budget from the sensitivity atlas",
               kPlanUsage.c_str(), &runPlanCmd);
