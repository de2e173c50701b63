#include "quant/neuqi.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace qb::quant {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int kMaxMergeRuns = 16; // levels - 1 up to this (4 bits): merge the breakpoint runs, else sort

// Exact loss sum a_j (u_j - z - clamp(round(u_j - z)))^2.
double exactLoss(const double* u, const double* a, int n, int levels, double z)
{
    const double top = double(levels - 1);
    double f = 0.0;
    for (int j = 0; j < n; ++j) {
        const double q = std::min(std::max(std::nearbyint(u[j] - z), 0.0), top);
        const double e = u[j] - z - q;
        f += a[j] * e * e;
    }
    return f;
}
} // namespace

void NeuqiScratch::reserve(int n)
{
    const auto sz = std::size_t(std::max(n, 0));
    if (order.size() < sz) {
        order.resize(sz);
        ws.resize(sz);
        as.resize(sz);
        u.resize(sz);
        c.resize(sz);
    }
    if (bps.capacity() < 3 * sz) bps.reserve(3 * sz);
}

double surrogateZeroPointNeuqi(const double* u, const double* a, int n, int levels)
{
    // Each term: top-clipped a(c - z)^2 with c = u - (L-1) for z < u - L + 1/2; a/4 inside;
    // bottom-clipped a(u - z)^2 for z > u + 1/2. Both breakpoint families are sorted because u is.
    const double top = double(levels - 1);
    double A = 0, B = 0, C = 0, K = 0;
    int clipped = n;
    for (int j = 0; j < n; ++j) {
        const double c = u[j] - top;
        A += a[j];
        B += a[j] * c;
        C += a[j] * c * c;
    }
    double best = kInf, bestZ = 0.0, prev = -kInf;
    auto visit = [&](double lo, double hi) {
        double z, val;
        if (clipped > 0 && A > 0) {
            z = std::clamp(B / A, lo, hi);
            val = (A * z - 2.0 * B) * z + C + K;
        } else {
            z = std::isfinite(lo) && std::isfinite(hi) ? 0.5 * (lo + hi) : (std::isfinite(lo) ? lo : hi);
            val = C + K + (A * z - 2.0 * B) * z;
        }
        if (val < best) {
            best = val;
            bestZ = z;
        }
    };
    int i1 = 0, i2 = 0; // next top->mid (u - L + 1/2) and mid->bottom (u + 1/2) events
    while (i1 < n || i2 < n) {
        const double z1 = i1 < n ? u[i1] - double(levels) + 0.5 : kInf;
        const double z2 = i2 < n ? u[i2] + 0.5 : kInf;
        const double ze = std::min(z1, z2);
        visit(prev, ze);
        prev = ze;
        if (z1 <= z2) {
            const double c = u[i1] - top;
            A -= a[i1];
            B -= a[i1] * c;
            C -= a[i1] * c * c;
            K += 0.25 * a[i1];
            if (--clipped == 0) A = B = C = 0.0; // no drift when nothing is clipped
            ++i1;
        } else {
            const double c = u[i2];
            A += a[i2];
            B += a[i2] * c;
            C += a[i2] * c * c;
            K -= 0.25 * a[i2];
            ++clipped;
            ++i2;
        }
    }
    visit(prev, kInf);
    return bestZ;
}

