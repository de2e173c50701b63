#include "io/gguf_reader.h"

#include "io/checkpoint.h"
#include "io_test_util.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;
using namespace qbtest;

namespace {

// Independent reference dequantizers, written from the ggml formulas (FORMATS.md §4.5).
float half(const std::string& b, std::size_t at)
{
    std::uint16_t h;
    std::memcpy(&h, b.data() + at, 2);
    return f16ToF32(h);
}

std::vector<float> refDequant(int type, const std::string& b, std::size_t n)
{
    std::vector<float> out(n);
    const std::size_t bs = type == 8 ? 34 : type == 2 ? 18 : 20;
    for (std::size_t blk = 0; blk < n / 32; ++blk) {
        const std::size_t o = blk * bs;
        const float d = half(b, o);
        for (std::size_t e = 0; e < 32; ++e) {
            float x = 0;
            if (type == 8) {
                x = d * float(std::int8_t(b[o + 2 + e]));
            } else {
                const std::size_t qs = o + (type == 2 ? 2 : 4);
                const auto byte = std::uint8_t(b[qs + e % 16]);
                const int nib = e < 16 ? (byte & 15) : (byte >> 4);
                x = type == 2 ? d * float(nib - 8) : d * float(nib) + half(b, o + 2);
            }
            out[blk * 32 + e] = x;
        }
    }
    return out;
}

// Random blocks with finite f16 scales.
std::string randomBlocks(int type, std::size_t blocks, std::uint32_t seed)
{
    const std::size_t bs = type == 8 ? 34 : type == 2 ? 18 : 20;
    std::string s(blocks * bs, '\0');
    std::uint32_t r = seed;
    for (auto& c : s) {
        r = r * 1664525u + 1013904223u;
        c = char(r >> 24);
    }
    for (std::size_t b = 0; b < blocks; ++b) {
        const float v = values(2, seed + std::uint32_t(b))[0] * 0.1f;
        const std::uint16_t d = f32ToF16(v), m = f32ToF16(-v * 3);
        std::memcpy(&s[b * bs], &d, 2);
        if (type == 3) std::memcpy(&s[b * bs + 2], &m, 2);
    }
    return s;
}

// llama.cpp's export permutation: GGUF row h*d + 2i + a takes HF row h*d + a*d/2 + i.
std::vector<float> permuteRows(const std::vector<float>& w, std::int64_t rows, std::int64_t heads)
{
    const std::int64_t cols = std::int64_t(w.size()) / rows, d = rows / heads;
    std::vector<float> out(w.size());
    for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t i = 0; i < d / 2; ++i)
            for (std::int64_t a = 0; a < 2; ++a)
                for (std::int64_t c = 0; c < cols; ++c)
                    out[std::size_t(((h * d + 2 * i + a) * cols) + c)] =
                        w[std::size_t((h * d + a * d / 2 + i) * cols + c)];
    return out;
}

} // namespace

class TestGguf : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;
    int m_n = 0;

    std::string write(const std::string& bytes)
    {
        const auto p = m_dir.filePath(QString("f%1.gguf").arg(m_n++)).toStdString();
        writeFile(p, bytes);
        return p;
    }
    static bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

    // A tiny model as an HF state dict (F32 values) plus the GGUF holding it.
    struct Model {
        std::map<std::string, std::vector<float>> hf;
        std::string path;
    };
    Model tinyModel(const std::string& arch, bool biases)
    {
        TinyDims d;
        Model m;
        GgufWriter w;
        w.kvString("general.architecture", arch);
        w.kvU32("general.alignment", 32);
        w.kvU32(arch + ".context_length", 64);
        w.kvU32(arch + ".embedding_length", std::uint32_t(d.hidden));
        w.kvU32(arch + ".block_count", std::uint32_t(d.layers));
        w.kvU32(arch + ".feed_forward_length", std::uint32_t(d.inter));
        w.kvU32(arch + ".attention.head_count", std::uint32_t(d.heads));
        w.kvU32(arch + ".attention.head_count_kv", std::uint32_t(d.kvHeads));
        w.kvF32(arch + ".attention.layer_norm_rms_epsilon", 1e-5f);
        w.kvF32(arch + ".rope.freq_base", 1e6f);
        w.kvU32("tokenizer.ggml.bos_token_id", 1);
        std::uint32_t seed = 100;
        for (const auto& [name, shape] : tinyLlamaShapes(d, biases, true)) {
            auto v = values(numelOf(shape), seed++);
            m.hf[name] = v;
            std::vector<float> stored = v;
            if (arch == "llama" && (has(name, "q_proj") || has(name, "k_proj")))
                stored = permuteRows(v, shape[0], has(name, "q_proj") ? d.heads : d.kvHeads);
            std::vector<std::uint64_t> ne(shape.rbegin(), shape.rend());
            w.tensor(hfToGguf(name), ne, 0, encode(stored, DType::F32));
        }
        m.path = write(w.bytes());
        return m;
    }

