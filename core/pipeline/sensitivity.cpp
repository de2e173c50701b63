#include "pipeline/sensitivity.h"

#include "eval/kl_divergence.h"
#include "export/atomic_file.h"
#include "pipeline/perplexity_job.h"
#include "pipeline/quantize_job.h"
#include "pipeline/whatif.h"
#include "quant/container_grid.h"
#include "quant/error_metrics.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <numeric>

namespace qb::pipeline {

namespace {

std::vector<std::string> splitOn(std::string_view text, char sep)
{
    std::vector<std::string> out;
    std::size_t start = 0;
    while (true) {
        const std::size_t end = text.find(sep, start);
        out.emplace_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
    return out;
}

std::string trimmed(std::string_view s)
{
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
        s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.remove_suffix(1);
    return std::string(s);
}

std::optional<int> parseInt(const std::string& s)
{
    if (s.empty()) return std::nullopt;
    char* end = nullptr;
    const long v = std::strtol(s.c_str(), &end, 10);
    if (*end != '\0' || v < -1000000 || v > 1000000) return std::nullopt;
    return int(v);
}

Error candidateError(std::string_view text, const std::string& why)
{
    return makeError(ErrorCode::InvalidArgument,
                     "bad candidate \"" + std::string(text) + "\": " + why +
                         " (write method:bits[:group][:sym|:gptq], method:TYPE for a GGUF type, or F16)");
}

// FNV-1a, 64 bit.
struct Fnv {
    std::uint64_t h = 1469598103934665603ull;
    void bytes(const void* p, std::size_t n)
    {
        const auto* c = static_cast<const unsigned char*>(p);
        for (std::size_t i = 0; i < n; ++i) {
            h ^= c[i];
            h *= 1099511628211ull;
        }
    }
    void text(std::string_view s)
    {
        bytes(s.data(), s.size());
        const char zero = 0;
        bytes(&zero, 1);
    }
    template <class T>
    void value(T v)
    {
        bytes(&v, sizeof v);
    }
};

std::string hex64(std::uint64_t v)
{
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

// The plan of one candidate for the whole model (explicit embed/head types with GGUF targets).
QuantPlan candidatePlan(const SensitivityCandidate& c, const std::string& embedType, const std::string& headType)
{
    QuantPlan p;
    p.defaults = candidatePlanSettings(c, !embedType.empty());
    if (!embedType.empty()) p.embedType = embedType;
    if (!headType.empty()) p.headType = headType;
    return p;
}

bool isGgufContainer(const SensitivityCandidate& c)
{
    return c.settings.target && quant::findContainerSpec(*c.settings.target) != nullptr;
}

} // namespace

PlanSettings candidatePlanSettings(const SensitivityCandidate& c, bool ggufFile)
{
    PlanSettings s = c.settings;
    if (!s.method) s.method = quant::Method::Gptq;
    s.skip = s.skip.value_or(false);
    if (*s.skip) {
        s.target = ggufFile ? c.settings.target.value_or("F16") : "none";
    } else if (!s.target) {
        s.target = "none";
    }
    return s;
}

Result<SensitivityCandidate> parseSensitivityCandidate(std::string_view raw)
{
    const std::string text = trimmed(raw);
    if (text.empty()) return candidateError(raw, "empty");
    SensitivityCandidate c;
    const std::vector<std::string> parts = splitOn(text, ':');
    // A bare storage type: "F16", "Q4_K" (GPTQ inside it).
    if (parts.size() == 1) {
        auto target = parsePlanTarget(text);
        if (!target || *target == "none" || *target == "gptq") return candidateError(raw, "not a method or type");
        if (*target == "F16" || *target == "BF16" || *target == "F32") {
            c.settings.method = quant::Method::Rtn;
            c.settings.skip = true;
            c.settings.target = *target;
            c.label = *target;
            return c;
        }
        c.settings.method = quant::Method::Gptq;
        c.settings.target = *target;
        c.label = "gptq:" + *target;
        return c;
    }
    const auto method = quant::methodFromId(parts[0]);
    if (!method) return candidateError(raw, "unknown method \"" + parts[0] + "\"");
    if (*method == quant::Method::Cmpq)
        return candidateError(raw, "CMPQ is not a planner candidate (it allocates its own bits per channel: give it a "
                                   "fractional --bits instead)");
    c.settings.method = *method;
    const std::string methodId(quant::methodTraits(*method).id);
    // method:TYPE
    if (parts.size() == 2 && !parseInt(parts[1])) {
        auto target = parsePlanTarget(parts[1]);
        if (!target || !quant::findContainerSpec(*target))
            return candidateError(raw, "\"" + parts[1] + "\" is neither a bit count nor a GGUF block type");
        c.settings.target = *target;
        c.label = methodId + ":" + *target;
        return c;
    }
    const auto bits = parseInt(parts[1]);
    if (!bits || *bits < 2 || *bits > 8) return candidateError(raw, "bits must be 2..8");
    c.settings.bits = *bits;
    c.label = methodId + ":" + std::to_string(*bits);
    if (parts.size() >= 3) {
        const auto group = parseInt(parts[2]);
        if (!group || (*group != -1 && *group < 1)) return candidateError(raw, "group must be positive or -1");
        c.settings.groupSize = *group;
        c.label += ":" + std::to_string(*group);
    }
    for (std::size_t i = 3; i < parts.size(); ++i) {
        if (parts[i] == "sym") {
            if (!quant::methodTraits(*method).supportsSym)
                return candidateError(raw, methodId + " has no symmetric grid");
            c.settings.sym = true;
        } else if (parts[i] == "asym") {
            c.settings.sym = false;
        } else if (parts[i] == "gptq") {
            c.settings.target = "gptq";
        } else {
            return candidateError(raw, "unknown flag \"" + parts[i] + "\"");
        }
        c.label += ":" + parts[i];
    }
    // Fully specified, so that a plan rule made from it does not inherit another rule's fields.
    if (!c.settings.groupSize)
        c.settings.groupSize = int(quant::methodParamDefault(*method, "group_size").value_or(-1));
    if (!c.settings.sym) c.settings.sym = false;
    if (!c.settings.target) c.settings.target = "none";
    return c;
}

Result<std::vector<SensitivityCandidate>> parseSensitivityCandidates(std::string_view text)
{
    std::vector<SensitivityCandidate> out;
    for (const std::string& part : splitOn(text, ',')) {
        QB_TRY(c, parseSensitivityCandidate(part));
        if (std::none_of(out.begin(), out.end(), [&](const SensitivityCandidate& o) { return o.label == c->label; }))
            out.push_back(std::move(*c));
    }
    if (out.empty()) return makeError(ErrorCode::InvalidArgument, "no candidates given");
    return out;
}

Result<std::vector<SensitivityCandidate>> defaultSensitivityCandidates(std::string_view target)
{
    std::string_view list;
    if (target.empty() || target == "none")
        list = "gptq:2:64,gptq:2:128,gptq:3:64,gptq:3:128,gptq:4:64,gptq:4:128,gptq:5:128,gptq:6:128,gptq:8:128,F16";
    else if (target == "gguf") list = "gptq:Q2_K,gptq:Q3_K,gptq:Q4_K,gptq:Q5_K,gptq:Q6_K,gptq:Q8_0,F16";
    else if (target == "gptq") list = "gptq:2:128:gptq,gptq:3:128:gptq,gptq:4:128:gptq,gptq:8:128:gptq,F16";
    else
        return makeError(ErrorCode::InvalidArgument,
                         "unknown export target \"" + std::string(target) + "\" (valid: none, gguf, gptq)");
    return parseSensitivityCandidates(list);
}

std::string candidateListText(const std::vector<SensitivityCandidate>& candidates)
{
    std::string out;
    for (const auto& c : candidates)
        out += (out.empty() ? "" : ",") + c.label;
    return out;
}

std::optional<std::size_t> SensitivityAtlas::findTensor(std::string_view name) const
{
    for (std::size_t i = 0; i < tensors.size(); ++i)
        if (tensors[i].name == name || tensors[i].name == std::string(name) + ".weight") return i;
    return std::nullopt;
}

std::optional<std::size_t> SensitivityAtlas::findCandidate(std::string_view label) const
{
    for (std::size_t i = 0; i < candidates.size(); ++i)
        if (candidates[i].label == label) return i;
    return std::nullopt;
}

const MeasuredEffect* SensitivityAtlas::findMeasured(std::size_t tensor, std::size_t candidate) const
{
    for (const MeasuredEffect& m : measured)
        if (m.tensor == tensor && m.candidate == candidate) return &m;
    return nullptr;
}

std::size_t SensitivityAtlas::useMeasurementWindows(const std::string& key)
{
    if (key == measuredOn) return 0;
    const std::size_t dropped = measured.size();
    measured.clear();
    measuredOn = key;
    return dropped;
}

namespace {

// Average ranks (ties share the mean rank).
std::vector<double> ranks(const std::vector<double>& v)
{
    std::vector<std::size_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
    std::vector<double> r(v.size());
    for (std::size_t i = 0; i < idx.size();) {
        std::size_t j = i;
        while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]])
            ++j;
        for (std::size_t k = i; k <= j; ++k)
            r[idx[k]] = 0.5 * double(i + j);
        i = j + 1;
    }
    return r;
}

} // namespace

