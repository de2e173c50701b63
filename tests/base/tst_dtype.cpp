#include "base/dtype.h"

#include <QTest>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

using namespace qb;

// The compiler's own _Float16 (GCC >= 12 on x86-64) is the independent reference.
static float refF16ToF32(std::uint16_t h) { return float(std::bit_cast<_Float16>(h)); }
static std::uint16_t refF32ToF16(float f) { return std::bit_cast<std::uint16_t>(_Float16(f)); }

static bool isNanF16(std::uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu); }
static bool isNanBf16(std::uint16_t b) { return (b & 0x7F80u) == 0x7F80u && (b & 0x7Fu); }

class TestDType : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void f16ToF32AllPatterns()
    {
        for (std::uint32_t i = 0; i < 65536; ++i) {
            const auto h = std::uint16_t(i);
            const float got = f16ToF32(h);
            const float ref = refF16ToF32(h);
            if (isNanF16(h)) {
                QVERIFY2(std::isnan(got), qPrintable(QString::number(i, 16)));
                QCOMPARE(std::signbit(got), bool(h & 0x8000u));
            } else {
                QVERIFY2(std::bit_cast<std::uint32_t>(got) == std::bit_cast<std::uint32_t>(ref),
                         qPrintable(QString::number(i, 16)));
            }
        }
    }
    void f16RoundTripAllPatterns()
    {
        for (std::uint32_t i = 0; i < 65536; ++i) {
            const auto h = std::uint16_t(i);
            const std::uint16_t back = f32ToF16(f16ToF32(h));
            if (isNanF16(h)) QVERIFY(isNanF16(back));
            else QVERIFY2(back == h, qPrintable(QString::number(i, 16)));
        }
    }
    void f32ToF16TiesToEvenAllPatterns()
    {
        // For every finite positive/negative f16 value v and its successor, the midpoint must
        // round to the even one, and one f32 ulp either side of it to the nearer one.
        for (std::uint32_t i = 0; i < 65536; ++i) {
            const auto h = std::uint16_t(i);
            if ((h & 0x7FFFu) >= 0x7C00u) continue;          // Inf/NaN have no successor
            const std::uint16_t next = std::uint16_t(h + 1); // successor in magnitude
            const double v = f16ToF32(h);
            const double w = (next & 0x7FFFu) == 0x7C00u ? std::copysign(65536.0, v) : double(f16ToF32(next));
            const float mid = float((v + w) / 2);
            const std::uint16_t even = (h & 1u) ? next : h;
            QVERIFY2(f32ToF16(mid) == even, qPrintable(QString::number(i, 16)));
            QVERIFY2(f32ToF16(mid) == refF32ToF16(mid), qPrintable(QString::number(i, 16)));
            const float below = std::nextafter(mid, float(v));
            const float above = std::nextafter(mid, float(w) * 2);
            QVERIFY2(f32ToF16(below) == h, qPrintable(QString::number(i, 16)));
            QVERIFY2(f32ToF16(above) == next, qPrintable(QString::number(i, 16)));
        }
    }
    void f32ToF16MatchesCompilerOnRandomFloats()
    {
        std::mt19937 rng(1234);
        for (int i = 0; i < 2000000; ++i) {
            const float f = std::bit_cast<float>(std::uint32_t(rng()));
            const std::uint16_t got = f32ToF16(f);
            if (std::isnan(f)) {
                QVERIFY(isNanF16(got));
                continue;
            }
            QVERIFY2(got == refF32ToF16(f), qPrintable(QString::number(f, 'g', 9)));
        }
    }
    void f16SpecialValues()
    {
        QCOMPARE(f32ToF16(65504.f), std::uint16_t(0x7BFF));
        QCOMPARE(f32ToF16(65520.f), std::uint16_t(0x7C00)); // overflow to +Inf
        QCOMPARE(f32ToF16(-INFINITY), std::uint16_t(0xFC00));
        QCOMPARE(f32ToF16(-0.f), std::uint16_t(0x8000));
        QCOMPARE(f32ToF16(std::ldexp(1.f, -24)), std::uint16_t(0x0001)); // smallest subnormal
        QCOMPARE(f32ToF16(std::ldexp(1.f, -25)), std::uint16_t(0x0000)); // tie to even: zero
        QVERIFY(isNanF16(f32ToF16(std::nanf(""))));
    }
    void bf16AllPatterns()
    {
        for (std::uint32_t i = 0; i < 65536; ++i) {
            const auto b = std::uint16_t(i);
            const float f = bf16ToF32(b);
            QCOMPARE(std::bit_cast<std::uint32_t>(f), std::uint32_t(b) << 16);
            const std::uint16_t back = f32ToBf16(f);
            if (isNanBf16(b)) {
                QVERIFY(std::isnan(f));
                QVERIFY(isNanBf16(back));
                continue;
            }
            QCOMPARE(back, b);
            if ((b & 0x7FFFu) >= 0x7F80u) continue; // Inf: no successor
            const std::uint32_t base = std::uint32_t(b) << 16;
            const std::uint16_t next = std::uint16_t(b + 1);
            const std::uint16_t even = (b & 1u) ? next : b;
            QVERIFY2(f32ToBf16(std::bit_cast<float>(base | 0x8000u)) == even, qPrintable(QString::number(i, 16)));
            QVERIFY(f32ToBf16(std::bit_cast<float>(base | 0x7FFFu)) == b);
            QVERIFY(f32ToBf16(std::bit_cast<float>(base | 0x8001u)) == next);
        }
    }
    void bf16NaNStaysQuietNaN()
    {
        // A signalling NaN whose payload sits only in the low half must not round to Inf.
        const float snan = std::bit_cast<float>(0x7F800001u);
        QVERIFY(isNanBf16(f32ToBf16(snan)));
        QVERIFY(isNanBf16(f32ToBf16(std::bit_cast<float>(0xFFC00000u))));
    }
    void bufferConversions()
    {
        const float src[4] = {1.5f, -2.25f, 0.f, 1e-3f};
        std::uint16_t h[4], b[4];
        QVERIFY(convertFromF32(DType::F16, src, h, 4).ok());
        QVERIFY(convertFromF32(DType::BF16, src, b, 4).ok());
        float back[4];
        QVERIFY(convertToF32(DType::F16, h, back, 4).ok());
        QCOMPARE(back[1], -2.25f);
        QVERIFY(convertToF32(DType::BF16, b, back, 4).ok());
        QCOMPARE(back[0], 1.5f);
        const std::int32_t ints[2] = {-7, 9};
        QVERIFY(convertToF32(DType::I32, ints, back, 2).ok());
        QCOMPARE(back[0], -7.f);
        QVERIFY(!convertFromF32(DType::I32, src, h, 1).ok());
        QCOMPARE(dtypeFromName("BF16").value(), DType::BF16);
        QVERIFY(!dtypeFromName("F8_E4M3").has_value());
        QCOMPARE(dtypeSize(DType::F64), std::size_t(8));
    }
    // countNonFinite against std::isfinite on every float pattern's neighbourhood that matters:
    // NaNs (quiet, signalling, negative), infinities, the largest finite values, subnormals, zeros;
    // at every position of an array whose length is no multiple of a vector; and in double.
    void countNonFiniteMatchesIsfinite()
    {
        const std::vector<std::uint32_t> specials{0x7FC00000u, 0x7F800001u, 0xFFC00000u, 0x7F800000u,
                                                  0xFF800000u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x00000001u,
                                                  0x80000000u, 0x00000000u, 0x3F800000u, 0x7FFFFFFFu};
        std::mt19937 rng(3);
        std::normal_distribution<float> nd;
        std::vector<float> x(37);
        for (float& v : x)
            v = nd(rng);
        QCOMPARE(countNonFinite(x.data(), x.size()), std::size_t(0));
        QCOMPARE(countNonFinite(x.data(), 0), std::size_t(0));
        for (std::size_t pos = 0; pos < x.size(); ++pos)
            for (std::uint32_t s : specials) {
                std::vector<float> y = x;
                y[pos] = std::bit_cast<float>(s);
                y[(pos * 7 + 3) % y.size()] = std::bit_cast<float>(specials[pos % specials.size()]);
                std::size_t expect = 0;
                for (float v : y)
                    expect += std::isfinite(v) ? 0 : 1;
                QCOMPARE(countNonFinite(y.data(), y.size()), expect);
                std::vector<double> d(y.begin(), y.end());
                QCOMPARE(countNonFinite(d.data(), d.size()), expect);
            }
        const double big[3] = {std::numeric_limits<double>::max(), std::numeric_limits<double>::denorm_min(),
                               -std::numeric_limits<double>::infinity()};
        QCOMPARE(countNonFinite(big, 3), std::size_t(1));
    }
};

QTEST_GUILESS_MAIN(TestDType)
#include "tst_dtype.moc"
