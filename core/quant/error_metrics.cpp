#include "quant/error_metrics.h"

#include <cmath>
#include <limits>

namespace qb::quant {

namespace {
double ratio(double num, double den)
{
    if (den > 0.0) return std::sqrt(num / den);
    return num > 0.0 ? std::numeric_limits<double>::infinity() : 0.0;
}
double quadTrace(const MatrixXdR& a, Eigen::Ref<const Eigen::MatrixXd> h)
{
    const MatrixXdR ah = a * h;
    return (ah.array() * a.array()).sum();
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

double relativeOutputErrorHessian(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const MatrixXfR> q,
                                  Eigen::Ref<const Eigen::MatrixXd> h)
{
    const MatrixXdR wd = w.cast<double>();
    return ratio(hessianErrorTrace(w, q, h), quadTrace(wd, h));
}

} // namespace qb::quant
