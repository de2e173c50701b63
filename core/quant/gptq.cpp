#include "quant/gptq.h"

#include "quant/hessian.h"

#include <Eigen/Cholesky>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

namespace qb::quant {

namespace {

Status validate(const GridSpec& spec, GridInit init, Eigen::Index rows, Eigen::Index cols)
{
    QB_TRY_STATUS(validateGridSpec(spec, int(cols)));
    if (rows <= 0) return makeError(ErrorCode::Shape, "weight matrix has no rows");
    if (init == GridInit::Neuqi && spec.sym)
        return makeError(ErrorCode::InvalidArgument, "NeUQI uses a real zero-point; symmetric grids are not supported");
    return {};
}

void allocateOutput(QuantizedRows& out, Eigen::Index rows, Eigen::Index cols, int groups, int bits)
{
    out.bits = bits;
    out.codes.resize(rows, cols);
    out.dequantized.resize(rows, cols);
    out.scales.resize(rows, groups);
    out.zeros.resize(rows, groups);
}

} // namespace

GroupParams fitGroupUniform(GridInit init, const double* w, const double* h, int n, const GridSpec& spec,
                            const NeuqiOptions& neuqi, NeuqiScratch& scratch)
{
    const GroupParams p = init == GridInit::Neuqi ? fitGroupNeuqi(w, h, n, spec.bits, neuqi, scratch)
                                                  : fitGroupMinMaxGptq(w, n, spec.bits, spec.sym, spec.clip);
    return spec.gptqStorage ? storableGptqParams(p, w, h, n, spec.bits) : p;
}

Result<QuantizedRows> quantizeRowsRtn(Eigen::Ref<const MatrixXfR> w, const GridSpec& spec, GridInit init,
                                      const Eigen::VectorXd* hDiag, const NeuqiOptions& neuqi, RunContext* ctx)
{
    const Eigen::Index rows = w.rows(), cols = w.cols();
    QB_TRY_STATUS(validate(spec, init, rows, cols));
    if (hDiag && hDiag->size() != cols)
        return makeError(ErrorCode::Shape, "Hessian diagonal does not match the weight width");
    const int n = int(cols);
    const int g = groupWidth(spec.groupSize, n);
    const int groups = groupCount(spec.groupSize, n);
    const int levels = gridLevels(spec.bits);
    QuantizedRows out;
    allocateOutput(out, rows, cols, groups, spec.bits);
    out.groupIndex = groupIndexContiguous(spec.groupSize, n);
    std::vector<double> row(static_cast<std::size_t>(n));
    NeuqiScratch scratch;
    scratch.reserve(g);
    for (Eigen::Index r = 0; r < rows; ++r) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("RTN");
        for (int c = 0; c < n; ++c)
            row[std::size_t(c)] = double(w(r, c));
        for (int k = 0; k < groups; ++k) {
            const int c0 = k * g, len = std::min(g, n - c0);
            const double* hp = hDiag ? hDiag->data() + c0 : nullptr;
            const GroupParams p = fitGroupUniform(init, row.data() + c0, hp, len, spec, neuqi, scratch);
            out.scales(r, k) = p.scale;
            out.zeros(r, k) = p.zero;
            for (int c = c0; c < c0 + len; ++c) {
                const int q = quantizeCodeUniform(row[std::size_t(c)], p, levels);
                out.codes(r, c) = std::uint8_t(q);
                out.dequantized(r, c) = float(dequantizeCodeUniform(q, p));
            }
        }
        if (ctx) ctx->advance(1);
    }
    return out;
}

