// GGUF export: ggml reference quantizers, exact storage of quantization grids (FORMATS.md §4.9),
// atomic writes (cancel halfway, a write error in the middle, disk-space check), metadata types,
// and the round trip demo model -> GGUF -> our reader -> perplexity.

#include "base/dtype.h"
#include "export/atomic_file.h"
#include "export/ggml_quantize.h"
#include "export/gguf_export.h"
#include "export/gguf_verify.h"
#include "export_test_util.h"
#include "model/forward.h"
#include "io/gguf_reader.h"
#include "quant/uniform_grid.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
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

float roundF16(double x)
{
    return f16ToF32(f32ToF16(float(x)));
}

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
    auto q = quant::quantizeRowsUniform(w, bits, scales, zeros,
                                        quant::groupIndexContiguous(g, int(w.cols())));
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
    void cliConvertAndVerify();
    void qwen2TiedBiasesPaddedVocab();
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
    const int levels = t == GgmlType::Q8_0   ? 127
                       : t == GgmlType::Q4_0 ? 8
                       : t == GgmlType::Q5_0 ? 16
                                             : 0;
    std::vector<float> x(64);
    for (int j = 0; j < 64; ++j) {
        if (levels) // symmetric: extreme at -levels (Q4_0/Q5_0 use max/-half), then a ramp
            x[j] = 0.25f * float(j % 32 == 0
                                     ? -levels
                                     : (j * 7 % (2 * levels)) - levels + (t == GgmlType::Q8_0));
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
    QTest::addColumn<double>("stepFraction"); // bound on |x - x'| in units of the block's range
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
    QCOMPARE(e->bytes.size(), exporting::ggmlRowBytes(GgmlType(type), 32) * 64);
    QVERIFY2(e->maxAbsDiff <= stepFraction * 1.01 + 1e-7,
             qPrintable(QString::number(e->maxAbsDiff)));
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
        QVERIFY2(std::find(c.allowed.begin(), c.allowed.end(), best->first) != c.allowed.end(),
                 qPrintable(QString("%1-bit sym=%2 -> %3")
                                .arg(c.bits)
                                .arg(c.sym)
                                .arg(io::ggmlTypeName(int(best->first)))));
        QVERIFY(best->second.exact);
        if (c.sym)
            QVERIFY(best->second.fromGrid); // asym: a row may be exact via the reference quantizer
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
    QVERIFY(best->first == GgmlType::F32 || best->first == GgmlType::F16 ||
            best->first == GgmlType::BF16);
}

void TestGgufExport::ropePermutation()
{
    // d = 4: GGUF rows (0,1,2,3) take HF rows (0,2,1,3) per head.
    const auto p = exporting::llamaRopePermutation(2, 4);
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
        QCOMPARE(std::uint64_t(t.bytes.data() - g->tensors.front().bytes.data()) + g->dataOffset,
                 expect);
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
    auto r = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(),
                                   out.toStdString(), o, &ctx);
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
    auto r = exporting::exportGguf(qbtest::demoCheckpoint(), qbtest::demoTokenizer(),
                                   out.toStdString(), o);
    QVERIFY(!r.ok());
    QCOMPARE(r.error().code, ErrorCode::Io);
    QVERIFY2(r.error().toString().find("write failed") != std::string::npos,
             r.error().toString().c_str());
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
    QVERIFY2(s.error().message.find("not enough free disk space") != std::string::npos,
             s.error().message.c_str());
    QVERIFY(exporting::checkDiskSpace(dir.path().toStdString(), 1024).ok());
    auto w = exporting::AtomicFileWriter::open(dir.filePath("x.bin").toStdString(), std::uint64_t(1)
                                                                                        << 60);
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
    qInfo("perplexity: F32 %.6f, GGUF Q8_0 %.6f (%+.4f %%)", original, q8,
          100 * (q8 / original - 1));
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
    o.gridFor = [&](const std::string& n) -> const quant::QuantizedRows* {
        auto it = grids.find(n);
        return it == grids.end() ? nullptr : it->second.get();
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

void TestGgufExport::cliConvertAndVerify()
{
    QTemporaryDir dir;
    const QString out = dir.filePath("cli.gguf");
    QProcess p;
    p.start(QStringLiteral(QB_CLI_PATH), {"convert", QString::fromStdString(qbtest::demoDir()),
                                          "--out", out, "--gguf-type", "q5_1", "--json"});
    QVERIFY(p.waitForFinished(120000));
    QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
    const QByteArray json = p.readAllStandardOutput();
    QVERIFY(json.contains("\"verified\":true"));
    QVERIFY(json.contains("\"type\":\"Q5_1\""));
    p.start(QStringLiteral(QB_CLI_PATH), {"verify", out});
    QVERIFY(p.waitForFinished(120000));
    QCOMPARE(p.exitCode(), 0);
    QVERIFY(p.readAllStandardOutput().contains("OK"));
    p.start(QStringLiteral(QB_CLI_PATH),
            {"verify", QString::fromStdString(qbtest::demoDir() + "/model.safetensors")});
    QVERIFY(p.waitForFinished(120000));
    QCOMPARE(p.exitCode(), 0);
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
        std::vector<float> x(std::size_t(t.numel())), y(std::size_t(b->numel()));
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

QTEST_GUILESS_MAIN(TestGgufExport)
#include "tst_gguf_export.moc"
