#include "pipeline/project.h"

#include "eval/tensor_stats.h"
#include "export/ggml_quantize.h"
#include "io/tokenizer.h"
#include "quant/container_grid.h"
#include "quant/method_traits.h"

#include <algorithm>
#include <map>
#include <memory>
#include <filesystem>

namespace qb::pipeline {

std::optional<ExportFormat> parseExportFormat(std::string_view n)
{
    if (n == "gguf") return ExportFormat::Gguf;
    if (n == "gptq") return ExportFormat::Gptq;
    if (n == "safetensors") return ExportFormat::Safetensors;
    if (n == "qbproj") return ExportFormat::Qbproj;
    return std::nullopt;
}

const char* exportFormatName(ExportFormat f)
{
    switch (f) {
    case ExportFormat::Gguf: return "gguf";
    case ExportFormat::Gptq: return "gptq";
    case ExportFormat::Safetensors: return "safetensors";
    case ExportFormat::Qbproj: return "qbproj";
    }
    return "?";
}

std::vector<std::string> ggufExportTypeNames()
{
    std::vector<std::string> names{"auto"};
    for (io::GgmlType t : exporting::ggufExportTypes())
        names.push_back(io::ggmlTypeLowerName(t));
    return names;
}

std::string ggufExportTypeError()
{
    std::string list;
    for (const auto& n : ggufExportTypeNames())
        list += (list.empty() ? "" : ", ") + n;
    return "GGUF type must be one of " + list;
}

namespace {

io::GgmlType plainGgufType(const io::Checkpoint& ck)
{
    if (const TensorInfo* t = ck.find("model.embed_tokens.weight"); t && t->ggmlType < 0) {
        if (t->dtype == DType::F16) return io::GgmlType::F16;
        if (t->dtype == DType::BF16) return io::GgmlType::BF16;
    }
    return io::GgmlType::F32;
}

double numberOr(const io::JsonValue& j, std::string_view key, double fallback)
{
    const io::JsonValue* v = j.find(key);
    return v && v->isNumber() ? v->asNumber() : fallback;
}

// The floating-point members of the "kl" block of the metrics JSON, in the order written.
constexpr std::pair<const char*, double eval::KlStats::*> kKlMembers[] = {
    {"mean", &eval::KlStats::mean},
    {"mean_stderr", &eval::KlStats::meanStderr},
    {"median", &eval::KlStats::median},
    {"p99", &eval::KlStats::p99},
    {"max", &eval::KlStats::max},
    {"top1_agreement", &eval::KlStats::top1Agreement},
    {"top1_agreement_stderr", &eval::KlStats::top1AgreementStderr},
    {"reference_perplexity", &eval::KlStats::referencePerplexity},
};

bool boolOr(const io::JsonValue& j, std::string_view key, bool fallback)
{
    const io::JsonValue* v = j.find(key);
    return v && v->isBool() ? v->asBool() : fallback;
}

} // namespace

std::string ModelExportOutcome::summary() const
{
    std::string s;
    if (gguf) {
        const auto& r = *gguf;
        s = "wrote " + r.path + " (GGUF " + r.architecture + ", " + std::to_string(r.tensors.size()) + " tensors, " +
            std::to_string(r.bytes) + " bytes, " + (r.allExact() ? "all exact" : "NOT all exact") + ")\n" +
            r.exactnessTable();
    } else if (gptq) {
        const auto& r = *gptq;
        s = "wrote " + r.path + " (GPTQ " + std::to_string(r.analysis.bits) + "-bit, group_size " +
            std::to_string(r.analysis.groupSize) + ", " + std::to_string(r.tensorCount) + " tensors, " +
            std::to_string(r.bytes) + " bytes; max abs change " + std::to_string(r.analysis.maxAbsChange) + ")\n";
    } else if (safetensors) {
        const auto& r = *safetensors;
        s = "wrote " + r.path + " (fake-quantized safetensors, grids as " + dtypeName(r.gridDtype) +
            (r.dtypeReason.empty() ? "" : " because " + r.dtypeReason) + ", " + std::to_string(r.tensorCount) +
            " tensors, " + std::to_string(r.bytes) + " bytes)\n";
    } else if (format == ExportFormat::Qbproj) {
        s = "wrote " + path + " (project, " + std::to_string(projectTensors) + " quantized tensors, " +
            std::to_string(bytes) + " bytes)\n";
    }
    return s + verifySummary;
}

namespace {

// Phi-3 keeps q/k/v and gate/up fused in its files (qkv_proj, gate_up_proj; llama.cpp attn_qkv,
// ffn_up) while the pipeline quantizes them as separate tensors: an export stacks the parts' grids
// row-wise, which is exact when the parts share one grid layout (bits, groups, g_idx, container).
struct FusedGrids {
    std::map<std::string, quant::StoredGridPtr> fused;
};

Result<quant::QuantizedRows> stackGrids(const std::vector<quant::QuantizedRows>& parts,
                                        const std::vector<std::string>& names, const std::string& fusedName)
{
    const quant::QuantizedRows& a = parts.front();
    for (std::size_t i = 1; i < parts.size(); ++i) {
        const quant::QuantizedRows& b = parts[i];
        if (b.bits != a.bits || b.container != a.container || b.groupIndex != a.groupIndex ||
            b.scales.cols() != a.scales.cols() || b.codes.cols() != a.codes.cols() ||
            b.superScales.cols() != a.superScales.cols())
            return makeError(ErrorCode::Unsupported,
                             "the file stores " + names.front() + " and " + names[i] +
                                 " as one tensor, but they were quantized differently (" + std::to_string(a.bits) +
                                 "-bit " + (a.container.empty() ? "plain" : a.container) + " vs " +
                                 std::to_string(b.bits) + "-bit " + (b.container.empty() ? "plain" : b.container) +
                                 ", or other groups): give the fused parts one method, bits, group size and target",
                             fusedName);
    }
    quant::QuantizedRows f;
    Eigen::Index rows = 0;
    for (const auto& p : parts)
        rows += p.codes.rows();
    f.codes.resize(rows, a.codes.cols());
    f.scales.resize(rows, a.scales.cols());
    f.zeros.resize(rows, a.zeros.cols());
    const bool anyOffsets = std::any_of(parts.begin(), parts.end(), [](auto& p) { return p.offsets.size() > 0; });
    if (anyOffsets) f.offsets = quant::MatrixXdR::Zero(rows, a.scales.cols());
    f.superScales.resize(rows, a.superScales.cols());
    Eigen::Index r0 = 0;
    for (const auto& p : parts) {
        const Eigen::Index n = p.codes.rows();
        f.codes.middleRows(r0, n) = p.codes;
        f.scales.middleRows(r0, n) = p.scales;
        f.zeros.middleRows(r0, n) = p.zeros;
        if (p.offsets.size() > 0) f.offsets.middleRows(r0, n) = p.offsets;
        if (a.superScales.cols() > 0) f.superScales.middleRows(r0, n) = p.superScales;
        f.proxyLoss += p.proxyLoss;
        f.dampingRetries = std::max(f.dampingRetries, p.dampingRetries);
        r0 += n;
    }
    f.groupIndex = a.groupIndex;
    f.container = a.container;
    f.bits = a.bits;
    return f;
}

// gridFor extended with the fused tensors of the checkpoint's architecture (none: gridFor itself).
Result<exporting::GridLookup> withFusedGrids(const io::Checkpoint& ck, const exporting::GridLookup& gridFor)
{
    const ModelConfig& c = ck.config;
    if (!c.fusedProjections || !gridFor) return gridFor;
    auto grids = std::make_shared<FusedGrids>();
    for (int l = 0; l < int(c.numHiddenLayers); ++l)
        for (const auto& group : {std::vector{model::Linear::Q, model::Linear::K, model::Linear::V},
                                  std::vector{model::Linear::Gate, model::Linear::Up}}) {
            std::vector<quant::StoredGridPtr> stored;
            std::vector<std::string> names;
            for (model::Linear lin : group) {
                names.push_back(model::tensorName(l, lin));
                stored.push_back(gridFor(names.back()));
            }
            const std::string fusedName = model::fusedSlice(c, l, group.front()).name;
            const auto quantized = std::count_if(stored.begin(), stored.end(), [](auto& p) { return p != nullptr; });
            if (quantized == 0) continue;
            if (quantized != std::ptrdiff_t(stored.size()))
                return makeError(ErrorCode::Unsupported,
                                 "the file stores " + names.front() + " .. " + names.back() +
                                     " as one tensor: quantize all of its parts or none",
                                 fusedName);
            std::vector<quant::QuantizedRows> parts;
            for (const auto& p : stored)
                parts.push_back(p->unpack());
            QB_TRY(stacked, stackGrids(parts, names, fusedName));
            grids->fused.emplace(fusedName, quant::storeGrid(*stacked));
        }
    return exporting::GridLookup([grids, gridFor](const std::string& n) -> quant::StoredGridPtr {
        const auto it = grids->fused.find(n);
        return it != grids->fused.end() ? it->second : gridFor(n);
    });
}

} // namespace

Result<ModelExportOutcome> exportModel(const io::Checkpoint& ck, const exporting::GridLookup& splitGridFor,
                                       const ModelExportRequest& req, RunContext* ctx)
{
    QB_TRY(fusedLookup, withFusedGrids(ck, splitGridFor));
    const exporting::GridLookup& gridFor = *fusedLookup;
    ModelExportOutcome out;
    out.format = req.format;
    // Every exporter's report has path, bytes, warnings and verify: copy them into `out` and keep
    // the full report in its format's slot.
    auto take = [&](auto& slot, auto&& report) {
        out.path = report.path;
        out.bytes = report.bytes;
        out.warnings = report.warnings;
        if (req.verify) {
            out.verified = report.verify.ok;
            out.verifySummary = report.verify.summary();
        }
        slot = std::move(report);
    };
    switch (req.format) {
    case ExportFormat::Gguf: {
        QB_TRY(tok, io::loadCheckpointTokenizer(ck));
        exporting::GgufExportOptions o;
        o.weightType = plainGgufType(ck);
        o.gridFor = gridFor;
        o.verify = req.verify;
        if (req.ggufType != "auto") {
            auto t = exporting::parseGgufExportType(req.ggufType);
            if (!t) return makeError(ErrorCode::InvalidArgument, ggufExportTypeError(), req.ggufType);
            o.gridType = *t;
        }
        for (const auto& [name, slot] :
             {std::pair(&req.embedType, &o.embedType), std::pair(&req.headType, &o.headType)})
            if (!name->empty()) {
                auto t = exporting::parseGgufExportType(*name);
                if (!t) return makeError(ErrorCode::InvalidArgument, ggufExportTypeError(), *name);
                *slot = *t;
            }
        o.planOnly = true; // the planned size first (cheap: no tensor data), then the file
        QB_TRY(planned, exporting::exportGguf(ck, *tok, req.out, o, ctx));
        out.plannedBytes = planned->bytes;
        if (req.planOnly) {
            take(out.gguf, std::move(*planned));
            break;
        }
        o.planOnly = false;
        QB_TRY(r, exporting::exportGguf(ck, *tok, req.out, o, ctx));
        take(out.gguf, std::move(*r));
        break;
    }
    case ExportFormat::Gptq: {
        exporting::GptqExportOptions o;
        o.gridFor = gridFor;
        o.policy = req.roundGrids ? exporting::GptqGridPolicy::Round : exporting::GptqGridPolicy::Refuse;
        o.verify = req.verify;
        if (auto an = exporting::analyzeGptqGrids(ck, gridFor)) out.gptqAnalysis = std::move(*an);
        QB_TRY(r, exporting::exportGptq(ck, req.out, o, ctx));
        take(out.gptq, std::move(*r));
        break;
    }
    case ExportFormat::Safetensors: {
        exporting::SafetensorsExportOptions o;
        o.gridFor = gridFor;
        o.verify = req.verify;
        QB_TRY(r, exporting::exportFakeQuantSafetensors(ck, req.out, o, ctx));
        take(out.safetensors, std::move(*r));
        break;
    }
    case ExportFormat::Qbproj:
        return makeError(ErrorCode::InvalidArgument, "a project file is not a model export", req.out);
    }
    return out;
}

Result<exporting::GgufExportReport> planGgufExport(const io::Checkpoint& ck, const ResolvedPlan& plan)
{
    if (!plan.ggufTargets) return makeError(ErrorCode::InvalidArgument, "the plan has no GGUF storage targets");
    QB_TRY(tok, io::loadCheckpointTokenizer(ck));
    exporting::GgufExportOptions o;
    o.weightType = plainGgufType(ck);
    o.planOnly = true;
    o.verify = false;
    for (const TensorPlan& tp : plan.tensors)
        if (!tp.target.empty())
            if (const auto t = io::parseGgmlType(tp.target)) o.typeOverrides[tp.name] = *t;
    // Phi-3's fused tensors take their parts' type (the parts are quantized alike, see exportModel).
    if (ck.config.fusedProjections)
        for (const TensorPlan& tp : plan.tensors)
            if (const auto it = o.typeOverrides.find(tp.name); it != o.typeOverrides.end())
                o.typeOverrides.emplace(model::fusedSlice(ck.config, tp.layer, tp.linear).name, it->second);
    if (const auto t = io::parseGgmlType(plan.embedType)) o.embedType = *t;
    if (const auto t = io::parseGgmlType(plan.headType)) o.headType = *t;
    return exporting::exportGguf(ck, *tok, "(plan)", o);
}

Result<std::uint64_t> ggufOverheadBytes(const io::Checkpoint& ck)
{
    QB_TRY(tok, io::loadCheckpointTokenizer(ck));
    exporting::GgufExportOptions o;
    o.weightType = io::GgmlType::F32;
    o.planOnly = true;
    o.verify = false;
    QB_TRY(r, exporting::exportGguf(ck, *tok, "(plan)", o));
    std::uint64_t data = 0;
    for (const auto& t : r->tensors)
        data += t.bytes;
    return r->bytes > data ? r->bytes - data : 0;
}

exporting::GridLookup RunGrids::lookup() const
{
    return [this](const std::string& n) -> quant::StoredGridPtr {
        auto it = grids.find(n);
        return it == grids.end() ? nullptr : it->second;
    };
}

RunGrids gridsFromResult(const QuantizeResult& q)
{
    RunGrids g;
    for (std::size_t i = 0; i < q.tensors.size() && i < q.codes.size(); ++i)
        if (q.codes[i]) g.grids.emplace(q.tensors[i].name, q.codes[i]); // shared, not copied
    return g;
}

Result<RunGrids> gridsFromBundle(const exporting::ProjectBundle& bundle, const io::Checkpoint& ck)
{
    return gridsFromBundleTensors(bundle.tensors, ck);
}

Result<RunGrids> gridsFromBundleTensors(const std::vector<exporting::BundleTensor>& tensors, const io::Checkpoint& ck)
{
    RunGrids g;
    for (const auto& t : tensors) {
        const TensorInfo* info = ck.find(t.name);
        if (!info || info->shape.size() != 2 || info->shape[0] != t.grid.codes.rows() ||
            info->shape[1] != t.grid.codes.cols())
            return makeError(ErrorCode::InvalidArgument, "the project's tensor " + t.name + " does not match the model",
                             ck.path);
        g.grids.emplace(t.name, quant::storeGrid(t.grid));
    }
    return g;
}

std::vector<std::string> modelFileWarnings(const exporting::ModelReference& model)
{
    std::vector<std::string> w;
    for (const auto& [path, bytes] : model.files) {
        std::error_code ec;
        const auto now = std::filesystem::file_size(path, ec);
        if (!ec && now != bytes)
            w.push_back(path + " is " + std::to_string(now) + " bytes, the project recorded " + std::to_string(bytes));
    }
    return w;
}

io::JsonValue klStatsJson(const eval::KlStats& kl)
{
    io::JsonValue k;
    k.set("tokens", double(kl.tokens));
    for (const auto& [key, member] : kKlMembers)
        k.set(key, kl.*member);
    return k;
}

io::JsonValue runMetricsJson(const QuantizeResult& q, std::optional<double> perplexity, double seconds,
                             const std::optional<eval::KlStats>& kl)
{
    io::JsonValue m;
    m.set("bits_per_weight", q.bitsPerWeight);
    m.set("size_bytes", double(q.sizeBytes));
    if (perplexity) m.set("perplexity", *perplexity);
    if (kl) m.set("kl", klStatsJson(*kl));
    io::JsonValue t;
    t.set("calibrate", q.seconds.calibrate);
    t.set("load", q.seconds.load);
    t.set("hessian", q.seconds.hessian);
    t.set("search", q.seconds.search);
    t.set("solve", q.seconds.solve);
    t.set("metrics", q.seconds.metrics);
    t.set("evaluate", q.seconds.evaluate);
    t.set("total", seconds);
    m.set("timings", std::move(t));
    if (const ActivationPlan& a = q.plan.activation; !a.empty()) {
        io::JsonValue act;
        act.set("summary", a.describe());
        act.set("activation_bits", a.maxActivationBits());
        act.set("kv_bits", a.kvBits);
        if (a.smoothAlpha) act.set("smooth", *a.smoothAlpha);
        act.set("rotate", planRotationName(a.rotate));
        act.set("online_transforms", q.onlineTransforms);
        io::JsonArray notes;
        for (const std::string& n : q.notes)
            notes.push_back(io::JsonValue(n));
        act.set("notes", std::move(notes));
        m.set("activation", std::move(act));
    }
    io::JsonArray tensors;
    for (const auto& r : q.tensors) {
        io::JsonValue e;
        e.set("name", r.name);
        e.set("layer", r.layer);
        e.set("skipped", r.skipped);
        e.set("method", r.skipped ? std::string("none") : std::string(quant::methodTraits(r.method).id));
        e.set("bits", r.bits);
        e.set("group_size", r.groupSize);
        e.set("sym", r.sym);
        e.set("act_order", r.actOrder);
        if (!r.target.empty()) e.set("target", r.target);
        e.set("bits_per_weight", r.bitsPerWeight);
        e.set("relative_error", r.relativeError);
        e.set("proxy_loss", r.proxyLoss);
        e.set("solver_proxy_loss", r.solverProxyLoss);
        e.set("damping_retries", r.dampingRetries);
        e.set("search_seconds", r.searchSeconds);
        e.set("solve_seconds", r.solveSeconds);
        tensors.push_back(std::move(e));
    }
    m.set("tensors", std::move(tensors));
    io::JsonArray warns;
    for (const auto& w : q.plan.warnings)
        warns.push_back(io::JsonValue(w.detail));
    m.set("warnings", std::move(warns));
    return m;
}

std::string defaultRunName(const QuantizeResult& result)
{
    const TensorReport* first = nullptr;
    bool uniform = true;
    for (const TensorReport& r : result.tensors) {
        if (r.skipped) {
            uniform = false;
            continue;
        }
        if (!first) first = &r;
        else if (r.method != first->method || r.bits != first->bits || r.groupSize != first->groupSize ||
                 r.sym != first->sym || r.target != first->target)
            uniform = false;
    }
    char bpw[32];
    std::snprintf(bpw, sizeof bpw, "%.2f b", result.bitsPerWeight);
    std::string name;
    if (!first) name = "unquantized";
    else if (!uniform) name = std::string("mixed ") + bpw;
    else {
        name = std::string(quant::methodTraits(first->method).name);
        name = name.substr(0, name.find(" (")); // "CMPQ (reconstruction)" -> "CMPQ"
        if (first->method == quant::Method::Cmpq) name += std::string(" ") + bpw;
        else if (quant::findContainerSpec(first->target)) name += " " + first->target;
        else {
            name += " " + std::to_string(first->bits) + "b";
            name += first->groupSize > 0 ? " g" + std::to_string(first->groupSize) : std::string(" per-ch");
            if (first->sym) name += " sym";
        }
    }
    if (const std::string a = result.plan.activation.describe(); !a.empty()) name += " " + a;
    return name;
}

Result<QuantizeResult> resultFromMetrics(const io::JsonValue& m, std::optional<double>* perplexity, double* seconds,
                                         std::optional<eval::KlStats>* kl)
{
    if (!m.isObject()) return makeError(ErrorCode::InvalidArgument, "run metrics must be a JSON object");
    QuantizeResult q;
    q.bitsPerWeight = numberOr(m, "bits_per_weight", 0);
    q.sizeBytes = std::uint64_t(std::max(0.0, numberOr(m, "size_bytes", 0)));
    if (perplexity) {
        const io::JsonValue* p = m.find("perplexity");
        *perplexity = p && p->isNumber() ? std::optional(p->asNumber()) : std::nullopt;
    }
    if (kl) {
        kl->reset();
        if (const io::JsonValue* k = m.find("kl"); k && k->isObject()) {
            eval::KlStats s;
            s.tokens = std::int64_t(std::max(0.0, numberOr(*k, "tokens", 0)));
            for (const auto& [key, member] : kKlMembers)
                s.*member = numberOr(*k, key, 0);
            *kl = s;
        }
    }
    if (const io::JsonValue* t = m.find("timings"); t && t->isObject()) {
        q.seconds.calibrate = numberOr(*t, "calibrate", 0);
        q.seconds.load = numberOr(*t, "load", 0); // 0 in projects written before it was timed
        q.seconds.hessian = numberOr(*t, "hessian", 0);
        q.seconds.search = numberOr(*t, "search", 0);
        q.seconds.solve = numberOr(*t, "solve", 0);
        q.seconds.metrics = numberOr(*t, "metrics", 0);
        q.seconds.evaluate = numberOr(*t, "evaluate", 0);
        q.seconds.total = numberOr(*t, "total", 0);
        if (seconds) *seconds = q.seconds.total;
    }
    // Weight-and-activation runs: what stays online and what the transforms did (the plan's
    // activation part itself comes back with the run's plan).
    if (const io::JsonValue* a = m.find("activation"); a && a->isObject()) {
        if (const io::JsonValue* o = a->find("online_transforms"); o && o->isString())
            q.onlineTransforms = o->asString();
        if (const io::JsonValue* n = a->find("notes"); n && n->isArray())
            for (const io::JsonValue& line : n->asArray())
                if (line.isString()) q.notes.push_back(line.asString());
    }
    if (const io::JsonValue* ts = m.find("tensors"); ts && ts->isArray()) {
        for (const auto& e : ts->asArray()) {
            if (!e.isObject()) continue;
            TensorReport r;
            if (const auto* n = e.find("name"); n && n->isString()) r.name = n->asString();
            r.layer = int(numberOr(e, "layer", 0));
            r.linear = model::Linear::Q;
            for (auto l : model::kAllLinears)
                if (r.name.find("." + std::string(model::linearName(l)) + ".") != std::string::npos) r.linear = l;
            r.skipped = boolOr(e, "skipped", false);
            if (const auto* me = e.find("method"); me && me->isString())
                if (auto mm = quant::methodFromId(me->asString())) r.method = *mm;
            r.bits = int(numberOr(e, "bits", r.bits));
            r.groupSize = int(numberOr(e, "group_size", r.groupSize));
            r.sym = boolOr(e, "sym", false);
            r.actOrder = boolOr(e, "act_order", false);
            if (const auto* tg = e.find("target"); tg && tg->isString()) r.target = tg->asString();
            r.bitsPerWeight = numberOr(e, "bits_per_weight", r.bitsPerWeight);
            r.relativeError = numberOr(e, "relative_error", 0);
            r.proxyLoss = numberOr(e, "proxy_loss", 0);
            r.solverProxyLoss = numberOr(e, "solver_proxy_loss", 0);
            r.dampingRetries = int(numberOr(e, "damping_retries", 0));
            r.searchSeconds = numberOr(e, "search_seconds", 0);
            r.solveSeconds = numberOr(e, "solve_seconds", 0);
            q.tensors.push_back(std::move(r));
        }
    }
    q.codes.resize(q.tensors.size());
    return q;
}

io::JsonValue weightHistogramsJson(const io::Checkpoint& ck, const QuantizeResult& q, int bins)
{
    io::JsonObject tensors;
    for (std::size_t i = 0; i < q.tensors.size() && i < q.codes.size(); ++i) {
        if (!q.codes[i]) continue;
        const TensorInfo* info = ck.find(q.tensors[i].name);
        if (!info) info = ck.find(q.tensors[i].name + ".weight");
        if (!info) continue;
        quant::MatrixXfR original(info->rows(), info->cols());
        if (!io::readTensorF32(*info, original.data()).ok()) continue;
        const quant::MatrixXfR quantized = q.codes[i]->values();
        if (quantized.rows() != original.rows() || quantized.cols() != original.cols()) continue;
        // One range for both, so the two histograms line up bin for bin.
        const eval::Moments m = eval::computeMoments(original);
        const eval::Moments mq = eval::computeMoments(quantized);
        const double lo = std::min(m.min, mq.min), hi = std::max(m.max, mq.max);
        const eval::Histogram before = eval::computeHistogram(original, bins, lo, hi);
        const eval::Histogram after = eval::computeHistogram(quantized, bins, lo, hi);
        auto counts = [](const eval::Histogram& h) {
            io::JsonArray a;
            for (auto c : h.counts)
                a.emplace_back(std::int64_t(c));
            return a;
        };
        io::JsonObject t;
        t.push_back({"lo", before.lo});
        t.push_back({"hi", before.hi});
        t.push_back({"original", counts(before)});
        t.push_back({"quantized", counts(after)});
        t.push_back({"kurtosis", m.kurtosis});
        tensors.push_back({q.tensors[i].name, io::JsonValue(std::move(t))});
    }
    io::JsonObject root;
    root.push_back({"bins", bins});
    root.push_back({"tensors", io::JsonValue(std::move(tensors))});
    return io::JsonValue(std::move(root));
}

std::vector<exporting::BundleTensor> bundleTensorsFromResult(const QuantizeResult& q)
{
    std::vector<exporting::BundleTensor> out;
    for (std::size_t i = 0; i < q.tensors.size() && i < q.codes.size(); ++i)
        if (q.codes[i]) {
            exporting::BundleTensor bt;
            bt.name = q.tensors[i].name;
            bt.grid = q.codes[i]->unpack(); // codes one per byte, as the project stores them
            out.push_back(std::move(bt));
        }
    return out;
}

std::uint64_t projectGridBytes(const QuantizeResult& q)
{
    std::uint64_t bytes = 0;
    for (const auto& c : q.codes)
        if (c) bytes += exporting::gridStorageBytes(*c);
    return bytes;
}

exporting::ProjectBundle bundleFromRun(const io::Checkpoint& ck, const QuantizeResult& q, const QuantPlan& plan,
                                       io::JsonValue calibration, std::optional<double> perplexity, double seconds,
                                       const std::optional<eval::KlStats>& kl)
{
    exporting::ProjectBundle b;
    std::error_code ec;
    const auto abs = std::filesystem::absolute(ck.path, ec);
    b.model.path = ec ? ck.path : abs.lexically_normal().string();
    b.model.format = io::checkpointFormatName(ck.format);
    for (const auto& f : ck.files) {
        const auto n = std::filesystem::file_size(f, ec);
        b.model.files.emplace_back(f, ec ? 0 : std::uint64_t(n));
    }
    b.model.bytes = ck.fileBytes;
    b.plan = quantPlanToJson(plan);
    b.calibration = std::move(calibration);
    b.metrics = runMetricsJson(q, perplexity, seconds, kl);
    b.tensors = bundleTensorsFromResult(q);
    b.extras.emplace_back("histograms", weightHistogramsJson(ck, q));
    return b;
}

} // namespace qb::pipeline
