#include "pipeline/preflight.h"

#include "model/forward.h"
#include "quant/container_grid.h"
#include "pipeline/workflows.h"

#include <Eigen/Core>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

namespace qb::pipeline {

namespace {

// Whole runs on the demo model reach this fraction of the GEMM rate (measured: the forward pass,
// the Hessian sums, GPTQ's column loop and NeUQI's search together, 1 and 2 threads).
constexpr double kEfficiency = 0.4;
constexpr std::uint64_t kProcessBytes = std::uint64_t(48) << 20; // Qt, code, allocator slack (measured)

std::uint64_t readProcNumber(const char* path)
{
    std::ifstream f(path);
    std::string s;
    if (!(f >> s) || s == "max") return 0;
    try {
        return std::uint64_t(std::stoull(s));
    } catch (...) {
        return 0;
    }
}

std::uint64_t memAvailable()
{
    std::ifstream f("/proc/meminfo");
    std::string key, unit;
    std::uint64_t kib = 0;
    while (f >> key >> kib >> unit)
        if (key == "MemAvailable:") return kib * 1024;
    return 0;
}

std::uint64_t virtualSize()
{
    std::ifstream f("/proc/self/statm");
    std::uint64_t pages = 0;
    f >> pages;
    return pages * 4096;
}

std::string durationText(double s)
{
    char buf[64];
    if (s < 1) return "under a second";
    if (s < 60) std::snprintf(buf, sizeof buf, "%.0f s", s);
    else if (s < 3600) std::snprintf(buf, sizeof buf, "%.0f min %02.0f s", std::floor(s / 60), std::fmod(s, 60));
    else std::snprintf(buf, sizeof buf, "%.0f h %02.0f min", std::floor(s / 3600), std::fmod(s / 60, 60));
    return buf;
}

using Parts = std::vector<std::pair<std::string, std::uint64_t>>;

std::uint64_t modelF32Bytes(const ModelConfig& c)
{
    const std::int64_t q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim;
    const std::int64_t layer = c.hiddenSize * (q + 2 * kv) + q * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize;
    const std::int64_t table = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2);
    return std::uint64_t(layer * c.numHiddenLayers + table) * 4;
}

std::uint64_t tablesF32Bytes(const ModelConfig& c)
{
    return std::uint64_t(c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2)) * 4;
}

// What F32 bytes take when held packed in a checkpoint of `stored` bytes (0: F32).
std::uint64_t heldBytes(const ModelConfig& c, std::uint64_t f32, std::uint64_t stored)
{
    const std::uint64_t all = modelF32Bytes(c);
    if (stored == 0 || stored >= all) return f32;
    return std::uint64_t(double(f32) * double(stored) / double(all));
}

// One forward call's activations for `rows` tokens in windows of `len`: the layer's intermediate
// matrices and the attention scores of one window batch (model/forward.h Workspace).
// The run's stored grids (quant/stored_grid.h): codes two a byte up to 4 bits (CMPQ's codebooks
// too), else one; scales and zeros in double per group. The compact quantized model shares them.
std::uint64_t storedGridBytes(const ResolvedPlan& plan)
{
    std::uint64_t bytes = 0;
    for (const TensorPlan& t : plan.tensors) {
        if (t.skip) continue;
        const bool cmpq = t.method == quant::Method::Cmpq;
        const std::uint64_t weights = std::uint64_t(t.rows * t.cols);
        bytes += cmpq || t.options.grid.bits <= 4 ? (weights + 1) / 2 : weights;
        const int group =
            t.options.grid.groupSize > 0 ? t.options.grid.groupSize : int(std::max<std::int64_t>(1, t.cols));
        const std::uint64_t groups = std::uint64_t(t.rows) * std::uint64_t((t.cols + group - 1) / group);
        bytes += cmpq ? std::uint64_t(t.cols) * 16 : groups * 16;
        // Solved inside a storage container: its mins per group and the K-quants' two super-block
        // scales per 256 weights, in double too (quant/container_grid.h).
        if (const quant::ContainerSpec* spec = t.target.empty() ? nullptr : quant::findContainerSpec(t.target)) {
            if (spec->hasMin) bytes += groups * 8;
            if (spec->isKQuant())
                bytes += std::uint64_t(t.rows) * std::uint64_t((t.cols + spec->blockSize - 1) / spec->blockSize) * 16;
        }
    }
    return bytes;
}

