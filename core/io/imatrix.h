#pragma once
// Importance matrices as llama.cpp's imatrix tool writes them and `llama-quantize --imatrix`
// reads them: per linear weight, the mean of x² over the calibration tokens for every input
// column (the diagonal of X^T X / N), the weights llama.cpp's scale searches minimise under.
//
// Two files, both read here (the writer is export/imatrix_writer.h):
// - GGUF (llama.cpp's default since mid-2025): `general.type` = "imatrix", `imatrix.datasets`
//   (string array), `imatrix.chunk_count` and `imatrix.chunk_size` (u32); per weight `W` (GGUF
//   name, e.g. blk.0.attn_q.weight) the F32 tensors `W.in_sum2` with ne = [ncols, nmat] (sum of x²
//   over every token), `W.counts` with ne = [1, nmat] (tokens) and, optionally, `W.in_sum` (sum of
//   x, same shape as in_sum2). Importance = in_sum2 / counts. nmat > 1 (MoE experts) is refused.
// - legacy `.dat` (little-endian): i32 n_entries; per entry i32 len, len name bytes, i32 ncall,
//   i32 nval, f32[nval] = mean x² · ncall; then i32 last_chunk, i32 len, len bytes of the dataset
//   path. The chunk size is not stored: `count` holds ncall (chunks) and chunkSize is 0.
// Entries are keyed by Hugging Face names (io/gguf_names.h); a name without one keeps its GGUF name.
// Errors name the file and the entry (truncation, sizes, NaN/Inf, negative sums, wrong type).
// Pure functions over plain values; thread-safe.

#include "base/result.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qb::io {

enum class ImportanceFormat { Gguf, Dat };
// "gguf" / "dat" (any case); nullopt otherwise.
std::optional<ImportanceFormat> parseImportanceFormat(const std::string& name);
const char* importanceFormatName(ImportanceFormat f);

struct ImportanceEntry {
    std::vector<float> meanSquare; // per input column: mean x² over `count` tokens
    std::vector<float> mean;       // per input column: mean x (GGUF in_sum / counts); empty when absent
    double count = 0;              // tokens (GGUF), calls = chunks (legacy .dat); 0: no data
    std::int64_t columns() const { return std::int64_t(meanSquare.size()); }
};

struct ImportanceMatrix {
    std::map<std::string, ImportanceEntry> entries;   // HF weight name -> entry
    std::vector<std::string> datasets;                // calibration text(s) it was computed on
    std::uint32_t chunkCount = 0;                     // windows (chunks) seen
    std::uint32_t chunkSize = 0;                      // tokens per chunk; 0: unknown (legacy)
    ImportanceFormat format = ImportanceFormat::Gguf; // what it was read from

    const ImportanceEntry* find(const std::string& hfName) const;
};

// Reads either format (told apart by the GGUF magic).
Result<ImportanceMatrix> readImportanceMatrix(const std::string& path);
// The same from bytes already in memory (legacy .dat only; `path` names them in errors).
Result<ImportanceMatrix> parseImportanceMatrixDat(const std::vector<std::uint8_t>& bytes, const std::string& path);

// Checks one entry: column count `cols` (when >= 0), finite and non-negative values, a finite
// non-negative count. The error names `name` (the caller adds the file).
Status validateImportanceEntry(const std::string& name, const ImportanceEntry& e, std::int64_t cols = -1);

} // namespace qb::io
