// Integer products for Q4_0/Q8_0 weights (model/int8_product.h): the activations quantized as
// llama.cpp's Q8_0 encoder does, the block arithmetic against a double-precision reference, the
// portable and the AVX-512 VNNI kernels against each other, tails and row order maps, and a whole
// GGUF model evaluated through them. Per-row uniform codes (RUQuant's carry): the activation
// codes against fakeQuantizeActivations, the integer sums against an exact 64-bit reference and
// the F32 product, the kernels against each other, and a decoder layer computed through them.
#include "export_test_util.h"
#include "io/ggml_codec.h"
#include "model/forward.h"
#include "model/int8_product.h"

#include <QtTest/QtTest>

#include <cmath>
#include <random>

using namespace qb;
using namespace qb::model;
using io::GgmlType;

namespace {

RowMatrix randomMatrix(std::int64_t rows, std::int64_t cols, std::uint32_t seed, float scale = 1.0f)
{
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.0f, scale);
    RowMatrix m(rows, cols);
    for (std::int64_t i = 0; i < m.size(); ++i)
        m.data()[i] = nd(g);
    return m;
}

// w encoded row by row in `type`, held as the GGUF reader holds it (rows read in place).
struct EncodedWeight {
    PackedWeightPtr packed; // keeps its bytes alive
};
EncodedWeight encode(const RowMatrix& w, GgmlType type, std::vector<std::int64_t> order = {})
{
    const std::size_t rowBytes = io::ggmlRowBytes(type, w.cols());
    std::vector<std::uint8_t> bytes(rowBytes * std::size_t(w.rows()));
    for (Eigen::Index r = 0; r < w.rows(); ++r)
        if (!io::quantizeGgml(type, w.row(r).data(), bytes.data() + std::size_t(r) * rowBytes, w.cols()).ok())
            qFatal("quantizeGgml failed");
    EncodedWeight e;
    const io::GgmlTypeTraits* traits = io::ggmlTypeTraits(int(type));
    e.packed = makeRowCodecWeight(ByteRange(MappedFile::fromBytes(std::move(bytes), "test weight")), w.rows(), w.cols(),
                                  rowBytes, traits->decode, traits->name, std::move(order));
    return e;
}

// x · Wᵀ in double from the integers: the activations as Q8_0 blocks (llama.cpp's encoder in
// io), the weights as their blocks' integers and scales.
RowMatrix blockReference(const RowMatrix& x, const PackedWeight& w, GgmlType type)
{
    const std::int64_t K = x.cols(), blocks = K / 32;
    std::vector<io::BlockQ8_0> xa;
    xa.resize(std::size_t(blocks));
    RowMatrix out(x.rows(), w.rows());
    for (Eigen::Index m = 0; m < x.rows(); ++m) {
        if (!io::quantizeGgml(GgmlType::Q8_0, x.row(m).data(), xa.data(), K).ok()) qFatal("Q8_0");
        for (std::int64_t n = 0; n < w.rows(); ++n) {
            const std::uint8_t* row = w.encodedRow(n);
            double sum = 0;
            for (std::int64_t b = 0; b < blocks; ++b) {
                std::int64_t dot = 0;
                float dw;
                if (type == GgmlType::Q4_0) {
                    io::BlockQ4_0 blk;
                    std::memcpy(&blk, row + b * sizeof(blk), sizeof(blk));
                    dw = f16ToF32(blk.d);
                    for (int j = 0; j < 16; ++j)
                        dot += std::int64_t(xa[std::size_t(b)].qs[j]) * ((blk.qs[j] & 15) - 8) +
                               std::int64_t(xa[std::size_t(b)].qs[j + 16]) * ((blk.qs[j] >> 4) - 8);
                } else {
                    io::BlockQ8_0 blk;
                    std::memcpy(&blk, row + b * sizeof(blk), sizeof(blk));
                    dw = f16ToF32(blk.d);
                    for (int j = 0; j < 32; ++j)
                        dot += std::int64_t(xa[std::size_t(b)].qs[j]) * blk.qs[j];
                }
                sum += double(dot) * double(dw) * double(f16ToF32(xa[std::size_t(b)].d));
            }
            out(m, n) = float(sum);
        }
    }
    return out;
}