private Q_SLOTS:
    void dequantizeMatchesReference_data()
    {
        QTest::addColumn<int>("type");
        QTest::newRow("Q8_0") << 8;
        QTest::newRow("Q4_0") << 2;
        QTest::newRow("Q4_1") << 3;
    }
    void dequantizeMatchesReference()
    {
        QFETCH(int, type);
        const std::size_t rows = 3, cols = 64;
        const std::string blocks = randomBlocks(type, rows * cols / 32, 7u + std::uint32_t(type));
        GgufWriter w;
        w.kvString("general.architecture", "llama");
        w.tensor("blk.0.ffn_down.weight", {cols, rows}, std::uint32_t(type), blocks);
        auto f = io::readGgufFile(write(w.bytes()));
        QVERIFY2(f.ok(), f.ok() ? "" : f.error().toString().c_str());
        QCOMPARE(f->tensors.size(), std::size_t(1));
        const TensorInfo& t = f->tensors[0];
        QCOMPARE(t.shape, (std::vector<std::int64_t>{std::int64_t(rows), std::int64_t(cols)}));
        QCOMPARE(t.ggmlType, type);
        QCOMPARE(std::string(t.bytes.view()), blocks);
        std::vector<float> got(rows * cols);
        QVERIFY(io::readTensorF32(t, got.data()).ok());
        const auto expect = refDequant(type, blocks, rows * cols);
        QCOMPARE(std::memcmp(got.data(), expect.data(), got.size() * 4), 0);
    }
    void plainTypes()
    {
        const auto v = values(32, 3);
        GgufWriter w;
        w.tensor("a", {32}, 0, encode(v, DType::F32));
        w.tensor("b", {16, 2}, 1, encode(v, DType::F16));
        w.tensor("c", {8, 4}, 30, encode(v, DType::BF16));
        auto f = io::readGgufFile(write(w.bytes()));
        QVERIFY2(f.ok(), f.ok() ? "" : f.error().toString().c_str());
        const DType types[] = {DType::F32, DType::F16, DType::BF16};
        for (int i = 0; i < 3; ++i) {
            std::vector<float> got(32), expect(32);
            QCOMPARE(int(f->tensors[std::size_t(i)].dtype), int(types[i]));
            QVERIFY(io::readTensorF32(f->tensors[std::size_t(i)], got.data()).ok());
            const auto bytes = encode(v, types[i]);
            QVERIFY(convertToF32(types[i], bytes.data(), expect.data(), 32).ok());
            QCOMPARE(got, expect);
        }
        QCOMPARE(f->tensors[2].shape, (std::vector<std::int64_t>{4, 8}));
    }
    void metadataTypes()
    {
        GgufWriter w;
        w.kvScalar<std::uint8_t>("k.u8", 0, 200);
        w.kvScalar<std::int8_t>("k.i8", 1, -5);
        w.kvScalar<std::uint16_t>("k.u16", 2, 60000);
        w.kvScalar<std::int16_t>("k.i16", 3, -30000);
        w.kvU32("k.u32", 4000000000u);
        w.kvScalar<std::int32_t>("k.i32", 5, -2000000000);
        w.kvF32("k.f32", 0.5f);
        w.kvScalar<std::uint8_t>("k.bool", 7, 1);
        w.kvString("k.str", "héllo");
        w.kvScalar<std::uint64_t>("k.u64", 10, 1ull << 40);
        w.kvScalar<std::int64_t>("k.i64", 11, -(1ll << 40));
        w.kvScalar<double>("k.f64", 12, 0.25);
        w.kvStringArray("tokenizer.ggml.tokens", {"<s>", "a", "b"});
        w.kvI32Array("tokenizer.ggml.token_type", {3, 1, -1});
        auto f = io::readGgufFile(write(w.bytes()));
        QVERIFY2(f.ok(), f.ok() ? "" : f.error().toString().c_str());
        QCOMPARE(f->metadata.size(), std::size_t(14));
        std::int64_t i = 0;
        double d = 0;
        QVERIFY(f->find("k.u8")->toInt(i) && i == 200);
        QVERIFY(f->find("k.i8")->toInt(i) && i == -5);
        QVERIFY(f->find("k.u16")->toInt(i) && i == 60000);
        QVERIFY(f->find("k.i16")->toInt(i) && i == -30000);
        QVERIFY(f->find("k.u32")->toInt(i) && i == 4000000000ll);
        QVERIFY(f->find("k.i32")->toInt(i) && i == -2000000000);
        QVERIFY(f->find("k.f32")->toDouble(d) && d == 0.5);
        QVERIFY(f->find("k.bool")->toInt(i) && i == 1);
        QCOMPARE(*f->find("k.str")->toString(), std::string("héllo"));
        QVERIFY(f->find("k.u64")->toInt(i) && i == (1ll << 40));
        QVERIFY(f->find("k.i64")->toInt(i) && i == -(1ll << 40));
        QVERIFY(f->find("k.f64")->toDouble(d) && d == 0.25);
        QCOMPARE(f->find("tokenizer.ggml.tokens")->strings, (std::vector<std::string>{"<s>", "a", "b"}));
        QCOMPARE(f->find("tokenizer.ggml.token_type")->ints, (std::vector<std::int64_t>{3, 1, -1}));
        QCOMPARE(f->find("tokenizer.ggml.tokens")->display(), std::string("[string x 3]"));
        QCOMPARE(int(f->find("k.f32")->type), int(io::GgufValueType::Float32));
        QVERIFY(!f->find("nope"));
    }
    void llamaPermutationRoundTrip()
    {
        const Model m = tinyModel("llama", true);
        auto ck = io::openCheckpoint(m.path);
        QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
        QCOMPARE(int(ck->format), int(io::CheckpointFormat::Gguf));
        const ModelConfig& c = ck->config;
        QCOMPARE(c.hiddenSize, std::int64_t(8));
        QCOMPARE(c.intermediateSize, std::int64_t(16));
        QCOMPARE(c.numHiddenLayers, std::int64_t(2));
        QCOMPARE(c.numAttentionHeads, std::int64_t(2));
        QCOMPARE(c.numKeyValueHeads, std::int64_t(1));
        QCOMPARE(c.headDim, std::int64_t(4));
        QCOMPARE(c.vocabSize, std::int64_t(16));
        QCOMPARE(c.maxPositionEmbeddings, std::int64_t(64));
        QCOMPARE(c.ropeTheta, 1e6);
        QCOMPARE(c.rmsNormEps, double(1e-5f));
        QCOMPARE(c.bosTokenId, std::int64_t(1));
        QVERIFY(c.tieWordEmbeddings);
        QVERIFY(c.attentionBias);
        QCOMPARE(ck->tensors.size(), m.hf.size());
        const TensorInfo* q = ck->find("model.layers.0.self_attn.q_proj.weight");
        QVERIFY(q);
        QCOMPARE(q->permutedHeads, 2);
        QCOMPARE(q->sourceName, std::string("blk.0.attn_q.weight"));
        QCOMPARE(ck->find("model.layers.0.self_attn.k_proj.bias")->permutedHeads, 1);
        QCOMPARE(ck->find("model.layers.0.self_attn.v_proj.weight")->permutedHeads, 0);
        for (const auto& [name, expect] : m.hf) {
            const TensorInfo* t = ck->find(name);
            QVERIFY2(t, name.c_str());
            std::vector<float> got(std::size_t(t->numel()));
            QVERIFY(io::readTensorF32(*t, got.data()).ok());
            QVERIFY2(got == expect, name.c_str());
        }
    }
    void qwen2NotPermuted()
    {
        const Model m = tinyModel("qwen2", true);
        auto ck = io::openCheckpoint(m.path);
        QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
        QCOMPARE(int(ck->config.architecture), int(Architecture::Qwen2));
        for (const auto& t : ck->tensors)
            QCOMPARE(t.permutedHeads, 0);
        std::vector<float> got(64);
        QVERIFY(io::readTensorF32(*ck->find("model.layers.1.self_attn.q_proj.weight"), got.data()).ok());
        QCOMPARE(got, m.hf.at("model.layers.1.self_attn.q_proj.weight"));
    }
    void nameMapping()
    {
        QCOMPARE(io::ggufToHfName("blk.12.ffn_gate.weight"), std::string("model.layers.12.mlp.gate_proj.weight"));
        QCOMPARE(io::ggufToHfName("blk.0.attn_output.bias"), std::string("model.layers.0.self_attn.o_proj.bias"));
        QCOMPARE(io::ggufToHfName("output.weight"), std::string("lm_head.weight"));
        QCOMPARE(io::ggufToHfName("rope_freqs.weight"), std::string());
    }
    void badMagic()
    {
        GgufWriter w;
        w.magic = 0x46554748u;
        auto f = io::readGgufFile(write(w.bytes()));
        QVERIFY(!f.ok());
        QVERIFY2(has(f.error().toString(), "bad magic"), f.error().toString().c_str());
        QVERIFY(!io::readGgufFile(write("GGU")).ok());
    }
    void unknownVersion()
    {
        GgufWriter w;
        w.version = 4;
        auto f = io::readGgufFile(write(w.bytes()));
        QVERIFY(!f.ok());
        QCOMPARE(int(f.error().code), int(ErrorCode::Unsupported));
        QVERIFY2(has(f.error().toString(), "unsupported GGUF version 4"), f.error().toString().c_str());
    }
    void truncatedTensorData()
    {
        GgufWriter w;
        w.kvString("general.architecture", "llama");
        w.tensor("a", {32}, 0, std::string(128, '\0'));
        w.tensor("b", {64}, 0, std::string(256, '\0'));
        std::string bytes = w.bytes();
        bytes.resize(bytes.size() - 10);
        auto f = io::readGgufFile(write(bytes));
        QVERIFY(!f.ok());
        QCOMPARE(int(f.error().code), int(ErrorCode::OutOfRange));
        QVERIFY2(has(f.error().toString(), "tensor b") && has(f.error().toString(), "truncated"),
                 f.error().toString().c_str());
        // Header cut inside the key/value section.
        GgufWriter w2;
        w2.kvString("general.architecture", "llama");
        auto h = io::readGgufFile(write(w2.bytes().substr(0, 40)));
        QVERIFY(!h.ok());
    }
    void unsupportedTensorType()
    {
        GgufWriter w;
        // Q8_K (runtime-only activation blocks) has no decoder; the K-quants Q2_K..Q6_K do.
        w.tensor("blk.0.ffn_up.weight", {256}, 15, std::string(292, '\0'));
        auto f = io::readGgufFile(write(w.bytes()));
        QVERIFY(!f.ok());
        QCOMPARE(int(f.error().code), int(ErrorCode::Unsupported));
        QVERIFY2(has(f.error().toString(), "Q8_K") && has(f.error().toString(), "blk.0.ffn_up.weight"),
                 f.error().toString().c_str());
    }
    // Regression (fuzzing): block_count 2^32-1 made the loader size per-layer tables from it and
    // die with bad_alloc; head_count 0 divided by zero. Every size is checked before use.
    void absurdSizesAreRefusedByName_data()
    {
        QTest::addColumn<QString>("key");
        QTest::addColumn<quint64>("value");
        QTest::addColumn<QString>("expected");
        QTest::newRow("block_count 2^32-1") << QStringLiteral("llama.block_count") << quint64(4294967295u)
                                            << QStringLiteral("llama.block_count 4294967295");
        QTest::newRow("block_count 2^31") << QStringLiteral("llama.block_count") << quint64(2147483648u)
                                          << QStringLiteral("llama.block_count 2147483648");
        QTest::newRow("block_count 1e9") << QStringLiteral("llama.block_count") << quint64(1000000000u)
                                         << QStringLiteral("llama.block_count 1000000000");
        QTest::newRow("head_count 0") << QStringLiteral("llama.attention.head_count") << quint64(0)
                                      << QStringLiteral("llama.attention.head_count");
        QTest::newRow("feed_forward_length 2^31") << QStringLiteral("llama.feed_forward_length") << quint64(2147483648u)
                                                  << QStringLiteral("llama.feed_forward_length 2147483648");
        QTest::newRow("context_length 2^32-1") << QStringLiteral("llama.context_length") << quint64(4294967295u)
                                               << QStringLiteral("llama.context_length 4294967295");
        QTest::newRow("bos id 2^40") << QStringLiteral("tokenizer.ggml.bos_token_id") << quint64(1)
                                     << QStringLiteral("");
    }
    void absurdSizesAreRefusedByName()
    {
        QFETCH(QString, key);
        QFETCH(quint64, value);
        QFETCH(QString, expected);
        TinyDims d;
        GgufWriter w;
        const std::string k = key.toStdString();
        auto u32 = [&](const std::string& name, std::uint32_t v) {
            w.kvU32(name, name == k ? std::uint32_t(value) : v);
        };
        w.kvString("general.architecture", "llama");
        u32("llama.context_length", 64);
        u32("llama.embedding_length", std::uint32_t(d.hidden));
        u32("llama.block_count", std::uint32_t(d.layers));
        u32("llama.feed_forward_length", std::uint32_t(d.inter));
        u32("llama.attention.head_count", std::uint32_t(d.heads));
        u32("llama.attention.head_count_kv", std::uint32_t(d.kvHeads));
        w.kvF32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
        if (expected.isEmpty()) // a u64 id that no vocabulary holds (it once became 0)
            w.kvScalar<std::uint64_t>("tokenizer.ggml.bos_token_id", 10, std::uint64_t(1) << 40);
        std::uint32_t seed = 1;
        for (const auto& [name, shape] : tinyLlamaShapes(d, false, true)) {
            std::vector<std::uint64_t> ne(shape.rbegin(), shape.rend());
            w.tensor(hfToGguf(name), ne, 0, encode(values(numelOf(shape), seed++), DType::F32));
        }
        auto ck = io::openCheckpoint(write(w.bytes()));
        QVERIFY(!ck.ok());
        const std::string msg = ck.error().toString();
        const std::string want =
            expected.isEmpty() ? "bos_token_id 1099511627776 is outside the vocabulary" : expected.toStdString();
        QVERIFY2(has(msg, want), msg.c_str());
    }
    void badHeaderFields()
    {
        GgufWriter a;
        a.kvScalar<std::uint64_t>("general.alignment", 10, 32); // must be u32
        QVERIFY(has(io::readGgufFile(write(a.bytes())).error().toString(), "general.alignment"));
        GgufWriter dup;
        dup.kvU32("x", 1);
        dup.kvU32("x", 2);
        QVERIFY(has(io::readGgufFile(write(dup.bytes())).error().toString(), "duplicate key x"));
        GgufWriter arch;
        arch.kvString("general.architecture", "gpt2");
        auto ck = io::openCheckpoint(write(arch.bytes()));
        QVERIFY(!ck.ok());
        QVERIFY(has(ck.error().toString(), "unsupported architecture \"gpt2\""));
        GgufWriter missing;
        missing.kvString("general.architecture", "llama");
        auto ck2 = io::openCheckpoint(write(missing.bytes()));
        QVERIFY(!ck2.ok());
        QVERIFY2(has(ck2.error().toString(), "llama.embedding_length"), ck2.error().toString().c_str());
    }
};

QTEST_GUILESS_MAIN(TestGguf)
#include "tst_gguf.moc"
