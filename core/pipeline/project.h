#pragma once
// A quantization run as a project and as a model export: the one implementation shared by the
// GUI (export dialog, File > Save/Open Project) and quantbench-cli (quantize --out, export).
//
// - bundleFromRun(): a finished run -> .qbproj bundle (model reference, plan, metrics, grids).
// - reportsFromMetrics(): the inverse of the metrics part (per-tensor reports, bits per weight,
//   size) so that a restored run shows its numbers without recomputing.
// - RunGrids: the quantization grids of a run, owned, with their dequantized values rebuilt,
//   either from a live QuantizeResult or from a bundle checked against the original model.
// - exportModel(): GGUF / GPTQ directory / fake-quantized safetensors directory from a checkpoint
//   plus grids, returning the exporter's structured report (exactness, verification).
// Threading: calling thread only (run exportModel in a worker; it polls ctx for cancel).

#include "base/result.h"
#include "base/run_context.h"
#include "eval/kl_divergence.h"
#include "export/gguf_export.h"
#include "export/gptq_export.h"
#include "export/project_bundle.h"
#include "export/safetensors_export.h"
#include "io/checkpoint.h"
#include "io/json_value.h"
#include "pipeline/quant_plan.h"
#include "pipeline/quantize_job.h"

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qb::pipeline {

enum class ExportFormat { Gguf, Gptq, Safetensors, Qbproj };
std::optional<ExportFormat> parseExportFormat(std::string_view name);
const char* exportFormatName(ExportFormat format);

struct ModelExportRequest {
    std::string out;
    ExportFormat format = ExportFormat::Gguf;
    std::string ggufType = "auto"; // auto = smallest exact type per grid (grids solved in a
                                   // storage container always keep its type)
    // GGUF token embedding / output head types ("" = the run plan's, see ResolvedPlan::embedType,
    // else the checkpoint's float type).
    std::string embedType, headType;
    bool roundGrids = false; // GPTQ: round what the format cannot hold instead of refusing
    bool verify = true;
    bool planOnly = false; // GGUF: choose the types and compute the exact size; write nothing
};

// The names accepted for ModelExportRequest::ggufType: "auto", then the export types from the
// smallest bits per weight up.
std::vector<std::string> ggufExportTypeNames();
// "GGUF type must be one of auto, q2_k, ..." built from ggufExportTypeNames().
std::string ggufExportTypeError();

struct ModelExportOutcome {
    ExportFormat format = ExportFormat::Gguf;
    std::string path;
    std::uint64_t bytes = 0;
    std::uint64_t plannedBytes = 0; // GGUF: the size planned before writing (== bytes); 0 otherwise
    std::optional<exporting::GgufExportReport> gguf;
    std::optional<exporting::GptqExportReport> gptq;
    std::optional<exporting::GptqAnalysis> gptqAnalysis; // before writing (GPTQ)
    std::optional<exporting::SafetensorsExportReport> safetensors;
    std::size_t projectTensors = 0; // .qbproj: quantized tensors stored
    std::vector<std::string> warnings;
    bool verified = false;     // verification ran and passed
    std::string verifySummary; // "" when not verified
    // One-paragraph human summary (what the CLI prints).
    std::string summary() const;
};

// Writes the export (never Qbproj: that is saveProject in workflows.h). GPTQ with roundGrids false fails
// with ErrorCode::Unsupported when the grids need rounding.
Result<ModelExportOutcome> exportModel(const io::Checkpoint& checkpoint, const exporting::GridLookup& gridFor,
                                       const ModelExportRequest& request, RunContext* ctx = nullptr);

// The GGUF file a plan with storage targets will give, before anything runs: every decoder linear
// in its resolved target type, the embedding and head as the plan resolves them, everything else
// as the export writes it; report.bytes is the exact file size (metadata and tokenizer included)
// and report.tensors the per-tensor types and bytes. An error when the plan has no GGUF targets.
Result<exporting::GgufExportReport> planGgufExport(const io::Checkpoint& checkpoint, const ResolvedPlan& plan);

// What a GGUF export of this checkpoint adds to the tensor data: header, metadata (the tokenizer
// included) and alignment, measured by planning an F32 export. The window adds it to a plan's
// tensor bytes (ResolvedPlan::sizeBytes) to show the whole file before anything runs.
Result<std::uint64_t> ggufOverheadBytes(const io::Checkpoint& checkpoint);

// The grids of a run by HF weight name (shared with the run, or read from a project).
struct RunGrids {
    std::map<std::string, quant::StoredGridPtr> grids;
    exporting::GridLookup lookup() const; // valid while *this lives
    bool empty() const { return grids.empty(); }
};
RunGrids gridsFromResult(const QuantizeResult& result);
// Checks every stored tensor against the model (present, 2-D, same shape) and stores its grid.
Result<RunGrids> gridsFromBundle(const exporting::ProjectBundle& bundle, const io::Checkpoint& checkpoint);
// The same for one list of tensors (bundle.tensors or one of bundle.runGrids).
Result<RunGrids> gridsFromBundleTensors(const std::vector<exporting::BundleTensor>& tensors,
                                        const io::Checkpoint& checkpoint);
// Model files whose size changed since the bundle was written (one message each).
std::vector<std::string> modelFileWarnings(const exporting::ModelReference& model);

// The grids a project stores for a run: a copy of every tensor's codes (without the dequantized
// matrices), in the run's tensor order.
std::vector<exporting::BundleTensor> bundleTensorsFromResult(const QuantizeResult& result);
// Bytes those grids take in a project (exporting::gridStorageBytes summed).
std::uint64_t projectGridBytes(const QuantizeResult& result);

// The bundle of a finished run (grids are copied; their dequantized matrices are not stored).
exporting::ProjectBundle bundleFromRun(const io::Checkpoint& checkpoint, const QuantizeResult& result,
                                       const QuantPlan& plan, io::JsonValue calibration,
                                       std::optional<double> perplexity, double seconds,
                                       const std::optional<eval::KlStats>& kl = std::nullopt);
// Weight histograms of every quantized tensor before and after quantization, on one shared
// range: {"bins": N, "tensors": {name: {"lo", "hi", "original": [...], "quantized": [...],
// "kurtosis"}}}. bundleFromRun stores it as the bundle's "histograms" extra.
io::JsonValue weightHistogramsJson(const io::Checkpoint& checkpoint, const QuantizeResult& result, int bins = 64);
// The metrics JSON of bundleFromRun alone. With kl: "kl": {"tokens", "mean", "mean_stderr",
// "median", "p99", "max" (nats), "top1_agreement", "top1_agreement_stderr" (fractions 0..1),
// "reference_perplexity"}.
io::JsonValue runMetricsJson(const QuantizeResult& result, std::optional<double> perplexity, double seconds,
                             const std::optional<eval::KlStats>& kl = std::nullopt);
// The "kl" block alone (also what `eval --reference --json` prints).
io::JsonValue klStatsJson(const eval::KlStats& kl);

// A run rebuilt from its metrics JSON: tensors, bitsPerWeight, sizeBytes, timings (no model, no
// codes). Unknown keys are ignored; perplexity, total seconds and the KL block come back through
// the pointers.
Result<QuantizeResult> resultFromMetrics(const io::JsonValue& metrics, std::optional<double>* perplexity = nullptr,
                                         double* seconds = nullptr, std::optional<eval::KlStats>* kl = nullptr);

// The name a run gets until the user renames it, from what was quantized: "GPTQ 4b g128" (with
// " sym", "per-ch") when every decoder linear has the same method, bits, group and symmetry,
// "RTN Q4_K" for one storage container, "CMPQ 3.50 b" for channel-wise mixed precision, else
// "mixed 5.06 b" (bits per weight); the activation settings follow ("... W4A8"); "unquantized"
// when every tensor was skipped.
std::string defaultRunName(const QuantizeResult& result);

} // namespace qb::pipeline