double relativeError(const RowMatrix& a, const RowMatrix& b)
{
    return (a - b).norm() / std::max(1e-30, double(b.norm()));
}

} // namespace

class TestInt8Product : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void activationsMatchQ8_0Encoder();
    void productMatchesBlockReference_data();
    void productMatchesBlockReference();
    void rowOrderAndPartialTiles();
    void nonFiniteActivationsGiveNaN();
    void unsupportedWeightsStayAsTheyAre();
    void ggufModelEvaluates();
    void activationCodesMatchFakeQuantization();
    void codesProductIsExact_data();
    void codesProductIsExact();
    void codesProductOverflowBound();
    void layerWithCodesMatchesFakeQuantized();
};

// Our activation blocks are llama.cpp's Q8_0 blocks: the same integers and the same F16 scales,
// zero blocks and values that round half away from zero included.
void TestInt8Product::activationsMatchQ8_0Encoder()
{
    RowMatrix x = randomMatrix(5, 128, 1, 3.0f);
    x.row(1).segment(32, 32).setZero(); // an all-zero block: scale 0
    x(2, 0) = 127.0f;                   // amax 127: scale 1, exact halves below
    for (int j = 1; j < 32; ++j)
        x(2, j) = float(j) - 16.5f;
    Int8Activations a;
    quantizeActivationsQ8(x, a, 2);
    QCOMPARE(a.rows, 5);
    QCOMPARE(a.cols, 128);
    std::vector<io::BlockQ8_0> ref(4);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
        QVERIFY(io::quantizeGgml(GgmlType::Q8_0, x.row(r).data(), ref.data(), 128).ok());
        for (int b = 0; b < 4; ++b) {
            QCOMPARE(a.scales[std::size_t(r * 4 + b)], f16ToF32(ref[std::size_t(b)].d));
            for (int j = 0; j < 32; ++j)
                QCOMPARE(int(a.values[std::size_t(r * 128 + b * 32 + j)]) - 128, int(ref[std::size_t(b)].qs[j]));
        }
    }
}

void TestInt8Product::productMatchesBlockReference_data()
{
    QTest::addColumn<int>("type");
    QTest::addColumn<int>("m");
    QTest::addColumn<int>("n");
    QTest::addColumn<int>("k");
    QTest::newRow("Q4_0 4x32x32") << int(GgmlType::Q4_0) << 4 << 32 << 32;
    QTest::newRow("Q4_0 7x96x256") << int(GgmlType::Q4_0) << 7 << 96 << 256;
    QTest::newRow("Q4_0 1x45x96") << int(GgmlType::Q4_0) << 1 << 45 << 96;
    QTest::newRow("Q8_0 9x70x160") << int(GgmlType::Q8_0) << 9 << 70 << 160;
    QTest::newRow("Q8_0 4x128x64") << int(GgmlType::Q8_0) << 4 << 128 << 64;
}

// Both kernels against the double reference of the same integers and scales: only the F32
// scaling and summation of the blocks differ (a few ulps of the largest term); the two kernels
// against each other (the same operations: equal but for a flipped rounding tie); and the
// product against the F32 one, off by the activations' 8-bit rounding only.
void TestInt8Product::productMatchesBlockReference()
{
    QFETCH(int, type);
    QFETCH(int, m);
    QFETCH(int, n);
    QFETCH(int, k);
    const RowMatrix w = randomMatrix(n, k, 2, 0.05f);
    const RowMatrix x = randomMatrix(m, k, 3);
    const EncodedWeight e = encode(w, GgmlType(type));
    QVERIFY(e.packed);
    QVERIFY(int8ProductSupported(*e.packed));
    const auto wrapped = std::dynamic_pointer_cast<const Int8ProductWeight>(int8ProductWeight(e.packed));
    QVERIFY(wrapped);
    const RowMatrix ref = blockReference(x, *e.packed, GgmlType(type));
    RowMatrix portable(m, n), best(m, n);
    wrapped->multiply(x, portable, 2, Int8Kernel::Portable);
    wrapped->multiply(x, best, 2, bestInt8Kernel());
    qInfo("kernel: %s", int8KernelName(bestInt8Kernel()));
    const double scale = ref.cwiseAbs().maxCoeff();
    QVERIFY(scale > 0);
    QVERIFY2((portable - ref).cwiseAbs().maxCoeff() <= 1e-5 * scale,
             qPrintable(QString::number((portable - ref).cwiseAbs().maxCoeff() / scale)));
    QVERIFY((best - portable).cwiseAbs().maxCoeff() <= 1e-6 * scale);
    RowMatrix dense(n, k);
    e.packed->decodeRows(0, n, dense.data());
    const RowMatrix f32 = x * dense.transpose();
    const double err = relativeError(best, f32);
    qInfo("relative difference to the F32-activation product: %.3e", err);
    QVERIFY(err < 2e-2);
    QVERIFY(err > 0); // the activations are rounded: not the F32 product itself
}

