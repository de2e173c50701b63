// CMPQ (reconstruction) kernels, METHODS.md §6.2 items 23-26: bit accounting to the target
// within one channel's worth, monotone allocation, weighted k-means (objective never increases,
// exact with few distinct values, against a brute-force optimum on tiny data), dense + sparse
// reconstruction exact at outliers, outlier removal never widens a channel; plus channel
// statistics, the error feedback beating plain assignment, serial = parallel, and bad input.

#include "base/dtype.h"
#include "quant/cmpq.h"
#include "quant/error_metrics.h"
#include "quant_test_util.h"

#include <QTest>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <queue>
#include <random>
#include <set>
#include <tuple>
#include <vector>

using namespace qb;
using namespace qb::quant;
using namespace qb::quant::test;

namespace {

Eigen::VectorXd heavyScores(int n, std::uint32_t seed)
{
    std::mt19937 rng(seed);
    std::lognormal_distribution<double> ln(0.0, 1.0);
    Eigen::VectorXd s(n);
    for (int j = 0; j < n; ++j)
        s[j] = ln(rng);
    return s;
}

bool isF16(float v) { return f16ToF32(f32ToF16(v)) == v; }

} // namespace

class TestQuantCmpq : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void bitAccounting_data();
    void bitAccounting();
    void monotoneAllocation();
    void allocationIsTheGreedyOverAllCandidates();
    void infeasibleBudgetIsAnError();
    void kmeansObjectiveNeverIncreases();
    void kmeansWarmStart();
    void kmeansFewDistinctValuesExact();
    void kmeansMatchesBruteForce();
    void sparseReconstructionExact();
    void outlierRemovalNeverWidensRange();
    void storedValuesAreF16AndRoundTrip();
    void channelStatistics();
    void channelStatisticsSelected();
    void errorFeedbackBeatsPlain();
    void kmeansBeatsUniformLevels();
    void longChannelCodebooksAreKmeansOfSortedValues();
    void nearestCodesAreExact();
    void parallelEqualsSerial();
    void trialOutliersAreTheLargestErrors();
    void factorBesideTheFirstCodebooks();
    void blockOutliersWithFeedback();
    void badInput();
};

void TestQuantCmpq::bitAccounting_data()
{
    QTest::addColumn<double>("target");
    QTest::addColumn<int>("rows");
    QTest::addColumn<int>("cols");
    QTest::addColumn<double>("act");
    QTest::addColumn<double>("quant");
    QTest::newRow("2.5 bpw 512x256 no outliers") << 2.5 << 512 << 256 << 0.0 << 0.0;
    QTest::newRow("2.45 bpw 1024x300 both outliers") << 2.45 << 1024 << 300 << 0.01 << 0.005;
    QTest::newRow("3.0 bpw 256x128 both outliers") << 3.0 << 256 << 128 << 0.01 << 0.005;
    QTest::newRow("3.75 bpw 700x200 act only") << 3.75 << 700 << 200 << 0.02 << 0.0;
}

void TestQuantCmpq::bitAccounting()
{
    QFETCH(double, target);
    QFETCH(int, rows);
    QFETCH(int, cols);
    QFETCH(double, act);
    QFETCH(double, quant);
    CmpqOptions o;
    o.bits = target;
    o.actOutliers = act;
    o.quantOutliers = quant;
    auto a = allocateCmpqBits(heavyScores(cols, 7), rows, o);
    QVERIFY2(a.ok(), a.ok() ? "" : a.error().message.c_str());
    const double budget = target * rows * cols;
    const double total = a->bits.total();
    // Total (codes + codebooks + outliers + tags) never exceeds the budget and misses it by less
    // than one upgrade step (one channel's worth).
    QVERIFY(total <= budget + 1e-6);
    QVERIFY2(budget - total < a->maxStep, qPrintable(QString("slack %1 step %2").arg(budget - total).arg(a->maxStep)));
    QVERIFY(a->maxStep <= double(rows) * 2 + 16.0 * 16);
    // The overhead is reported separately and adds up.
    double codes = 0;
    for (int b : a->channelBits)
        codes += double(b) * rows;
    QCOMPARE(a->bits.codes, codes);
    QVERIFY(a->bits.overhead() > 0);
    QCOMPARE(a->bits.overhead(), a->bits.codebooks + a->bits.keptChannels + a->bits.sparseOutliers + a->bits.tags);
    QCOMPARE(int(a->keptChannels.size()), act > 0 ? int(std::ceil(act * cols - 1e-9)) : 0);
    QCOMPARE(a->sparseOutliers, std::int64_t(std::floor(quant * rows * cols)));

    // The quantized tensor reports the same accounting.
    const MatrixXfR w = randomWeights(rows, cols, 3);
    o.errorFeedback = false;
    auto q = quantizeRowsCmpq(w, Eigen::MatrixXd(), heavyScores(cols, 7), o);
    QVERIFY(q.ok() && q->cmpq);
    QCOMPARE(q->cmpq->bits.total(), total);
    QVERIFY(std::fabs(q->cmpq->bitsPerWeight(rows) - target) < a->maxStep / (double(rows) * cols));
}

