#include "quant/gptq.h"

#include "base/dtype.h"
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

// The rounding of the loop below. Without SSE4.1 (-DQB_NATIVE=OFF) std::nearbyint inlines as a
// branchy sequence that keeps the loop scalar, so there x + 1.5 * 2^52 - 1.5 * 2^52: for |x| <= 2^51
// the sum lies in [2^52, 2^53], where the spacing is 1, so it rounds x half to even (1.5 * 2^52 is
// even) and the difference is exact. Beyond 2^51 it is within 2 of x, infinities and NaN pass, and
// the sign of a zero may differ: none of that changes a clamped code while |zero| < 2^50, so the
// codes are std::nearbyint's. A min-max zero lies within the levels and NeUQI's below 2^33 on float
// weights (their range is at least one float spacing wide); only a group whose weights are all one
// value beyond 2^50 (about 1.1e15) gets a zero that large from the guard's plain min-max fit.
inline double roundHalfEvenColumn(double x)
{
#ifdef __SSE4_1__
    return roundHalfEvenUniform(x);
#else
    constexpr double kShift = 6755399441055744.0; // 1.5 * 2^52
    return (x + kShift) - kShift;
#endif
}

// A column's rows [r0, r1) under per-row grid parameters held as arrays: quantizeCodeUniform and
// dequantizeCodeUniform's arithmetic, in a form the compiler vectorises with SSE4.1, AVX2 or
// AVX-512 (and SSE2 through roundHalfEvenColumn). quantizeCodeUniform rounds w / scale - zero for a
// fractional zero and subtracts an integral one after rounding: here zeroIn (0 when integral) goes
// in and zeroOut (0 when fractional) comes off, with no select between two roundings (a select
// vectorised only with AVX-512's masks). Adding a zero offset, or subtracting a zero, gives the
// same value (up to the sign of a zero, which no code or value depends on); the value may be fused
// into one multiply-add (FMA contraction) where dequantizeCodeUniform's is not, with the same result:
// it is exact on the offset grids (see there) and a zero offset adds nothing. The clamp's comparisons
// give fmin / fmax's integer code, NaN going to 0. The scaled errors (w - q) / d go to errs and e1
// (for the proxy loss, halfSumOfSquares). top: the largest code, levels - 1, passed as a double
// (with the conversion from int inside this function GCC 12 did not vectorise the loop). The two
// must stay the same arithmetic: tst_quant_gptq's diagonalHessianEqualsRtn (and
// tst_container_grid's for grids with an offset) compare GPTQ with RTN, which rounds through
// quantizeCodeUniform, bit for bit.
struct ColumnGrid {
    std::vector<double> scale, zero, zeroIn, zeroOut, offset;
    explicit ColumnGrid(int m)
        : scale(std::size_t(m)), zero(std::size_t(m)), zeroIn(std::size_t(m)), zeroOut(std::size_t(m)),
          offset(std::size_t(m))
    {}
    void set(int r, const GroupParams& p)
    {
        const auto i = std::size_t(r);
        const bool integral = std::nearbyint(p.zero) == p.zero;
        scale[i] = p.scale;
        zero[i] = p.zero;
        zeroIn[i] = integral ? 0.0 : p.zero;
        zeroOut[i] = integral ? p.zero : 0.0;
        offset[i] = p.offset;
    }
};

void quantizeColumnUniform(const float* __restrict x, const ColumnGrid& g, double top, double d, int r0, int r1,
                           std::uint8_t* __restrict codes, float* __restrict deqs, float* __restrict errs,
                           double* __restrict e1)
{
    const double* __restrict scale = g.scale.data();
    const double* __restrict zero = g.zero.data();
    const double* __restrict zeroIn = g.zeroIn.data();
    const double* __restrict zeroOut = g.zeroOut.data();
    const double* __restrict offset = g.offset.data();
    for (int r = r0; r < r1; ++r) {
        const double off = offset[r], s = scale[r], z = zero[r];
        const double ws = (double(x[r]) + off) / s;
        const double t = roundHalfEvenColumn(ws - zeroIn[r]) - zeroOut[r];
        const double lo = t >= 0.0 ? t : 0.0; // NaN -> 0, as fmax(NaN, 0)
        const double c = lo > top ? top : lo;
        const int q = int(c);
        const double deq = s * (z + double(q)) - off;
        codes[r] = std::uint8_t(q);
        deqs[r] = float(deq);
        const double e = (double(x[r]) - deq) / d;
        e1[r] = e;
        errs[r] = float(e);
    }
}