// A row order map (GGUF's permuted q/k rows) and row counts that leave partial 16-row groups and
// 64-row tiles: every output column is the product with the right stored row.
void TestInt8Product::rowOrderAndPartialTiles()
{
    const int n = 100, k = 64, m = 6;
    std::vector<std::int64_t> order(n);
    for (int r = 0; r < n; ++r)
        order[std::size_t(r)] = (r * 37) % n;
    const RowMatrix w = randomMatrix(n, k, 4, 0.1f);
    const EncodedWeight e = encode(w, GgmlType::Q8_0, order);
    const EncodedWeight plain = encode(w, GgmlType::Q8_0);
    const RowMatrix x = randomMatrix(m, k, 5);
    RowMatrix out(m, n), outPlain(m, n);
    std::dynamic_pointer_cast<const Int8ProductWeight>(int8ProductWeight(e.packed))->multiply(x, out, 2);
    std::dynamic_pointer_cast<const Int8ProductWeight>(int8ProductWeight(plain.packed))->multiply(x, outPlain, 1);
    for (int r = 0; r < n; ++r)
        QVERIFY((out.col(r) - outPlain.col(order[std::size_t(r)])).cwiseAbs().maxCoeff() <=
                1e-6 * outPlain.cwiseAbs().maxCoeff());
}

void TestInt8Product::nonFiniteActivationsGiveNaN()
{
    const RowMatrix w = randomMatrix(40, 64, 8, 0.1f);
    const EncodedWeight e = encode(w, GgmlType::Q4_0);
    RowMatrix x = randomMatrix(3, 64, 9);
    x(1, 40) = std::numeric_limits<float>::quiet_NaN();
    x(2, 3) = std::numeric_limits<float>::infinity();
    const auto p = std::dynamic_pointer_cast<const Int8ProductWeight>(int8ProductWeight(e.packed));
    for (Int8Kernel k : {Int8Kernel::Portable, bestInt8Kernel()}) {
        RowMatrix out(3, 40);
        p->multiply(x, out, 1, k);
        QVERIFY(out.row(0).allFinite());
        for (int r : {1, 2})
            for (int c = 0; c < 40; ++c)
                QVERIFY(std::isnan(out(r, c)));
    }
}

void TestInt8Product::unsupportedWeightsStayAsTheyAre()
{
    const RowMatrix w = randomMatrix(8, 64, 6);
    for (GgmlType t : {GgmlType::Q4_1, GgmlType::Q6_K, GgmlType::F16}) {
        if (t == GgmlType::Q6_K) continue; // rows of 64 are not K-quant super-blocks
        const EncodedWeight e = encode(w, t);
        QVERIFY(!int8ProductSupported(*e.packed));
        QCOMPARE(int8ProductWeight(e.packed).get(), e.packed.get());
    }
    QVERIFY(!int8ProductWeight(nullptr));
}

