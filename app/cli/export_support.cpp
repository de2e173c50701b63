#include "cli/export_support.h"

#include "cli/cli_command.h"
#include "export/ggml_quantize.h"
#include "export/gguf_export.h"
#include "export/gptq_export.h"
#include "io/tokenizer.h"

#include <filesystem>
#include <iostream>

namespace qb::cli {

std::optional<ExportFormat> parseExportFormat(std::string_view n)
{
    if (n == "gguf") return ExportFormat::Gguf;
    if (n == "gptq") return ExportFormat::Gptq;
    if (n == "safetensors") return ExportFormat::Safetensors;
    if (n == "qbproj") return ExportFormat::Qbproj;
    return std::nullopt;
}

namespace {

int failWith(const char* cmd, const Error& e)
{
    return fail(cmd, e.toString(), e.code == ErrorCode::Cancelled ? 130 : 1);
}

io::GgmlType plainGgufType(const io::Checkpoint& ck)
{
    if (const TensorInfo* t = ck.find("model.embed_tokens.weight"); t && t->ggmlType < 0) {
        if (t->dtype == DType::F16) return io::GgmlType::F16;
        if (t->dtype == DType::BF16) return io::GgmlType::BF16;
    }
    return io::GgmlType::F32;
}

} // namespace

int writeModelExport(const char* cmd, const io::Checkpoint& ck, const exporting::GridLookup& gridFor,
                     const ModelExportRequest& req, RunContext* ctx, io::JsonValue* json)
{
    io::JsonValue out;
    out.set("path", req.out);
    std::string human;
    switch (req.format) {
    case ExportFormat::Gguf: {
        if (ck.tokenizerPath.empty()) return fail(cmd, "no tokenizer.json found beside " + ck.path);
        auto tok = io::Tokenizer::fromFile(ck.tokenizerPath);
        if (!tok) return fail(cmd, "cannot load tokenizer: " + tok.error().toString());
        exporting::GgufExportOptions o;
        o.weightType = plainGgufType(ck);
        o.gridFor = gridFor;
        o.verify = req.verify;
        if (req.ggufType != "auto") {
            auto t = exporting::parseGgufExportType(req.ggufType);
            if (!t) return fail(cmd, "--gguf-type must be auto, f32, f16, bf16, q8_0, q4_0, q4_1, q5_0 or q5_1", 2);
            o.gridType = *t;
        }
        auto r = exporting::exportGguf(ck, *tok, req.out, o, ctx);
        if (!r) return failWith(cmd, r.error());
        for (const auto& w : r->warnings)
            std::cerr << "quantbench-cli " << cmd << ": warning: " << w << "\n";
        out.set("format", "gguf");
        out.set("bytes", double(r->bytes));
        out.set("all_exact", r->allExact());
        double maxDiff = 0;
        for (const auto& t : r->tensors)
            maxDiff = std::max(maxDiff, t.maxAbsDiff);
        out.set("max_abs_diff", maxDiff);
        out.set("verified", req.verify && r->verify.ok);
        human = "wrote " + r->path + " (GGUF " + r->architecture + ", " + std::to_string(r->tensors.size()) +
                " tensors, " + std::to_string(r->bytes) + " bytes, " + (r->allExact() ? "all exact" : "NOT all exact") +
                ")\n" + r->exactnessTable() + (req.verify ? r->verify.summary() : "");
        break;
    }
    case ExportFormat::Gptq: {
        exporting::GptqExportOptions o;
        o.gridFor = gridFor;
        o.policy = req.roundGrids ? exporting::GptqGridPolicy::Round : exporting::GptqGridPolicy::Refuse;
        o.verify = req.verify;
        auto an = exporting::analyzeGptqGrids(ck, gridFor);
        if (an) std::cerr << an->summary();
        auto r = exporting::exportGptq(ck, req.out, o, ctx);
        if (!r && r.error().code == ErrorCode::Unsupported && !req.roundGrids)
            return fail(cmd, r.error().toString() + "; pass --round-grids to round", 1);
        if (!r) return failWith(cmd, r.error());
        for (const auto& w : r->warnings)
            std::cerr << "quantbench-cli " << cmd << ": warning: " << w << "\n";
        out.set("format", "gptq");
        out.set("bytes", double(r->bytes));
        out.set("bits", r->analysis.bits);
        out.set("group_size", r->analysis.groupSize);
        out.set("desc_act", r->analysis.descAct);
        out.set("sym", r->analysis.sym);
        out.set("max_abs_change", r->analysis.maxAbsChange);
        out.set("verified", req.verify && r->verify.ok);
        human = "wrote " + r->path + " (GPTQ " + std::to_string(r->analysis.bits) + "-bit, group_size " +
                std::to_string(r->analysis.groupSize) + ", " + std::to_string(r->tensorCount) + " tensors, " +
                std::to_string(r->bytes) + " bytes; max abs change " + std::to_string(r->analysis.maxAbsChange) +
                ")\n" + (req.verify ? r->verify.summary() : "");
        break;
    }
    case ExportFormat::Safetensors: {
        exporting::SafetensorsExportOptions o;
        o.gridFor = gridFor;
        o.verify = req.verify;
        auto r = exporting::exportFakeQuantSafetensors(ck, req.out, o, ctx);
        if (!r) return failWith(cmd, r.error());
        out.set("format", "safetensors");
        out.set("bytes", double(r->bytes));
        out.set("dtype", dtypeName(r->gridDtype));
        out.set("verified", req.verify && r->verify.ok);
        human = "wrote " + r->path + " (fake-quantized safetensors, grids as " + dtypeName(r->gridDtype) +
                (r->dtypeReason.empty() ? "" : " because " + r->dtypeReason) + ", " + std::to_string(r->tensorCount) +
                " tensors, " + std::to_string(r->bytes) + " bytes)\n" + (req.verify ? r->verify.summary() : "");
        break;
    }
    case ExportFormat::Qbproj: return fail(cmd, "a project file cannot be exported from here", 2);
    }
    if (json)
        *json = std::move(out);
    else
        std::cout << human << std::flush;
    return 0;
}

exporting::ProjectBundle bundleFromRun(const io::Checkpoint& ck, const pipeline::QuantizeResult& q,
                                       const pipeline::QuantPlan& plan, io::JsonValue calibration,
                                       std::optional<double> perplexity, double seconds)
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
    b.plan = pipeline::quantPlanToJson(plan);
    b.calibration = std::move(calibration);
    io::JsonValue m;
    m.set("bits_per_weight", q.bitsPerWeight);
    m.set("size_bytes", double(q.sizeBytes));
    if (perplexity) m.set("perplexity", *perplexity);
    io::JsonValue t;
    t.set("calibrate", q.seconds.calibrate);
    t.set("hessian", q.seconds.hessian);
    t.set("search", q.seconds.search);
    t.set("solve", q.seconds.solve);
    t.set("evaluate", q.seconds.evaluate);
    t.set("total", seconds);
    m.set("timings", std::move(t));
    io::JsonArray tensors;
    for (std::size_t i = 0; i < q.tensors.size(); ++i) {
        const auto& r = q.tensors[i];
        io::JsonValue e;
        e.set("name", r.name);
        e.set("layer", r.layer);
        e.set("skipped", r.skipped);
        e.set("method", r.skipped ? std::string("none") : std::string(quant::methodTraits(r.method).id));
        e.set("bits", r.bits);
        e.set("group_size", r.groupSize);
        e.set("sym", r.sym);
        e.set("act_order", r.actOrder);
        e.set("bits_per_weight", r.bitsPerWeight);
        e.set("relative_error", r.relativeError);
        e.set("proxy_loss", r.proxyLoss);
        e.set("solver_proxy_loss", r.solverProxyLoss);
        e.set("damping_retries", r.dampingRetries);
        e.set("search_seconds", r.searchSeconds);
        e.set("solve_seconds", r.solveSeconds);
        tensors.push_back(std::move(e));
        if (i < q.codes.size() && q.codes[i]) {
            exporting::BundleTensor bt;
            bt.name = r.name;
            bt.grid = *q.codes[i];
            bt.grid.dequantized.resize(0, 0);
            b.tensors.push_back(std::move(bt));
        }
    }
    m.set("tensors", std::move(tensors));
    io::JsonArray warns;
    for (const auto& w : q.plan.warnings)
        warns.push_back(io::JsonValue(w.detail));
    m.set("warnings", std::move(warns));
    b.metrics = std::move(m);
    return b;
}

} // namespace qb::cli
