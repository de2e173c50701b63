#pragma once
// Distillation job: NeUQI's lightweight distillation (METHODS.md §2(a), the `llmtrainer/` code) —
// train the per-group scales and zeros of a quantized model with its integer codes frozen, so that
// the student's next-token distributions follow the full-precision teacher's.
//
// What: teacher = the F32 model the run quantized; student = the quantize job's result (its
// fake-quantized model and, per tensor, codes + scales + zeros). Every step takes `batch`
// calibration windows in order (cycling), runs the student forward and backward end to end
// (model/backward.h: per-layer recompute), turns the dense weight gradients into group gradients
// (quant/fake_quant_grad.h: ŵ = s·(z + q) − b), clips their global norm and takes an AdamW step
// (NeUQI defaults: β = (0.9, 0.95), weight decay 0, lr 3e-4, cosine schedule with 10 % linear
// warm-up, as Hugging Face get_cosine_schedule_with_warmup). Loss: KL(teacher ‖ student) of the
// next-token distributions at every position (default) or NeUQI's MSE of the final normed hidden
// states. Optionally the RMSNorm gains are trained too (off by default: codes frozen, scales and
// zeros only).
// Storage containers (ARCHITECTURE.md rule 6): the optimiser keeps a double master copy of every
// parameter; the student always runs with the master projected into its container, so what the
// loss sees is what an export writes: target "gptq": f16 scales (the smallest normal f16 when
// below) and integer zeros in [-(L-1), -1]; GGUF legacy blocks (Q8_0, Q5_x, Q4_x): f16 scale, the
// block's fixed integer zero, and for Q4_1/Q5_1 the f16 min; free grids (no target): the master
// values. K-quant tensors (sub-block scales are integer codes under a super-scale) and CMPQ
// tensors are left as they are and listed in DistillResult::frozen.
// Progress: stage "distill", one unit per step (detail "step N loss X"); cancel is polled
// between steps and returns ErrorCode::Cancelled with the inputs untouched. Resume: pass a
// DistillState; it is filled as steps complete (also when cancelled), and a later call with the
// same inputs and state continues from its step.
// Memory: the teacher's final normed hidden states of every calibration window ([n·L, K] F32),
// the student's layers in F32 and their dense weight gradients (twice the linear weights in F32),
// the master parameters and two Adam moments per group (double), and the backward pass's
// checkpoints for one batch (model/backward.h).
// Threading: runs on the calling thread; GEMMs and loops use the OpenMP team (threads > 0 sets
// its size, process-wide).

#include "base/result.h"
#include "base/run_context.h"
#include "model/backward.h"
#include "model/model.h"
#include "pipeline/calibration.h"
#include "pipeline/quantize_job.h"
#include "quant/stored_grid.h"
#include "quant/uniform_grid.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qb::pipeline {

struct DistillStepReport {
    int step = 0; // 0-based step just taken
    int steps = 0;
    double loss = 0;     // the batch's loss before the step
    double lr = 0;       // the learning rate used
    double gradNorm = 0; // before clipping
};

struct DistillOptions {
    int steps = 0; // optimizer steps; 0: one epoch (calibration windows / batch, at least 1)
    int batch = 1; // windows per step (NeUQI: 1)
    double lr = 3e-4;
    double beta1 = 0.9, beta2 = 0.95, epsilon = 1e-8, weightDecay = 0.0;
    double warmup = 0.1;   // fraction of steps with a linear warm-up
    double clipNorm = 1.0; // global gradient norm; <= 0: no clipping
    model::DistillLoss loss = model::DistillLoss::Kl;
    bool normGains = false; // also train every RMSNorm gain (layers and the final norm)
    int threads = 0;        // > 0: model::setNumThreads
    int evalBatch = 4;      // windows per forward pass of the before/after loss
    // Called on the job's thread after every step; must not block.
    std::function<void(const DistillStepReport&)> onStep;
};

// The optimiser's state, for resuming: steps done, master parameters and Adam moments of every
// trained tensor (aligned with DistillState::tensors), the gains when trained.
struct DistillState {
    int step = 0;
    int steps = 0;
    struct Tensor {
        std::size_t index = 0; // into QuantizeResult::tensors
        quant::MatrixXdR scale, zero, offset;
        quant::MatrixXdR mScale, vScale, mZero, vZero, mOffset, vOffset;
        bool trainZero = false, trainOffset = false;
    };
    std::vector<Tensor> tensors;
    struct Gains {
        Eigen::RowVectorXd value, m, v;
    };
    std::vector<Gains> gains; // per layer: input, post; then the final norm (normGains)
    std::vector<double> losses;
    bool initialised() const { return !tensors.empty() || !gains.empty(); }
};

struct DistillResult {
    std::shared_ptr<model::Model> model;     // the distilled student
    std::vector<quant::StoredGridPtr> codes; // QuantizeResult::codes with the new parameters
    double lossBefore = 0, lossAfter = 0;    // over every calibration window
    std::vector<double> stepLoss;            // per step (all steps, resumed ones too)
    int steps = 0;
    int trainedTensors = 0;
    std::vector<std::string> frozen; // quantized tensors left as they were (K-quants, CMPQ), with why
    bool normGains = false;
    double seconds = 0;
};

// Distils `quantized` (keepModel and keepCodes) towards `teacher` on `calib`. teacher must have every
// layer loaded. state (optional): continue from it when it holds steps, and leave it updated.
Result<DistillResult> runDistill(const model::Model& teacher, const QuantizeResult& quantized,
                                 const CalibrationSet& calib, const DistillOptions& options = {},
                                 RunContext* ctx = nullptr, DistillState* state = nullptr);

// The learning rate of step `step` (0-based) of `steps`: linear warm-up over ceil(warmup·steps)
// steps, then cosine to 0 (Hugging Face get_cosine_schedule_with_warmup).
double distillLearningRate(const DistillOptions& options, int step, int steps);

// `quantized` with the distilled model and parameters in place of its own (for export/eval).
void applyDistill(QuantizeResult& quantized, const DistillResult& distilled);

// What distillation would train in `quantized`: the number of tensors whose scales and zeros train,
// and the quantized tensors it leaves as they are, each with why (runDistill's own choice).
struct DistillScope {
    int trained = 0;
    std::vector<std::string> frozen;
};
DistillScope distillScope(const QuantizeResult& quantized);

// Why a plan cannot be distilled (a weight-and-activation plan: the backward pass has no runtime
// transforms or activation quantizers), as ErrorCode::Unsupported; OK otherwise.
Status checkDistillablePlan(const ResolvedPlan& plan);

// Why `quantized` cannot be distilled, with the message runDistill would give, before any work:
// an activation plan (checkDistillablePlan), no fake-quantized model or codes, an architecture the
// backward pass does not support (model::checkBackwardConfig), or nothing to train (every
// quantized tensor is a K-quant or CMPQ one; distillScope). OK when it can. Cheap (no model pass).
Status checkDistillable(const QuantizeResult& quantized);

} // namespace qb::pipeline
