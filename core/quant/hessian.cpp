#include "quant/hessian.h"

#include <Eigen/Cholesky>

#include <algorithm>
#include <type_traits>
#include <string>
#include <vector>

namespace qb::quant {

HessianAccumulator::HessianAccumulator(int cols, double factor) : m_factor(factor)
{
    m_h.resize(std::max(cols, 0), std::max(cols, 0)); // zeroed by the first batch (or read)
}

void HessianAccumulator::reset()
{
    m_unset = true;
    m_upperStale = false;
    m_samples = 0;
}

namespace {

Status checkWidth(Eigen::Index got, Eigen::Index want)
{
    if (got == want) return {};
    return makeError(ErrorCode::Shape, "calibration batch width does not match the layer input",
                     "expected " + std::to_string(want) + " columns, got " + std::to_string(got));
}

// Element-wise passes over H by slices of kSliceCols columns, on OpenMP's team from
// kParallelMinEntries entries: every entry is computed the same way on any thread. Static
// round-robin slices: the lower triangle's columns shrink to the right.
constexpr Eigen::Index kSliceCols = 64;
constexpr Eigen::Index kParallelMinEntries = Eigen::Index(1) << 16;

template <class Body>
void forColumnSlices(Eigen::Index cols, Eigen::Index rows, const Body& body)
{
    const Eigen::Index slices = (cols + kSliceCols - 1) / kSliceCols;
#pragma omp parallel for schedule(static, 1) if (slices > 1 && rows * cols >= kParallelMinEntries)
    for (Eigen::Index s = 0; s < slices; ++s)
        body(s * kSliceCols, std::min(cols, (s + 1) * kSliceCols));
}

// The strict upper triangle of h <- the strict lower one, mirrored, by square tiles (a column
// read across the lower triangle's rows missed the cache on every entry).
void mirrorLowerIntoUpper(Eigen::MatrixXd& h)
{
    const Eigen::Index n = h.cols();
    forColumnSlices(n, n, [&](Eigen::Index c0, Eigen::Index c1) {
        for (Eigen::Index r0 = 0; r0 < c0; r0 += kSliceCols) {
            const Eigen::Index r1 = std::min(c0, r0 + kSliceCols);
            h.block(r0, c0, r1 - r0, c1 - c0) = h.block(c0, r0, c1 - c0, r1 - r0).transpose();
        }
        for (Eigen::Index c = c0 + 1; c < c1; ++c) // the diagonal tile
            for (Eigen::Index r = c0; r < c; ++r)
                h(r, c) = h(c, r);
    });
}

} // namespace

void HessianAccumulator::zeroIfUnset() const
{
    if (!m_unset) return;
    const Eigen::Index n = m_h.cols();
    forColumnSlices(n, n, [&](Eigen::Index c0, Eigen::Index c1) { m_h.middleCols(c0, c1 - c0).setZero(); });
    m_unset = false;
}

const Eigen::MatrixXd& HessianAccumulator::hessian() const
{
    zeroIfUnset();
    if (m_upperStale) {
        mirrorLowerIntoUpper(m_h);
        m_upperStale = false;
    }
    return m_h;
}

Status HessianAccumulator::addBatch(Eigen::Ref<const MatrixXfR> x, const RowBlockFn& eachBlock)
{
    QB_TRY_STATUS(checkWidth(x.cols(), m_h.cols()));
    if (x.rows() == 0) return {};
    const Eigen::Index n = m_h.cols();
    const std::int64_t total = m_samples + x.rows();
    // Only the lower triangle is kept up to date (H is mirrored when read): the running mean's
    // rescale and the products' adds touch it (and the upper part of the diagonal tiles) alone.
    // The first batch zeroes the new matrix instead, on the team (its first touch: zeroed serially
    // when made, 254 MB at 5632 columns, it was up to 2 % of a quantization run's samples).
    const double keep = double(m_samples) / double(total);
    m_upperStale = true;
    if (m_unset) zeroIfUnset();
    else
        forColumnSlices(n, n, [&](Eigen::Index c0, Eigen::Index c1) {
            for (Eigen::Index c = c0; c < c1; ++c)
                m_h.col(c).tail(n - c) *= keep;
        });
    const double scale = m_factor / double(total);
    // Lower triangle in column tiles: tile [j, j + w) is the float GEMM X[:, j:]^T X[:, j:j+w] over
    // at most kHessianF32Rows rows, added into the double H. Tiles are general GEMMs (Eigen's
    // OpenMP-parallel kernel) and skip most of the upper triangle: (tiles + 1) / (2 tiles) of the
    // full product's work.
    const Eigen::Index tiles = std::min<Eigen::Index>(kHessianF32Tiles, std::max<Eigen::Index>(1, n / 64));
    const Eigen::Index width = (n + tiles - 1) / tiles;
    for (Eigen::Index r0 = 0; r0 < x.rows(); r0 += kHessianF32Rows) {
        const Eigen::Index rows = std::min<Eigen::Index>(kHessianF32Rows, x.rows() - r0);
        for (Eigen::Index j = 0; j < n; j += width) {
            const Eigen::Index w = std::min(width, n - j);
            m_tile.resize(n - j, w);
            m_tile.noalias() = x.block(r0, j, rows, n - j).transpose() * x.block(r0, j, rows, w);
            forColumnSlices(w, n - j, [&](Eigen::Index c0, Eigen::Index c1) {
                m_h.block(j, j + c0, n - j, c1 - c0) += scale * m_tile.middleCols(c0, c1 - c0).cast<double>();
            });
        }
        if (eachBlock) QB_TRY_STATUS(eachBlock(x.middleRows(r0, rows)));
    }
    m_samples = total;
    return {};
}

Status HessianAccumulator::addBatch(Eigen::Ref<const MatrixXdR> x)
{
    QB_TRY_STATUS(checkWidth(x.cols(), m_h.cols()));
    if (x.rows() == 0) return {};
    hessian(); // whole: this path updates every entry
    const std::int64_t total = m_samples + x.rows();
    m_h *= double(m_samples) / double(total);
    m_h.noalias() += (m_factor / double(total)) * (x.transpose() * x);
    m_samples = total;
    return {};
}

namespace {

// l <- l^-1 for a lower-triangular l (the strict upper part is ignored and left as is). Recursive
// on [A 0; B C]: B <- -C^-1 B A^-1 with two triangular solves, then A and C; n^3 / 3 flops.
template <typename T>
void invertLowerInPlace(Eigen::Ref<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>> l)
{
    const Eigen::Index n = l.rows();
    if (n <= 32) {
        for (Eigen::Index j = 0; j < n; ++j) { // column j of the inverse by forward substitution
            l(j, j) = T(1) / l(j, j);
            for (Eigen::Index i = j + 1; i < n; ++i) {
                T s = 0;
                for (Eigen::Index k = j; k < i; ++k)
                    s += l(i, k) * l(k, j);
                l(i, j) = -s / l(i, i);
            }
        }
        return;
    }
    const Eigen::Index n1 = n / 2, n2 = n - n1;
    auto b = l.bottomLeftCorner(n2, n1);
    l.bottomRightCorner(n2, n2).template triangularView<Eigen::Lower>().solveInPlace(b);
    l.topLeftCorner(n1, n1).template triangularView<Eigen::Lower>().template solveInPlace<Eigen::OnTheRight>(b);
    b = -b;
    invertLowerInPlace<T>(l.topLeftCorner(n1, n1));
    invertLowerInPlace<T>(l.bottomRightCorner(n2, n2));
}

// The factor's pieces run through forPieces (parallel_for.h). Each piece is the same computation
// either way: Eigen's products inside a parallel region run on the calling thread; outside one,
// their threads split the rows, not the sums.
Eigen::Index pieces(Eigen::Index n) { return (n + kFactorChunk - 1) / kFactorChunk; }

// invertLowerInPlace for wide l: [A 0; B C] with A's width a multiple of kFactorChunk, B <- -C^-1
// B A^-1 in pieces (columns of B are independent in C^-1 B, rows in B A^-1), then A and C.
void invertLowerInPieces(Eigen::Ref<Eigen::MatrixXf> l, const ParallelFor* par)
{
    const Eigen::Index n = l.rows();
    if (n <= 4 * kFactorChunk) {
        invertLowerInPlace<float>(l);
        return;
    }
    const Eigen::Index n1 = (n / 2 + kFactorChunk - 1) / kFactorChunk * kFactorChunk, n2 = n - n1;
    auto b = l.bottomLeftCorner(n2, n1);
    const auto a = l.topLeftCorner(n1, n1).triangularView<Eigen::Lower>();
    const auto c = l.bottomRightCorner(n2, n2).triangularView<Eigen::Lower>();
    forPieces(par, pieces(n1), [&](Eigen::Index p) {
        auto cols = b.middleCols(p * kFactorChunk, std::min(kFactorChunk, n1 - p * kFactorChunk));
        c.solveInPlace(cols);
    });
    forPieces(par, pieces(n2), [&](Eigen::Index p) {
        auto rows = b.middleRows(p * kFactorChunk, std::min(kFactorChunk, n2 - p * kFactorChunk));
        a.solveInPlace<Eigen::OnTheRight>(rows);
        rows = -rows;
    });
    invertLowerInPieces(l.topLeftCorner(n1, n1), par);
    invertLowerInPieces(l.bottomRightCorner(n2, n2), par);
}

// Right-looking blocked Cholesky in place (L in the lower triangle; the strict upper part is
// scratch): per block of kFactorBlock columns, its diagonal block by Eigen's LLT, the panel below
// by a triangular solve in pieces of rows, and the trailing lower triangle updated by column
// pieces, each one GEMM.
bool blockedCholeskyInPlace(Eigen::MatrixXf& r, const ParallelFor* par)
{
    const Eigen::Index n = r.rows();
    for (Eigen::Index k0 = 0; k0 < n; k0 += kFactorBlock) {
        const Eigen::Index kb = std::min(kFactorBlock, n - k0), rest = n - k0 - kb;
        auto a11 = r.block(k0, k0, kb, kb);
        Eigen::LLT<Eigen::Ref<Eigen::MatrixXf>> llt(a11);
        if (llt.info() != Eigen::Success) return false;
        if (rest == 0) break;
        auto a21 = r.block(k0 + kb, k0, rest, kb);
        const auto l11t = a11.triangularView<Eigen::Lower>().transpose();
        forPieces(par, pieces(rest), [&](Eigen::Index p) { // A21 <- A21 L11^-T
            auto rows = a21.middleRows(p * kFactorChunk, std::min(kFactorChunk, rest - p * kFactorChunk));
            l11t.solveInPlace<Eigen::OnTheRight>(rows);
        });
        forPieces(par, pieces(rest), [&](Eigen::Index p) { // A22 -= A21 A21^T, lower part
            const Eigen::Index j0 = p * kFactorChunk, w = std::min(kFactorChunk, rest - j0);
            r.block(k0 + kb + j0, k0 + kb + j0, rest - j0, w).noalias() -=
                a21.middleRows(j0, rest - j0) * a21.middleRows(j0, w).transpose();
        });
    }
    return true;
}

template <typename T>
bool upperCholeskyOfInverseInPlaceT(Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>& r, const ParallelFor* par)
{
    using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
    if (r.rows() != r.cols()) return false;
    r.reverseInPlace(); // J A J
    if constexpr (std::is_same_v<T, float>) {
        if (r.rows() >= kBlockedFactorMin) {
            if (!blockedCholeskyInPlace(r, par)) return false;
            invertLowerInPieces(r, par);
        }
    }
    if (!std::is_same_v<T, float> || r.rows() < kBlockedFactorMin) {
        Eigen::LLT<Eigen::Ref<M>> llt(r); // in place: L in the lower triangle
        if (llt.info() != Eigen::Success) return false;
        invertLowerInPlace<T>(r);
    }
    r.template triangularView<Eigen::StrictlyUpper>().setZero();
    r.reverseInPlace(); // J L^-1 J: upper triangular
    return r.allFinite();
}

} // namespace

bool upperCholeskyOfInverse(Eigen::Ref<const Eigen::MatrixXd> a, Eigen::MatrixXd& u)
{
    u = a;
    return upperCholeskyOfInverseInPlaceT<double>(u, nullptr);
}

bool upperCholeskyOfInverseInPlace(Eigen::MatrixXf& a, const ParallelFor* par)
{
    return upperCholeskyOfInverseInPlaceT<float>(a, par);
}

double hessianDampingLambda(const Eigen::Ref<const Eigen::VectorXd>& diag, double damping)
{
    if (diag.size() == 0) return 0.0;
    std::vector<double> v(diag.data(), diag.data() + diag.size());
    std::sort(v.begin(), v.end());
    double sum = 0.0;
    for (double d : v)
        sum += d;
    return damping * (sum / double(v.size()));
}

} // namespace qb::quant