std::vector<std::vector<double>> SensitivityAtlas::damageTable() const
{
    const std::size_t nt = tensors.size(), nc = candidates.size();
    // Per tensor, its usable measurements (candidate, KL / proxy).
    std::vector<std::vector<std::pair<std::size_t, double>>> ratios(nt);
    for (const MeasuredEffect& m : measured) {
        if (m.tensor >= cells.size() || m.candidate >= nc) continue;
        const double proxy = cells[m.tensor][m.candidate].proxyLoss;
        if (proxy > 0) ratios[m.tensor].push_back({m.candidate, std::max(0.0, m.klMean) / proxy});
    }
    // scale[t][c] for measured tensors: the ratio of the measurement nearest in bits per weight.
    std::vector<std::vector<double>> scale(nt, std::vector<double>(nc, 0.0));
    std::vector<bool> have(nt, false);
    for (std::size_t t = 0; t < nt; ++t) {
        if (ratios[t].empty()) continue;
        have[t] = true;
        for (std::size_t c = 0; c < nc; ++c) {
            double best = std::numeric_limits<double>::infinity();
            for (const auto& [mc, ratio] : ratios[t]) {
                const double d = std::abs(cells[t][mc].bitsPerWeight - cells[t][c].bitsPerWeight);
                if (d < best) {
                    best = d;
                    scale[t][c] = ratio;
                }
            }
        }
    }
    auto median = [](std::vector<double> v) -> std::optional<double> {
        if (v.empty()) return std::nullopt;
        std::sort(v.begin(), v.end());
        const std::size_t n = v.size();
        return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    };
    for (std::size_t c = 0; c < nc; ++c) {
        std::vector<double> all;
        std::array<std::vector<double>, model::kAllLinears.size()> byKind;
        for (std::size_t t = 0; t < nt; ++t)
            if (have[t]) {
                all.push_back(scale[t][c]);
                byKind[std::size_t(tensors[t].linear)].push_back(scale[t][c]);
            }
        const double overall = median(all).value_or(1.0);
        for (std::size_t t = 0; t < nt; ++t)
            if (!have[t]) scale[t][c] = median(byKind[std::size_t(tensors[t].linear)]).value_or(overall);
    }
    for (std::size_t t = 0; t < nt; ++t)
        for (std::size_t c = 0; c < nc; ++c)
            scale[t][c] *= cells[t][c].proxyLoss;
    return scale;
}

