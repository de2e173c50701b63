// quantbench-cli bench: prefill throughput of the forward pass (weights in their stored encoding, or
// --f32) and peak resident memory after load and after evaluating;
// --quantize: per-method quantization stage timings and peak memory (issue 4 item 7);
// --quantize --reference: our GPTQ pipeline against the PyTorch reference (IST-DASLab
// llama_sequential, tests/quant/bench/gptq_reference.py) on the same model, calibration token ids,
// threads, bits and group, side by side, with the wall-time ratio (issue 12 item 3);
// --gptq-synthetic: the GPTQ solve alone on random shapes (compare tests/quant/bench/gptq_reference.py).
// --hadamard: the fast (randomized) Hadamard transform of activation rows against a dense GEMM by the
// same matrix (issue 14 item 3).

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "eval/perplexity.h"
#include "io/checkpoint.h"
#include "io/json_value.h"
#include "model/forward.h"
#include "model/hadamard.h"
#include "model/int8_product.h"
#include "io/tokenizer.h"
#include "pipeline/activation_setup.h"
#include "pipeline/calibration.h"
#include "pipeline/distill.h"
#include "pipeline/model_loader.h"
#include "pipeline/parallel_for.h"
#include "pipeline/perplexity_job.h"
#include "pipeline/quant_plan.h"
#include "pipeline/quantize_job.h"
#include "pipeline/ruquant.h"
#include "quant/cmpq.h"
#include "quant/gptq.h"

#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

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

std::vector<std::string> splitList(const std::string& s)
{
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ','))
        if (!item.empty()) out.push_back(item);
    return out;
}

struct MethodRun {
    std::string method;
    double calibrate = 0, load = 0, hessian = 0, search = 0, solve = 0, metrics = 0, evaluate = 0, total = 0,
           rssMiB = 0;
    std::string error;
};

// One quantization run of `method` in the current process; the caller is a fresh fork child, so
// VmHWM is this method's own peak (model load + calibration + quantize).
MethodRun quantizeOnce(const std::string& modelPath, const std::string& calibPath, const std::string& method,
                       const qb::pipeline::CalibrationOptions& co, int bits, int group, int threads)
{
    using namespace qb;
    MethodRun r;
    r.method = method;
    const auto m = quant::methodFromId(method);
    if (!m) {
        r.error = "unknown method";
        return r;
    }
    if (threads > 0) model::setNumThreads(threads);
    auto ck = io::openCheckpoint(modelPath);
    if (!ck) return r.error = ck.error().toString(), r;
    auto plan = pipeline::resolveQuantPlan(pipeline::uniformQuantPlan(*m, bits, group), ck->config);
    if (!plan) return r.error = plan.error().toString(), r;
    auto tok = io::loadCheckpointTokenizer(*ck);
    if (!tok) return r.error = tok.error().toString(), r;
    auto text = pipeline::readTextFile(calibPath);
    if (!text) return r.error = text.error().toString(), r;
    auto calib = pipeline::buildCalibrationSet(*tok, *text, co, nullptr, calibPath);
    if (!calib) return r.error = calib.error().toString(), r;
    pipeline::LoadOptions lo;
    lo.loadLayers = false;
    auto base = pipeline::loadModel(*ck, nullptr, nullptr, lo);
    if (!base) return r.error = base.error().toString(), r;
    pipeline::QuantizeJobOptions qo;
    qo.threads = threads;
    qo.keepCodes = false;
    auto q = pipeline::runQuantize(**base, &*ck, *plan, *calib, qo, nullptr);
    if (!q) return r.error = q.error().toString(), r;
    r.calibrate = q->seconds.calibrate;
    r.load = q->seconds.load;
    r.hessian = q->seconds.hessian;
    r.search = q->seconds.search;
    r.solve = q->seconds.solve;
    r.metrics = q->seconds.metrics;
    r.evaluate = q->seconds.evaluate;
    r.total = q->seconds.total;
    r.rssMiB = peakRssMiB();
    return r;
}

// Forks; the child runs body(write end of a pipe), then exits 0 unless body exits first. The
// parent gets the child's pid and all it wrote; nullopt when the pipe or the fork failed.
struct ChildOutput {
    pid_t pid = 0;
    std::string data;
};
std::optional<ChildOutput> runChild(const std::function<void(int fd)>& body)
{
    int fd[2];
    if (pipe(fd) != 0) return std::nullopt;
    std::cout << std::flush;
    const pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return std::nullopt;
    }
    if (pid == 0) {
        close(fd[0]);
        body(fd[1]);
        _exit(0);
    }
    close(fd[1]);
    ChildOutput out{pid, {}};
    char buf[4096];
    for (ssize_t k; (k = read(fd[0], buf, sizeof buf)) > 0;)
        out.data.append(buf, std::size_t(k));
    close(fd[0]);
    return out;
}

// Runs quantizeOnce in a forked child (nothing OpenMP has run in the parent yet) and reads the
// figures back over a pipe.
MethodRun quantizeInChild(const std::string& modelPath, const std::string& calibPath, const std::string& method,
                          const qb::pipeline::CalibrationOptions& co, int bits, int group, int threads)
{
    MethodRun r;
    r.method = method;
    const auto child = runChild([&](int fd) {
        const MethodRun c = quantizeOnce(modelPath, calibPath, method, co, bits, group, threads);
        char buf[1024];
        const int len =
            std::snprintf(buf, sizeof buf, "%.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.6g\n%s", c.calibrate, c.load,
                          c.hessian, c.search, c.solve, c.metrics, c.evaluate, c.total, c.rssMiB, c.error.c_str());
        const ssize_t ignored = write(fd, buf, std::size_t(std::clamp(len, 0, int(sizeof buf) - 1)));
        (void)ignored;
        close(fd);
    });
    if (!child) return r.error = "pipe or fork failed", r;
    int status = 0;
    waitpid(child->pid, &status, 0);
    std::istringstream in(child->data);
    if (!(in >> r.calibrate >> r.load >> r.hessian >> r.search >> r.solve >> r.metrics >> r.evaluate >> r.total >>
          r.rssMiB))
        return r.error = "child failed (status " + std::to_string(status) + ")", r;
    std::string rest;
    std::getline(in, rest);
    std::getline(in, r.error);
    return r;
}

