// GGUF export: ggml reference quantizers, exact storage of quantization grids (FORMATS.md §4.9),
// atomic writes (cancel halfway, a write error in the middle, disk-space check), metadata types,
// and the round trip demo model -> GGUF -> our reader -> perplexity.

#include "base/dtype.h"
#include "export/atomic_file.h"
#include "export/ggml_quantize.h"
#include "export/gguf_export.h"
#include "export/model_verify.h"
#include "export_test_util.h"
#include "model/forward.h"
#include "io/gguf_reader.h"
#include "quant/uniform_grid.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>

using namespace qb;
using io::GgmlType;

namespace {

std::vector<float> pseudoRandom(std::size_t n, std::uint32_t seed)
{
    std::vector<float> v(n);
    std::uint32_t s = seed * 2654435761u + 1u;
    for (auto& x : v) {
        s = s * 1664525u + 1013904223u;
        x = float(double(s >> 8) / double(1u << 24) * 2.0 - 1.0);
    }
    return v;
}

float roundF16(double x) { return f16ToF32(f32ToF16(float(x))); }

// b-bit grid with group 32 over w; f16 scales; sym -> z = -2^(b-1), else integer zero of min-max.
quant::QuantizedRows makeGrid(const quant::MatrixXfR& w, int bits, bool sym, bool f16Scales = true)
{
    const int g = 32, groups = int(w.cols()) / g;
    quant::MatrixXdR scales(w.rows(), groups), zeros(w.rows(), groups);
    for (int r = 0; r < w.rows(); ++r)
        for (int k = 0; k < groups; ++k) {
            std::vector<double> seg(g);
            for (int j = 0; j < g; ++j)
                seg[j] = w(r, k * g + j);
            const auto p = quant::fitGroupMinMaxGptq(seg.data(), g, bits, sym);
            scales(r, k) = f16Scales ? double(roundF16(p.scale)) : p.scale * (1 + 1e-7);
            zeros(r, k) = p.zero;
        }
    auto q = quant::quantizeRowsUniform(w, bits, scales, zeros, quant::groupIndexContiguous(g, int(w.cols())));
    if (!q) qFatal("grid: %s", q.error().toString().c_str());
    return *q;
}

std::string slurp(const QString& path)
{
    QFile f(path);
    return f.open(QIODevice::ReadOnly) ? f.readAll().toStdString() : std::string();
}

QStringList leftovers(const QString& dir)
{
    return QDir(dir).entryList(QDir::Files | QDir::Hidden).filter(QStringLiteral(".tmp-"));
}

} // namespace

class TestGgufExport : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(1); } // tiny model, shared machines
    void referenceQuantizersExactOnGridValues_data();
    void referenceQuantizersExactOnGridValues();
    void referenceQuantizersErrorBound_data();
    void referenceQuantizersErrorBound();
    void gridSmallestExactType();
    void gridPositiveDataPicksQ4_1();
    void gridWithNonF16ScaleIsReportedInexact();
    void ropePermutation();
    void metadataTypesAndLayout();
    void cancelHalfwayLeavesTargetUntouched();
    void writeErrorLeavesTargetUntouched();
    void diskSpaceCheck();
    void roundTripF32PerplexityIdentical();
    void roundTripQ8_0PerplexityClose();
    void gridExportQ4_0EqualsFakeQuant();
    void qwen2TiedBiasesPaddedVocab();
    void kquantHandBuiltBlocks_data();
    void kquantHandBuiltBlocks();
    void kquantQuantizeRoundTrip_data();
    void kquantQuantizeRoundTrip();
    void kquantRowFallback();
};

// Values that lie on the type's own grid come back bit for bit from ggml's reference quantizer.
void TestGgufExport::referenceQuantizersExactOnGridValues_data()
{
    QTest::addColumn<int>("type");
    QTest::newRow("Q8_0") << int(GgmlType::Q8_0);
    QTest::newRow("Q4_0") << int(GgmlType::Q4_0);
    QTest::newRow("Q5_0") << int(GgmlType::Q5_0);
    QTest::newRow("Q4_1") << int(GgmlType::Q4_1);
    QTest::newRow("Q5_1") << int(GgmlType::Q5_1);
}
void TestGgufExport::referenceQuantizersExactOnGridValues()
{
    QFETCH(int, type);
    const auto t = GgmlType(type);
    const int levels = t == GgmlType::Q8_0 ? 127 : t == GgmlType::Q4_0 ? 8 : t == GgmlType::Q5_0 ? 16 : 0;
    std::vector<float> x(64);
    for (int j = 0; j < 64; ++j) {
        if (levels) // symmetric: extreme at -levels (Q4_0/Q5_0 use max/-half), then a ramp
            x[j] = 0.25f * float(j % 32 == 0 ? -levels : (j * 7 % (2 * levels)) - levels + (t == GgmlType::Q8_0));
        else // min-based: min 0.5, step 0.125, top at 15 or 31 steps
            x[j] = 0.5f + 0.125f * float(j % 32 == 1 ? (t == GgmlType::Q4_1 ? 15 : 31)
                                                     : j * 5 % (t == GgmlType::Q4_1 ? 16 : 32));
    }
    auto e = exporting::encodeMatrixGgml(t, x.data(), 2, 32);
    QVERIFY2(e.ok(), e.ok() ? "" : e.error().toString().c_str());
    QVERIFY2(e->exact, qPrintable(QString("max diff %1").arg(e->maxAbsDiff)));
}