double SensitivityAtlas::damage(std::size_t tensor, std::size_t candidate) const
{
    return damageTable()[tensor][candidate];
}

std::optional<double> SensitivityAtlas::rankCorrelation() const
{
    std::vector<double> predicted, measuredKl;
    for (const MeasuredEffect& m : measured) {
        if (m.tensor >= cells.size() || m.candidate >= candidates.size()) continue;
        predicted.push_back(cells[m.tensor][m.candidate].proxyLoss);
        measuredKl.push_back(m.klMean);
    }
    if (predicted.size() < 3) return std::nullopt;
    const std::vector<double> a = ranks(predicted), b = ranks(measuredKl);
    const double n = double(a.size());
    const double ma = std::accumulate(a.begin(), a.end(), 0.0) / n, mb = std::accumulate(b.begin(), b.end(), 0.0) / n;
    double sab = 0, saa = 0, sbb = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    if (saa <= 0 || sbb <= 0) return std::nullopt;
    return sab / std::sqrt(saa * sbb);
}

std::string sensitivityFingerprint(const io::Checkpoint& checkpoint, const CalibrationSet& calib,
                                   const std::vector<SensitivityCandidate>& candidates)
{
    Fnv f;
    f.text("quantbench-sensitivity-1");
    for (const std::string& file : checkpoint.files) {
        std::error_code ec;
        const std::filesystem::path p = std::filesystem::absolute(file, ec);
        f.text(ec ? file : p.string());
        const auto size = std::filesystem::file_size(file, ec);
        f.value(ec ? std::uint64_t(0) : std::uint64_t(size));
        const auto time = std::filesystem::last_write_time(file, ec);
        f.value(ec ? std::int64_t(0) : std::int64_t(time.time_since_epoch().count()));
    }
    for (const auto& t : checkpoint.tensors) {
        f.text(t.name);
        for (auto d : t.shape)
            f.value(std::int64_t(d));
    }
    f.value(std::int32_t(calib.count));
    f.value(std::int32_t(calib.seqlen));
    f.bytes(calib.ids.data(), calib.ids.size() * sizeof(std::int32_t));
    for (const SensitivityCandidate& c : candidates)
        f.text(c.label);
    return hex64(f.h);
}

