// Tensor statistics against values computed by hand and by a naive reference.

#include "eval/tensor_stats.h"

#include <QTest>

#include <cmath>
#include <random>

using namespace qb::eval;
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

class TestTensorStats : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void smallMatrixByHand()
    {
        Mat x(2, 3);
        x << 1, -2, 3, -4, 5, -6;
        const TensorStats s = computeTensorStats(x, 4);
        QCOMPARE(s.moments.count, 6);
        QCOMPARE(s.moments.min, -6.0);
        QCOMPARE(s.moments.max, 5.0);
        QCOMPARE(s.moments.mean, -0.5);
        // population variance of {1,-2,3,-4,5,-6} about -0.5
        const double var = (2.25 + 2.25 + 12.25 + 12.25 + 30.25 + 30.25) / 6.0;
        QVERIFY(std::abs(s.moments.std - std::sqrt(var)) < 1e-12);
        QCOMPARE(s.rowMaxAbs, (std::vector<float>{3, 6}));
        QCOMPARE(s.colMaxAbs, (std::vector<float>{4, 5, 6}));
        QCOMPARE(s.histogram.total(), 6);
        // bins of width 2.75 over [-6, 5]: [-6,-3.25) {-6,-4}, [-3.25,-0.5) {-2}, [-0.5,2.25) {1},
        // [2.25,5] {3,5}
        QCOMPARE(s.histogram.counts, (std::vector<std::int64_t>{2, 1, 1, 2}));
        QCOMPARE(topIndices(s.colMaxAbs, 2), (std::vector<int>{2, 1}));
    }
    void gaussianKurtosisNearZeroAndOutliersRaiseIt()
    {
        std::mt19937 rng(7);
        std::normal_distribution<float> n(0.f, 1.f);
        Mat x(256, 256);
        for (Eigen::Index i = 0; i < x.size(); ++i)
            x.data()[i] = n(rng);
        const Moments g = computeMoments(x);
        QVERIFY2(std::abs(g.kurtosis) < 0.1, qPrintable(QString::number(g.kurtosis)));
        QVERIFY(std::abs(g.std - 1.0) < 0.01);
        x(3, 17) = 60.f; // one outlier channel
        const TensorStats s = computeTensorStats(x, 64);
        QVERIFY(s.moments.kurtosis > 10);
        QCOMPARE(topIndices(s.colMaxAbs, 1).front(), 17);
        QCOMPARE(topIndices(s.rowMaxAbs, 1).front(), 3);
    }
    void nonFiniteValuesAreCountedAndSkipped()
    {
        Mat x(1, 4);
        x << 1.f, NAN, INFINITY, 3.f;
        const TensorStats s = computeTensorStats(x, 2);
        QCOMPARE(s.moments.count, 2);
        QCOMPARE(s.moments.nonFinite, 2);
        QCOMPARE(s.moments.mean, 2.0);
        QCOMPARE(s.histogram.total(), 2);
    }
    void constantTensorHasOneOccupiedBin()
    {
        Mat x = Mat::Constant(3, 3, 0.25f);
        const TensorStats s = computeTensorStats(x, 10);
        QCOMPARE(s.moments.std, 0.0);
        QCOMPARE(s.moments.kurtosis, 0.0);
        QCOMPARE(s.histogram.total(), 9);
        QVERIFY(s.histogram.lo < 0.25 && s.histogram.hi > 0.25);
    }
};

QTEST_GUILESS_MAIN(TestTensorStats)
#include "tst_tensor_stats.moc"