std::uint64_t workspaceBytes(const ModelConfig& c, std::int64_t rows, std::int64_t len)
{
    const std::int64_t q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim;
    const std::int64_t perToken = 3 * c.hiddenSize + q + 2 * kv + q + 3 * c.intermediateSize;
    const std::int64_t windows = std::max<std::int64_t>(1, rows / std::max<std::int64_t>(1, len));
    return std::uint64_t(rows * perToken + windows * c.numAttentionHeads * len * len) * 4;
}

// Parts whose name ends in this are the checkpoint's memory-mapped pages (PreflightEstimate::mappedBytes).
const std::string kMapped = " (stored, memory-mapped)";

bool isMapped(const std::string& name)
{
    return name.size() >= kMapped.size() && name.compare(name.size() - kMapped.size(), kMapped.size(), kMapped) == 0;
}

PreflightEstimate finish(Parts parts, double seconds, const MachineRate& rate)
{
    PreflightEstimate e;
    e.seconds = seconds;
    e.macsPerSecond = rate.macsPerSecond;
    for (const auto& [name, bytes] : parts) {
        e.peakBytes += bytes;
        if (isMapped(name)) e.mappedBytes += bytes;
    }
    std::stable_sort(parts.begin(), parts.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    e.memoryParts = std::move(parts);
    e.availableBytes = availableMemoryBytes();
    return e;
}

} // namespace

namespace {

MachineRate measureOnce(int n)
{
    const int before = model::numThreads();
    if (n != before) model::setNumThreads(n);
    // A forward-pass-like product: 512 tokens x 1024 inputs x 1024 outputs, repeated for ~60 ms.
    constexpr Eigen::Index kM = 512, kK = 1024, kN = 1024;
    const Eigen::MatrixXf a = Eigen::MatrixXf::Random(kM, kK), b = Eigen::MatrixXf::Random(kK, kN);
    Eigen::MatrixXf c(kM, kN);
    c.noalias() = a * b; // warm-up (threads, caches)
    const auto t0 = std::chrono::steady_clock::now();
    double seconds = 0;
    int reps = 0;
    do {
        c.noalias() = a * b;
        ++reps;
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (seconds < 0.06);
    if (n != before) model::setNumThreads(before);
    MachineRate r;
    r.threads = n;
    volatile float sink = c(0, 0); // the products must happen
    (void)sink;
    r.macsPerSecond = double(reps) * double(kM * kK * kN) / std::max(seconds, 1e-9);
    return r;
}

} // namespace

MachineRate measureMachineRate(int threads)
{
    static std::mutex mutex;
    static std::map<int, MachineRate> cache;
    const int n = threads > 0 ? threads : model::numThreads();
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = cache.find(n); it != cache.end()) return it->second;
    // A busy machine makes a multi-threaded team spin against other processes; a run is not slower
    // than on one thread for long, so the single-thread rate is a floor.
    MachineRate r = measureOnce(n);
    if (n > 1) r.macsPerSecond = std::max(r.macsPerSecond, measureOnce(1).macsPerSecond);
    cache[n] = r;
    return r;
}

namespace {

std::uint64_t statValue(const std::string& path, const std::string& key)
{
    std::ifstream f(path);
    std::string k;
    std::uint64_t v = 0;
    while (f >> k >> v)
        if (k == key) return v;
    return 0;
}

} // namespace

