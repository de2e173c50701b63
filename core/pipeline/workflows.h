#pragma once
// Workflows: one request -> result function per thing a user does, written once for the window
// and quantbench-cli. Each takes a plain request struct and a RunContext and returns a Result;
// the GUI binds widgets to the request and shows the outcome, the CLI binds flags to it and
// prints the outcome. Nothing here knows Qt.
//
//   evaluateModel          tokenizer + text + (load) + perplexity
//   calibrateActivations   tokenizer + text + calibration windows + activation statistics
//   quantizeModel          plan resolution + calibration + load + layer-by-layer quantization
//                          (+ perplexity of the result and its KL divergence from the base)
//   analyzeTensor          per-channel error, weight histograms and grid of one quantized tensor
//                          ("sensitivity"; the what-if preview is previewTensor, whatif.h)
//   exportRun              a run -> GGUF / GPTQ / safetensors / .qbproj, each verified
//   saveProject            the workbench state (plan, calibration, every run with its grids)
//                          -> .qbproj, re-read and compared after writing
//   openProject            .qbproj -> model, plan, runs and their grids checked against the model
//
// Progress: each workflow declares its phases with weights on the context (RunContext::setPhases)
// so that RunContext::progress().overall covers the whole workflow; the jobs it calls report
// stages, parts and steps inside the phases. Cancel: polled by every job; a cancelled workflow
// returns ErrorCode::Cancelled and leaves existing files untouched (writes are atomic).
// Threading: call from one worker thread; requests hold shared_ptrs to immutable inputs.

#include "base/result.h"
#include "base/run_context.h"
#include "eval/kl_divergence.h"
#include "eval/perplexity.h"
#include "eval/tensor_stats.h"
#include "io/checkpoint.h"
#include "io/json_value.h"
#include "model/model.h"
#include "pipeline/activation_job.h"
#include "pipeline/calibration.h"
#include "pipeline/distill.h"
#include "pipeline/model_loader.h"
#include "pipeline/perplexity_job.h"
#include "pipeline/project.h"
#include "pipeline/preflight.h"
#include "pipeline/quant_plan.h"
#include "pipeline/quantize_job.h"
#include "pipeline/sensitivity.h"
#include "pipeline/whatif.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qb::pipeline {

// Where calibration windows come from: a UTF-8 text file and the sampling settings.
struct CalibrationSource {
    std::string textPath;
    CalibrationOptions options;
    // {"text", "nsamples", "seqlen", "seed"}: what a project stores as calibration.json.
    io::JsonValue toJson() const;
    static Result<CalibrationSource> fromJson(const io::JsonValue& json);
};

// The checkpoint's tokenizer reads the text; windows are sampled (stage "calibrate").
Result<CalibrationSet> loadCalibration(const io::Tokenizer& tokenizer, const CalibrationSource& source,
                                       RunContext* ctx = nullptr);

// ---- evaluate -----------------------------------------------------------------------------------

struct EvaluateRequest {
    std::shared_ptr<const io::Checkpoint> checkpoint; // its tokenizer, and its weights unless `model`
    std::shared_ptr<const model::Model> model;        // evaluated instead of loading (e.g. a run's)
    // A reference model (e.g. the original of an exported GGUF): KL divergence of the evaluated
    // model's next-token distributions from it, and top-1 agreement, in the same pass.
    std::shared_ptr<const io::Checkpoint> reference;
    std::string textPath;
    PerplexityJobOptions options;
    // Refuse before loading when the pre-flight memory estimate exceeds this many bytes (0: the
    // memory available, preflight.h); checkMemory false: never refuse.
    std::uint64_t memoryLimitBytes = 0;
    bool checkMemory = true;
};

struct EvaluateOutcome {
    eval::PerplexityResult perplexity;
    std::optional<eval::KlStats> kl; // with a reference
    std::vector<LoadWarning> loadWarnings;
    PreflightEstimate preflight; // what was estimated before the run
};

// The evaluation's estimate (time, peak memory) before it runs; tokenizes the text's first 64 KiB.
Result<PreflightEstimate> preflightEvaluateRequest(const EvaluateRequest& request);

