#include "cli/export_support.h"

#include "cli/cli_command.h"

#include <algorithm>
#include <iostream>

namespace qb::cli {

int writeModelExport(const char* cmd, const io::Checkpoint& ck, const exporting::GridLookup& gridFor,
                     const ModelExportRequest& req, RunContext* ctx, io::JsonValue* json)
{
    if (req.format == ExportFormat::Qbproj) return fail(cmd, "a project file cannot be exported from here", 2);
    if (req.format == ExportFormat::Gguf && req.ggufType != "auto" && !exporting::parseGgufExportType(req.ggufType))
        return fail(cmd, "--gguf-type: " + pipeline::ggufExportTypeError(), 2);
    auto r = pipeline::exportModel(ck, gridFor, req, ctx);
    if (!r) {
        if (req.format == ExportFormat::Gptq && r.error().code == ErrorCode::Unsupported && !req.roundGrids)
            return fail(cmd, r.error().toString() + "; pass --round-grids to round", 1);
        return fail(cmd, r.error().toString(), r.error().code == ErrorCode::Cancelled ? 130 : 1);
    }
    if (r->gptqAnalysis) std::cerr << r->gptqAnalysis->summary();
    for (const auto& w : r->warnings)
        std::cerr << "quantbench-cli " << cmd << ": warning: " << w << "\n";
    io::JsonValue out;
    out.set("path", req.out);
    out.set("format", pipeline::exportFormatName(req.format));
    out.set("bytes", double(r->bytes));
    if (r->gguf) {
        out.set("all_exact", r->gguf->allExact());
        double maxDiff = 0;
        for (const auto& t : r->gguf->tensors)
            maxDiff = std::max(maxDiff, t.maxAbsDiff);
        out.set("max_abs_diff", maxDiff);
    } else if (r->gptq) {
        const auto& a = r->gptq->analysis;
        out.set("bits", a.bits);
        out.set("group_size", a.groupSize);
        out.set("desc_act", a.descAct);
        out.set("sym", a.sym);
        out.set("max_abs_change", a.maxAbsChange);
    } else if (r->safetensors) {
        out.set("dtype", dtypeName(r->safetensors->gridDtype));
    }
    out.set("verified", req.verify && r->verified);
    if (json)
        *json = std::move(out);
    else
        std::cout << r->summary() << std::flush;
    return 0;
}

} // namespace qb::cli
