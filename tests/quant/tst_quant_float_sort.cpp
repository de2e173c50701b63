// The channel sort under CMPQ's k-means (quant/float_sort.h): both paths (the AVX-512 network where
// the CPU has it, the portable radix sort everywhere) give exactly std::sort's order of the IEEE
// keys for every length around the network's register and size boundaries, on random, tied,
// signed-zero, denormal, infinite and presorted data; the output doubles equal the input floats.

#include "quant/float_sort.h"

#include <QTest>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

using namespace qb::quant;

namespace {

std::uint32_t bitsOf(float f)
{
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

// The reference: std::sort by the monotone key (-0 before +0), as doubles.
std::vector<double> referenceSort(const std::vector<float>& x)
{
    std::vector<float> y = x;
    auto key = [](float f) {
        const std::uint32_t u = bitsOf(f);
        return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    };
    std::sort(y.begin(), y.end(), [&](float a, float b) { return key(a) < key(b); });
    return std::vector<double>(y.begin(), y.end());
}

bool sameBits(const std::vector<double>& a, const std::vector<double>& b)
{
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

std::vector<float> pattern(int kind, std::size_t n, std::mt19937& rng)
{
    std::normal_distribution<float> nd(0.0f, 0.02f);
    std::vector<float> x(n);
    for (std::size_t i = 0; i < n; ++i) {
        switch (kind) {
        case 0: x[i] = nd(rng); break;                           // a weight channel
        case 1: x[i] = float(int(rng() % 5) - 2) * 0.25f; break; // many ties
        case 2: x[i] = (rng() & 1) ? 0.0f : -0.0f; break;        // signed zeros only
        case 3: x[i] = std::numeric_limits<float>::denorm_min() * float(int(rng() % 7) - 3); break;
        case 4:
            x[i] = (i % 11 == 0)   ? std::numeric_limits<float>::infinity()
                   : (i % 13 == 0) ? -std::numeric_limits<float>::infinity()
                                   : nd(rng) * 1e30f;
            break;
        case 5: x[i] = float(i) - float(n) / 2; break; // presorted
        default: x[i] = float(n) - float(i); break;    // reversed
        }
    }
    return x;
}

} // namespace

class TestQuantFloatSort : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void bothPathsMatchStdSort();
    void networkPathIsTakenWhereAvailable();
};

void TestQuantFloatSort::bothPathsMatchStdSort()
{
    std::mt19937 rng(7);
    FloatSortScratch scratch;
    std::vector<double> fast, portable;
    std::vector<std::size_t> lengths;
    for (std::size_t n = 0; n <= 70; ++n)
        lengths.push_back(n);
    for (std::size_t n : {95, 96, 97, 127, 128, 129, 200, 255, 256, 257, 352, 500, 511, 512, 513, 700, 2048})
        lengths.push_back(n);
    for (int kind = 0; kind < 7; ++kind)
        for (std::size_t n : lengths)
            for (int rep = 0; rep < 3; ++rep) {
                const std::vector<float> x = pattern(kind, n, rng);
                const std::vector<double> want = referenceSort(x);
                // Stale contents in the output, and a guard past its end that must stay.
                fast.assign(n + 3, 42.0);
                sortFloatsAscending(x.data(), n, scratch, fast.data());
                QCOMPARE(fast[n], 42.0);
                fast.resize(n);
                portable.assign(n + 1, -1.0);
                sortFloatsAscendingPortable(x.data(), n, scratch, portable.data());
                QCOMPARE(portable[n], -1.0);
                portable.resize(n);
                if (!sameBits(fast, want) || !sameBits(portable, want))
                    QFAIL(qPrintable(QStringLiteral("kind %1, n %2: fast %3, portable %4")
                                         .arg(kind)
                                         .arg(n)
                                         .arg(sameBits(fast, want) ? "ok" : "WRONG")
                                         .arg(sameBits(portable, want) ? "ok" : "WRONG")));
            }
    // A wrong order is seen: the check can fail.
    std::vector<double> broken = referenceSort(pattern(0, 64, rng));
    std::swap(broken[3], broken[4]);
    QVERIFY(!sameBits(broken, referenceSort(std::vector<float>(broken.begin(), broken.end()))));
}

void TestQuantFloatSort::networkPathIsTakenWhereAvailable()
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    QCOMPARE(floatSortHasNetwork(), bool(__builtin_cpu_supports("avx512f")));
    if (!floatSortHasNetwork()) QSKIP("no AVX-512F here: only the portable path ran");
#else
    QVERIFY(!floatSortHasNetwork());
#endif
}

QTEST_GUILESS_MAIN(TestQuantFloatSort)
#include "tst_quant_float_sort.moc"
