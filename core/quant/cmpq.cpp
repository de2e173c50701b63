#include "quant/cmpq.h"

#include "base/dtype.h"
#include "quant/float_sort.h"
#include "quant/hessian.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>

namespace qb::quant {

namespace {

constexpr double kCentroidBits = kCmpqKeptBits;

int ceilLog2(std::int64_t n)
{
    int b = 0;
    while ((std::int64_t(1) << b) < n)
        ++b;
    return b;
}

double toF16(double v) { return double(f16ToF32(f32ToF16(float(v)))); }

double importanceOf(double score, CmpqScore s) { return s == CmpqScore::MeanSquare ? score : score * score; }

int tagBits(std::size_t levels) { return levels > 1 ? ceilLog2(std::int64_t(levels)) : 0; }

// Fits the codebook of one channel: values (already without outliers) sorted with their weights;
// returns centroids ascending, F16-rounded, size 2^bits (duplicates allowed).
struct ChannelScratch {
    std::vector<double> vals;
    FloatSortScratch sort;
    std::vector<float> column;       // the channel's values without its outliers
    std::vector<std::uint8_t> codes; // a column's codes (the trial quantization)
    std::vector<double> errors;      // its weighted squared errors
    KmeansScratch km;
    KmeansResult res;
};

// The codebook of a channel from its n values sorted ascending (as doubles). Every element of an
// input channel carries its channel's weight (uniform or activation energy: one value per channel),
// so the values are sorted as they are, without an index sort.
void fitSortedCodebook(const double* vals, std::size_t n, double weight, int bits, const CmpqOptions& opt,
                       ChannelScratch& s, float* centroidsOut, const double* warm = nullptr)
{
    const int k = 1 << bits;
    std::vector<double>& c = s.res.centroids;
    if (n == 0) {
        c.assign(std::size_t(k), 0.0);
    } else if (opt.uniformLevels) {
        c.resize(std::size_t(k));
        const double lo = vals[0], hi = vals[n - 1];
        for (int i = 0; i < k; ++i)
            c[std::size_t(i)] = k == 1 ? 0.5 * (lo + hi) : lo + (hi - lo) * double(i) / double(k - 1);
    } else {
        kmeans1dEqualWeights(vals, std::max(weight, 1e-30), n, k, opt.kmeansIters, opt.kmeansTol, s.km, s.res, warm);
    }
    for (int i = 0; i < k; ++i)
        centroidsOut[i] = float(toF16(c[std::size_t(i)]));
    std::sort(centroidsOut, centroidsOut + k);
}

// Float midpoints between neighbouring centroids of an ascending codebook, each the largest float
// not above the exact midpoint (cb[c] + cb[c+1]) / 2: for every float v, v > mid[c] exactly when v
// lies above the midpoint in double, so counting the midpoints below v gives the nearest centroid
// (ties to the lower one).
void floatMidpoints(const float* cb, int k, float* mid)
{
    for (int c = 0; c + 1 < k; ++c) {
        const double exact = 0.5 * (double(cb[c]) + double(cb[c + 1]));
        float f = float(exact);
        if (double(f) > exact) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
        mid[c] = f;
    }
}

// The nearest centroids of n floats, as counts of the midpoints below each (vectorises over n).
void nearestCodesByMidpoints(const float* v, std::size_t n, const float* mid, int k, std::uint8_t* codes)
{
    std::fill(codes, codes + n, std::uint8_t(0));
    for (int c = 0; c + 1 < k; ++c) {
        const float m = mid[c];
        for (std::size_t r = 0; r < n; ++r)
            codes[r] = std::uint8_t(codes[r] + (v[r] > m ? 1 : 0));
    }
}

// Below this many weights per call the parallel-for's start-up costs more than the k-means.
constexpr std::int64_t kParallelMinWeights = std::int64_t(1) << 12;

template <class Body>
void forChannels(const ParallelFor* par, std::int64_t count, std::int64_t rows, const Body& body)
{
    if (par && par->run && par->workers > 1 && count * rows >= kParallelMinWeights) par->run(count, body);
    else
        for (std::int64_t i = 0; i < count; ++i)
            body(i, 0);
}

} // namespace

void cmpqNearestCodes(const float* values, std::size_t n, const float* codebook, int k, std::uint8_t* codes)
{
    float mid[1 << kMaxBits];
    floatMidpoints(codebook, k, mid);
    nearestCodesByMidpoints(values, n, mid, k, codes);
}

std::string_view cmpqScoreId(CmpqScore s)
{
    switch (s) {
    case CmpqScore::MeanAbs: return "mean_abs";
    case CmpqScore::L2: return "l2";
    case CmpqScore::MaxAbs: return "max_abs";
    case CmpqScore::MeanSquare: return "mean_sq";
    }
    return "mean_abs";
}

bool cmpqScoreFromId(std::string_view id, CmpqScore& out)
{
    for (CmpqScore s : {CmpqScore::MeanAbs, CmpqScore::L2, CmpqScore::MaxAbs, CmpqScore::MeanSquare})
        if (cmpqScoreId(s) == id) {
            out = s;
            return true;
        }
    return false;
}

GptqOptions cmpqFeedbackOptions(const CmpqOptions& o)
{
    GptqOptions g;
    g.actOrder = false;
    g.damping = o.damping;
    g.maxDampingRetries = o.maxDampingRetries;
    return g;
}

Status validateCmpqOptions(const CmpqOptions& o)
{
    if (o.levels.empty()) return makeError(ErrorCode::InvalidArgument, "CMPQ: the level set is empty");
    for (std::size_t i = 0; i < o.levels.size(); ++i) {
        if (o.levels[i] < 1 || o.levels[i] > kMaxBits)
            return makeError(ErrorCode::InvalidArgument,
                             "CMPQ: level " + std::to_string(o.levels[i]) + " out of range [1, 8]");
        if (i && o.levels[i] <= o.levels[i - 1])
            return makeError(ErrorCode::InvalidArgument, "CMPQ: levels must be strictly ascending");
    }
    if (!(o.bits > 0.0 && o.bits <= 32.0))
        return makeError(ErrorCode::InvalidArgument, "CMPQ: target bits must be in (0, 32]");
    if (!(o.actOutliers >= 0.0 && o.actOutliers < 0.5) || !(o.quantOutliers >= 0.0 && o.quantOutliers < 0.5))
        return makeError(ErrorCode::InvalidArgument, "CMPQ: outlier budgets must be fractions in [0, 0.5)");
    if (o.kmeansIters < 1) return makeError(ErrorCode::InvalidArgument, "CMPQ: k-means needs at least 1 iteration");
    if (o.blockSize < 1) return makeError(ErrorCode::InvalidArgument, "CMPQ: block size must be >= 1");
    return {};
}

// ---------------------------------------------------------------------------------------------
namespace {
// Which sums a score reads.
constexpr unsigned kSumAbs = 1, kSumSq = 2, kMaxAbs = 4;
unsigned sumsOf(CmpqScore s)
{
    switch (s) {
    case CmpqScore::MeanAbs: return kSumAbs;
    case CmpqScore::L2:
    case CmpqScore::MeanSquare: return kSumSq;
    case CmpqScore::MaxAbs: return kMaxAbs;
    }
    return kSumAbs;
}

// Adds |x|, x^2 and max |x| per channel (the sums in `Sums`) over the rows of x, columns [c0, c1).
// Sixteen rows at a time are summed in float (a pairwise tree: relative rounding below 4 * 2^-24
// of the sixteen values' sum) and the partial sum added into the double sums, so each double sum
// takes one add per sixteen rows; rows left over are added one by one. A channel's sums do not
// depend on how the columns are split into slices (the thread count); the maximum is exact.
template <unsigned Sums>
void addChannelSums(const Eigen::Ref<const MatrixXfR>& x, Eigen::Index c0, Eigen::Index c1, double* __restrict sumAbs,
                    double* __restrict sumSq, double* __restrict maxAbs)
{
    constexpr int kRows = 16;
    const Eigen::Index rows = x.rows(), ld = x.outerStride();
    Eigen::Index r = 0;
    for (; r + kRows <= rows; r += kRows) {
        const float* __restrict p = x.row(r).data();
        for (Eigen::Index c = c0; c < c1; ++c) {
            float v[kRows];
            for (int i = 0; i < kRows; ++i)
                v[i] = std::fabs(p[i * ld + c]);
            if constexpr ((Sums & kSumAbs) != 0) {
                float t[kRows / 2];
                for (int i = 0; i < kRows / 2; ++i)
                    t[i] = v[2 * i] + v[2 * i + 1];
                sumAbs[c] += double(((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])));
            }
            if constexpr ((Sums & kSumSq) != 0) {
                float t[kRows / 2];
                for (int i = 0; i < kRows / 2; ++i)
                    t[i] = v[2 * i] * v[2 * i] + v[2 * i + 1] * v[2 * i + 1];
                sumSq[c] += double(((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])));
            }
            if constexpr ((Sums & kMaxAbs) != 0) {
                float m = v[0];
                for (int i = 1; i < kRows; ++i)
                    m = std::max(m, v[i]);
                maxAbs[c] = maxAbs[c] < double(m) ? double(m) : maxAbs[c];
            }
        }
    }
    for (; r < rows; ++r) {
        const float* __restrict row = x.row(r).data();
        for (Eigen::Index c = c0; c < c1; ++c) {
            const double v = std::fabs(double(row[c]));
            if constexpr ((Sums & kSumAbs) != 0) sumAbs[c] += v;
            if constexpr ((Sums & kSumSq) != 0) sumSq[c] += v * v;
            if constexpr ((Sums & kMaxAbs) != 0) maxAbs[c] = maxAbs[c] < v ? v : maxAbs[c];
        }
    }
}
} // namespace