std::uint64_t cgroupMemoryLeft(const std::string& procCgroup, const std::string& cgroupRoot)
{
    std::ifstream f(procCgroup);
    std::string line, v2, v1;
    while (std::getline(f, line)) {
        const auto a = line.find(':'), b = line.find(':', a + 1);
        if (a == std::string::npos || b == std::string::npos) continue;
        const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
        if (line.compare(0, a, "0") == 0 && controllers.empty()) v2 = path;
        std::stringstream list(controllers);
        for (std::string c; std::getline(list, c, ',');)
            if (c == "memory") v1 = path;
    }
    const bool unified = std::ifstream(cgroupRoot + "/cgroup.controllers").good();
    const std::string root = unified ? cgroupRoot : cgroupRoot + "/memory";
    std::string path = unified ? v2 : v1;
    if (!unified && v1.empty()) return 0;
    std::uint64_t best = 0;
    for (;;) {
        const std::string dir = root + (path == "/" ? "" : path);
        const std::uint64_t max = readProcNumber((dir + (unified ? "/memory.max" : "/memory.limit_in_bytes")).c_str());
        // v1 reports "no limit" as a huge page-rounded number.
        if (max > 0 && max < (std::uint64_t(1) << 60)) {
            // Usage counts the page cache, which the kernel reclaims before it fails an allocation.
            std::uint64_t cur =
                readProcNumber((dir + (unified ? "/memory.current" : "/memory.usage_in_bytes")).c_str());
            const std::uint64_t cache = statValue(dir + "/memory.stat", unified ? "file" : "total_cache");
            cur = cur > cache ? cur - cache : 0;
            const std::uint64_t left = max > cur ? max - cur : 1;
            best = best ? std::min(best, left) : left;
        }
        if (path.empty() || path == "/") break;
        const auto slash = path.find_last_of('/');
        path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    }
    return best;
}

