#pragma once
// Importance matrices (llama.cpp's imatrix, io/imatrix.h) in the pipeline: our calibration
// statistics written as one, and one read as the per-column weights of the quantizers' grid fits.
//
// Ours -> imatrix: the calibrate workflow's ActivationReport holds, per (layer, linear input), an
// eval::ActivationStats; every decoder linear gets the mean x² per input column of the input it
// multiplies (q/k/v share theirs, gate/up too) and the token count. chunk_size is the window
// length, chunk_count the number of windows, datasets the calibration text's file name, as
// llama-imatrix records them.
// imatrix -> quantize (QuantizeJobOptions::importance): checkImportanceMatrix refuses, before
// anything runs, a plan whose quantized tensors are missing from the file or whose column count
// differs; the job then fits grids weighted by importanceWeights() instead of the Hessian diagonal.
// Threading: pure functions, plus one workflow that runs on the calling thread.

#include "base/result.h"
#include "base/run_context.h"
#include "io/imatrix.h"
#include "pipeline/activation_job.h"
#include "pipeline/quant_plan.h"
#include "pipeline/workflows.h"

#include <Eigen/Core>

#include <memory>
#include <string>
#include <vector>

namespace qb::pipeline {

// One entry per decoder linear weight the report has statistics for (HF names).
io::ImportanceMatrix importanceFromActivations(const ActivationReport& report, std::vector<std::string> datasets);

// Every tensor the plan quantizes has an entry with its column count; the error names the first
// that does not (and the file, when `path` is given).
Status checkImportanceMatrix(const io::ImportanceMatrix& m, const ResolvedPlan& plan, const std::string& path = {});

// The entry's mean x² per column as grid-fit weights; uniform (ones) when it saw no tokens (as
// llama-quantize does).
Eigen::VectorXd importanceWeights(const io::ImportanceEntry& e);

struct ImportanceExportRequest {
    CalibrateRequest calibrate;                     // what to collect when `report` is null; its
                                                    // text names the dataset either way
    std::shared_ptr<const ActivationReport> report; // statistics already collected (the window's)
    std::string out;
    io::ImportanceFormat format = io::ImportanceFormat::Gguf;
};

struct ImportanceExportOutcome {
    std::string path;
    io::ImportanceFormat format = io::ImportanceFormat::Gguf;
    int entries = 0;
    std::uint64_t bytes = 0;
    std::shared_ptr<const ActivationReport> report;
    double seconds = 0;
};

// Progress: calibrateActivations' phases (without a report), then stage "write" (the file, read back
// and compared with what was written). Cancel leaves an existing file untouched.
Result<ImportanceExportOutcome> exportImportanceMatrix(const ImportanceExportRequest& request,
                                                       RunContext* ctx = nullptr);

} // namespace qb::pipeline