// The reference driver's figures (seconds; peak RSS of the Python process from wait4).
struct ReferenceRun {
    double embed = 0, forward = 0, solve = 0, output = 0, total = 0, rssMiB = 0;
    std::string torch, error;
};

#ifndef QB_REFERENCE_SCRIPT
#define QB_REFERENCE_SCRIPT "tests/quant/bench/gptq_reference.py"
#endif

// Runs argv (argv[0] a path) with `env` added, reads its stdout, and parses the last line that
// holds a JSON object; stderr passes through.
ReferenceRun runReferenceProcess(const std::vector<std::string>& argv,
                                 const std::vector<std::pair<std::string, std::string>>& env)
{
    ReferenceRun r;
    const auto child = runChild([&](int fd) {
        dup2(fd, STDOUT_FILENO);
        close(fd);
        for (const auto& [k, v] : env)
            setenv(k.c_str(), v.c_str(), 1);
        std::vector<char*> args;
        for (const std::string& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        execv(args[0], args.data());
        _exit(127);
    });
    if (!child) return r.error = "pipe or fork failed", r;
    const std::string& out = child->data;
    int status = 0;
    rusage ru{};
    wait4(child->pid, &status, 0, &ru);
    r.rssMiB = double(ru.ru_maxrss) / 1024.0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return r.error = argv[0] + " " + argv[1] + " failed (" +
                         (WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status)) +
                                                  (WEXITSTATUS(status) == 127 ? ": could not be started" : "")
                                            : "signal " + std::to_string(WTERMSIG(status))) +
                         ")",
               r;
    std::string line;
    std::istringstream lines(out);
    for (std::string l; std::getline(lines, l);)
        if (!l.empty() && l.front() == '{') line = l;
    auto json = qb::io::parseJson(line, "reference output");
    if (!json || !json->isObject()) return r.error = "no JSON line in the reference output: " + out, r;
    auto number = [&](const char* key) {
        const qb::io::JsonValue* v = json->find(key);
        return v && v->isNumber() ? v->asNumber() : 0.0;
    };
    r.embed = number("embed");
    r.forward = number("forward");
    r.solve = number("solve");
    r.output = number("output");
    r.total = number("total");
    if (const qb::io::JsonValue* t = json->find("torch"); t && t->isString()) r.torch = t->asString();
    return r;
}

// Writes the calibration token ids as little-endian int32, window-major (the reference's --ids).
bool writeTokenIds(const std::string& path, const std::vector<std::int32_t>& ids)
{
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(ids.data()), std::streamsize(ids.size() * sizeof(std::int32_t)));
    return bool(f);
}

// Builds the calibration set the quantize run uses (the same function and options, so the same
// windows) for the reference.
qb::Result<qb::pipeline::CalibrationSet> benchCalibration(const std::string& modelPath, const std::string& calibPath,
                                                          const qb::pipeline::CalibrationOptions& co)
{
    using namespace qb;
    QB_TRY(ck, io::openCheckpoint(modelPath));
    QB_TRY(tok, io::Tokenizer::fromFile(ck->tokenizerPath));
    QB_TRY(text, pipeline::readTextFile(calibPath));
    return pipeline::buildCalibrationSet(*tok, *text, co, nullptr, calibPath);
}