void TestGgufExport::referenceQuantizersErrorBound_data()
{
    QTest::addColumn<int>("type");
    QTest::addColumn<double>("stepFraction");                  // bound on |x - x'| in units of the block's range
    QTest::newRow("Q8_0") << int(GgmlType::Q8_0) << 0.6 / 127; // + f16 rounding of d
    QTest::newRow("Q4_0") << int(GgmlType::Q4_0) << 1.0 / 8;
    QTest::newRow("Q5_0") << int(GgmlType::Q5_0) << 1.0 / 16;
    QTest::newRow("Q4_1") << int(GgmlType::Q4_1) << 0.5 / 15 * 2.1;
    QTest::newRow("Q5_1") << int(GgmlType::Q5_1) << 0.5 / 31 * 2.1;
    QTest::newRow("F16") << int(GgmlType::F16) << 1.0 / 2048;
    QTest::newRow("BF16") << int(GgmlType::BF16) << 1.0 / 256;
}
void TestGgufExport::referenceQuantizersErrorBound()
{
    QFETCH(int, type);
    QFETCH(double, stepFraction);
    const auto x = pseudoRandom(32 * 64, 7);
    auto e = exporting::encodeMatrixGgml(GgmlType(type), x.data(), 64, 32);
    QVERIFY(e.ok());
    QCOMPARE(e->bytes.size(), io::ggmlRowBytes(GgmlType(type), 32) * 64);
    QVERIFY2(e->maxAbsDiff <= stepFraction * 1.01 + 1e-7, qPrintable(QString::number(e->maxAbsDiff)));
}

void TestGgufExport::gridSmallestExactType()
{
    quant::MatrixXfR w(8, 64);
    const auto v = pseudoRandom(8 * 64, 3);
    std::copy(v.begin(), v.end(), w.data());
    struct Case {
        int bits;
        bool sym;
        std::vector<GgmlType> allowed;
    };
    const Case cases[] = {{4, true, {GgmlType::Q4_0}},
                          {3, false, {GgmlType::Q4_0}},
                          {4, false, {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0}},
                          {8, true, {GgmlType::Q8_0}}};
    for (const Case& c : cases) {
        const auto q = makeGrid(w, c.bits, c.sym);
        auto best = exporting::encodeGridSmallestExact(q);
        QVERIFY(best.ok());
        QVERIFY2(
            std::find(c.allowed.begin(), c.allowed.end(), best->first) != c.allowed.end(),
            qPrintable(QString("%1-bit sym=%2 -> %3").arg(c.bits).arg(c.sym).arg(io::ggmlTypeName(int(best->first)))));
        QVERIFY(best->second.exact);
        if (c.sym) QVERIFY(best->second.fromGrid); // asym: a row may be exact via the reference quantizer
        // Every larger integer type holds a <= 4-bit integer-zero grid exactly too (§4.9).
        if (c.bits <= 4)
            for (GgmlType t : {GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::F32}) {
                auto e = exporting::encodeGridGgml(t, q);
                QVERIFY(e.ok() && e->exact);
            }
    }
}

// Non-negative weights: min-max puts the integer zero at 0, codes 0..15 -> Q4_0 cannot shift
// them into its [-8, 7] range, Q4_1 (m = s*0) holds them exactly.
void TestGgufExport::gridPositiveDataPicksQ4_1()
{
    quant::MatrixXfR w(8, 64);
    const auto v = pseudoRandom(8 * 64, 11);
    for (int i = 0; i < int(v.size()); ++i)
        w.data()[i] = 0.5f * (v[std::size_t(i)] + 1.0f);
    const auto q = makeGrid(w, 4, false);
    auto best = exporting::encodeGridSmallestExact(q);
    QVERIFY(best.ok());
    QCOMPARE(io::ggmlTypeName(int(best->first)), "Q4_1");
    QVERIFY(best->second.exact);
    auto q40 = exporting::encodeGridGgml(GgmlType::Q4_0, q);
    QVERIFY(q40.ok() && !q40->exact && !q40->fromGrid);
}

void TestGgufExport::gridWithNonF16ScaleIsReportedInexact()
{
    quant::MatrixXfR w(4, 64);
    const auto v = pseudoRandom(4 * 64, 5);
    std::copy(v.begin(), v.end(), w.data());
    const auto q = makeGrid(w, 4, true, /*f16Scales=*/false);
    auto e = exporting::encodeGridGgml(GgmlType::Q4_0, q);
    QVERIFY(e.ok());
    QVERIFY(!e->fromGrid);
    QVERIFY(!e->exact);
    QVERIFY(e->maxAbsDiff > 0 && e->maxAbsDiff < 0.2);
    auto best = exporting::encodeGridSmallestExact(q);
    QVERIFY(best.ok() && best->second.exact);
    QVERIFY(best->first == GgmlType::F32 || best->first == GgmlType::F16 || best->first == GgmlType::BF16);
}

