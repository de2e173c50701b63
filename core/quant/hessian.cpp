#include "quant/hessian.h"

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

Status HessianAccumulator::addBatch(Eigen::Ref<const MatrixXfR> x)
{
    const MatrixXdR xd = x.cast<double>();
    return addBatch(xd);
}

Status HessianAccumulator::addBatch(Eigen::Ref<const MatrixXdR> x)
{
    if (x.cols() != m_h.cols())
        return makeError(ErrorCode::Shape, "calibration batch width does not match the layer input",
                         "expected " + std::to_string(m_h.cols()) + " columns, got " + std::to_string(x.cols()));
    if (x.rows() == 0) return {};
    const std::int64_t total = m_samples + x.rows();
    m_h *= double(m_samples) / double(total);
    m_h.noalias() += (m_factor / double(total)) * (x.transpose() * x);
    m_samples = total;
    return {};
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
