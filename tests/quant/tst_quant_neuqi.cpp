// NeUQI (METHODS.md §2, §6.2 items 8-13): the zero-point solver against an exhaustive exact
// search, NeUQI <= Min-Max per group under the diagonal proxy, invariances, exactly
// representable groups, the integer-z relaxation and the scale grid.

#include "quant/neuqi.h"
#include "quant/uniform_grid.h"

#include <QTest>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace qb;
using namespace qb::quant;

namespace {
constexpr double kZpRelTol = 1e-12;     // solver loss vs exhaustive optimum (relative)
constexpr double kZpAbsTol = 1e-15;     // ... absolute floor for near-zero optima
constexpr double kInvRelTol = 1e-9;     // invariances under non-power-of-two rescaling
constexpr double kExactLossTol = 1e-20; // exactly representable group, relative to s0^2

double exactLoss(const std::vector<double>& u, const std::vector<double>& a, int levels, double z)
{
    double f = 0.0;
    for (std::size_t j = 0; j < u.size(); ++j) {
        const double q = std::clamp(std::nearbyint(u[j] - z), 0.0, double(levels - 1));
        f += a[j] * (u[j] - z - q) * (u[j] - z - q);
    }
    return f;
}

// Plain exhaustive search: every breakpoint u_j - m - 1/2 on [min u - L - 1, max u + 1], codes
// fixed at each segment midpoint, closed-form minimiser clamped to the segment.
double exhaustiveZeroPointLoss(const std::vector<double>& u, const std::vector<double>& a, int levels)
{
    const double lo = *std::min_element(u.begin(), u.end()) - levels - 1.0;
    const double hi = *std::max_element(u.begin(), u.end()) + 1.0;
    std::vector<double> pts{lo, hi};
    for (double x : u)
        for (int m = 0; m <= levels - 2; ++m)
            pts.push_back(x - m - 0.5);
    std::sort(pts.begin(), pts.end());
    double best = std::numeric_limits<double>::infinity();
    double asum = 0.0;
    for (double x : a)
        asum += x;
    for (std::size_t k = 0; k + 1 < pts.size(); ++k) {
        const double zl = pts[k], zr = pts[k + 1];
        const double mid = 0.5 * (zl + zr);
        double mu = 0.0;
        for (std::size_t j = 0; j < u.size(); ++j) {
            const double q = std::clamp(std::nearbyint(u[j] - mid), 0.0, double(levels - 1));
            mu += a[j] * (u[j] - q);
        }
        const double z = std::clamp(mu / asum, zl, zr);
        best = std::min(best, exactLoss(u, a, levels, z));
    }
    return best;
}

enum class Dist { Normal, HeavyTail, Outlier, Integer, Duplicates };

void drawGroup(std::mt19937& rng, Dist dist, int g, std::vector<double>& w, std::vector<double>& h)
{
    std::normal_distribution<double> nd(0.0, 1.0);
    std::student_t_distribution<double> td(1.5);
    std::uniform_int_distribution<int> id(-6, 6);
    w.resize(std::size_t(g));
    h.resize(std::size_t(g));
    for (int j = 0; j < g; ++j) {
        switch (dist) {
        case Dist::Normal: w[std::size_t(j)] = nd(rng); break;
        case Dist::HeavyTail: w[std::size_t(j)] = td(rng); break;
        case Dist::Outlier: w[std::size_t(j)] = nd(rng) * (j == 0 ? 30.0 : 1.0); break;
        case Dist::Integer: w[std::size_t(j)] = double(id(rng)); break;
        case Dist::Duplicates: w[std::size_t(j)] = double(id(rng) % 3) * 0.37; break;
        }
        h[std::size_t(j)] = std::exp(2.0 * nd(rng)); // heavy-tailed positive weights
    }
}

const char* distName(Dist d)
{
    switch (d) {
    case Dist::Normal: return "normal";
    case Dist::HeavyTail: return "student-t";
    case Dist::Outlier: return "outlier";
    case Dist::Integer: return "integer";
    case Dist::Duplicates: return "duplicates";
    }
    return "?";
}
} // namespace

Q_DECLARE_METATYPE(Dist)

