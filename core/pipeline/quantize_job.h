#pragma once
// Quantize job: sequential, layer-by-layer post-training quantization of a decoder with a plan.
//
// What (METHODS.md §1c, §6.1 "sequential pipeline", the reference GPTQ --true-sequential mode):
// the calibration windows are embedded once ("calibrate"); then for each decoder layer l:
//   1. its F32 weights are obtained from the layer loader (by default: a copy of the base model's
//      layer when it is loaded, else io via loadDecoderLayer), one layer at a time;
//   2. for each sublayer group in order {q, k, v}, {o}, {gate, up}, {down}: the layer, whose
//      earlier groups are already replaced by their quantized values, runs over the calibration
//      hidden states as far as the group's input (model::runLayerBlock's stop), with an activation
//      tap accumulating the group's input Hessian H ("hessian"); the inputs tapped for o and down
//      are kept (keepInputsBytes), so that finishing each block is one GEMM, not a second run;
//      every tensor of the group is quantized with its plan settings: NeUQI's up-front scale search
//      ("search", neuqi only) and the RTN/GPTQ solve ("solve"), cancel polled between column blocks;
//   3. the rest of the fully quantized layer (down_proj on its kept input) runs over the hidden
//      states, producing the next layer's inputs ("evaluate"); the quantized weights are moved into the output model and the
//      F32 layer freed.
// The taps see the same inputs as a full layer run with the same weights (the arithmetic of each
// block is runLayer's), so this is the reference's true-sequential order with less forward work.
// Progress: part "layer" l of n in 8 steps (step k = linear k's Hessian and solve, step 7 = the
// output pass), so RunContext's overall fraction moves smoothly; details read "layer N <tensor>"
// for people (e.g. "layer 3 mlp.down_proj"; hessian passes name the group's tensors joined by '+'). Cancel returns ErrorCode::Cancelled; the base model and
// checkpoint are never written (the job reads the base model through const and copies).
// Reported per tensor: relative output error on the calibration inputs the tensor saw,
// sqrt(tr(dW H dW^T) / tr(W H W^T)) = ||(W-Q)X^T||_F / ||W X^T||_F (quant/error_metrics.h), and a
// proxy loss 1/2 tr(dW H dW^T) with H = (2/N) X^T X undamped, the same for every method (the
// solver's own GPTQ proxy stays in QuantizedRows::proxyLoss).
// With storage targets (GGUF or gptq) the fake-quantized model's embedding and head are stored in
// the plan's embed/head types too (fakeQuantizeGgml), as the export writes them.
// Memory: resident are the current layer's F32 weights (one DecoderLayerWeights), the calibration
// hidden states [n·L, K] F32, the kept o_proj and down_proj inputs [n·L, heads·d] and [n·L, I] F32
// (each up to keepInputsBytes), one Hessian (in x in double) and the forward workspace for `batch`
// windows; plus what the result keeps: the fake-quantized model (when keepModel; with compactModel
// its quantized linears are the stored grids themselves) and one quant::StoredGrid per quantized
// tensor (when keepCodes: codes two per byte up to 4 bits, group parameters; no F32 values).
// Crash-safe resume (options.checkpoint, pipeline/quantize_checkpoint.h): after each layer its
// reports, grids and final weights and the hidden states entering the next layer are written
// atomically; a resumed run checks the fingerprints (model, plan, calibration, options), takes
// layers 0..k-1 from the checkpoint and continues at k, ending bit-identical to an uninterrupted
// run (timings aside). The thread count is part of the fingerprint: Eigen's GEMM blocking depends
// on the team size, so the hidden states are only reproducible with the same count.
// Threading: runs on the calling thread; the forward pass and Eigen GEMMs use the OpenMP team
// (threads > 0 sets its size, process-wide); the quantization kernels are single-threaded, NeUQI's
// up-front search runs over rows x groups on that team (pipeline/parallel_for.h), bit-identical.