void TestQuantCmpq::monotoneAllocation()
{
    for (std::uint32_t seed = 1; seed <= 20; ++seed) {
        const int cols = 97 + int(seed) * 5;
        Eigen::VectorXd s = heavyScores(cols, seed);
        for (int j = 0; j < cols; j += 7) // ties
            s[j] = s[0];
        CmpqOptions o;
        o.bits = 2.8 + 0.07 * seed;
        o.actOutliers = seed % 2 ? 0.02 : 0.0;
        o.score = seed % 3 ? CmpqScore::MeanAbs : CmpqScore::MeanSquare;
        auto a = allocateCmpqBits(s, 384, o);
        QVERIFY2(a.ok(), a.ok() ? "" : a.error().message.c_str());
        auto eff = [&](int j) { return a->channelBits[std::size_t(j)] == 0 ? 16 : a->channelBits[std::size_t(j)]; };
        for (int i = 0; i < cols; ++i)
            for (int j = 0; j < cols; ++j)
                if (s[i] > s[j])
                    QVERIFY2(eff(i) >= eff(j), qPrintable(QString("seed %1: %2 vs %3").arg(seed).arg(i).arg(j)));
        std::set<int> used(a->channelBits.begin(), a->channelBits.end());
        for (int b : used)
            QVERIFY(b == 0 || b == 2 || b == 3 || b == 4);
    }
    // Two neighbouring levels: the top fraction gets the upper one.
    CmpqOptions o;
    o.levels = {2, 3};
    o.actOutliers = 0;
    o.quantOutliers = 0;
    o.bits = 2.6;
    auto a = allocateCmpqBits(heavyScores(200, 99), 1000, o);
    QVERIFY(a.ok());
    const auto hi = std::count(a->channelBits.begin(), a->channelBits.end(), 3);
    QVERIFY(hi > 40 && hi < 200);
}

// The allocation's definition, written plainly: every upgrade candidate in one priority queue by
// (gain per bit, higher rank), taken while it fits the budget. The solver merges one queue per
// transition instead; the two must agree channel for channel, ties included.
void TestQuantCmpq::allocationIsTheGreedyOverAllCandidates()
{
    std::mt19937 rng(23);
    std::lognormal_distribution<double> ln(0.0, 1.0);
    const std::vector<std::vector<int>> levelSets = {{2, 3, 4}, {2, 3}, {1, 2, 3, 4, 8}, {3, 4}, {2, 4}, {1, 8}};
    int compared = 0;
    for (int trial = 0; trial < 600; ++trial) {
        const int n = 1 + int(rng() % 300), rows = 1 + int(rng() % 300);
        Eigen::VectorXd s(n);
        for (int j = 0; j < n; ++j) // a third with many exact ties
            s[j] = trial % 3 == 0 ? double(rng() % 4) : ln(rng);
        CmpqOptions o;
        o.levels = levelSets[std::size_t(trial) % levelSets.size()];
        o.bits = 1.0 + double(rng() % 7000) / 1000.0;
        o.actOutliers = trial % 4 == 0 ? 0.02 : 0.0;
        o.quantOutliers = trial % 2 ? 0.002 : 0.0;
        o.score = CmpqScore(trial % 4);
        auto a = allocateCmpqBits(s, rows, o);
        if (!a.ok()) continue; // below the minimum: infeasibleBudgetIsAnError
        // The reference greedy from the same starting point (kept channels 0, the rest the first level).
        std::vector<int> rank(static_cast<std::size_t>(n)), rankOf(static_cast<std::size_t>(n));
        std::iota(rank.begin(), rank.end(), 0);
        std::stable_sort(rank.begin(), rank.end(), [&](int x, int y) { return s[x] > s[y]; });
        for (int i = 0; i < n; ++i)
            rankOf[std::size_t(rank[std::size_t(i)])] = i;
        std::vector<int> bits(static_cast<std::size_t>(n), o.levels.front()), level(static_cast<std::size_t>(n), 0);
        for (int c : a->keptChannels)
            bits[std::size_t(c)] = 0;
        auto stepCost = [&](int li) {
            const int b0 = o.levels[std::size_t(li)], b1 = o.levels[std::size_t(li) + 1];
            return double(rows) * (b1 - b0) + kCmpqKeptBits * double((1 << b1) - (1 << b0));
        };
        std::priority_queue<std::tuple<double, int, int>> queue;
        auto push = [&](int c) {
            const int li = level[std::size_t(c)];
            if (li + 1 >= int(o.levels.size())) return;
            const double imp = o.score == CmpqScore::MeanSquare ? s[c] : s[c] * s[c];
            const double gain = imp * (std::ldexp(1.0, -2 * o.levels[std::size_t(li)]) -
                                       std::ldexp(1.0, -2 * o.levels[std::size_t(li) + 1]));
            queue.emplace(gain / stepCost(li), -rankOf[std::size_t(c)], c);
        };
        for (int c = 0; c < n; ++c)
            if (bits[std::size_t(c)] > 0) push(c);
        double total = cmpqBitsOf(bits, a->keptChannels.size(), a->sparseOutliers, rows, o.levels.size()).total();
        while (!queue.empty()) {
            const int c = std::get<2>(queue.top());
            queue.pop();
            const int li = level[std::size_t(c)];
            if (total + stepCost(li) > a->budget + 1e-6) continue;
            total += stepCost(li);
            level[std::size_t(c)] = li + 1;
            bits[std::size_t(c)] = o.levels[std::size_t(li) + 1];
            push(c);
        }
        QVERIFY2(bits == a->channelBits, qPrintable(QString("trial %1: n %2, rows %3").arg(trial).arg(n).arg(rows)));
        ++compared;
    }
    QVERIFY(compared > 300);
}

void TestQuantCmpq::infeasibleBudgetIsAnError()
{
    CmpqOptions o;
    o.bits = 2.1; // 2-bit codes + 64 bits of codebook per 64 weights = 3 bits minimum
    auto a = allocateCmpqBits(heavyScores(32, 1), 64, o);
    QVERIFY(!a.ok());
    QVERIFY(a.error().message.find("minimum") != std::string::npos);
}