ZeroPointSolution solveZeroPointNeuqi(const double* u, const double* a, int n, int levels, NeuqiScratch& s)
{
    // Only c and bps are ours: u may point into s.u, which must not move.
    if (s.c.size() < std::size_t(n)) s.c.resize(std::size_t(n));
    if (s.bps.capacity() < 3 * std::size_t(n)) s.bps.reserve(3 * std::size_t(n));
    const double zHat = surrogateZeroPointNeuqi(u, a, n, levels);
    const double zl = zHat - 1.0, zr = zHat + 1.0;
    const double top = double(levels - 1);
    double A = 0, mu = 0, s2 = 0;
    s.bps.clear();
    // Breakpoint runs: for a fixed m the valid j form one contiguous range (mlo_j and mhi_j are
    // non-decreasing in j because u is sorted) whose z = u_j - m - 1/2 ascend with j. With few
    // levels the sorted sweep order is a K-way merge of these L-1 runs, O(n K) instead of a sort.
    const int runs = levels - 1;
    const bool merge = runs <= kMaxMergeRuns;
    int runLo[kMaxMergeRuns], runHi[kMaxMergeRuns];
    if (merge)
        for (int m = 0; m < runs; ++m) {
            runLo[m] = n;
            runHi[m] = 0;
        }
    for (int j = 0; j < n; ++j) {
        // Codes on the open segment just right of zl: round half down, then clamp.
        const double t = std::ceil(u[j] - zl - 0.5);
        const double q = std::min(std::max(t, 0.0), top);
        const double c = u[j] - q;
        s.c[std::size_t(j)] = c;
        A += a[j];
        mu += a[j] * c;
        s2 += a[j] * c * c;
        // Crossing z = u - m - 1/2 lowers the code from m+1 to m; only m in [0, L-2] changes it.
        const double mlo = std::max(0.0, std::ceil(u[j] - zr - 0.5));
        const double mhi = std::min(top - 1.0, t - 1.0);
        if (merge) {
            if (mlo <= mhi)
                for (int m = int(mlo); double(m) <= mhi; ++m) {
                    runLo[m] = std::min(runLo[m], j);
                    runHi[m] = j + 1;
                }
        } else {
            for (double m = mhi; m >= mlo; m -= 1.0)
                s.bps.push_back({u[j] - m - 0.5, j});
        }
    }
    if (merge) {
        // Active runs kept compact; ties in z go to the smaller m.
        int act[kMaxMergeRuns], pos[kMaxMergeRuns], na = 0;
        double head[kMaxMergeRuns];
        for (int m = 0; m < runs; ++m)
            if (runLo[m] < runHi[m]) {
                act[na] = m;
                pos[na] = runLo[m];
                head[na] = u[runLo[m]] - double(m) - 0.5;
                ++na;
            }
        while (na > 0) {
            int b = 0;
            for (int r = 1; r < na; ++r)
                if (head[r] < head[b]) b = r;
            const int j = pos[b];
            s.bps.push_back({head[b], j});
            if (++pos[b] < runHi[act[b]]) {
                head[b] = u[pos[b]] - double(act[b]) - 0.5;
            } else {
                --na;
                for (int r = b; r < na; ++r) {
                    act[r] = act[r + 1];
                    pos[r] = pos[r + 1];
                    head[r] = head[r + 1];
                }
            }
        }
    } else {
        std::sort(s.bps.begin(), s.bps.end(),
                  [](const NeuqiScratch::Breakpoint& x, const NeuqiScratch::Breakpoint& y) { return x.z < y.z; });
    }
    double bestZ = zl, best = kInf, prev = zl;
    auto visit = [&](double lo, double hi) {
        const double z = A > 0 ? std::clamp(mu / A, lo, hi) : lo;
        const double val = (A * z - 2.0 * mu) * z + s2;
        if (val < best) {
            best = val;
            bestZ = z;
        }
    };
    for (const auto& bp : s.bps) {
        visit(prev, bp.z);
        prev = bp.z;
        const auto j = std::size_t(bp.j);
        s2 += a[bp.j] * (2.0 * s.c[j] + 1.0);
        mu += a[bp.j];
        s.c[j] += 1.0;
    }
    visit(prev, zr);
    return ZeroPointSolution{bestZ, exactLoss(u, a, n, levels, bestZ)};
}

double neuqiMinMaxScale(const double* w, int n, int levels)
{
    const auto [lo, hi] = std::minmax_element(w, w + n);
    double s = (*hi - *lo) / double(levels - 1);
    if (s < 1e-9) s = 1.0;
    return s;
}

GroupParams fitGroupNeuqi(const double* w, const double* h, int n, int bits, const NeuqiOptions& opts, NeuqiScratch& s,
                          double* loss)
{
    const int levels = gridLevels(bits);
    s.reserve(n);
    std::iota(s.order.begin(), s.order.begin() + n, 0);
    std::stable_sort(s.order.begin(), s.order.begin() + n, [w](int x, int y) { return w[x] < w[y]; });
    double hs = 0.0;
    if (h)
        for (int j = 0; j < n; ++j)
            hs += h[j];
    const bool uniform = !h || !(hs > 0.0);
    for (int k = 0; k < n; ++k) {
        const int j = s.order[std::size_t(k)];
        s.ws[std::size_t(k)] = w[j];
        s.as[std::size_t(k)] = uniform ? 1.0 / double(n) : h[j] / hs;
    }
    const double sMm = neuqiMinMaxScale(w, n, levels);
    double bestScore = kInf;
    GroupParams best{sMm, 0.0};
    auto tryScale = [&](double sc) {
        if (!(sc > 0.0)) return;
        for (int k = 0; k < n; ++k)
            s.u[std::size_t(k)] = s.ws[std::size_t(k)] / sc;
        const ZeroPointSolution zp = solveZeroPointNeuqi(s.u.data(), s.as.data(), n, levels, s);
        const double score = zp.loss * sc * sc;
        if (score < bestScore) {
            bestScore = score;
            best = GroupParams{sc, zp.zero};
        }
    };
    for (int i = 1; i <= opts.coarseSteps; ++i)
        tryScale(neuqiCoarseScale(sMm, i, opts));
    const double sCoarse = best.scale;
    const int half = opts.totalSteps / opts.coarseSteps / 2;
    for (int j = -half; j <= half; ++j)
        if (j != 0) tryScale(neuqiFineScale(sCoarse, sMm, j, opts));

    double bestLoss = groupLossUniform(w, h, n, best, levels);
    if (opts.minMaxGuard) {
        const GroupParams cands[2] = {fitGroupMinMaxPlain(w, n, bits), fitGroupMinMaxGptq(w, n, bits, false)};
        for (const GroupParams& c : cands) {
            const double l = groupLossUniform(w, h, n, c, levels);
            if (l < bestLoss) {
                bestLoss = l;
                best = c;
            }
        }
    }
    if (loss) *loss = bestLoss;
    return best;
}

} // namespace qb::quant