// Rows [t0, t0 + nr) x columns [c0, c0 + len) of a column-major matrix into dst, row-major with
// leading dimension ld, as doubles: a strip of kStripRows rows reads one cache line of each column
// (reading a row across the columns of a power-of-two height missed on every element).
constexpr int kStripRows = 16;
void rowStrip(const Eigen::MatrixXf& a, int t0, int nr, int c0, int len, double* dst, int ld)
{
    for (int c = 0; c < len; ++c) {
        const float* col = a.col(c0 + c).data() + t0;
        for (int t = 0; t < nr; ++t)
            dst[std::size_t(t) * std::size_t(ld) + std::size_t(c)] = col[t];
    }
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

Eigen::VectorXd gptqLiveDiagonal(Eigen::Ref<const Eigen::MatrixXd> h, std::vector<int>& dead)
{
    Eigen::VectorXd d = h.diagonal();
    dead.clear();
    for (Eigen::Index j = 0; j < d.size(); ++j)
        if (d[j] == 0.0) {
            d[j] = 1.0;
            dead.push_back(int(j));
        }
    return d;
}

Result<GptqFactor> factorGptqHessian(Eigen::Ref<const Eigen::MatrixXd> h, bool actOrder, double damping,
                                     int maxDampingRetries, const ParallelFor* par)
{
    if (h.rows() != h.cols()) return makeError(ErrorCode::Shape, "GPTQ: the Hessian is not square");
    if (!(damping >= 0.0)) return makeError(ErrorCode::InvalidArgument, "GPTQ damping must be >= 0");
    const int n = int(h.cols());
    GptqFactor f;
    f.actOrder = actOrder;
    f.damping = damping;
    f.maxDampingRetries = maxDampingRetries;
    f.diag = gptqLiveDiagonal(h, f.dead);
    f.perm.resize(static_cast<std::size_t>(n));
    std::iota(f.perm.begin(), f.perm.end(), 0);
    if (actOrder) std::stable_sort(f.perm.begin(), f.perm.end(), [&f](int a, int b) { return f.diag(a) > f.diag(b); });

    // Damping and the inverse factor: the upper Cholesky factor of (H + lambda I)^-1 (hessian.h),
    // factored in place in f.u, which each attempt fills afresh with the permuted float H. The
    // fill runs in slices of columns on par: it is the first touch of n^2 fresh floats, and made
    // serially (with a second copy kept for the retries) its page faults were up to 4.5 % of a
    // GPTQ run's samples. Every entry is the same on any worker.
    const double lambda = hessianDampingLambda(f.diag, damping);
    auto fillColumns = [&](Eigen::Index b0, Eigen::Index b1) {
        for (Eigen::Index b = b0; b < b1; ++b) {
            const int pb = f.perm[std::size_t(b)];
            float* col = f.u.col(b).data();
            for (int a = 0; a < n; ++a) {
                const int pa = f.perm[std::size_t(a)];
                col[a] = pa == pb ? float(f.diag(pa)) : float(h(pa, pb));
            }
        }
    };
    constexpr Eigen::Index kFillSlice = 64;
    bool factored = false;
    for (int attempt = 0; attempt <= maxDampingRetries && !factored; ++attempt) {
        f.dampTotal += lambda;
        f.u.resize(n, n);
        forPieces(par, (n + kFillSlice - 1) / kFillSlice, [&](std::int64_t s) {
            fillColumns(s * kFillSlice, std::min<Eigen::Index>(n, (s + 1) * kFillSlice));
        });
        f.u.diagonal().array() += float(f.dampTotal);
        if (!upperCholeskyOfInverseInPlace(f.u, par)) continue;
        f.dampingRetries = attempt;
        factored = countNonFinite(f.u.data(), std::size_t(f.u.size())) == 0 && (f.u.diagonal().array() > 0.0f).all();
    }
    if (!factored)
        return makeError(ErrorCode::NumericalError, "GPTQ: Hessian is not positive definite after " +
                                                        std::to_string(maxDampingRetries) + " damping retries");
    return f;
}

bool GptqFactor::fits(const GptqOptions& opts, Eigen::Index n) const
{
    return actOrder == opts.actOrder && damping == opts.damping && maxDampingRetries == opts.maxDampingRetries &&
           u.cols() == n;
}

Eigen::MatrixXf columnMajorCopy(Eigen::Ref<const MatrixXfR> w, const ParallelFor* par)
{
    constexpr Eigen::Index kTile = 32;
    Eigen::MatrixXf out(w.rows(), w.cols());
    auto strip = [&](Eigen::Index c0) { // columns [c0, c0 + kTile), every row, tile by tile
        const Eigen::Index nc = std::min(kTile, w.cols() - c0);
        for (Eigen::Index r0 = 0; r0 < w.rows(); r0 += kTile) {
            const Eigen::Index nr = std::min(kTile, w.rows() - r0);
            for (Eigen::Index c = c0; c < c0 + nc; ++c)
                for (Eigen::Index r = r0; r < r0 + nr; ++r)
                    out(r, c) = w(r, c);
        }
    };
    const bool large = w.size() >= (Eigen::Index(1) << 16); // smaller: a parallel region costs more
    forPieces(large ? par : nullptr, (w.cols() + kTile - 1) / kTile, [&](std::int64_t s) { strip(s * kTile); });
    return out;
}

void storeColumnBlock(const std::uint8_t* codes, const float* values, Eigen::Index m, Eigen::Index cnt, const int* cols,
                      MatrixU8R& codesOut, MatrixXfR& valuesOut, Eigen::Index r0, Eigen::Index r1)
{
    // A tile of 16 rows x 16 columns is read column by column (one cache line of each column:
    // with m a power of two the block's columns map to the same L1 sets, so reading a row across
    // them missed on every element) into a local row-major tile, then written row by row.
    constexpr int kTile = 16;
    bool contiguous = true;
    for (Eigen::Index i = 1; i < cnt && contiguous; ++i)
        contiguous = cols[i] == cols[0] + i;
    alignas(64) float vt[kTile][kTile];
    alignas(64) std::uint8_t ct[kTile][kTile];
    for (Eigen::Index t0 = r0; t0 < r1; t0 += kTile) {
        const int nr = int(std::min<Eigen::Index>(kTile, r1 - t0));
        for (Eigen::Index i0 = 0; i0 < cnt; i0 += kTile) {
            const int ni = int(std::min<Eigen::Index>(kTile, cnt - i0));
            for (int i = 0; i < ni; ++i) {
                const float* vs = values + (i0 + i) * m + t0;
                const std::uint8_t* cs = codes + (i0 + i) * m + t0;
                for (int r = 0; r < nr; ++r) {
                    vt[r][i] = vs[r];
                    ct[r][i] = cs[r];
                }
            }
            for (int r = 0; r < nr; ++r) {
                float* vd = valuesOut.row(t0 + r).data();
                std::uint8_t* cd = codesOut.row(t0 + r).data();
                if (contiguous) {
                    std::copy(vt[r], vt[r] + ni, vd + cols[0] + i0);
                    std::copy(ct[r], ct[r] + ni, cd + cols[0] + i0);
                } else {
                    for (int i = 0; i < ni; ++i) {
                        vd[cols[i0 + i]] = vt[r][i];
                        cd[cols[i0 + i]] = ct[r][i];
                    }
                }
            }
        }
    }
}

Result<const GptqFactor*> sharedGptqFactor(std::optional<GptqFactor>& cache, Eigen::Ref<const Eigen::MatrixXd> h,
                                           const GptqOptions& opts, const GptqFactor* given, const ParallelFor* par)
{
    if (given && given->fits(opts, h.cols())) return given;
    if (!cache || !cache->fits(opts, h.cols())) {
        QB_TRY(made, factorGptqHessian(h, opts.actOrder, opts.damping, opts.maxDampingRetries, par));
        cache = std::move(*made);
    }
    return &*cache;
}

double errorTraceFromErrors(double sumSquaredErrors, const GptqFactor& f, Eigen::Ref<const MatrixXfR> w,
                            Eigen::Ref<const MatrixXfR> q)
{
    // W - Q = E U exactly, so sum E^2 is the trace on the damped H with its dead columns set to 1;
    // the damping and the dead columns are taken out again.
    const Eigen::Index m = w.rows(), n = w.cols();
    // live: (w - q)^2 over the live columns (a 0/1 weight per column, laneSum per row: the loop
    // vectorises); deadSum: q^2 over the dead ones (few).
    std::vector<double> liveWeight(static_cast<std::size_t>(n), 1.0);
    for (int j : f.dead)
        liveWeight[std::size_t(j)] = 0.0;
    double live = 0.0, deadSum = 0.0;
    for (Eigen::Index r = 0; r < m; ++r) {
        const float* wr = w.row(r).data();
        const float* qr = q.row(r).data();
        const double* lw = liveWeight.data();
        live += laneSum(n, [&](std::int64_t c) {
            const double dw = double(wr[c]) - double(qr[c]);
            return lw[c] * (dw * dw);
        });
        for (int j : f.dead) {
            const double qv = qr[j];
            deadSum += qv * qv;
        }
    }
    return std::max(0.0, sumSquaredErrors - f.dampTotal * live - (1.0 + f.dampTotal) * deadSum);
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
    const double top = double(gridLevels(spec.bits) - 1);

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

    Eigen::MatrixXf wd = columnMajorCopy(w, par); // columns are contiguous
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

    std::optional<GptqFactor> own;
    QB_TRY(factor, sharedGptqFactor(own, h, opts, opts.factor, par));
    const GptqFactor* f = *factor;
    for (int j : f->dead)
        wd.col(j).setZero();
    const std::vector<int>& perm = f->perm;
    const Eigen::MatrixXf& u = f->u;
    out.dampingRetries = f->dampingRetries;
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError("GPTQ");

    const Eigen::VectorXd hDamped = (f->diag.array() + f->dampTotal).matrix(); // original column order

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

    Eigen::MatrixXf wp(m, n);
    for (int i = 0; i < n; ++i)
        wp.col(i) = wd.col(perm[std::size_t(i)]);
    wd.resize(0, 0);
    for (int i = 0; i < n; ++i)
        segH[std::size_t(i)] = hDamped(perm[std::size_t(i)]);

    const int bs = opts.blockSize;
    const int bw = std::min(bs, n);
    Eigen::MatrixXf err(m, bw);
    // A block's codes and values are gathered column-major (as wp) and written to the row-major
    // outputs once per block, row by row; a column's group parameters are gathered once per group.
    Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic> codeBlock(m, bw);
    Eigen::MatrixXf deqBlock(m, bw);
    ColumnGrid colGrid(m);
    std::vector<double> colErrors(static_cast<std::size_t>(m));
    std::vector<int> colGroup(static_cast<std::size_t>(bw));
    // Inside a block every row is its own problem (its codes, errors and updates read only that
    // row), so the block runs in fixed pieces of rows (gptqPieceRows) on the job's workers; each
    // piece sums its share of the proxy loss, added in piece order: the same bits on any number
    // of workers.
    const int workers = gptqPieceWorkers(m, par);
    std::vector<NeuqiScratch> pieceScratch(static_cast<std::size_t>(workers));
    std::vector<std::vector<double>> pieceSeg(static_cast<std::size_t>(workers),
                                              std::vector<double>(dynamic ? std::size_t(kStripRows * g) : 0));
    for (auto& sc : pieceScratch)
        sc.reserve(dynamic ? g : 0);
    double proxy = 0.0;
    for (int b = 0; b < n;) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("GPTQ");
        int e = std::min(b + bs, n);
        if (dynamic) e = std::min(e, (b / g + 1) * g); // a group start always opens a block
        const int cnt = e - b;
        for (int i = b; i < e; ++i) {
            const int orig = perm[std::size_t(i)];
            const int k = dynamic ? i / g : perChannel ? 0 : orig / g;
            colGroup[std::size_t(i - b)] = k;
            out.groupIndex[std::size_t(orig)] = k;
        }
        addOverRowPieces(m, par, proxy, [&](int r0, int r1, int worker) {
            const int len = r1 - r0;
            double part = 0.0;
            int paramsGroup = -1;
            for (int i = b; i < e; ++i) {
                const int k = colGroup[std::size_t(i - b)];
                if (dynamic && i % g == 0) {
                    const int glen = std::min(g, n - i);
                    double* sg = pieceSeg[std::size_t(worker)].data();
                    for (int t0 = r0; t0 < r1; t0 += kStripRows) {
                        const int nr = std::min(kStripRows, r1 - t0);
                        rowStrip(wp, t0, nr, i, glen, sg, g);
                        for (int t = 0; t < nr; ++t) {
                            const GroupParams p =
                                fitGroupUniform(opts.init, sg + std::size_t(t) * g, segH.data() + i, glen, spec,
                                                opts.neuqi, pieceScratch[std::size_t(worker)]);
                            out.scales(t0 + t, k) = p.scale;
                            out.zeros(t0 + t, k) = p.zero;
                        }
                    }
                    paramsGroup = -1;
                }
                if (k != paramsGroup) {
                    for (int r = r0; r < r1; ++r)
                        colGrid.set(r, groupParams(out, r, k));
                    paramsGroup = k;
                }
                double* e1 = colErrors.data();
                quantizeColumnUniform(wp.col(i).data(), colGrid, top, u(i, i), r0, r1, codeBlock.col(i - b).data(),
                                      deqBlock.col(i - b).data(), err.col(i - b).data(), e1);
                part += halfSumOfSquares(e1 + r0, r1 - r0);
                const int rest = e - i - 1;
                if (rest > 0) subtractRankOne(wp, r0, len, i + 1, rest, err.col(i - b).data() + r0, u, i);
            }
            storeColumnBlock(codeBlock.data(), deqBlock.data(), m, cnt, perm.data() + b, out.codes, out.dequantized, r0,
                             r1);
            return part;
        });
        if (e < n) wp.rightCols(n - e).noalias() -= err.leftCols(cnt) * u.block(b, e, cnt, n - e);
        if (ctx) ctx->advance(cnt);
        b = e;
    }
    out.errorTrace = errorTraceFromErrors(2.0 * proxy, *f, w, out.dequantized);
    out.proxyLoss = proxy;
    return out;
}

} // namespace qb::quant
