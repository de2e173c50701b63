#pragma once
// StoredGrid: a solved grid as a run keeps it, in one compact copy.
//
// What: a QuantizedRows without its two large matrices. The codes are held two per byte when every
// code is below 16 (4 bits or fewer, CMPQ's codebooks up to 16 levels), else one per byte, and the
// `dequantized` values are not held at all: they are decoded from codes and group parameters when
// asked. The same object is the compact model's weight for the tensor (a PackedWeight decoding a
// few rows at a time, bit-identical to dequantizeRowsUniform), so a run that keeps both its grids
// (for export and projects) and its quantized model (for evaluation) holds each tensor's codes
// once: for a 4-bit 7B-class model 3.2 GB of codes, not 6.5 GB of bytes plus the model's copy.
// Consumers that need the whole grid (exports, projects, distillation) unpack one tensor at a time.
// Thread-safety: immutable; any number of threads may decode or unpack concurrently.
// Pure std + Eigen.

#include "base/packed_weight.h"
#include "quant/uniform_grid.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qb::quant {

class StoredGrid final : public PackedWeight {
public:
    // q.codes packed; q.dequantized is not kept.
    explicit StoredGrid(const QuantizedRows& q);
    // Everything but codes and dequantized (both empty): bits, group parameters, g_idx, container,
    // CMPQ layout, solver figures.
    const QuantizedRows& params() const { return m_q; }
    // The full grid: codes one per byte, and the dequantized values when withValues.
    QuantizedRows unpack(bool withValues = false) const;
    // The dequantized values, [rows x cols] (what dequantizeRowsUniform gives for the full grid).
    MatrixXfR values() const;
    // The codes alone, [rows x cols], one per byte.
    MatrixU8R codes() const;
    // Codes of rows [r0, r0 + n) into dst (n × cols bytes, row-major).
    void codesInto(std::int64_t r0, std::int64_t n, std::uint8_t* dst) const;
    // True when two codes share a byte.
    bool nibbles() const { return m_nibbles; }

    void decodeRows(std::int64_t r0, std::int64_t n, float* dst) const override;
    std::size_t bytes() const override;
    std::string format() const override;

private:
    QuantizedRows m_q; // without codes and dequantized
    std::vector<std::uint8_t> m_codes;
    bool m_nibbles = false;
};

using StoredGridPtr = std::shared_ptr<const StoredGrid>;

inline StoredGridPtr storeGrid(const QuantizedRows& q) { return std::make_shared<const StoredGrid>(q); }

} // namespace qb::quant
