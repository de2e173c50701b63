// The ggml codec's traits table (io/ggml_codec.h), one row per type: names, block geometry and
// kernels against FORMATS.md §4.4, row sizes, name <-> parse, unknown ids, and an encode -> decode
// round trip of a deterministic random row within a named per-type tolerance. Tolerances bound
// the error by the quantization step (plus f16 rounding of the block scales), so a rounding tie
// that falls the other way on another CPU still passes; bit-exactness against ggml is pinned in
// tests/export/tst_gguf_export.cpp and tst_gguf_llamacpp.cpp.

#include "io/ggml_codec.h"

#include <QTest>

#include <cmath>
#include <cstdint>
#include <vector>

using namespace qb;
using io::GgmlType;

namespace {

// FORMATS.md §4.4, in id order, and for every type the table encodes and decodes the round-trip
// bound on |decode(encode(x)) - x| as a fraction of max |x| over each 256 elements (kNoCodec:
// the type is only named and sized).
constexpr double kNoCodec = -1;
struct Spec {
    GgmlType type;
    const char* name;
    int blockSize;
    int typeSize;
    double tolerance;
};
constexpr Spec kSpecs[] = {
    {GgmlType::F32, "F32", 1, 4, 0.0},
    {GgmlType::F16, "F16", 1, 2, 1.0 / 2048}, // 11 significant bits
    {GgmlType::Q4_0, "Q4_0", 32, 18, 0.13},   // one step: +max lands on +7 of [-8, 7]; f16 d
    {GgmlType::Q4_1, "Q4_1", 32, 20, 0.07},   // half a step of a range up to 2 max, f16 d and m
    {GgmlType::Q5_0, "Q5_0", 32, 22, 0.065},  // one step: +15 of [-16, 15]
    {GgmlType::Q5_1, "Q5_1", 32, 24, 0.035},
    {GgmlType::Q8_0, "Q8_0", 32, 34, 0.6 / 127}, // half a step plus f16 rounding of d
    {GgmlType::Q8_1, "Q8_1", 32, 36, kNoCodec},
    {GgmlType::Q2_K, "Q2_K", 256, 84, 0.45}, // K-quants: measured worst case plus ~10 %
    {GgmlType::Q3_K, "Q3_K", 256, 110, 0.28},
    {GgmlType::Q4_K, "Q4_K", 256, 144, 0.125},
    {GgmlType::Q5_K, "Q5_K", 256, 176, 0.0625},
    {GgmlType::Q6_K, "Q6_K", 256, 210, 0.03},
    {GgmlType::Q8_K, "Q8_K", 256, 292, kNoCodec},
    {GgmlType::I8, "I8", 1, 1, kNoCodec},
    {GgmlType::I16, "I16", 1, 2, kNoCodec},
    {GgmlType::I32, "I32", 1, 4, kNoCodec},
    {GgmlType::I64, "I64", 1, 8, kNoCodec},
    {GgmlType::F64, "F64", 1, 8, kNoCodec},
    {GgmlType::BF16, "BF16", 1, 2, 1.0 / 256}, // 8 significant bits
};

// Uniform in [-1, 1) from a fixed LCG, scaled up by 1, 2, 3, ... per 256 elements so that blocks
// differ in magnitude.
std::vector<float> pseudoRandomRow(int n, std::uint32_t seed)
{
    std::vector<float> v(std::size_t(n), 0.0f);
    std::uint32_t s = seed * 2654435761u + 1u;
    for (int i = 0; i < n; ++i) {
        s = s * 1664525u + 1013904223u;
        v[std::size_t(i)] = float(double(s >> 8) / double(1u << 24) * 2.0 - 1.0) * float(1 + i / 256);
    }
    return v;
}

} // namespace

class TestGgmlCodec : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void traits_data();
    void traits();
    void tableHoldsExactlyTheseTypes();
    void unknownIdsAndNames();
    void roundTrip_data();
    void roundTrip();
};

void TestGgmlCodec::traits_data()
{
    QTest::addColumn<int>("type");
    QTest::addColumn<QString>("name");
    QTest::addColumn<int>("blockSize");
    QTest::addColumn<int>("typeSize");
    QTest::addColumn<bool>("codec");
    for (const Spec& s : kSpecs)
        QTest::newRow(s.name) << int(s.type) << QString::fromLatin1(s.name) << s.blockSize << s.typeSize
                              << (s.tolerance != kNoCodec);
}

