#pragma once
// Weight solvers over a uniform grid: RTN and GPTQ (METHODS.md §1), with a pluggable grid
// initialiser (Min-Max as the reference GPTQ, or NeUQI, §2).
//
// What: quantizeRowsRtn rounds every weight to the nearest grid point of its group.
// quantizeRowsGptq minimises tr((W - Q) H (W - Q)^T) column by column with error feedback through
// the upper Cholesky factor U of H^-1 (H damped by `damping * mean(diag H)`, the damping added
// again on a failed Cholesky, up to `maxDampingRetries` times), lazy column blocks, optional
// act-order (stable descending sort of diag H, undone at the end), dead inputs (H_jj = 0 ->
// H_jj = 1, W[:, j] = 0) and dynamic or static groups:
//  - Dynamic: group parameters fitted when the loop reaches a group's first column, on the
//    weights already updated by *all* earlier columns (METHODS.md §1a pseudocode). With act-order
//    groups are counted in processing order and groupIndex is the g_idx of the export format.
//    Blocks are cut at group starts so the result does not depend on the block size; when the
//    group size is a multiple of the block size (the defaults, 128/128) this is exactly the
//    reference code, which otherwise fits on weights missing the current block's updates.
//  - Static: all groups fitted up front on the unmodified W (after dead-column zeroing); column j
//    always uses group j / g whatever the order. NeUQI requires this.
// Per-channel Min-Max parameters are fitted on W before dead-column zeroing, as the reference.
// NeUQI weights its groups with the diagonal of the damped H (original column order).
//
// Threading: deterministic; parallel only through the optional ParallelFor (quantizeRowsGptq)
// and Eigen's GEMMs on OpenMP's threads; the optional RunContext is polled for cancel
// between column blocks (and between rows of the up-front NeUQI fit); progress goes through
// advance(), one unit per column (the caller owns beginStage). Cancel returns
// ErrorCode::Cancelled; inputs are const and never modified.
// Units/layout: W row-major [out x in] float; H [in x in] double (hessian.h); outputs as
// QuantizedRows (uniform_grid.h). Precision: the working copy of W, the Cholesky factor and the
// error-feedback updates are float, as in the reference (half the memory traffic and twice the
// SIMD width of double); grid fits, rounding and the loss sums are double. Another block size, CPU
// or a double implementation therefore agrees to float rounding, and a weight within that of a
// rounding midpoint may round the other way (tests/quant/quant_test_util.h).
// errorTrace: tr((W - Q) H (W - Q)^T) on the caller's undamped H, from the solve's own errors
// (W - Q = E U, so sum E^2 is the trace on the damped H, less the damping and the dead columns):
// O(rows x cols) instead of a rows x cols^2 product, and a sum of squares, so it does not cancel.

