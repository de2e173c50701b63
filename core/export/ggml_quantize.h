#pragma once
// What GGUF export adds on top of the ggml codec (io/ggml_codec.h): the list of types the exporter
// writes, llama.cpp's file type, exact encoders that store a uniform quantization grid
// (quant::QuantizedRows) in a block type without requantizing (FORMATS.md §4.9), and the encoding
// of whole matrices with a measurement of how exactly they decode.
//
// Layout: a "row" is one output channel of an nn.Linear weight (HF [out, in] row-major), which is
// exactly one ggml row (ne[0] = in); blocks run along it. Names, sizes, the reference quantizers
// and the decoder used for the exactness measurement all come from the codec's traits table.
// Pure functions, thread-safe, no allocation except the returned buffers.

#include "base/result.h"
#include "io/ggml_codec.h"
#include "quant/uniform_grid.h"

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace qb::exporting {

// The types the GGUF exporter can write (every type the codec encodes and decodes), smallest bits
// per weight first.
const std::vector<io::GgmlType>& ggufExportTypes();
bool isGgufExportType(io::GgmlType t);
// "q4_0" / "Q4_0" / "f16" -> type; nullopt if not an export type.
std::optional<io::GgmlType> parseGgufExportType(std::string_view name);
// llama.cpp LlamaFileType for a file whose big weights are all `t` (general.file_type).
std::uint32_t llamaFileType(io::GgmlType t);

// Stores row `row` of a uniform grid in type t without requantizing: block d = scale, codes
// shifted by the integer zero (FORMATS.md §4.9 constructions). Returns false (dst unspecified)
// when the construction does not apply: groups not aligned to blocks, a scale that is not an f16
// value, a zero that is not an integer, or codes out of the type's range. F32/F16/BF16 convert
// the dequantized values and always succeed.
bool encodeGridRow(io::GgmlType t, const quant::QuantizedRows& q, int row, void* dst);

// Encoding of a whole [rows x cols] matrix and how close its decoding is to `reference`.
struct EncodedMatrix {
    std::vector<std::uint8_t> bytes; // rows * io::ggmlRowBytes(t, cols)
    bool fromGrid = false;           // true: exact construction; false: reference quantizer
    bool exact = false;              // decoded == reference bit for bit (NaN never equal)
    double maxAbsDiff = 0;
};

// F32 weights -> ggml reference quantizer; the reference for exactness is `w` itself.
Result<EncodedMatrix> encodeMatrixGgml(io::GgmlType t, const float* w, std::int64_t rows, std::int64_t cols);
// Grid -> exact construction per row where possible, else the reference quantizer applied to the
// fake-quantized row; exactness is measured against q.dequantized.
Result<EncodedMatrix> encodeGridGgml(io::GgmlType t, const quant::QuantizedRows& q);

// Smallest export type (bits per weight) whose encoding of the grid is exact; F32 at worst.
// K-quants are not candidates (no exact grid construction for them yet).
Result<std::pair<io::GgmlType, EncodedMatrix>> encodeGridSmallestExact(const quant::QuantizedRows& q);

} // namespace qb::exporting
