#include "quant/container_grid.h"

#include "base/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <limits>

namespace qb::quant {

const std::vector<ContainerSpec>& containerSpecs()
{
    // name, block, bytes, sub-block, bits, code offset, min, scale bits, signed scales, min bits
    static const std::vector<ContainerSpec> kSpecs = {
        {"Q2_K", 256, 84, 16, 2, 0, true, 4, false, 4},    {"Q3_K", 256, 110, 16, 3, -4, false, 6, true, 0},
        {"Q4_0", 32, 18, 32, 4, -8, false, 0, false, 0},   {"Q4_K", 256, 144, 32, 4, 0, true, 6, false, 6},
        {"Q4_1", 32, 20, 32, 4, 0, true, 0, false, 0},     {"Q5_0", 32, 22, 32, 5, -16, false, 0, false, 0},
        {"Q5_K", 256, 176, 32, 5, 0, true, 6, false, 6},   {"Q5_1", 32, 24, 32, 5, 0, true, 0, false, 0},
        {"Q6_K", 256, 210, 16, 6, -32, false, 8, true, 0}, {"Q8_0", 32, 34, 32, 8, -128, false, 0, false, 0},
    };
    return kSpecs;
}

const ContainerSpec* findContainerSpec(std::string_view name)
{
    for (const ContainerSpec& s : containerSpecs()) {
        const std::string_view n(s.name);
        if (n.size() == name.size() && std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
                return std::toupper(static_cast<unsigned char>(a)) == std::toupper(static_cast<unsigned char>(b));
            }))
            return &s;
    }
    return nullptr;
}

const ContainerSpec* containerRowFallback(const ContainerSpec& spec)
{
    const std::string_view n(spec.name);
    if (n == "Q2_K" || n == "Q3_K") return findContainerSpec("Q4_0");
    if (n == "Q4_K") return findContainerSpec("Q5_0");
    if (n == "Q5_K") return findContainerSpec("Q5_1");
    if (n == "Q6_K") return findContainerSpec("Q8_0");
    return nullptr;
}