class TestQuantNeuqi : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void zeroPointMatchesExhaustiveSearch_data()
    {
        QTest::addColumn<int>("bits");
        QTest::addColumn<int>("groupSize");
        QTest::addColumn<Dist>("dist");
        QTest::addColumn<int>("trials");
        for (int k : {1, 2, 3, 4})
            for (int g : {2, 3, 8, 16, 64, 256})
                for (Dist d : {Dist::Normal, Dist::HeavyTail, Dist::Outlier, Dist::Integer, Dist::Duplicates}) {
                    const int trials = g <= 16 ? 60 : (g == 64 ? 8 : 2);
                    QTest::addRow("k%d g%d %s", k, g, distName(d)) << k << g << d << trials;
                }
    }
    void zeroPointMatchesExhaustiveSearch()
    {
        QFETCH(int, bits);
        QFETCH(int, groupSize);
        QFETCH(Dist, dist);
        QFETCH(int, trials);
        std::mt19937 rng(1000u * std::uint32_t(bits) + std::uint32_t(groupSize) + 7u * std::uint32_t(dist));
        std::uniform_real_distribution<double> sd(0.05, 3.0);
        const int levels = 1 << bits;
        NeuqiScratch scratch;
        std::vector<double> w, h;
        for (int t = 0; t < trials; ++t) {
            drawGroup(rng, dist, groupSize, w, h);
            std::sort(w.begin(), w.end());
            const double s = dist == Dist::Integer ? 1.0 : sd(rng); // integer: ties on breakpoints
            std::vector<double> u(w.size()), a(h.size());
            double hs = 0.0;
            for (double x : h)
                hs += x;
            for (std::size_t j = 0; j < w.size(); ++j) {
                u[j] = w[j] / s;
                a[j] = h[j] / hs;
            }
            const ZeroPointSolution zp = solveZeroPointNeuqi(u.data(), a.data(), groupSize, levels, scratch);
            const double ref = exhaustiveZeroPointLoss(u, a, levels);
            QVERIFY2(std::abs(zp.loss - ref) <= kZpRelTol * ref + kZpAbsTol,
                     qPrintable(QStringLiteral("trial %1: solver %2 exhaustive %3")
                                    .arg(t)
                                    .arg(zp.loss, 0, 'g', 17)
                                    .arg(ref, 0, 'g', 17)));
            QVERIFY(std::abs(exactLoss(u, a, levels, zp.zero) - zp.loss) <= kZpAbsTol + kZpRelTol * zp.loss);
        }
    }

    void neuqiNeverWorseThanMinMaxPerGroup_data()
    {
        QTest::addColumn<int>("bits");
        QTest::addColumn<int>("groupSize");
        for (int k : {2, 3, 4})
            for (int g : {32, 128})
                QTest::addRow("k%d g%d", k, g) << k << g;
    }
    void neuqiNeverWorseThanMinMaxPerGroup()
    {
        QFETCH(int, bits);
        QFETCH(int, groupSize);
        std::mt19937 rng(31u * std::uint32_t(bits) + std::uint32_t(groupSize));
        NeuqiScratch scratch;
        NeuqiOptions guarded, unguarded;
        unguarded.minMaxGuard = false;
        std::vector<double> w, h;
        const int groups = groupSize == 32 ? 120 : 30;
        double sumRatioGptq = 0.0, sumRatioPlain = 0.0, worst = 0.0;
        int unguardedMisses = 0;
        for (int t = 0; t < groups; ++t) {
            drawGroup(rng, t % 2 ? Dist::HeavyTail : Dist::Normal, groupSize, w, h);
            const int levels = gridLevels(bits);
            double lossNeuqi = 0.0, lossUnguarded = 0.0;
            const GroupParams p = fitGroupNeuqi(w.data(), h.data(), groupSize, bits, guarded, scratch, &lossNeuqi);
            (void)fitGroupNeuqi(w.data(), h.data(), groupSize, bits, unguarded, scratch, &lossUnguarded);
            QCOMPARE(groupLossUniform(w.data(), h.data(), groupSize, p, levels), lossNeuqi);
            const double lossGptq = groupLossUniform(w.data(), h.data(), groupSize,
                                                     fitGroupMinMaxGptq(w.data(), groupSize, bits, false), levels);
            const double lossPlain =
                groupLossUniform(w.data(), h.data(), groupSize, fitGroupMinMaxPlain(w.data(), groupSize, bits), levels);
            QVERIFY(lossNeuqi <= lossGptq);
            QVERIFY(lossNeuqi <= lossPlain);
            if (lossUnguarded > std::min(lossGptq, lossPlain)) ++unguardedMisses;
            sumRatioGptq += lossNeuqi / lossGptq;
            sumRatioPlain += lossNeuqi / lossPlain;
            worst = std::max(worst, lossNeuqi / lossPlain);
        }
        qInfo("k=%d g=%d: NeUQI/MinMax(GPTQ ref) mean %.3f, NeUQI/MinMax(plain) mean %.3f worst %.3f, "
              "guard needed in %d/%d groups",
              bits, groupSize, sumRatioGptq / groups, sumRatioPlain / groups, worst, unguardedMisses, groups);
    }

    void invariances_data()
    {
        QTest::addColumn<double>("wScale");
        QTest::addColumn<double>("wShift");
        QTest::addColumn<double>("hScale");
        QTest::addColumn<bool>("bitExact");
        QTest::newRow("w * 4 (exact)") << 4.0 << 0.0 << 1.0 << true;
        QTest::newRow("w * 3") << 3.0 << 0.0 << 1.0 << false;
        QTest::newRow("w * 0.37") << 0.37 << 0.0 << 1.0 << false;
        QTest::newRow("w + 0.75") << 1.0 << 0.75 << 1.0 << false;
        QTest::newRow("w - 2.1") << 1.0 << -2.1 << 1.0 << false;
        QTest::newRow("h * 8 (exact)") << 1.0 << 0.0 << 8.0 << true;
        QTest::newRow("h * 3") << 1.0 << 0.0 << 3.0 << false;
    }
    void invariances()
    {
        QFETCH(double, wScale);
        QFETCH(double, wShift);
        QFETCH(double, hScale);
        QFETCH(bool, bitExact);
        std::mt19937 rng(4242u);
        NeuqiScratch scratch;
        NeuqiOptions opts;
        opts.minMaxGuard = false; // the integer Min-Max guard is not shift-invariant
        std::vector<double> w, h;
        for (int bits : {2, 3, 4})
            for (int t = 0; t < 20; ++t) {
                drawGroup(rng, Dist::Normal, 32, w, h);
                std::vector<double> w2(w.size()), h2(h.size());
                for (std::size_t j = 0; j < w.size(); ++j) {
                    w2[j] = w[j] * wScale + wShift;
                    h2[j] = h[j] * hScale;
                }
                double l1 = 0, l2 = 0;
                const GroupParams p1 = fitGroupNeuqi(w.data(), h.data(), 32, bits, opts, scratch, &l1);
                const GroupParams p2 = fitGroupNeuqi(w2.data(), h2.data(), 32, bits, opts, scratch, &l2);
                const double expectScale = p1.scale * wScale;
                const double expectZero = p1.zero + wShift / expectScale;
                const double expectLoss = l1 * wScale * wScale;
                if (bitExact) {
                    QCOMPARE(p2.scale, expectScale);
                    QCOMPARE(p2.zero, expectZero);
                    QCOMPARE(l2, expectLoss);
                } else {
                    QVERIFY(std::abs(p2.scale - expectScale) <= kInvRelTol * expectScale);
                    QVERIFY(std::abs(p2.zero - expectZero) <= kInvRelTol * (1.0 + std::abs(expectZero)));
                    QVERIFY(std::abs(l2 - expectLoss) <= kInvRelTol * expectLoss);
                }
            }
    }

    void exactlyRepresentableGroupHasZeroLoss_data()
    {
        QTest::addColumn<int>("bits");
        for (int k : {2, 3, 4, 8})
            QTest::addRow("k%d", k) << k;
    }
    void exactlyRepresentableGroupHasZeroLoss()
    {
        QFETCH(int, bits);
        const int levels = gridLevels(bits);
        std::mt19937 rng(5u + std::uint32_t(bits));
        std::uniform_real_distribution<double> sd(0.001, 0.1), zd(-200.0, 100.0);
        std::uniform_int_distribution<int> qd(0, levels - 1);
        std::normal_distribution<double> nd(0.0, 1.0);
        NeuqiScratch scratch;
        for (int t = 0; t < 30; ++t) {
            const double s0 = sd(rng), z0 = zd(rng) / levels;
            std::vector<double> w(40), h(40);
            for (std::size_t j = 0; j < w.size(); ++j) {
                const int q = j == 0 ? 0 : (j == 1 ? levels - 1 : qd(rng));
                w[j] = s0 * (z0 + q);
                h[j] = std::exp(nd(rng));
            }
            double loss = -1;
            (void)fitGroupNeuqi(w.data(), h.data(), 40, bits, NeuqiOptions{}, scratch, &loss);
            QVERIFY2(loss <= kExactLossTol * s0 * s0, qPrintable(QString::number(loss)));
        }
        std::vector<double> c(16, 0.123), h(16, 1.0);
        double loss = -1;
        (void)fitGroupNeuqi(c.data(), h.data(), 16, bits, NeuqiOptions{}, scratch, &loss);
        QVERIFY2(loss <= 1e-30, qPrintable(QString::number(loss)));
    }

    void realZeroDominatesIntegerZero()
    {
        // Item 12: on every scale of the NeUQI grid the real-z solution is no worse than the best
        // integer z (NeUQI_int's exhaustive search, here over a range wider than [-(L-1), 0]).
        std::mt19937 rng(77u);
        NeuqiScratch scratch;
        const NeuqiOptions opts;
        std::vector<double> w, h;
        for (int bits : {2, 3, 4})
            for (int t = 0; t < 10; ++t) {
                drawGroup(rng, Dist::HeavyTail, 64, w, h);
                std::sort(w.begin(), w.end());
                const int levels = gridLevels(bits);
                const double sMm = neuqiMinMaxScale(w.data(), 64, levels);
                std::vector<double> u(64), a(64);
                double hs = 0;
                for (double x : h)
                    hs += x;
                for (int j = 0; j < 64; ++j)
                    a[std::size_t(j)] = h[std::size_t(j)] / hs;
                for (int i = 1; i <= opts.coarseSteps; ++i) {
                    const double s = neuqiCoarseScale(sMm, i, opts);
                    for (int j = 0; j < 64; ++j)
                        u[std::size_t(j)] = w[std::size_t(j)] / s;
                    const double real = solveZeroPointNeuqi(u.data(), a.data(), 64, levels, scratch).loss;
                    const double zlo = std::floor(u.front()) - levels - 1, zhi = std::ceil(u.back()) + 1;
                    double bestInt = std::numeric_limits<double>::infinity();
                    for (double z = zlo; z <= zhi; z += 1.0)
                        bestInt = std::min(bestInt, exactLoss(u, a, levels, z));
                    QVERIFY(real <= bestInt * (1.0 + kZpRelTol) + kZpAbsTol);
                }
            }
    }

    void scaleGridContainsMinMaxAndStaysPositive()
    {
        const NeuqiOptions opts;
        QCOMPARE(opts.coarseSteps, 64);
        QCOMPARE(opts.totalSteps / opts.coarseSteps, 32);
        for (double sMm : {1.0, 0.3, 1e-3, 7.77, 1e-8}) {
            QCOMPARE(neuqiCoarseScale(sMm, opts.coarseSteps, opts), sMm);
            const double smallest = neuqiCoarseScale(sMm, 1, opts);
            QVERIFY(smallest > 0);
            QVERIFY(neuqiFineScale(smallest, sMm, -16, opts) > 0); // s_mm/64 - s_mm/128
            QVERIFY(neuqiFineScale(sMm, sMm, 16, opts) <= sMm * (1.0 + 1.0 / 128) * (1 + 1e-15));
        }
        const double tiny[3] = {1.0, 1.0 + 1e-12, 1.0};
        QCOMPARE(neuqiMinMaxScale(tiny, 3, 4), 1.0); // s_mm < 1e-9 -> 1
    }
};

QTEST_GUILESS_MAIN(TestQuantNeuqi)
#include "tst_quant_neuqi.moc"
