#pragma once
// Quantize checkpoints: what a layer-by-layer quantize run (quantize_job.h) leaves on disk after
// each decoder layer, so that a run killed at any point (SIGKILL, power loss) continues from the
// last finished layer and ends bit-identical to a run that was never interrupted.
//
// Layout of a checkpoint directory (README "Crash-safe resume"), every file written atomically (temporary
// beside it, fsync, rename(2), fsync of the directory: export/atomic_file.h):
//   manifest.json      {"format":"quantbench-quantize-checkpoint","version":1,"layers":n,"done":k,
//                      "hidden":"hidden-<k>.bin","hidden_rows":R,"hidden_cols":K,
//                      "fingerprint":{"model":hex,"plan":hex,"calibration":hex,"options":hex},
//                      "options":{"batch":..,"threads":..,"keep_inputs_bytes":..,"importance":hex}}
//                      layers 0..k-1 are done; written last, so it always names complete files.
//   layer-<l>.bin      layer l's reports (all seven linears, plan order) and, per quantized tensor,
//                      its grid (codes, scales, zeros, offsets, g_idx, container parameters, CMPQ
//                      layout) and, only when the grid does not reproduce them bit for bit, the F32
//                      weights the job put into the fake-quantized model.
//   hidden-<k>.bin     the calibration hidden states entering layer k, F32 [R = windows x seqlen, K];
//                      only the newest is kept (the older one is deleted after the manifest moved on).
// Binary files: magic (8 bytes), u32 version, the combined fingerprint (u64), then little-endian
// fields (u64 sizes, i32/f64 scalars, raw row-major arrays), and an u64 checksum of everything
// before it. A short, corrupt or foreign file is an error naming the file, never a crash: sizes
// are checked against the bytes left before anything is allocated.
// Fingerprints (64-bit, not cryptographic: they tell runs apart, they do not authenticate):
// model = the checkpoint's config, tensor names/shapes/dtypes and its files' sizes and mtimes (or
// the bytes of the in-memory model when there is no checkpoint); plan = every resolved per-tensor
// setting and the activation plan; calibration = the token ids; options = batch, threads,
// keepInputsBytes and the importance matrix (everything else in QuantizeJobOptions leaves the
// numbers alone). A resume whose fingerprint differs is refused, naming what differs.
// Threading: plain functions on the calling thread (the quantize job's).

#include "base/result.h"
#include "io/checkpoint.h"
#include "io/imatrix.h"
#include "model/model.h"
#include "pipeline/calibration.h"
#include "pipeline/quant_plan.h"
#include "pipeline/quantize_job.h"
#include "quant/uniform_grid.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qb::pipeline {

// Streaming 64-bit hash (FNV-style multiply-xor over 8-byte words): fingerprints and checksums.
class CheckpointHasher {
public:
    void update(const void* data, std::size_t n);
    template <class T>
    void add(const T& v)
    {
        update(&v, sizeof v);
    }
    void addString(const std::string& s);
    std::uint64_t value() const;

private:
    void mix(std::uint64_t word);
    std::uint64_t m_h = 0xcbf29ce484222325ull;
    std::uint64_t m_pending = 0;
    int m_pendingBytes = 0;
    std::uint64_t m_total = 0;
};

struct QuantizeFingerprint {
    std::uint64_t model = 0, plan = 0, calibration = 0, options = 0;
    std::uint64_t combined() const;
    bool operator==(const QuantizeFingerprint&) const = default;
};

// The options of a run that change its numbers, as the manifest records them.
struct QuantizeNumericOptions {
    int batch = 0;
    int threads = 0; // the effective OpenMP team size (GEMM blocking depends on it)
    std::int64_t keepInputsBytes = 0;
    std::uint64_t importance = 0; // hash of the importance matrix, 0 when none
    bool operator==(const QuantizeNumericOptions&) const = default;
};

std::uint64_t fingerprintModel(const model::Model& base, const io::Checkpoint* checkpoint);
std::uint64_t fingerprintPlan(const ResolvedPlan& plan);
std::uint64_t fingerprintCalibration(const CalibrationSet& calib);
std::uint64_t fingerprintImportance(const io::ImportanceMatrix* importance);
std::uint64_t fingerprintOptions(const QuantizeNumericOptions& options);

struct QuantizeCheckpointManifest {
    QuantizeFingerprint fingerprint;
    QuantizeNumericOptions options;
    int layers = 0; // decoder layers of the model
    int done = 0;   // layers 0..done-1 are in the checkpoint
    std::int64_t hiddenRows = 0, hiddenCols = 0;
};

// One finished layer: the seven reports (plan order) and, per quantized tensor, its grid (when the
// run keeps codes, else empty) and its final F32 weight (the fake-quantized layer's).
struct CheckpointTensor {
    std::size_t planIndex = 0;
    std::optional<quant::QuantizedRows> grid; // without `dequantized`
    model::RowMatrix weight;                  // empty for a skipped tensor
};
struct CheckpointLayer {
    int layer = 0;
    std::vector<TensorReport> reports;
    std::vector<CheckpointTensor> tensors; // the quantized ones, plan order
};

// nullopt when dir holds no manifest; an error for a manifest that cannot be read.
Result<std::optional<QuantizeCheckpointManifest>> readQuantizeCheckpointManifest(const std::string& dir);
// Ok when `stored` was written by a run with `now`'s fingerprint and options; else an error that
// names what differs (model, plan, calibration, options) and the directory.
Status checkQuantizeCheckpoint(const std::string& dir, const QuantizeCheckpointManifest& stored,
                               const QuantizeCheckpointManifest& now);
// Writes layer `layer.layer`'s file, then the hidden states entering the next layer, then the
// manifest (done = layer + 1), then deletes the previous hidden-state file.
Status saveQuantizeCheckpointLayer(const std::string& dir, const QuantizeCheckpointManifest& manifest,
                                   const CheckpointLayer& layer, const model::RowMatrix& hidden);
// Reads layer `layer`'s file; its grids' weights are rebuilt from the codes where they were not
// stored. `rows/cols` per tensor are checked against the plan.
Result<CheckpointLayer> readQuantizeCheckpointLayer(const std::string& dir, const QuantizeCheckpointManifest& manifest,
                                                    int layer, const ResolvedPlan& plan);
Result<model::RowMatrix> readQuantizeCheckpointHidden(const std::string& dir,
                                                      const QuantizeCheckpointManifest& manifest);
// Deletes the checkpoint's own files (manifest, layer-*.bin, hidden-*.bin) and the directory when
// that leaves it empty; anything else in dir is left alone.
Status removeQuantizeCheckpoint(const std::string& dir);

} // namespace qb::pipeline
