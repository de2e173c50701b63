#pragma once
// Hessian proxy H = (c/N) sum_t x_t x_t^T of a linear layer's inputs, and its damping.
//
// What: HessianAccumulator takes batches of calibration input rows X [tokens x in] and keeps the
// running mean H <- H*N_old/N_new + (c/N_new) X^T X in double (METHODS.md §1a step 1). c = 2 is
// GPTQ's convention, NeUQI's code uses 1; only relative sizes matter because damping is relative
// to mean(diag H).
// Precision: float batches (the forward pass's activations) are multiplied in float GEMMs over at
// most kHessianF32Rows rows at a time, each product added into the double H: the float rounding
// stays that of a short dot product (relative error about 1e-6 of the largest entry, see
// tst_quant_gptq's hessianF32MatchesDouble) while the sum over the calibration set is in double.
// Double batches are multiplied in double.
// Threading: an accumulator is used by one thread at a time (hessian() too, which may complete
// the matrix); no threads of its own: its GEMMs and its element-wise passes over H (the first
// batch's zeroing, the rescale, the adds of the float products, the mirror) run on OpenMP's
// team, as the forward pass's, each element computed the same way whatever the team's size.
// Units: H is in squared activation units. Layout: H is a dense symmetric [in x in] column-major
// matrix (symmetric, so the storage order does not matter); X is row-major, one token per row.

#include "base/result.h"
#include "quant/parallel_for.h"
#include "quant/uniform_grid.h"

#include <Eigen/Core>

#include <cstdint>
#include <functional>

namespace qb::quant {

inline constexpr double kGptqHessianFactor = 2.0;
inline constexpr double kNeuqiHessianFactor = 1.0;
inline constexpr Eigen::Index kHessianF32Rows = 512; // rows per float GEMM before adding into double
inline constexpr Eigen::Index kHessianF32Tiles = 8;  // column tiles of the lower triangle

class HessianAccumulator {
public:
    explicit HessianAccumulator(int cols, double factor = kGptqHessianFactor);

    // Adds a batch of input rows [tokens x cols]. Shape errors leave the state unchanged.
    // Float inputs use the float-GEMM path; double inputs are multiplied in double.
    // eachBlock (optional): called on each block of at most kHessianF32Rows rows of x, in order,
    // right after that block's products, while its rows are still in cache (another statistic
    // over the same rows reads them there instead of from memory). Its error is returned at once
    // and leaves the accumulator part-way through the batch: reset() it before further use.
    using RowBlockFn = std::function<Status(Eigen::Ref<const MatrixXfR>)>;
    Status addBatch(Eigen::Ref<const MatrixXfR> x, const RowBlockFn& eachBlock = {});
    Status addBatch(Eigen::Ref<const MatrixXdR> x);
    void reset();

    // H, symmetric. The float path adds into the lower triangle only and mirrors it into the upper
    // one here, once, when H is read after a batch (not after every batch).
    const Eigen::MatrixXd& hessian() const;
    std::int64_t samples() const { return m_samples; }
    int cols() const { return int(m_h.cols()); }
    double factor() const { return m_factor; }

private:
    void zeroIfUnset() const;

    mutable Eigen::MatrixXd m_h;
    mutable bool m_unset = true;       // m_h is allocated but not yet zeroed (a new or reset accumulator)
    mutable bool m_upperStale = false; // the strict upper triangle is not yet the lower's mirror
    Eigen::MatrixXf m_tile;            // float GEMM scratch, reused across batches
    std::int64_t m_samples = 0;
    double m_factor;
};

// GPTQ's inverse factor: the upper-triangular U with U^T U = A^-1 for a symmetric positive
// definite A (the damped Hessian), without forming A^-1. With J the order reversal and
// J A J = L L^T (Cholesky), A^-1 = (J L^-1 J)^T (J L^-1 J), so U = J L^-1 J: one Cholesky and one
// blocked triangular inverse, (2/3) n^3 flops instead of the ~3 n^3 of the reference's
// chol -> inverse -> chol, and the same U up to rounding (the Cholesky factor is unique).
// Returns false (u unspecified) when A is not numerically positive definite. In double, or in
// float and in place (a becomes U; GPTQ's working precision, as the reference's float32 chain,
// without a second n x n copy).
// From kBlockedFactorMin columns the float factor is blocked (a right-looking Cholesky in blocks of
// kFactorBlock, the triangular inverse by halves) and each step's triangular solves and trailing
// update are cut into fixed pieces of kFactorChunk rows or columns that `par` (optional) runs in
// parallel: the same arithmetic, so the same U, whatever runs the pieces (none, one worker or
// several). Below it, the whole Cholesky and inverse run on the calling thread (Eigen's LLT).
inline constexpr Eigen::Index kBlockedFactorMin = 1024;
inline constexpr Eigen::Index kFactorBlock = 256;
inline constexpr Eigen::Index kFactorChunk = 128;
bool upperCholeskyOfInverse(Eigen::Ref<const Eigen::MatrixXd> a, Eigen::MatrixXd& u);
bool upperCholeskyOfInverseInPlace(Eigen::MatrixXf& a, const ParallelFor* par = nullptr);

// lambda = damping * mean(diag), summed in sorted order so that any permutation of the inputs
// (act-order) gives the bit-identical value.
double hessianDampingLambda(const Eigen::Ref<const Eigen::VectorXd>& diag, double damping);

} // namespace qb::quant