#include "base/result.h"
#include "base/run_context.h"
#include "io/checkpoint.h"
#include "io/imatrix.h"
#include "model/model.h"
#include "pipeline/calibration.h"
#include "pipeline/quant_plan.h"
#include "quant/stored_grid.h"
#include "quant/uniform_grid.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qb::pipeline {

// Returns layer `layer`'s F32 weights as a fresh object the job may modify.
using LayerLoader = std::function<Result<std::shared_ptr<model::DecoderLayerWeights>>(int layer)>;

struct TensorReport;

// Where and how a quantize run keeps its per-layer checkpoint (pipeline/quantize_checkpoint.h):
// after each layer its results and the next layer's inputs are written atomically into `dir`, so
// that a run killed at any point continues, with `resume`, bit-identical to an uninterrupted one.
struct QuantizeCheckpointOptions {
    std::string dir;     // empty: no checkpoint; created when missing
    bool resume = false; // continue from the checkpoint in dir (it must match the run); none: start
    // Without resume: an existing checkpoint in dir is discarded (true) or refused (false: the
    // message says to resume or remove it), so a forgotten --resume never loses finished layers.
    bool overwrite = false;
};

struct QuantizeJobOptions {
    int batch = 8;         // calibration windows per forward call
    int threads = 0;       // > 0: model::setNumThreads
    bool keepModel = true; // build the fake-quantized model copy
    bool keepCodes = true; // keep each tensor's grid (QuantizeResult::codes)
    // The fake-quantized model holds each quantized linear as its stored grid (the same object as
    // codes[i]: codes + group parameters, decoded per tile by the forward pass) when they decode to
    // exactly the solved values, and unquantized linears as the base's packed weight where the
    // default loader gave them unchanged; else F32. Off: every layer F32 (what tests inspect).
    bool compactModel = false;
    // The o_proj and down_proj inputs of every window are kept from their Hessian passes (F32
    // [n·L, heads·d] and [n·L, I]) so that the attention and the gate/up GEMMs run once per layer;
    // an input larger than this many bytes is not kept, and its block runs again instead.
    std::int64_t keepInputsBytes = std::int64_t(2) << 30;
    LayerLoader loader; // empty: the default described above
    // An importance matrix (llama.cpp imatrix, pipeline/importance.h): the per-column weights of
    // the grid fits instead of the damped Hessian diagonal. RTN then searches its (sub-)block
    // scales under them (NeUQI's weighted search; a symmetric free grid stays Min-Max), and every
    // method's storage-container fit is weighted by them. Every quantized tensor needs an entry
    // with its column count (checked before anything runs).
    std::shared_ptr<const io::ImportanceMatrix> importance;
    // Called on the job's thread after layer `layer` is fully quantized, with its reports (plan
    // order). The receiver must not block (the GUI forwards it over a queued signal).
    std::function<void(int layer, const std::vector<TensorReport>& reports)> onLayerDone;
    // Observe mode (the sensitivity atlas, pipeline/sensitivity.h): every tensor of the plan, skipped
    // or not, is handed with its calibration input Hessian (H = (2/N) X^T X of the full-precision
    // inputs, since nothing is quantized) to this callback instead of being solved; the weights stay
    // F32, no reports or codes are filled in, and an error from the callback ends the run.
    std::function<Status(const TensorPlan& tensor, const model::RowMatrix& weight, const Eigen::MatrixXd& h)> observe;
    // Per-layer checkpoints and resume (not with observe). The checkpoint is written before
    // onLayerDone is called and is left in place when the job ends (quantizeModel removes it after
    // the whole workflow succeeded; removeQuantizeCheckpoint).
    QuantizeCheckpointOptions checkpoint;
};

struct TensorReport {
    std::string name;
    int layer = 0;
    model::Linear linear = model::Linear::Q;
    bool skipped = false;
    quant::Method method = quant::Method::Rtn;
    int bits = kUnquantizedBits;
    int groupSize = -1;
    bool sym = false;
    bool actOrder = false;
    std::string target; // TensorPlan::target: the storage container ("Q4_K"), "F16", or ""
    double bitsPerWeight = kUnquantizedBits;
    double relativeError = 0; // on the calibration inputs
    double proxyLoss = 0;     // 1/2 tr(dW H dW^T)
    double solverProxyLoss = 0;
    int dampingRetries = 0;
    double searchSeconds = 0, solveSeconds = 0;
};