int runQuantizeBench(qb::cli::CliArgs& args, const char* cmd)
{
    using namespace qb;
    const std::string modelPath = args.positionals().front();
    std::string calibPath;
    if (auto c = args.value("calib")) {
        calibPath = *c;
    } else {
        std::filesystem::path p(modelPath);
        calibPath = ((std::filesystem::is_directory(p) ? p : p.parent_path()) / "calib.txt").string();
    }
    pipeline::CalibrationOptions co;
    co.nsamples = int(args.intValue("nsamples", 128, 1, 1 << 20));
    co.seqlen = int(args.intValue("seqlen", 256, 2, 1 << 20));
    const int bits = int(args.intValue("bits", 3, quant::kMinBits, quant::kMaxBits));
    const int group = int(args.intValue("group", 128, -1, 1 << 24));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    const int repeat = int(args.intValue("repeat", 1, 1, 100));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (group == 0) return cli::fail(cmd, "--group must be positive (or -1 for per channel)", 2);
    const bool reference = args.has("reference");
    const auto methods = splitList(args.value("methods", reference ? "gptq" : "rtn,gptq,neuqi"));
    if (reference && methods != std::vector<std::string>{"gptq"})
        return cli::fail(cmd, "--reference compares GPTQ only (drop --methods or give --methods gptq)", 2);
    // Each repeat runs every method once, in turn: a burst of load on the machine (or a slow
    // phase of a shared host) hits them alike. The order reverses from one repeat to the next
    // (A B, B A, ...): on the 2-core development machine, in some phases, the method run second
    // was 2-9% faster in pair after pair (the cause was not established), so a fixed order could
    // favour one. Min over repeats, stage by stage; with two methods also the ratio of their
    // totals within each repeat (run back to back: a slow phase of the host, which moves the
    // minima, mostly hits both).
    std::vector<MethodRun> runs(methods.size());
    std::vector<std::vector<double>> totals(methods.size());
    for (int i = 0; i < repeat; ++i) {
        for (std::size_t t = 0; t < methods.size(); ++t) {
            const std::size_t k = i % 2 ? methods.size() - 1 - t : t;
            const std::string& m = methods[k];
            MethodRun r = quantizeInChild(modelPath, calibPath, m, co, bits, group, threads);
            if (!r.error.empty()) return cli::fail(cmd, m + ": " + r.error);
            totals[k].push_back(r.total);
            MethodRun& best = runs[k];
            if (i == 0) {
                best = r;
                continue;
            }
            best.calibrate = std::min(best.calibrate, r.calibrate);
            best.load = std::min(best.load, r.load);
            best.hessian = std::min(best.hessian, r.hessian);
            best.search = std::min(best.search, r.search);
            best.solve = std::min(best.solve, r.solve);
            best.metrics = std::min(best.metrics, r.metrics);
            best.evaluate = std::min(best.evaluate, r.evaluate);
            best.total = std::min(best.total, r.total);
            best.rssMiB = std::min(best.rssMiB, r.rssMiB);
        }
    }
    ReferenceRun ref;
    if (reference) {
        std::filesystem::path dir(modelPath);
        if (!std::filesystem::is_directory(dir)) dir = dir.parent_path();
        if (!std::filesystem::exists(dir / "config.json"))
            return cli::fail(cmd, "--reference needs a Hugging Face model folder (config.json + safetensors)");
        auto calib = benchCalibration(modelPath, calibPath, co);
        if (!calib) return cli::fail(cmd, calib.error().toString());
        const std::string ids = args.value("save-ids", (std::filesystem::temp_directory_path() /
                                                        ("quantbench-bench-ids-" + std::to_string(getpid()) + ".i32"))
                                                           .string());
        if (!writeTokenIds(ids, calib->ids)) return cli::fail(cmd, "cannot write " + ids);
        const int refThreads = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
        std::vector<std::string> argv = {args.value("python", "/usr/bin/python3"),
                                         args.value("reference-script", QB_REFERENCE_SCRIPT),
                                         "--model",
                                         dir.string(),
                                         "--ids",
                                         ids,
                                         "--seqlen",
                                         std::to_string(co.seqlen),
                                         "--threads",
                                         std::to_string(refThreads),
                                         "--bits",
                                         std::to_string(bits),
                                         "--group",
                                         std::to_string(group)};
        // torch's own threads follow --threads; a BLAS with its own pool must too.
        std::vector<std::pair<std::string, std::string>> env = {{"OPENBLAS_NUM_THREADS", std::to_string(refThreads)},
                                                                {"OMP_NUM_THREADS", std::to_string(refThreads)}};
        if (auto blas = args.value("reference-blas")) env.emplace_back("LD_LIBRARY_PATH", *blas);
        for (int i = 0; i < repeat; ++i) {
            ReferenceRun r = runReferenceProcess(argv, env);
            if (!r.error.empty()) {
                if (!args.has("save-ids")) std::filesystem::remove(ids);
                return cli::fail(cmd, "reference: " + r.error);
            }
            if (i == 0 || r.total < ref.total) ref = r;
        }
        if (!args.has("save-ids")) std::filesystem::remove(ids);
    }
    // The second method's total over the first's, repeat by repeat; and their geometric mean over
    // an even number of repeats, half of them in each order (an odd last repeat is left out), which
    // cancels a steady advantage of the method run second (8 % in one hour of the 2-core machine:
    // median 0.944 with CMPQ second in two of three repeats, 1.087 with GPTQ second).
    struct Pairs {
        double median = 0, min = 0, max = 0, balanced = 0;
        int noSlower = 0, balancedRepeats = 0;
        std::vector<double> inOrder;
    } pairs;
    const bool paired = methods.size() == 2;
    if (paired) {
        std::vector<double> ratio;
        for (int i = 0; i < repeat; ++i) {
            ratio.push_back(totals[1][std::size_t(i)] / totals[0][std::size_t(i)]);
            pairs.noSlower += ratio.back() <= 1.0 ? 1 : 0;
        }
        pairs.inOrder = ratio;
        pairs.balancedRepeats = repeat / 2 * 2;
        if (pairs.balancedRepeats > 0) {
            double logSum = 0;
            for (int i = 0; i < pairs.balancedRepeats; ++i)
                logSum += std::log(ratio[std::size_t(i)]);
            pairs.balanced = std::exp(logSum / pairs.balancedRepeats);
        }
        std::sort(ratio.begin(), ratio.end());
        const std::size_t h = ratio.size() / 2;
        pairs.median = ratio.size() % 2 ? ratio[h] : 0.5 * (ratio[h - 1] + ratio[h]);
        pairs.min = ratio.front();
        pairs.max = ratio.back();
    }
    char buf[512];
    if (args.has("json")) {
        std::cout << "{\"bits\":" << bits << ",\"group\":" << group << ",\"threads\":" << threads
                  << ",\"nsamples\":" << co.nsamples << ",\"seqlen\":" << co.seqlen << ",\"repeat\":" << repeat
                  << ",\"rss\":\"VmHWM of a fresh child process per method run\",\"methods\":[";
        for (std::size_t i = 0; i < runs.size(); ++i) {
            const MethodRun& r = runs[i];
            std::snprintf(buf, sizeof buf,
                          "%s{\"method\":\"%s\",\"calibrate\":%.4f,\"load\":%.4f,\"hessian\":%.4f,"
                          "\"search\":%.4f,\"solve\":%.4f,\"metrics\":%.4f,\"evaluate\":%.4f,\"total\":%.4f,"
                          "\"peak_rss_mib\":%.1f}",
                          i ? "," : "", r.method.c_str(), r.calibrate, r.load, r.hessian, r.search, r.solve, r.metrics,
                          r.evaluate, r.total, r.rssMiB);
            std::cout << buf;
        }
        std::cout << "]";
        if (paired) {
            std::snprintf(buf, sizeof buf,
                          ",\"pairs\":{\"of\":\"%s/%s\",\"median\":%.4f,\"min\":%.4f,\"max\":%.4f,\"no_slower\":%d,"
                          "\"repeats\":%d,\"balanced\":%.4f,\"balanced_repeats\":%d,\"ratios\":[",
                          methods[1].c_str(), methods[0].c_str(), pairs.median, pairs.min, pairs.max, pairs.noSlower,
                          repeat, pairs.balanced, pairs.balancedRepeats);
            std::cout << buf;
            for (std::size_t i = 0; i < pairs.inOrder.size(); ++i) {
                std::snprintf(buf, sizeof buf, "%s%.6f", i ? "," : "", pairs.inOrder[i]);
                std::cout << buf;
            }
            std::cout << "]}";
        }
        if (reference) {
            std::snprintf(buf, sizeof buf,
                          ",\"reference\":{\"torch\":\"%s\",\"embed\":%.4f,\"forward\":%.4f,\"solve\":%.4f,"
                          "\"output\":%.4f,\"total\":%.4f,\"peak_rss_mib\":%.1f},\"ratio\":%.4f",
                          ref.torch.c_str(), ref.embed, ref.forward, ref.solve, ref.output, ref.total, ref.rssMiB,
                          ref.total > 0 ? runs.front().total / ref.total : 0.0);
            std::cout << buf;
        }
        std::cout << "}\n" << std::flush;
        return 0;
    }
    std::printf("quantize bench: %d bits, group %d, %d x %d calibration tokens, threads %s, min of %d run(s)\n", bits,
                group, co.nsamples, co.seqlen, threads > 0 ? std::to_string(threads).c_str() : "all", repeat);
    std::printf("%-8s %10s %10s %10s %10s %10s %10s %10s %10s %14s\n", "method", "calibrate", "load", "hessian",
                "search", "solve", "metrics", "evaluate", "total", "peak RSS MiB");
    for (const MethodRun& r : runs)
        std::printf("%-8s %10.4f %10.4f %10.4f %10.4f %10.4f %10.4f %10.4f %10.4f %14.1f\n", r.method.c_str(),
                    r.calibrate, r.load, r.hessian, r.search, r.solve, r.metrics, r.evaluate, r.total, r.rssMiB);
    std::printf("seconds per stage (load: each layer's weights from the checkpoint; metrics: each tensor's error\n"
                "measures; the total includes the rest); peak RSS = VmHWM of a fresh child process per method run\n"
                "(model load, calibration set and quantization; the parent does not count)\n");
    if (paired) {
        std::printf("%s / %s within each repeat: median %.4f (min %.4f, max %.4f), %s no slower in %d of %d\n",
                    methods[1].c_str(), methods[0].c_str(), pairs.median, pairs.min, pairs.max, methods[1].c_str(),
                    pairs.noSlower, repeat);
        if (pairs.balancedRepeats > 0)
            std::printf("order-balanced: geometric mean %.4f over %d repeats, %d in each order%s\n", pairs.balanced,
                        pairs.balancedRepeats, pairs.balancedRepeats / 2,
                        repeat % 2 ? " (the last repeat left out)" : "");
        else std::printf("order-balanced: needs --repeat 2 or more\n");
    }
    if (reference) {
        const MethodRun& ours = runs.front();
        std::printf("\nreference: IST-DASLab llama_sequential (true-sequential), torch %s, same token ids\n",
                    ref.torch.c_str());
        std::printf("%-10s %10s %10s %10s %10s %14s\n", "engine", "forward", "solve", "output", "total",
                    "peak RSS MiB");
        std::printf("%-10s %10.4f %10.4f %10.4f %10.4f %14.1f\n", "ours", ours.calibrate + ours.hessian,
                    ours.search + ours.solve, ours.evaluate, ours.total, ours.rssMiB);
        std::printf("%-10s %10.4f %10.4f %10.4f %10.4f %14.1f\n", "reference", ref.embed + ref.forward, ref.solve,
                    ref.output, ref.total, ref.rssMiB);
        std::printf("ours / reference wall time: %.3f  (forward = embed + Hessian passes; output = the last pass\n"
                    "per layer; ours includes loading each layer from the checkpoint, the reference excludes it)\n",
                    ref.total > 0 ? ours.total / ref.total : 0.0);
    }
    std::fflush(stdout);
    return 0;
}