void TestQuantCmpq::kmeansObjectiveNeverIncreases()
{
    std::mt19937 rng(5);
    std::student_t_distribution<double> t(3.0);
    std::uniform_real_distribution<double> uw(0.1, 3.0);
    KmeansScratch s;
    KmeansResult r;
    for (int trial = 0; trial < 60; ++trial) {
        const int n = 20 + trial * 13;
        std::vector<double> x(static_cast<std::size_t>(n)), w(static_cast<std::size_t>(n));
        for (int i = 0; i < n; ++i)
            x[std::size_t(i)] = t(rng);
        std::sort(x.begin(), x.end());
        for (double& v : w)
            v = trial % 2 ? uw(rng) : 1.0;
        const int k = 1 << (1 + trial % 4);
        kmeans1dWeighted(x.data(), w.data(), std::size_t(n), k, 100, 0.0, s, r);
        QVERIFY(r.objective.size() >= 2);
        for (std::size_t i = 1; i < r.objective.size(); ++i)
            QVERIFY2(r.objective[i] <= r.objective[i - 1] * (1 + 1e-12) + 1e-15, qPrintable(QString::number(trial)));
        QVERIFY(std::is_sorted(r.centroids.begin(), r.centroids.end()));
        // The reported objective is the true weighted error of nearest assignment (<= it).
        double f = 0;
        for (int i = 0; i < n; ++i) {
            double best = 1e300;
            for (double c : r.centroids)
                best = std::min(best, (x[std::size_t(i)] - c) * (x[std::size_t(i)] - c));
            f += w[std::size_t(i)] * best;
        }
        QVERIFY(std::fabs(f - r.objective.back()) <= 1e-9 * std::max(1.0, f));
    }
}

// A warm start runs Lloyd once from the given centroids: from a converged codebook it stays there;
// after a few points leave, it ends no worse than where it started and its objective never rises.
void TestQuantCmpq::kmeansWarmStart()
{
    std::mt19937 rng(17);
    std::student_t_distribution<double> t(4.0);
    KmeansScratch s;
    KmeansResult fresh, warm;
    for (int trial = 0; trial < 20; ++trial) {
        const int n = 300 + trial * 37, k = 1 << (2 + trial % 3);
        std::vector<double> x(static_cast<std::size_t>(n));
        for (double& v : x)
            v = t(rng);
        std::sort(x.begin(), x.end());
        kmeans1dEqualWeights(x.data(), 1.0, x.size(), k, 200, 0.0, s, fresh);
        const std::vector<double> start = fresh.centroids;
        kmeans1dEqualWeights(x.data(), 1.0, x.size(), k, 200, 0.0, s, warm, start.data());
        QCOMPARE(warm.centroids, start);
        QCOMPARE(warm.iterations, 1);
        // Drop every 50th point, refit from the old codebook.
        std::vector<double> y;
        for (int i = 0; i < n; ++i)
            if (i % 50) y.push_back(x[std::size_t(i)]);
        kmeans1dEqualWeights(y.data(), 1.0, y.size(), k, 200, 0.0, s, warm, start.data());
        QVERIFY(std::is_sorted(warm.centroids.begin(), warm.centroids.end()));
        for (std::size_t i = 1; i < warm.objective.size(); ++i)
            QVERIFY(warm.objective[i] <= warm.objective[i - 1]);
    }
}

void TestQuantCmpq::kmeansFewDistinctValuesExact()
{
    KmeansScratch s;
    KmeansResult r;
    const std::vector<double> x{-1.5, -1.5, -0.25, 0.5, 0.5, 0.5, 2.0, 2.0};
    const std::vector<double> w(x.size(), 1.0);
    kmeans1dWeighted(x.data(), w.data(), x.size(), 4, 50, 1e-9, s, r);
    QCOMPARE(r.objective.back(), 0.0);
    // Through the whole solver: a channel with <= 2^b distinct (F16-representable) values is exact.
    MatrixXfR wm(64, 8);
    const float vals[4] = {-0.5f, -0.125f, 0.25f, 1.0f};
    for (int rr = 0; rr < 64; ++rr)
        for (int c = 0; c < 8; ++c)
            wm(rr, c) = vals[(rr * 7 + c * 3) % 4] * float(1 + c);
    CmpqOptions o;
    o.levels = {2};
    o.bits = 4.0;
    o.actOutliers = o.quantOutliers = 0;
    o.errorFeedback = false;
    auto q = quantizeRowsCmpq(wm, Eigen::MatrixXd(), Eigen::VectorXd::Ones(8), o);
    QVERIFY(q.ok());
    QCOMPARE((q->dequantized - wm).cwiseAbs().maxCoeff(), 0.0f);
}

void TestQuantCmpq::kmeansMatchesBruteForce()
{
    // On tiny data the global optimum over contiguous partitions is found by enumeration; Lloyd's
    // local optimum from the quantile init should be within a small factor and never below it.
    std::mt19937 rng(11);
    std::normal_distribution<double> nd(0, 1);
    KmeansScratch s;
    KmeansResult r;
    int optimal = 0;
    for (int trial = 0; trial < 40; ++trial) {
        const int n = 9;
        std::vector<double> x(n), w(n, 1.0);
        for (double& v : x)
            v = nd(rng);
        std::sort(x.begin(), x.end());
        kmeans1dWeighted(x.data(), w.data(), n, 3, 100, 0.0, s, r);
        double best = 1e300;
        for (int a = 1; a < n; ++a)
            for (int b = a + 1; b < n; ++b) {
                const int cuts[4] = {0, a, b, n};
                double f = 0;
                for (int k = 0; k < 3; ++k) {
                    double m = 0;
                    for (int i = cuts[k]; i < cuts[k + 1]; ++i)
                        m += x[std::size_t(i)];
                    m /= cuts[k + 1] - cuts[k];
                    for (int i = cuts[k]; i < cuts[k + 1]; ++i)
                        f += (x[std::size_t(i)] - m) * (x[std::size_t(i)] - m);
                }
                best = std::min(best, f);
            }
        QVERIFY(r.objective.back() >= best - 1e-12);
        QVERIFY2(r.objective.back() <= 2.0 * best + 1e-12,
                 qPrintable(QString("%1 %2 it %3").arg(r.objective.back()).arg(best).arg(r.iterations)));
        if (r.objective.back() <= best * (1 + 1e-9)) ++optimal;
    }
    QVERIFY2(optimal >= 30, qPrintable(QString::number(optimal)));
}

