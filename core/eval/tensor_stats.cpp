#include "eval/tensor_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace qb::eval {

std::int64_t Histogram::total() const { return std::accumulate(counts.begin(), counts.end(), std::int64_t(0)); }

Moments computeMoments(ConstRowMatrixRef x)
{
    Moments m;
    double s1 = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (Eigen::Index r = 0; r < x.rows(); ++r)
        for (Eigen::Index c = 0; c < x.cols(); ++c) {
            const float v = x(r, c);
            if (!std::isfinite(v)) {
                ++m.nonFinite;
                continue;
            }
            ++m.count;
            s1 += v;
            lo = std::min(lo, double(v));
            hi = std::max(hi, double(v));
        }
    if (m.count == 0) return m;
    m.mean = s1 / double(m.count);
    // Second pass about the mean: stable for weights whose mean is far from zero.
    double s2 = 0, s4 = 0;
    for (Eigen::Index r = 0; r < x.rows(); ++r)
        for (Eigen::Index c = 0; c < x.cols(); ++c) {
            const float v = x(r, c);
            if (!std::isfinite(v)) continue;
            const double d = double(v) - m.mean;
            const double d2 = d * d;
            s2 += d2;
            s4 += d2 * d2;
        }
    const double var = s2 / double(m.count);
    m.min = lo;
    m.max = hi;
    m.std = std::sqrt(var);
    m.kurtosis = var > 0 ? (s4 / double(m.count)) / (var * var) - 3.0 : 0.0;
    return m;
}

Histogram computeHistogram(ConstRowMatrixRef x, int bins, double lo, double hi)
{
    Histogram h;
    bins = std::max(1, bins);
    if (!(hi > lo)) { // a constant tensor: one bin around the value
        lo -= 0.5;
        hi += 0.5;
    }
    h.lo = lo;
    h.hi = hi;
    h.counts.assign(std::size_t(bins), 0);
    const double scale = double(bins) / (hi - lo);
    for (Eigen::Index r = 0; r < x.rows(); ++r)
        for (Eigen::Index c = 0; c < x.cols(); ++c) {
            const float v = x(r, c);
            if (!std::isfinite(v)) continue;
            const auto b = std::clamp<long long>((long long)std::floor((double(v) - lo) * scale), 0, bins - 1);
            ++h.counts[std::size_t(b)];
        }
    return h;
}

TensorStats computeTensorStats(ConstRowMatrixRef x, int bins)
{
    TensorStats s;
    s.moments = computeMoments(x);
    s.histogram = computeHistogram(x, bins, s.moments.min, s.moments.max);
    s.rowMaxAbs.assign(std::size_t(x.rows()), 0.f);
    s.colMaxAbs.assign(std::size_t(x.cols()), 0.f);
    for (Eigen::Index r = 0; r < x.rows(); ++r)
        for (Eigen::Index c = 0; c < x.cols(); ++c) {
            const float v = x(r, c);
            if (!std::isfinite(v)) continue;
            const float a = std::fabs(v);
            s.rowMaxAbs[std::size_t(r)] = std::max(s.rowMaxAbs[std::size_t(r)], a);
            s.colMaxAbs[std::size_t(c)] = std::max(s.colMaxAbs[std::size_t(c)], a);
        }
    return s;
}

std::vector<int> topIndices(const std::vector<float>& values, int k)
{
    std::vector<int> idx(values.size());
    std::iota(idx.begin(), idx.end(), 0);
    k = std::clamp(k, 0, int(values.size()));
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
        return values[std::size_t(a)] > values[std::size_t(b)] ||
               (values[std::size_t(a)] == values[std::size_t(b)] && a < b);
    });
    idx.resize(std::size_t(k));
    return idx;
}

} // namespace qb::eval