// --gptq-synthetic ROWSxCOLS[,...]: random W ~ N(0, 0.02^2) and H = 2/N X^T X (X ~ N(0,1), N = 2*cols
// rows), timing quantizeRowsGptq alone (cast, damping, Cholesky, inverse, the column loop).
int runGptqSynthetic(qb::cli::CliArgs& args, const char* cmd)
{
    using namespace qb;
    const int bits = int(args.intValue("bits", 3, quant::kMinBits, quant::kMaxBits));
    const int group = int(args.intValue("group", 128, -1, 1 << 24));
    const int repeat = int(args.intValue("repeat", 3, 1, 1000));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (threads > 0) model::setNumThreads(threads);
    const bool actOrder = !args.has("no-act-order");
    const double cmpqBits = args.doubleValue("cmpq", 0.0);
    const bool sharedFactor = args.has("shared-factor");
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    double sumCmpq = 0.0;
    std::printf("GPTQ solve, %d bits, group %d, act-order %s, min of %d\n", bits, group, actOrder ? "on" : "off",
                repeat);
    double sum = 0.0;
    for (const std::string& shape : splitList(*args.value("gptq-synthetic"))) {
        int rows = 0, cols = 0;
        if (std::sscanf(shape.c_str(), "%dx%d", &rows, &cols) != 2 || rows < 1 || cols < 1)
            return cli::fail(cmd, "--gptq-synthetic expects ROWSxCOLS[,ROWSxCOLS...]", 2);
        std::mt19937_64 rng(0x5eed + std::uint64_t(rows) * 131 + std::uint64_t(cols));
        std::normal_distribution<float> nd(0.f, 1.f);
        quant::MatrixXfR w(rows, cols);
        for (Eigen::Index i = 0; i < w.size(); ++i)
            w.data()[i] = 0.02f * nd(rng);
        Eigen::MatrixXd x(2 * cols, cols);
        for (Eigen::Index i = 0; i < x.size(); ++i)
            x.data()[i] = nd(rng);
        const Eigen::MatrixXd h = (2.0 / double(x.rows())) * (x.transpose() * x);
        quant::GptqOptions o;
        o.grid.bits = bits;
        o.grid.groupSize = group;
        o.actOrder = actOrder;
        // CMPQ (reconstruction) on the same W and H, side by side: scores = the channels' mean x².
        // The two alternate within each repeat, so a burst of load on the machine hits both alike.
        quant::CmpqOptions co = quant::defaultCmpqOptions();
        co.bits = cmpqBits;
        const Eigen::VectorXd scores = h.diagonal() / 2.0;
        const quant::ParallelFor par = pipeline::openmpParallelFor(threads);
        // --shared-factor: each solver gets its factor of H made up front, as the pipeline's later
        // tensors on one H (k, v, up) do; only the column loop and (CMPQ) the fits are timed.
        std::optional<quant::GptqFactor> gptqFactor, cmpqFactor;
        if (sharedFactor) {
            auto fg = quant::sharedGptqFactor(gptqFactor, h, o);
            if (!fg) return cli::fail(cmd, fg.error().toString());
            o.factor = *fg;
            auto fc = quant::sharedGptqFactor(cmpqFactor, h, quant::cmpqFeedbackOptions(co));
            if (!fc) return cli::fail(cmd, fc.error().toString());
            co.factor = *fc;
        }
        double best = 1e300, bestC = 1e300, bpw = 0;
        for (int i = 0; i < repeat; ++i) {
            auto t0 = std::chrono::steady_clock::now();
            auto q = quant::quantizeRowsGptq(w, h, o, nullptr, &par); // as the pipeline: NeUQI and a wide factor on par
            const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (!q) return cli::fail(cmd, q.error().toString());
            best = std::min(best, sec);
            if (cmpqBits <= 0) continue;
            t0 = std::chrono::steady_clock::now();
            auto c = quant::quantizeRowsCmpq(w, h, scores, co, nullptr, &par);
            const double secC = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (!c) return cli::fail(cmd, c.error().toString());
            bestC = std::min(bestC, secC);
            bpw = c->cmpq->bitsPerWeight(rows);
        }
        sum += best;
        if (cmpqBits <= 0) {
            std::printf("%6d x %-6d %10.2f ms\n", rows, cols, best * 1e3);
            continue;
        }
        sumCmpq += bestC;
        std::printf("%6d x %-6d %10.2f ms   CMPQ %.2f bpw %10.2f ms   CMPQ/GPTQ %.2f\n", rows, cols, best * 1e3, bpw,
                    bestC * 1e3, bestC / best);
    }
    std::printf("sum %.2f ms\n", sum * 1e3);
    if (cmpqBits > 0) std::printf("CMPQ sum %.2f ms, CMPQ/GPTQ %.2f\n", sumCmpq * 1e3, sumCmpq / sum);
    return 0;
}