namespace {

double roundF16(double x) { return double(f16ToF32(f32ToF16(float(x)))); }
int nearest(double x) { return int(std::nearbyint(x)); }

// Weighted squared error of nearest rounding, with the decoded value rounded to float as ggml
// computes it. h null: uniform weights.
double gridLoss(const double* x, const double* h, int n, const GroupParams& p, int levels)
{
    double loss = 0.0;
    for (int j = 0; j < n; ++j) {
        const int q = quantizeCodeUniform(x[j], p, levels);
        const double e = x[j] - double(float(dequantizeCodeUniform(q, p)));
        loss += (h ? h[j] : 1.0) * e * e;
    }
    return loss;
}

// The signed element of largest magnitude (ggml's `max` of make_qx_quants).
double signedAbsMax(const double* x, int n)
{
    double best = 0.0;
    for (int j = 0; j < n; ++j)
        if (std::abs(x[j]) > std::abs(best)) best = x[j];
    return best;
}

// Symmetric grid a * (level + codeOffset): the scale that maps the largest magnitude onto the
// longer (negative-code) end, as ggml's Q4_0 / Q3_K / Q6_K.
double minMaxSymScale(const double* x, int n, int codeOffset) { return signedAbsMax(x, n) / double(codeOffset); }

// Coarse-to-fine search of a symmetric grid's scale (both signs), each candidate passed through
// `rep` (the stored precision), scored by the exact loss; `start` is always a candidate.
template <class Rep>
double searchSymScale(const double* x, const double* h, int n, const ContainerSpec& spec, double start, Rep rep,
                      const NeuqiOptions& o)
{
    const int levels = spec.levels();
    const double amax = std::abs(signedAbsMax(x, n));
    if (amax == 0.0) return 0.0;
    const double sTop = amax / double(levels / 2 - 1); // the short (positive) end still reaches amax
    double best = rep(start);
    double bestLoss = gridLoss(x, h, n, GroupParams{best, double(spec.codeOffset)}, levels);
    auto consider = [&](double s) {
        const double a = rep(s);
        if (a == 0.0 || a == best) return;
        const double l = gridLoss(x, h, n, GroupParams{a, double(spec.codeOffset)}, levels);
        if (l < bestLoss) {
            bestLoss = l;
            best = a;
        }
    };
    double coarse = best;
    for (int i = 1; i <= o.coarseSteps; ++i)
        for (double sign : {1.0, -1.0}) {
            const double before = bestLoss;
            consider(sign * neuqiCoarseScale(sTop, i, o));
            if (bestLoss < before) coarse = sign * neuqiCoarseScale(sTop, i, o);
        }
    const int fine = o.totalSteps / o.coarseSteps / 2;
    for (int j = -fine; j <= fine; ++j)
        if (j != 0) consider(coarse + sTop * double(j) / double(o.totalSteps));
    return best;
}

// Sorted values and their weights, for NeUQI's zero-point solver.
struct SortedBlock {
    std::vector<int> order;
    std::vector<double> xs, hs, u;
    void sort(const double* x, const double* h, int n)
    {
        order.resize(std::size_t(n));
        for (int j = 0; j < n; ++j)
            order[std::size_t(j)] = j;
        std::stable_sort(order.begin(), order.end(), [x](int a, int b) { return x[a] < x[b]; });
        xs.resize(std::size_t(n));
        hs.resize(std::size_t(n));
        u.resize(std::size_t(n));
        for (int j = 0; j < n; ++j) {
            xs[std::size_t(j)] = x[order[std::size_t(j)]];
            hs[std::size_t(j)] = h ? h[order[std::size_t(j)]] : 1.0;
        }
    }
};

struct Scratch {
    NeuqiScratch neuqi;
    SortedBlock sorted;
    std::vector<double> row, a0, b0;
    std::vector<int> sc, mn;
    std::vector<int> minMaxSc, minMaxMn; // the Min-Max guard's codes (kept, not reallocated)
};

// (scale, offset) of one sub-block with a min, before the container's rounding: grid a*level - b.
// Min-Max: the range (the K-quant min clamped to <= 0); NeUQI: its (s, z) when it scores better.
void idealAffine(const double* x, const double* h, int n, const ContainerSpec& spec, GridInit init,
                 const NeuqiOptions& o, Scratch& s, double& a, double& b)
{
    const int levels = spec.levels();
    double lo = *std::min_element(x, x + n), hi = *std::max_element(x, x + n);
    if (spec.isKQuant()) lo = std::min(lo, 0.0);
    a = (hi - lo) / double(levels - 1);
    b = -lo;
    if (init != GridInit::Neuqi || a == 0.0) return;
    const GroupParams p = fitGroupNeuqi(x, h, n, spec.bits, o, s.neuqi);
    const double bn = -p.scale * p.zero;
    if (spec.isKQuant() && bn < 0.0) return; // a K-quant min cannot lie above 0
    const GroupParams mm{a, 0.0, b}, ne{p.scale, 0.0, bn};
    if (gridLoss(x, h, n, ne, levels) < gridLoss(x, h, n, mm, levels)) {
        a = p.scale;
        b = bn;
    }
}

// Legacy block with an f16 scale and f16 min (Q4_1, Q5_1).
void fitLegacyAffine(const double* x, const double* h, int n, const ContainerSpec& spec, GridInit init,
                     const NeuqiOptions& o, Scratch& s, double& a, double& b)
{
    const int levels = spec.levels();
    const double lo = *std::min_element(x, x + n), hi = *std::max_element(x, x + n);
    a = roundF16((hi - lo) / double(levels - 1));
    b = -roundF16(lo);
    if (init != GridInit::Neuqi || a == 0.0) return;
    double ia = 0, ib = 0;
    idealAffine(x, h, n, spec, init, o, s, ia, ib);
    double bestLoss = gridLoss(x, h, n, GroupParams{a, 0.0, b}, levels);
    auto consider = [&](double ca, double cb) {
        if (!(ca > 0.0)) return;
        const double l = gridLoss(x, h, n, GroupParams{ca, 0.0, cb}, levels);
        if (l < bestLoss) {
            bestLoss = l;
            a = ca;
            b = cb;
        }
    };
    // NeUQI's pair rounded, then the best real zero for the rounded scale, rounded.
    const double ra = roundF16(ia);
    consider(ra, roundF16(ib));
    if (ra > 0.0) {
        s.sorted.sort(x, h, n);
        for (int j = 0; j < n; ++j)
            s.sorted.u[std::size_t(j)] = s.sorted.xs[std::size_t(j)] / ra;
        const ZeroPointSolution zp = solveZeroPointNeuqi(s.sorted.u.data(), s.sorted.hs.data(), n, levels, s.neuqi);
        consider(ra, -roundF16(ra * zp.zero));
    }
}

// One legacy block: scale (and min) per 32 elements.
void fitLegacyBlock(const double* x, const double* h, const ContainerSpec& spec, GridInit init, const NeuqiOptions& o,
                    Scratch& s, double& a, double& b)
{
    const int n = spec.blockSize;
    if (spec.hasMin) return fitLegacyAffine(x, h, n, spec, init, o, s, a, b);
    b = 0.0;
    a = roundF16(minMaxSymScale(x, n, spec.codeOffset));
    if (init == GridInit::Neuqi) a = searchSymScale(x, h, n, spec, a, roundF16, o);
}

// Sub-block codes for the ideal values v_j under super-scale d: nearest in [lo, hi].
int codeFor(double v, double d, int lo, int hi) { return d == 0.0 ? 0 : std::clamp(nearest(v / d), lo, hi); }

// Total loss of a K-quant super-block for super-scales (d, dmin) with sub-block codes chosen by
// nearest rounding of the ideal (a0, b0), then (NeUQI) improved one sub-block at a time over the
// neighbouring codes. Writes the chosen codes into s.sc / s.mn and returns the loss.
double kQuantCodes(const double* x, const double* h, const ContainerSpec& spec, double d, double dmin, bool refine,
                   Scratch& s)
{
    const int subs = spec.blockSize / spec.subBlock, n = spec.subBlock, levels = spec.levels();
    const int scHi = spec.scaleSigned ? (1 << (spec.scaleBits - 1)) - 1 : (1 << spec.scaleBits) - 1;
    const int scLo = spec.scaleSigned ? -(1 << (spec.scaleBits - 1)) : 0;
    const int mHi = spec.hasMin ? (1 << spec.minBits) - 1 : 0;
    double total = 0.0;
    for (int j = 0; j < subs; ++j) {
        const double* xj = x + j * n;
        const double* hj = h ? h + j * n : nullptr;
        int sc = codeFor(s.a0[std::size_t(j)], d, scLo, scHi);
        int mn = spec.hasMin ? codeFor(s.b0[std::size_t(j)], dmin, 0, mHi) : 0;
        auto params = [&](int c, int m) {
            return GroupParams{double(float(d * double(c))), double(spec.codeOffset),
                               spec.hasMin ? double(float(dmin * double(m))) : 0.0};
        };
        double best = gridLoss(xj, hj, n, params(sc, mn), levels);
        if (refine) {
            const int c0 = sc, m0 = mn;
            for (int dc = -1; dc <= 1; ++dc)
                for (int dm = spec.hasMin ? -1 : 0; dm <= (spec.hasMin ? 1 : 0); ++dm) {
                    const int c = c0 + dc, m = m0 + dm;
                    if ((dc == 0 && dm == 0) || c < scLo || c > scHi || m < 0 || m > mHi) continue;
                    const double l = gridLoss(xj, hj, n, params(c, m), levels);
                    if (l < best) {
                        best = l;
                        sc = c;
                        mn = m;
                    }
                }
        }
        s.sc[std::size_t(j)] = sc;
        s.mn[std::size_t(j)] = mn;
        total += best;
    }
    return total;
}

// One K-quant super-block: ideal sub-block parameters, then super-scales and integer codes.
// Returns the block's weighted loss; the chosen codes are in s.sc / s.mn.
double fitKQuantBlock(const double* x, const double* h, const ContainerSpec& spec, GridInit init, const NeuqiOptions& o,
                      Scratch& s, double& d, double& dmin)
{
    const int subs = spec.blockSize / spec.subBlock, n = spec.subBlock;
    s.a0.resize(std::size_t(subs));
    s.b0.resize(std::size_t(subs));
    s.sc.resize(std::size_t(subs));
    s.mn.resize(std::size_t(subs));
    for (int j = 0; j < subs; ++j) {
        const double* xj = x + j * n;
        const double* hj = h ? h + j * n : nullptr;
        double a = 0, b = 0;
        if (spec.hasMin) {
            idealAffine(xj, hj, n, spec, init, o, s, a, b);
        } else {
            a = minMaxSymScale(xj, n, spec.codeOffset);
            if (init == GridInit::Neuqi) a = searchSymScale(xj, hj, n, spec, a, [](double v) { return v; }, o);
        }
        s.a0[std::size_t(j)] = a;
        s.b0[std::size_t(j)] = b;
    }
    // Super-scales from the extremes (the signed ones map the largest magnitude onto the
    // negative end of the code range, as ggml's Q3_K/Q6_K).
    const int scTop = spec.scaleSigned ? -(1 << (spec.scaleBits - 1)) : (1 << spec.scaleBits) - 1;
    const double aRef =
        spec.scaleSigned ? signedAbsMax(s.a0.data(), subs) : *std::max_element(s.a0.begin(), s.a0.end());
    d = roundF16(aRef / double(scTop));
    dmin = 0.0;
    if (spec.hasMin) dmin = roundF16(*std::max_element(s.b0.begin(), s.b0.end()) / double((1 << spec.minBits) - 1));
    if (init != GridInit::Neuqi || d == 0.0) return kQuantCodes(x, h, spec, d, dmin, false, s);
    // NeUQI: a few super-scales around the Min-Max ones, scored with nearest sub-block codes;
    // then the neighbouring sub-block codes of the best pair.
    double best = kQuantCodes(x, h, spec, d, dmin, false, s);
    const double d0 = d, dmin0 = dmin;
    for (int k = -2; k <= 2; ++k)
        for (int km = spec.hasMin ? -1 : 0; km <= (spec.hasMin ? 1 : 0); ++km) {
            if (k == 0 && km == 0) continue;
            const double cd = roundF16(d0 * (1.0 + double(k) / 32.0));
            const double cm = roundF16(dmin0 * (1.0 + double(km) / 16.0));
            const double l = kQuantCodes(x, h, spec, cd, cm, false, s);
            if (l < best) {
                best = l;
                d = cd;
                dmin = cm;
            }
        }
    return kQuantCodes(x, h, spec, d, dmin, true, s);
}

// NeUQI's block, guarded by Min-Max's: the exact loss decides, so NeUQI is never worse than
// Min-Max on its own proxy whatever rounding a processor does.
void fitKQuantBlockGuarded(const double* x, const double* h, const ContainerSpec& spec, GridInit init,
                           const NeuqiOptions& o, Scratch& s, double& d, double& dmin)
{
    if (init != GridInit::Neuqi) {
        fitKQuantBlock(x, h, spec, init, o, s, d, dmin);
        return;
    }
    double dm = 0, dmm = 0;
    const double minMax = fitKQuantBlock(x, h, spec, GridInit::MinMax, o, s, dm, dmm);
    s.minMaxSc.swap(s.sc); // buffers trade places: no allocation per super-block
    s.minMaxMn.swap(s.mn);
    s.sc.resize(s.minMaxSc.size());
    s.mn.resize(s.minMaxMn.size());
    const double neuqi = fitKQuantBlock(x, h, spec, GridInit::Neuqi, o, s, d, dmin);
    if (minMax < neuqi) {
        d = dm;
        dmin = dmm;
        s.sc.swap(s.minMaxSc);
        s.mn.swap(s.minMaxMn);
    }
}

} // namespace