// Seconds per stage, summed over the layers. load: reading each layer's weights from the checkpoint
// (decoded to F32); metrics: each tensor's error measures after its solve (the reference trace
// tr(W H W^T), and tr(dW H dW^T) for methods whose solver does not report it); total: the whole
// run, everything else included (checkpoints, packing the codes).
struct QuantizeTimings {
    double calibrate = 0, load = 0, hessian = 0, search = 0, solve = 0, metrics = 0, evaluate = 0, total = 0;
};

struct QuantizeResult {
    std::shared_ptr<model::Model> model; // fake-quantized copy (keepModel)
    std::vector<TensorReport> tensors;   // plan order
    // Aligned with tensors; null when skipped. Shared with the compact model (compactModel); unpack()
    // one tensor at a time where the whole grid is needed.
    std::vector<quant::StoredGridPtr> codes;
    ResolvedPlan plan;
    QuantizeTimings seconds;
    double bitsPerWeight = 0;
    std::uint64_t sizeBytes = 0;
    // Weight-and-activation runs (plan.activation): what the transforms did, and the online
    // transforms a plain weights file cannot hold ("" when none; activation_setup.h).
    std::vector<std::string> notes;
    std::string onlineTransforms;
    // Layers taken from a checkpoint instead of being quantized again (options.checkpoint.resume);
    // informational like `seconds`: everything else equals an uninterrupted run's, bit for bit.
    int resumedLayers = 0;
    const TensorReport* find(const std::string& name) const; // with or without ".weight"
};

// One tensor with its plan settings against its input Hessian, as the job solves it: inside the
// storage container when the plan has one (fit, then RTN or GPTQ on the fixed grid), else RTN,
// NeUQI or GPTQ on the free grid (not CMPQ, which needs the channel statistics of the job's
// tap); an importance matrix (when given) weights the grid fits instead of
// diag H. Progress stages "search" and "solve"; the seconds go into report/timings when given.
// gptqFactor (optional): GPTQ's factor of h (quant::sharedGptqFactor), built on first use and
// reused by later calls on the same h; the caller resets it when h changes.
Result<quant::QuantizedRows> quantizeTensor(const TensorPlan& tensor, const model::RowMatrix& weight,
                                            const Eigen::MatrixXd& h, const io::ImportanceMatrix* importance = nullptr,
                                            RunContext* ctx = nullptr, TensorReport* report = nullptr,
                                            QuantizeTimings* timings = nullptr,
                                            std::optional<quant::GptqFactor>* gptqFactor = nullptr);
// `m` as a GGUF file stores it in `type` ("Q6_K", "F16", ...; ggml's reference quantizer and
// decoder, row by row), in place: how the quantize job evaluates a plan's embedding and head
// types, so that its perplexity is the exported file's. Rows that do not fit the type are an error.
Status fakeQuantizeGgml(const std::string& type, model::RowMatrix& m);
// The same values held compactly: `m` (or `packed`, when set) encoded in `type` and viewed as a
// packed weight that decodes to what fakeQuantizeGgml leaves (nullptr for F32: keep the source).
Result<PackedWeightPtr> packGgml(const std::string& type, const model::RowMatrix& m, const PackedWeightPtr& packed);

// Quantizes `base` (whose decoder layers may be absent when a checkpoint is given) with `plan` on
// `calib`. checkpoint may be null when every layer of base is loaded (or options.loader is set).
Result<QuantizeResult> runQuantize(const model::Model& base, const io::Checkpoint* checkpoint, const ResolvedPlan& plan,
                                   const CalibrationSet& calib, const QuantizeJobOptions& options = {},
                                   RunContext* ctx = nullptr);

} // namespace qb::pipeline