// --hadamard N[,...]: x <- x·Q on ROWS random rows of width N, by the fast transform (butterflies +
// the special factor) and by a dense GEMM with Q = dense() (only where Q fits in 1 GiB); elements
// (rows x N) per second, min over --repeat.
int runHadamardBench(qb::cli::CliArgs& args, const char* cmd)
{
    using namespace qb;
    const int rows = int(args.intValue("rows", 2048, 1, 1 << 24));
    const int repeat = int(args.intValue("repeat", 3, 1, 1000));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    model::setNumThreads(threads);
    auto timeMin = [&](const std::function<void()>& f) {
        double best = 1e300;
        for (int i = 0; i < repeat; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            f();
            best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        return best;
    };
    const bool json = args.has("json");
    if (json) std::cout << "{\"rows\":" << rows << ",\"threads\":" << model::numThreads() << ",\"sizes\":[";
    else
        std::printf("randomized Hadamard x <- x·Q on %d rows, %d threads, min of %d; elements = rows x n\n", rows,
                    model::numThreads(), repeat);
    if (!json)
        std::printf("%-7s %-44s %12s %14s %12s %14s %8s\n", "n", "construction", "fast ms", "fast elem/s", "dense ms",
                    "dense elem/s", "speedup");
    bool first = true;
    for (const std::string& item : splitList(*args.value("hadamard"))) {
        const long n = std::strtol(item.c_str(), nullptr, 10);
        auto t = model::HadamardTransform::create(n, 0, true);
        if (!t) return cli::fail(cmd, t.error().toString());
        std::mt19937_64 rng(0x5eed + std::uint64_t(n));
        std::normal_distribution<float> nd(0.f, 1.f);
        model::RowMatrix x(rows, n), y(rows, n);
        for (Eigen::Index i = 0; i < x.size(); ++i)
            x.data()[i] = nd(rng);
        y = x;
        (*t)->apply(y); // warm-up (thread pool, first touch)
        const double fast = timeMin([&] {
            y = x;
            (*t)->apply(y);
        });
        double dense = 0;
        if (double(n) * double(n) * sizeof(float) <= double(1 << 30)) {
            const model::RowMatrix q = (*t)->dense();
            y.noalias() = x * q; // warm-up
            dense = timeMin([&] { y.noalias() = x * q; });
        }
        const double elems = double(rows) * double(n);
        if (json) {
            std::printf("%s{\"n\":%ld,\"construction\":\"%s\",\"fast_seconds\":%.6f,\"dense_seconds\":%.6f}",
                        first ? "" : ",", n, (*t)->describe().c_str(), fast, dense);
        } else {
            std::printf("%-7ld %-44s %12.3f %14.3g %12.3f %14.3g %8.1f\n", n, (*t)->plan().describe().c_str(),
                        fast * 1e3, elems / fast, dense * 1e3, dense > 0 ? elems / dense : 0.0,
                        dense > 0 ? dense / fast : 0.0);
        }
        first = false;
    }
    if (json) std::printf("]}\n");
    std::fflush(stdout);
    return 0;
}

// --distill: one distillation step (pipeline/distill.h: student forward, per-layer recompute and
// backward, KL against the teacher's logits, group gradients, AdamW, container projection) against
// one F32 forward pass producing the logits over the same tokens (issue 17 item 7). The student is
// the model quantized RTN W2 g64 (the step's cost does not depend on the method). Min over steps.
int runDistillBench(qb::cli::CliArgs& args, const char* cmd)
{
    using namespace qb;
    const int ctx = int(args.intValue("ctx", 256, 2, 1 << 20));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    const int batch = int(args.intValue("batch", 4, 1, 4096));
    const int repeat = int(args.intValue("repeat", 5, 1, 1000));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    model::setNumThreads(threads);
    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    auto m = pipeline::loadModel(*ck);
    if (!m) return cli::fail(cmd, "cannot load model: " + m.error().toString());
    const model::Model& teacher = **m;
    const std::int64_t V = teacher.config().vocabSize;
    std::vector<std::int32_t> ids(std::size_t(batch) * std::size_t(ctx));
    std::uint64_t s = 0x9E3779B97F4A7C15ull;
    for (auto& id : ids) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        id = std::int32_t((s >> 33) % std::uint64_t(V));
    }
    auto calib = pipeline::sampleCalibrationWindows(ids, {batch, ctx, 0});
    if (!calib) return cli::fail(cmd, calib.error().toString());
    calib->ids = ids; // the windows in order (sampling may repeat one)
    auto plan = pipeline::resolveQuantPlan(pipeline::uniformQuantPlan(quant::Method::Rtn, 2, 64), teacher.config());
    if (!plan) return cli::fail(cmd, plan.error().toString());
    auto q = pipeline::runQuantize(teacher, nullptr, *plan, *calib);
    if (!q) return cli::fail(cmd, q.error().toString());

    // The forward pass: embed, every layer, final norm and lm_head for every token.
    model::Workspace ws;
    double forward = 1e300;
    for (int i = 0; i <= repeat; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        auto logits = model::forwardLogits(teacher, ids, ctx, ws);
        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!logits) return cli::fail(cmd, logits.error().toString());
        if (i > 0) forward = std::min(forward, sec); // the first warms the buffers up
    }
    // Distillation steps over the same tokens (one step = all `batch` windows).
    pipeline::DistillOptions o;
    o.steps = repeat + 1;
    o.batch = batch;
    o.evalBatch = batch;
    std::vector<double> stepSeconds;
    auto last = std::chrono::steady_clock::now();
    bool first = true;
    o.onStep = [&](const pipeline::DistillStepReport&) {
        const auto now = std::chrono::steady_clock::now();
        if (!first) stepSeconds.push_back(std::chrono::duration<double>(now - last).count());
        first = false;
        last = now;
    };
    // The first step's time includes the teacher targets and the loss before: it is not counted;
    // the others run from one step's end to the next's.
    auto d = pipeline::runDistill(teacher, *q, *calib, o);
    if (!d) return cli::fail(cmd, d.error().toString());
    const double step = *std::min_element(stepSeconds.begin(), stepSeconds.end());
    const double rss = peakRssMiB();
    const double tokens = double(batch) * ctx;
    if (args.has("json")) {
        std::printf("{\"ctx\":%d,\"batch\":%d,\"threads\":%d,\"forward_seconds\":%.5f,\"step_seconds\":%.5f,"
                    "\"ratio\":%.3f,\"step_tokens_per_second\":%.1f,\"peak_rss_mib\":%.1f}\n",
                    ctx, batch, model::numThreads(), forward, step, step / forward, tokens / step, rss);
    } else {
        std::printf("F32 forward (logits): %.2f ms for %d x %d tokens (%d threads)\n"
                    "distillation step:    %.2f ms (%.0f tokens/s)   step / forward = %.2f\n"
                    "peak resident memory: %.1f MiB\n",
                    forward * 1e3, batch, ctx, model::numThreads(), step * 1e3, tokens / step, step / forward, rss);
    }
    return 0;
}