// Phases: "load" (when no model is given), "reference" (with one), "perplexity". The reference
// must have the same vocabulary size, and lends its tokenizer when the model has none beside it (a
// GGUF export); both models are resident in F32 during the pass.
Result<EvaluateOutcome> evaluateModel(const EvaluateRequest& request, RunContext* ctx = nullptr);

// ---- calibrate ----------------------------------------------------------------------------------

struct CalibrateRequest {
    std::shared_ptr<const io::Checkpoint> checkpoint;
    CalibrationSource calibration;
    ActivationJobOptions options;
};

// Phases: "calibrate" (tokenize and sample), "activations".
Result<ActivationReport> calibrateActivations(const CalibrateRequest& request, RunContext* ctx = nullptr);

// ---- quantize -----------------------------------------------------------------------------------

struct QuantizeRequest {
    std::shared_ptr<const io::Checkpoint> checkpoint;
    QuantPlan plan;
    CalibrationSource calibration;
    std::optional<std::string> evalTextPath; // perplexity of the result when set
    PerplexityJobOptions evalOptions;
    // With evalTextPath: also KL divergence and top-1 agreement of the result against the base
    // model on the same windows (one paired pass; see quantizeModel for the memory it takes).
    bool klDivergence = true;
    QuantizeJobOptions options; // batch, threads, keepModel, keepCodes, onLayerDone, checkpoint
    // options.checkpoint.dir is removed when the workflow succeeds, unless this is set (the CLI
    // removes it after its export, so that a run killed while exporting resumes instantly).
    bool keepCheckpoint = false;
    // An already loaded base model (its layers may be absent); otherwise it is loaded.
    std::shared_ptr<const model::Model> base;
    // Load every decoder layer of the base up front and return it (the window keeps it for the
    // what-if analysis); false: layers come one at a time and the base has none.
    bool keepBaseLayers = false;
    // Refuse before any work when the pre-flight memory estimate exceeds this many bytes (0: the
    // memory available, preflight.h); checkMemory false: never refuse.
    std::uint64_t memoryLimitBytes = 0;
    bool checkMemory = true;
    // NeUQI's lightweight distillation of the result's scales and zeros (pipeline/distill.h) on the
    // calibration windows, after quantizing and before the evaluation, which then scores the
    // distilled model; the base's decoder layers are loaded for it (the teacher).
    std::optional<DistillOptions> distill;
};

// What a distillation step of the workflow did (QuantizeRequest::distill).
struct DistillSummary {
    double lossBefore = 0, lossAfter = 0;
    std::vector<double> stepLoss;
    int steps = 0, batch = 0, trainedTensors = 0;
    double lr = 0;
    model::DistillLoss loss = model::DistillLoss::Kl;
    bool normGains = false;
    std::vector<std::string> frozen;
    double seconds = 0;
};

struct QuantizeOutcome {
    std::shared_ptr<const QuantizeResult> result;
    std::shared_ptr<const CalibrationSet> calibration;
    std::shared_ptr<const model::Model> base;
    std::optional<eval::PerplexityResult> perplexity;
    std::optional<eval::KlStats> kl; // against the base model (evalTextPath and klDivergence)
    std::vector<LoadWarning> loadWarnings;
    PreflightEstimate preflight;           // estimated before the run (compare with `seconds`)
    double seconds = 0;                    // the whole workflow
    std::optional<DistillSummary> distill; // when the request asked for it
    // The one metrics schema (runMetricsJson): what `quantize --json` prints and a project stores.
    io::JsonValue metricsJson() const;
};

// Phases: "calibrate", "load" (when the base must be loaded), "quantize", with distill "reference"
// (when the base's layers are not loaded) and "distill", then with evalTextPath
// "reference" (KL only, when the base's decoder layers are not loaded) and "perplexity" (with KL:
// both models over each batch of windows), weighted by estimateQuantizeWork so that the overall
// fraction and the ETA follow the work left in every phase. A plan that does not resolve for the
// model, a missing tokenizer or text fail before any long work.
// Memory resident during the evaluation: the fake-quantized model (F32) and, for KL, the base
// model with all its decoder layers (F32; loaded in the "reference" phase when the base came
// without them, and released at the end unless keepBaseLayers), so about twice the F32 model,
// plus one batch per model (eval/kl_divergence.h). Without KL only the fake-quantized model.
Result<QuantizeOutcome> quantizeModel(const QuantizeRequest& request, RunContext* ctx = nullptr);

