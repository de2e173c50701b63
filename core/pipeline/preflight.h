#pragma once
// Pre-flight estimates: how long a quantize or evaluation run will take and how much memory it
// will hold at its peak, before it starts, from the model's shape, the settings and a measured
// throughput of this machine; and the memory there is to hold it.
//
// Time: the phase work of estimateQuantizeWork (multiply-add equivalents) divided by the
// machine's measured rate (a float GEMM of model-like shape on the OpenMP team, about 50 ms, cached
// per thread count) and an efficiency factor measured once against whole runs on the demo model
// (the forward pass, the Hessian sums in double and the column-by-column GPTQ loop reach a
// fraction of GEMM speed). Expect the right order of magnitude, within about a factor of two.
// Memory: what the workflows hold at their peak, part by part (memoryParts), from the model
// config and the settings, in bytes: what lives throughout (the process, the base model's tables or
// layers, the fake-quantized model in F32 when it is evaluated, the codes kept for export) plus the
// larger of the two phases: quantizing (one decoder layer in F32, its Hessian and the GPTQ working
// set in double, the calibration hidden states with the kept o_proj/down_proj inputs and one
// batch's forward workspace), distilling (the student's F32 linears and their gradients, the optimiser's
// master parameters and moments, the teacher's hidden states, the checkpoints of one batch) or
// evaluating (one batch's workspace and logits, twice with KL). A packed checkpoint's weights are memory-mapped pages, counted apart (mappedBytes):
// a run is refused only when the rest does not fit. Available memory: MemAvailable (/proc/meminfo),
// lowered by the limits of this process's memory cgroups (v2 memory.max, v1
// memory.limit_in_bytes, minus usage, its own and its ancestors') and an address-space rlimit.
// Threading: pure functions except measureMachineRate (thread-safe, cached).

#include "base/model_config.h"
#include "base/result.h"
#include "pipeline/quant_plan.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace qb::pipeline {

struct MachineRate {
    int threads = 1;
    double macsPerSecond = 0; // measured float GEMM multiply-adds per second
};

// Measures (once per thread count; threads <= 0: the current OpenMP team) and caches.
MachineRate measureMachineRate(int threads = 0);

// Bytes of memory the process can still take: MemAvailable, capped by its memory cgroups' limits
// minus usage (v2 or v1, ancestors too) and by RLIMIT_AS minus the current virtual size; 0 when unknown.
std::uint64_t availableMemoryBytes();

// What the memory cgroups of a process still allow (procCgroup: its /proc/PID/cgroup; cgroupRoot:
// where cgroupfs is mounted): over its own cgroup and every ancestor's, with cgroup v2 (memory.max,
// memory.current) or else the v1 memory controller (memory.limit_in_bytes, memory.usage_in_bytes),
// the smallest limit minus usage, where usage leaves out the reclaimable page cache (memory.stat
// "file", v1 "total_cache"); 0 when no limit is set.
std::uint64_t cgroupMemoryLeft(const std::string& procCgroup = "/proc/self/cgroup",
                               const std::string& cgroupRoot = "/sys/fs/cgroup");

struct PreflightEstimate {
    double seconds = 0;
    double macsPerSecond = 0; // the machine rate the time estimate used
    std::uint64_t peakBytes = 0;
    // Of peakBytes: the checkpoint's weights held as memory-mapped pages (parts named "... (stored,
    // memory-mapped)"). They are page cache: under pressure the kernel drops them and reads them
    // again from the file, which slows a run down but does not stop it, so they do not count
    // against the available memory.
    std::uint64_t mappedBytes = 0;
    std::uint64_t availableBytes = 0;                               // 0: unknown (never refused)
    std::vector<std::pair<std::string, std::uint64_t>> memoryParts; // what the peak is made of
    bool fits() const { return availableBytes == 0 || peakBytes - mappedBytes <= availableBytes; }
    // The mapped weights do not all stay resident beside the rest (they are streamed from disk).
    bool streamsWeights() const { return availableBytes != 0 && peakBytes > availableBytes; }
    // "about 1 min 20 s and 1.3 GB at the peak + 2.1 GB of memory-mapped weights (20.5 GB available)"
    std::string summary() const;
    // The refusal: what it needs, what there is, the largest parts and what to change.
    std::string refusal() const;
};

struct QuantizePreflightInput {
    int nsamples = 128;
    int seqlen = 256;
    int batch = 8; // calibration windows per forward call
    std::uint64_t calibTextBytes = 0;
    std::int64_t evalTokens = 0; // 0: no evaluation
    int evalCtx = 512;
    int evalBatch = 4;
    bool klDivergence = false;
    bool keepBaseLayers = false; // the window keeps the base's layers loaded
    // The checkpoint's size: the base is held packed in its stored encoding (model_loader.h
    // compact) and the quantized model as codes; 0: everything in F32.
    std::uint64_t storedBytes = 0;
    bool keepCodes = true;
    // NeUQI's distillation after quantizing (pipeline/distill.h): steps (0: one epoch) of batch
    // windows; the base's layers (the teacher) and the quantized model are then held throughout.
    bool distill = false;
    int distillSteps = 0;
    int distillBatch = 1;
};

// Distilling a finished run (workflows.h distillRun): the memory it takes on top of what the
// caller already holds (the run and the original model): the distilled model in F32 and its codes,
// the original's layers when they must be loaded, and the larger of training and evaluating.
struct DistillPreflightInput {
    int nsamples = 128; // the run's calibration windows
    int seqlen = 256;
    int steps = 0; // 0: one epoch
    int batch = 1;
    std::int64_t evalTokens = 0; // 0: no evaluation
    int evalCtx = 512;
    int evalBatch = 4;
    bool klDivergence = false;
    bool evaluateBefore = false; // the run is scored too
    bool loadTeacher = false;    // the original's decoder layers are loaded for it
};
PreflightEstimate preflightDistill(const ModelConfig& config, const ResolvedPlan& plan, const DistillPreflightInput& in,
                                   const MachineRate& rate);

// Multiply-add equivalents of a distillation run: per step and token the forward, the recompute
// and the two backward GEMMs of every layer, and lm_head for student, teacher and the gradient;
// plus the teacher's pass and the loss before and after over every calibration window.
double estimateDistillWork(const ModelConfig& config, int nsamples, int seqlen, int steps, int batch);

PreflightEstimate preflightQuantize(const ModelConfig& config, const ResolvedPlan& plan,
                                    const QuantizePreflightInput& input, const MachineRate& rate);

// Evaluation of a model (perplexity; with a reference model, KL divergence too), held packed in
// storedBytes (the checkpoint's size, model_loader.h compact) or, when 0, in F32.
PreflightEstimate preflightEvaluate(const ModelConfig& config, std::int64_t evalTokens, int ctx, int batch,
                                    bool withReference, const MachineRate& rate, std::uint64_t storedBytes = 0);

// "1.3 GB", "850 MB"
std::string formatBytesShort(std::uint64_t bytes);

} // namespace qb::pipeline
