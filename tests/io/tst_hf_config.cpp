#include "io/hf_config.h"
#include "io/json_value.h"

#include "io_test_util.h"

#include <QTemporaryDir>
#include <QTest>

using namespace qb;

class TestHfConfig : public QObject {
    Q_OBJECT

    static ModelConfig parseOk(const std::string& json)
    {
        auto r = io::parseHfConfig(json, "config.json");
        if (!r.ok()) qFatal("unexpected error: %s", r.error().toString().c_str());
        return *r;
    }
    static bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

private Q_SLOTS:
    void llamaDefaults()
    {
        const auto c = parseOk(R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100,
            "bos_token_id":1,"eos_token_id":[2,3]})");
        QCOMPARE(int(c.architecture), int(Architecture::Llama));
        QCOMPARE(c.modelType, std::string("llama"));
        QCOMPARE(c.numKeyValueHeads, std::int64_t(4)); // defaults to heads
        QCOMPARE(c.headDim, std::int64_t(16));         // hidden / heads
        QCOMPARE(c.ropeTheta, 10000.0);
        QCOMPARE(c.rmsNormEps, 1e-6);
        QCOMPARE(c.maxPositionEmbeddings, std::int64_t(2048));
        QVERIFY(!c.tieWordEmbeddings && !c.attentionBias && !c.mlpBias);
        QCOMPARE(c.bosTokenId, std::int64_t(1));
        QCOMPARE(c.eosTokenId, std::int64_t(2));
        QVERIFY(c.ropeScaling.type.empty());
    }
    void llamaBiasesAndHeadDim()
    {
        const auto c = parseOk(R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,
            "num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"attention_bias":true,
            "mlp_bias":true,"tie_word_embeddings":true,"rope_theta":500000.0,"rms_norm_eps":1e-5})");
        QCOMPARE(c.headDim, std::int64_t(32));
        QCOMPARE(c.numKeyValueHeads, std::int64_t(2));
        QVERIFY(c.attentionBias && c.attentionOutputBias && c.mlpBias && c.tieWordEmbeddings);
        QCOMPARE(c.ropeTheta, 500000.0);
        QCOMPARE(c.rmsNormEps, 1e-5);
    }
    void qwen2BiasesAlwaysOn()
    {
        const auto c = parseOk(R"({"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":896,
            "num_attention_heads":14,"num_key_value_heads":2,"attention_bias":false,"tie_word_embeddings":true})");
        QCOMPARE(int(c.architecture), int(Architecture::Qwen2));
        QVERIFY(c.attentionBias);
        QVERIFY(!c.attentionOutputBias);
        QCOMPARE(c.headDim, std::int64_t(64));
        QCOMPARE(c.vocabSize, std::int64_t(151936));
    }
    void mistral()
    {
        const auto c = parseOk(tinyMistral());
        QCOMPARE(int(c.architecture), int(Architecture::Mistral));
        QCOMPARE(c.modelType, std::string("mistral"));
        // Absent num_key_value_heads: MistralConfig's default is 8, LlamaConfig's the head count.
        const auto m =
            parseOk(R"({"architectures":["MistralForCausalLM"],"hidden_size":256,"num_attention_heads":32})");
        QCOMPARE(m.numKeyValueHeads, std::int64_t(8));
        const auto l = parseOk(R"({"architectures":["LlamaForCausalLM"],"hidden_size":256,"num_attention_heads":32})");
        QCOMPARE(l.numKeyValueHeads, std::int64_t(32));
    }
    void modelTypeOnly()
    {
        const auto c = parseOk(R"({"model_type":"qwen2","hidden_size":8,"num_attention_heads":2})");
        QCOMPARE(int(c.architecture), int(Architecture::Qwen2));
    }
    void ropeParametersV5()
    {
        const auto c = parseOk(
            R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"num_attention_heads":2,
            "rope_parameters":{"rope_type":"default","rope_theta":1000000.0}})");
        QCOMPARE(c.ropeTheta, 1e6);
        QVERIFY(c.ropeScaling.type.empty());
    }
    void llama3Scaling()
    {
        const auto c = parseOk(
            R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"num_attention_heads":2,
            "rope_theta":500000.0,"rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,
            "original_max_position_embeddings":8192,"rope_type":"llama3"}})");
        QCOMPARE(c.ropeScaling.type, std::string("llama3"));
        QCOMPARE(c.ropeScaling.factor, 32.0);
        QCOMPARE(c.ropeScaling.lowFreqFactor, 1.0);
        QCOMPARE(c.ropeScaling.highFreqFactor, 4.0);
        QCOMPARE(c.ropeScaling.originalMaxPositionEmbeddings, std::int64_t(8192));
        const auto v5 = parseOk(
            R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"num_attention_heads":2,
            "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0}})");
        QCOMPARE(v5.ropeScaling.type, std::string("llama3"));
        QCOMPARE(v5.ropeTheta, 500000.0);
        QCOMPARE(v5.ropeScaling.factor, 8.0);
    }
    void unsupportedRopeScaling()
    {
        auto r = io::parseHfConfig(
            R"({"architectures":["Qwen2ForCausalLM"],"hidden_size":8,"num_attention_heads":2,
            "rope_scaling":{"type":"yarn","factor":4.0}})",
            "config.json");
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::Unsupported));
        QVERIFY(has(r.error().toString(), "\"yarn\""));
        QVERIFY(has(r.error().toString(), "rope_scaling.type"));
    }
    void newArchitectures()
    {
        const ModelConfig q3 = parseOk(
            R"({"architectures":["Qwen3ForCausalLM"],"hidden_size":64,"num_attention_heads":4,"num_hidden_layers":3,"vocab_size":100,"use_sliding_window":true,"sliding_window":16,"max_window_layers":1})");
        QCOMPARE(q3.architecture, Architecture::Qwen3);
        QVERIFY(q3.qkNorm && !q3.attentionBias && !q3.gemmaNorms);
        QCOMPARE(q3.headDim, std::int64_t(128)); // Qwen3Config's default, not hidden / heads
        QCOMPARE(q3.slidingWindow, std::int64_t(16));
        QCOMPARE(q3.slidingLayers, (std::vector<bool>{false, true, true}));

        const ModelConfig g2 = parseOk(
            R"({"architectures":["Gemma2ForCausalLM"],"hidden_size":64,"num_attention_heads":4,"num_hidden_layers":4,"vocab_size":100,"head_dim":16})");
        QVERIFY(g2.gemmaNorms && !g2.qkNorm && g2.tieWordEmbeddings);
        QCOMPARE(g2.hiddenAct, HiddenAct::GeluTanh);
        QCOMPARE(g2.attnLogitSoftcap, 50.0);
        QCOMPARE(g2.finalLogitSoftcap, 30.0);
        QCOMPARE(g2.queryPreAttnScalar, 256.0);
        QCOMPARE(g2.slidingWindow, std::int64_t(4096));
        QCOMPARE(g2.slidingLayers, (std::vector<bool>{true, false, true, false}));

        const ModelConfig g3 = parseOk(
            R"({"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":6,"vocab_size":100,"head_dim":16,"rope_scaling":{"rope_type":"linear","factor":8.0}})");
        QVERIFY(g3.gemmaNorms && g3.qkNorm);
        QCOMPARE(g3.attnLogitSoftcap, 0.0);
        QCOMPARE(g3.ropeLocalTheta, 10000.0);
        QCOMPARE(g3.ropeTheta, 1000000.0);
        QCOMPARE(g3.ropeScaling.type, std::string("linear"));
        QCOMPARE(g3.slidingLayers, (std::vector<bool>{true, true, true, true, true, false}));

        const ModelConfig phi = parseOk(
            R"({"architectures":["Phi3ForCausalLM"],"hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,"vocab_size":100})");
        QVERIFY(phi.fusedProjections);
        QCOMPARE(phi.slidingWindow, std::int64_t(0));
    }
    void unsupportedVariantsNameTheField_data()
    {
        QTest::addColumn<QString>("json");
        QTest::addColumn<QString>("field");
        QTest::addColumn<QString>("value");
        QTest::newRow("Phi-3 longrope")
            << R"({"architectures":["Phi3ForCausalLM"],"hidden_size":64,"num_attention_heads":4,"rope_scaling":{"type":"longrope","short_factor":[1],"long_factor":[1]}})"
            << "rope_scaling.type" << "\"longrope\"";
        QTest::newRow("Phi-3 su")
            << R"({"architectures":["Phi3ForCausalLM"],"hidden_size":64,"num_attention_heads":4,"rope_scaling":{"type":"su"}})"
            << "rope_scaling.type" << "\"su\"";
        QTest::newRow("partial rotary")
            << R"({"architectures":["Phi3ForCausalLM"],"hidden_size":64,"num_attention_heads":4,"partial_rotary_factor":0.5})"
            << "partial_rotary_factor" << "0.5";
        QTest::newRow("hidden_act")
            << R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":4,"hidden_act":"gelu"})"
            << "hidden_act" << "\"gelu\"";
        QTest::newRow("gemma activation")
            << R"({"architectures":["Gemma2ForCausalLM"],"hidden_size":64,"num_attention_heads":4,"hidden_activation":"relu"})"
            << "hidden_activation" << "\"relu\"";
        QTest::newRow("layer type")
            << R"({"architectures":["MistralForCausalLM"],"hidden_size":64,"num_attention_heads":4,"num_key_value_heads":4,"num_hidden_layers":1,"layer_types":["chunked_attention"]})"
            << "layer_types[0]" << "\"chunked_attention\"";
        QTest::newRow("Gemma 3 multimodal") << R"({"architectures":["Gemma3ForConditionalGeneration"]})"
                                            << "architectures" << "\"Gemma3ForConditionalGeneration\"";
        QTest::newRow("sliding_window on Llama")
            << R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":4,"sliding_window":128})"
            << "sliding_window" << "sliding_window";
    }
    void unsupportedVariantsNameTheField()
    {
        QFETCH(QString, json);
        QFETCH(QString, field);
        QFETCH(QString, value);
        auto r = io::parseHfConfig(json.toStdString(), "config.json");
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::Unsupported));
        const std::string msg = r.error().toString();
        QVERIFY2(has(msg, "field \"" + field.toStdString() + "\""), msg.c_str());
        QVERIFY2(has(msg, value.toStdString()), msg.c_str());
    }
    void unsupportedArchitecture()
    {
        auto r = io::parseHfConfig(R"({"architectures":["GPT2LMHeadModel"],"model_type":"gpt2"})", "config.json");
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::Unsupported));
        QCOMPARE(r.error().toString(),
                 std::string(R"(unsupported architecture "GPT2LMHeadModel" (config.json field "architectures"))"));
        auto mt = io::parseHfConfig(R"({"model_type":"gemma"})", "config.json");
        QVERIFY(!mt.ok());
        QVERIFY(has(mt.error().toString(), R"(unsupported model_type "gemma")"));
    }
    void badValues()
    {
        auto r = io::parseHfConfig(R"({"architectures":["LlamaForCausalLM"],"hidden_size":"big"})", "config.json");
        QVERIFY(!r.ok());
        QVERIFY(has(r.error().toString(), "\"hidden_size\""));
        auto kv = io::parseHfConfig(R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,
            "num_attention_heads":4,"num_key_value_heads":3})",
                                    "config.json");
        QVERIFY(!kv.ok());
        QVERIFY(has(kv.error().toString(), "num_key_value_heads"));
        auto none = io::parseHfConfig("{}", "config.json");
        QVERIFY(!none.ok());
    }
    // Regression (fuzzing): num_hidden_layers of 2^31 and more made the loader allocate per-layer
    // tables until bad_alloc. Every size is bounded before use, and the error names field and value.
    void absurdSizesAreRefusedByName_data()
    {
        QTest::addColumn<QString>("field");
        QTest::addColumn<QString>("value");
        for (const char* v : {"2147483648", "4294967295", "1000000000", "1099511627776"})
            QTest::addRow("num_hidden_layers %s", v) << QStringLiteral("num_hidden_layers") << QString::fromLatin1(v);
        QTest::addRow("vocab_size 2^40") << QStringLiteral("vocab_size") << QStringLiteral("1099511627776");
        QTest::addRow("hidden_size 2^31") << QStringLiteral("hidden_size") << QStringLiteral("2147483648");
        QTest::addRow("intermediate_size 2^40")
            << QStringLiteral("intermediate_size") << QStringLiteral("1099511627776");
        QTest::addRow("head_dim 2^20") << QStringLiteral("head_dim") << QStringLiteral("1048576");
        QTest::addRow("max_position_embeddings 2^40")
            << QStringLiteral("max_position_embeddings") << QStringLiteral("1099511627776");
        QTest::addRow("eos_token_id outside vocab")
            << QStringLiteral("eos_token_id") << QStringLiteral("1099511627776");
    }
    void absurdSizesAreRefusedByName()
    {
        QFETCH(QString, field);
        QFETCH(QString, value);
        io::JsonValue cfg;
        cfg.set("architectures", io::JsonArray{io::JsonValue("LlamaForCausalLM")});
        for (auto [k, v] :
             {std::pair{"hidden_size", 64}, std::pair{"num_attention_heads", 4}, std::pair{"intermediate_size", 128},
              std::pair{"num_hidden_layers", 2}, std::pair{"vocab_size", 100}})
            cfg.set(k, v);
        cfg.set(field.toStdString(), value.toDouble()); // replaces the sane value
        const std::string json = io::toJsonText(cfg);
        auto r = io::parseHfConfig(json, "config.json");
        QVERIFY(!r.ok());
        QVERIFY2(has(r.error().toString(), field.toStdString() + " " + value.toStdString()),
                 r.error().toString().c_str());
        QVERIFY2(has(r.error().toString(), QStringLiteral("\"%1\"").arg(field).toStdString()),
                 r.error().toString().c_str());
    }
    void malformedConfig()
    {
        auto r = io::parseHfConfig(R"({"architectures":["LlamaForCausalLM"],)", "config.json");
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::Format));
        QVERIFY(has(r.error().toString(), "not valid JSON"));
        QVERIFY(!io::parseHfConfig("[1]", "config.json").ok());
    }
    void missingConfig()
    {
        QTemporaryDir dir;
        auto r = io::readHfConfig(dir.filePath("config.json").toStdString());
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::Io));
        QVERIFY(has(r.error().toString(), "config.json not found"));
    }

private:
    static std::string tinyMistral() { return qbtest::tinyConfigJson({}, "MistralForCausalLM", "mistral"); }
};

QTEST_GUILESS_MAIN(TestHfConfig)
#include "tst_hf_config.moc"
