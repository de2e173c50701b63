#include "base/packed_weight.h"

#include <cstring>
#include <utility>

namespace qb {

void bf16RowToF32(const void* src, float* dst, std::int64_t n)
{
    // BF16 is the upper half of an F32: widening is a shift, exact for every value (NaN included).
    const auto* p = static_cast<const unsigned char*>(src);
    for (std::int64_t i = 0; i < n; ++i) {
        const std::uint32_t bits = std::uint32_t(p[2 * i] | (p[2 * i + 1] << 8)) << 16;
        std::memcpy(dst + i, &bits, 4);
    }
}

void f16RowToF32(const void* src, float* dst, std::int64_t n)
{
    const auto* p = static_cast<const unsigned char*>(src);
    for (std::int64_t i = 0; i < n; ++i)
        dst[i] = f16ToF32(std::uint16_t(p[2 * i] | (p[2 * i + 1] << 8)));
}

namespace {

void f32RowToF32(const void* src, float* dst, std::int64_t n) { std::memcpy(dst, src, std::size_t(n) * 4); }

class RowCodecWeight final : public PackedWeight {
public:
    RowCodecWeight(ByteRange bytes, std::int64_t rows, std::int64_t cols, std::size_t rowBytes, PackedRowDecoder decode,
                   std::string format, std::vector<std::int64_t> order, bool f32)
        : PackedWeight(rows, cols), m_bytes(std::move(bytes)), m_rowBytes(rowBytes), m_decode(decode),
          m_format(std::move(format)), m_order(std::move(order)), m_f32(f32)
    {}
    void decodeRows(std::int64_t r0, std::int64_t n, float* dst) const override
    {
        if (m_order.empty() && m_f32) { // one copy for the whole block
            std::memcpy(dst, m_bytes.data() + std::size_t(r0) * m_rowBytes, std::size_t(n) * m_rowBytes);
            return;
        }
        for (std::int64_t r = 0; r < n; ++r) {
            const std::int64_t stored = m_order.empty() ? r0 + r : m_order[std::size_t(r0 + r)];
            m_decode(m_bytes.data() + std::size_t(stored) * m_rowBytes, dst + r * cols(), cols());
        }
    }
    std::size_t bytes() const override { return std::size_t(m_bytes.size()); }
    std::string format() const override { return m_format; }
    const float* f32Data() const override
    {
        if (!m_f32 || !m_order.empty() || reinterpret_cast<std::uintptr_t>(m_bytes.data()) % alignof(float) != 0)
            return nullptr;
        return reinterpret_cast<const float*>(m_bytes.data());
    }
    const std::uint8_t* encodedRow(std::int64_t r) const override
    {
        const std::int64_t stored = m_order.empty() ? r : m_order[std::size_t(r)];
        return m_bytes.data() + std::size_t(stored) * m_rowBytes;
    }

private:
    ByteRange m_bytes;
    std::size_t m_rowBytes;
    PackedRowDecoder m_decode;
    std::string m_format;
    std::vector<std::int64_t> m_order;
    bool m_f32;
};

// The one constructor behind both factories: sizes and the row order checked once.
PackedWeightPtr makeView(ByteRange bytes, std::int64_t rows, std::int64_t cols, std::size_t rowBytes,
                         PackedRowDecoder decode, std::string format, std::vector<std::int64_t> rowOrder, bool f32)
{
    if (rows < 0 || cols < 0 || !decode || bytes.size() != std::uint64_t(rows) * rowBytes) return nullptr;
    if (!rowOrder.empty() && std::int64_t(rowOrder.size()) != rows) return nullptr;
    for (std::int64_t r : rowOrder)
        if (r < 0 || r >= rows) return nullptr;
    return std::make_shared<RowCodecWeight>(std::move(bytes), rows, cols, rowBytes, decode, std::move(format),
                                            std::move(rowOrder), f32);
}

} // namespace

PackedWeightPtr makeRowCodecWeight(ByteRange bytes, std::int64_t rows, std::int64_t cols, std::size_t rowBytes,
                                   PackedRowDecoder decode, std::string format, std::vector<std::int64_t> rowOrder)
{
    return makeView(std::move(bytes), rows, cols, rowBytes, decode, std::move(format), std::move(rowOrder), false);
}

PackedWeightPtr makeDTypeWeight(ByteRange bytes, DType dtype, std::int64_t rows, std::int64_t cols,
                                std::vector<std::int64_t> rowOrder)
{
    PackedRowDecoder decode = nullptr;
    switch (dtype) {
    case DType::F32: decode = f32RowToF32; break;
    case DType::F16: decode = f16RowToF32; break;
    case DType::BF16: decode = bf16RowToF32; break;
    default: return nullptr;
    }
    if (cols < 0) return nullptr;
    return makeView(std::move(bytes), rows, cols, std::size_t(cols) * dtypeSize(dtype), decode, dtypeName(dtype),
                    std::move(rowOrder), dtype == DType::F32);
}

} // namespace qb