std::string measurementKey(const eval::TokenWindows& windows)
{
    Fnv f;
    f.text("quantbench-measurement-1");
    f.value(std::int32_t(windows.ctx));
    f.value(std::int32_t(windows.count));
    f.bytes(windows.ids.data(), windows.ids.size() * sizeof(std::int32_t));
    return hex64(f.h);
}

Result<SensitivityAtlas> computeSensitivity(const model::Model& base, const io::Checkpoint& checkpoint,
                                            const CalibrationSet& calib,
                                            const std::vector<SensitivityCandidate>& candidates,
                                            const SensitivityOptions& options, RunContext* ctx)
{
    const auto t0 = std::chrono::steady_clock::now();
    if (candidates.empty()) return makeError(ErrorCode::InvalidArgument, "sensitivity: no candidates");
    const ModelConfig& cfg = base.config();
    std::string embedType = options.embedType, headType = options.headType;
    const bool gguf = std::any_of(candidates.begin(), candidates.end(), isGgufContainer);
    if (gguf) {
        if (embedType.empty()) embedType = "Q4_K";
        if (headType.empty()) headType = "Q6_K";
    }
    std::vector<ResolvedPlan> plans;
    for (const SensitivityCandidate& c : candidates) {
        auto r = resolveQuantPlan(candidatePlan(c, gguf ? embedType : "", gguf ? headType : ""), cfg);
        if (!r) return r.error().withContext("candidate " + c.label);
        plans.push_back(std::move(*r));
    }
    SensitivityAtlas atlas;
    atlas.fingerprint = sensitivityFingerprint(checkpoint, calib, candidates);
    atlas.model = checkpoint.path;
    atlas.candidates = candidates;
    atlas.calibrationWindows = calib.count;
    atlas.calibrationSeqlen = calib.seqlen;
    if (gguf) {
        atlas.embedType = embedType;
        atlas.headType = headType;
    }
    const ResolvedPlan& carrier = plans.front();
    atlas.otherBytes = carrier.sizeBytes - carrier.linearBytes;
    atlas.tensors.reserve(carrier.tensors.size());
    for (const TensorPlan& tp : carrier.tensors)
        atlas.tensors.push_back({tp.name, tp.layer, tp.linear, tp.rows, tp.cols});
    atlas.cells.assign(carrier.tensors.size(), std::vector<SensitivityCell>(candidates.size()));

    QuantizeJobOptions job;
    job.batch = options.batch;
    job.threads = options.threads;
    job.keepModel = false;
    job.keepCodes = false;
    job.observe = [&](const TensorPlan& tp, const model::RowMatrix& w, const Eigen::MatrixXd& h) -> Status {
        const std::size_t idx = std::size_t(&tp - carrier.tensors.data());
        if (idx >= carrier.tensors.size()) return makeError(ErrorCode::Internal, "sensitivity: tensor not in plan");
        if (ctx) ctx->beginStage("sensitivity", std::int64_t(candidates.size()), tp.name);
        RunContext quiet;
        if (ctx) quiet.setCancelSource([ctx] { return ctx->isCancelled(); });
        std::optional<quant::GptqFactor> factor; // the candidates share h
        for (std::size_t c = 0; c < candidates.size(); ++c) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError("sensitivity " + tp.name);
            const TensorPlan& cp = plans[c].tensors[idx];
            SensitivityCell& cell = atlas.cells[idx][c];
            cell.bitsPerWeight = cp.bitsPerWeight;
            cell.bytes = std::uint64_t(std::ceil(cp.bitsPerWeight * double(cp.rows * cp.cols) / 8.0));
            if (!cp.skip) {
                QB_TRY(q, quantizeTensor(cp, w, h, nullptr, &quiet, nullptr, nullptr, &factor));
                const quant::HessianErrors e = quant::hessianErrors(w, *q, h);
                cell.relativeError = e.relative();
                cell.proxyLoss = 0.5 * e.errorTrace;
            }
            if (ctx) ctx->advance(1);
        }
        return {};
    };
    QB_TRY(run, runQuantize(base, &checkpoint, carrier, calib, job, ctx));
    (void)run;
    atlas.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return atlas;
}

