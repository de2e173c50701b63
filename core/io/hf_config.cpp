// Hugging Face config.json reader (FORMATS.md §2.1-2.2).
//
// Dispatch is on "architectures"[0] (or "model_type" when that list is absent); both must name
// one of LlamaForCausalLM/llama, Qwen2ForCausalLM/qwen2, MistralForCausalLM/mistral. Missing
// fields take the transformers class defaults. RoPE parameters are read from the classic
// "rope_theta"/"rope_scaling" keys or from transformers v5's "rope_parameters" dict.

#include "io/hf_config.h"

#include "io/json_value.h"

#include <QByteArray>
#include <QFile>

#include <cmath>

namespace qb::io {

namespace {

// A member that is absent or null reads as "not given" (transformers treats null as the default).
const JsonValue* given(const JsonValue& o, const char* key)
{
    const JsonValue* v = o.find(key);
    return v && !v->isNull() ? v : nullptr;
}

struct Reader {
    const JsonValue& o;
    const std::string& source;

    Error fieldError(const std::string& field, const std::string& msg) const
    {
        return makeError(ErrorCode::Format, msg, source + " field \"" + field + "\"");
    }

    Result<std::int64_t> integer(const char* key, std::int64_t def, std::int64_t min = 1) const
    {
        const JsonValue* v = given(o, key);
        if (!v) return def;
        if (!v->isNumber() || v->asNumber() != std::floor(v->asNumber()) || std::abs(v->asNumber()) > 9.0e15)
            return fieldError(key, "expected an integer");
        const auto i = std::int64_t(v->asNumber());
        if (i < min) return fieldError(key, "value " + std::to_string(i) + " is below " + std::to_string(min));
        return i;
    }
    Result<double> number(const JsonValue& obj, const char* key, double def, const std::string& prefix = {}) const
    {
        const JsonValue* v = given(obj, key);
        if (!v) return def;
        if (!v->isNumber() || !std::isfinite(v->asNumber())) return fieldError(prefix + key, "expected a number");
        return v->asNumber();
    }
    Result<bool> boolean(const char* key, bool def) const
    {
        const JsonValue* v = given(o, key);
        if (!v) return def;
        if (!v->isBool()) return fieldError(key, "expected true or false");
        return v->asBool();
    }
    // Token ids may be an int, a list of ints (first is used) or null.
    Result<std::int64_t> tokenId(const char* key) const
    {
        const JsonValue* v = given(o, key);
        if (v && v->isArray()) v = v->asArray().empty() ? nullptr : &v->asArray().front();
        if (!v || v->isNull()) return std::int64_t(-1);
        if (!v->isNumber() || v->asNumber() != std::floor(v->asNumber()) || std::abs(v->asNumber()) > 9.0e15)
            return fieldError(key, "expected an integer token id");
        return std::int64_t(v->asNumber());
    }
    // A string member, or "" when absent/null; a non-string is an error naming the key.
    Result<std::string> string(const JsonValue& obj, const std::string& key, const std::string& field) const
    {
        const JsonValue* v = given(obj, key.c_str());
        if (!v) return std::string();
        if (!v->isString()) return fieldError(field, "expected a string");
        return v->asString();
    }
};

Status readRope(const Reader& r, const JsonValue& o, ModelConfig& c)
{
    // transformers v5 keeps theta and the scaling type in one dict.
    const JsonValue* params = given(o, "rope_parameters");
    const JsonValue* scaling = nullptr;
    std::string scalingField = "rope_scaling";
    QB_TRY(theta, r.number(o, "rope_theta", c.ropeTheta));
    c.ropeTheta = *theta;
    if (params && params->isObject()) {
        scaling = params;
        scalingField = "rope_parameters";
        QB_TRY(t, r.number(*scaling, "rope_theta", c.ropeTheta, "rope_parameters."));
        c.ropeTheta = *t;
    } else if (params) {
        return r.fieldError("rope_parameters", "expected an object");
    }
    if (const JsonValue* rs = given(o, "rope_scaling")) {
        if (!rs->isObject()) return r.fieldError("rope_scaling", "expected an object or null");
        scaling = rs;
        scalingField = "rope_scaling";
    }
    if (!scaling || scaling->asObject().empty()) return {};
    std::string typeKey = scalingField + ".rope_type";
    const char* typeName = "rope_type";
    if (!scaling->find("rope_type")) {
        typeName = "type";
        typeKey = scalingField + ".type";
    }
    if (!scaling->find(typeName)) return {};
    QB_TRY(type, r.string(*scaling, typeName, typeKey));
    if (*type == "default") return {};
    if (*type != "llama3")
        return makeError(ErrorCode::Unsupported, "unsupported RoPE scaling \"" + *type + "\"",
                         r.source + " field \"" + typeKey + "\"");
    const std::string p = scalingField + ".";
    c.ropeScaling.type = "llama3";
    QB_TRY(f, r.number(*scaling, "factor", 8.0, p));
    QB_TRY(lo, r.number(*scaling, "low_freq_factor", 1.0, p));
    QB_TRY(hi, r.number(*scaling, "high_freq_factor", 4.0, p));
    QB_TRY(orig, r.number(*scaling, "original_max_position_embeddings", 8192.0, p));
    if (*f <= 0 || *lo <= 0 || *hi <= *lo || *orig <= 0 || *orig > 9.0e15)
        return r.fieldError(scalingField, "llama3 parameters need factor > 0 and "
                                          "high_freq_factor > low_freq_factor > 0");
    c.ropeScaling.factor = *f;
    c.ropeScaling.lowFreqFactor = *lo;
    c.ropeScaling.highFreqFactor = *hi;
    c.ropeScaling.originalMaxPositionEmbeddings = std::int64_t(*orig);
    return {};
}

} // namespace

Result<ModelConfig> parseHfConfig(const std::string& json, const std::string& sourceName)
{
    auto doc = parseJson(json, sourceName);
    if (!doc)
        return makeError(ErrorCode::Format, "config.json is not valid JSON: " + doc.error().message,
                         doc.error().context);
    if (!doc->isObject()) return makeError(ErrorCode::Format, "config.json is not a JSON object", sourceName);
    const JsonValue& o = *doc;
    const Reader r{o, sourceName};
    ModelConfig c;

    struct Arch {
        const char* cls;
        const char* type;
        Architecture arch;
    };
    static const Arch kArchs[] = {{"LlamaForCausalLM", "llama", Architecture::Llama},
                                  {"Qwen2ForCausalLM", "qwen2", Architecture::Qwen2},
                                  {"MistralForCausalLM", "mistral", Architecture::Mistral}};
    const Arch* arch = nullptr;
    const JsonValue* archs = given(o, "architectures");
    const JsonValue* modelType = given(o, "model_type");
    if (archs && archs->isArray() && !archs->asArray().empty()) {
        const JsonValue& first = archs->asArray().front();
        if (!first.isString()) return r.fieldError("architectures", "expected a list of class names");
        const std::string name = first.asString();
        for (const Arch& a : kArchs)
            if (name == a.cls) arch = &a;
        if (!arch)
            return makeError(ErrorCode::Unsupported, "unsupported architecture \"" + name + "\"",
                             sourceName + " field \"architectures\"");
    } else if (archs && !archs->isArray()) {
        return r.fieldError("architectures", "expected a list of class names");
    }
    if (modelType) {
        QB_TRY(mtName, r.string(o, "model_type", "model_type"));
        const std::string mt = *mtName;
        const Arch* byType = nullptr;
        for (const Arch& a : kArchs)
            if (mt == a.type) byType = &a;
        if (!byType)
            return makeError(ErrorCode::Unsupported, "unsupported model_type \"" + mt + "\"",
                             sourceName + " field \"model_type\"");
        if (!arch) arch = byType;
        if (arch != byType)
            return makeError(ErrorCode::Format,
                             "model_type \"" + mt + "\" contradicts architectures \"" + arch->cls + "\"",
                             sourceName + " field \"model_type\"");
    }
    if (!arch)
        return makeError(ErrorCode::Format,
                         "config.json names no architecture (fields \"architectures\" and "
                         "\"model_type\" both missing)",
                         sourceName);
    c.architecture = arch->arch;
    c.modelType = arch->type;

    const bool qwen = c.architecture == Architecture::Qwen2;
    const bool mistral = c.architecture == Architecture::Mistral;
    QB_TRY(vocab, r.integer("vocab_size", qwen ? 151936 : 32000));
    QB_TRY(hidden, r.integer("hidden_size", 4096));
    QB_TRY(inter, r.integer("intermediate_size", qwen ? 22016 : mistral ? 14336 : 11008));
    QB_TRY(layers, r.integer("num_hidden_layers", 32));
    QB_TRY(heads, r.integer("num_attention_heads", 32));
    // transformers' defaults when the key is absent: Llama and Qwen2 use num_attention_heads,
    // MistralConfig uses 8.
    QB_TRY(kvHeads, r.integer("num_key_value_heads", mistral ? 8 : *heads));
    if (*heads % *kvHeads != 0)
        return r.fieldError("num_key_value_heads", "num_attention_heads " + std::to_string(*heads) +
                                                       " is not a multiple of num_key_value_heads " +
                                                       std::to_string(*kvHeads));
    const bool headDimGiven = given(o, "head_dim") != nullptr;
    if (!headDimGiven && *hidden % *heads != 0)
        return r.fieldError("hidden_size", "hidden_size " + std::to_string(*hidden) +
                                               " is not divisible by num_attention_heads " + std::to_string(*heads) +
                                               " and head_dim is absent");
    QB_TRY(headDim, r.integer("head_dim", *hidden / *heads));
    if (*headDim % 2 != 0) return r.fieldError("head_dim", "RoPE needs an even head_dim");
    QB_TRY(maxPos, r.integer("max_position_embeddings", qwen ? 32768 : mistral ? 131072 : 2048));
    QB_TRY(eps, r.number(o, "rms_norm_eps", 1e-6));
    if (*eps <= 0) return r.fieldError("rms_norm_eps", "must be positive");
    c.vocabSize = *vocab;
    c.hiddenSize = *hidden;
    c.intermediateSize = *inter;
    c.numHiddenLayers = *layers;
    c.numAttentionHeads = *heads;
    c.numKeyValueHeads = *kvHeads;
    c.headDim = *headDim;
    c.maxPositionEmbeddings = *maxPos;
    c.rmsNormEps = *eps;
    QB_TRY_STATUS(readRope(r, o, c));
    if (!(c.ropeTheta > 0)) return r.fieldError("rope_theta", "must be positive");

    QB_TRY(tie, r.boolean("tie_word_embeddings", false));
    c.tieWordEmbeddings = *tie;
    if (qwen) {
        c.attentionBias = true; // hard-wired in Qwen2Attention: q, k, v biases, no o bias
    } else if (c.architecture == Architecture::Llama) {
        QB_TRY(ab, r.boolean("attention_bias", false));
        QB_TRY(mb, r.boolean("mlp_bias", false));
        c.attentionBias = *ab;
        c.attentionOutputBias = *ab;
        c.mlpBias = *mb;
    }
    QB_TRY(bos, r.tokenId("bos_token_id"));
    QB_TRY(eos, r.tokenId("eos_token_id"));
    c.bosTokenId = *bos;
    c.eosTokenId = *eos;
    for (const char* key : {"torch_dtype", "dtype"})
        if (const JsonValue* dt = given(o, key); dt && dt->isString() && c.torchDtype.empty())
            c.torchDtype = dt->asString();
    QB_TRY_STATUS(validateModelConfig(c, sourceName));
    return c;
}

Result<ModelConfig> readHfConfig(const std::string& path)
{
    QFile f(QString::fromStdString(path));
    if (!f.exists()) return makeError(ErrorCode::Io, "config.json not found", path);
    if (!f.open(QIODevice::ReadOnly))
        return makeError(ErrorCode::Io, "cannot read config.json: " + f.errorString().toStdString(), path);
    const QByteArray bytes = f.readAll();
    return parseHfConfig(bytes.toStdString(), path);
}

} // namespace qb::io