// The demo model as a Q4_0 GGUF (head Q8_0): every linear and the head are wrapped, the logits
// stay within the activations' rounding of the F32-activation pass, and the perplexity moves by
// a small fraction.
void TestInt8Product::ggufModelEvaluates()
{
    QTemporaryDir dir;
    const std::string path = dir.filePath("demo-q4_0.gguf").toStdString();
    exporting::GgufExportOptions o;
    o.weightType = GgmlType::Q4_0;
    o.headType = GgmlType::Q8_0;
    auto r = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(), path, o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    auto ck = io::openCheckpoint(path);
    QVERIFY(ck.ok());
    pipeline::LoadOptions lo;
    lo.compact = true; // the blocks as stored (the default expands to F32: nothing to wrap)
    auto loaded = pipeline::loadModel(*ck, nullptr, nullptr, lo);
    QVERIFY(loaded.ok());
    const std::shared_ptr<const Model> base = *loaded;
    int wrapped = 0;
    const std::shared_ptr<const Model> i8 = withInt8Products(base, &wrapped);
    QCOMPARE(wrapped, 7 * base->numLayers() + 1);
    QVERIFY(i8 != base);
    int again = -1;
    QCOMPARE(withInt8Products(i8, &again).get(), i8.get()); // nothing left to wrap
    QCOMPARE(again, 0);

    auto text = pipeline::readTextFile(qbtest::demoEvalText());
    QVERIFY(text.ok());
    pipeline::PerplexityJobOptions po;
    po.ctx = qbtest::kEvalCtx;
    auto pf = pipeline::runPerplexity(*base, qbtest::demoTokenizer(), *text, po);
    po.int8Products = true;
    auto pi = pipeline::runPerplexity(*base, qbtest::demoTokenizer(), *text, po);
    QVERIFY(pf.ok() && pi.ok());
    qInfo("perplexity: F32 activations %.6f, 8-bit activations %.6f", pf->perplexity, pi->perplexity);
    QVERIFY(std::isfinite(pi->perplexity));
    QVERIFY(pi->perplexity != pf->perplexity);
    QVERIFY(std::fabs(pi->perplexity / pf->perplexity - 1) < 5e-3);
}

namespace {

// A per-row asymmetric Min-Max grid of `bits` over w (the grid RUQuant's weights use): codes,
// scales and integral zero-points, and the fake-quantized values float(scale * (code - zero)).
struct RowGrid {
    std::vector<std::uint8_t> codes;
    std::vector<double> scale;
    std::vector<std::int32_t> zero;
    RowMatrix values;
};
RowGrid rowGrid(const RowMatrix& w, int bits)
{
    RowGrid g;
    const int L = (1 << bits) - 1;
    g.values.resize(w.rows(), w.cols());
    for (Eigen::Index r = 0; r < w.rows(); ++r) {
        const double lo = std::min(0.0, double(w.row(r).minCoeff())), hi = std::max(0.0, double(w.row(r).maxCoeff()));
        const double s = hi > lo ? (hi - lo) / L : 1.0;
        const int z = int(std::nearbyint(-lo / s));
        g.scale.push_back(s);
        g.zero.push_back(z);
        for (Eigen::Index j = 0; j < w.cols(); ++j) {
            const int q = std::clamp(int(std::nearbyint(double(w(r, j)) / s)) + z, 0, L);
            g.codes.push_back(std::uint8_t(q));
            g.values(r, j) = float(s * (double(q) - double(z)));
        }
    }
    return g;
}

std::shared_ptr<const UniformCodesWeight> codesWeight(const RowGrid& g, Eigen::Index rows, Eigen::Index cols, int bits)
{
    return std::make_shared<const UniformCodesWeight>(rows, cols, bits, g.codes, g.scale, g.zero);
}

} // namespace

