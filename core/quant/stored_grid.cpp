#include "quant/stored_grid.h"

#include "quant/cmpq.h"

#include <algorithm>

namespace qb::quant {

StoredGrid::StoredGrid(const QuantizedRows& q) : PackedWeight(q.codes.rows(), q.codes.cols())
{
    m_q.scales = q.scales;
    m_q.zeros = q.zeros;
    m_q.offsets = q.offsets;
    m_q.groupIndex = q.groupIndex;
    m_q.container = q.container;
    m_q.superScales = q.superScales;
    m_q.bits = q.bits;
    m_q.proxyLoss = q.proxyLoss;
    m_q.dampingRetries = q.dampingRetries;
    m_q.errorTrace = q.errorTrace;
    m_q.cmpq = q.cmpq;
    const std::int64_t n = q.codes.size();
    m_nibbles = n > 0 && q.codes.maxCoeff() < 16;
    m_codes.assign(std::size_t(m_nibbles ? (n + 1) / 2 : n), 0);
    const std::uint8_t* c = q.codes.data();
    if (m_nibbles)
        for (std::int64_t i = 0; i < n; ++i)
            m_codes[std::size_t(i / 2)] |= std::uint8_t(c[i] << (4 * (i % 2)));
    else std::copy_n(c, n, m_codes.begin());
}

void StoredGrid::codesInto(std::int64_t r0, std::int64_t n, std::uint8_t* dst) const
{
    const std::int64_t first = r0 * cols(), count = n * cols();
    if (!m_nibbles) {
        std::copy_n(m_codes.data() + first, count, dst);
        return;
    }
    std::int64_t i = 0, k = first;
    if (k % 2 == 1 && i < count) dst[i++] = m_codes[std::size_t(k++ / 2)] >> 4;
    const std::uint8_t* src = m_codes.data() + k / 2;
    for (; i + 1 < count; i += 2, ++src) {
        dst[i] = *src & 0xF;
        dst[i + 1] = *src >> 4;
    }
    if (i < count) dst[i] = *src & 0xF;
}

MatrixU8R StoredGrid::codes() const
{
    MatrixU8R c(rows(), cols());
    if (c.size() > 0) codesInto(0, rows(), c.data());
    return c;
}

MatrixXfR StoredGrid::values() const
{
    MatrixXfR v(rows(), cols());
    if (v.size() > 0) decodeRows(0, rows(), v.data());
    return v;
}

QuantizedRows StoredGrid::unpack(bool withValues) const
{
    QuantizedRows q = m_q;
    q.codes = codes();
    if (withValues) q.dequantized = dequantizeRowsUniform(q);
    return q;
}

void StoredGrid::decodeRows(std::int64_t r0, std::int64_t n, float* dst) const
{
    if (!m_nibbles) return dequantizeRowsInto(m_q, r0, n, m_codes.data() + r0 * cols(), dst);
    thread_local std::vector<std::uint8_t> buf; // grows to the largest tile once per thread
    const std::size_t count = std::size_t(n * cols());
    if (buf.size() < count) buf.resize(count);
    codesInto(r0, n, buf.data());
    dequantizeRowsInto(m_q, r0, n, buf.data(), dst);
}

std::size_t StoredGrid::bytes() const
{
    std::size_t n = m_codes.size() +
                    std::size_t(m_q.scales.size() + m_q.zeros.size() + m_q.offsets.size() + m_q.superScales.size()) *
                        sizeof(double) +
                    m_q.groupIndex.size() * sizeof(int);
    if (m_q.cmpq)
        n += m_q.cmpq->codebook.size() * 4 + std::size_t(m_q.cmpq->keptValues.size()) * 4 +
             m_q.cmpq->outlierIndex.size() * 12 + m_q.cmpq->channelBits.size() * 9;
    return n;
}

std::string StoredGrid::format() const
{
    if (m_q.cmpq) return "CMPQ codes";
    return std::to_string(m_q.bits) + "-bit codes" + (m_q.container.empty() ? "" : " (" + m_q.container + ")");
}

} // namespace qb::quant