Result<MeasuredEffect> measureTensorEffect(const model::Model& base, SensitivityAtlas& atlas, std::size_t tensor,
                                           std::size_t candidate, const CalibrationSet& calib,
                                           const eval::TokenWindows& windows, RunContext* ctx)
{
    if (tensor >= atlas.tensors.size() || candidate >= atlas.candidates.size())
        return makeError(ErrorCode::InvalidArgument, "sensitivity: no such tensor or candidate");
    const SensitivityTensor& t = atlas.tensors[tensor];
    QB_TRY(plan, resolveQuantPlan(candidatePlan(atlas.candidates[candidate], atlas.embedType, atlas.headType),
                                  base.config()));
    const TensorPlan* tp = plan->find(t.name);
    if (!tp) return makeError(ErrorCode::InvalidArgument, "sensitivity: the model has no such tensor", t.name);
    auto layer = base.layer(t.layer);
    if (!layer) return makeError(ErrorCode::InvalidArgument, "sensitivity: layer not loaded", t.name);
    auto copy = model::unpackedCopy(*layer);
    if (!tp->skip) {
        QB_TRY(hessians, layerInputHessians(base, nullptr, calib, t.layer, 8, ctx));
        RunContext quiet;
        if (ctx) quiet.setCancelSource([ctx] { return ctx->isCancelled(); });
        QB_TRY(q, quantizeTensor(*tp, copy->weight(t.linear), hessians->forLinear(t.linear), nullptr, &quiet));
        copy->weight(t.linear) = q->dequantized;
    }
    atlas.useMeasurementWindows(measurementKey(windows));
    model::Model quantized(base);
    quantized.setLayer(t.layer, copy);
    eval::PerplexityOptions popt;
    QB_TRY(kl, eval::evaluateKlDivergence(quantized, base, windows, popt, ctx));
    MeasuredEffect m;
    m.tensor = tensor;
    m.candidate = candidate;
    m.klMean = kl->kl.mean;
    m.top1 = kl->kl.top1Agreement;
    m.perplexity = kl->perplexity.perplexity;
    m.referencePerplexity = kl->kl.referencePerplexity;
    std::erase_if(atlas.measured,
                  [&](const MeasuredEffect& e) { return e.tensor == tensor && e.candidate == candidate; });
    atlas.measured.push_back(m);
    return m;
}