Result<QuantizedRows> quantizeRowsGptq(Eigen::Ref<const MatrixXfR> w, Eigen::Ref<const Eigen::MatrixXd> h,
                                       const GptqOptions& opts, RunContext* ctx, const ParallelFor* par)
{
    const Eigen::Index rows = w.rows(), cols = w.cols();
    QB_TRY_STATUS(validate(opts.grid, opts.fixedGrid ? GridInit::MinMax : opts.init, rows, cols));
    if (h.rows() != cols || h.cols() != cols)
        return makeError(ErrorCode::Shape, "Hessian shape does not match the weight width",
                         "H is " + std::to_string(h.rows()) + "x" + std::to_string(h.cols()) + ", W has " +
                             std::to_string(cols) + " columns");
    if (opts.blockSize < 1) return makeError(ErrorCode::InvalidArgument, "GPTQ block size must be >= 1");
    const QuantizedRows* fixed = opts.fixedGrid;
    if (fixed && (fixed->scales.rows() != rows || fixed->zeros.rows() != rows ||
                  fixed->scales.cols() != groupCount(opts.grid.groupSize, int(cols)) ||
                  fixed->zeros.cols() != fixed->scales.cols() ||
                  (fixed->offsets.size() && fixed->offsets.cols() != fixed->scales.cols())))
        return makeError(ErrorCode::Shape, "GPTQ: the fixed grid's parameters do not match the weight and group size");
    if (!(opts.damping >= 0.0)) return makeError(ErrorCode::InvalidArgument, "GPTQ damping must be >= 0");
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError("GPTQ");

    const int n = int(cols);
    const int m = int(rows);
    const GridSpec& spec = opts.grid;
    const int g = groupWidth(spec.groupSize, n);
    const int groups = groupCount(spec.groupSize, n);
    const bool perChannel = groups == 1;
    const bool dynamic = !fixed && !perChannel && opts.groups == GroupMode::Dynamic;
    const int levels = gridLevels(spec.bits);

    QuantizedRows out;
    allocateOutput(out, rows, cols, groups, spec.bits);
    if (fixed) {
        out.scales = fixed->scales;
        out.zeros = fixed->zeros;
        out.offsets = fixed->offsets;
        out.container = fixed->container;
        out.superScales = fixed->superScales;
    }
    out.groupIndex.assign(std::size_t(n), 0);
    NeuqiScratch scratch;
    scratch.reserve(g);
    std::vector<double> seg(static_cast<std::size_t>(n));
    std::vector<double> segH(static_cast<std::size_t>(n));

    Eigen::MatrixXd wd = w.cast<double>(); // column-major working copy: columns are contiguous
    const bool fitUpFront = !fixed && !dynamic && !(perChannel && opts.init == GridInit::MinMax);
    if (!fixed && perChannel && opts.init == GridInit::MinMax) // the reference fits before dead zeroing
        for (int r = 0; r < m; ++r) {
            for (int c = 0; c < n; ++c)
                seg[std::size_t(c)] = wd(r, c);
            GroupParams p = fitGroupMinMaxGptq(seg.data(), n, spec.bits, spec.sym, spec.clip);
            if (spec.gptqStorage) p = storableGptqParams(p, seg.data(), nullptr, n, spec.bits);
            out.scales(r, 0) = p.scale;
            out.zeros(r, 0) = p.zero;
        }

    Eigen::MatrixXd hd = h;
    for (int j = 0; j < n; ++j)
        if (hd(j, j) == 0.0) {
            hd(j, j) = 1.0;
            wd.col(j).setZero();
        }

    std::vector<int> perm(static_cast<std::size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    if (opts.actOrder) std::stable_sort(perm.begin(), perm.end(), [&hd](int a, int b) { return hd(a, a) > hd(b, b); });

    // Damping and the inverse factor: the upper Cholesky factor of (H + lambda I)^-1 (hessian.h).
    const Eigen::VectorXd diag = hd.diagonal();
    const double lambda = hessianDampingLambda(diag, opts.damping);
    Eigen::MatrixXd hp(n, n);
    for (int b = 0; b < n; ++b)
        for (int a = 0; a < n; ++a)
            hp(a, b) = hd(perm[std::size_t(a)], perm[std::size_t(b)]);
    Eigen::MatrixXd u;
    double dampTotal = 0.0;
    bool factored = false;
    for (int attempt = 0; attempt <= opts.maxDampingRetries && !factored; ++attempt) {
        dampTotal += lambda;
        Eigen::MatrixXd damped = hp;
        damped.diagonal().array() += dampTotal;
        if (!upperCholeskyOfInverse(damped, u)) continue;
        out.dampingRetries = attempt;
        factored = u.allFinite() && (u.diagonal().array() > 0.0).all();
    }
    if (!factored)
        return makeError(ErrorCode::NumericalError, "GPTQ: Hessian is not positive definite after " +
                                                        std::to_string(opts.maxDampingRetries) + " damping retries");
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError("GPTQ");

    const Eigen::VectorXd hDamped = (diag.array() + dampTotal).matrix(); // original column order

    // Up-front (static / per-channel NeUQI) parameters on W after dead zeroing.
    if (fitUpFront && par && par->run && par->workers > 1) {
        // Parallel over (row, group) items in row chunks, cancel polled between chunks.
        const int workers = par->workers;
        std::vector<NeuqiScratch> scratches(static_cast<std::size_t>(workers));
        std::vector<std::vector<double>> segs(static_cast<std::size_t>(workers), std::vector<double>(std::size_t(g)));
        for (auto& sc : scratches)
            sc.reserve(g);
        const int chunkRows = std::max(1, 4096 / std::max(groups, 1));
        for (int r0 = 0; r0 < m; r0 += chunkRows) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError("GPTQ");
            const int r1 = std::min(m, r0 + chunkRows);
            par->run(std::int64_t(r1 - r0) * groups, [&](std::int64_t item, int worker) {
                const int r = r0 + int(item / groups), k = int(item % groups);
                const int c0 = k * g, len = std::min(g, n - c0);
                double* sg = segs[std::size_t(worker)].data();
                for (int c = 0; c < len; ++c)
                    sg[c] = wd(r, c0 + c);
                const GroupParams p = fitGroupUniform(opts.init, sg, hDamped.data() + c0, len, spec, opts.neuqi,
                                                      scratches[std::size_t(worker)]);
                out.scales(r, k) = p.scale;
                out.zeros(r, k) = p.zero;
            });
        }
    } else if (fitUpFront)
        for (int r = 0; r < m; ++r) {
            if (opts.init == GridInit::Neuqi && ctx && ctx->isCancelled()) return RunContext::cancelledError("GPTQ");
            for (int c = 0; c < n; ++c)
                seg[std::size_t(c)] = wd(r, c);
            for (int k = 0; k < groups; ++k) {
                const int c0 = k * g, len = std::min(g, n - c0);
                const GroupParams p =
                    fitGroupUniform(opts.init, seg.data() + c0, hDamped.data() + c0, len, spec, opts.neuqi, scratch);
                out.scales(r, k) = p.scale;
                out.zeros(r, k) = p.zero;
            }
        }

    Eigen::MatrixXd wp(m, n);
    for (int i = 0; i < n; ++i)
        wp.col(i) = wd.col(perm[std::size_t(i)]);
    wd.resize(0, 0);
    for (int i = 0; i < n; ++i)
        segH[std::size_t(i)] = hDamped(perm[std::size_t(i)]);

    const int bs = opts.blockSize;
    Eigen::MatrixXd err(m, std::min(bs, n));
    double proxy = 0.0;
    for (int b = 0; b < n;) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("GPTQ");
        int e = std::min(b + bs, n);
        if (dynamic) e = std::min(e, (b / g + 1) * g); // a group start always opens a block
        const int cnt = e - b;
        for (int i = b; i < e; ++i) {
            const int orig = perm[std::size_t(i)];
            int k = 0;
            if (dynamic) {
                k = i / g;
                if (i % g == 0) {
                    const int len = std::min(g, n - i);
                    for (int r = 0; r < m; ++r) {
                        for (int c = 0; c < len; ++c)
                            seg[std::size_t(c)] = wp(r, i + c);
                        const GroupParams p =
                            fitGroupUniform(opts.init, seg.data(), segH.data() + i, len, spec, opts.neuqi, scratch);
                        out.scales(r, k) = p.scale;
                        out.zeros(r, k) = p.zero;
                    }
                }
            } else if (!perChannel) {
                k = orig / g;
            }
            out.groupIndex[std::size_t(orig)] = k;
            const double d = u(i, i);
            for (int r = 0; r < m; ++r) {
                const GroupParams p = groupParams(out, r, k);
                const double x = wp(r, i);
                const int q = quantizeCodeUniform(x, p, levels);
                const double deq = dequantizeCodeUniform(q, p);
                out.codes(r, orig) = std::uint8_t(q);
                out.dequantized(r, orig) = float(deq);
                proxy += 0.5 * (x - deq) * (x - deq) / (d * d);
                err(r, i - b) = (x - deq) / d;
            }
            const int rest = e - i - 1;
            if (rest > 0) wp.middleCols(i + 1, rest).noalias() -= err.col(i - b) * u.row(i).segment(i + 1, rest);
        }
        if (e < n) wp.rightCols(n - e).noalias() -= err.leftCols(cnt) * u.block(b, e, cnt, n - e);
        if (ctx) ctx->advance(cnt);
        b = e;
    }
    out.proxyLoss = proxy;
    return out;
}

} // namespace qb::quant