// The rows quantizeActivationCodes leaves are fakeQuantizeActivations' bit for bit, and the codes
// give them back exactly; a zero row has zero codes; a non-finite row is refused (no codes), its
// rows still quantized as fakeQuantizeActivations does.
void TestInt8Product::activationCodesMatchFakeQuantization()
{
    for (const ActQuantSpec& spec : {ActQuantSpec(4, false, 0.9f), ActQuantSpec(6, false, 1.0f),
                                     ActQuantSpec(8, true, 1.0f), ActQuantSpec(3, true, 0.8f)}) {
        RowMatrix x = randomMatrix(9, 70, 11, 2.0f);
        x.row(3).setZero();
        x.row(5) = x.row(5).cwiseAbs(); // a range that does not straddle 0
        RowMatrix ref = x;
        fakeQuantizeActivations(ref, spec);
        ActivationCodes a;
        QVERIFY(quantizeActivationCodes(x, spec, a));
        QCOMPARE(a.source, x.data());
        QVERIFY(x == ref);
        QCOMPARE(a.stride, std::int64_t(72));
        for (Eigen::Index r = 0; r < x.rows(); ++r) {
            std::int32_t sum = 0;
            for (Eigen::Index j = 0; j < x.cols(); ++j) {
                const int u = a.codes[std::size_t(r * a.stride + j)];
                QVERIFY(u < (1 << spec.bits));
                QCOMPARE(float(u - a.zero[std::size_t(r)]) * a.scale[std::size_t(r)], x(r, j));
                sum += u;
            }
            QCOMPARE(a.sum[std::size_t(r)], sum);
            QCOMPARE(int(a.codes[std::size_t(r * a.stride + 70)]), 0); // padding
        }
        QCOMPARE(a.scale[3], 0.0f);
        QCOMPARE(a.sum[3], 0);
    }
    RowMatrix bad = randomMatrix(4, 32, 12);
    bad(2, 5) = std::numeric_limits<float>::infinity();
    RowMatrix ref = bad;
    const ActQuantSpec spec(4, false, 0.9f);
    fakeQuantizeActivations(ref, spec);
    ActivationCodes a;
    QVERIFY(!quantizeActivationCodes(bad, spec, a));
    QVERIFY(a.source == nullptr);
    for (Eigen::Index r = 0; r < bad.rows(); ++r)
        if (r != 2) QVERIFY(bad.row(r) == ref.row(r));
    QVERIFY(!quantizeActivationCodes(bad, ActQuantSpec(4, false, 1.0f, ActGranularity::PerTensor), a));
}

void TestInt8Product::codesProductIsExact_data()
{
    QTest::addColumn<int>("m");
    QTest::addColumn<int>("n");
    QTest::addColumn<int>("k");
    QTest::addColumn<int>("wbits");
    QTest::addColumn<int>("abits");
    QTest::newRow("W4A4 tails") << 7 << 45 << 70 << 4 << 4;
    QTest::newRow("W4A4 tiles") << 16 << 130 << 256 << 4 << 4;
    QTest::newRow("W6A6") << 5 << 64 << 333 << 6 << 6;
    QTest::newRow("W8A8 one row") << 1 << 17 << 96 << 8 << 8;
    QTest::newRow("W3A8") << 6 << 33 << 128 << 3 << 8;
}

// The integer product is the exact sum Σ (u - za)(q - Z), formed in 64 bits here, converted once
// and scaled by sa·sw: the same bits from the portable loop and (where the CPU has it) the VNNI
// kernel; it agrees with the F32 product of the fake-quantized matrices to float rounding; the
// codes decode to exactly the fake-quantized weights.
void TestInt8Product::codesProductIsExact()
{
    QFETCH(int, m);
    QFETCH(int, n);
    QFETCH(int, k);
    QFETCH(int, wbits);
    QFETCH(int, abits);
    const RowMatrix w = randomMatrix(n, k, 21, 0.05f);
    const RowGrid g = rowGrid(w, wbits);
    const auto cw = codesWeight(g, n, k, wbits);
    QVERIFY(cw->integerProducts(abits));
    RowMatrix decoded(n, k);
    cw->decodeRows(0, n, decoded.data());
    QVERIFY(decoded == g.values);
    RowMatrix part(3, k);
    cw->decodeRows(n - 3, 3, part.data());
    QVERIFY(part == g.values.bottomRows(3));

    RowMatrix x = randomMatrix(m, k, 22, 1.5f);
    ActivationCodes a;
    QVERIFY(quantizeActivationCodes(x, ActQuantSpec(abits, false, 0.9f), a));
    RowMatrix exact(m, n);
    for (int t = 0; t < m; ++t)
        for (int o = 0; o < n; ++o) {
            std::int64_t sum = 0;
            for (int j = 0; j < k; ++j)
                sum +=
                    std::int64_t(a.codes[std::size_t(t) * std::size_t(a.stride) + std::size_t(j)] -
                                 a.zero[std::size_t(t)]) *
                    (std::int64_t(g.codes[std::size_t(o) * std::size_t(k) + std::size_t(j)]) - g.zero[std::size_t(o)]);
            exact(t, o) = float(sum) * (a.scale[std::size_t(t)] * float(g.scale[std::size_t(o)]));
        }
    RowMatrix portable = RowMatrix::Constant(m, n, -1.0f);
    cw->multiply(a, portable, 2, Int8Kernel::Portable);
    QVERIFY(portable == exact);
    if (bestInt8Kernel() == Int8Kernel::Avx512Vnni) {
        RowMatrix vnni = RowMatrix::Constant(m, n, -1.0f);
        cw->multiply(a, vnni, 2, Int8Kernel::Avx512Vnni);
        QVERIFY(vnni == exact);
    } else {
        qInfo("no AVX-512 VNNI on this CPU: the portable loop alone checked");
    }
    const RowMatrix f32 = x * g.values.transpose(); // x holds the fake-quantized activations
    const RowMatrix bound = x.cwiseAbs() * g.values.cwiseAbs().transpose();
    QVERIFY(((portable - f32).array().abs() <= 1e-5f * bound.array() + 1e-30f).all());
}