io::JsonValue sensitivityAtlasToJson(const SensitivityAtlas& a)
{
    io::JsonValue root;
    root.set("format", "quantbench-sensitivity");
    root.set("version", 1);
    root.set("fingerprint", a.fingerprint);
    root.set("model", a.model);
    root.set("candidates", candidateListText(a.candidates));
    root.set("other_bytes", double(a.otherBytes));
    if (!a.embedType.empty()) root.set("embed_type", a.embedType);
    if (!a.headType.empty()) root.set("head_type", a.headType);
    root.set("calibration_windows", a.calibrationWindows);
    root.set("calibration_seqlen", a.calibrationSeqlen);
    root.set("seconds", a.seconds);
    io::JsonArray tensors;
    for (std::size_t i = 0; i < a.tensors.size(); ++i) {
        const SensitivityTensor& t = a.tensors[i];
        io::JsonValue o;
        o.set("name", t.name);
        o.set("layer", t.layer);
        o.set("module", std::string(model::linearName(t.linear)));
        o.set("rows", t.rows);
        o.set("cols", t.cols);
        io::JsonArray rel, proxy, bpw;
        for (const SensitivityCell& c : a.cells[i]) {
            rel.emplace_back(c.relativeError);
            proxy.emplace_back(c.proxyLoss);
            bpw.emplace_back(c.bitsPerWeight);
        }
        o.set("relative_error", io::JsonValue(std::move(rel)));
        o.set("proxy_loss", io::JsonValue(std::move(proxy)));
        o.set("bits_per_weight", io::JsonValue(std::move(bpw)));
        tensors.push_back(std::move(o));
    }
    root.set("tensors", io::JsonValue(std::move(tensors)));
    io::JsonArray measured;
    for (const MeasuredEffect& m : a.measured) {
        io::JsonValue o;
        o.set("tensor", a.tensors[m.tensor].name);
        o.set("candidate", a.candidates[m.candidate].label);
        o.set("kl_mean", m.klMean);
        o.set("top1", m.top1);
        o.set("perplexity", m.perplexity);
        o.set("reference_perplexity", m.referencePerplexity);
        measured.push_back(std::move(o));
    }
    root.set("measured", io::JsonValue(std::move(measured)));
    root.set("measured_on", a.measuredOn);
    if (auto rho = a.rankCorrelation()) root.set("rank_correlation", *rho);
    return root;
}

namespace {

Error atlasError(const std::string& what) { return makeError(ErrorCode::Format, "sensitivity atlas: " + what); }

Result<double> number(const io::JsonValue& o, std::string_view key)
{
    const io::JsonValue* v = o.find(key);
    if (!v || !v->isNumber()) return atlasError("missing number \"" + std::string(key) + "\"");
    return v->asNumber();
}

Result<std::string> string(const io::JsonValue& o, std::string_view key)
{
    const io::JsonValue* v = o.find(key);
    if (!v || !v->isString()) return atlasError("missing string \"" + std::string(key) + "\"");
    return v->asString();
}

Result<std::vector<double>> numbers(const io::JsonValue& o, std::string_view key, std::size_t n)
{
    const io::JsonValue* v = o.find(key);
    if (!v || !v->isArray() || v->asArray().size() != n)
        return atlasError("\"" + std::string(key) + "\" must be an array of " + std::to_string(n) + " numbers");
    std::vector<double> out;
    for (const io::JsonValue& x : v->asArray()) {
        if (!x.isNumber() || !std::isfinite(x.asNumber()) || x.asNumber() < 0)
            return atlasError("\"" + std::string(key) + "\" holds a value that is not a non-negative number");
        out.push_back(x.asNumber());
    }
    return out;
}

} // namespace