void TestGgmlCodec::traits()
{
    QFETCH(int, type);
    QFETCH(QString, name);
    QFETCH(int, blockSize);
    QFETCH(int, typeSize);
    QFETCH(bool, codec);
    const auto t = GgmlType(type);
    const io::GgmlTypeTraits* tr = io::ggmlTypeTraits(type);
    QVERIFY(tr);
    QCOMPARE(int(tr->type), type);
    QCOMPARE(QString::fromLatin1(tr->name), name);
    QCOMPARE(QString::fromLatin1(io::ggmlTypeName(type)), name);
    QCOMPARE(tr->blockSize, blockSize);
    QCOMPARE(tr->typeSize, typeSize);
    QCOMPARE(tr->isQuantized, blockSize > 1);
    QCOMPARE(tr->encode != nullptr, codec);
    QCOMPARE(tr->decode != nullptr, codec);

    // Row bytes = n / blockSize * typeSize, 0 for anything that is not whole blocks.
    for (int blocks : {0, 1, 7, 1000})
        QCOMPARE(io::ggmlRowBytes(t, std::int64_t(blocks) * blockSize), std::size_t(blocks) * std::size_t(typeSize));
    if (blockSize > 1) QCOMPARE(io::ggmlRowBytes(t, 7 * blockSize + 1), std::size_t(0));
    QCOMPARE(io::ggmlRowBytes(t, -blockSize), std::size_t(0));

    // Name <-> parse, in any case.
    const QString lower = name.toLower();
    QCOMPARE(QString::fromStdString(io::ggmlTypeLowerName(t)), lower);
    for (const QString& spelling : {name, lower, lower.left(1).toUpper() + lower.mid(1)}) {
        const auto parsed = io::parseGgmlType(spelling.toStdString());
        QVERIFY2(parsed.has_value(), qPrintable(spelling));
        QCOMPARE(int(*parsed), type);
    }

    // Types without a codec are refused, not misread.
    if (!codec) {
        std::vector<std::uint8_t> bytes(std::size_t(typeSize), 0);
        std::vector<float> x(std::size_t(blockSize), 0.0f);
        const auto enc = io::quantizeGgml(t, x.data(), bytes.data(), blockSize);
        const auto dec = io::dequantizeGgml(type, bytes.data(), x.data(), blockSize);
        QVERIFY(!enc.ok() && enc.error().code == ErrorCode::Unsupported);
        QVERIFY(!dec.ok() && dec.error().code == ErrorCode::Unsupported);
    }
}

void TestGgmlCodec::tableHoldsExactlyTheseTypes()
{
    std::vector<GgmlType> want;
    for (const Spec& s : kSpecs)
        want.push_back(s.type);
    QVERIFY(io::ggmlTypes() == want);
}

void TestGgmlCodec::unknownIdsAndNames()
{
    for (int id : {-1, 4, 5, 16, 23, 29, 31, 39, 1000}) {
        QVERIFY2(!io::ggmlTypeTraits(id), qPrintable(QString::number(id)));
        QCOMPARE(io::ggmlTypeName(id), "?");
        float y = 0;
        const std::uint8_t b[4] = {};
        QVERIFY(!io::dequantizeGgml(id, b, &y, 1).ok());
    }
    for (const char* bad : {"", "Q4_2", "q4_0 ", "F32x", "?"})
        QVERIFY2(!io::parseGgmlType(bad), bad);
}

void TestGgmlCodec::roundTrip_data()
{
    QTest::addColumn<int>("type");
    QTest::addColumn<double>("tolerance");
    for (const Spec& s : kSpecs)
        if (s.tolerance != kNoCodec) QTest::newRow(s.name) << int(s.type) << s.tolerance;
}

void TestGgmlCodec::roundTrip()
{
    QFETCH(int, type);
    QFETCH(double, tolerance);
    const auto t = GgmlType(type);
    const io::GgmlTypeTraits* tr = io::ggmlTypeTraits(type);
    QVERIFY(tr && tr->encode && tr->decode);
    constexpr int n = 4 * 256;
    const auto x = pseudoRandomRow(n, 7u + std::uint32_t(type));
    std::vector<std::uint8_t> bytes(io::ggmlRowBytes(t, n), 0);
    QCOMPARE(bytes.size(), std::size_t(n / tr->blockSize * tr->typeSize));
    std::vector<float> y(std::size_t(n), 0.0f);
    QVERIFY(io::quantizeGgml(t, x.data(), bytes.data(), n).ok());
    QVERIFY(io::dequantizeGgml(type, bytes.data(), y.data(), n).ok());

    double worst = 0;
    for (int c = 0; c < n; c += 256) {
        double amax = 0;
        for (int j = c; j < c + 256; ++j)
            amax = std::max(amax, double(std::fabs(x[std::size_t(j)])));
        for (int j = c; j < c + 256; ++j) {
            const float got = y[std::size_t(j)], want = x[std::size_t(j)];
            QVERIFY(std::isfinite(got));
            worst = std::max(worst, std::fabs(double(got) - double(want)) / amax);
        }
    }
    QVERIFY2(worst <= tolerance, qPrintable(QStringLiteral("%1 > %2").arg(worst).arg(tolerance)));

    // The kernels are deterministic: the same row encodes to the same bytes.
    std::vector<std::uint8_t> again(bytes.size(), 0);
    QVERIFY(io::quantizeGgml(t, x.data(), again.data(), n).ok());
    QVERIFY(again == bytes);

    // A length that is not whole blocks is refused both ways.
    if (tr->blockSize > 1) {
        const auto enc = io::quantizeGgml(t, x.data(), bytes.data(), tr->blockSize + 1);
        const auto dec = io::dequantizeGgml(type, bytes.data(), y.data(), tr->blockSize + 1);
        QVERIFY(!enc.ok() && enc.error().code == ErrorCode::Shape);
        QVERIFY(!dec.ok() && dec.error().code == ErrorCode::Shape);
    }
}

QTEST_GUILESS_MAIN(TestGgmlCodec)
#include "tst_ggml_codec.moc"
