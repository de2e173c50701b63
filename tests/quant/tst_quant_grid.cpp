// Uniform grid basics (METHODS.md §6.2 items 1, 2, rounding, short last group), the reference
// Min-Max edge cases, bits-per-weight accounting and the method traits table.

#include "base/dtype.h"
#include "quant/gptq.h"
#include "quant/method_traits.h"
#include "quant/stored_grid.h"
#include "quant/uniform_grid.h"
#include "quant_test_util.h"

#include <QTest>

#include <cmath>
#include <set>
#include <string>

using namespace qb;
using namespace qb::quant;

Q_DECLARE_METATYPE(qb::quant::GridInit)

namespace {
constexpr double kBpwTol = 1e-12;
} // namespace

class TestQuantGrid : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void codesInRangeIdempotentOnGrid_data()
    {
        QTest::addColumn<int>("bits");
        QTest::addColumn<int>("groupSize");
        QTest::addColumn<bool>("sym");
        QTest::addColumn<GridInit>("init");
        for (int bits : {2, 3, 4, 8})
            for (int g : {-1, 16, 20})
                for (bool sym : {false, true})
                    for (GridInit init : {GridInit::MinMax, GridInit::Neuqi}) {
                        if (sym && init == GridInit::Neuqi) continue;
                        QTest::addRow("%dbit g%d %s %s", bits, g, sym ? "sym" : "asym",
                                      init == GridInit::Neuqi ? "neuqi" : "minmax")
                            << bits << g << sym << init;
                    }
    }
    void codesInRangeIdempotentOnGrid()
    {
        QFETCH(int, bits);
        QFETCH(int, groupSize);
        QFETCH(bool, sym);
        QFETCH(GridInit, init);
        const MatrixXfR w = test::randomWeights(6, 70, 11u + std::uint32_t(bits));
        const GridSpec spec{bits, groupSize, sym};
        auto q = quantizeRowsRtn(w, spec, init);
        QVERIFY(q.ok());
        const int levels = gridLevels(bits);
        for (int r = 0; r < w.rows(); ++r)
            for (int c = 0; c < w.cols(); ++c) {
                const int code = q->codes(r, c);
                QVERIFY(code >= 0 && code < levels);
                const int g = q->groupIndex[std::size_t(c)];
                const double expect = q->scales(r, g) * (q->zeros(r, g) + code);
                QCOMPARE(q->dequantized(r, c), float(expect)); // stored as float of the double grid point
                QVERIFY(q->scales(r, g) > 0.0);
            }
        // Q(Q(w)) = Q(w): requantising the dequantised weights with the same parameters.
        auto again = quantizeRowsUniform(q->dequantized, bits, q->scales, q->zeros, q->groupIndex);
        QVERIFY(again.ok());
        QVERIFY(again->codes == q->codes);
        QVERIFY(again->dequantized == q->dequantized);
        QVERIFY(dequantizeRowsUniform(*q) == q->dequantized);
    }

    void plainMinMaxMapsExtremesToEndCodes_data()
    {
        QTest::addColumn<int>("bits");
        for (int b : {2, 3, 4, 5, 8})
            QTest::newRow((std::to_string(b) + " bits").c_str()) << b;
    }
    void plainMinMaxMapsExtremesToEndCodes()
    {
        QFETCH(int, bits);
        std::mt19937 rng(7u + std::uint32_t(bits));
        std::uniform_real_distribution<double> ud(-3.0, 5.0);
        for (int t = 0; t < 200; ++t) {
            double w[17];
            for (double& x : w)
                x = ud(rng);
            const GroupParams p = fitGroupMinMaxPlain(w, 17, bits);
            const auto [lo, hi] = std::minmax_element(w, w + 17);
            QCOMPARE(quantizeCodeUniform(*lo, p, gridLevels(bits)), 0);
            QCOMPARE(quantizeCodeUniform(*hi, p, gridLevels(bits)), gridLevels(bits) - 1);
        }
    }

    void roundHalfToEven_data()
    {
        QTest::addColumn<double>("w");
        QTest::addColumn<double>("zero");
        QTest::addColumn<int>("code");
        // scale 1: w/s is exactly the half-integer.
        QTest::newRow("0.5 -> 0") << 0.5 << 0.0 << 0;
        QTest::newRow("1.5 -> 2") << 1.5 << 0.0 << 2;
        QTest::newRow("2.5 -> 2") << 2.5 << 0.0 << 2;
        QTest::newRow("3.5 -> 4") << 3.5 << 0.0 << 4;
        // Integer zero Z = 8 (sym 4-bit): code = round(w/s) + Z, as the reference.
        QTest::newRow("Z8 -0.5 -> 8") << -0.5 << -8.0 << 8;
        QTest::newRow("Z8 0.5 -> 8") << 0.5 << -8.0 << 8;
        QTest::newRow("Z8 1.5 -> 10") << 1.5 << -8.0 << 10;
        QTest::newRow("Z8 -1.5 -> 6") << -1.5 << -8.0 << 6;
        // Real zero: code = round(w/s - z).
        QTest::newRow("z-0.25 2.25 -> 2") << 2.25 << -0.25 << 2;
        QTest::newRow("z-0.25 0.25 -> 0") << 0.25 << -0.25 << 0;
    }
    void roundHalfToEven()
    {
        QFETCH(double, w);
        QFETCH(double, zero);
        QFETCH(int, code);
        QCOMPARE(quantizeCodeUniform(w, GroupParams{1.0, zero}, 16), code);
        QCOMPARE(roundHalfEvenUniform(2.5), 2.0);
        QCOMPARE(roundHalfEvenUniform(-2.5), -2.0);
    }

    void shorterLastGroup()
    {
        const int cols = 70, g = 32;
        const MatrixXfR w = test::randomWeights(4, cols, 99u);
        auto q = quantizeRowsRtn(w, GridSpec{3, g, false}, GridInit::MinMax);
        QVERIFY(q.ok());
        QCOMPARE(groupCount(g, cols), 3);
        QCOMPARE(int(q->scales.cols()), 3);
        QCOMPARE(q->groupIndex[63], 1);
        QCOMPARE(q->groupIndex[64], 2);
        QCOMPARE(q->groupIndex[69], 2);
        for (int r = 0; r < 4; ++r) {
            double last[6];
            for (int c = 0; c < 6; ++c)
                last[c] = double(w(r, 64 + c));
            const GroupParams p = fitGroupMinMaxGptq(last, 6, 3, false);
            QCOMPARE(q->scales(r, 2), p.scale);
            QCOMPARE(q->zeros(r, 2), p.zero);
        }
        QVERIFY(std::abs(bitsPerWeightUniform(4, g, cols, false) - (4.0 + 3.0 * 32.0 / 70.0)) < kBpwTol);
    }

    void minMaxReferenceEdgeCases_data()
    {
        QTest::addColumn<QVector<double>>("w");
        QTest::addColumn<bool>("sym");
        QTest::addColumn<double>("scale");
        QTest::addColumn<double>("zeroPoint"); // integer Z = -z
        // maxq = 15 (4 bits)
        QTest::newRow("asym straddling 0") << QVector<double>{-1.0, 2.0} << false << 3.0 / 15 << 5.0;
        QTest::newRow("asym all positive: range widened to 0") << QVector<double>{1.0, 3.0} << false << 3.0 / 15 << 0.0;
        QTest::newRow("asym all negative: range widened to 0")
            << QVector<double>{-3.0, -1.5} << false << 3.0 / 15 << 15.0;
        QTest::newRow("all zero -> [-1, 1]") << QVector<double>{0.0, 0.0} << false << 2.0 / 15 << 8.0;
        QTest::newRow("sym straddling") << QVector<double>{-1.0, 3.0} << true << 6.0 / 15 << 8.0;
        QTest::newRow("sym all positive keeps xmin = 0") << QVector<double>{1.0, 3.0} << true << 3.0 / 15 << 8.0;
        QTest::newRow("sym all zero") << QVector<double>{0.0, 0.0} << true << 2.0 / 15 << 8.0;
    }
    void minMaxReferenceEdgeCases()
    {
        QFETCH(QVector<double>, w);
        QFETCH(bool, sym);
        QFETCH(double, scale);
        QFETCH(double, zeroPoint);
        const GroupParams p = fitGroupMinMaxGptq(w.constData(), int(w.size()), 4, sym);
        QVERIFY(std::abs(p.scale - scale) < 1e-15);
        QCOMPARE(-p.zero, zeroPoint);
    }

    void invalidArguments()
    {
        const MatrixXfR w = test::randomWeights(2, 8, 1u);
        QVERIFY(!quantizeRowsRtn(w, GridSpec{1, -1, false}, GridInit::MinMax).ok());
        QVERIFY(!quantizeRowsRtn(w, GridSpec{9, -1, false}, GridInit::MinMax).ok());
        auto r = quantizeRowsRtn(w, GridSpec{4, -1, true}, GridInit::Neuqi);
        QVERIFY(!r.ok());
        QCOMPARE(r.error().code, ErrorCode::InvalidArgument);
    }

    void bitsPerWeight_data()
    {
        QTest::addColumn<int>("bits");
        QTest::addColumn<int>("groupSize");
        QTest::addColumn<int>("cols");
        QTest::addColumn<bool>("sym");
        QTest::addColumn<int>("zeroBits");
        QTest::addColumn<double>("bpw");
        QTest::newRow("4 bit g128 sym F16 scale") << 4 << 128 << 4096 << true << 16 << 4.125;
        QTest::newRow("4 bit g128 asym F16 scale+zero") << 4 << 128 << 4096 << false << 16 << 4.25;
        QTest::newRow("4 bit g128 asym packed 4-bit zero") << 4 << 128 << 4096 << false << 4 << 4.15625;
        QTest::newRow("2 bit per-channel asym") << 2 << -1 << 4096 << false << 16 << 2.0 + 32.0 / 4096;
        QTest::newRow("3 bit g32 asym") << 3 << 32 << 4096 << false << 16 << 4.0;
        QTest::newRow("4 bit g128 over 11008 cols (86 groups)") << 4 << 128 << 11008 << false << 16 << 4.25;
        QTest::newRow("4 bit g100 over 250 cols (3 groups)") << 4 << 100 << 250 << false << 16 << 4.0 + 96.0 / 250;
    }
    void bitsPerWeight()
    {
        QFETCH(int, bits);
        QFETCH(int, groupSize);
        QFETCH(int, cols);
        QFETCH(bool, sym);
        QFETCH(int, zeroBits);
        QFETCH(double, bpw);
        QVERIFY(std::abs(bitsPerWeightUniform(bits, groupSize, cols, sym, 16, zeroBits) - bpw) < kBpwTol);
    }

    void traitsTableIsIndexedAndConsistent()
    {
        const auto all = allMethodTraits();
        QCOMPARE(int(all.size()), 4);
        std::set<std::string_view> ids;
        for (std::size_t i = 0; i < all.size(); ++i) {
            const MethodTraits& t = all[i];
            QCOMPARE(std::size_t(t.method), i);
            QCOMPARE(&methodTraits(t.method), &t);
            QVERIFY(!t.name.empty() && !t.description.empty());
            QVERIFY(ids.insert(t.id).second);
            QCOMPARE(methodFromId(t.id), std::optional<Method>(t.method));
            for (const MethodParam& p : t.params) {
                QVERIFY2(p.defaultValue >= p.minValue && p.defaultValue <= p.maxValue, p.key.data());
                QVERIFY(!p.label.empty() && !p.help.empty());
            }
        }
        QVERIFY(!methodFromId("nope"));
        const GptqOptions neuqi = defaultGptqOptions(Method::Neuqi);
        QCOMPARE(neuqi.init, GridInit::Neuqi);
        QVERIFY(neuqi.actOrder);
        QCOMPARE(neuqi.groups, GroupMode::Static);
        QCOMPARE(neuqi.blockSize, 128);
        QCOMPARE(neuqi.damping, 0.01);
        QVERIFY(!methodTraits(Method::Neuqi).supportsSym);
        const GptqOptions gptq = defaultGptqOptions(Method::Gptq);
        QCOMPARE(gptq.init, GridInit::MinMax);
        QCOMPARE(gptq.grid.bits, 4);
        QCOMPARE(gptq.grid.groupSize, 128);
        QVERIFY(!gptq.actOrder);
        QCOMPARE(gptq.groups, GroupMode::Dynamic);
        QVERIFY(methodTraits(Method::Gptq).needsHessian);
        // Only CMPQ takes fractional bits and stores codebooks; its defaults come from the table.
        for (const MethodTraits& t : all)
            QCOMPARE(t.fractionalBits, t.method == Method::Cmpq);
        QCOMPARE(methodTraits(Method::Cmpq).name, std::string_view("CMPQ (reconstruction)"));
        const CmpqOptions cmpq = defaultCmpqOptions();
        QCOMPARE(cmpq.bits, 3.0);
        QCOMPARE(cmpq.quantOutliers, kCmpqDefaultQuantOutliers);
        QVERIFY(cmpq.errorFeedback && !cmpq.uniformLevels);
        QVERIFY(!methodTraits(Method::Rtn).needsHessian);
    }

    // The gptq storage target: f16 scales, integer zero-points in [1, 2^b - 1], the better of the
    // two integers around a real zero; RTN and GPTQ fits honour it.
    void gptqStorableParams()
    {
        const std::vector<double> w{0.11, 0.25, 0.31, 0.47, 0.52, 0.6, 0.71, 0.9}; // all positive: Z would be 0
        const GroupParams mm = fitGroupMinMaxGptq(w.data(), 8, 3, false);
        QCOMPARE(mm.zero, 0.0); // not storable in GPTQ v1 (stores Z - 1)
        const GroupParams p = storableGptqParams(mm, w.data(), nullptr, 8, 3);
        QCOMPARE(p.zero, -1.0);
        QCOMPARE(double(f16ToF32(f32ToF16(float(p.scale)))), p.scale);
        GroupParams real{0.1, -3.4};
        const GroupParams r = storableGptqParams(real, w.data(), nullptr, 8, 3);
        QVERIFY(r.zero == -3.0 || r.zero == -4.0);
        QVERIFY(groupLossUniform(w.data(), nullptr, 8, r, 8) <=
                groupLossUniform(w.data(), nullptr, 8, GroupParams{r.scale, r.zero == -3.0 ? -4.0 : -3.0}, 8));
        QCOMPARE(storableGptqParams(GroupParams{0.0, -2.0}, w.data(), nullptr, 8, 3).scale,
                 double(f16ToF32(0x0400))); // a zero scale becomes the smallest normal f16
        const MatrixXfR m = test::randomWeights(8, 64, 3);
        GridSpec spec{4, 16, false, true};
        for (GridInit init : {GridInit::MinMax, GridInit::Neuqi}) {
            auto q = quantizeRowsRtn(m, spec, init);
            QVERIFY(q.ok());
            for (Eigen::Index i = 0; i < q->scales.size(); ++i) {
                const double s = q->scales.data()[i], z = q->zeros.data()[i];
                QCOMPARE(double(f16ToF32(f32ToF16(float(s)))), s);
                QVERIFY(z == std::nearbyint(z) && z <= -1 && z >= -15);
            }
        }
    }

    // A stored grid gives back exactly the codes and values it was made from, for any row range
    // (odd column counts put two rows' codes in one byte), packed two a byte up to 4 bits only.
    void storedGridRoundTripsExactly_data()
    {
        QTest::addColumn<int>("bits");
        QTest::addColumn<int>("cols");
        for (int bits : {2, 4, 5, 8})
            for (int cols : {37, 64})
                QTest::newRow(qPrintable(QString("%1-bit %2 cols").arg(bits).arg(cols))) << bits << cols;
    }
    void storedGridRoundTripsExactly()
    {
        QFETCH(int, bits);
        QFETCH(int, cols);
        const MatrixXfR w = test::randomWeights(7, cols, 5u + std::uint32_t(bits * cols));
        auto q = quantizeRowsRtn(w, GridSpec{bits, 16, false}, GridInit::MinMax);
        QVERIFY(q.ok());
        const StoredGrid s(*q);
        QCOMPARE(s.nibbles(), bits <= 4);
        QCOMPARE(s.rows(), w.rows());
        QCOMPARE(s.cols(), w.cols());
        QVERIFY(s.params().codes.size() == 0 && s.params().dequantized.size() == 0);
        QVERIFY(s.codes() == q->codes);
        const QuantizedRows u = s.unpack(true);
        QVERIFY(u.codes == q->codes && u.scales == q->scales && u.zeros == q->zeros && u.groupIndex == q->groupIndex);
        QVERIFY(u.dequantized == q->dequantized);
        QVERIFY(s.values() == q->dequantized);
        for (int r0 = 0; r0 < w.rows(); ++r0)
            for (int n = 1; r0 + n <= w.rows(); n += 2) {
                MatrixXfR part(n, cols);
                s.decodeRows(r0, n, part.data());
                QVERIFY2(part == q->dequantized.middleRows(r0, n), qPrintable(QString("rows %1+%2").arg(r0).arg(n)));
                MatrixU8R codes(n, cols);
                s.codesInto(r0, n, codes.data());
                QVERIFY(codes == q->codes.middleRows(r0, n));
            }
        const std::size_t codeBytes = std::size_t(bits <= 4 ? (w.size() + 1) / 2 : w.size());
        QVERIFY(s.bytes() >= codeBytes && s.bytes() < codeBytes + std::size_t(q->scales.size()) * 17 + 4 * cols);
    }
};

QTEST_GUILESS_MAIN(TestQuantGrid)
#include "tst_quant_grid.moc"