// The quantize workflow's estimate (time, peak memory, available memory) before it runs, as
// quantizeModel computes it: resolves the plan, reads the tokenizer (eval tokens from the text's
// first 64 KiB). The CLI's --dry-run and the window's estimate line.
Result<PreflightEstimate> preflightQuantizeRequest(const QuantizeRequest& request);

// Work of the quantize workflow's phases in multiply-add equivalents (relative weights, not a time
// prediction): calibrate = tokenizing the text; load = converting the weights loaded; quantize =
// per layer about one forward pass over the calibration tokens (the Hessian passes run each layer only
// as far as the group's input and keep the o_proj/down_proj inputs; then the output pass), the
// Hessian sums and each tensor's solve (GPTQ/NeUQI: cols^3 + rows*cols^2, NeUQI's search on top;
// RTN: a few passes over the weights); perplexity = the forward pass over the evaluation tokens
// including lm_head (vocab x hidden per token, which dominates small models), twice with KL (both
// models) plus the per-token KL over the vocabulary; reference = loading the base's layers for KL.
struct QuantizeWork {
    double calibrate = 0, load = 0, quantize = 0, reference = 0, perplexity = 0;
};
QuantizeWork estimateQuantizeWork(const ModelConfig& config, const ResolvedPlan& plan, std::int64_t calibTokens,
                                  int seqlen, std::uint64_t calibTextBytes, std::int64_t evalTokens, int evalCtx,
                                  bool loadAllLayers, bool klDivergence = false);

// ---- distill a finished run ----------------------------------------------------------------------

// NeUQI's lightweight distillation (pipeline/distill.h) of a run made earlier (the window's
// "Distill" step): the run itself is never changed; the outcome is a new result with the distilled
// model and parameters, scored like a quantize run.
struct DistillRunRequest {
    std::shared_ptr<const io::Checkpoint>
        checkpoint;                            // tokenizer (evaluation); the teacher's layers when `base` lacks them
    std::shared_ptr<const QuantizeResult> run; // with its fake-quantized model and codes (checkDistillable)
    std::shared_ptr<const CalibrationSet> calibration; // the windows to train on (the run's own)
    std::shared_ptr<const model::Model> base;          // the original model (teacher); loaded when absent or layer-less
    DistillOptions options;                            // onStep: the live loss curve
    std::optional<std::string> evalTextPath;           // perplexity (and KL) of the distilled model when set
    PerplexityJobOptions evalOptions;
    bool klDivergence = true;
    // With evalTextPath: also score the run as it was (when its perplexity is not known already).
    bool evaluateBefore = false;
    // Optimiser state to resume (runDistill's): continued from when it holds steps of this run and
    // options, and left updated as steps complete, also when cancelled. Not shared while running.
    DistillState* state = nullptr;
    // Refuse before any work when the memory it adds (preflightDistill) exceeds this many bytes
    // (0: the memory available); checkMemory false: never refuse.
    std::uint64_t memoryLimitBytes = 0;
    bool checkMemory = true;
};

struct DistillRunOutcome {
    std::shared_ptr<const QuantizeResult> result; // the run's result with the distilled model and parameters
    DistillSummary distill;
    std::optional<eval::PerplexityResult> perplexity, perplexityBefore;
    std::optional<eval::KlStats> kl, klBefore;
    double seconds = 0; // the whole workflow
};

// Phases: "reference" (loading the teacher's decoder layers, when the base has none), "distill",
// then with evalTextPath "perplexity" (and "before" with evaluateBefore). Refuses before any work
// what checkDistillable refuses, a run without calibration windows, a base of another shape, or
// more memory than there is (preflightDistill).
// Memory: the teacher and the student in F32 plus distill.h's training state; the evaluation as
// quantizeModel's. Cancel: ErrorCode::Cancelled, the run and the base untouched.
Result<DistillRunOutcome> distillRun(const DistillRunRequest& request, RunContext* ctx = nullptr);