CmpqChannelStats::CmpqChannelStats(int cols) : CmpqChannelStats(cols, kAllCmpqScores) {}

CmpqChannelStats::CmpqChannelStats(int cols, std::span<const CmpqScore> scores) : m_cols(cols)
{
    for (CmpqScore s : scores)
        m_sums |= sumsOf(s);
    if (m_sums & kSumAbs) m_sumAbs = Eigen::VectorXd::Zero(cols);
    if (m_sums & kSumSq) m_sumSq = Eigen::VectorXd::Zero(cols);
    if (m_sums & kMaxAbs) m_maxAbs = Eigen::VectorXd::Zero(cols);
}

bool CmpqChannelStats::has(CmpqScore s) const { return (m_sums & sumsOf(s)) != 0; }

Status CmpqChannelStats::add(Eigen::Ref<const MatrixXfR> x)
{
    if (x.cols() != m_cols)
        return makeError(ErrorCode::Shape, "CMPQ statistics: batch has " + std::to_string(x.cols()) +
                                               " channels, expected " + std::to_string(m_cols));
    // Only the sums of the scores asked for (one instead of three for the default mean |x|), through
    // restrict pointers so the column loop vectorises. Column slices in parallel (OpenMP's team, as
    // Eigen's GEMM) from 2^16 values (the quantize job's blocks of 512 rows of a 128-wide input,
    // handed over while they are in cache by HessianAccumulator::addBatch's callback). Each
    // channel's sums run over the rows in the same groups however the columns are split, so the
    // result does not depend on the thread count.
    using Kernel = void (*)(const Eigen::Ref<const MatrixXfR>&, Eigen::Index, Eigen::Index, double*, double*, double*);
    static constexpr Kernel kKernels[8] = {addChannelSums<0>, addChannelSums<1>, addChannelSums<2>, addChannelSums<3>,
                                           addChannelSums<4>, addChannelSums<5>, addChannelSums<6>, addChannelSums<7>};
    const Kernel kernel = kKernels[m_sums & 7u];
    const Eigen::Index cols = x.cols(), rows = x.rows();
    constexpr Eigen::Index kSlice = 64;
    const Eigen::Index slices = (cols + kSlice - 1) / kSlice;
#pragma omp parallel for schedule(static) if (slices > 1 && rows * cols >= (Eigen::Index(1) << 16))
    for (Eigen::Index s = 0; s < slices; ++s)
        kernel(x, s * kSlice, std::min(cols, (s + 1) * kSlice), m_sumAbs.data(), m_sumSq.data(), m_maxAbs.data());
    m_tokens += x.rows();
    return {};
}

Eigen::VectorXd CmpqChannelStats::score(CmpqScore s) const
{
    if (!has(s)) return {}; // not collected: quantizeRowsCmpq refuses the empty score vector
    const double n = double(std::max<std::int64_t>(m_tokens, 1));
    switch (s) {
    case CmpqScore::MeanAbs: return m_sumAbs / n;
    case CmpqScore::L2: return m_sumSq.cwiseSqrt();
    case CmpqScore::MaxAbs: return m_maxAbs;
    case CmpqScore::MeanSquare: return m_sumSq / n;
    }
    return m_sumAbs / n;
}

// ---------------------------------------------------------------------------------------------
CmpqBits cmpqBitsOf(const std::vector<int>& channelBits, std::size_t kept, std::int64_t sparse, std::int64_t rows,
                    std::size_t levelCount)
{
    CmpqBits b;
    const std::int64_t cols = std::int64_t(channelBits.size());
    for (int cb : channelBits)
        if (cb > 0) {
            b.codes += double(rows) * cb;
            b.codebooks += kCentroidBits * double(1 << cb);
            b.tags += tagBits(levelCount);
        }
    b.keptChannels = double(kept) * (double(rows) * kCmpqKeptBits + ceilLog2(cols));
    b.sparseOutliers = double(sparse) * (kCmpqKeptBits + ceilLog2(rows * cols));
    return b;
}

namespace {
int keptChannelCount(int n, double frac) { return frac > 0.0 ? std::min(n - 1, int(std::ceil(frac * n - 1e-9))) : 0; }
} // namespace

double cmpqMinimumBitsPerWeight(std::int64_t rows, std::int64_t cols, const CmpqOptions& opt)
{
    if (rows <= 0 || cols <= 0 || opt.levels.empty()) return 0.0;
    const int kept = keptChannelCount(int(cols), opt.actOutliers);
    std::vector<int> bits(std::size_t(cols), opt.levels.front());
    std::fill(bits.begin(), bits.begin() + kept, 0);
    const std::int64_t sparse = std::int64_t(std::floor(opt.quantOutliers * double(rows) * double(cols)));
    return cmpqBitsOf(bits, std::size_t(kept), sparse, rows, opt.levels.size()).total() / (double(rows) * double(cols));
}

