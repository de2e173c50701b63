// Hugging Face config.json reader (FORMATS.md §2.1-2.2).
//
// Dispatch is on "architectures"[0] (or "model_type" when that list is absent); both must name
// one of LlamaForCausalLM/llama, Qwen2ForCausalLM/qwen2, MistralForCausalLM/mistral,
// Qwen3ForCausalLM/qwen3, Gemma2ForCausalLM/gemma2, Gemma3ForCausalLM/gemma3_text or
// Phi3ForCausalLM/phi3. Missing
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
    if (params && params->isObject() && params->find("full_attention")) {
        // transformers v5 Gemma 3: one dict per layer type; sliding layers take only a theta.
        const JsonValue* full = params->find("full_attention");
        const JsonValue* local = params->find("sliding_attention");
        if (!full->isObject()) return r.fieldError("rope_parameters.full_attention", "expected an object");
        if (local) {
            if (!local->isObject()) return r.fieldError("rope_parameters.sliding_attention", "expected an object");
            if (const JsonValue* lt = local->find("rope_type"); lt && !(lt->isString() && lt->asString() == "default"))
                return makeError(ErrorCode::Unsupported, "RoPE scaling on sliding layers is not supported",
                                 r.source + " field \"rope_parameters.sliding_attention.rope_type\"");
            QB_TRY(lt, r.number(*local, "rope_theta", 10000.0, "rope_parameters.sliding_attention."));
            c.ropeLocalTheta = *lt;
        }
        scaling = full;
        scalingField = "rope_parameters.full_attention";
        QB_TRY(t, r.number(*scaling, "rope_theta", c.ropeTheta, scalingField + "."));
        c.ropeTheta = *t;
    } else if (params && params->isObject()) {
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
    const std::string p = scalingField + ".";
    if (*type == "linear") {
        QB_TRY(f, r.number(*scaling, "factor", 1.0, p));
        if (*f <= 0) return r.fieldError(p + "factor", "must be positive");
        c.ropeScaling.type = "linear";
        c.ropeScaling.factor = *f;
        return {};
    }
    if (*type != "llama3")
        return makeError(ErrorCode::Unsupported,
                         "unsupported RoPE scaling \"" + *type +
                             "\" (implemented: llama3, linear; not longrope/su, "
                             "yarn, dynamic)",
                         r.source + " field \"" + typeKey + "\"");
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
                                  {"MistralForCausalLM", "mistral", Architecture::Mistral},
                                  {"Qwen3ForCausalLM", "qwen3", Architecture::Qwen3},
                                  {"Gemma2ForCausalLM", "gemma2", Architecture::Gemma2},
                                  {"Gemma3ForCausalLM", "gemma3_text", Architecture::Gemma3},
                                  {"Phi3ForCausalLM", "phi3", Architecture::Phi3}};
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

    const Architecture a = c.architecture;
    const bool qwen = a == Architecture::Qwen2 || a == Architecture::Qwen3;
    const bool mistral = a == Architecture::Mistral;
    const bool gemma = a == Architecture::Gemma2 || a == Architecture::Gemma3;
    const bool phi3 = a == Architecture::Phi3;
    // transformers' class defaults for keys that are absent.
    struct Defaults {
        std::int64_t vocab, hidden, inter, layers, heads, kvHeads, headDim, maxPos;
        double eps, theta;
        bool tie;
    };
    Defaults d{32000, 4096, 11008, 32, 32, 0, 0, 2048, 1e-6, 10000.0, false};
    switch (a) {
    case Architecture::Llama: break;
    case Architecture::Qwen2: d = {151936, 4096, 22016, 32, 32, 0, 0, 32768, 1e-6, 10000.0, false}; break;
    case Architecture::Qwen3: d = {151936, 4096, 22016, 32, 32, 0, 128, 32768, 1e-6, 10000.0, false}; break;
    case Architecture::Mistral: d = {32000, 4096, 14336, 32, 32, 8, 0, 131072, 1e-6, 10000.0, false}; break;
    case Architecture::Gemma2: d = {256000, 2304, 9216, 26, 8, 4, 256, 8192, 1e-6, 10000.0, true}; break;
    case Architecture::Gemma3: d = {262208, 2304, 9216, 26, 8, 4, 256, 131072, 1e-6, 1000000.0, true}; break;
    case Architecture::Phi3: d = {32064, 3072, 8192, 32, 32, 0, 0, 4096, 1e-5, 10000.0, false}; break;
    }
    c.ropeTheta = d.theta;
    QB_TRY(vocab, r.integer("vocab_size", d.vocab));
    QB_TRY(hidden, r.integer("hidden_size", d.hidden));
    QB_TRY(inter, r.integer("intermediate_size", d.inter));
    QB_TRY(layers, r.integer("num_hidden_layers", d.layers));
    QB_TRY(heads, r.integer("num_attention_heads", d.heads));
    // Absent num_key_value_heads: num_attention_heads, except where the class has its own default.
    QB_TRY(kvHeads, r.integer("num_key_value_heads", d.kvHeads > 0 ? d.kvHeads : *heads));
    if (*heads % *kvHeads != 0)
        return r.fieldError("num_key_value_heads", "num_attention_heads " + std::to_string(*heads) +
                                                       " is not a multiple of num_key_value_heads " +
                                                       std::to_string(*kvHeads));
    const bool headDimGiven = given(o, "head_dim") != nullptr || d.headDim > 0;
    if (!headDimGiven && *hidden % *heads != 0)
        return r.fieldError("hidden_size", "hidden_size " + std::to_string(*hidden) +
                                               " is not divisible by num_attention_heads " + std::to_string(*heads) +
                                               " and head_dim is absent");
    QB_TRY(headDim, r.integer("head_dim", d.headDim > 0 ? d.headDim : *hidden / *heads));
    if (*headDim % 2 != 0) return r.fieldError("head_dim", "RoPE needs an even head_dim");
    QB_TRY(maxPos, r.integer("max_position_embeddings", d.maxPos));
    QB_TRY(eps, r.number(o, "rms_norm_eps", d.eps));
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

    QB_TRY(tie, r.boolean("tie_word_embeddings", d.tie));
    c.tieWordEmbeddings = *tie;
    if (a == Architecture::Qwen2) {
        c.attentionBias = true; // hard-wired in Qwen2Attention: q, k, v biases, no o bias
    } else if (a == Architecture::Llama) {
        QB_TRY(ab, r.boolean("attention_bias", false));
        QB_TRY(mb, r.boolean("mlp_bias", false));
        c.attentionBias = *ab;
        c.attentionOutputBias = *ab;
        c.mlpBias = *mb;
    } else if (a == Architecture::Qwen3 || gemma) {
        // Qwen3Attention and Gemma*Attention use attention_bias for q, k, v and o alike.
        QB_TRY(ab, r.boolean("attention_bias", false));
        c.attentionBias = *ab;
        c.attentionOutputBias = *ab;
    }
    c.qkNorm = a == Architecture::Qwen3 || a == Architecture::Gemma3;
    c.gemmaNorms = gemma;
    c.fusedProjections = phi3;

    // The MLP activation: only what the forward pass implements.
    {
        const char* actKey = gemma && given(o, "hidden_activation") ? "hidden_activation" : "hidden_act";
        QB_TRY(act, r.string(o, actKey, actKey));
        const std::string want = gemma ? "gelu_pytorch_tanh" : "silu";
        const std::string got = act->empty() ? want : *act;
        if (got != want)
            return makeError(ErrorCode::Unsupported,
                             std::string(actKey) + " \"" + got + "\" is not supported for " + c.modelType +
                                 " (only \"" + want + "\")",
                             sourceName + " field \"" + actKey + "\"");
        c.hiddenAct = gemma ? HiddenAct::GeluTanh : HiddenAct::Silu;
    }
    if (phi3) {
        QB_TRY(prf, r.number(o, "partial_rotary_factor", 1.0));
        if (*prf != 1.0)
            return makeError(ErrorCode::Unsupported,
                             "partial_rotary_factor " + std::to_string(*prf) + " is not supported (only 1.0)",
                             sourceName + " field \"partial_rotary_factor\"");
    }
    if (gemma) {
        QB_TRY(qpas, r.number(o, "query_pre_attn_scalar", 256.0));
        if (!(*qpas > 0)) return r.fieldError("query_pre_attn_scalar", "must be positive");
        c.queryPreAttnScalar = *qpas;
        const bool g2 = a == Architecture::Gemma2;
        QB_TRY(acap, r.number(o, "attn_logit_softcapping", g2 ? 50.0 : 0.0));
        QB_TRY(fcap, r.number(o, "final_logit_softcapping", g2 ? 30.0 : 0.0));
        if (*acap < 0) return r.fieldError("attn_logit_softcapping", "must not be negative");
        if (*fcap < 0) return r.fieldError("final_logit_softcapping", "must not be negative");
        c.attnLogitSoftcap = *acap;
        c.finalLogitSoftcap = *fcap;
        if (!g2) {
            QB_TRY(local, r.number(o, "rope_local_base_freq", c.ropeLocalTheta > 0 ? c.ropeLocalTheta : 10000.0));
            if (!(*local > 0)) return r.fieldError("rope_local_base_freq", "must be positive");
            c.ropeLocalTheta = *local;
        }
    }

    QB_TRY(bos, r.tokenId("bos_token_id"));
    QB_TRY(eos, r.tokenId("eos_token_id"));
    c.bosTokenId = *bos;
    c.eosTokenId = *eos;
    for (const char* key : {"torch_dtype", "dtype"})
        if (const JsonValue* dt = given(o, key); dt && dt->isString() && c.torchDtype.empty())
            c.torchDtype = dt->asString();
    QB_TRY_STATUS(validateModelConfig(c, sourceName));
    // Sliding-window attention: which layers use it, transformers' rules per class (after the
    // validation above has bounded num_hidden_layers).
    {
        std::int64_t window = 0;
        const JsonValue* sw = given(o, "sliding_window");
        const std::int64_t defWindow = (gemma || qwen) ? 4096 : mistral ? 4096 : 0;
        if (sw || defWindow > 0) {
            QB_TRY(wv, r.integer("sliding_window", defWindow));
            window = *wv;
        }
        std::vector<bool> sliding(std::size_t(c.numHiddenLayers), window > 0);
        if (qwen) {
            QB_TRY(use, r.boolean("use_sliding_window", false));
            QB_TRY(maxWindowLayers, r.integer("max_window_layers", 28, 0));
            if (!*use) window = 0;
            for (std::size_t i = 0; i < sliding.size(); ++i)
                sliding[i] = std::int64_t(i) >= *maxWindowLayers;
        } else if (a == Architecture::Gemma2) {
            for (std::size_t i = 0; i < sliding.size(); ++i)
                sliding[i] = (i + 1) % 2 != 0;
        } else if (a == Architecture::Gemma3) {
            QB_TRY(pattern, r.integer("sliding_window_pattern", 6));
            for (std::size_t i = 0; i < sliding.size(); ++i)
                sliding[i] = (std::int64_t(i) + 1) % *pattern != 0;
        } else if (a == Architecture::Llama && sw) {
            return makeError(ErrorCode::Unsupported, "sliding_window is not part of LlamaForCausalLM",
                             sourceName + " field \"sliding_window\"");
        }
        if (const JsonValue* lt = given(o, "layer_types")) {
            if (!lt->isArray() || std::int64_t(lt->asArray().size()) != c.numHiddenLayers)
                return r.fieldError("layer_types", "expected a list of num_hidden_layers layer types");
            for (std::size_t i = 0; i < sliding.size(); ++i) {
                const JsonValue& t = lt->asArray()[i];
                const std::string s = t.isString() ? t.asString() : std::string();
                if (s != "sliding_attention" && s != "full_attention")
                    return makeError(ErrorCode::Unsupported,
                                     "layer type \"" + s + "\" is not supported (sliding_attention or full_attention)",
                                     sourceName + " field \"layer_types[" + std::to_string(i) + "]\"");
                sliding[i] = s == "sliding_attention";
            }
        }
        if (window > 0) {
            c.slidingWindow = window;
            c.slidingLayers = std::move(sliding);
        }
    }
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
