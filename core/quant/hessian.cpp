#include "quant/hessian.h"

#include <Eigen/Cholesky>

#include <algorithm>
#include <string>
#include <vector>

namespace qb::quant {

HessianAccumulator::HessianAccumulator(int cols, double factor)
    : m_h(Eigen::MatrixXd::Zero(std::max(cols, 0), std::max(cols, 0))), m_factor(factor)
{}

void HessianAccumulator::reset()
{
    m_h.setZero();
    m_samples = 0;
}

namespace {

Status checkWidth(Eigen::Index got, Eigen::Index want)
{
    if (got == want) return {};
    return makeError(ErrorCode::Shape, "calibration batch width does not match the layer input",
                     "expected " + std::to_string(want) + " columns, got " + std::to_string(got));
}

} // namespace

Status HessianAccumulator::addBatch(Eigen::Ref<const MatrixXfR> x, const RowBlockFn& eachBlock)
{
    QB_TRY_STATUS(checkWidth(x.cols(), m_h.cols()));
    if (x.rows() == 0) return {};
    const Eigen::Index n = m_h.cols();
    const std::int64_t total = m_samples + x.rows();
    m_h *= double(m_samples) / double(total);
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
            m_h.block(j, j, n - j, w) += scale * m_tile.cast<double>();
        }
        if (eachBlock) QB_TRY_STATUS(eachBlock(x.middleRows(r0, rows)));
    }
    m_h.triangularView<Eigen::StrictlyUpper>() = m_h.transpose();
    m_samples = total;
    return {};
}

Status HessianAccumulator::addBatch(Eigen::Ref<const MatrixXdR> x)
{
    QB_TRY_STATUS(checkWidth(x.cols(), m_h.cols()));
    if (x.rows() == 0) return {};
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

template <typename T>
bool upperCholeskyOfInverseInPlaceT(Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>& r)
{
    using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
    if (r.rows() != r.cols()) return false;
    r.reverseInPlace();               // J A J
    Eigen::LLT<Eigen::Ref<M>> llt(r); // in place: L in the lower triangle
    if (llt.info() != Eigen::Success) return false;
    invertLowerInPlace<T>(r);
    r.template triangularView<Eigen::StrictlyUpper>().setZero();
    r.reverseInPlace(); // J L^-1 J: upper triangular
    return r.allFinite();
}

} // namespace

bool upperCholeskyOfInverse(Eigen::Ref<const Eigen::MatrixXd> a, Eigen::MatrixXd& u)
{
    u = a;
    return upperCholeskyOfInverseInPlaceT<double>(u);
}

bool upperCholeskyOfInverseInPlace(Eigen::MatrixXf& a) { return upperCholeskyOfInverseInPlaceT<float>(a); }

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