void TestQuantCmpq::sparseReconstructionExact()
{
    MatrixXfR w = randomWeights(256, 96, 21);
    for (int i = 0; i < 40; ++i) // planted outliers
        w((i * 37) % 256, (i * 11) % 96) = (i % 2 ? 1.0f : -1.0f) * (0.3f + 0.01f * i);
    CmpqOptions o;
    o.bits = 3.0;
    o.actOutliers = 0.02;
    o.quantOutliers = 0.002;
    o.errorFeedback = false;
    auto q = quantizeRowsCmpq(w, Eigen::MatrixXd(), heavyScores(96, 4), o);
    QVERIFY(q.ok());
    const CmpqCodes& c = *q->cmpq;
    QCOMPARE(std::int64_t(c.outlierIndex.size()), std::int64_t(std::floor(0.002 * 256 * 96)));
    QVERIFY(std::is_sorted(c.outlierIndex.begin(), c.outlierIndex.end()));
    QVERIFY(validateCmpqCodes(q->codes, c).ok());
    const MatrixXfR deq = dequantizeRowsCmpq(q->codes, c);
    QCOMPARE((deq - q->dequantized).cwiseAbs().maxCoeff(), 0.0f);
    for (std::size_t i = 0; i < c.outlierIndex.size(); ++i) {
        const int r = int(c.outlierIndex[i] / 96), col = int(c.outlierIndex[i] % 96);
        const float exact = f16ToF32(f32ToF16(w(r, col)));
        QCOMPARE(deq(r, col), exact); // exact at the outlier positions
    }
    for (std::size_t k = 0; k < c.keptChannels.size(); ++k)
        for (int r = 0; r < 256; ++r)
            QCOMPARE(deq(r, c.keptChannels[k]), f16ToF32(f32ToF16(w(r, c.keptChannels[k]))));
}

void TestQuantCmpq::outlierRemovalNeverWidensRange()
{
    MatrixXfR w = randomWeights(200, 48, 8);
    for (int i = 0; i < 30; ++i)
        w((i * 13) % 200, i % 48) = 0.5f * (i % 2 ? 1 : -1);
    CmpqOptions o;
    o.bits = 3.5;
    o.actOutliers = 0;
    o.errorFeedback = false;
    o.quantOutliers = 0;
    auto without = quantizeRowsCmpq(w, Eigen::MatrixXd(), heavyScores(48, 2), o);
    o.quantOutliers = 0.004;
    auto with = quantizeRowsCmpq(w, Eigen::MatrixXd(), heavyScores(48, 2), o);
    QVERIFY(without.ok() && with.ok());
    int narrower = 0;
    for (int j = 0; j < 48; ++j) {
        const CmpqCodes &a = *without->cmpq, &b = *with->cmpq;
        const float* ca = a.codebook.data() + a.codebookOffset[std::size_t(j)];
        const float* cb = b.codebook.data() + b.codebookOffset[std::size_t(j)];
        const int ka = 1 << a.channelBits[std::size_t(j)], kb = 1 << b.channelBits[std::size_t(j)];
        (void)ca;
        (void)ka;
        // The channel's remaining values' range never grows.
        float lo = 1e9f, hi = -1e9f;
        std::set<std::int64_t> out(b.outlierIndex.begin(), b.outlierIndex.end());
        for (int r = 0; r < 200; ++r)
            if (!out.count(std::int64_t(r) * 48 + j)) lo = std::min(lo, w(r, j)), hi = std::max(hi, w(r, j));
        QVERIFY(lo >= w.col(j).minCoeff() && hi <= w.col(j).maxCoeff());
        if (hi - lo < w.col(j).maxCoeff() - w.col(j).minCoeff()) ++narrower;
        // The refitted codebook lies within the remaining values (up to F16 rounding).
        QVERIFY(cb[0] >= lo - 1e-3f * std::fabs(lo) && cb[kb - 1] <= hi + 1e-3f * std::fabs(hi));
    }
    QVERIFY2(narrower >= 10, qPrintable(QString::number(narrower)));
    // And the error outside the outliers goes down in total.
    QVERIFY((with->dequantized - w).squaredNorm() < (without->dequantized - w).squaredNorm());
}

void TestQuantCmpq::storedValuesAreF16AndRoundTrip()
{
    const MatrixXfR x = correlatedInputs(600, 64, 3);
    const MatrixXfR w = randomWeights(96, 64, 9);
    CmpqOptions o;
    o.bits = 3.5;
    CmpqChannelStats st(64);
    QVERIFY(st.add(x).ok());
    auto q = quantizeRowsCmpq(w, hessianOf(x), st.score(o.score), o);
    QVERIFY(q.ok());
    const CmpqCodes& c = *q->cmpq;
    for (float v : c.codebook)
        QVERIFY(isF16(v));
    for (float v : c.outlierValue)
        QVERIFY(isF16(v));
    for (Eigen::Index i = 0; i < c.keptValues.size(); ++i)
        QVERIFY(isF16(c.keptValues.data()[i]));
    for (int j = 0; j < 64; ++j)
        QVERIFY(std::is_sorted(c.codebook.begin() + c.codebookOffset[std::size_t(j)],
                               c.codebook.begin() + c.codebookOffset[std::size_t(j) + 1]));
    QCOMPARE((dequantizeRowsUniform(*q) - q->dequantized).cwiseAbs().maxCoeff(), 0.0f);
}