Result<CmpqAllocation> allocateCmpqBits(const Eigen::VectorXd& scores, std::int64_t rows, const CmpqOptions& opt)
{
    QB_TRY_STATUS(validateCmpqOptions(opt));
    const int n = int(scores.size());
    if (n <= 0 || rows <= 0) return makeError(ErrorCode::Shape, "CMPQ: empty tensor");
    if (!scores.allFinite()) return makeError(ErrorCode::NumericalError, "CMPQ: channel scores are not finite");
    std::vector<int> rank(static_cast<std::size_t>(n));
    std::iota(rank.begin(), rank.end(), 0);
    std::stable_sort(rank.begin(), rank.end(), [&](int a, int b) { return scores[a] > scores[b]; });

    CmpqAllocation a;
    a.budget = opt.bits * double(rows) * double(n);
    const int kept = keptChannelCount(n, opt.actOutliers);
    a.keptChannels.assign(rank.begin(), rank.begin() + kept);
    std::sort(a.keptChannels.begin(), a.keptChannels.end());
    a.sparseOutliers = std::int64_t(std::floor(opt.quantOutliers * double(rows) * double(n)));
    a.channelBits.assign(std::size_t(n), opt.levels.front());
    for (int c : a.keptChannels)
        a.channelBits[std::size_t(c)] = 0;
    a.bits = cmpqBitsOf(a.channelBits, a.keptChannels.size(), a.sparseOutliers, rows, opt.levels.size());
    if (a.bits.total() > a.budget + 1e-6)
        return makeError(ErrorCode::InvalidArgument,
                         "CMPQ: " + std::to_string(opt.bits) + " bits/weight is below this tensor's minimum of " +
                             std::to_string(a.bits.total() / (double(rows) * n)) + " (" +
                             std::to_string(opt.levels.front()) + "-bit codes, F16 codebooks of " +
                             std::to_string(1 << opt.levels.front()) + " centroids per channel of " +
                             std::to_string(rows) +
                             " weights, outliers); raise the bits, lower the outlier budgets "
                             "or add a lower level");

    // Greedy by gain per bit; ties by rank (a higher-scored channel first), so allocation is monotone.
    std::vector<int> rankOf(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
        rankOf[std::size_t(rank[std::size_t(i)])] = i;
    auto stepCost = [&](int li) {
        const int b0 = opt.levels[std::size_t(li)], b1 = opt.levels[std::size_t(li) + 1];
        return double(rows) * (b1 - b0) + kCentroidBits * double((1 << b1) - (1 << b0));
    };
    for (std::size_t li = 0; li + 1 < opt.levels.size(); ++li)
        a.maxStep = std::max(a.maxStep, stepCost(int(li)));
    // The candidates of one transition (level li to li + 1) come in rank order: its gain per bit
    // is the channel's importance times a constant, and channels reach level li in rank order. So
    // the greedy merges one queue per transition, taking the head with the largest gain per bit
    // (ties: the higher rank), as a priority queue of every candidate would pop them. A
    // transition that no longer fits the budget never fits again (the total only grows).
    const int transitions = int(opt.levels.size()) - 1;
    std::vector<std::vector<int>> waiting(static_cast<std::size_t>(std::max(transitions, 0)));
    std::vector<std::size_t> head(waiting.size(), 0);
    std::vector<char> fits(waiting.size(), 1);
    if (transitions > 0)
        for (int i = 0; i < n; ++i)
            if (a.channelBits[std::size_t(rank[std::size_t(i)])] > 0) waiting[0].push_back(rank[std::size_t(i)]);
    auto gainPerBit = [&](int c, int li) {
        const int b0 = opt.levels[std::size_t(li)], b1 = opt.levels[std::size_t(li) + 1];
        const double gain = importanceOf(scores[c], opt.score) * (std::ldexp(1.0, -2 * b0) - std::ldexp(1.0, -2 * b1));
        return gain / stepCost(li);
    };
    double total = a.bits.total();
    for (;;) {
        int li = -1, c = -1;
        double best = 0.0;
        for (int t = 0; t < transitions; ++t) {
            if (!fits[std::size_t(t)] || head[std::size_t(t)] == waiting[std::size_t(t)].size()) continue;
            const int cand = waiting[std::size_t(t)][head[std::size_t(t)]];
            const double g = gainPerBit(cand, t);
            if (li < 0 || g > best || (g == best && rankOf[std::size_t(cand)] < rankOf[std::size_t(c)])) {
                li = t;
                c = cand;
                best = g;
            }
        }
        if (li < 0) break;
        ++head[std::size_t(li)];
        const double cost = stepCost(li);
        if (total + cost > a.budget + 1e-6) {
            fits[std::size_t(li)] = 0;
            continue;
        }
        total += cost;
        a.channelBits[std::size_t(c)] = opt.levels[std::size_t(li) + 1];
        if (li + 1 < transitions) waiting[std::size_t(li) + 1].push_back(c);
    }
    a.bits = cmpqBitsOf(a.channelBits, a.keptChannels.size(), a.sparseOutliers, rows, opt.levels.size());
    return a;
}

// ---------------------------------------------------------------------------------------------
namespace {

// upper_bound(x, x + n, v) of an ascending x, searched outwards from `hint`: the same index, in
// O(log distance) where the answer is near the hint.
std::size_t upperBoundNear(const double* x, std::size_t n, double v, std::size_t hint)
{
    hint = std::min(hint, n);
    // Near convergence a boundary moves by a few points: the points <= v are counted in a window
    // of 16 around the hint (no branch on the data; the compiler vectorises the count). That is
    // the answer when the window starts at a point <= v (or at 0) and holds the first point > v
    // (or reaches n); otherwise the search goes on from the window's edge.
    constexpr std::size_t kWindow = 16;
    if (n >= kWindow) {
        const std::size_t s = std::min(hint > kWindow / 2 ? hint - kWindow / 2 : 0, n - kWindow);
        unsigned c = 0;
        for (std::size_t i = 0; i < kWindow; ++i)
            c += x[s + i] <= v ? 1u : 0u;
        if ((c > 0 || s == 0) && (c < kWindow || s + kWindow == n)) return s + c;
        hint = c == 0 ? s : s + kWindow - 1;
    }
    // Exponential steps from the hint, then a binary search.
    std::size_t lo = 0, hi = n;
    if (hint < n && !(x[hint] > v)) { // the answer lies right of the hint
        lo = hint + 1;
        for (std::size_t step = 1;; step *= 2) {
            const std::size_t probe = lo + step - 1;
            if (probe >= n) break;
            if (x[probe] > v) {
                hi = probe;
                break;
            }
            lo = probe + 1;
        }
    } else { // at the hint or left of it
        hi = hint;
        for (std::size_t step = 1;; step *= 2) {
            if (hi < step) break;
            const std::size_t probe = hi - step;
            if (!(x[probe] > v)) {
                lo = probe + 1;
                break;
            }
            hi = probe;
        }
    }
    return std::size_t(std::upper_bound(x + lo, x + hi, v) - x);
}

// Lloyd's iterations on sorted x with the prefix sums in s, from two deterministic inits (weighted
// quantiles (j + 1/2) / K and K even levels over [min, max]), the lower objective kept (1-D Lloyd
// stalls in poor local optima from one); with `warm`, one run from those centroids. K > 0: exactly
// K centroids, the state in fixed arrays (the loops unroll, nothing is copied through the heap);
// K = 0: k of them, in vectors. The same arithmetic either way.
template <int K>
struct LloydRun {
    // K = 0: views of the scratch's vectors (no allocation per call).
    using Centroids = std::conditional_t<K == 0, std::span<double>, std::array<double, std::size_t(K)>>;
    using Starts = std::conditional_t<K == 0, std::span<std::size_t>, std::array<std::size_t, std::size_t(K) + 1>>;
    Centroids c{};
    Starts seg{};
    double prev = 0;
    int iters = 0;
    bool done = false;
};

template <int K>
void lloydRuns(const double* x, std::size_t n, int kRuntime, int maxIters, double tol, KmeansScratch& s,
               KmeansResult& out, const double* warm)
{
    const int k = K > 0 ? K : kRuntime;
    const double* cw = s.cw.data();
    const double* cwx = s.cwx.data();
    const double* cwxx = s.cwxx.data();
    const double wsum = cw[n];
    using Run = LloydRun<K>;
    // Segment j = [seg[j], seg[j+1]): points nearer to c_j than to its neighbours (ties go left).
    // A boundary moves little from one iteration to the next: searched from where it was.
    // Returns whether a boundary moved.
    auto assign = [&](Run& r) {
        r.seg[0] = 0;
        bool moved = false;
        for (int j = 0; j + 1 < k; ++j) {
            const std::size_t old = r.seg[std::size_t(j) + 1];
            const double mid = 0.5 * (r.c[std::size_t(j)] + r.c[std::size_t(j) + 1]);
            const std::size_t b = std::max(r.seg[std::size_t(j)], upperBoundNear(x, n, mid, old));
            moved = moved || b != old;
            r.seg[std::size_t(j) + 1] = b;
        }
        r.seg[std::size_t(k)] = n;
        return moved;
    };
    auto objective = [&](const Run& r) {
        double f = 0.0;
        for (int j = 0; j < k; ++j) {
            const std::size_t a = r.seg[std::size_t(j)], b = r.seg[std::size_t(j) + 1];
            if (a == b) continue;
            const double sw = cw[b] - cw[a], swx = cwx[b] - cwx[a], swxx = cwxx[b] - cwxx[a];
            const double cj = r.c[std::size_t(j)];
            f += std::max(0.0, swxx - 2.0 * cj * swx + cj * cj * sw);
        }
        return f;
    };
    auto step = [&](Run& r, std::vector<double>& obj) {
        for (int j = 0; j < k; ++j) {
            const std::size_t a = r.seg[std::size_t(j)], b = r.seg[std::size_t(j) + 1];
            const double sw = cw[b] - cw[a];
            if (a < b && sw > 0.0) r.c[std::size_t(j)] = std::clamp((cwx[b] - cwx[a]) / sw, x[a], x[b - 1]);
        }
        const bool moved = assign(r);
        const double f = objective(r);
        // Rounding in the prefix differences can show a tiny rise; the true objective does not.
        obj.push_back(std::min(f, r.prev));
        ++r.iters;
        r.done = !moved || r.prev - f <= tol * std::max(r.prev, 1e-300);
        r.prev = std::min(f, r.prev);
    };
    const int runs = warm ? 1 : 2;
    Run run[2];
    for (int init = 0; init < runs; ++init) {
        Run& r = run[init];
        if constexpr (K == 0) {
            s.runC[init].resize(std::size_t(k));
            s.runSeg[init].resize(std::size_t(k) + 1);
            r.c = s.runC[init];
            r.seg = s.runSeg[init];
        }
        // The search hints: even counts, then where the first run ended.
        if (init == 0)
            for (int j = 0; j <= k; ++j)
                r.seg[std::size_t(j)] = n * std::size_t(j) / std::size_t(k);
        else std::copy_n(run[0].seg.begin(), k + 1, r.seg.begin());
        for (int j = 0; j < k; ++j) {
            if (warm) {
                r.c[std::size_t(j)] = warm[j];
            } else if (init == 0) {
                const double target = wsum * (double(j) + 0.5) / double(k);
                // Near an even split (equal weights: there), searched from it.
                const std::size_t i =
                    upperBoundNear(cw + 1, n, target, n * std::size_t(2 * j + 1) / std::size_t(2 * k));
                r.c[std::size_t(j)] = x[std::min(i, n - 1)];
            } else {
                r.c[std::size_t(j)] = x[0] + (x[n - 1] - x[0]) * (double(j) + 0.5) / double(k);
            }
        }
        std::vector<double>& obj = s.obj[init];
        obj.clear();
        assign(r);
        r.prev = objective(r);
        obj.push_back(r.prev);
        for (int it = 0; it < maxIters && !r.done; ++it)
            step(r, obj);
    }
    const int best = runs == 2 && s.obj[1].back() < s.obj[0].back() ? 1 : 0;
    out.centroids.assign(run[best].c.begin(), run[best].c.end());
    out.objective = s.obj[best];
    out.iterations = run[best].iters;
}

// The k-means of kmeans1dWeighted, the point weights read through weightAt(i).
template <class WeightAt>
void kmeans1d(const double* x, const WeightAt& weightAt, std::size_t n, int k, int maxIters, double tol,
              KmeansScratch& s, KmeansResult& out, const double* warm)
{
    out.centroids.assign(std::size_t(k), n ? x[0] : 0.0);
    out.objective.clear();
    out.iterations = 0;
    if (n == 0 || k <= 0) return;
    s.cw.resize(n + 1);
    s.cwx.resize(n + 1);
    s.cwxx.resize(n + 1);
    {
        // Running sums in locals: stored and reloaded through the vectors, every step waited for
        // its own store (the arrays may alias as far as the compiler knows).
        double* cw = s.cw.data();
        double* cwx = s.cwx.data();
        double* cwxx = s.cwxx.data();
        double a = 0.0, ax = 0.0, axx = 0.0;
        cw[0] = cwx[0] = cwxx[0] = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
            const double w = weightAt(i);
            a = a + w;
            ax = ax + w * x[i];
            axx = axx + w * x[i] * x[i];
            cw[i + 1] = a;
            cwx[i + 1] = ax;
            cwxx[i + 1] = axx;
        }
    }
    // Few distinct values: they are the codebook, error 0.
    std::size_t distinct = 1;
    for (std::size_t i = 1; i < n && distinct <= std::size_t(k); ++i)
        if (x[i] != x[i - 1]) ++distinct;
    std::vector<double>& c = out.centroids;
    if (distinct <= std::size_t(k)) {
        std::size_t j = 0;
        c[0] = x[0];
        for (std::size_t i = 1; i < n; ++i)
            if (x[i] != x[i - 1]) c[++j] = x[i];
        for (std::size_t t = j + 1; t < std::size_t(k); ++t)
            c[t] = x[n - 1];
        out.objective.push_back(0.0);
        return;
    }
    // Four centroids (the 2-bit level, most channels at 2-3 bits) with the state in fixed arrays:
    // 13-15 % faster on 64-352 values; eight or sixteen unrolled were slower than in vectors.
    if (k == 4) lloydRuns<4>(x, n, k, maxIters, tol, s, out, warm);
    else lloydRuns<0>(x, n, k, maxIters, tol, s, out, warm);
}

} // namespace