// The distillation's estimate (time, the memory it adds) before it runs, as distillRun computes it
// (eval tokens from the text's first 64 KiB); the window's estimate line.
Result<PreflightEstimate> preflightDistillRequest(const DistillRunRequest& request);

// ---- sensitivity of one tensor ------------------------------------------------------------------

struct TensorAnalysisRequest {
    std::shared_ptr<const model::Model> base;  // the original model, layers loaded
    std::shared_ptr<const QuantizeResult> run; // with its fake-quantized model
    std::shared_ptr<const CalibrationSet> calibration;
    std::string tensor;                          // with or without ".weight"
    std::shared_ptr<const LayerHessians> cached; // reused when it is the tensor's layer
    int histogramBins = 64;
    int channel = -1; // CMPQ: the input channel whose histogram and codebook are shown (-1: top score)
};

struct TensorAnalysis {
    std::size_t index = 0; // in the run's plan
    std::shared_ptr<const LayerHessians> hessians;
    ChannelErrors errors;
    eval::Histogram before, after;  // one shared range
    std::vector<double> gridLevels; // the first group's levels (when codes are kept)
    // CMPQ tensors (codes kept): the channel map and the chosen channel. before/after are then
    // that channel's weights and gridLevels its codebook.
    struct CmpqView {
        std::vector<int> channelBits;       // per input channel; 16 = kept in F16
        std::vector<float> channelScore;    // the activation score that drove the allocation
        std::vector<std::int64_t> outliers; // sparse outlier positions, flat row * cols + col
        int channel = -1;
    };
    std::optional<CmpqView> cmpq;
};

Result<TensorAnalysis> analyzeTensor(const TensorAnalysisRequest& request, RunContext* ctx = nullptr);

// A run reopened from a project keeps its grids, not its models or calibration windows: this
// makes it inspectable again (analyzeTensor) by loading the original model (unless `base` is
// given), rebuilding the quantized one from the grids (the run's own weights, value for value)
// and sampling the calibration windows again from the run's settings (the text must still be
// there). Refused, with the reason: runs with smoothing or rotations (their transforms are not
// stored), runs without grids, a missing calibration text. Stages "load", "calibrate".
struct InspectableRun {
    std::shared_ptr<const model::Model> base;
    std::shared_ptr<const QuantizeResult> result; // a copy of the run's with `model` set
    std::shared_ptr<const CalibrationSet> calibration;
};
Result<InspectableRun> rebuildRunForInspection(const io::Checkpoint& checkpoint, const QuantizeResult& result,
                                               const io::JsonValue& plan, const io::JsonValue& calibration,
                                               std::shared_ptr<const model::Model> base = nullptr,
                                               RunContext* ctx = nullptr);

// ---- sensitivity atlas (mixed-precision planning) ----------------------------------------------

struct SensitivityRequest {
    std::shared_ptr<const io::Checkpoint> checkpoint;
    CalibrationSource calibration;
    std::vector<SensitivityCandidate> candidates;
    SensitivityOptions options;
    // Where atlases are cached (sensitivityCachePath); "" = no cache. A cached atlas with the same
    // fingerprint is returned without any work unless `recompute`.
    std::string cacheDir;
    bool recompute = false;
    // The true effect (measureTensorEffect) of `measureCount` tensors spread evenly over the ranking
    // of the predicted damage at candidate `measureCandidate` (label; "" = the cheapest quantized
    // candidate), on the windows of evalTextPath; measurements already in the atlas are kept when
    // they were made on the same windows, else dropped (SensitivityAtlas::measuredOn).
    std::optional<std::string> evalTextPath;
    PerplexityJobOptions evalOptions;
    int measureCount = 0;
    std::string measureCandidate;
};

