#pragma once
// safetensors writer (FORMATS.md §1.5) and the fake-quantized Hugging Face export.
//
// Writer: tensors ordered like the reference writer (descending dtype enum position - widest
// first - then name), laid out contiguously from offset 0; compact header with
// `__metadata__ {"format":"pt"}` first, padded with spaces to a multiple of 8. Tensor bytes are
// produced lazily, one tensor at a time, and written through AtomicFileWriter (temporary file +
// fsync + rename; cancel polled between tensors). safetensorsToBytes() builds the same bytes in
// memory (small files such as the tensors inside a .qbproj).
//
// exportFakeQuantSafetensors(): an HF directory (config.json, model.safetensors, tokenizer files)
// whose quantized linears hold the dequantized grid values s·(z+q) as F16 when F16 represents
// every value of every grid exactly, else F32; other tensors keep their original dtype. The
// directory is staged beside the target, verified (re-read: names, dtypes, shapes, finite), then
// swapped in. Memory: one tensor at a time (plus one F32 copy of a grid's values).
// Threading: calling thread only; progress stages "check", "write", "verify".

#include "base/dtype.h"
#include "base/result.h"
#include "base/run_context.h"
#include "export/grid_lookup.h"
#include "export/model_verify.h"
#include "io/checkpoint.h"
#include "quant/stored_grid.h"
#include "quant/uniform_grid.h"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qb::exporting {

struct SafetensorsTensor {
    std::string name;
    DType dtype = DType::F32;
    std::vector<std::int64_t> shape;
    // Returns exactly numel·dtypeSize bytes (little-endian, C order).
    std::function<Result<std::vector<std::uint8_t>>()> produce;
    std::uint64_t byteSize() const;
};

// Position of a dtype in the safetensors Dtype enum (the writer sorts by it, descending).
int safetensorsDtypeRank(DType t);
// Indices of `tensors` in reference-writer order.
std::vector<std::size_t> safetensorsOrder(const std::vector<SafetensorsTensor>& tensors);
// The 8-byte length + padded JSON header for tensors in the given order.
std::string safetensorsHeader(const std::vector<SafetensorsTensor>& tensors, const std::vector<std::size_t>& order,
                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

struct SafetensorsWriteOptions {
    std::map<std::string, std::string> metadata = {{"format", "pt"}};
    std::uint64_t failAfterBytesForTesting = 0;
};

// Atomic file write; returns the file size.
Result<std::uint64_t> writeSafetensorsFile(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                                           const SafetensorsWriteOptions& options = {}, RunContext* ctx = nullptr);
Result<std::vector<std::uint8_t>> safetensorsToBytes(const std::vector<SafetensorsTensor>& tensors);
// Convenience producer for data already in memory.
SafetensorsTensor safetensorsTensorFromBytes(std::string name, DType dtype, std::vector<std::int64_t> shape,
                                             std::vector<std::uint8_t> bytes);

// Re-reads a safetensors file and checks names, dtypes and shapes against `expected` (when not
// empty), then that every float value is finite. format = "safetensors".
Result<VerifyReport> verifySafetensorsFile(const std::string& path, const std::vector<SafetensorsTensor>& expected = {},
                                           RunContext* ctx = nullptr);

class StagingDirectory;

// What every Hugging Face directory export (GPTQ, fake-quantized safetensors) writes into its
// staging directory after its own config files: the tokenizer files copied from the checkpoint's
// directory and model.safetensors, verified (names, dtypes, shapes, finite values) when asked.
struct HfWeightsPayload {
    std::vector<std::string> copiedFiles;
    std::uint64_t bytes = 0; // model.safetensors
    std::optional<VerifyReport> verify;
};
Result<HfWeightsPayload> writeHfWeights(const StagingDirectory& stage, const io::Checkpoint& checkpoint,
                                        const std::vector<SafetensorsTensor>& tensors, bool verify,
                                        std::uint64_t failAfterBytesForTesting, RunContext* ctx);

struct SafetensorsExportOptions {
    GridLookup gridFor;             // HF weight name -> grid (nullptr: not quantized)
    std::optional<DType> gridDtype; // force F16/BF16/F32 for the grid tensors
    bool verify = true;
    std::uint64_t failAfterBytesForTesting = 0;
};

struct SafetensorsExportReport {
    std::string path; // the directory
    DType gridDtype = DType::F16;
    std::string dtypeReason; // why F32 ("tensor X: value v is not an F16 value") or ""
    std::uint64_t bytes = 0; // model.safetensors
    std::size_t tensorCount = 0;
    std::size_t gridTensors = 0;
    std::vector<std::string> copiedFiles;
    std::vector<std::string> warnings;
    VerifyReport verify;
};

Result<SafetensorsExportReport> exportFakeQuantSafetensors(const io::Checkpoint& checkpoint, const std::string& outDir,
                                                           const SafetensorsExportOptions& options = {},
                                                           RunContext* ctx = nullptr);

} // namespace qb::exporting
