#include "io/checkpoint.h"

#include "io_test_util.h"

#include <QDir>
#include <QTemporaryDir>
#include <QTest>

using namespace qb;
using namespace qbtest;

class TestCheckpoint : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;
    int m_n = 0;

    // A fresh model directory with config.json and model.safetensors.
    std::string makeModel(const std::vector<RawTensor>& tensors, const std::string& config)
    {
        const QString d = m_dir.filePath(QString("m%1").arg(m_n++));
        QDir().mkpath(d);
        writeFile(QDir(d).filePath("config.json").toStdString(), config);
        writeFile(QDir(d).filePath("model.safetensors").toStdString(), safetensorsBytes(tensors));
        return d.toStdString();
    }
    static bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }
    static std::string openError(const std::string& path)
    {
        auto r = io::openCheckpoint(path);
        return r.ok() ? std::string("<opened>") : r.error().toString();
    }

private Q_SLOTS:
    void opensDirectoryAndFile()
    {
        const auto dir = makeModel(tinyLlamaTensors(DType::F16), tinyConfigJson());
        writeFile(dir + "/tokenizer.json", "{}");
        for (const std::string& p : {dir, dir + "/model.safetensors", dir + "/config.json"}) {
            auto r = io::openCheckpoint(p);
            QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
            QCOMPARE(int(r->format), int(io::CheckpointFormat::Safetensors));
            QCOMPARE(r->config.hiddenSize, std::int64_t(8));
            QCOMPARE(r->tensors.size(), tinyLlamaShapes().size());
            QCOMPARE(r->files.size(), std::size_t(1));
            QVERIFY(r->fileBytes > 0);
            QVERIFY(has(r->tokenizerPath, "tokenizer.json"));
            QVERIFY(r->warnings.empty());
            const TensorInfo* q = r->find("model.layers.1.self_attn.q_proj.weight");
            QVERIFY(q);
            QCOMPARE(q->shape, (std::vector<std::int64_t>{8, 8}));
            QVERIFY(!r->find("nope"));
        }
        QCOMPARE(std::string(io::checkpointFormatName(io::CheckpointFormat::Gguf)), std::string("gguf"));
    }
    // One message for "no tokenizer" wherever text must be tokenized (it was written 7 times).
    void missingTokenizerIsOneClearError()
    {
        const auto dir = makeModel(tinyLlamaTensors(DType::F16), tinyConfigJson());
        auto ck = io::openCheckpoint(dir);
        QVERIFY(ck.ok());
        QVERIFY(ck->tokenizerPath.empty());
        auto tok = io::loadCheckpointTokenizer(*ck);
        QVERIFY(!tok.ok());
        QCOMPARE(tok.error().code, ErrorCode::InvalidArgument);
        QVERIFY2(has(tok.error().toString(), "the model has no tokenizer.json beside it (" + dir + ")"),
                 tok.error().toString().c_str());
        writeFile(dir + "/tokenizer.json", "{"); // present but broken: the tokenizer's own error
        auto ck2 = io::openCheckpoint(dir);
        QVERIFY(ck2.ok());
        auto bad = io::loadCheckpointTokenizer(*ck2);
        QVERIFY(!bad.ok());
        QVERIFY2(has(bad.error().toString(), "tokenizer.json"), bad.error().toString().c_str());
    }
    void shardedDirectory()
    {
        const QString d = m_dir.filePath("sharded");
        QDir().mkpath(d);
        auto all = tinyLlamaTensors(DType::BF16);
        std::vector<RawTensor> a(all.begin(), all.begin() + 7), b(all.begin() + 7, all.end());
        writeFile((d + "/model-00001-of-00002.safetensors").toStdString(), safetensorsBytes(a));
        writeFile((d + "/model-00002-of-00002.safetensors").toStdString(), safetensorsBytes(b));
        std::string map = "\"x\":\"model-00001-of-00002.safetensors\"";
        for (const auto& t : all)
            map += ",\"" + t.name + "\":\"model-0000" + (&t - all.data() < 7 ? "1" : "2") + "-of-00002.safetensors\"";
        map.erase(0, map.find(',') + 1);
        writeFile((d + "/model.safetensors.index.json").toStdString(), "{\"weight_map\":{" + map + "}}");
        writeFile((d + "/config.json").toStdString(), tinyConfigJson());
        auto r = io::openCheckpoint(d.toStdString());
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QCOMPARE(r->files.size(), std::size_t(2));
        QCOMPARE(r->tensors.size(), all.size());
        std::vector<float> got(8 * 16), expect(8 * 16);
        const TensorInfo* down = r->find("model.layers.1.mlp.down_proj.weight");
        QVERIFY(down && io::readTensorF32(*down, got.data()).ok());
        const auto& raw = *std::find_if(all.begin(), all.end(),
                                        [](auto& t) { return t.name == "model.layers.1.mlp.down_proj.weight"; });
        QVERIFY(convertToF32(DType::BF16, raw.bytes.data(), expect.data(), expect.size()).ok());
        QCOMPARE(got, expect);
    }
    void tiedAndQwenBiases()
    {
        const auto dir = makeModel(tinyLlamaTensors(DType::F32, {}, true, true),
                                   tinyConfigJson({}, "Qwen2ForCausalLM", "qwen2", ",\"tie_word_embeddings\":true"));
        auto r = io::openCheckpoint(dir);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QVERIFY(r->config.tieWordEmbeddings);
        // Qwen2 without biases is refused.
        const auto noBias = makeModel(tinyLlamaTensors(DType::F32, {}, false, true),
                                      tinyConfigJson({}, "Qwen2ForCausalLM", "qwen2", ",\"tie_word_embeddings\":true"));
        const auto e = openError(noBias);
        QVERIFY2(has(e, "model.layers.0.self_attn.q_proj.bias is missing"), e.c_str());
    }
    void missingConfig()
    {
        const auto dir = makeModel(tinyLlamaTensors(), tinyConfigJson());
        QFile::remove(QString::fromStdString(dir + "/config.json"));
        const auto e = openError(dir);
        QVERIFY2(has(e, "config.json not found"), e.c_str());
        const auto e2 = openError(dir + "/model.safetensors");
        QVERIFY2(has(e2, "config.json not found"), e2.c_str());
    }
    void malformedConfig()
    {
        const auto e = openError(makeModel(tinyLlamaTensors(), "{\"architectures\": [\"Llama"));
        QVERIFY2(has(e, "not valid JSON") && has(e, "config.json"), e.c_str());
    }
    void unsupportedArchitecture()
    {
        const auto e = openError(makeModel(tinyLlamaTensors(), tinyConfigJson({}, "GPT2LMHeadModel", "gpt2")));
        QVERIFY2(has(e, "unsupported architecture \"GPT2LMHeadModel\"") && has(e, "\"architectures\""), e.c_str());
    }
    void tensorMissing()
    {
        auto t = tinyLlamaTensors();
        t.erase(
            std::find_if(t.begin(), t.end(), [](auto& x) { return x.name == "model.layers.1.mlp.up_proj.weight"; }));
        const auto e = openError(makeModel(t, tinyConfigJson()));
        QVERIFY2(has(e, "model.layers.1.mlp.up_proj.weight is missing (expected shape [16, 8])"), e.c_str());
        // Untied config without lm_head.
        auto t2 = tinyLlamaTensors();
        t2.pop_back();
        QVERIFY(has(openError(makeModel(t2, tinyConfigJson())), "lm_head.weight is missing"));
    }
    void wrongShape()
    {
        auto t = tinyLlamaTensors();
        for (auto& x : t)
            if (x.name == "model.layers.0.self_attn.k_proj.weight") x.shape = {8, 4}; // same bytes, transposed
        const auto e = openError(makeModel(t, tinyConfigJson()));
        QVERIFY2(has(e, "tensor model.layers.0.self_attn.k_proj.weight has shape [8, 4], expected [4, 8]"), e.c_str());
    }
    void invFreqIgnoredWithWarning()
    {
        auto t = tinyLlamaTensors();
        t.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", {2}, std::string(8, '\0')});
        t.push_back({"extra.buffer", "F32", {1}, std::string(4, '\0')});
        auto r = io::openCheckpoint(makeModel(t, tinyConfigJson()));
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QVERIFY(!r->find("model.layers.0.self_attn.rotary_emb.inv_freq"));
        QCOMPARE(r->warnings.size(), std::size_t(2));
        QVERIFY(has(r->warnings[0], "inv_freq"));
        QVERIFY(has(r->warnings[1], "extra.buffer"));
    }
    void badPaths()
    {
        QVERIFY(has(openError(m_dir.filePath("does-not-exist").toStdString()), "no such file"));
        writeFile(m_dir.filePath("x.txt").toStdString(), "hi");
        QVERIFY(has(openError(m_dir.filePath("x.txt").toStdString()), "unrecognised"));
        QDir().mkpath(m_dir.filePath("empty"));
        QVERIFY(has(openError(m_dir.filePath("empty").toStdString()), "config.json not found"));
    }
};

QTEST_GUILESS_MAIN(TestCheckpoint)
#include "tst_checkpoint.moc"