void TestGgufExport::ropePermutation()
{
    // d = 4: GGUF rows (0,1,2,3) take HF rows (0,2,1,3) per head.
    const auto p = io::llamaRopePermutation(2, 4);
    const std::vector<std::int64_t> want{0, 2, 1, 3, 4, 6, 5, 7};
    QCOMPARE(p, want);
}

void TestGgufExport::metadataTypesAndLayout()
{
    QTemporaryDir dir;
    const std::string out = dir.filePath("m.gguf").toStdString();
    auto r = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(), out);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QVERIFY(r->verify.ok);
    auto g = io::readGgufFile(out);
    QVERIFY(g.ok());
    using VT = io::GgufValueType;
    const std::map<std::string, VT> want = {{"general.architecture", VT::String},
                                            {"general.alignment", VT::UInt32},
                                            {"llama.context_length", VT::UInt32},
                                            {"llama.block_count", VT::UInt32},
                                            {"llama.embedding_length", VT::UInt32},
                                            {"llama.feed_forward_length", VT::UInt32},
                                            {"llama.attention.head_count", VT::UInt32},
                                            {"llama.attention.head_count_kv", VT::UInt32},
                                            {"llama.attention.layer_norm_rms_epsilon", VT::Float32},
                                            {"llama.rope.freq_base", VT::Float32},
                                            {"llama.rope.dimension_count", VT::UInt32},
                                            {"tokenizer.ggml.model", VT::String},
                                            {"tokenizer.ggml.pre", VT::String},
                                            {"tokenizer.ggml.bos_token_id", VT::UInt32},
                                            {"tokenizer.ggml.eos_token_id", VT::UInt32},
                                            {"tokenizer.ggml.add_bos_token", VT::Bool}};
    for (const auto& [k, t] : want) {
        const auto* v = g->find(k);
        QVERIFY2(v, k.c_str());
        QVERIFY2(v->type == t, k.c_str());
    }
    QCOMPARE(*g->find("tokenizer.ggml.pre")->toString(), std::string("llama-bpe"));
    QCOMPARE(std::get<bool>(g->find("tokenizer.ggml.add_bos_token")->scalar), false);
    QVERIFY(g->find("tokenizer.ggml.token_type")->elementType == VT::Int32);
    QCOMPARE(g->find("tokenizer.ggml.tokens")->arraySize(), std::uint64_t(2048));
    QVERIFY(g->find("tokenizer.ggml.merges")->arraySize() > 1000);
    QCOMPARE(g->tensors.size(), std::size_t(39));
    // Offsets: the running aligned sum in info order; the file ends on the last padded tensor.
    std::uint64_t expect = g->dataOffset;
    for (const auto& t : g->tensors) {
        QCOMPARE(std::uint64_t(t.bytes.data() - g->tensors.front().bytes.data()) + g->dataOffset, expect);
        expect += (t.bytes.size() + 31) / 32 * 32;
    }
    QCOMPARE(QFileInfo(QString::fromStdString(out)).size(), qint64(expect));
    QCOMPARE(r->bytes, std::uint64_t(expect));
}

void TestGgufExport::cancelHalfwayLeavesTargetUntouched()
{
    QTemporaryDir dir;
    const QString out = dir.filePath("m.gguf");
    {
        QFile f(out);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write("old contents");
    }
    RunContext ctx([&ctx](const Progress& p) {
        if (p.stage == "write" && p.total > 0 && p.done * 2 >= p.total) ctx.requestCancel();
    });
    exporting::GgufExportOptions o;
    o.weightType = GgmlType::Q8_0;
    auto r = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(), out.toStdString(), o, &ctx);
    QVERIFY(!r.ok());
    QCOMPARE(r.error().code, ErrorCode::Cancelled);
    QCOMPARE(slurp(out), std::string("old contents"));
    QVERIFY2(leftovers(dir.path()).isEmpty(), qPrintable(leftovers(dir.path()).join(',')));
}

void TestGgufExport::writeErrorLeavesTargetUntouched()
{
    QTemporaryDir dir;
    const QString out = dir.filePath("m.gguf");
    {
        QFile f(out);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write("old contents");
    }
    exporting::GgufExportOptions o;
    o.weightType = GgmlType::F32;
    o.failAfterBytesForTesting = 2'000'000; // the F32 demo is ~5 MB: fails in the middle
    auto r = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(), out.toStdString(), o);
    QVERIFY(!r.ok());
    QCOMPARE(r.error().code, ErrorCode::Io);
    QVERIFY2(r.error().toString().find("write failed") != std::string::npos, r.error().toString().c_str());
    QCOMPARE(slurp(out), std::string("old contents"));
    QVERIFY(leftovers(dir.path()).isEmpty());
    // A target directory that does not exist is a clear error too.
    auto bad = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(),
                                     dir.filePath("no/such/dir/m.gguf").toStdString());
    QVERIFY(!bad.ok());
    QCOMPARE(bad.error().code, ErrorCode::Io);
}

