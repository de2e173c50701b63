#pragma once
// Streaming statistics of the activations that enter a linear layer, gathered batch by batch
// during calibration without keeping the activations.
//
// Per input channel: max |x| and mean x² (the quantities outlier-aware methods look at). Over all
// values: count, min, max, mean, std and excess kurtosis (from power sums in double), and a
// histogram whose range grows as needed: it starts at the first batch's [min, max] and, when a
// later value falls outside, doubles its span by merging bins pairwise, so counts stay exact
// (only the bin width coarsens). Input: row-major [tokens, channels] float batches.
// Threading: an accumulator is not synchronised; use one per tap (or merge them). Pure std + Eigen.

#include "eval/tensor_stats.h"

#include <Eigen/Core>

#include <cstdint>
#include <vector>

namespace qb::eval {

class GrowingHistogram {
public:
    explicit GrowingHistogram(int bins = 128) : m_bins(bins < 2 ? 2 : bins + (bins & 1)) {}
    void add(const float* values, std::int64_t n);
    Histogram histogram() const; // empty when nothing was added
    int bins() const { return m_bins; }

private:
    void grow(double v); // doubles the span until v fits

    int m_bins;
    double m_lo = 0, m_hi = 0;
    std::vector<std::int64_t> m_counts;
};

class ActivationStats {
public:
    explicit ActivationStats(int bins = 128) : m_hist(bins) {}

    void add(ConstRowMatrixRef batch);
    std::int64_t tokens() const { return m_tokens; }
    int channels() const { return int(m_maxAbs.size()); }

    std::vector<float> channelMaxAbs() const { return m_maxAbs; }
    std::vector<float> channelMeanSquare() const;
    Moments moments() const;
    Histogram histogram() const { return m_hist.histogram(); }

private:
    std::int64_t m_tokens = 0;
    std::int64_t m_count = 0, m_nonFinite = 0;
    double m_s1 = 0, m_s2 = 0, m_s3 = 0, m_s4 = 0;
    double m_min = 0, m_max = 0;
    std::vector<float> m_maxAbs;
    std::vector<double> m_sumSq;
    GrowingHistogram m_hist;
    std::vector<float> m_scratch;
};

} // namespace qb::eval
