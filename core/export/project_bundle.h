#pragma once
// .qbproj project files: everything needed to reopen the quantization runs of a session without
// recomputing them.
//
// Layout: a zip (io/zip_bundle.h, QuaZip) holding
//   manifest.json        {"format":"qbproj","version":"1.1","created_by":...,"model":{path,
//                        format, files:[{path,bytes}], bytes},"tensors":[{name,bits,rows,cols,
//                        groups[,container]}],"run_grids":[{"run":i,"entry":"runs/<i>.safetensors",
//                        "tensors":[...as above]}],"entries":{...},"extras":[names]}
//   plan.json            the quantization plan (pipeline/quant_plan.h JSON)
//   calibration.json     calibration settings (free JSON: text path, nsamples, seqlen, seed, ...)
//   metrics.json         per-tensor report, bits per weight, size, perplexities, timings (free JSON)
//   extras/<name>.json   caller-supplied blobs (histograms, error curves, ...)
//   tensors.safetensors  per quantized tensor <name>.codes U8 [rows, cols], <name>.scales F64 and
//                        <name>.zeros F64 [rows, groups] (offset form, quant/uniform_grid.h),
//                        <name>.g_idx I32 [cols]; stored uncompressed (method 0); grids solved
//                        inside a storage container add <name>.offsets F64 [rows, groups] and
//                        <name>.super_scales F64 [rows, 2*cols/256] (K-quants). The grids of the
//                        run whose metrics are metrics.json.
//   runs/<i>.safetensors (1.1) the grids of run i of the session (the index in extras/runs.json's
//                        list), same layout, one entry per further run that has grids; listed in
//                        the manifest's "run_grids".
// Version 1.1 added "run_grids" and runs/: a 1.0 reader opens a 1.1 file with the one grids run
// it knows, and a 1.0 file reads here with no run_grids.
// Reading ignores unknown keys and entries; a newer major version is refused with a message
// that says so; a minor version newer than ours is read. Doubles survive exactly (F64 tensors,
// shortest-round-trip JSON numbers).
// Atomic: written to a temporary file beside the target and renamed (cancel, write errors and a
// disk-space shortfall leave an existing target untouched). Threading: calling thread only.

#include "base/result.h"
#include "base/run_context.h"
#include "io/json_value.h"
#include "quant/stored_grid.h"
#include "quant/uniform_grid.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace qb::exporting {

inline constexpr int kQbprojMajorVersion = 1;
inline constexpr int kQbprojMinorVersion = 1;

struct ModelReference {
    std::string path;                                         // as the user opened it (absolute when known)
    std::string format;                                       // "safetensors", "pytorch-bin", "gguf"
    std::vector<std::pair<std::string, std::uint64_t>> files; // path, bytes
    std::uint64_t bytes = 0;
    bool operator==(const ModelReference&) const = default;
};

struct BundleTensor {
    std::string name;          // HF weight name
    quant::QuantizedRows grid; // codes, scales, zeros, groupIndex, bits (dequantized not stored)
};

// The grids of one further run of a project (runs/<run>.safetensors).
struct BundleRunGrids {
    int run = 0; // index in the project's run list (extras/runs.json)
    std::vector<BundleTensor> tensors;
};

struct ProjectBundle {
    std::string version = std::to_string(kQbprojMajorVersion) + "." + std::to_string(kQbprojMinorVersion);
    std::string createdBy = "quantbench";
    ModelReference model;
    io::JsonValue plan;
    io::JsonValue calibration;
    io::JsonValue metrics;
    std::vector<std::pair<std::string, io::JsonValue>> extras; // e.g. {"histograms", {...}}
    std::vector<BundleTensor> tensors;                         // tensors.safetensors (the metrics.json run's)
    std::vector<BundleRunGrids> runGrids;                      // runs/<run>.safetensors, distinct runs
    const BundleTensor* find(const std::string& name) const;
};

struct BundleWriteOptions {
    std::uint64_t failAfterBytesForTesting = 0;
};

Status writeProjectBundle(const std::string& path, const ProjectBundle& bundle, const BundleWriteOptions& options = {},
                          RunContext* ctx = nullptr);
Result<ProjectBundle> readProjectBundle(const std::string& path);

// Grids equal in codes, scales, zeros, group index and bits (and container parameters).
bool sameGrid(const quant::QuantizedRows& a, const quant::QuantizedRows& b);
// Both lists hold the same names in the same order with sameGrid grids.
bool sameGrids(const std::vector<BundleTensor>& a, const std::vector<BundleTensor>& b);

// Bytes a grid takes in a project's safetensors (codes U8, scales/zeros F64, g_idx I32, container
// offsets and super-scales F64), without the safetensors header.
std::uint64_t gridStorageBytes(const quant::QuantizedRows& grid);
// The same for a stored grid (its codes counted one per byte, as the project writes them).
std::uint64_t gridStorageBytes(const quant::StoredGrid& grid);

} // namespace qb::exporting
