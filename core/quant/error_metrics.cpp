#include "quant/error_metrics.h"

#include "quant/lane_sum.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

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
// S = double: all in double. S = float (a weight matrix as stored): float GEMMs, each tile of H
// rounded to float as it is used (n^2 / 16 floats of scratch, no float copy of H) and the products'
// dot products with A summed in double (laneSum per row). For tr(W H W^T) of an unquantized W, or
// RTN's error trace, where nothing cancels by design, that agrees with the double trace to about
// 1e-6 at 2-4x the speed; an error trace that GPTQ drives down by cancellation stays in double.
template <typename S>
double quadTrace(const Eigen::Ref<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>& a,
                 Eigen::Ref<const Eigen::MatrixXd> h)
{
    constexpr Eigen::Index kTiles = 16;
    const Eigen::Index n = h.cols();
    const Eigen::Index tiles = std::min<Eigen::Index>(kTiles, std::max<Eigen::Index>(1, n / 64));
    const Eigen::Index width = (n + tiles - 1) / tiles;
    Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> p;
    Eigen::MatrixXf tile; // float only
    auto dot = [&](Eigen::Index j, Eigen::Index w) -> double {
        if constexpr (std::is_same_v<S, double>) {
            return (p.array() * a.middleCols(j, w).array()).sum();
        } else {
            double s = 0.0;
            for (Eigen::Index r = 0; r < p.rows(); ++r) {
                const S* pr = p.row(r).data();
                const S* ar = a.row(r).data() + j;
                s += laneSum(w, [&](std::int64_t c) { return double(pr[c]) * double(ar[c]); });
            }
            return s;
        }
    };
    double diagonal = 0.0, below = 0.0;
    for (Eigen::Index j = 0; j < n; j += width) {
        const Eigen::Index w = std::min(width, n - j), rest = n - j - w;
        if constexpr (std::is_same_v<S, double>) {
            p.noalias() = a.middleCols(j, w) * h.block(j, j, w, w);
        } else {
            tile = h.block(j, j, n - j, w).cast<float>();
            p.noalias() = a.middleCols(j, w) * tile.topRows(w);
        }
        diagonal += dot(j, w);
        if (rest == 0) continue;
        if constexpr (std::is_same_v<S, double>) p.noalias() = a.rightCols(rest) * h.block(j + w, j, rest, w);
        else p.noalias() = a.rightCols(rest) * tile.bottomRows(rest);
        below += dot(j, w);
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
    return quadTrace<double>(dw, h);
}

double HessianErrors::relative() const { return ratio(errorTrace, referenceTrace); }

double hessianReferenceTrace(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const Eigen::MatrixXd> h)
{
    return quadTrace<float>(w, h);
}

HessianErrors hessianErrors(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q,
                            Eigen::Ref<const Eigen::MatrixXd> h)
{
    return {hessianErrorTrace(w, q, h), hessianReferenceTrace(w, h)};
}

HessianErrors hessianErrors(Eigen::Ref<const MatrixXfR> w, const QuantizedRows& q, Eigen::Ref<const Eigen::MatrixXd> h)
{
    if (std::isfinite(q.errorTrace)) return {q.errorTrace, hessianReferenceTrace(w, h)};
    // No solver trace: a method without error feedback (RTN, RTN inside a container), whose errors
    // are not driven down by cancellation against H, so its trace takes the reference's float path
    // (within 1e-8 of the double trace on the demo's and the 1.1B shape's RTN tensors, 2-8 bits;
    // the double product cost 40 % of an RTN run).
    const MatrixXfR dw = w - q.dequantized;
    return {quadTrace<float>(dw, h), hessianReferenceTrace(w, h)};
}

double relativeOutputErrorHessian(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q,
                                  Eigen::Ref<const Eigen::MatrixXd> h)
{
    return hessianErrors(w, q, h).relative();
}

} // namespace qb::quant