// The 32-bit sums are exact only while (2^a - 1)(2^w - 1)·K fits: beyond, no integer products.
void TestInt8Product::codesProductOverflowBound()
{
    const auto small = codesWeight(rowGrid(randomMatrix(2, 8, 3), 4), 2, 8, 4);
    QVERIFY(small->integerProducts(4) && small->integerProducts(8) && !small->integerProducts(0) &&
            !small->integerProducts(9));
    // 255 * 255 * 33026 > 2^31 - 1 >= 255 * 255 * 33025; 15 * 15 * 33026 fits.
    for (int k : {33025, 33026}) {
        RowGrid g;
        g.codes.assign(std::size_t(k), 0);
        g.scale = {1.0};
        g.zero = {0};
        const auto wide = codesWeight(g, 1, k, 8);
        QCOMPARE(wide->integerProducts(8), k == 33025);
        QVERIFY(wide->integerProducts(4));
    }
}

// A decoder layer whose linears are per-row codes, with 4-bit per-token activation quantizers,
// computes what the same layer with the fake-quantized F32 weights computes, to float rounding
// (through integer products where the CPU multiplies codes, else by decoding the codes).
void TestInt8Product::layerWithCodesMatchesFakeQuantized()
{
    auto loaded = pipeline::loadModel(qbtest::demoCheckpoint());
    QVERIFY(loaded.ok());
    const ModelConfig& cfg = (*loaded)->config();
    auto f32 = std::make_shared<DecoderLayerWeights>(*(*loaded)->layer(0));
    auto rt = std::make_shared<LayerRuntime>();
    for (auto& in : rt->inputs)
        in.quant = ActQuantSpec(4, false, 0.9f);
    auto codes = std::make_shared<DecoderLayerWeights>(*f32);
    for (Linear l : kAllLinears) {
        const RowMatrix& w = f32->weight(l);
        const RowGrid g = rowGrid(w, 4);
        f32->weight(l) = g.values;
        codes->weight(l) = RowMatrix();
        codes->packed[std::size_t(l)] = codesWeight(g, w.rows(), w.cols(), 4);
    }
    f32->runtime = codes->runtime = rt;
    const int T = 8;
    const RowMatrix input = randomMatrix(2 * T, cfg.hiddenSize, 32);
    RowMatrix a = input, b = input;
    Workspace wa, wb;
    QVERIFY(runLayer(cfg, *f32, 0, a, T, wa).ok());
    QVERIFY(runLayer(cfg, *codes, 0, b, T, wb).ok());
    QVERIFY(wa.m_codes.source == nullptr);
    QCOMPARE(wb.m_codes.source != nullptr, bestInt8Kernel() == Int8Kernel::Avx512Vnni);
    const double rel = (a - b).norm() / (a - input).norm();
    qInfo("layer output, codes against fake-quantized F32: relative difference %.3g", rel);
    QVERIFY(rel < 1e-4);
}

QTEST_GUILESS_MAIN(TestInt8Product)
#include "tst_int8_product.moc"
