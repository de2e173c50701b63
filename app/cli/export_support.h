#pragma once
// Shared by `quantbench-cli quantize --out` and `quantbench-cli export`: writing a model export
// (GGUF, GPTQ directory, fake-quantized safetensors directory) from a checkpoint plus the
// quantization grids, and building a .qbproj bundle from a finished quantize run.
// Threading: calling thread only.

#include "base/run_context.h"
#include "export/project_bundle.h"
#include "export/safetensors_export.h"
#include "io/checkpoint.h"
#include "io/json_value.h"
#include "pipeline/quant_plan.h"
#include "pipeline/quantize_job.h"

#include <optional>
#include <string>
#include <string_view>

namespace qb::cli {

enum class ExportFormat { Gguf, Gptq, Safetensors, Qbproj };
std::optional<ExportFormat> parseExportFormat(std::string_view name);

struct ModelExportRequest {
    std::string out;
    ExportFormat format = ExportFormat::Gguf;
    std::string ggufType = "auto"; // auto = smallest exact type per grid
    bool roundGrids = false;       // GPTQ: round what the format cannot hold instead of refusing
    bool verify = true;
};

// Writes the export; prints a human summary to stdout unless `json` is given, in which case the
// summary goes into *json. Returns the process exit code (0, 1, 2 usage, 130 cancelled).
int writeModelExport(const char* cmd, const io::Checkpoint& checkpoint, const exporting::GridLookup& gridFor,
                     const ModelExportRequest& request, RunContext* ctx, io::JsonValue* json);

// The bundle of a finished run (grids are copied; their dequantized matrices are not stored).
exporting::ProjectBundle bundleFromRun(const io::Checkpoint& checkpoint, const pipeline::QuantizeResult& result,
                                       const pipeline::QuantPlan& plan, io::JsonValue calibration,
                                       std::optional<double> perplexity, double seconds);

} // namespace qb::cli