void kmeans1dWeighted(const double* x, const double* w, std::size_t n, int k, int maxIters, double tol,
                      KmeansScratch& s, KmeansResult& out)
{
    kmeans1d(x, [w](std::size_t i) { return w[i]; }, n, k, maxIters, tol, s, out, nullptr);
}

void kmeans1dEqualWeights(const double* x, double w, std::size_t n, int k, int maxIters, double tol, KmeansScratch& s,
                          KmeansResult& out, const double* warm)
{
    kmeans1d(x, [w](std::size_t) { return w; }, n, k, maxIters, tol, s, out, warm);
}

// ---------------------------------------------------------------------------------------------
double CmpqCodes::bitsPerWeight(std::int64_t rows) const
{
    const double n = double(rows) * double(channelBits.size());
    return n > 0 ? bits.total() / n : 0.0;
}

Status validateCmpqCodes(const MatrixU8R& codes, const CmpqCodes& c)
{
    const std::int64_t rows = codes.rows(), cols = codes.cols();
    if (std::int64_t(c.channelBits.size()) != cols || std::int64_t(c.codebookOffset.size()) != cols + 1)
        return makeError(ErrorCode::Format, "CMPQ: per-channel tables do not match the code matrix");
    std::int64_t off = 0;
    for (std::int64_t j = 0; j < cols; ++j) {
        const int b = c.channelBits[std::size_t(j)];
        if (b > kMaxBits) return makeError(ErrorCode::Format, "CMPQ: channel bits out of range");
        if (c.codebookOffset[std::size_t(j)] != off)
            return makeError(ErrorCode::Format, "CMPQ: codebook offsets are inconsistent");
        off += b > 0 ? (1 << b) : 0;
        if (b > 0)
            for (std::int64_t r = 0; r < rows; ++r)
                if (codes(r, j) >= (1 << b)) return makeError(ErrorCode::Format, "CMPQ: code out of range");
    }
    if (c.codebookOffset[std::size_t(cols)] != off || std::int64_t(c.codebook.size()) != off)
        return makeError(ErrorCode::Format, "CMPQ: codebook size does not match the channel bits");
    if (c.keptValues.rows() != (c.keptChannels.empty() ? c.keptValues.rows() : rows) ||
        c.keptValues.cols() != std::int64_t(c.keptChannels.size()))
        return makeError(ErrorCode::Format, "CMPQ: kept channel values do not match");
    for (int k : c.keptChannels)
        if (k < 0 || k >= cols || c.channelBits[std::size_t(k)] != 0)
            return makeError(ErrorCode::Format, "CMPQ: kept channel index out of range");
    if (c.outlierIndex.size() != c.outlierValue.size())
        return makeError(ErrorCode::Format, "CMPQ: outlier values and indices differ in count");
    for (std::int64_t i : c.outlierIndex)
        if (i < 0 || i >= rows * cols) return makeError(ErrorCode::Format, "CMPQ: outlier index out of range");
    return {};
}