void TestGgufExport::diskSpaceCheck()
{
    QTemporaryDir dir;
    auto s = exporting::checkDiskSpace(dir.path().toStdString(), std::uint64_t(1) << 60);
    QVERIFY(!s.ok());
    QVERIFY2(s.error().message.find("not enough free disk space") != std::string::npos, s.error().message.c_str());
    QVERIFY(exporting::checkDiskSpace(dir.path().toStdString(), 1024).ok());
    auto w = exporting::AtomicFileWriter::open(dir.filePath("x.bin").toStdString(), std::uint64_t(1) << 60);
    QVERIFY(!w.ok());
    QVERIFY(leftovers(dir.path()).isEmpty());
}

void TestGgufExport::roundTripF32PerplexityIdentical()
{
    QTemporaryDir dir;
    const std::string out = dir.filePath("f32.gguf").toStdString();
    exporting::GgufExportOptions o;
    o.weightType = GgmlType::F32;
    auto r = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(), out, o);
    QVERIFY(r.ok());
    QVERIFY(r->allExact());
    std::string err;
    const double original = qbtest::ourPerplexity(qbtest::demoDir(), &err);
    const double gguf = qbtest::ourPerplexity(out, &err);
    QVERIFY2(std::isfinite(gguf), err.c_str());
    qInfo("perplexity: safetensors %.9f, GGUF F32 %.9f", original, gguf);
    QVERIFY(std::fabs(gguf - original) <= 1e-6 * original);
}

void TestGgufExport::roundTripQ8_0PerplexityClose()
{
    QTemporaryDir dir;
    const std::string out = dir.filePath("q8.gguf").toStdString();
    exporting::GgufExportOptions o;
    o.weightType = GgmlType::Q8_0;
    auto r = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(), out, o);
    QVERIFY(r.ok());
    const double original = qbtest::ourPerplexity(qbtest::demoDir());
    const double q8 = qbtest::ourPerplexity(out);
    qInfo("perplexity: F32 %.6f, GGUF Q8_0 %.6f (%+.4f %%)", original, q8, 100 * (q8 / original - 1));
    QVERIFY(std::fabs(q8 / original - 1) < 0.005);
}

