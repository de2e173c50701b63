// Streaming activation statistics: exact counts under range growth, moments equal to the
// two-pass computation, and per-channel maxima / mean squares.

#include "eval/activation_stats.h"

#include <QTest>

#include <random>

using namespace qb::eval;
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

class TestActivationStats : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void growingHistogramKeepsEveryValue()
    {
        GrowingHistogram h(64);
        std::mt19937 rng(3);
        std::normal_distribution<float> n(0.f, 1.f);
        std::vector<float> v(10000);
        for (auto& x : v)
            x = n(rng);
        v[5000] = 250.f; // forces several doublings upwards
        v[7000] = -90.f; // and downwards
        h.add(v.data(), 5000);
        h.add(v.data() + 5000, 5000);
        const Histogram out = h.histogram();
        QCOMPARE(out.total(), 10000);
        QVERIFY(out.lo <= -90 && out.hi > 250);
        const int nb = int(out.counts.size());
        QVERIFY2(nb >= 16 && nb <= 64, qPrintable(QString::number(nb))); // empty edge bins trimmed
        QVERIFY(out.counts.front() > 0 && out.counts.back() > 0);
        // Every value lies in the bin the final edges assign it to.
        std::vector<std::int64_t> expect(std::size_t(nb), 0);
        for (float x : v) {
            const auto b = std::clamp<long long>((long long)((x - out.lo) / out.binWidth()), 0, nb - 1);
            ++expect[std::size_t(b)];
        }
        // Bin edges only ever merge, so recomputing from scratch on the final edges agrees
        // except for values that sat exactly on a boundary; allow no difference in total and
        // at most a handful moved by rounding.
        std::int64_t moved = 0;
        for (int i = 0; i < nb; ++i)
            moved += std::abs(expect[std::size_t(i)] - out.counts[std::size_t(i)]);
        QVERIFY2(moved <= 4, qPrintable(QString::number(moved)));
    }
    void momentsMatchTwoPass()
    {
        std::mt19937 rng(11);
        std::student_t_distribution<float> t(5.f);
        Mat all(600, 24);
        for (Eigen::Index i = 0; i < all.size(); ++i)
            all.data()[i] = 0.5f + t(rng);
        ActivationStats s(32);
        s.add(all.topRows(200));
        s.add(all.middleRows(200, 350));
        s.add(all.bottomRows(50));
        const Moments ref = computeMoments(all);
        const Moments got = s.moments();
        QCOMPARE(got.count, ref.count);
        QCOMPARE(got.min, ref.min);
        QCOMPARE(got.max, ref.max);
        QVERIFY(std::abs(got.mean - ref.mean) < 1e-9);
        QVERIFY(std::abs(got.std - ref.std) < 1e-9);
        QVERIFY(std::abs(got.kurtosis - ref.kurtosis) < 1e-6);
        QCOMPARE(s.tokens(), 600);
        const TensorStats ts = computeTensorStats(all, 8);
        QCOMPARE(s.channelMaxAbs(), ts.colMaxAbs);
        const auto ms = s.channelMeanSquare();
        for (Eigen::Index c = 0; c < all.cols(); ++c) {
            const double ref2 = all.col(c).cast<double>().squaredNorm() / 600.0;
            QVERIFY(std::abs(ms[std::size_t(c)] - ref2) < 1e-5 * std::max(1.0, ref2));
        }
        QCOMPARE(s.histogram().total(), 600 * 24);
    }
};

QTEST_GUILESS_MAIN(TestActivationStats)
#include "tst_activation_stats.moc"