MatrixXfR dequantizeRowsCmpq(const MatrixU8R& codes, const CmpqCodes& c)
{
    MatrixXfR out(codes.rows(), codes.cols());
    dequantizeRowsCmpqInto(codes.data(), codes.cols(), c, 0, codes.rows(), out.data());
    return out;
}

void dequantizeRowsCmpqInto(const std::uint8_t* codes, Eigen::Index cols, const CmpqCodes& c, Eigen::Index r0,
                            Eigen::Index n, float* dst)
{
    for (Eigen::Index r = r0; r < r0 + n; ++r) {
        float* out = dst + (r - r0) * cols;
        const std::uint8_t* code = codes + (r - r0) * cols;
        for (Eigen::Index j = 0; j < cols; ++j) {
            const int b = c.channelBits[std::size_t(j)];
            out[j] = b > 0 ? c.codebook[std::size_t(c.codebookOffset[std::size_t(j)]) + code[j]] : 0.0f;
        }
        for (std::size_t k = 0; k < c.keptChannels.size(); ++k)
            out[c.keptChannels[k]] = c.keptValues(r, Eigen::Index(k));
    }
    // Outliers are sorted by flat index: the ones in these rows are one contiguous run.
    const auto first = std::lower_bound(c.outlierIndex.begin(), c.outlierIndex.end(), std::int64_t(r0) * cols);
    const auto last = std::lower_bound(first, c.outlierIndex.end(), std::int64_t(r0 + n) * cols);
    for (auto it = first; it != last; ++it)
        dst[*it - std::int64_t(r0) * cols] = c.outlierValue[std::size_t(it - c.outlierIndex.begin())];
}

