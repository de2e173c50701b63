#pragma once
// Distribution statistics of a weight or activation matrix, as value structs for the views.
//
// Input is a row-major [rows, cols] float matrix (a weight [out, in], or activations
// [tokens, features]). Moments are accumulated in double in one pass (mean, std, excess
// kurtosis); the histogram has `bins` equal-width bins over [min, max] (or an explicit range);
// per-row and per-column max |x| expose outlier channels. Non-finite values are counted and
// skipped. Pure std + Eigen; single-threaded, deterministic; safe to call from any thread.

#include <Eigen/Core>

#include <cstdint>
#include <vector>

namespace qb::eval {

using ConstRowMatrixRef = Eigen::Ref<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

struct Histogram {
    double lo = 0, hi = 0;            // range covered by the bins
    std::vector<std::int64_t> counts; // bins equal-width bins
    double binWidth() const { return counts.empty() ? 0 : (hi - lo) / double(counts.size()); }
    double binCenter(std::size_t i) const { return lo + (double(i) + 0.5) * binWidth(); }
    std::int64_t total() const;
};

struct Moments {
    std::int64_t count = 0;     // finite values
    std::int64_t nonFinite = 0; // NaN/Inf skipped
    double min = 0, max = 0, mean = 0, std = 0;
    double kurtosis = 0; // excess kurtosis (0 for a Gaussian)
};

struct TensorStats {
    Moments moments;
    Histogram histogram;
    std::vector<float> rowMaxAbs; // per output channel (row)
    std::vector<float> colMaxAbs; // per input channel (column)
};

Moments computeMoments(ConstRowMatrixRef x);
// Equal-width histogram over [lo, hi]; values outside are clamped into the edge bins.
Histogram computeHistogram(ConstRowMatrixRef x, int bins, double lo, double hi);
// Moments, a histogram over [min, max], and the per-channel maxima.
TensorStats computeTensorStats(ConstRowMatrixRef x, int bins);

// Indices of the `k` largest values, largest first (ties: lower index first).
std::vector<int> topIndices(const std::vector<float>& values, int k);

} // namespace qb::eval
