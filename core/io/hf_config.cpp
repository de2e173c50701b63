// Hugging Face config.json reader (FORMATS.md §2.1-2.2).
//
// Dispatch is on "architectures"[0] (or "model_type" when that list is absent); both must name
// one of LlamaForCausalLM/llama, Qwen2ForCausalLM/qwen2, MistralForCausalLM/mistral. Missing
// fields take the transformers class defaults. RoPE parameters are read from the classic
// "rope_theta"/"rope_scaling" keys or from transformers v5's "rope_parameters" dict.

#include "io/hf_config.h"

#include <QByteArray>
#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>

#include <cmath>

namespace qb::io {

namespace {

struct Reader {
    const QJsonObject& o;
    const std::string& source;

    Error fieldError(const std::string& field, const std::string& msg) const
    {
        return makeError(ErrorCode::Format, msg, source + " field \"" + field + "\"");
    }

    Result<std::int64_t> integer(const char* key, std::int64_t def, std::int64_t min = 1) const
    {
        const QJsonValue v = o.value(key);
        if (v.isUndefined() || v.isNull()) return def;
        const double d = v.toDouble(std::nan(""));
        if (!v.isDouble() || d != std::floor(d) || std::abs(d) > 9.0e15)
            return fieldError(key, "expected an integer");
        if (std::int64_t(d) < min)
            return fieldError(key, "value " + std::to_string(std::int64_t(d)) + " is below " +
                                       std::to_string(min));
        return std::int64_t(d);
    }
    Result<double> number(const QJsonObject& obj, const char* key, double def,
                          const std::string& prefix = {}) const
    {
        const QJsonValue v = obj.value(key);
        if (v.isUndefined() || v.isNull()) return def;
        if (!v.isDouble() || !std::isfinite(v.toDouble()))
            return fieldError(prefix + key, "expected a number");
        return v.toDouble();
    }
    Result<bool> boolean(const char* key, bool def) const
    {
        const QJsonValue v = o.value(key);
        if (v.isUndefined() || v.isNull()) return def;
        if (!v.isBool()) return fieldError(key, "expected true or false");
        return v.toBool();
    }
    // Token ids may be an int, a list of ints (first is used) or null.
    Result<std::int64_t> tokenId(const char* key) const
    {
        QJsonValue v = o.value(key);
        if (v.isArray()) v = v.toArray().isEmpty() ? QJsonValue() : v.toArray().first();
        if (v.isUndefined() || v.isNull()) return std::int64_t(-1);
        if (!v.isDouble() || v.toDouble() != std::floor(v.toDouble()))
            return fieldError(key, "expected an integer token id");
        return std::int64_t(v.toDouble());
    }
};

Status readRope(const Reader& r, const QJsonObject& o, ModelConfig& c)
{
    // transformers v5 keeps theta and the scaling type in one dict.
    const QJsonValue params = o.value("rope_parameters");
    QJsonObject scaling;
    std::string scalingField = "rope_scaling";
    QB_TRY(theta, r.number(o, "rope_theta", c.ropeTheta));
    c.ropeTheta = *theta;
    if (params.isObject()) {
        scaling = params.toObject();
        scalingField = "rope_parameters";
        QB_TRY(t, r.number(scaling, "rope_theta", c.ropeTheta, "rope_parameters."));
        c.ropeTheta = *t;
    } else if (!params.isUndefined() && !params.isNull()) {
        return r.fieldError("rope_parameters", "expected an object");
    }
    const QJsonValue rs = o.value("rope_scaling");
    if (rs.isObject()) {
        scaling = rs.toObject();
        scalingField = "rope_scaling";
    } else if (!rs.isUndefined() && !rs.isNull()) {
        return r.fieldError("rope_scaling", "expected an object or null");
    }
    if (scaling.isEmpty()) return {};
    QJsonValue typeValue = scaling.value("rope_type");
    std::string typeKey = scalingField + ".rope_type";
    if (typeValue.isUndefined()) {
        typeValue = scaling.value("type");
        typeKey = scalingField + ".type";
    }
    const std::string type = typeValue.toString().toStdString();
    if (typeValue.isUndefined() || type == "default") return {};
    if (type != "llama3")
        return makeError(ErrorCode::Unsupported, "unsupported RoPE scaling \"" + type + "\"",
                         r.source + " field \"" + typeKey + "\"");
    const std::string p = scalingField + ".";
    c.ropeScaling.type = "llama3";
    QB_TRY(f, r.number(scaling, "factor", 8.0, p));
    QB_TRY(lo, r.number(scaling, "low_freq_factor", 1.0, p));
    QB_TRY(hi, r.number(scaling, "high_freq_factor", 4.0, p));
    QB_TRY(orig, r.number(scaling, "original_max_position_embeddings", 8192.0, p));
    if (*f <= 0 || *lo <= 0 || *hi <= *lo || *orig <= 0)
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
    QJsonParseError perr;
    const QJsonDocument doc = QJsonDocument::fromJson(
        QByteArray::fromRawData(json.data(), qsizetype(json.size())), &perr);
    if (doc.isNull())
        return makeError(ErrorCode::Format,
                         "config.json is not valid JSON: " + perr.errorString().toStdString() +
                             " at offset " + std::to_string(perr.offset),
                         sourceName);
    if (!doc.isObject())
        return makeError(ErrorCode::Format, "config.json is not a JSON object", sourceName);
    const QJsonObject o = doc.object();
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
    const QJsonValue archs = o.value("architectures");
    const QJsonValue modelType = o.value("model_type");
    if (archs.isArray() && !archs.toArray().isEmpty()) {
        const std::string name = archs.toArray().first().toString().toStdString();
        for (const Arch& a : kArchs)
            if (name == a.cls) arch = &a;
        if (!arch)
            return makeError(ErrorCode::Unsupported, "unsupported architecture \"" + name + "\"",
                             sourceName + " field \"architectures\"");
    } else if (!archs.isUndefined() && !archs.isNull() && !archs.isArray()) {
        return r.fieldError("architectures", "expected a list of class names");
    }
    if (!modelType.isUndefined() && !modelType.isNull()) {
        const std::string mt = modelType.toString().toStdString();
        const Arch* byType = nullptr;
        for (const Arch& a : kArchs)
            if (mt == a.type) byType = &a;
        if (!byType)
            return makeError(ErrorCode::Unsupported, "unsupported model_type \"" + mt + "\"",
                             sourceName + " field \"model_type\"");
        if (!arch) arch = byType;
        if (arch != byType)
            return makeError(ErrorCode::Format,
                             "model_type \"" + mt + "\" contradicts architectures \"" + arch->cls +
                                 "\"",
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
        return r.fieldError("num_key_value_heads",
                            "num_attention_heads " + std::to_string(*heads) +
                                " is not a multiple of num_key_value_heads " +
                                std::to_string(*kvHeads));
    const bool headDimGiven = !o.value("head_dim").isUndefined() && !o.value("head_dim").isNull();
    if (!headDimGiven && *hidden % *heads != 0)
        return r.fieldError("hidden_size", "hidden_size " + std::to_string(*hidden) +
                                               " is not divisible by num_attention_heads " +
                                               std::to_string(*heads) + " and head_dim is absent");
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
    const QJsonValue dt =
        o.value("torch_dtype").isString() ? o.value("torch_dtype") : o.value("dtype");
    if (dt.isString()) c.torchDtype = dt.toString().toStdString();
    QB_TRY_STATUS(validateModelConfig(c, sourceName));
    return c;
}

Result<ModelConfig> readHfConfig(const std::string& path)
{
    QFile f(QString::fromStdString(path));
    if (!f.exists()) return makeError(ErrorCode::Io, "config.json not found", path);
    if (!f.open(QIODevice::ReadOnly))
        return makeError(ErrorCode::Io, "cannot read config.json: " + f.errorString().toStdString(),
                         path);
    const QByteArray bytes = f.readAll();
    return parseHfConfig(bytes.toStdString(), path);
}

} // namespace qb::io