void TestQuantCmpq::channelStatistics()
{
    MatrixXfR x(4, 3);
    x << 1, -2, 0, -3, 2, 0, 1, 0, 0, 1, 4, 0;
    CmpqChannelStats s(3);
    QVERIFY(s.add(x.topRows(2)).ok());
    QVERIFY(s.add(x.bottomRows(2)).ok());
    QCOMPARE(s.tokens(), std::int64_t(4));
    const Eigen::VectorXd ma = s.score(CmpqScore::MeanAbs), l2 = s.score(CmpqScore::L2),
                          mx = s.score(CmpqScore::MaxAbs), ms = s.score(CmpqScore::MeanSquare);
    QCOMPARE(ma[0], 1.5);
    QCOMPARE(ma[1], 2.0);
    QCOMPARE(ma[2], 0.0);
    QCOMPARE(l2[0], std::sqrt(12.0));
    QCOMPARE(mx[1], 4.0);
    QCOMPARE(ms[1], 24.0 / 4.0);
    QVERIFY(!s.add(MatrixXfR::Zero(2, 4)).ok());
    CmpqScore parsed;
    QVERIFY(cmpqScoreFromId("max_abs", parsed) && parsed == CmpqScore::MaxAbs);
    QVERIFY(!cmpqScoreFromId("bogus", parsed));
}

void TestQuantCmpq::channelStatisticsSelected()
{
    // 150 channels (slices of 64 and a partial one), batches of 19 and 13 rows (sixteen-row groups
    // summed in float, and single rows): each sum within float rounding of a group of sixteen of
    // the element-by-element double sum over the rows; the maximum exact.
    const MatrixXfR x = correlatedInputs(32, 150, 5);
    CmpqChannelStats all(150), meanAbs(150, std::vector<CmpqScore>{CmpqScore::MeanAbs}),
        maxAbs(150, std::vector<CmpqScore>{CmpqScore::MaxAbs, CmpqScore::L2});
    for (CmpqChannelStats* s : {&all, &meanAbs, &maxAbs}) {
        QVERIFY(s->add(x.topRows(19)).ok());
        QVERIFY(s->add(x.bottomRows(13)).ok());
        QCOMPARE(s->tokens(), std::int64_t(32));
    }
    Eigen::VectorXd sumAbs = Eigen::VectorXd::Zero(150), sumSq = Eigen::VectorXd::Zero(150),
                    mx = Eigen::VectorXd::Zero(150);
    for (Eigen::Index r = 0; r < x.rows(); ++r)
        for (Eigen::Index c = 0; c < x.cols(); ++c) {
            const double v = std::fabs(double(x(r, c)));
            sumAbs[c] += v;
            sumSq[c] += v * v;
            mx[c] = std::max(mx[c], v);
        }
    auto near = [](const Eigen::VectorXd& got, const Eigen::VectorXd& want) {
        return got.size() == want.size() && ((got - want).array().abs() <= 4e-7 * want.array()).all();
    };
    QVERIFY(near(all.score(CmpqScore::MeanAbs), sumAbs / 32.0));
    QVERIFY(all.score(CmpqScore::MeanAbs) == meanAbs.score(CmpqScore::MeanAbs));
    QCOMPARE(all.score(CmpqScore::MaxAbs), mx);
    QCOMPARE(maxAbs.score(CmpqScore::MaxAbs), mx);
    QVERIFY(near(maxAbs.score(CmpqScore::MeanSquare), sumSq / 32.0));
    QCOMPARE(maxAbs.score(CmpqScore::L2), all.score(CmpqScore::L2));
    // One value off in one row of one group is seen.
    MatrixXfR y = x;
    y(20, 7) += 1e-3f * std::max(1.0f, std::fabs(y(20, 7)));
    CmpqChannelStats other(150, std::vector<CmpqScore>{CmpqScore::MeanAbs});
    QVERIFY(other.add(y).ok());
    QVERIFY(!near(other.score(CmpqScore::MeanAbs), sumAbs / 32.0));
    // Only what was asked for: the rest is not collected, and the solver refuses an empty score.
    QVERIFY(meanAbs.has(CmpqScore::MeanAbs) && !meanAbs.has(CmpqScore::MaxAbs) && !meanAbs.has(CmpqScore::L2));
    QVERIFY(maxAbs.has(CmpqScore::MeanSquare) && !maxAbs.has(CmpqScore::MeanAbs));
    QCOMPARE(meanAbs.score(CmpqScore::L2).size(), Eigen::Index(0));
    const MatrixXfR w = randomWeights(32, 150, 3);
    const auto refused = quantizeRowsCmpq(w, hessianOf(x), meanAbs.score(CmpqScore::MaxAbs), CmpqOptions{});
    QVERIFY(!refused.ok());
    QVERIFY2(refused.error().message.find("0 channel scores for 150") != std::string::npos,
             refused.error().message.c_str());
    QVERIFY(!meanAbs.add(MatrixXfR::Zero(2, 149)).ok());

    // A batch large enough to split its channels over threads gives the sums of the same rows
    // added in blocks of 512 (each below the threshold, on one thread), bit for bit: each
    // channel's sums run over its rows in the same groups whatever the slicing.
    const MatrixXfR big = correlatedInputs(2048, 160, 6);
    CmpqChannelStats whole(160), blocks(160);
    QVERIFY(whole.add(big).ok());
    for (Eigen::Index r0 = 0; r0 < big.rows(); r0 += 512)
        QVERIFY(blocks.add(big.middleRows(r0, 512)).ok());
    for (CmpqScore sc : kAllCmpqScores)
        QVERIFY(whole.score(sc) == blocks.score(sc));
}