#include "base/result.h"
#include "base/run_context.h"
#include "quant/lane_sum.h"
#include "quant/neuqi.h"
#include "quant/parallel_for.h"
#include "quant/uniform_grid.h"

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace qb::quant {

enum class GridInit { MinMax, Neuqi };
enum class GroupMode { Dynamic, Static };

// What GPTQ derives from H alone, shared by the tensors that read the same H (q/k/v, gate/up):
// dead inputs, the act-order permutation, the damping that made H positive definite and the upper
// Cholesky factor U of the permuted, damped H^-1 (float, GPTQ's working precision as in the
// reference). Built by factorGptqHessian for one actOrder/damping/retries setting.
struct GptqFactor {
    bool actOrder = false;
    double damping = 0.0;
    int maxDampingRetries = 0;
    std::vector<int> dead;  // input columns with H_jj = 0 (their weights are zeroed, H_jj set to 1)
    std::vector<int> perm;  // processing order (act-order: stable descending diag H)
    Eigen::VectorXd diag;   // diag H after the dead-column fix, original order
    double dampTotal = 0.0; // lambda added to the diagonal, retries included
    int dampingRetries = 0; // extra rounds of lambda needed
    Eigen::MatrixXf u;      // [n x n] upper, in processing order

    // Built for these options' actOrder, damping and retries, for an n-wide H.
    bool fits(const struct GptqOptions& opts, Eigen::Index n) const;
};

inline constexpr int kGptqDefaultBlockSize = 128;
// Rows per piece of a column block (the unit of the block's parallel-for in quantizeRowsGptq and
// quantizeRowsCmpq) for m rows: one piece under 1024 rows (there a parallel region costs more than
// it saves on this machine), else at most 16 pieces of at least 256 rows, a multiple of 16 floats;
// a function of m alone, so results do not depend on the workers.
inline int gptqPieceRows(int m) { return m < 1024 ? std::max(m, 1) : std::max(256, ((m + 15) / 16 + 15) / 16 * 16); }
inline int gptqPieceCount(int m) { return (m + gptqPieceRows(m) - 1) / gptqPieceRows(m); }
// How many workers run the pieces of m rows: par's where there are several pieces, else 1.
inline int gptqPieceWorkers(int m, const ParallelFor* par)
{
    return par && par->run && par->workers > 1 && gptqPieceCount(m) > 1 ? par->workers : 1;
}
// Runs part(r0, r1, worker) -> double over the pieces [r0, r1) of m rows, through par where
// gptqPieceWorkers says so (else serially), and adds the results to `total` in piece order.
template <class Part>
void addOverRowPieces(int m, const ParallelFor* par, double& total, const Part& part)
{
    const int rows = gptqPieceRows(m), pieces = gptqPieceCount(m);
    std::vector<double> parts(static_cast<std::size_t>(pieces));
    auto run = [&](std::int64_t piece, int worker) {
        const int r0 = int(piece) * rows;
        parts[std::size_t(piece)] = part(r0, std::min(m, r0 + rows), worker);
    };
    if (gptqPieceWorkers(m, par) > 1) par->run(pieces, run);
    else
        for (int piece = 0; piece < pieces; ++piece)
            run(piece, 0);
    for (double x : parts)
        total += x;
}
// A column's share of the proxy loss: 0.5 * sum of e[i]^2 over n scaled errors (laneSum: the same
// bits for a given n, however the rows are split over workers).
inline double halfSumOfSquares(const double* e, int n)
{
    return 0.5 * laneSum(n, [e](std::int64_t i) { return e[i] * e[i]; });
}

// The block's own update after column i: rows [r0, r0 + len) of columns [c0, c0 + rest) of the
// column-major working copy w -= e (len values) times u(i, c0..), column by column (one fused
// multiply-add per weight, as Eigen's outer product, whose generic path cost 10 % more on short
// columns).
inline void subtractRankOne(Eigen::MatrixXf& w, int r0, int len, int c0, int rest, const float* e,
                            const Eigen::MatrixXf& u, int i)
{
    for (int c = 0; c < rest; ++c) {
        const float uc = u(i, c0 + c);
        float* dst = w.col(c0 + c).data() + r0;
        for (int r = 0; r < len; ++r)
            dst[r] -= e[r] * uc;
    }
}

inline constexpr double kGptqDefaultDamping = 0.01;
inline constexpr int kGptqDefaultDampingRetries = 10;

struct GptqOptions {
    GridSpec grid;
    GridInit init = GridInit::MinMax;
    GroupMode groups = GroupMode::Dynamic;
    bool actOrder = false;
    int blockSize = kGptqDefaultBlockSize;
    double damping = kGptqDefaultDamping;
    int maxDampingRetries = kGptqDefaultDampingRetries;
    NeuqiOptions neuqi;
    // A factor of this H built with the same actOrder, damping and maxDampingRetries (else it is
    // ignored and the kernel factors H itself). Must outlive the call.
    const struct GptqFactor* factor = nullptr;
    // Parameters fixed up front (a storage container's grid, container_grid.h): scales, zeros,
    // offsets, container and superScales are taken as they are, groups are static with width
    // grid.groupSize, and `init` is not used. Must outlive the call.
    const QuantizedRows* fixedGrid = nullptr;
};

// Fits one group with the chosen initialiser. h may be null (NeUQI then weights uniformly).
GroupParams fitGroupUniform(GridInit init, const double* w, const double* h, int n, const GridSpec& spec,
                            const NeuqiOptions& neuqi, NeuqiScratch& scratch);

// RTN with contiguous groups. hDiag (size = cols, e.g. the damped Hessian diagonal) weights NeUQI;
// null means uniform weights.
Result<QuantizedRows> quantizeRowsRtn(Eigen::Ref<const MatrixXfR> w, const GridSpec& spec, GridInit init,
                                      const Eigen::VectorXd* hDiag = nullptr, const NeuqiOptions& neuqi = {},
                                      RunContext* ctx = nullptr);

// diag H with its dead columns (H_jj = 0) taken as 1, and those columns ascending: GptqFactor's
// diag and dead, known before the factor is made.
Eigen::VectorXd gptqLiveDiagonal(Eigen::Ref<const Eigen::MatrixXd> h, std::vector<int>& dead);

// Dead columns, permutation, damping and U for H (see GptqFactor); NumericalError when H is not
// positive definite after maxDampingRetries extra rounds of damping. par (optional) runs the pieces
// of a wide factor (hessian.h, kBlockedFactorMin): the same U with or without it.
Result<GptqFactor> factorGptqHessian(Eigen::Ref<const Eigen::MatrixXd> h, bool actOrder, double damping,
                                     int maxDampingRetries, const ParallelFor* par = nullptr);

// `given` when it fits opts and H's width, else the factor in `cache` when that fits, else a new one
// built into it (on par, as factorGptqHessian): for callers that solve several tensors (or
// settings) on one H, and for the kernels (their options' factor, else their own). The cache must
// be reset when H changes.
Result<const GptqFactor*> sharedGptqFactor(std::optional<GptqFactor>& cache, Eigen::Ref<const Eigen::MatrixXd> h,
                                           const GptqOptions& opts, const GptqFactor* given = nullptr,
                                           const ParallelFor* par = nullptr);

// The solvers' column-major working copy of W (a column contiguous), copied in cache-sized tiles
// (a plain assignment walks the row-major source with a stride of a whole row per element), in
// strips of columns on par (optional; the first touch of the copy's fresh pages).
Eigen::MatrixXf columnMajorCopy(Eigen::Ref<const MatrixXfR> w, const ParallelFor* par = nullptr);

// Writes rows [r0, r1) of m x cnt column-major codes and values (a solver's block) into row-major
// outputs, block column i into column cols[i], in tiles.
void storeColumnBlock(const std::uint8_t* codes, const float* values, Eigen::Index m, Eigen::Index cnt, const int* cols,
                      MatrixU8R& codesOut, MatrixXfR& valuesOut, Eigen::Index r0, Eigen::Index r1);

// tr((W - Q) H (W - Q)^T) on the undamped H of f from an error-feedback solve's sum of squared
// scaled errors sum_ij (E_ij)^2 (E_ij = (w - q) / U_jj at column j's turn): see errorTrace above.
double errorTraceFromErrors(double sumSquaredErrors, const GptqFactor& f, Eigen::Ref<const MatrixXfR> w,
                            Eigen::Ref<const MatrixXfR> q);

// par (optional): the up-front static-group fit (NeUQI's scale search) runs over rows x groups
// through it, one NeuqiScratch per worker; each column block's loop (quantization, errors, the
// block's own updates, dynamic group fits) runs over fixed pieces of rows (gptqPieceRows) through
// it, the pieces' proxy losses added in piece order. Bit-identical to serial either way.
Result<QuantizedRows> quantizeRowsGptq(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const Eigen::MatrixXd> h,
                                       const GptqOptions& opts, RunContext* ctx = nullptr,
                                       const ParallelFor* par = nullptr);

} // namespace qb::quant