int runBench(const std::vector<std::string>& argv)
{
    using namespace qb;
    const char* cmd = "bench";
    cli::CliArgs args(argv, {"ctx",      "threads",  "windows",          "batch",
                             "calib",    "nsamples", "seqlen",           "methods",
                             "bits",     "group",    "repeat",           "gptq-synthetic",
                             "cmpq",     "python",   "reference-script", "reference-blas",
                             "save-ids", "abits",    "kvbits",           "rotate",
                             "hadamard", "rows",     "ruquant-epochs",   "ruquant-block",
                             "kernels"},
                      {"json", "quantize", "no-act-order", "reference", "distill", "f32", "shared-factor"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.has("gptq-synthetic")) return runGptqSynthetic(args, cmd);
    if (args.has("hadamard")) return runHadamardBench(args, cmd);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    if (args.has("quantize")) return runQuantizeBench(args, cmd);
    if (args.has("distill")) return runDistillBench(args, cmd);
    const int ctx = int(args.intValue("ctx", 256, 2, 1 << 20));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    const int windows = int(args.intValue("windows", 4, 1, 1 << 20));
    const int batch = int(args.intValue("batch", 4, 1, 4096));
    const std::string kernels = args.value("kernels", "f32");
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (kernels != "f32" && kernels != "int8") return cli::fail(cmd, "--kernels must be f32 or int8", 2);

    model::setNumThreads(threads);
    const auto t0 = std::chrono::steady_clock::now();
    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    // Weights in their stored encoding (decoded per tile), or --f32: expanded to F32 at load.
    pipeline::LoadOptions lo;
    lo.compact = !args.has("f32");
    auto loaded = pipeline::loadModel(*ck, nullptr, nullptr, lo);
    if (!loaded) return cli::fail(cmd, "cannot load model: " + loaded.error().toString());
    std::shared_ptr<const model::Model> m = *loaded;
    // --kernels int8: GGUF Q4_0/Q8_0 linears with 8-bit activations and integer dot products.
    int int8Wrapped = 0;
    if (kernels == "int8") m = model::withInt8Products(m, &int8Wrapped);
    const double loadSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double loadRss = peakRssMiB();
    const char* held = lo.compact ? "stored" : "F32";

    // Deterministic pseudo-text: the forward pass cost does not depend on the ids.
    const std::int64_t V = m->config().vocabSize;
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
    if (auto warm = eval::evaluatePerplexity(*m, one, po); !warm) return cli::fail(cmd, warm.error().toString());
    auto r = eval::evaluatePerplexity(*m, *w, po);
    if (!r) return cli::fail(cmd, r.error().toString());
    const double rss = peakRssMiB();
    // --abits/--kvbits/--rotate: the same windows again through the model with activation
    // fake-quantization (and online Hadamards), timed right after the FP pass: their ratio.
    std::optional<eval::PerplexityResult> wa;
    std::string waLabel;
    if (args.has("abits") || args.has("kvbits") || args.has("rotate")) {
        pipeline::ActivationPlan a;
        a.defaults.bits = int(args.intValue("abits", 0, 0, 8));
        a.hasActivations = true;
        a.kvBits = int(args.intValue("kvbits", 0, 0, 8));
        a.hasKv = a.kvBits > 0;
        const std::string rot = args.value("rotate", "none");
        if (rot == "hadamard") a.rotate = pipeline::PlanRotation::Hadamard;
        else if (rot == "residual") a.rotate = pipeline::PlanRotation::Residual;
        else if (rot == "ruquant") a.rotate = pipeline::PlanRotation::Ruquant;
        else if (rot != "none") return cli::fail(cmd, "--rotate must be none, residual, hadamard or ruquant", 2);
        a.hasTransform = a.rotate != pipeline::PlanRotation::None;
        a.ruquant.finetuneEpochs = int(args.intValue("ruquant-epochs", 0, 0, 1000));
        a.ruquant.blockSize = int(args.intValue("ruquant-block", 128, 2, 4096));
        if (!args.ok()) return cli::fail(cmd, args.error(), 2);
        std::shared_ptr<const model::Model> prepared = m;
        if (a.rotate == pipeline::PlanRotation::Ruquant) {
            // RUQuant calibrates on the bench windows (construction cost does not depend on the
            // ids); its cost against the FP pass over the same windows (one calibration pass).
            pipeline::CalibrationSet calib;
            calib.seqlen = ctx;
            calib.count = windows;
            calib.ids = ids;
            const pipeline::RuquantOptions ro = pipeline::ruquantOptionsFromPlan(
                a, {a.defaults.bits.value_or(0), a.defaults.bits.value_or(8) <= 4 ? 0.8 : 1.0});
            // One calibration pass: the windows through every FP decoder layer in turn, as a
            // layer-sequential quantizer carries them (no lm_head), fastest of two.
            const int layers = m->numLayers();
            double calibPass = 0;
            for (int rep = 0; rep < 2; ++rep) {
                const auto tc = std::chrono::steady_clock::now();
                model::RowMatrix hidden;
                model::Workspace cws;
                if (Status st = model::embed(*m, ids, hidden); !st.ok()) return cli::fail(cmd, st.error().toString());
                for (int l = 0; l < layers; ++l)
                    for (int b0 = 0; b0 < windows; b0 += batch) {
                        const int nb = std::min(batch, windows - b0);
                        if (Status st = model::runLayer(
                                m->config(), *m->layer(l), l,
                                hidden.middleRows(Eigen::Index(b0) * ctx, Eigen::Index(nb) * ctx), ctx, cws);
                            !st.ok())
                            return cli::fail(cmd, st.error().toString());
                    }
                const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
                calibPass = rep == 0 ? s : std::min(calibPass, s);
            }
            auto rq = pipeline::ruquantModel(*m, calib, ro, batch);
            if (!rq) return cli::fail(cmd, rq.error().toString());
            const double build = rq->seconds - rq->finetuneSeconds;
            const double own = build - rq->propagateSeconds;
            if (args.has("json")) {
                std::printf(
                    "{\"ruquant\":{\"layers\":%d,\"calibration_pass_seconds\":%.6f,\"construction_seconds\":%.6f,"
                    "\"propagate_seconds\":%.6f,\"ratio\":%.4f,\"own_ratio\":%.4f,\"finetune_seconds\":%.6f,"
                    "\"finetune_epochs\":%d,\"integer_products\":%s}}\n",
                    layers, calibPass, build, rq->propagateSeconds, build / calibPass, own / calibPass,
                    rq->finetuneSeconds, a.ruquant.finetuneEpochs, rq->integerProducts ? "true" : "false");
            } else {
                std::printf("calibration pass (FP, through the %d decoder layers): %.3f s (%.3f s per layer)\n", layers,
                            calibPass, calibPass / layers);
                std::printf("RUQuant construction: %.3f s for %d layers (%.3f s per layer) = %.2f x the calibration "
                            "pass; of it, carrying the windows through the quantized layers %.3f s (%s), signal + "
                            "fit + weights %.3f s = %.2f x the calibration pass\n",
                            build, layers, build / layers, build / calibPass, rq->propagateSeconds,
                            rq->integerProducts ? "integer products, avx512-vnni" : "F32 products", own,
                            own / calibPass);
                if (rq->finetuneSeconds > 0)
                    std::printf("RUQuant fine-tuning: %.3f s for %d epochs (%.3f s per layer)\n", rq->finetuneSeconds,
                                a.ruquant.finetuneEpochs, rq->finetuneSeconds / layers);
            }
            prepared = rq->model;
        } else {
            pipeline::CalibrationSet none; // rotations need no calibration
            auto p = pipeline::prepareActivationModel(m, a, none, batch);
            if (!p) return cli::fail(cmd, p.error().toString());
            prepared = *p;
        }
        auto q = std::make_shared<model::Model>(*prepared);
        if (Status st = pipeline::installActivationQuantizers(*q, a, nullptr, batch); !st.ok())
            return cli::fail(cmd, st.error().toString());
        if (auto warm = eval::evaluatePerplexity(*q, one, po); !warm) return cli::fail(cmd, warm.error().toString());
        // Alternating passes, the fastest of each: on a shared machine the minimum is the signal.
        const int repeat = int(args.intValue("repeat", 3, 1, 100));
        for (int i = 0; i < repeat; ++i) {
            auto rq = eval::evaluatePerplexity(*q, *w, po);
            if (!rq) return cli::fail(cmd, rq.error().toString());
            if (!wa || rq->seconds < wa->seconds) wa = *rq;
            if (i + 1 == repeat) break;
            auto rf = eval::evaluatePerplexity(*m, *w, po);
            if (!rf) return cli::fail(cmd, rf.error().toString());
            if (rf->seconds < r->seconds) r = std::move(rf);
        }
        waLabel = a.describe();
    }

    char buf[512];
    if (args.has("json")) {
        std::snprintf(buf, sizeof buf,
                      "{\"ctx\":%d,\"windows\":%d,\"threads\":%d,\"seconds\":%.4f,\"tokens_per_second\":%.1f,"
                      "\"load_seconds\":%.3f,\"weights\":\"%s\",\"weights_mib\":%.1f,\"file_mib\":%.1f,"
                      "\"load_peak_rss_mib\":%.1f,\"peak_rss_mib\":%.1f}\n",
                      ctx, windows, model::numThreads(), r->seconds, r->tokensPerSecond, loadSeconds, held,
                      double(m->bytes()) / (1024.0 * 1024.0), double(ck->fileBytes) / (1024.0 * 1024.0), loadRss, rss);
    } else {
        std::snprintf(buf, sizeof buf,
                      "prefill: %.1f tokens/s  (%d windows x %d tokens in %.3f s, %d threads, batch %d)\n"
                      "load: %.3f s, weights held %s: %.1f MiB (files %.1f MiB); peak resident after load %.1f MiB\n"
                      "peak resident memory (load + evaluate): %.1f MiB\n",
                      r->tokensPerSecond, windows, ctx, r->seconds, model::numThreads(), batch, loadSeconds, held,
                      double(m->bytes()) / (1024.0 * 1024.0), double(ck->fileBytes) / (1024.0 * 1024.0), loadRss, rss);
    }
    std::cout << buf << std::flush;
    if (kernels == "int8") {
        if (args.has("json"))
            std::printf("{\"kernels\":\"int8\",\"int8_weights\":%d,\"int8_kernel\":\"%s\"}\n", int8Wrapped,
                        model::int8KernelName(model::bestInt8Kernel()));
        else
            std::printf("kernels: int8 (%s) for %d Q4_0/Q8_0 weights: 8-bit activations per block of 32, integer dot "
                        "products (as llama.cpp)\n",
                        model::int8KernelName(model::bestInt8Kernel()), int8Wrapped);
        std::fflush(stdout);
    }
    if (wa) {
        const double ratio = wa->seconds / r->seconds;
        if (args.has("json"))
            std::printf("{\"activation\":\"%s\",\"seconds\":%.4f,\"fp_seconds\":%.4f,\"ratio\":%.3f}\n",
                        waLabel.c_str(), wa->seconds, r->seconds, ratio);
        else
            std::printf("with %s: %.1f tokens/s (%.3f s), %.3f x the F32 pass's time (+%.1f %%)\n", waLabel.c_str(),
                        wa->tokensPerSecond, wa->seconds, ratio, 100 * (ratio - 1));
        std::fflush(stdout);
    }
    return 0;
}

} // namespace