void TestQuantCmpq::errorFeedbackBeatsPlain()
{
    int wins = 0;
    for (std::uint32_t seed = 1; seed <= 10; ++seed) {
        const MatrixXfR x = correlatedInputs(800, 96, seed);
        const Eigen::MatrixXd h = hessianOf(x);
        const MatrixXfR w = randomWeights(128, 96, seed + 100);
        CmpqChannelStats st(96);
        QVERIFY(st.add(x).ok());
        CmpqOptions o;
        o.bits = 3.0;
        o.quantOutliers = 0.0;
        o.errorFeedback = true;
        auto fb = quantizeRowsCmpq(w, h, st.score(o.score), o);
        o.errorFeedback = false;
        auto plain = quantizeRowsCmpq(w, h, st.score(o.score), o);
        QVERIFY(fb.ok() && plain.ok());
        QCOMPARE(fb->cmpq->bits.total(), plain->cmpq->bits.total());
        if (hessianErrors(w, fb->dequantized, h).relative() < hessianErrors(w, plain->dequantized, h).relative())
            ++wins;
    }
    QVERIFY2(wins >= 9, qPrintable(QString::number(wins)));
}

void TestQuantCmpq::kmeansBeatsUniformLevels()
{
    MatrixXfR w = randomWeights(512, 32, 77);
    for (Eigen::Index i = 0; i < w.size(); ++i) // heavy tails: where non-uniform levels pay
        w.data()[i] = w.data()[i] * w.data()[i] * w.data()[i] * 2500.0f;
    CmpqOptions o;
    o.bits = 3.0;
    o.actOutliers = o.quantOutliers = 0;
    o.errorFeedback = false;
    auto km = quantizeRowsCmpq(w, Eigen::MatrixXd(), Eigen::VectorXd::Ones(32), o);
    o.uniformLevels = true;
    auto un = quantizeRowsCmpq(w, Eigen::MatrixXd(), Eigen::VectorXd::Ones(32), o);
    QVERIFY(km.ok() && un.ok());
    QVERIFY((km->dequantized - w).squaredNorm() < 0.5 * (un->dequantized - w).squaredNorm());
}

// Channels of 256 rows or more are sorted by radix on the float bits: every codebook is still
// exactly the k-means of the channel's values in std::sort order (negative zeros, ties and
// repeated values included).
void TestQuantCmpq::longChannelCodebooksAreKmeansOfSortedValues()
{
    constexpr int kRows = 701; // odd: the radix sort's last unpaired element
    MatrixXfR w = randomWeights(kRows, 12, 31);
    for (int r = 0; r < kRows; r += 7) // ties, signed zeros and a repeated value
        w(r, 3) = (r % 2) ? -0.0f : 0.0f;
    w.col(5).head(300).setConstant(0.125f);
    CmpqOptions o;
    o.bits = 3.0;
    o.actOutliers = o.quantOutliers = 0;
    o.errorFeedback = false;
    auto q = quantizeRowsCmpq(w, Eigen::MatrixXd(), Eigen::VectorXd::LinSpaced(12, 1.0, 2.0), o);
    QVERIFY(q.ok());
    const CmpqCodes& c = *q->cmpq;
    for (int j = 0; j < 12; ++j) {
        const int b = c.channelBits[std::size_t(j)];
        if (b == 0) continue;
        std::vector<double> x(kRows);
        for (int r = 0; r < kRows; ++r)
            x[std::size_t(r)] = w(r, j);
        std::sort(x.begin(), x.end());
        const std::vector<double> wts(x.size(), 1.0);
        KmeansScratch s;
        KmeansResult km;
        kmeans1dWeighted(x.data(), wts.data(), x.size(), 1 << b, o.kmeansIters, o.kmeansTol, s, km);
        std::vector<float> expect;
        for (double v : km.centroids)
            expect.push_back(f16ToF32(f32ToF16(float(v))));
        std::sort(expect.begin(), expect.end());
        for (int k = 0; k < (1 << b); ++k)
            QCOMPARE(c.codebook[std::size_t(c.codebookOffset[std::size_t(j)] + k)], expect[std::size_t(k)]);
    }
}

// The solver's vectorised assignment (float comparisons with midpoints rounded down) is the
// nearest centroid in exact arithmetic, ties to the lower one: at midpoints that are floats, next
// to them, at midpoints between neighbouring floats, with repeated centroids and far outside.
void TestQuantCmpq::nearestCodesAreExact()
{
    const float ulp = std::nextafter(1.0f, 2.0f);
    const std::vector<std::vector<float>> books{
        {-1.0f, -0.25f, 0.5f, 0.5f, 2.0f, 3.0f, 3.0f, 7.5f},
        {1.0f, ulp},                                          // midpoint between two floats
        {-3.0f, -1.0f, 0.0f, 1e-8f, 0.25f, 0.5f, 1.0f, 4.0f}, // a midpoint far below float spacing at 0.25
    };
    std::mt19937 rng(9);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    for (const auto& cb : books) {
        std::vector<float> v;
        for (std::size_t c = 0; c + 1 < cb.size(); ++c) {
            const float mid = float(0.5 * (double(cb[c]) + double(cb[c + 1])));
            for (float x : {mid, std::nextafter(mid, -1e30f), std::nextafter(mid, 1e30f), cb[c], cb[c + 1]})
                v.push_back(x);
        }
        for (int i = 0; i < 2000; ++i)
            v.push_back(nd(rng));
        v.push_back(-1e6f);
        v.push_back(1e6f);
        std::vector<std::uint8_t> codes(v.size());
        cmpqNearestCodes(v.data(), v.size(), cb.data(), int(cb.size()), codes.data());
        for (std::size_t i = 0; i < v.size(); ++i) {
            int best = 0; // exact: differences of floats are exact in long double here
            for (int c = 1; c < int(cb.size()); ++c)
                if (std::fabs((long double)v[i] - cb[std::size_t(c)]) <
                    std::fabs((long double)v[i] - cb[std::size_t(best)]))
                    best = c;
            QVERIFY2(
                cb[codes[i]] == cb[std::size_t(best)], // the lowest-valued nearest centroid
                qPrintable(QString("v %1: code %2, nearest %3").arg(double(v[i]), 0, 'g', 17).arg(codes[i]).arg(best)));
        }
    }
}

