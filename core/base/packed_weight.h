#pragma once
// PackedWeight: a [rows, cols] weight matrix held compactly and decoded to F32 a few rows at a
// time where it is used (ARCHITECTURE.md rule 4: weights stay in their stored dtype and the
// forward pass converts per tile).
//
// Encodings: plain F32/F16/BF16 rows straight from a memory-mapped file (no copy: the view keeps
// the mapping alive), fixed-size encoded rows decoded by a function (GGUF blocks; io supplies the
// decoder, io/checkpoint.h packTensor), or anything else a subclass holds (quantization codes +
// scales, quant/stored_grid.h). A row order map lets a view present its stored rows in
// another order (GGUF's interleaved RoPE rows of q/k). decodeRows() gives exactly the values that
// io::readTensorF32 gives for the same rows, so a packed model computes what its F32 copy does.
// Thread-safety: immutable; decodeRows() may run concurrently from any number of threads.
// Pure std (base).

#include "base/dtype.h"
#include "base/mapped_file.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qb {

class PackedWeight {
public:
    virtual ~PackedWeight() = default;
    std::int64_t rows() const { return m_rows; }
    std::int64_t cols() const { return m_cols; }
    // Rows [r0, r0 + n) as F32 into dst (n × cols, row-major, contiguous). Bounds are the
    // caller's promise (0 <= r0, r0 + n <= rows()).
    virtual void decodeRows(std::int64_t r0, std::int64_t n, float* dst) const = 0;
    // Bytes this weight holds or maps.
    virtual std::size_t bytes() const = 0;
    // How it is stored, for reports: "BF16", "Q4_0", "4-bit g128 codes".
    virtual std::string format() const = 0;
    // Non-null when the rows are contiguous, aligned F32 values in this order (a mapped F32
    // tensor): the caller may multiply with them directly.
    virtual const float* f32Data() const { return nullptr; }
    // The stored bytes of row r (after the row order map) when rows are fixed-size encoded
    // blocks read in place (GGUF Q4_0, Q8_0, ...: what format() names), else nullptr. For
    // kernels that compute on the blocks themselves (model/int8_product.h).
    virtual const std::uint8_t* encodedRow(std::int64_t /*r*/) const { return nullptr; }

protected:
    PackedWeight(std::int64_t rows, std::int64_t cols) : m_rows(rows), m_cols(cols) {}

private:
    std::int64_t m_rows, m_cols;
};

using PackedWeightPtr = std::shared_ptr<const PackedWeight>;

// Decodes one stored row of `n` values at src into dst.
using PackedRowDecoder = void (*)(const void* src, float* dst, std::int64_t n);

// Rows of `rowBytes` bytes each in `bytes` (rows × rowBytes of them), decoded by `decode`;
// `format` names the encoding. rowOrder, when not empty, has `rows` entries: row r of the
// weight is stored row rowOrder[r].
PackedWeightPtr makeRowCodecWeight(ByteRange bytes, std::int64_t rows, std::int64_t cols, std::size_t rowBytes,
                                   PackedRowDecoder decode, std::string format,
                                   std::vector<std::int64_t> rowOrder = {});
// Plain F32, F16 or BF16 rows (any other dtype is refused: nullptr). The same row order map.
PackedWeightPtr makeDTypeWeight(ByteRange bytes, DType dtype, std::int64_t rows, std::int64_t cols,
                                std::vector<std::int64_t> rowOrder = {});

// BF16/F16 rows to F32 (exact), vectorisable loops used by the views above.
void bf16RowToF32(const void* src, float* dst, std::int64_t n);
void f16RowToF32(const void* src, float* dst, std::int64_t n);

} // namespace qb