QB_CLI_COMMAND("bench", "prefill tokens/second and peak memory; quantization stage timings (--quantize)",
               "Usage: quantbench-cli bench MODEL [--ctx 256] [--threads N] [--windows N] [--batch N] [--f32]\n"
               "         [--kernels f32|int8] [--json]\n"
               "         [--abits A] [--kvbits B] [--rotate residual|hadamard|ruquant [--ruquant-epochs N]\n"
               "          [--ruquant-block B]]\n"
               "       quantbench-cli bench MODEL --quantize [--calib FILE] [--nsamples 128] [--seqlen 256]\n"
               "         [--methods rtn,gptq,neuqi] [--bits 3] [--group 128] [--threads N] [--repeat 1] [--json]\n"
               "       quantbench-cli bench MODEL --quantize --reference [--reference-blas DIR] [--python PATH]\n"
               "         [--reference-script FILE] [--save-ids FILE] (+ the --quantize options)\n"
               "       quantbench-cli bench MODEL --distill [--ctx 256] [--batch 4] [--repeat 5] [--threads N]\n"
               "       quantbench-cli bench --gptq-synthetic ROWSxCOLS[,...] [--bits 3] [--group 128]\n"
               "         [--no-act-order] [--repeat 3] [--cmpq BITS] [--shared-factor]\n"
               "       quantbench-cli bench --hadamard N[,...] [--rows 2048] [--threads N] [--repeat 3] [--json]\n"
               "  --f32        expand the weights to F32 at load (the default keeps them in their stored\n"
               "               encoding, BF16/F16/GGUF blocks, decoded per tile): compare the two\n"
               "  --kernels int8  GGUF Q4_0/Q8_0 linears multiply as llama.cpp does: activations quantized\n"
               "               to 8 bits per block of 32 (Q8_0), integer dot products (AVX-512 VNNI when the\n"
               "               CPU has it); default f32: weights decoded per tile, F32 activations\n"
               "  --cmpq BITS  with --gptq-synthetic: also time CMPQ (reconstruction) at that average on the\n"
               "               same W and H (error feedback on, k-means over channels in parallel)\n"
               "  --shared-factor  with --gptq-synthetic: GPTQ's factor of H made before the clock starts,\n"
               "               as for the pipeline's later tensors on one H (k, v, up_proj)\n"
               "  --quantize   each method once per repeat (in turn, the order reversed every other repeat) in a\n"
               "               fresh child process: seconds for calibrate, hessian (forward + X^T X), search\n"
               "               (NeUQI), solve, evaluate, total, and the child's peak RSS (VmHWM); min over\n"
               "               --repeat; calib default: calib.txt beside MODEL. Two methods: the second's total\n"
               "               over the first's per repeat, and its geometric mean over an even number of\n"
               "               repeats (each order as often: use an even --repeat)\n"
               "  --reference  also run the PyTorch reference GPTQ pipeline (IST-DASLab llama_sequential with\n"
               "               true-sequential, tests/quant/bench/gptq_reference.py) on the same model folder,\n"
               "               calibration token ids, threads, bits and group; prints both wall times and\n"
               "               ours / reference. --reference-blas DIR: LD_LIBRARY_PATH for the reference\n"
               "               only (Debian's torch calls the reference BLAS; e.g. an extracted OpenBLAS);\n"
               "               --python (default /usr/bin/python3); --save-ids FILE keeps the token ids\n"
               "               (int32, window-major)\n"
               "  --distill    one distillation step (forward, recompute, backward, AdamW; --batch windows of\n"
               "               --ctx tokens) against one F32 forward pass to the logits over the same tokens,\n"
               "               min over --repeat, and the ratio\n"
               "  --gptq-synthetic  the GPTQ solve alone on random W and H of the given shapes\n"
               "  --hadamard   the fast randomized Hadamard transform (model/hadamard.h) of ROWS random rows of\n"
               "               each width N against a dense GEMM by the same matrix (N <= 16384)\n"
               "  MODEL        model directory or file\n"
               "  --ctx N      tokens per window (default 256)\n"
               "  --threads N  OpenMP/Eigen threads (default: all)\n"
               "  --windows N  windows to time after one warm-up window (default 4)\n"
               "  --batch N    windows per forward pass (default 4)\n"
               "  --abits A, --kvbits B, --rotate residual|hadamard|ruquant   time the same windows again\n"
               "               with activation/KV fake-quantization (and the online transforms) and print the\n"
               "               ratio to the F32 pass (fastest of --repeat alternating passes, default 3);\n"
               "               ruquant also times its construction on the windows against one calibration\n"
               "               pass (the windows through every FP decoder layer in turn, no lm_head), and\n"
               "               with --ruquant-epochs N its fine-tuning\n"
               "  --json       machine-readable output\n",
               &runBench);