// A 4-bit symmetric grid (f16 scales) is stored as Q4_0 without loss: the Q4_0 GGUF evaluates
// exactly like the fake-quantized F32 weights.
void TestGgufExport::gridExportQ4_0EqualsFakeQuant()
{
    const auto ck = qbtest::demoCheckpoint();
    std::map<std::string, std::unique_ptr<quant::QuantizedRows>> grids;
    for (const TensorInfo& t : ck.tensors) {
        if (t.shape.size() != 2) continue;
        quant::MatrixXfR w(t.shape[0], t.shape[1]);
        QVERIFY(io::readTensorF32(t, w.data()).ok());
        grids[t.name] = std::make_unique<quant::QuantizedRows>(makeGrid(w, 4, true));
    }
    exporting::GgufExportOptions o;
    o.gridFor = [&](const std::string& n) -> quant::StoredGridPtr {
        auto it = grids.find(n);
        return it == grids.end() ? nullptr : quant::storeGrid(*it->second);
    };
    QTemporaryDir dir;
    const std::string q4 = dir.filePath("grid-q4_0.gguf").toStdString();
    auto r = exporting::exportGguf(ck, qbtest::demoTokenizer(), q4, o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QVERIFY2(r->allExact(), r->exactnessTable().c_str());
    for (const auto& t : r->tensors)
        if (!t.hfName.empty() && grids.count(t.hfName)) QCOMPARE(int(t.type), int(GgmlType::Q4_0));
    o.gridType = GgmlType::F32; // the fake-quantized weights themselves
    const std::string fake = dir.filePath("grid-f32.gguf").toStdString();
    QVERIFY(exporting::exportGguf(ck, qbtest::demoTokenizer(), fake, o).ok());
    const double pq = qbtest::ourPerplexity(q4), pf = qbtest::ourPerplexity(fake);
    qInfo("perplexity: fake-quant F32 %.9f, Q4_0 GGUF %.9f", pf, pq);
    QVERIFY(std::fabs(pq - pf) <= 1e-6 * pf);
}

// Qwen2 (tests/model/fixtures/qwen2_bias: q/k/v biases, tied embeddings, rope_theta 1e6) with a
// 60-token byte-level vocabulary against 64 embedding rows: arch qwen2, no Q/K permutation,
// biases kept, no output.weight, vocab padded with [PAD<i>], weights identical after re-reading.
void TestGgufExport::qwen2TiedBiasesPaddedVocab()
{
    std::string vocab;
    for (int i = 0; i < 60; ++i) {
        if (i) vocab += ',';
        vocab += "\"t";
        vocab += i == 59 ? std::string("1t2") : std::to_string(i);
        vocab += "\":";
        vocab += std::to_string(i);
    }
    const std::string json =
        R"({"version":"1.0","added_tokens":[],"normalizer":null,)"
        R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},)"
        R"("post_processor":null,"decoder":{"type":"ByteLevel"},)"
        R"("model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,)"
        R"("end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"vocab":{)" +
        vocab + R"(},"merges":["t1 t2"]}})";
    auto tok = io::Tokenizer::fromJson(json, "tiny-tokenizer.json");
    QVERIFY2(tok.ok(), tok.ok() ? "" : tok.error().toString().c_str());
    auto ck = io::openCheckpoint(std::string(QB_TESTS_DIR) + "/model/fixtures/qwen2_bias");
    QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
    QTemporaryDir dir;
    const std::string out = dir.filePath("qwen2.gguf").toStdString();
    exporting::GgufExportOptions o;
    o.weightType = GgmlType::F32;
    auto r = exporting::exportGguf(*ck, *tok, out, o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QCOMPARE(r->architecture, std::string("qwen2"));
    auto g = io::readGgufFile(out);
    QVERIFY(g.ok());
    double theta = 0;
    QVERIFY(g->find("qwen2.rope.freq_base")->toDouble(theta));
    QCOMPARE(theta, 1e6);
    const auto& toks = g->find("tokenizer.ggml.tokens")->strings;
    QCOMPARE(toks.size(), std::size_t(64));
    QCOMPARE(toks.back(), std::string("[PAD63]"));
    QCOMPARE(g->find("tokenizer.ggml.token_type")->ints.back(), std::int64_t(5));
    bool qBias = false, output = false;
    for (const auto& t : g->tensors) {
        qBias = qBias || t.name == "blk.0.attn_q.bias";
        output = output || t.name == "output.weight";
    }
    QVERIFY(qBias);
    QVERIFY(!output);
    // Re-read through openCheckpoint: same HF tensors, same values (and same q rows: no
    // permutation).
    auto back = io::openCheckpoint(out);
    QVERIFY2(back.ok(), back.ok() ? "" : back.error().toString().c_str());
    QCOMPARE(int(back->config.architecture), int(Architecture::Qwen2));
    for (const TensorInfo& t : ck->tensors) {
        if (t.name == "lm_head.weight") continue;
        const TensorInfo* b = back->find(t.name);
        QVERIFY2(b, t.name.c_str());
        QCOMPARE(b->permutedHeads, 0);
        std::vector<float> x(std::size_t(t.numel())), y(std::size_t(b -> numel()));
        QVERIFY(io::readTensorF32(t, x.data()).ok());
        QVERIFY(io::readTensorF32(*b, y.data()).ok());
        QVERIFY2(x == y, t.name.c_str());
    }
    // Quantized export: ffn_down rows (40) are not whole 32-blocks -> F16 with a warning.
    o.weightType = GgmlType::Q8_0;
    auto q = exporting::exportGguf(*ck, *tok, dir.filePath("q8.gguf").toStdString(), o);
    QVERIFY2(q.ok(), q.ok() ? "" : q.error().toString().c_str());
    QVERIFY(!q->warnings.empty());
}

// ---- K-quants ----------------------------------------------------------------------------

