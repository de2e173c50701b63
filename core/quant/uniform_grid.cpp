#include "quant/uniform_grid.h"

#include "quant/cmpq.h"

#include "base/dtype.h"

#include <algorithm>
#include <string>

namespace qb::quant {

Status validateGridSpec(const GridSpec& spec, int cols)
{
    if (spec.bits < kMinBits || spec.bits > kMaxBits)
        return makeError(ErrorCode::InvalidArgument,
                         "bits must be in [" + std::to_string(kMinBits) + ", " + std::to_string(kMaxBits) + "]",
                         "bits=" + std::to_string(spec.bits));
    if (cols <= 0) return makeError(ErrorCode::Shape, "weight matrix has no columns");
    if (!(spec.clip > 0.0 && spec.clip <= 1.0))
        return makeError(ErrorCode::InvalidArgument, "the weight clipping ratio must be in (0, 1]",
                         "clip=" + std::to_string(spec.clip));
    return {};
}

GroupParams fitGroupMinMaxGptq(const double* w, int n, int bits, bool sym, double clip)
{
    const double maxq = double(gridLevels(bits) - 1);
    double xmin = 0.0, xmax = 0.0; // the reference clamps the range to contain 0
    for (int j = 0; j < n; ++j) {
        xmin = std::min(xmin, w[j]);
        xmax = std::max(xmax, w[j]);
    }
    xmin *= clip;
    xmax *= clip;
    if (sym) {
        xmax = std::max(std::abs(xmin), xmax);
        if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0.0 && xmax == 0.0) {
        xmin = -1.0;
        xmax = 1.0;
    }
    GroupParams p;
    p.scale = (xmax - xmin) / maxq;
    const double zeroInt = sym ? (maxq + 1.0) / 2.0 : roundHalfEvenUniform(-xmin / p.scale);
    p.zero = -zeroInt;
    return p;
}

GroupParams fitGroupMinMaxPlain(const double* w, int n, int bits)
{
    const double maxq = double(gridLevels(bits) - 1);
    double lo = w[0], hi = w[0];
    for (int j = 1; j < n; ++j) {
        lo = std::min(lo, w[j]);
        hi = std::max(hi, w[j]);
    }
    GroupParams p;
    p.scale = (hi - lo) / maxq;
    if (p.scale < 1e-9) p.scale = 1.0;
    p.zero = roundHalfEvenUniform(lo / p.scale);
    return p;
}

GroupParams storableGptqParams(GroupParams p, const double* w, const double* h, int n, int bits)
{
    const int levels = gridLevels(bits);
    double s = double(f16ToF32(f32ToF16(float(p.scale))));
    if (!(s > 0.0)) s = double(f16ToF32(0x0400)); // 2^-14
    const double zLo = -double(levels - 1), zHi = -1.0;
    const double a = std::clamp(std::floor(p.zero), zLo, zHi), b = std::clamp(std::ceil(p.zero), zLo, zHi);
    const GroupParams pa{s, a}, pb{s, b};
    if (a == b) return pa;
    return groupLossUniform(w, h, n, pb, levels) < groupLossUniform(w, h, n, pa, levels) ? pb : pa;
}

double groupLossUniform(const double* w, const double* h, int n, const GroupParams& p, int levels)
{
    double hs = 0.0;
    if (h)
        for (int j = 0; j < n; ++j)
            hs += h[j];
    const bool uniform = !h || !(hs > 0.0);
    double loss = 0.0;
    for (int j = 0; j < n; ++j) {
        const double e = w[j] - fakeQuantUniform(w[j], p, levels);
        loss += (uniform ? 1.0 : h[j]) * e * e;
    }
    return loss / (uniform ? double(n) : hs);
}

std::vector<int> groupIndexContiguous(int groupSize, int cols)
{
    const int g = groupWidth(groupSize, cols);
    std::vector<int> idx(std::size_t(std::max(cols, 0)));
    for (int j = 0; j < cols; ++j)
        idx[std::size_t(j)] = j / g;
    return idx;
}

Result<QuantizedRows> quantizeRowsUniform(Eigen::Ref<const MatrixXfR> w, int bits, const MatrixXdR& scales,
                                          const MatrixXdR& zeros, const std::vector<int>& groupIndex,
                                          const MatrixXdR& offsets)
{
    const Eigen::Index rows = w.rows(), cols = w.cols();
    if (bits < kMinBits || bits > kMaxBits)
        return makeError(ErrorCode::InvalidArgument, "bits out of range", "bits=" + std::to_string(bits));
    if (Eigen::Index(groupIndex.size()) != cols || scales.rows() != rows || zeros.rows() != rows ||
        scales.cols() != zeros.cols() ||
        (offsets.size() && (offsets.rows() != rows || offsets.cols() != scales.cols())))
        return makeError(ErrorCode::Shape, "parameter shapes do not match the weight matrix");
    for (int g : groupIndex)
        if (g < 0 || g >= scales.cols()) return makeError(ErrorCode::OutOfRange, "group index out of range");
    const int levels = gridLevels(bits);
    QuantizedRows out;
    out.bits = bits;
    out.codes.resize(rows, cols);
    out.dequantized.resize(rows, cols);
    out.scales = scales;
    out.zeros = zeros;
    out.offsets = offsets;
    out.groupIndex = groupIndex;
    for (Eigen::Index r = 0; r < rows; ++r)
        for (Eigen::Index c = 0; c < cols; ++c) {
            const int g = groupIndex[std::size_t(c)];
            const GroupParams p = groupParams(out, r, g);
            const int q = quantizeCodeUniform(double(w(r, c)), p, levels);
            out.codes(r, c) = std::uint8_t(q);
            out.dequantized(r, c) = float(dequantizeCodeUniform(q, p));
        }
    return out;
}

MatrixXfR dequantizeRowsUniform(const QuantizedRows& q)
{
    MatrixXfR out(q.codes.rows(), q.codes.cols());
    dequantizeRowsInto(q, 0, q.codes.rows(), q.codes.data(), out.data());
    return out;
}

void dequantizeRowsInto(const QuantizedRows& q, Eigen::Index r0, Eigen::Index n, const std::uint8_t* codes, float* dst)
{
    const Eigen::Index cols = Eigen::Index(q.cmpq ? q.cmpq->channelBits.size() : q.groupIndex.size());
    if (q.cmpq) return dequantizeRowsCmpqInto(codes, cols, *q.cmpq, r0, n, dst);
    for (Eigen::Index r = r0; r < r0 + n; ++r) {
        float* out = dst + (r - r0) * cols;
        const std::uint8_t* code = codes + (r - r0) * cols;
        for (Eigen::Index c = 0; c < cols; ++c) {
            const int g = q.groupIndex[std::size_t(c)];
            out[c] = float(dequantizeCodeUniform(code[c], groupParams(q, r, g)));
        }
    }
}

} // namespace qb::quant
