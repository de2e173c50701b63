#pragma once
// Shared by `quantbench-cli quantize --out` and `quantbench-cli export`: the CLI front of the
// model export and project logic of pipeline/project.h (the one implementation the GUI uses too):
// prints summaries / warnings and maps errors to exit codes.
// Threading: calling thread only.

#include "base/run_context.h"
#include "export/ggml_quantize.h"
#include "export/project_bundle.h"
#include "export/safetensors_export.h"
#include "io/checkpoint.h"
#include "io/json_value.h"
#include "pipeline/project.h"
#include "pipeline/quant_plan.h"
#include "pipeline/quantize_job.h"

#include <optional>
#include <string>
#include <string_view>

namespace qb::cli {

using pipeline::ExportFormat;
using pipeline::ModelExportRequest;
using pipeline::parseExportFormat;
using pipeline::bundleFromRun;

// Writes the export; prints a human summary to stdout unless `json` is given, in which case the
// summary goes into *json. Returns the process exit code (0, 1, 2 usage, 130 cancelled).
int writeModelExport(const char* cmd, const io::Checkpoint& checkpoint, const exporting::GridLookup& gridFor,
                     const ModelExportRequest& request, RunContext* ctx, io::JsonValue* json);

} // namespace qb::cli
