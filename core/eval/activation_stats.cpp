#include "eval/activation_stats.h"

#include <algorithm>
#include <cmath>

namespace qb::eval {

void GrowingHistogram::add(const float* values, std::int64_t n)
{
    for (std::int64_t i = 0; i < n; ++i) {
        const double v = values[i];
        if (!std::isfinite(v)) continue;
        if (m_counts.empty()) {
            // First value: a tiny span around it; later values widen it by doubling.
            m_counts.assign(std::size_t(m_bins), 0);
            const double half = std::max(std::fabs(v) * 1e-3, 1e-6);
            m_lo = v - half;
            m_hi = v + half;
        }
        if (v < m_lo || v >= m_hi) grow(v);
        const double scale = double(m_bins) / (m_hi - m_lo);
        const auto b = std::clamp<long long>((long long)((v - m_lo) * scale), 0, m_bins - 1);
        ++m_counts[std::size_t(b)];
    }
}

void GrowingHistogram::grow(double v)
{
    while (v < m_lo || v >= m_hi) {
        const double span = m_hi - m_lo;
        std::vector<std::int64_t> merged(std::size_t(m_bins), 0);
        const int half = m_bins / 2;
        if (v < m_lo) { // extend downwards: old bins land in the upper half
            for (int i = 0; i < m_bins; ++i)
                merged[std::size_t(half + i / 2)] += m_counts[std::size_t(i)];
            m_lo -= span;
        } else { // extend upwards: old bins land in the lower half
            for (int i = 0; i < m_bins; ++i)
                merged[std::size_t(i / 2)] += m_counts[std::size_t(i)];
            m_hi += span;
        }
        m_counts.swap(merged);
    }
}

Histogram GrowingHistogram::histogram() const
{
    Histogram h;
    if (m_counts.empty()) return h;
    // Range doubling leaves empty bins at the edges: trim them (counts stay exact).
    std::size_t first = 0, last = m_counts.size();
    while (first < last && m_counts[first] == 0)
        ++first;
    while (last > first && m_counts[last - 1] == 0)
        --last;
    const double width = (m_hi - m_lo) / double(m_counts.size());
    h.lo = m_lo + double(first) * width;
    h.hi = m_lo + double(last) * width;
    h.counts.assign(m_counts.begin() + std::ptrdiff_t(first), m_counts.begin() + std::ptrdiff_t(last));
    return h;
}

void ActivationStats::add(ConstRowMatrixRef batch)
{
    const auto rows = batch.rows(), cols = batch.cols();
    if (m_maxAbs.empty()) {
        m_maxAbs.assign(std::size_t(cols), 0.f);
        m_sumSq.assign(std::size_t(cols), 0.0);
    }
    if (int(cols) != channels()) return; // a caller bug: channel count must not change
    m_tokens += rows;
    for (Eigen::Index r = 0; r < rows; ++r) {
        const float* row = batch.row(r).data();
        for (Eigen::Index c = 0; c < cols; ++c) {
            const float x = row[c];
            if (!std::isfinite(x)) {
                ++m_nonFinite;
                continue;
            }
            const double d = x;
            const double d2 = d * d;
            if (m_count == 0) m_min = m_max = d;
            ++m_count;
            m_s1 += d;
            m_s2 += d2;
            m_s3 += d2 * d;
            m_s4 += d2 * d2;
            m_min = std::min(m_min, d);
            m_max = std::max(m_max, d);
            m_maxAbs[std::size_t(c)] = std::max(m_maxAbs[std::size_t(c)], std::fabs(x));
            m_sumSq[std::size_t(c)] += d2;
        }
        m_hist.add(row, cols);
    }
}

std::vector<float> ActivationStats::channelMeanSquare() const
{
    std::vector<float> out(m_sumSq.size());
    for (std::size_t c = 0; c < out.size(); ++c)
        out[c] = m_tokens > 0 ? float(m_sumSq[c] / double(m_tokens)) : 0.f;
    return out;
}

Moments ActivationStats::moments() const
{
    Moments m;
    m.count = m_count;
    m.nonFinite = m_nonFinite;
    if (m_count == 0) return m;
    const double n = double(m_count);
    const double mean = m_s1 / n;
    // Central moments from raw power sums.
    const double e2 = m_s2 / n, e3 = m_s3 / n, e4 = m_s4 / n;
    const double var = std::max(0.0, e2 - mean * mean);
    const double m4 = e4 - 4 * mean * e3 + 6 * mean * mean * e2 - 3 * mean * mean * mean * mean;
    m.min = m_min;
    m.max = m_max;
    m.mean = mean;
    m.std = std::sqrt(var);
    m.kurtosis = var > 0 ? m4 / (var * var) - 3.0 : 0.0;
    return m;
}

} // namespace qb::eval
