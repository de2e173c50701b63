#include "model/runtime.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

namespace qb::model {

RowMatrix RowTransform::dense() const
{
    RowMatrix t = RowMatrix::Identity(size(), size());
    apply(t);
    return t;
}

void RowTransform::applyTranspose(Eigen::Ref<RowMatrix> rows) const
{
    const RowMatrix t = dense();
    const RowMatrix x = rows;
    rows.noalias() = x * t.transpose();
}

void DenseRowTransform::apply(Eigen::Ref<RowMatrix> rows) const
{
    const RowMatrix x = rows;
    rows.noalias() = x * m_t;
}

void DenseRowTransform::applyTranspose(Eigen::Ref<RowMatrix> rows) const
{
    const RowMatrix x = rows;
    rows.noalias() = x * m_t.transpose();
}

RangeQuantizer::RangeQuantizer(float lo, float hi, const ActQuantSpec& spec)
{
    lo = std::min(lo, 0.0f) * spec.clip;
    hi = std::max(hi, 0.0f) * spec.clip;
    if (spec.sym) {
        const float m = std::max(-lo, hi);
        qmax = float((1 << (spec.bits - 1)) - 1);
        qmin = -qmax - 1;
        scale = m / qmax;
    } else {
        qmax = float((1 << spec.bits) - 1);
        scale = (hi - lo) / qmax;
        if (scale > 0) zero = std::nearbyint(-lo / scale);
    }
    if (scale > 0 && std::isfinite(scale)) invScale = 1.0f / scale;
    else scale = 0;
}

void RangeQuantizer::apply(float* x, Eigen::Index n) const
{
    if (scale == 0) return;
    Eigen::Map<Eigen::ArrayXf> a(x, n);
    a = (((a * invScale).rint() + zero).max(qmin).min(qmax) - zero) * scale;
}

bool LayerRuntime::empty() const
{
    return std::all_of(inputs.begin(), inputs.end(), [](const InputRuntime& in) { return in.empty(); }) && kv.empty();
}

std::string LayerRuntime::onlineTransforms() const
{
    std::string out;
    auto add = [&](const std::string& what) { out += (out.empty() ? "" : "; ") + what; };
    for (LinearKind k : {LinearKind::Qkv, LinearKind::O, LinearKind::GateUp, LinearKind::Down}) {
        const InputRuntime& in = input(k);
        std::string parts;
        if (in.smoothDivisor.size() > 0) parts = "smoothing";
        if (in.rotate) parts += (parts.empty() ? "" : " + ") + in.rotate->describe();
        if (!parts.empty()) add(std::string(linearKindName(k)) + ": " + parts);
    }
    if (kv.qkRotate) add("q/k per head: " + kv.qkRotate->describe());
    return out;
}

namespace {

void minMax(const float* x, Eigen::Index n, float& lo, float& hi)
{
    const Eigen::Map<const Eigen::ArrayXf> a(x, n);
    lo = std::min(lo, a.minCoeff());
    hi = std::max(hi, a.maxCoeff());
}

} // namespace

void fakeQuantizeActivations(Eigen::Ref<RowMatrix> rows, const ActQuantSpec& spec)
{
    if (!spec.enabled() || rows.size() == 0) return;
    const Eigen::Index n = rows.rows(), k = rows.cols();
    if (spec.staticRange || spec.granularity == ActGranularity::PerTensor) {
        float lo = 0, hi = 0;
        if (spec.staticRange) {
            lo = (*spec.staticRange)[0];
            hi = (*spec.staticRange)[1];
        } else {
#pragma omp parallel for schedule(static) reduction(min : lo) reduction(max : hi)
            for (Eigen::Index r = 0; r < n; ++r)
                minMax(rows.row(r).data(), k, lo, hi);
        }
        const RangeQuantizer quant(lo, hi, spec);
#pragma omp parallel for schedule(static)
        for (Eigen::Index r = 0; r < n; ++r)
            quant.apply(rows.row(r).data(), k);
        return;
    }
    fakeQuantizeSegments(rows, k, spec);
}

void fakeQuantizeSegments(Eigen::Ref<RowMatrix> rows, Eigen::Index width, const ActQuantSpec& spec)
{
    if (!spec.enabled() || rows.size() == 0 || width <= 0) return;
    const Eigen::Index n = rows.rows(), k = rows.cols();
#pragma omp parallel for schedule(static)
    for (Eigen::Index r = 0; r < n; ++r) {
        float* row = rows.row(r).data();
        for (Eigen::Index c0 = 0; c0 < k; c0 += width) {
            const Eigen::Index w = std::min(width, k - c0);
            float lo = 0, hi = 0;
            minMax(row + c0, w, lo, hi);
            RangeQuantizer(lo, hi, spec).apply(row + c0, w);
        }
    }
}

void applySegments(Eigen::Ref<RowMatrix> rows, const RowTransform& t)
{
    const Eigen::Index w = t.size();
    if (w <= 0 || rows.cols() % w != 0) return;
    for (Eigen::Index c0 = 0; c0 < rows.cols(); c0 += w)
        t.apply(rows.middleCols(c0, w));
}

void applyInputRuntime(Eigen::Ref<RowMatrix> rows, const InputRuntime& in)
{
    applyInputTransforms(rows, in);
    fakeQuantizeActivations(rows, in.quant);
}

void applyInputTransforms(Eigen::Ref<RowMatrix> rows, const InputRuntime& in)
{
    if (in.smoothDivisor.size() == rows.cols()) {
        const RowVector inv = in.smoothDivisor.cwiseInverse();
        const Eigen::Index n = rows.rows();
#pragma omp parallel for schedule(static)
        for (Eigen::Index r = 0; r < n; ++r)
            rows.row(r) = rows.row(r).cwiseProduct(inv);
    }
    if (in.rotate) in.rotate->apply(rows);
}

} // namespace qb::model