std::uint64_t availableMemoryBytes()
{
    std::uint64_t avail = memAvailable();
    if (const std::uint64_t left = cgroupMemoryLeft(); left > 0) avail = avail ? std::min(avail, left) : left;
    rlimit lim{};
    if (getrlimit(RLIMIT_AS, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
        const std::uint64_t vs = virtualSize();
        const std::uint64_t left = lim.rlim_cur > vs ? std::uint64_t(lim.rlim_cur) - vs : 0;
        avail = avail ? std::min(avail, left) : left;
    }
    return avail;
}

std::string formatBytesShort(std::uint64_t b)
{
    char buf[32];
    if (b >= (std::uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.1f GB", double(b) / double(1 << 30));
    else std::snprintf(buf, sizeof buf, "%.0f MB", std::ceil(double(b) / double(1 << 20)));
    return buf;
}

std::string PreflightEstimate::summary() const
{
    std::string s =
        "about " + durationText(seconds) + " and " + formatBytesShort(peakBytes - mappedBytes) + " at the peak";
    if (mappedBytes) s += " + " + formatBytesShort(mappedBytes) + " of memory-mapped weights";
    if (availableBytes) s += " (" + formatBytesShort(availableBytes) + " available)";
    if (fits() && streamsWeights())
        s += "; not all the mapped weights stay in memory: the kernel re-reads them from disk, slower";
    return s;
}

std::string PreflightEstimate::refusal() const
{
    std::ostringstream o;
    o << "needs about " << formatBytesShort(peakBytes - mappedBytes) << " of memory"
      << (mappedBytes ? " besides the memory-mapped weights" : "") << ", " << formatBytesShort(availableBytes)
      << " are available (largest: ";
    int listed = 0;
    for (std::size_t i = 0; i < memoryParts.size() && listed < 3; ++i) {
        if (isMapped(memoryParts[i].first)) continue;
        o << (listed++ ? ", " : "") << memoryParts[i].first << " " << formatBytesShort(memoryParts[i].second);
    }
    o << "). Use fewer or shorter calibration windows, a smaller evaluation batch or context, evaluation "
         "without KL divergence, or fewer threads";
    return o.str();
}

double estimateDistillWork(const ModelConfig& c, int nsamples, int seqlen, int steps, int batch)
{
    const double layer = double(c.hiddenSize) * double(2 * c.numAttentionHeads * c.headDim +
                                                       2 * c.numKeyValueHeads * c.headDim + 3 * c.intermediateSize) +
                         double(c.numAttentionHeads * c.headDim) * double(seqlen); // attention
    const double head = double(c.vocabSize) * double(c.hiddenSize);
    batch = std::max(1, std::min(batch, nsamples));
    const double n = steps > 0 ? steps : std::max(1, nsamples / batch);
    const double stepTokens = n * double(batch) * double(seqlen);
    const double windowTokens = double(nsamples) * double(seqlen);
    return stepTokens * (4.0 * double(c.numHiddenLayers) * layer + 3.0 * head) +
           windowTokens * (3.0 * double(c.numHiddenLayers) * layer + 3.0 * head);
}

namespace {

// What a distillation holds while it trains (pipeline/distill.h), beside the models.
Parts distillParts(const ModelConfig& c, const ResolvedPlan& plan, int nsamples, int seqlen, int batch)
{
    Parts parts;
    std::int64_t groups = 0, layerParams = 0;
    for (const TensorPlan& t : plan.tensors) {
        if (t.layer == 0) layerParams += t.rows * t.cols;
        if (!t.skip) {
            const int g = t.options.grid.groupSize <= 0 || t.options.grid.groupSize > t.cols ? int(t.cols)
                                                                                             : t.options.grid.groupSize;
            groups += t.rows * ((t.cols + g - 1) / g);
        }
    }
    const std::int64_t tokens = std::int64_t(nsamples) * seqlen;
    const std::int64_t linear = layerParams * c.numHiddenLayers;
    parts.push_back({"student linears and their gradients (F32)", std::uint64_t(linear) * 4 * 2});
    parts.push_back({"optimiser state (double)", std::uint64_t(groups) * 8 * 9});
    const std::int64_t rows = std::int64_t(std::max(1, std::min(batch, nsamples))) * seqlen;
    const std::int64_t perToken = 3 * c.hiddenSize + 2 * c.numAttentionHeads * c.headDim +
                                  2 * c.numKeyValueHeads * c.headDim + 3 * c.intermediateSize;
    const std::int64_t chunk = std::min<std::int64_t>(rows, (16 << 20) / std::max<std::int64_t>(1, c.vocabSize));
    parts.push_back({"teacher hidden states, checkpoints and one layer's activations",
                     std::uint64_t(tokens * c.hiddenSize + (c.numHiddenLayers + 4) * rows * c.hiddenSize +
                                   2 * rows * perToken + 2 * chunk * c.vocabSize) *
                         4});
    return parts;
}

} // namespace

PreflightEstimate preflightDistill(const ModelConfig& c, const ResolvedPlan& plan, const DistillPreflightInput& in,
                                   const MachineRate& rate)
{
    const QuantizeWork work =
        estimateQuantizeWork(c, plan, 0, in.seqlen, 0, in.evalTokens, in.evalCtx, false, in.klDivergence);
    const double macs = estimateDistillWork(c, in.nsamples, in.seqlen, in.steps, in.batch) +
                        work.perplexity * (in.evaluateBefore ? 2 : 1) + (in.loadTeacher ? work.reference : 0.0);
    Parts parts;
    if (in.loadTeacher) parts.push_back({"original model's layers (F32)", modelF32Bytes(c)});
    parts.push_back({"distilled model (F32)", modelF32Bytes(c)});
    parts.push_back({"codes and scales of the new run", storedGridBytes(plan)});
    const Parts distilling = distillParts(c, plan, in.nsamples, in.seqlen, in.batch);
    Parts evaluating;
    if (in.evalTokens > 0) {
        const std::int64_t rows = std::int64_t(in.evalBatch) * in.evalCtx;
        const std::uint64_t logits = std::uint64_t(rows * c.vocabSize) * 4 * (in.klDivergence ? 2 : 1);
        evaluating.push_back({"evaluation batch", workspaceBytes(c, rows, in.evalCtx) + logits});
    }
    std::uint64_t d = 0, e = 0;
    for (const auto& x : distilling)
        d += x.second;
    for (const auto& x : evaluating)
        e += x.second;
    const Parts& larger = d >= e ? distilling : evaluating;
    parts.insert(parts.end(), larger.begin(), larger.end());
    return finish(std::move(parts), macs / std::max(1.0, rate.macsPerSecond * kEfficiency), rate);
}

PreflightEstimate preflightQuantize(const ModelConfig& c, const ResolvedPlan& plan, const QuantizePreflightInput& in,
                                    const MachineRate& rate)
{
    const std::int64_t tokens = std::int64_t(in.nsamples) * in.seqlen;
    const QuantizeWork work = estimateQuantizeWork(c, plan, tokens, in.seqlen, in.calibTextBytes, in.evalTokens,
                                                   in.evalCtx, in.keepBaseLayers, in.klDivergence);
    const double macs =
        work.calibrate + work.load + work.quantize + work.reference + work.perplexity +
        (in.distill ? estimateDistillWork(c, in.nsamples, in.seqlen, in.distillSteps, in.distillBatch) : 0.0) +
        (in.distill && !in.keepBaseLayers && !in.klDivergence ? work.load : 0.0);
    const double seconds = macs / std::max(1.0, rate.macsPerSecond * kEfficiency);

    Parts parts;
    parts.push_back({"process", kProcessBytes});
    // The base model: embedding and head (all layers when kept for the window or for KL).
    const bool fullBase = in.keepBaseLayers || (in.evalTokens > 0 && in.klDivergence) || in.distill;
    const bool packed = in.storedBytes > 0;
    const std::string held = packed ? kMapped : " (F32)";
    // Distillation decodes the original (its teacher) to F32.
    if (in.distill) parts.push_back({"original model (F32)", modelF32Bytes(c)});
    else
        parts.push_back({(fullBase ? "original model" : "embedding and head") + held,
                         heldBytes(c, fullBase ? modelF32Bytes(c) : tablesF32Bytes(c), in.storedBytes)});
    std::int64_t quantizedWeights = 0;
    for (const TensorPlan& t : plan.tensors)
        if (!t.skip) quantizedWeights += t.rows * t.cols;
    // The fake-quantized model under construction when it is evaluated: when packed, the run's
    // stored grids (shared with the codes it keeps) and the other tensors as stored; distillation
    // decodes it to F32.
    const std::uint64_t grids = storedGridBytes(plan);
    const bool compactModel = !in.distill && in.evalTokens > 0 && packed;
    if (in.distill || (in.evalTokens > 0 && !packed)) parts.push_back({"quantized model (F32)", modelF32Bytes(c)});
    else if (compactModel) {
        parts.push_back({"quantized model (codes)", grids});
        // Its other tensors are the checkpoint's mapped pages: beyond the base's part, the linears
        // the plan leaves as they are.
        const std::uint64_t other = modelF32Bytes(c) - std::uint64_t(quantizedWeights) * 4;
        const std::uint64_t counted = fullBase ? modelF32Bytes(c) : tablesF32Bytes(c);
        if (!fullBase && other > counted)
            parts.push_back({"unquantized linears" + kMapped, heldBytes(c, other - counted, in.storedBytes)});
    }
    // Smoothing or rotation: the whole base, and its transformed copy, while the weights are solved.
    if (plan.activation.transforms()) {
        if (!fullBase) parts.push_back({"original model (F32)", modelF32Bytes(c)});
        parts.push_back({"transformed model (F32)", modelF32Bytes(c)});
    }
    // One decoder layer in F32, its largest Hessian and the GPTQ working set.
    std::int64_t layerParams = 0, maxCols = 0, maxMatrix = 0;
    for (const TensorPlan& t : plan.tensors)
        if (t.layer == 0) {
            layerParams += t.rows * t.cols;
            maxCols = std::max(maxCols, t.cols);
            maxMatrix = std::max(maxMatrix, t.rows * t.cols);
        }
    if ((in.keepCodes || in.distill) && !compactModel) parts.push_back({"codes and scales", grids});
    // The quantizing, distilling and evaluation phases do not overlap: the largest one counts.
    Parts quantizing, evaluating;
    const Parts distilling = in.distill ? distillParts(c, plan, in.nsamples, in.seqlen, in.distillBatch) : Parts{};
    quantizing.push_back({"decoder layer (F32)", std::uint64_t(layerParams) * 4 * 2});
    // H in double; GPTQ's float factor and the permuted H it is built from; the tensor's float
    // working copies, codes and values (quant/gptq.h).
    quantizing.push_back(
        {"Hessian and GPTQ solve", std::uint64_t(16 * maxCols * maxCols) + std::uint64_t(13 * maxMatrix)});
    // Calibration: the hidden states of every window, kept o_proj/down_proj inputs, one batch.
    const std::int64_t q = c.numAttentionHeads * c.headDim;
    quantizing.push_back(
        {"calibration activations", std::uint64_t(tokens * (c.hiddenSize + q + c.intermediateSize)) * 4 +
                                        workspaceBytes(c, std::int64_t(in.batch) * in.seqlen, in.seqlen)});
    if (in.evalTokens > 0) {
        const std::int64_t rows = std::int64_t(in.evalBatch) * in.evalCtx;
        const std::uint64_t logits = std::uint64_t(rows * c.vocabSize) * 4 * (in.klDivergence ? 2 : 1);
        evaluating.push_back({"evaluation batch", workspaceBytes(c, rows, in.evalCtx) + logits});
    }
    auto total = [](const Parts& p) {
        std::uint64_t t = 0;
        for (const auto& x : p)
            t += x.second;
        return t;
    };
    const Parts* larger = total(quantizing) >= total(evaluating) ? &quantizing : &evaluating;
    if (total(distilling) > total(*larger)) larger = &distilling;
    parts.insert(parts.end(), larger->begin(), larger->end());
    return finish(std::move(parts), seconds, rate);
}

PreflightEstimate preflightEvaluate(const ModelConfig& c, std::int64_t evalTokens, int ctx, int batch,
                                    bool withReference, const MachineRate& rate, std::uint64_t storedBytes)
{
    const double layers = double(c.numHiddenLayers);
    const double q = double(c.numAttentionHeads * c.headDim), kv = double(c.numKeyValueHeads * c.headDim);
    const double perToken = layers * (double(c.hiddenSize) * (2 * q + 2 * kv) +
                                      3.0 * double(c.hiddenSize) * double(c.intermediateSize) + q * double(ctx)) +
                            double(c.vocabSize * c.hiddenSize);
    const double macs = double(evalTokens) * perToken * (withReference ? 2 : 1);
    Parts parts;
    parts.push_back({"process", kProcessBytes});
    const std::string held = storedBytes > 0 ? kMapped : " (F32)";
    parts.push_back({"model" + held, heldBytes(c, modelF32Bytes(c), storedBytes)});
    if (withReference) parts.push_back({"reference model" + held, heldBytes(c, modelF32Bytes(c), storedBytes)});
    const std::int64_t rows = std::int64_t(std::max(1, batch)) * ctx;
    parts.push_back({"evaluation batch",
                     workspaceBytes(c, rows, ctx) + std::uint64_t(rows * c.vocabSize) * 4 * (withReference ? 2 : 1)});
    return finish(std::move(parts), macs / std::max(1.0, rate.macsPerSecond * kEfficiency), rate);
}

} // namespace qb::pipeline
