#pragma once
// Hessian proxy H = (c/N) sum_t x_t x_t^T of a linear layer's inputs, and its damping.
//
// What: HessianAccumulator takes batches of calibration input rows X [tokens x in] and keeps the
// running mean H <- H*N_old/N_new + (c/N_new) X^T X in double (METHODS.md §1a step 1). c = 2 is
// GPTQ's convention, NeUQI's code uses 1; only relative sizes matter because damping is relative
// to mean(diag H).
// Threading: an accumulator is used by one thread at a time; no internal threads.
// Units: H is in squared activation units. Layout: H is a dense symmetric [in x in] column-major
// matrix (symmetric, so the storage order does not matter); X is row-major, one token per row.

#include "base/result.h"
#include "quant/uniform_grid.h"

#include <Eigen/Core>

#include <cstdint>

namespace qb::quant {

inline constexpr double kGptqHessianFactor = 2.0;
inline constexpr double kNeuqiHessianFactor = 1.0;

class HessianAccumulator {
public:
    explicit HessianAccumulator(int cols, double factor = kGptqHessianFactor);

    // Adds a batch of input rows [tokens x cols]. Shape errors leave the state unchanged.
    Status addBatch(Eigen::Ref<const MatrixXfR> x);
    Status addBatch(Eigen::Ref<const MatrixXdR> x);
    void reset();

    const Eigen::MatrixXd& hessian() const { return m_h; }
    std::int64_t samples() const { return m_samples; }
    int cols() const { return int(m_h.cols()); }
    double factor() const { return m_factor; }

private:
    Eigen::MatrixXd m_h;
    std::int64_t m_samples = 0;
    double m_factor;
};

// lambda = damping * mean(diag), summed in sorted order so that any permutation of the inputs
// (act-order) gives the bit-identical value.
double hessianDampingLambda(const Eigen::Ref<const Eigen::VectorXd>& diag, double damping);

} // namespace qb::quant