Result<SensitivityAtlas> sensitivityAtlasFromJson(const io::JsonValue& root)
{
    if (!root.isObject()) return atlasError("not a JSON object");
    QB_TRY(format, string(root, "format"));
    if (*format != "quantbench-sensitivity") return atlasError("not a sensitivity atlas (format \"" + *format + "\")");
    QB_TRY(version, number(root, "version"));
    if (*version != 1) return atlasError("unsupported version " + std::to_string(*version));
    SensitivityAtlas a;
    QB_TRY(fp, string(root, "fingerprint"));
    a.fingerprint = *fp;
    QB_TRY(model, string(root, "model"));
    a.model = *model;
    QB_TRY(cands, string(root, "candidates"));
    QB_TRY(parsed, parseSensitivityCandidates(*cands));
    a.candidates = std::move(*parsed);
    QB_TRY(other, number(root, "other_bytes"));
    a.otherBytes = std::uint64_t(*other);
    if (const io::JsonValue* v = root.find("embed_type"); v && v->isString()) a.embedType = v->asString();
    if (const io::JsonValue* v = root.find("head_type"); v && v->isString()) a.headType = v->asString();
    QB_TRY(windows, number(root, "calibration_windows"));
    QB_TRY(seqlen, number(root, "calibration_seqlen"));
    QB_TRY(seconds, number(root, "seconds"));
    a.calibrationWindows = int(*windows);
    a.calibrationSeqlen = int(*seqlen);
    a.seconds = *seconds;
    const io::JsonValue* tensors = root.find("tensors");
    if (!tensors || !tensors->isArray()) return atlasError("missing \"tensors\" array");
    const std::size_t nc = a.candidates.size();
    for (const io::JsonValue& o : tensors->asArray()) {
        if (!o.isObject()) return atlasError("a tensor entry is not an object");
        SensitivityTensor t;
        QB_TRY(name, string(o, "name"));
        t.name = *name;
        QB_TRY(layer, number(o, "layer"));
        t.layer = int(*layer);
        QB_TRY(module, string(o, "module"));
        bool found = false;
        for (model::Linear l : model::kAllLinears)
            if (*module == model::linearName(l)) {
                t.linear = l;
                found = true;
            }
        if (!found) return atlasError("unknown module \"" + *module + "\" of " + t.name);
        QB_TRY(rows, number(o, "rows"));
        QB_TRY(cols, number(o, "cols"));
        t.rows = std::int64_t(*rows);
        t.cols = std::int64_t(*cols);
        QB_TRY(rel, numbers(o, "relative_error", nc));
        QB_TRY(proxy, numbers(o, "proxy_loss", nc));
        QB_TRY(bpw, numbers(o, "bits_per_weight", nc));
        std::vector<SensitivityCell> cells(nc);
        for (std::size_t c = 0; c < nc; ++c) {
            cells[c].relativeError = (*rel)[c];
            cells[c].proxyLoss = (*proxy)[c];
            cells[c].bitsPerWeight = (*bpw)[c];
            cells[c].bytes = std::uint64_t(std::ceil(cells[c].bitsPerWeight * double(t.rows * t.cols) / 8.0));
        }
        a.tensors.push_back(std::move(t));
        a.cells.push_back(std::move(cells));
    }
    if (const io::JsonValue* on = root.find("measured_on"); on && on->isString()) a.measuredOn = on->asString();
    if (const io::JsonValue* measured = root.find("measured"); measured && measured->isArray()) {
        for (const io::JsonValue& o : measured->asArray()) {
            QB_TRY(tname, string(o, "tensor"));
            QB_TRY(cname, string(o, "candidate"));
            const auto ti = a.findTensor(*tname);
            const auto ci = a.findCandidate(*cname);
            if (!ti || !ci) return atlasError("a measurement names an unknown tensor or candidate");
            MeasuredEffect m;
            m.tensor = *ti;
            m.candidate = *ci;
            QB_TRY(kl, number(o, "kl_mean"));
            QB_TRY(top1, number(o, "top1"));
            QB_TRY(ppl, number(o, "perplexity"));
            QB_TRY(ref, number(o, "reference_perplexity"));
            m.klMean = *kl;
            m.top1 = *top1;
            m.perplexity = *ppl;
            m.referencePerplexity = *ref;
            a.measured.push_back(m);
        }
    }
    return a;
}

Status saveSensitivityAtlas(const SensitivityAtlas& atlas, const std::string& path)
{
    const std::string text = io::toJsonText(sensitivityAtlasToJson(atlas));
    std::error_code ec;
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    QB_TRY(out, exporting::AtomicFileWriter::open(path, text.size()));
    QB_TRY_STATUS(out->write(text.data(), text.size()));
    return out->commit();
}

Result<SensitivityAtlas> loadSensitivityAtlas(const std::string& path)
{
    QB_TRY(text, readTextFile(path));
    QB_TRY(json, io::parseJson(*text, path));
    auto atlas = sensitivityAtlasFromJson(*json);
    if (!atlas) return atlas.error().withContext(path);
    return atlas;
}

std::string sensitivityCachePath(const std::string& dir, const std::string& fingerprint)
{
    return (std::filesystem::path(dir) / ("sensitivity-" + fingerprint + ".json")).string();
}

} // namespace qb::pipeline
