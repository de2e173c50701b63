#pragma once
// Deterministic synthetic data for the quant kernel tests.

#include "quant/error_metrics.h"
#include "quant/hessian.h"
#include "quant/parallel_for.h"
#include "quant/uniform_grid.h"

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace qb::quant::test {

// An OpenMP-free parallel-for that runs items in reverse, with several "workers", to prove the
// result does not depend on the schedule.
inline ParallelFor reversedFor(int workers)
{
    ParallelFor p;
    p.workers = workers;
    p.run = [workers](std::int64_t count, const std::function<void(std::int64_t, int)>& body) {
        for (std::int64_t i = count - 1; i >= 0; --i)
            body(i, int(i % workers));
    };
    return p;
}

// A parallel-for on `workers` real threads taking items from a shared counter.
inline ParallelFor threadPoolFor(int workers)
{
    ParallelFor p;
    p.workers = workers;
    p.run = [workers](std::int64_t count, const std::function<void(std::int64_t, int)>& body) {
        std::atomic<std::int64_t> next{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < workers; ++t)
            pool.emplace_back([&, t] {
                for (std::int64_t i = next++; i < count; i = next++)
                    body(i, t);
            });
        for (std::thread& th : pool)
            th.join();
    };
    return p;
}

inline MatrixXfR randomWeights(int rows, int cols, std::uint32_t seed, double sigma = 0.02)
{
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd(0.0, sigma);
    MatrixXfR w(rows, cols);
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c)
            w(r, c) = float(nd(rng));
    return w;
}

// n positive weights exp(N(0, 1)): a diagonal Hessian with no error to feed back across columns.
inline Eigen::VectorXd logNormalDiagonal(int n, std::uint32_t seed)
{
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    Eigen::VectorXd d(n);
    for (int j = 0; j < n; ++j)
        d(j) = std::exp(nd(rng));
    return d;
}

// Correlated calibration inputs X = Z * A with a random mixing A and per-channel scales spanning
// two decades, so that diag(H) varies and off-diagonal coupling is strong.
inline MatrixXfR correlatedInputs(int tokens, int cols, std::uint32_t seed)
{
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    Eigen::MatrixXd z(tokens, cols), a(cols, cols);
    for (int i = 0; i < tokens; ++i)
        for (int j = 0; j < cols; ++j)
            z(i, j) = nd(rng);
    for (int i = 0; i < cols; ++i)
        for (int j = 0; j < cols; ++j)
            a(i, j) = nd(rng) / std::sqrt(double(cols)) + (i == j ? 1.0 : 0.0);
    for (int j = 0; j < cols; ++j)
        a.col(j) *= std::exp(2.3 * (double(j % 7) / 6.0 - 0.5));
    const Eigen::MatrixXd x = z * a;
    return x.cast<float>();
}

inline Eigen::MatrixXd hessianOf(const MatrixXfR& x, double factor = kGptqHessianFactor)
{
    HessianAccumulator acc(int(x.cols()), factor);
    (void)acc.addBatch(x);
    return acc.hessian();
}

// Optimised against reference quantizers on any CPU. -march=native changes FMA contraction and
// vector width, so a value that lies within rounding noise of a midpoint between two grid levels
// may round to the other level on another processor. GPTQ solves every row independently for the
// same H, so such a tie flip changes only the row it happens in (the later columns of that row
// see other error feedback, and its later dynamic groups refit). Rows are therefore compared
// whole: a row agrees when every element is within `tol` (plus 1e-7 relative, float storage);
// a row that does not must still be an equally good solution, its objective
// (w - q) H (w - q)^T within `kTieFlipObjectiveRel` of the reference row's. At most
// a quarter of the rows (at least `kMaxTieFlipRows`) may disagree: a flip needs a value within
// rounding noise of a midpoint, so it is rare (one was seen on one CPU in one of 12 data rows;
// the portable sanitized build, whose inverse factor comes from one Cholesky and a triangular
// inverse instead of the reference's Cholesky -> inverse -> Cholesky chain, flipped 3 of 12 rows,
// each to a better objective); a real defect changes almost every row and still fails.
inline constexpr int kMaxTieFlipRows = 2;
inline constexpr double kTieFlipObjectiveRel = 0.05;

struct RowAgreement {
    double objectiveRel = kTieFlipObjectiveRel; // allowed excess of a flipped row's objective
    int rows = 0;
    int flippedRows = 0;    // rows with an element further than tol from the reference
    double worstExcess = 0; // max over flipped rows of obj(got)/obj(ref) - 1 (negative: better)
    std::string detail;     // first flipped rows, for the failure message
    bool acceptable() const
    {
        return flippedRows <= std::max(kMaxTieFlipRows, rows / 4) && worstExcess <= objectiveRel;
    }
};

inline RowAgreement compareRowsAllowingTieFlips(const MatrixXfR& got, const MatrixXfR& ref, const MatrixXfR& w,
                                                const Eigen::MatrixXd& h, double tol,
                                                double objectiveRel = kTieFlipObjectiveRel)
{
    RowAgreement a;
    a.objectiveRel = objectiveRel;
    a.rows = int(ref.rows());
    for (Eigen::Index r = 0; r < ref.rows(); ++r) {
        const Eigen::ArrayXd diff = (got.row(r) - ref.row(r)).cast<double>().array().abs().transpose();
        const Eigen::ArrayXd bound = tol + 1e-7 * ref.row(r).cast<double>().array().abs().transpose();
        if ((diff <= bound).all()) continue;
        ++a.flippedRows;
        const double objGot = hessianErrorTrace(w.row(r), got.row(r), h);
        const double objRef = hessianErrorTrace(w.row(r), ref.row(r), h);
        const double excess = objRef > 0 ? objGot / objRef - 1.0 : (objGot > 0 ? 1.0 : 0.0);
        a.worstExcess = std::max(a.worstExcess, excess);
        if (a.flippedRows <= 3)
            a.detail += "row " + std::to_string(r) + ": max diff " + std::to_string(diff.maxCoeff()) + ", objective " +
                        std::to_string(objGot) + " vs " + std::to_string(objRef) + "; ";
    }
    return a;
}

} // namespace qb::quant::test