Result<QuantizedRows> fitContainerGrid(const ContainerSpec& spec, Eigen::Ref<const MatrixXfR> w,
                                       const Eigen::VectorXd* hDiag, GridInit init, const NeuqiOptions& neuqi,
                                       RunContext* ctx, const ParallelFor* par)
{
    const Eigen::Index rows = w.rows(), cols = w.cols();
    if (rows <= 0 || cols <= 0) return makeError(ErrorCode::Shape, "weight matrix is empty");
    if (cols % spec.blockSize != 0)
        return makeError(ErrorCode::Shape, std::string("row length ") + std::to_string(cols) +
                                               " is not a multiple of the " + spec.name + " block size " +
                                               std::to_string(spec.blockSize));
    if (hDiag && hDiag->size() != cols)
        return makeError(ErrorCode::Shape, "Hessian diagonal does not match the weight width");
    for (Eigen::Index r = 0; r < w.rows(); ++r) // by rows: w may have an outer stride
        if (countNonFinite(w.row(r).data(), std::size_t(cols)) != 0)
            return makeError(ErrorCode::NumericalError, "NaN/Inf weights: no container grid holds them");
    const int blocks = int(cols / spec.blockSize), groups = int(cols / spec.subBlock);
    const int subs = spec.blockSize / spec.subBlock;
    QuantizedRows out;
    out.bits = spec.bits;
    out.container = spec.name;
    out.scales.resize(rows, groups);
    out.zeros.setConstant(rows, groups, double(spec.codeOffset));
    if (spec.hasMin) out.offsets.setZero(rows, groups);
    if (spec.isKQuant()) out.superScales.setZero(rows, 2 * blocks);
    out.groupIndex = groupIndexContiguous(spec.subBlock, int(cols));

    auto fitRow = [&](Eigen::Index r, Scratch& s) {
        s.row.resize(std::size_t(cols));
        for (Eigen::Index c = 0; c < cols; ++c)
            s.row[std::size_t(c)] = double(w(r, c));
        for (int blk = 0; blk < blocks; ++blk) {
            const double* x = s.row.data() + std::ptrdiff_t(blk) * spec.blockSize;
            const double* h = hDiag ? hDiag->data() + std::ptrdiff_t(blk) * spec.blockSize : nullptr;
            if (!spec.isKQuant()) {
                double a = 0, b = 0;
                fitLegacyBlock(x, h, spec, init, neuqi, s, a, b);
                out.scales(r, blk) = a;
                if (spec.hasMin) out.offsets(r, blk) = b;
                continue;
            }
            double d = 0, dmin = 0;
            fitKQuantBlockGuarded(x, h, spec, init, neuqi, s, d, dmin);
            out.superScales(r, 2 * blk) = d;
            out.superScales(r, 2 * blk + 1) = dmin;
            for (int j = 0; j < subs; ++j) {
                const int g = blk * subs + j;
                out.scales(r, g) = double(float(d * double(s.sc[std::size_t(j)])));
                if (spec.hasMin) out.offsets(r, g) = double(float(dmin * double(s.mn[std::size_t(j)])));
            }
        }
    };

    const int workers = par && par->run ? std::max(1, par->workers) : 1;
    std::vector<Scratch> scratch(static_cast<std::size_t>(workers));
    const Eigen::Index chunk = std::max<Eigen::Index>(1, 65536 / cols);
    for (Eigen::Index r0 = 0; r0 < rows; r0 += chunk) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError(std::string("fit ") + spec.name);
        const Eigen::Index r1 = std::min(rows, r0 + chunk);
        if (workers > 1)
            par->run(std::int64_t(r1 - r0), [&](std::int64_t item, int worker) {
                fitRow(r0 + Eigen::Index(item), scratch[std::size_t(worker)]);
            });
        else
            for (Eigen::Index r = r0; r < r1; ++r)
                fitRow(r, scratch[0]);
    }
    return out;
}

Result<QuantizedRows> quantizeRowsContainer(const ContainerSpec& spec, Eigen::Ref<const MatrixXfR> w,
                                            const Eigen::VectorXd* hDiag, GridInit init, const NeuqiOptions& neuqi,
                                            RunContext* ctx, const ParallelFor* par)
{
    QB_TRY(fit, fitContainerGrid(spec, w, hDiag, init, neuqi, ctx, par));
    QB_TRY(q, quantizeRowsUniform(w, spec.bits, fit->scales, fit->zeros, fit->groupIndex, fit->offsets));
    q->container = fit->container;
    q->superScales = std::move(fit->superScales);
    if (ctx) ctx->advance(w.rows());
    return q;
}

GptqOptions containerGptqOptions(const ContainerSpec& spec, const GptqOptions& base, const QuantizedRows& fit)
{
    GptqOptions o = base;
    o.grid = GridSpec{spec.bits, spec.subBlock, false};
    o.groups = GroupMode::Static;
    o.fixedGrid = &fit;
    return o;
}

} // namespace qb::quant
