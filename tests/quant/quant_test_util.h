#pragma once
// Deterministic synthetic data for the quant kernel tests.

#include "quant/hessian.h"
#include "quant/uniform_grid.h"

#include <Eigen/Core>

#include <cmath>
#include <random>

namespace qb::quant::test {

inline MatrixXfR randomWeights(int rows, int cols, std::uint32_t seed, double sigma = 0.02)
{
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd(0.0, sigma);
    MatrixXfR w(rows, cols);
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) w(r, c) = float(nd(rng));
    return w;
}

// Correlated calibration inputs X = Z * A with a random mixing A and per-channel scales spanning
// two decades, so that diag(H) varies and off-diagonal coupling is strong.
inline MatrixXfR correlatedInputs(int tokens, int cols, std::uint32_t seed)
{
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    Eigen::MatrixXd z(tokens, cols), a(cols, cols);
    for (int i = 0; i < tokens; ++i)
        for (int j = 0; j < cols; ++j) z(i, j) = nd(rng);
    for (int i = 0; i < cols; ++i)
        for (int j = 0; j < cols; ++j) a(i, j) = nd(rng) / std::sqrt(double(cols)) + (i == j ? 1.0 : 0.0);
    for (int j = 0; j < cols; ++j) a.col(j) *= std::exp(2.3 * (double(j % 7) / 6.0 - 0.5));
    const Eigen::MatrixXd x = z * a;
    return x.cast<float>();
}

inline Eigen::MatrixXd hessianOf(const MatrixXfR& x, double factor = kGptqHessianFactor)
{
    HessianAccumulator acc(int(x.cols()), factor);
    (void)acc.addBatch(x);
    return acc.hessian();
}

} // namespace qb::quant::test