void TestQuantCmpq::parallelEqualsSerial()
{
    const MatrixXfR x = correlatedInputs(500, 80, 6);
    const MatrixXfR w = randomWeights(1100, 80, 60); // 32 x 1100 weights per block: parallel
    CmpqChannelStats st(80);
    QVERIFY(st.add(x).ok());
    for (bool fb : {false, true}) {
        CmpqOptions o;
        o.bits = 3.25;
        o.errorFeedback = fb;
        o.blockSize = 32;
        o.actOutliers = 0.05; // four channels kept in F16, beside the sparse outliers
        auto a = quantizeRowsCmpq(w, hessianOf(x), st.score(o.score), o);
        const ParallelFor par = reversedFor(3);
        auto b = quantizeRowsCmpq(w, hessianOf(x), st.score(o.score), o, nullptr, &par);
        QVERIFY(a.ok() && b.ok());
        QVERIFY(a->codes == b->codes);
        QVERIFY(a->cmpq->codebook == b->cmpq->codebook);
        QVERIFY(a->cmpq->outlierIndex == b->cmpq->outlierIndex);
        // The column loop's row pieces (gptqPieceRows: 5 of at most 256 rows here) on workers too.
        QVERIFY(a->cmpq->outlierValue == b->cmpq->outlierValue);
        QCOMPARE(int(a->cmpq->keptChannels.size()), 4);
        QVERIFY((a->cmpq->keptValues.array() == b->cmpq->keptValues.array()).all());
        QVERIFY((a->dequantized.array() == b->dequantized.array()).all());
        QCOMPARE(a->proxyLoss, b->proxyLoss);
        const ParallelFor threads = threadPoolFor(3);
        auto c = quantizeRowsCmpq(w, hessianOf(x), st.score(o.score), o, nullptr, &threads);
        QVERIFY(c.ok());
        QVERIFY(c->codes == a->codes && c->cmpq->codebook == a->cmpq->codebook);
        QVERIFY((c->dequantized.array() == a->dequantized.array()).all());
        QCOMPARE(c->proxyLoss, a->proxyLoss);
    }
}

// Without error feedback the trial quantizes with the codebooks fitted on the original weights (a
// run without sparse outliers has the same), and the outliers are exactly its largest errors,
// ties to the lower flat index, whatever the workers' split: checked against a full sort of all
// errors, every one of them twice (twin channels), a tie across the cut.
void TestQuantCmpq::trialOutliersAreTheLargestErrors()
{
    const int rows = 700, cols = 64;
    MatrixXfR w = randomWeights(rows, cols, 31);
    // Equal errors: channels in twins, the second its twin's values a row up (cyclically: the same
    // codebook), so the later channel's copy of an error has the lower flat index.
    for (int j = 1; j < cols; j += 2)
        for (int r = 0; r < rows; ++r)
            w(r, j) = w((r + 1) % rows, j - 1);
    CmpqOptions o;
    o.bits = 5.0; // one level and room to spare: the same 3 bits in every channel at every outlier budget
    o.levels = {3};
    o.errorFeedback = false;
    o.quantOutliers = 0;
    auto plain = quantizeRowsCmpq(w, Eigen::MatrixXd(), heavyScores(cols, 5), o);
    QVERIFY(plain.ok());
    std::vector<std::pair<double, std::int64_t>> all;
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < cols; ++j) {
            const double e = double(w(r, j)) - double(plain->dequantized(r, j));
            all.push_back({e * e, std::int64_t(r) * cols + j}); // imp_j = 1 without H
        }
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (double frac : {0.0011, 0.004, 0.03}) { // 49, 179 and 1344 outliers
        o.quantOutliers = frac;
        const std::size_t want = std::size_t(std::floor(frac * rows * cols));
        QVERIFY(want > 0 && want < all.size());
        QVERIFY(all[want - 1].first > 0.0);
        if (want % 2) QCOMPARE(all[want].first, all[want - 1].first); // the cut splits a twin
        std::vector<std::int64_t> expect;
        for (std::size_t i = 0; i < want; ++i)
            expect.push_back(all[i].second);
        std::sort(expect.begin(), expect.end());
        const ParallelFor par = reversedFor(3), threads = threadPoolFor(2);
        for (const ParallelFor* p : {static_cast<const ParallelFor*>(nullptr), &par, &threads}) {
            auto q = quantizeRowsCmpq(w, Eigen::MatrixXd(), heavyScores(cols, 5), o, nullptr, p);
            QVERIFY(q.ok());
            QVERIFY(q->cmpq->channelBits == plain->cmpq->channelBits);
            QVERIFY2(q->cmpq->outlierIndex == expect, qPrintable(QString("fraction %1").arg(frac)));
        }
    }
}

