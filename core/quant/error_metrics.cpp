#include "quant/error_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace qb::quant {

namespace {
double ratio(double num, double den)
{
    if (den > 0.0) return std::sqrt(num / den);
    return num > 0.0 ? std::numeric_limits<double>::infinity() : 0.0;
}
// tr(A H A^T) for a symmetric H from its lower triangle, in column tiles J = [j, j + w):
// sum_J <A_J H_JJ, A_J> + 2 <A_{>J} H_{>J,J}, A_J>. The products are general GEMMs (Eigen's
// OpenMP-parallel kernel), about (tiles + 1) / (2 tiles) of the full A H.
double quadTrace(const MatrixXdR& a, Eigen::Ref<const Eigen::MatrixXd> h)
{
    constexpr Eigen::Index kTiles = 16;
    const Eigen::Index n = h.cols();
    const Eigen::Index tiles = std::min<Eigen::Index>(kTiles, std::max<Eigen::Index>(1, n / 64));
    const Eigen::Index width = (n + tiles - 1) / tiles;
    MatrixXdR p;
    double diagonal = 0.0, below = 0.0;
    for (Eigen::Index j = 0; j < n; j += width) {
        const Eigen::Index w = std::min(width, n - j), rest = n - j - w;
        p.noalias() = a.middleCols(j, w) * h.block(j, j, w, w);
        diagonal += (p.array() * a.middleCols(j, w).array()).sum();
        if (rest == 0) continue;
        p.noalias() = a.rightCols(rest) * h.block(j + w, j, rest, w);
        below += (p.array() * a.middleCols(j, w).array()).sum();
    }
    return diagonal + 2.0 * below;
}
} // namespace

double relativeOutputError(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q, Eigen::Ref<const MatrixXfR> x)
{
    const MatrixXdR wd = w.cast<double>();
    const MatrixXdR dw = wd - q.cast<double>();
    const MatrixXdR xd = x.cast<double>();
    const MatrixXdR ref = wd * xd.transpose();
    const MatrixXdR err = dw * xd.transpose();
    return ratio(err.squaredNorm(), ref.squaredNorm());
}

double hessianErrorTrace(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q,
                         Eigen::Ref<const Eigen::MatrixXd> h)
{
    const MatrixXdR dw = w.cast<double>() - q.cast<double>();
    return quadTrace(dw, h);
}

double HessianErrors::relative() const { return ratio(errorTrace, referenceTrace); }

HessianErrors hessianErrors(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q,
                            Eigen::Ref<const Eigen::MatrixXd> h)
{
    const MatrixXdR wd = w.cast<double>();
    return {hessianErrorTrace(w, q, h), quadTrace(wd, h)};
}

double relativeOutputErrorHessian(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q,
                                  Eigen::Ref<const Eigen::MatrixXd> h)
{
    return hessianErrors(w, q, h).relative();
}

} // namespace qb::quant
