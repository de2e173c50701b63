#pragma once
// GGUF export of a LLaMA-family model (arch `llama` for Llama/Mistral, `qwen2` for Qwen2) that
// llama.cpp loads: metadata keys with the exact types llama.cpp checks, the tokenizer (byte-level
// BPE as `gpt2` with merges and pre-tokenizer name, SentencePiece-style BPE as `llama` with
// scores), tensors renamed and reshaped per FORMATS.md §2.5, Q/K rows permuted for arch `llama`
// (§2.4), and an exactness report per tensor.
//
// Per tensor, the data comes either from the checkpoint's F32 weights, encoded with ggml's
// reference quantizer for the chosen type, or from a quantization grid (quant::QuantizedRows)
// stored without requantizing in the smallest type that holds it exactly (§4.9) or the type
// the caller forces. 1-D tensors (norms, biases) are always F32; a 2-D weight whose row length
// is not a multiple of the type's block size falls back (warning): K-quants as llama.cpp's
// llama-quant.cpp does (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), anything
// that still does not fit to F16.
// Memory: one tensor at a time (read, encode, write). After the atomic write the file is re-read
// and verified (model_verify.h) unless disabled.
// Threading: runs on the calling thread; progress stages "write" then "verify"; cancel is polled
// between tensors and leaves any existing output file untouched.

#include "base/result.h"
#include "base/run_context.h"
#include "export/grid_lookup.h"
#include "export/model_verify.h"
#include "io/checkpoint.h"
#include "io/ggml_codec.h"
#include "io/tokenizer.h"
#include "quant/uniform_grid.h"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qb::exporting {

struct GgufExportOptions {
    // Type of the 2-D weights that have no grid (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
    // Q2_K, Q3_K, Q4_K, Q5_K, Q6_K).
    io::GgmlType weightType = io::GgmlType::F16;
    // Per HF tensor name: a quantization grid to store exactly (null: none).
    GridLookup gridFor;
    // Forces the type of grid tensors that were not solved in a storage container (nullopt:
    // smallest exact type per tensor). A grid solved in a container (QuantizedRows::container)
    // is always written in that type, exactly.
    std::optional<io::GgmlType> gridType;
    // Token embedding and output head types (nullopt: weightType), as llama-quantize's
    // --token-embedding-type / --output-tensor-type; rows that do not fit take the fallback.
    std::optional<io::GgmlType> embedType, headType;
    // Plan only: choose every tensor's type and compute the exact file size (report.bytes) and
    // the per-tensor bytes without reading tensor data or writing anything.
    bool planOnly = false;
    // Per HF tensor name type overrides (win over everything else).
    std::map<std::string, io::GgmlType> typeOverrides;
    std::string modelName; // general.name ("" = the checkpoint's directory name)
    bool verify = true;    // re-read and check after writing
    std::uint64_t failAfterBytesForTesting = 0;
};

struct TensorExactness {
    std::string name; // GGUF name
    std::string hfName;
    io::GgmlType type = io::GgmlType::F32;
    std::string source;  // "weights" (checkpoint weights in a float type), "quantized" (checkpoint
                         // weights through ggml's reference quantizer of a block type: the embedding
                         // or head type asked for), "grid" (exact construction of a run's grid),
                         // "grid-requantized" (construction impossible)
    std::string planned; // the type asked for (a container, an embed/head type), "" when none
    std::uint64_t bytes = 0;
    bool exact = false; // decoded values equal the reference (weights or fake-quant) bit for bit
    double maxAbsDiff = 0;
};

struct GgufExportReport {
    std::string path;
    std::string architecture;             // "llama" / "qwen2"
    std::uint64_t bytes = 0;              // file size (planOnly: what the file will be)
    std::vector<TensorExactness> tensors; // file order
    std::vector<std::string> warnings;
    VerifyReport verify; // filled when options.verify
    // Every grid and float tensor decodes exactly ("quantized" tensors are lossy by choice and
    // match what quantizeModel evaluates, see pipeline::fakeQuantizeGgml).
    bool allExact() const;
    // Human-readable table: name, type, exact, max abs diff.
    std::string exactnessTable() const;
};

// Writes `outPath` (.gguf) from an opened checkpoint and its tokenizer.
Result<GgufExportReport> exportGguf(const io::Checkpoint& checkpoint, const io::Tokenizer& tokenizer,
                                    const std::string& outPath, const GgufExportOptions& options = {},
                                    RunContext* ctx = nullptr);

} // namespace qb::exporting