// With error feedback, a factor CMPQ makes itself is made while the first codebooks are fitted (one
// more item of the first parallel-for): the result is the same as with the factor given, or found
// in the caller's cache, or made serially; the cache keeps it; a Hessian no damping makes positive
// definite is refused from inside the parallel-for too.
void TestQuantCmpq::factorBesideTheFirstCodebooks()
{
    const MatrixXfR x = correlatedInputs(500, 80, 16);
    const MatrixXfR w = randomWeights(700, 80, 17);
    const Eigen::MatrixXd h = hessianOf(x);
    CmpqChannelStats st(80);
    QVERIFY(st.add(x).ok());
    CmpqOptions o;
    o.bits = 2.75;
    o.blockSize = 32;
    const ParallelFor par = reversedFor(3), forward = [] {
        ParallelFor p; // items in order: the factor is the first one taken
        p.workers = 2;
        p.run = [](std::int64_t count, const std::function<void(std::int64_t, int)>& body) {
            for (std::int64_t i = 0; i < count; ++i)
                body(i, int(i % 2));
        };
        return p;
    }();
    const auto serial = quantizeRowsCmpq(w, h, st.score(o.score), o);
    QVERIFY(serial.ok());
    auto same = [&](const QuantizedRows& q) {
        return q.codes == serial->codes && q.cmpq->codebook == serial->cmpq->codebook &&
               q.cmpq->outlierIndex == serial->cmpq->outlierIndex && q.proxyLoss == serial->proxyLoss &&
               q.dampingRetries == serial->dampingRetries;
    };
    for (const ParallelFor* p : {&par, &forward}) {
        std::optional<GptqFactor> cache;
        CmpqOptions c = o;
        c.factorCache = &cache;
        const auto made = quantizeRowsCmpq(w, h, st.score(o.score), c, nullptr, p);
        QVERIFY(made.ok() && same(*made));
        QVERIFY(cache && cache->fits(cmpqFeedbackOptions(o), 80));
        const auto cached = quantizeRowsCmpq(w, h, st.score(o.score), c, nullptr, p);
        QVERIFY(cached.ok() && same(*cached));
        CmpqOptions given = o;
        given.factor = &*cache;
        const auto withGiven = quantizeRowsCmpq(w, h, st.score(o.score), given, nullptr, p);
        QVERIFY(withGiven.ok() && same(*withGiven));
    }
    const Eigen::MatrixXd negative = -h;
    o.maxDampingRetries = 2;
    for (const ParallelFor* p : {static_cast<const ParallelFor*>(nullptr), &par, &forward}) {
        const auto refused = quantizeRowsCmpq(w, negative, st.score(o.score), o, nullptr, p);
        QVERIFY(!refused.ok());
        QCOMPARE(refused.error().code, ErrorCode::NumericalError);
        QVERIFY2(refused.error().message.find("not positive definite after 2 damping retries") != std::string::npos,
                 refused.error().message.c_str());
    }
}

// With error feedback and dynamic codebooks the quantization outliers are picked per column block:
// the whole budget is used, every block takes a share, the stored values reconstruct exactly, and
// they lower the solve's error.
void TestQuantCmpq::blockOutliersWithFeedback()
{
    const MatrixXfR x = correlatedInputs(700, 96, 12);
    MatrixXfR w = randomWeights(512, 96, 13);
    for (int i = 0; i < 60; ++i) // heavy tails in every block
        w((i * 29) % 512, (i * 7) % 96) *= 8.0f;
    const Eigen::MatrixXd h = hessianOf(x);
    CmpqChannelStats st(96);
    QVERIFY(st.add(x).ok());
    CmpqOptions o;
    o.bits = 3.0;
    o.blockSize = 32;
    o.quantOutliers = 0.004;
    auto with = quantizeRowsCmpq(w, h, st.score(o.score), o);
    o.quantOutliers = 0;
    auto without = quantizeRowsCmpq(w, h, st.score(o.score), o);
    QVERIFY(with.ok() && without.ok());
    const CmpqCodes& c = *with->cmpq;
    QCOMPARE(std::int64_t(c.outlierIndex.size()), std::int64_t(std::floor(0.004 * 512 * 96)));
    QVERIFY(std::is_sorted(c.outlierIndex.begin(), c.outlierIndex.end()));
    QVERIFY(validateCmpqCodes(with->codes, c).ok());
    QCOMPARE((dequantizeRowsCmpq(with->codes, c) - with->dequantized).cwiseAbs().maxCoeff(), 0.0f);
    std::array<int, 3> perBlock{};
    for (std::size_t i = 0; i < c.outlierIndex.size(); ++i) {
        const int r = int(c.outlierIndex[i] / 96), col = int(c.outlierIndex[i] % 96);
        ++perBlock[std::size_t(col / 32)];
        QCOMPARE(with->dequantized(r, col), c.outlierValue[i]);
        QCOMPARE(f16ToF32(f32ToF16(c.outlierValue[i])), c.outlierValue[i]);
    }
    for (int n : perBlock)
        QVERIFY2(n > 0, "a block without outliers");
    QVERIFY(c.bitsPerWeight(512) <= 3.0);
    QVERIFY2(with->errorTrace < without->errorTrace,
             qPrintable(QString("%1 vs %2").arg(with->errorTrace).arg(without->errorTrace)));
}

void TestQuantCmpq::badInput()
{
    const MatrixXfR w = randomWeights(64, 16, 1);
    CmpqOptions o;
    o.bits = 4;
    o.errorFeedback = false;
    QVERIFY(!quantizeRowsCmpq(w, Eigen::MatrixXd(), Eigen::VectorXd::Ones(15), o).ok());
    o.errorFeedback = true;
    QVERIFY(!quantizeRowsCmpq(w, Eigen::MatrixXd(), Eigen::VectorXd::Ones(16), o).ok()); // needs H
    o.errorFeedback = false;
    o.levels = {3, 2};
    QVERIFY(!quantizeRowsCmpq(w, Eigen::MatrixXd(), Eigen::VectorXd::Ones(16), o).ok());
    o.levels = {2, 3, 4};
    o.actOutliers = 0.7;
    QVERIFY(!quantizeRowsCmpq(w, Eigen::MatrixXd(), Eigen::VectorXd::Ones(16), o).ok());
    o.actOutliers = 0;
    Eigen::VectorXd nan = Eigen::VectorXd::Ones(16);
    nan[3] = std::nan("");
    QVERIFY(!quantizeRowsCmpq(w, Eigen::MatrixXd(), nan, o).ok());
    RunContext ctx;
    ctx.requestCancel();
    o.errorFeedback = true;
    const MatrixXfR x = correlatedInputs(100, 16, 2);
    auto c = quantizeRowsCmpq(w, hessianOf(x), Eigen::VectorXd::Ones(16), o, &ctx);
    QVERIFY(!c.ok() && c.error().code == ErrorCode::Cancelled);
}

QTEST_GUILESS_MAIN(TestQuantCmpq)
#include "tst_quant_cmpq.moc"