namespace {

std::uint16_t h16(float x) { return f32ToF16(x); }

// Independent decoder in the loop structure of ggml's dequantize_row_*_K (not the index formulas
// that io::dequantizeGgml uses), for bit-exactness checks.
std::vector<float> ggmlStyleDecode(GgmlType t, const std::uint8_t* p, int blocks)
{
    std::vector<float> out(std::size_t(blocks) * 256);
    float* y = out.data();
    for (int i = 0; i < blocks; ++i) {
        if (t == GgmlType::Q2_K) {
            io::BlockQ2_K b;
            std::memcpy(&b, p + i * 84, 84);
            const float d = f16ToF32(b.d), mn = f16ToF32(b.dmin);
            const std::uint8_t* q = b.qs;
            int is = 0;
            for (int n = 0; n < 256; n += 128) {
                int shift = 0;
                for (int j = 0; j < 4; ++j) {
                    for (int half = 0; half < 2; ++half) {
                        const std::uint8_t sc = b.scales[is++];
                        const float dl = d * float(sc & 0xF), ml = mn * float(sc >> 4);
                        for (int l = 0; l < 16; ++l)
                            *y++ = dl * float((q[l + 16 * half] >> shift) & 3) - ml;
                    }
                    shift += 2;
                }
                q += 32;
            }
        } else if (t == GgmlType::Q3_K) {
            io::BlockQ3_K b;
            std::memcpy(&b, p + i * 110, 110);
            std::uint32_t aux[4];
            std::memcpy(aux, b.scales, 12);
            const std::uint32_t tmp = aux[2], k1 = 0x03030303, k2 = 0x0f0f0f0f;
            aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
            aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
            aux[0] = (aux[0] & k2) | (((tmp >> 0) & k1) << 4);
            aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
            std::int8_t sc[16];
            std::memcpy(sc, aux, 16);
            const float d = f16ToF32(b.d);
            const std::uint8_t* q = b.qs;
            std::uint8_t m = 1;
            int is = 0;
            for (int n = 0; n < 256; n += 128) {
                int shift = 0;
                for (int j = 0; j < 4; ++j) {
                    for (int half = 0; half < 2; ++half) {
                        const float dl = d * float(sc[is++] - 32);
                        for (int l = 16 * half; l < 16 * half + 16; ++l)
                            *y++ = dl * float(int((q[l] >> shift) & 3) - ((b.hmask[l] & m) ? 0 : 4));
                    }
                    shift += 2;
                    m = std::uint8_t(m << 1);
                }
                q += 32;
            }
        } else if (t == GgmlType::Q4_K || t == GgmlType::Q5_K) {
            const bool five = t == GgmlType::Q5_K;
            const std::uint8_t* blk = p + i * (five ? 176 : 144);
            std::uint16_t dh, mh;
            std::memcpy(&dh, blk, 2);
            std::memcpy(&mh, blk + 2, 2);
            const std::uint8_t* s = blk + 4;
            const std::uint8_t* qh = blk + 16;
            const std::uint8_t* ql = blk + (five ? 48 : 16);
            const float d = f16ToF32(dh), mn = f16ToF32(mh);
            auto scaleMin = [s](int j, int& sc, int& m) {
                if (j < 4) {
                    sc = s[j] & 63;
                    m = s[j + 4] & 63;
                } else {
                    sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
                    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
                }
            };
            int is = 0;
            std::uint8_t u1 = 1, u2 = 2;
            for (int j = 0; j < 256; j += 64) {
                int sc, m;
                scaleMin(is, sc, m);
                const float d1 = d * float(sc), m1 = mn * float(m);
                scaleMin(is + 1, sc, m);
                const float d2 = d * float(sc), m2 = mn * float(m);
                for (int l = 0; l < 32; ++l)
                    *y++ = d1 * float((ql[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - m1;
                for (int l = 0; l < 32; ++l)
                    *y++ = d2 * float((ql[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - m2;
                ql += 32;
                is += 2;
                u1 = std::uint8_t(u1 << 2);
                u2 = std::uint8_t(u2 << 2);
            }
        } else {
            io::BlockQ6_K b;
            std::memcpy(&b, p + i * 210, 210);
            const float d = f16ToF32(b.d);
            const std::uint8_t* ql = b.ql;
            const std::uint8_t* qh = b.qh;
            const std::int8_t* sc = b.scales;
            for (int n = 0; n < 256; n += 128) {
                for (int l = 0; l < 32; ++l) {
                    const int is = l / 16;
                    const int q1 = int((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    const int q2 = int((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * float(sc[is]) * float(q1);
                    y[l + 32] = d * float(sc[is + 2]) * float(q2);
                    y[l + 64] = d * float(sc[is + 4]) * float(q3);
                    y[l + 96] = d * float(sc[is + 6]) * float(q4);
                }
                y += 128;
                ql += 64;
                qh += 32;
                sc += 8;
            }
        }
    }
    return out;
}

bool sameBits(const std::vector<float>& a, const std::vector<float>& b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

} // namespace

// Hand-built blocks: chosen d/dmin, sub-block scales/mins and codes, packed by the FORMATS.md
// §4.5 element formulas; the decoder must return exactly d·sc·q − dmin·mn (f32, that order).
void TestGgufExport::kquantHandBuiltBlocks_data()
{
    QTest::addColumn<int>("type");
    for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
        QTest::newRow(io::ggmlTypeName(int(t))) << int(t);
}
void TestGgufExport::kquantHandBuiltBlocks()
{
    QFETCH(int, type);
    const GgmlType t = GgmlType(type);
    const int bytes = io::ggmlTypeTraits(type)->typeSize;
    std::uint32_t rng = 12345u + std::uint32_t(type);
    auto next = [&rng](int mod) {
        rng = rng * 1664525u + 1013904223u;
        return int((rng >> 8) % std::uint32_t(mod));
    };
    for (int trial = 0; trial < 20; ++trial) {
        std::vector<std::uint8_t> blk(std::size_t(bytes), 0);
        std::vector<float> expect(256);
        const float d = f16ToF32(h16(0.001f * float(1 + next(900)))) * (trial % 2 ? -1.f : 1.f);
        const float dmin = f16ToF32(h16(0.0007f * float(1 + next(900))));
        const std::uint16_t dh = h16(d), mh = h16(dmin);
        int code[256];
        if (t == GgmlType::Q2_K) { // scales[16] qs[64] d dmin
            int sc[16], mn[16];
            for (int b = 0; b < 16; ++b) {
                sc[b] = next(16);
                mn[b] = next(16);
                blk[std::size_t(b)] = std::uint8_t(sc[b] | (mn[b] << 4));
            }
            for (int e = 0; e < 256; ++e) {
                code[e] = next(4);
                blk[std::size_t(16 + 32 * (e / 128) + e % 32)] |= std::uint8_t(code[e] << (2 * ((e % 128) / 32)));
                expect[std::size_t(e)] = d * float(sc[e / 16]) * float(code[e]) - dmin * float(mn[e / 16]);
            }
            std::memcpy(&blk[80], &dh, 2);
            std::memcpy(&blk[82], &mh, 2);
        } else if (t == GgmlType::Q3_K) { // hmask[32] qs[64] scales[12] d
            int S[16];
            for (int b = 0; b < 16; ++b) {
                S[b] = next(64);
                if (b < 8) blk[std::size_t(96 + b)] |= std::uint8_t(S[b] & 15);
                else blk[std::size_t(96 + b - 8)] |= std::uint8_t((S[b] & 15) << 4);
                blk[std::size_t(96 + 8 + b % 4)] |= std::uint8_t((S[b] >> 4) << (2 * (b / 4)));
            }
            for (int e = 0; e < 256; ++e) {
                code[e] = next(8) - 4; // [-4, 3]
                const int stored = code[e] + 4, low = stored & 3, high = stored >> 2;
                blk[std::size_t(32 + 32 * (e / 128) + e % 32)] |= std::uint8_t(low << (2 * ((e % 128) / 32)));
                blk[std::size_t(e % 32)] |= std::uint8_t(high << (e / 32));
                expect[std::size_t(e)] = d * float(S[e / 16] - 32) * float(code[e]);
            }
            std::memcpy(&blk[108], &dh, 2);
        } else if (t == GgmlType::Q4_K || t == GgmlType::Q5_K) {
            const bool five = t == GgmlType::Q5_K;
            std::memcpy(&blk[0], &dh, 2);
            std::memcpy(&blk[2], &mh, 2);
            std::uint8_t* s = &blk[4];
            int sc[8], mn[8];
            for (int j = 0; j < 8; ++j) {
                sc[j] = next(64);
                mn[j] = next(64);
                if (j < 4) {
                    s[j] |= std::uint8_t(sc[j]);
                    s[j + 4] |= std::uint8_t(mn[j]);
                } else {
                    s[j + 4] |= std::uint8_t((sc[j] & 15) | ((mn[j] & 15) << 4));
                    s[j - 4] |= std::uint8_t((sc[j] >> 4) << 6);
                    s[j] |= std::uint8_t((mn[j] >> 4) << 6);
                }
            }
            std::uint8_t* qs = &blk[five ? 48 : 16];
            for (int e = 0; e < 256; ++e) {
                code[e] = next(five ? 32 : 16);
                qs[32 * (e / 64) + e % 32] |= std::uint8_t((code[e] & 15) << ((e % 64) < 32 ? 0 : 4));
                if (five) blk[std::size_t(16 + e % 32)] |= std::uint8_t((code[e] >> 4) << (e / 32));
                expect[std::size_t(e)] = d * float(sc[e / 32]) * float(code[e]) - dmin * float(mn[e / 32]);
            }
        } else { // Q6_K: ql[128] qh[64] scales[16] d
            int sc[16];
            for (int b = 0; b < 16; ++b) {
                sc[b] = next(256) - 128;
                blk[std::size_t(192 + b)] = std::uint8_t(std::int8_t(sc[b]));
            }
            for (int e = 0; e < 256; ++e) {
                code[e] = next(64) - 32;
                const int u = code[e] + 32, h = e / 128, r = e % 128;
                blk[std::size_t(64 * h + r % 64)] |= std::uint8_t((u & 15) << (4 * (r / 64)));
                blk[std::size_t(128 + 32 * h + r % 32)] |= std::uint8_t((u >> 4) << (2 * (r / 32)));
                expect[std::size_t(e)] = d * float(sc[e / 16]) * float(code[e]);
            }
            std::memcpy(&blk[208], &dh, 2);
        }
        std::vector<float> got(256);
        QVERIFY(io::dequantizeGgml(type, blk.data(), got.data(), 256).ok());
        for (int e = 0; e < 256; ++e)
            QVERIFY2(got[std::size_t(e)] == expect[std::size_t(e)],
                     qPrintable(QString("trial %1 element %2: %3 != %4")
                                    .arg(trial)
                                    .arg(e)
                                    .arg(double(got[std::size_t(e)]))
                                    .arg(double(expect[std::size_t(e)]))));
        QVERIFY(sameBits(ggmlStyleDecode(t, blk.data(), 1), got));
    }
    // A wrong length is refused.
    std::vector<std::uint8_t> blk(std::size_t(bytes), 0);
    std::vector<float> out(256);
    QVERIFY(!io::dequantizeGgml(type, blk.data(), out.data(), 128).ok());
}

// Reference quantizers on random rows: decoding matches the independent decoder bit for bit,
// codes are in range (the decode is bounded), and the error stays within each type's budget
// (relative RMS error against the data, max error against the block's absolute maximum).
void TestGgufExport::kquantQuantizeRoundTrip_data()
{
    QTest::addColumn<int>("type");
    QTest::addColumn<double>("relRms"); // RMS error / RMS data
    QTest::addColumn<double>("relMax"); // max error / max |data| of its super-block
    QTest::newRow("Q2_K") << int(GgmlType::Q2_K) << 0.40 << 0.45;
    QTest::newRow("Q3_K") << int(GgmlType::Q3_K) << 0.20 << 0.25;
    QTest::newRow("Q4_K") << int(GgmlType::Q4_K) << 0.10 << 0.12;
    QTest::newRow("Q5_K") << int(GgmlType::Q5_K) << 0.05 << 0.06;
    QTest::newRow("Q6_K") << int(GgmlType::Q6_K) << 0.025 << 0.03;
}
void TestGgufExport::kquantQuantizeRoundTrip()
{
    QFETCH(int, type);
    QFETCH(double, relRms);
    QFETCH(double, relMax);
    const GgmlType t = GgmlType(type);
    constexpr int rows = 24, cols = 512;
    auto x = pseudoRandom(std::size_t(rows) * cols, 11);
    // Heavier tails than uniform, varying magnitude per row, an all-zero super-block, and an
    // all-positive one (min-based types keep min = 0).
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
            float& v = x[std::size_t(r * cols + c)];
            v = v * v * v * float(1 + r) * 0.01f;
            if (r == 3 && c < 256) v = 0;
            if (r == 4 && c < 256) v = std::fabs(v) + 0.01f;
        }
    auto e = exporting::encodeMatrixGgml(t, x.data(), rows, cols);
    QVERIFY2(e.ok(), e.ok() ? "" : e.error().toString().c_str());
    QCOMPARE(e->bytes.size(), io::ggmlRowBytes(t, cols) * rows);
    std::vector<float> dec(x.size());
    QVERIFY(io::dequantizeGgml(type, e->bytes.data(), dec.data(), std::int64_t(x.size())).ok());
    QVERIFY(sameBits(ggmlStyleDecode(t, e->bytes.data(), int(x.size() / 256)), dec));
    double se = 0, sx = 0, worst = 0;
    for (std::size_t sb = 0; sb < x.size() / 256; ++sb) {
        float amax = 0;
        for (int j = 0; j < 256; ++j)
            amax = std::max(amax, std::fabs(x[sb * 256 + std::size_t(j)]));
        for (int j = 0; j < 256; ++j) {
            const std::size_t i = sb * 256 + std::size_t(j);
            const double err = double(dec[i]) - double(x[i]);
            QVERIFY(std::isfinite(dec[i]));
            se += err * err;
            sx += double(x[i]) * double(x[i]);
            if (amax == 0) QCOMPARE(dec[i], 0.0f);
            else worst = std::max(worst, std::fabs(err) / double(amax));
        }
    }
    const double rel = std::sqrt(se / sx);
    qInfo("%s: relative RMS error %.4f, max error / block max %.4f", io::ggmlTypeName(type), rel, worst);
    QVERIFY2(rel <= relRms, qPrintable(QString::number(rel)));
    QVERIFY2(worst <= relMax, qPrintable(QString::number(worst)));
    // Deterministic: the same input gives the same bytes.
    auto again = exporting::encodeMatrixGgml(t, x.data(), rows, cols);
    QVERIFY(again.ok() && again->bytes == e->bytes);
    // Rows that are not whole super-blocks are refused.
    QVERIFY(!exporting::encodeMatrixGgml(t, x.data(), 1, 288).ok());
}

// A K-quant export of the demo model (rows 128 / 352 wide, not multiples of 256) falls back per
// tensor as llama.cpp's llama-quant.cpp does, with a warning each; the file verifies.
void TestGgufExport::kquantRowFallback()
{
    const std::map<GgmlType, GgmlType> fallback = {{GgmlType::Q2_K, GgmlType::Q4_0},
                                                   {GgmlType::Q3_K, GgmlType::Q4_0},
                                                   {GgmlType::Q4_K, GgmlType::Q5_0},
                                                   {GgmlType::Q5_K, GgmlType::Q5_1},
                                                   {GgmlType::Q6_K, GgmlType::Q8_0}};
    QTemporaryDir dir;
    for (const auto& [k, fb] : fallback) {
        QCOMPARE(exporting::parseGgufExportType(io::ggmlTypeLowerName(k)).value(), k);
        exporting::GgufExportOptions o;
        o.weightType = k;
        const std::string out = dir.filePath(QString("demo-%1.gguf").arg(io::ggmlTypeName(int(k)))).toStdString();
        auto r = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(), out, o);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QVERIFY(r->verify.ok);
        int matrices = 0;
        for (const auto& t : r->tensors) {
            if (t.name.find("norm") != std::string::npos) continue;
            ++matrices;
            QCOMPARE(int(t.type), int(fb));
        }
        QCOMPARE(int(r->warnings.size()), matrices);
        QVERIFY2(r->warnings.front().find(std::string("written as ") + io::ggmlTypeName(int(fb))) != std::string::npos,
                 r->warnings.front().c_str());
    }
}

QTEST_GUILESS_MAIN(TestGgufExport)
#include "tst_gguf_export.moc"