struct SensitivityOutcome {
    SensitivityAtlas atlas;
    bool fromCache = false;
    std::string cachePath; // "" without a cache
    double seconds = 0;
    // Measurements of the cached atlas made on another evaluation text or context, dropped.
    std::size_t droppedMeasurements = 0;
};

// Phases: "calibrate", "sensitivity" (skipped for a cached atlas), then with measurements "load"
// (every decoder layer of the base, F32) and "measure". The atlas is saved to the cache after each
// phase that changes it.
Result<SensitivityOutcome> sensitivityAnalysis(const SensitivityRequest& request, RunContext* ctx = nullptr);

// ---- export and projects ------------------------------------------------------------------------

// A finished run as a project stores it.
struct ProjectRun {
    std::string summary;                          // e.g. "GPTQ 4b g128 +2 rules"
    io::JsonValue plan;                           // the run's plan (quant_plan.h JSON)
    std::shared_ptr<const QuantizeResult> result; // codes needed for the grids
    std::optional<double> perplexity;
    double seconds = 0;
    io::JsonValue calibration; // CalibrationSource::toJson() of the run
    std::optional<eval::KlStats> kl;
    // The name the user gave the run; "" = defaultRunName(*result). Projects store it; a project
    // written before names existed gives the default.
    std::string name;
};

struct ExportRequest {
    std::shared_ptr<const io::Checkpoint> checkpoint;
    ProjectRun run;
    ModelExportRequest target; // path, format (any, .qbproj included), GGUF type, rounding, verify
};

// Every format is verified after writing (a .qbproj is re-read and its grids compared).
Result<ModelExportOutcome> exportRun(const ExportRequest& request, RunContext* ctx = nullptr);

struct SaveProjectRequest {
    std::string path;
    std::shared_ptr<const io::Checkpoint> checkpoint;
    std::optional<QuantPlan> plan; // the plan being edited (plan.json)
    io::JsonValue calibration;     // calibration.json (null: the grids run's)
    std::vector<ProjectRun> runs;  // every run, in order (extras/runs.json), each with its grids
    int gridsRun = -1;             // the run of metrics.json and tensors.safetensors; -1: none
    bool verify = true;            // re-read the file and compare the grids
};

struct SavedProject {
    std::string path;
    std::uint64_t bytes = 0;
    std::size_t tensors = 0;  // quantized tensors stored, all runs together
    std::size_t gridRuns = 0; // runs whose grids are stored
    bool verified = false;
    std::string verifySummary;
};

// What saveProject will store for these runs: how many carry grids (QuantizeResult::codes) and
// the bytes of those grids (codes U8, scales and zeros F64, ...; the project's tensor entries are
// stored uncompressed, so this is close to the file size).
struct ProjectContents {
    std::size_t runs = 0;
    std::size_t gridRuns = 0;
    std::uint64_t gridBytes = 0;
};
ProjectContents projectContents(const std::vector<ProjectRun>& runs);

// Every run that has grids keeps them: the grids run's in tensors.safetensors, the others' in
// runs/<index>.safetensors (export/project_bundle.h), so that each can be exported after reopening.
// Phases: "bundle" (histograms read the checkpoint), "write", "verify" (every run's grids).
Result<SavedProject> saveProject(const SaveProjectRequest& request, RunContext* ctx = nullptr);

struct OpenProjectRequest {
    std::string path;
    std::string modelPath; // "" = the model the project references
};

struct OpenedProject {
    std::shared_ptr<const io::Checkpoint> checkpoint;
    exporting::ModelReference model;
    std::optional<QuantPlan> plan;
    io::JsonValue calibration;
    // Every run whose grids the file holds carries its codes (result->codes aligned with
    // result->tensors; a project of version 1.0 holds only the grids run's), checked against the
    // model; runs without grids have none (their export is refused).
    std::vector<ProjectRun> runs;
    int gridsRun = -1; // the run of metrics.json (index in runs)
    RunGrids grids;    // the grids run's, checked against the model, values rebuilt
    std::vector<std::string> warnings;
};

Result<OpenedProject> openProject(const OpenProjectRequest& request, RunContext* ctx = nullptr);

} // namespace qb::pipeline