// ---------------------------------------------------------------------------------------------
Result<QuantizedRows> quantizeRowsCmpq(Eigen::Ref<const MatrixXfR> w, const Eigen::MatrixXd& h,
                                       const Eigen::VectorXd& scores, const CmpqOptions& opt, RunContext* ctx,
                                       const ParallelFor* par)
{
    const int m = int(w.rows()), n = int(w.cols());
    if (m <= 0 || n <= 0) return makeError(ErrorCode::Shape, "CMPQ: empty weight matrix");
    if (scores.size() != n)
        return makeError(ErrorCode::Shape, "CMPQ: " + std::to_string(scores.size()) + " channel scores for " +
                                               std::to_string(n) + " input channels");
    const bool feedback = opt.errorFeedback;
    if (feedback && (h.rows() != n || h.cols() != n))
        return makeError(ErrorCode::Shape,
                         "CMPQ: error feedback needs the " + std::to_string(n) + "x" + std::to_string(n) + " Hessian");
    QB_TRY(alloc, allocateCmpqBits(scores, m, opt));

    auto codes = std::make_shared<CmpqCodes>();
    CmpqCodes& cc = *codes;
    cc.levels = opt.levels;
    cc.targetBits = opt.bits;
    cc.channelScore.assign(scores.data(), scores.data() + n);
    cc.channelBits.resize(std::size_t(n));
    cc.codebookOffset.assign(std::size_t(n) + 1, 0);
    for (int j = 0; j < n; ++j) {
        cc.channelBits[std::size_t(j)] = std::uint8_t(alloc->channelBits[std::size_t(j)]);
        const int b = alloc->channelBits[std::size_t(j)];
        cc.codebookOffset[std::size_t(j) + 1] = cc.codebookOffset[std::size_t(j)] + (b > 0 ? (1 << b) : 0);
    }
    cc.codebook.assign(std::size_t(cc.codebookOffset[std::size_t(n)]), 0.0f);
    cc.keptChannels = alloc->keptChannels;
    cc.bits = alloc->bits;
    std::vector<char> keptMask(static_cast<std::size_t>(n), 0);
    for (int k : cc.keptChannels)
        keptMask[std::size_t(k)] = 1;

    // Column-major working copy (a channel is contiguous), float as GPTQ's (gptq.h).
    Eigen::MatrixXf wd = columnMajorCopy(w, par);
    // Error feedback: damping and U from GPTQ's factor of H (act-order off). Its dead columns
    // (weights zeroed) and diagonal come from H before it (gptqLiveDiagonal), so a narrow factor
    // not given is made while the first channels are fitted (runChannels).
    const GptqOptions factorOptions = cmpqFeedbackOptions(opt);
    std::optional<GptqFactor> own;
    std::optional<GptqFactor>& factorCache = opt.factorCache ? *opt.factorCache : own;
    const GptqFactor* f = nullptr;
    Eigen::VectorXd hDiag;
    if (feedback) {
        std::vector<int> dead;
        hDiag = gptqLiveDiagonal(h, dead);
        for (int j : dead)
            wd.col(j).setZero();
        if (opt.factor && opt.factor->fits(factorOptions, n)) f = opt.factor;
        else if (factorCache && factorCache->fits(factorOptions, n)) f = &*factorCache;
    }
    bool factorPending = feedback && !f;
    std::optional<Error> factorError;
    // on: the parallel-for for a wide factor's pieces (null inside runChannels' parallel-for).
    auto makeFactor = [&](const ParallelFor* on) {
        factorPending = false;
        auto made = sharedGptqFactor(factorCache, h, factorOptions, nullptr, on);
        if (made.ok()) f = *made;
        else
            factorError = made.error().code == ErrorCode::NumericalError
                              ? makeError(ErrorCode::NumericalError, "CMPQ: Hessian is not positive definite after " +
                                                                         std::to_string(opt.maxDampingRetries) +
                                                                         " damping retries")
                              : made.error();
    };
    // Per-column importance for the outlier choice: diag H, else the channel's energy from scores.
    Eigen::VectorXd imp(n);
    for (int j = 0; j < n; ++j)
        imp[j] = feedback ? hDiag[j] : (h.rows() == n ? h(j, j) : 1.0);
    Eigen::VectorXd energy(n);
    for (int j = 0; j < n; ++j)
        energy[j] = std::max(importanceOf(scores[j], opt.score), 1e-30);

    const int workers = par && par->run && par->workers > 1 ? par->workers : 1;
    std::vector<ChannelScratch> scratch(static_cast<std::size_t>(workers));
    // A wide factor (hessian.h, kBlockedFactorMin) is made first, its pieces on every worker: it
    // costs far more than the first channels' codebooks.
    if (factorPending && n >= kBlockedFactorMin) makeFactor(par);
    // The parallel-for over channels; while the factor is pending, the first one makes it as one
    // more item (the first: a worker starts on it while the others take channels).
    auto runChannels = [&](std::int64_t count, const auto& body) {
        if (!factorPending) {
            forChannels(par, count, m, body);
        } else if (workers > 1) {
            par->run(count + 1, [&](std::int64_t item, int worker) {
                if (item == 0) makeFactor(nullptr);
                else body(item - 1, worker);
            });
        } else {
            makeFactor(nullptr);
            forChannels(par, count, m, body);
        }
    };
    // Sparse outliers per column: rows ascending, and the F16 value stored for each.
    std::vector<std::vector<int>> outRows(static_cast<std::size_t>(n));
    std::vector<std::vector<float>> outValues(static_cast<std::size_t>(n));
    auto weightOf = [&](int j) { return opt.weights == CmpqWeights::Energy ? energy[j] : 1.0; };

    // Channel j's values in `col` without its outlier rows, sorted ascending into `sorted` (room
    // for m); returns how many.
    auto sortChannel = [&](const float* col, int j, ChannelScratch& sc, double* sorted) {
        const std::vector<int>& skip = outRows[std::size_t(j)];
        if (skip.empty()) {
            sortFloatsAscending(col, std::size_t(m), sc.sort, sorted);
            return std::size_t(m);
        }
        std::vector<float>& buf = sc.column;
        buf.resize(std::size_t(m));
        std::size_t cnt = 0, si = 0;
        for (int r = 0; r < m; ++r) {
            if (si < skip.size() && skip[si] == r) {
                ++si;
                continue;
            }
            buf[cnt++] = col[r];
        }
        sortFloatsAscending(buf.data(), cnt, sc.sort, sorted);
        return cnt;
    };
    // Fits channel j's codebook from column j of the working copy, skipping its outlier rows.
    auto fitChannel = [&](int j, int worker) {
        const int b = cc.channelBits[std::size_t(j)];
        if (b == 0) return;
        ChannelScratch& sc = scratch[std::size_t(worker)];
        sc.vals.resize(std::size_t(m));
        const std::size_t cnt = sortChannel(wd.col(j).data(), j, sc, sc.vals.data());
        fitSortedCodebook(sc.vals.data(), cnt, weightOf(j), b, opt, sc,
                          cc.codebook.data() + cc.codebookOffset[std::size_t(j)]);
    };
    auto fitAll = [&]() -> Status {
        const int chunk = 256;
        for (int j0 = 0; j0 < n; j0 += chunk) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError("CMPQ");
            const int j1 = std::min(n, j0 + chunk);
            runChannels(j1 - j0, [&](std::int64_t item, int worker) { fitChannel(j0 + int(item), worker); });
        }
        return {};
    };

    // Quantization-based outliers: the largest errors imp_j * (w - q)^2 of a trial quantization,
    // each worker keeping candidates over its channels (no m*n list), merged: the top `want` of the
    // union (ties to the lower index) whatever the split. A worker's list is cut back to its own
    // top `want` whenever it doubles; the worst error kept then is a floor that only rises, and an
    // error below it is never taken (`want` better ones exist), so it is skipped without a look.
    using Err = std::pair<double, std::int64_t>;
    auto better = [](const Err& a, const Err& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    // The `want` best of a list, in no order (ties to the lower index).
    auto keepBest = [&](std::vector<Err>& list, std::size_t want) {
        if (list.size() <= want) return;
        std::nth_element(list.begin(), list.begin() + std::ptrdiff_t(want), list.end(), better);
        list.resize(want);
    };
    struct Candidates {
        std::vector<Err> list;
        double floor = -std::numeric_limits<double>::infinity();
    };
    std::vector<Candidates> candidates(static_cast<std::size_t>(workers));
    // Channel j's trial errors (its codebook as fitted now, the values in col) into a worker's list.
    auto pushErrors = [&](const float* col, int j, std::size_t want, int worker) {
        const int b = cc.channelBits[std::size_t(j)];
        if (b == 0 || want == 0) return;
        const float* cb = cc.codebook.data() + cc.codebookOffset[std::size_t(j)];
        ChannelScratch& sc = scratch[std::size_t(worker)];
        sc.codes.resize(std::size_t(m));
        cmpqNearestCodes(col, std::size_t(m), cb, 1 << b, sc.codes.data());
        sc.errors.resize(std::size_t(m));
        double* err = sc.errors.data();
        const double weight = imp[j];
        for (int r = 0; r < m; ++r) { // vectorises (the codebook read by a gather)
            const double e = double(col[r]) - double(cb[sc.codes[std::size_t(r)]]);
            err[r] = weight * e * e;
        }
        Candidates& cand = candidates[std::size_t(worker)];
        const std::size_t cap = 2 * want + 64;
        constexpr int kStrip = 16;
        for (int r0 = 0; r0 < m; r0 += kStrip) {
            const int r1 = std::min(m, r0 + kStrip);
            unsigned any = 0; // vectorises: most strips lie wholly below the floor
            for (int r = r0; r < r1; ++r)
                any |= err[r] >= cand.floor ? 1u : 0u;
            if (!any) continue;
            for (int r = r0; r < r1; ++r)
                if (err[r] >= cand.floor) cand.list.push_back({err[r], std::int64_t(r) * n + j});
            if (cand.list.size() < cap) continue;
            keepBest(cand.list, want);
            double worst = cand.list.front().first;
            for (const Err& e : cand.list)
                worst = std::min(worst, e.first);
            cand.floor = worst;
        }
    };
    // The `want` largest errors of all workers' lists (emptied) into outRows.
    auto takeLargest = [&](std::size_t want) {
        std::vector<Err> errs;
        for (Candidates& c : candidates) {
            errs.insert(errs.end(), c.list.begin(), c.list.end());
            c.list.clear(); // keeps its capacity for the next block
            c.floor = -std::numeric_limits<double>::infinity();
        }
        keepBest(errs, want);
        std::vector<std::int64_t> flat(errs.size());
        for (std::size_t i = 0; i < errs.size(); ++i)
            flat[i] = errs[i].second;
        std::sort(flat.begin(), flat.end()); // row-major: each column's rows ascending
        for (std::int64_t idx : flat)
            outRows[std::size_t(idx % n)].push_back(int(idx / n));
    };
    const std::size_t wantOutliers = std::size_t(alloc->sparseOutliers);
    // With dynamic codebooks the trial runs per column block, on the updated weights the block's
    // codebooks are fitted to (the block's share of the budget: see massBefore below); otherwise
    // once, up front, on the original weights.
    const bool blockOutliers = feedback && !opt.staticCodebooks && wantOutliers > 0;
    const bool trial = wantOutliers > 0 && !blockOutliers;
    for (Candidates& c : candidates) // a list never holds more than a cut-back's size and a strip
        c.list.reserve(trial ? 2 * wantOutliers + 64 + 16 : 0);
    if (trial) {
        QB_TRY_STATUS(fitAll());
        runChannels(n, [&](std::int64_t item, int worker) {
            pushErrors(wd.col(item).data(), int(item), wantOutliers, worker);
        });
        takeLargest(wantOutliers);
    }

    QuantizedRows out;
    out.bits = opt.levels.back();
    out.codes = MatrixU8R::Zero(m, n);
    out.dequantized.resize(m, n);
    out.groupIndex.assign(std::size_t(n), 0);
    cc.keptValues.resize(m, Eigen::Index(cc.keptChannels.size()));
    std::vector<std::size_t> keptSlot(static_cast<std::size_t>(n), 0);
    for (std::size_t k = 0; k < cc.keptChannels.size(); ++k)
        keptSlot[std::size_t(cc.keptChannels[k])] = k;
    // The sparse outliers as stored: flat indices ascending, their values aligned.
    auto finishOutliers = [&]() {
        std::vector<std::pair<std::int64_t, float>> all;
        for (int j = 0; j < n; ++j)
            for (std::size_t t = 0; t < outRows[std::size_t(j)].size(); ++t)
                all.emplace_back(std::int64_t(outRows[std::size_t(j)][t]) * n + j, outValues[std::size_t(j)][t]);
        std::sort(all.begin(), all.end());
        cc.outlierIndex.resize(all.size());
        cc.outlierValue.resize(all.size());
        for (std::size_t i = 0; i < all.size(); ++i) {
            cc.outlierIndex[i] = all[i].first;
            cc.outlierValue[i] = all[i].second;
        }
        if (all.size() != wantOutliers)
            cc.bits =
                cmpqBitsOf(alloc->channelBits, cc.keptChannels.size(), std::int64_t(all.size()), m, opt.levels.size());
    };
    // Codes and values are written a block of columns at a time into column-major buffers (a
    // channel is contiguous there) and copied into the row-major result once per block.
    const int block = std::min(opt.blockSize, n);
    Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic> codeBlock(m, block);
    Eigen::MatrixXf deqBlock(m, block);
    std::vector<int> columns(static_cast<std::size_t>(n));
    std::iota(columns.begin(), columns.end(), 0);
    auto flushBlock = [&](int b0, int cnt, int r0, int r1) {
        storeColumnBlock(codeBlock.data(), deqBlock.data(), m, cnt, columns.data() + b0, out.codes, out.dequantized, r0,
                         r1);
    };
    // Quantizes rows [r0, r1) of column j of `src` (values as they are now) into codes/deq (m
    // entries each, column-major) and cc; returns the error column in errOut (indexed by row).
    // outValues[j] holds one slot per outlier row of the column (sized before).
    auto quantizeColumn = [&](const float* src, int j, std::uint8_t* codesOut, float* deqOut, double* errOut, int r0,
                              int r1) {
        const int b = cc.channelBits[std::size_t(j)];
        if (b == 0) {
            for (int r = r0; r < r1; ++r) {
                const float v = float(toF16(src[r]));
                cc.keptValues(r, Eigen::Index(keptSlot[std::size_t(j)])) = v;
                codesOut[r] = 0;
                deqOut[r] = v;
                errOut[r] = src[r] - double(v);
            }
            return;
        }
        const float* cb = cc.codebook.data() + cc.codebookOffset[std::size_t(j)];
        cmpqNearestCodes(src + r0, std::size_t(r1 - r0), cb, 1 << b, codesOut + r0); // ties to the lower centroid
        for (int r = r0; r < r1; ++r) {
            const float q = cb[codesOut[r]];
            deqOut[r] = q;
            errOut[r] = double(src[r]) - double(q);
        }
        // Sparse outliers: the stored F16 value replaces the code.
        const std::vector<int>& rows = outRows[std::size_t(j)];
        std::vector<float>& values = outValues[std::size_t(j)];
        for (auto t = std::size_t(std::lower_bound(rows.begin(), rows.end(), r0) - rows.begin());
             t < rows.size() && rows[t] < r1; ++t) {
            const int r = rows[t];
            const double q = toF16(src[r]);
            values[t] = float(q);
            codesOut[r] = 0;
            deqOut[r] = float(q);
            errOut[r] = src[r] - q;
        }
    };

    // Codebooks on the original weights: after a trial only the channels that lost outliers change.
    auto fitStatic = [&]() -> Status {
        if (!trial) return fitAll();
        std::vector<int> touched;
        for (int j = 0; j < n; ++j)
            if (!outRows[std::size_t(j)].empty()) touched.push_back(j);
        runChannels(std::int64_t(touched.size()),
                    [&](std::int64_t item, int worker) { fitChannel(touched[std::size_t(item)], worker); });
        return {};
    };
    if (!feedback) {
        QB_TRY_STATUS(fitStatic());
        std::vector<double> e(static_cast<std::size_t>(m));
        for (int j = 0; j < n; ++j)
            outValues[std::size_t(j)].resize(outRows[std::size_t(j)].size());
        for (int b = 0; b < n; b += block) {
            const int cnt = std::min(block, n - b);
            for (int j = b; j < b + cnt; ++j)
                quantizeColumn(wd.col(j).data(), j, codeBlock.col(j - b).data(), deqBlock.col(j - b).data(), e.data(),
                               0, m);
            flushBlock(b, cnt, 0, m);
            if (ctx) ctx->advance(cnt);
        }
        finishOutliers();
        out.cmpq = codes;
        return out;
    }

    // Per-block trial (dynamic codebooks): the block's share of the outlier budget follows its share
    // of the expected error mass imp_j * ||w_j||^2 * 4^-b_j of the quantized channels (on the
    // original weights), cumulative so the shares add up to the budget. (By channel count instead:
    // mean perplexity over three calibration draws on the demo model 0.2 higher at 2.5 bits, the
    // same within 0.05 at 2.75 to 3.25.)
    std::vector<double> massBefore(blockOutliers ? static_cast<std::size_t>(n) + 1 : 0, 0);
    for (int j = 0; j < n && blockOutliers; ++j) {
        const int bj = cc.channelBits[std::size_t(j)];
        const double mass = bj > 0 ? imp[j] * double(wd.col(j).squaredNorm()) * std::ldexp(1.0, -2 * bj) : 0.0;
        massBefore[std::size_t(j) + 1] = massBefore[std::size_t(j)] + mass;
    }
    auto outliersBefore = [&](int j) {
        const double total = massBefore[std::size_t(n)];
        return total > 0 ? std::size_t(double(wantOutliers) * (massBefore[std::size_t(j)] / total)) : std::size_t(0);
    };
    // A block's channels sorted once (m slots each, in one buffer): the trial's codebooks come
    // from them, and the refit without the outliers removes their values from the sorted list
    // instead of sorting again, starting from the trial's centroids (laid out as the codebook).
    std::vector<double> blockSorted(blockOutliers ? std::size_t(block) * std::size_t(m) : 0);
    std::vector<std::size_t> blockCount(blockOutliers ? static_cast<std::size_t>(block) : 0);
    std::vector<double> trialCentroids(blockOutliers ? cc.codebook.size() : 0);
    auto fitBlockWithOutliers = [&](int b, int end) {
        const std::size_t want = outliersBefore(end) - outliersBefore(b);
        runChannels(end - b, [&](std::int64_t item, int worker) {
            const int j = b + int(item);
            if (cc.channelBits[std::size_t(j)] == 0) return;
            ChannelScratch& sc = scratch[std::size_t(worker)];
            double* sorted = blockSorted.data() + std::size_t(item) * std::size_t(m);
            blockCount[std::size_t(item)] = sortChannel(wd.col(j).data(), j, sc, sorted);
            fitSortedCodebook(sorted, blockCount[std::size_t(item)], weightOf(j), cc.channelBits[std::size_t(j)], opt,
                              sc, cc.codebook.data() + cc.codebookOffset[std::size_t(j)]);
            std::copy(sc.res.centroids.begin(), sc.res.centroids.end(),
                      trialCentroids.begin() + cc.codebookOffset[std::size_t(j)]);
            pushErrors(wd.col(j).data(), j, want, worker);
        });
        takeLargest(want);
        runChannels(end - b, [&](std::int64_t item, int worker) {
            const int j = b + int(item);
            const std::vector<int>& rows = outRows[std::size_t(j)];
            if (rows.empty()) return;
            ChannelScratch& sc = scratch[std::size_t(worker)];
            // The outliers' values, ascending, each taken out of the sorted list once.
            std::vector<float>& drop = sc.column;
            drop.clear();
            for (int r : rows)
                drop.push_back(wd(r, j));
            std::sort(drop.begin(), drop.end());
            double* sorted = blockSorted.data() + std::size_t(item) * std::size_t(m);
            std::size_t kept = 0, t = 0;
            for (std::size_t i = 0; i < blockCount[std::size_t(item)]; ++i) {
                if (t < drop.size() && sorted[i] == double(drop[t])) {
                    ++t;
                    continue;
                }
                sorted[kept++] = sorted[i];
            }
            // Lloyd from the trial's centroids: a few points left, the optimum moved little.
            fitSortedCodebook(sorted, kept, weightOf(j), cc.channelBits[std::size_t(j)], opt, sc,
                              cc.codebook.data() + cc.codebookOffset[std::size_t(j)],
                              trialCentroids.data() + cc.codebookOffset[std::size_t(j)]);
        });
    };

    // GPTQ-style error feedback in natural column order (lazy blocks, as quantizeRowsGptq), a
    // block's column loop in fixed pieces of rows on the workers (gptqPieceRows), each piece's
    // share of the proxy loss added in piece order.
    if (opt.staticCodebooks) QB_TRY_STATUS(fitStatic());
    const int bs = block;
    Eigen::MatrixXf err(m, bs);
    std::vector<double> e(static_cast<std::size_t>(m));
    double proxy = 0.0;
    for (int b = 0; b < n;) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("CMPQ");
        const int end = std::min(b + bs, n), cnt = end - b;
        // Dynamic codebooks: this block's channels on the weights updated by all earlier blocks.
        if (blockOutliers) fitBlockWithOutliers(b, end);
        else if (!opt.staticCodebooks)
            runChannels(cnt, [&](std::int64_t item, int worker) { fitChannel(b + int(item), worker); });
        if (factorPending) makeFactor(par);
        if (factorError) return *factorError;
        const Eigen::MatrixXf& u = f->u;
        for (int i = b; i < end; ++i)
            outValues[std::size_t(i)].resize(outRows[std::size_t(i)].size());
        addOverRowPieces(m, par, proxy, [&](int r0, int r1, int) {
            const int len = r1 - r0;
            double part = 0.0;
            for (int i = b; i < end; ++i) {
                quantizeColumn(wd.col(i).data(), i, codeBlock.col(i - b).data(), deqBlock.col(i - b).data(), e.data(),
                               r0, r1);
                const double d = u(i, i);
                float* errs = err.col(i - b).data();
                double* e1 = e.data();
                for (int r = r0; r < r1; ++r) { // as quantizeRowsGptq: one division per weight
                    e1[r] /= d;
                    errs[r] = float(e1[r]);
                }
                part += halfSumOfSquares(e1 + r0, len);
                const int rest = end - i - 1;
                if (rest > 0) subtractRankOne(wd, r0, len, i + 1, rest, err.col(i - b).data() + r0, u, i);
            }
            flushBlock(b, cnt, r0, r1);
            return part;
        });
        if (end < n) wd.rightCols(n - end).noalias() -= err.leftCols(cnt) * u.block(b, end, cnt, n - end);
        if (ctx) ctx->advance(cnt);
        b = end;
    }
    finishOutliers();
    out.dampingRetries = f->dampingRetries;
    out.proxyLoss = proxy;
    out.errorTrace = errorTraceFromErrors(2.0 * proxy, *f, w, out.dequantized);
    out.cmpq = codes;
    return out;
}

} // namespace qb::quant
