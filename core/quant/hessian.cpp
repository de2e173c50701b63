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

namespace {

Status checkWidth(Eigen::Index got, Eigen::Index want)
{
    if (got == want) return {};
    return makeError(ErrorCode::Shape, "calibration batch width does not match the layer input",
                     "expected " + std::to_string(want) + " columns, got " + std::to_string(got));
}

} // namespace

Status HessianAccumulator::addBatch(Eigen::Ref<const MatrixXfR> x)
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
