#pragma once
// Fixture writers for the io tests: safetensors files, tiny LLaMA-style state dicts and configs,
// and a minimal GGUF writer. Independent of the readers under test (they only produce bytes).

#include "base/dtype.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace qbtest {

struct RawTensor {
    std::string name;
    std::string dtype; // safetensors spelling
    std::vector<std::int64_t> shape;
    std::string bytes;
};

inline std::string u64le(std::uint64_t v)
{
    std::string s(8, '\0');
    std::memcpy(s.data(), &v, 8);
    return s;
}

inline void writeFile(const std::string& path, const std::string& bytes)
{
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// header JSON + data buffer, with the 8-byte length prefix; header padded with spaces to 8.
inline std::string safetensorsRaw(std::string header, const std::string& data, bool pad = true)
{
    while (pad && header.size() % 8)
        header += ' ';
    return u64le(header.size()) + header + data;
}

inline std::string shapeJson(const std::vector<std::int64_t>& shape)
{
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ',';
        s += std::to_string(shape[i]);
    }
    return s + "]";
}

inline std::string safetensorsBytes(const std::vector<RawTensor>& tensors)
{
    std::string header = R"({"__metadata__":{"format":"pt"})";
    std::string data;
    for (const auto& t : tensors) {
        header += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":" + shapeJson(t.shape) +
                  ",\"data_offsets\":[" + std::to_string(data.size()) + "," +
                  std::to_string(data.size() + t.bytes.size()) + "]}";
        data += t.bytes;
    }
    return safetensorsRaw(header + "}", data);
}

inline std::int64_t numelOf(const std::vector<std::int64_t>& shape)
{
    std::int64_t n = 1;
    for (auto d : shape)
        n *= d;
    return n;
}

// Deterministic values in [-1, 1), distinct per tensor seed.
inline std::vector<float> values(std::int64_t n, std::uint32_t seed)
{
    std::vector<float> v(static_cast<std::size_t>(n));
    std::uint32_t s = seed * 2654435761u + 12345u;
    for (auto& x : v) {
        s = s * 1664525u + 1013904223u;
        x = float((s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    }
    return v;
}

inline std::string encode(const std::vector<float>& v, qb::DType t)
{
    std::string s(v.size() * qb::dtypeSize(t), '\0');
    (void)qb::convertFromF32(t, v.data(), s.data(), v.size());
    return s;
}

struct TinyDims {
    std::int64_t vocab = 16, hidden = 8, inter = 16, layers = 2, heads = 2, kvHeads = 1, headDim = 4;
};

// HF names and shapes of a tiny LLaMA (Qwen2 adds q/k/v biases; tied drops lm_head).
inline std::vector<std::pair<std::string, std::vector<std::int64_t>>> tinyLlamaShapes(const TinyDims& d = {},
                                                                                      bool qwenBiases = false,
                                                                                      bool tied = false)
{
    const auto K = d.hidden, F = d.inter, V = d.vocab, q = d.heads * d.headDim, kv = d.kvHeads * d.headDim;
    std::vector<std::pair<std::string, std::vector<std::int64_t>>> s;
    s.push_back({"model.embed_tokens.weight", {V, K}});
    for (std::int64_t l = 0; l < d.layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        s.push_back({p + "input_layernorm.weight", {K}});
        s.push_back({p + "self_attn.q_proj.weight", {q, K}});
        s.push_back({p + "self_attn.k_proj.weight", {kv, K}});
        s.push_back({p + "self_attn.v_proj.weight", {kv, K}});
        if (qwenBiases) {
            s.push_back({p + "self_attn.q_proj.bias", {q}});
            s.push_back({p + "self_attn.k_proj.bias", {kv}});
            s.push_back({p + "self_attn.v_proj.bias", {kv}});
        }
        s.push_back({p + "self_attn.o_proj.weight", {K, q}});
        s.push_back({p + "post_attention_layernorm.weight", {K}});
        s.push_back({p + "mlp.gate_proj.weight", {F, K}});
        s.push_back({p + "mlp.up_proj.weight", {F, K}});
        s.push_back({p + "mlp.down_proj.weight", {K, F}});
    }
    s.push_back({"model.norm.weight", {K}});
    if (!tied) s.push_back({"lm_head.weight", {V, K}});
    return s;
}

inline std::vector<RawTensor> tinyLlamaTensors(qb::DType t = qb::DType::F32, const TinyDims& d = {},
                                               bool qwenBiases = false, bool tied = false)
{
    std::vector<RawTensor> out;
    std::uint32_t seed = 1;
    for (const auto& [name, shape] : tinyLlamaShapes(d, qwenBiases, tied))
        out.push_back({name, qb::dtypeName(t), shape, encode(values(numelOf(shape), seed++), t)});
    return out;
}

inline std::string tinyConfigJson(const TinyDims& d = {}, const std::string& arch = "LlamaForCausalLM",
                                  const std::string& modelType = "llama", const std::string& extra = {})
{
    return "{\"architectures\":[\"" + arch + "\"],\"model_type\":\"" + modelType +
           "\",\"vocab_size\":" + std::to_string(d.vocab) + ",\"hidden_size\":" + std::to_string(d.hidden) +
           ",\"intermediate_size\":" + std::to_string(d.inter) + ",\"num_hidden_layers\":" + std::to_string(d.layers) +
           ",\"num_attention_heads\":" + std::to_string(d.heads) +
           ",\"num_key_value_heads\":" + std::to_string(d.kvHeads) +
           ",\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"torch_dtype\":\"float32\"" + extra + "}";
}

// ---- GGUF -----------------------------------------------------------------------------------

class GgufWriter {
public:
    std::uint32_t magic = 0x46554747u;
    std::uint32_t version = 3;
    std::uint64_t alignment = 32;

    void kvString(const std::string& k, const std::string& v)
    {
        key(k, 8);
        str(m_kv, v);
        ++m_nkv;
    }
    void kvU32(const std::string& k, std::uint32_t v)
    {
        key(k, 4);
        pod(m_kv, v);
        ++m_nkv;
    }
    void kvF32(const std::string& k, float v)
    {
        key(k, 6);
        pod(m_kv, v);
        ++m_nkv;
    }
    template <typename T>
    void kvScalar(const std::string& k, std::uint32_t type, T v)
    {
        key(k, type);
        pod(m_kv, v);
        ++m_nkv;
    }
    void kvStringArray(const std::string& k, const std::vector<std::string>& v)
    {
        key(k, 9);
        pod(m_kv, std::uint32_t(8));
        pod(m_kv, std::uint64_t(v.size()));
        for (const auto& s : v)
            str(m_kv, s);
        ++m_nkv;
    }
    void kvI32Array(const std::string& k, const std::vector<std::int32_t>& v)
    {
        key(k, 9);
        pod(m_kv, std::uint32_t(5));
        pod(m_kv, std::uint64_t(v.size()));
        for (auto x : v)
            pod(m_kv, x);
        ++m_nkv;
    }
    // ne in ggml order (ne[0] fastest); data already encoded for `type`.
    void tensor(const std::string& name, const std::vector<std::uint64_t>& ne, std::uint32_t type,
                const std::string& data)
    {
        str(m_info, name);
        pod(m_info, std::uint32_t(ne.size()));
        for (auto n : ne)
            pod(m_info, n);
        pod(m_info, type);
        pod(m_info, std::uint64_t(m_data.size()));
        m_data += data;
        while (m_data.size() % alignment)
            m_data += '\0';
        ++m_ntensors;
    }
    std::string bytes() const
    {
        std::string s;
        pod(s, magic);
        pod(s, version);
        pod(s, m_ntensors);
        pod(s, m_nkv);
        s += m_kv + m_info;
        while (s.size() % alignment)
            s += '\0';
        return s + m_data;
    }

private:
    template <typename T>
    static void pod(std::string& s, T v)
    {
        s.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
    static void str(std::string& s, const std::string& v)
    {
        pod(s, std::uint64_t(v.size()));
        s += v;
    }
    void key(const std::string& k, std::uint32_t type)
    {
        str(m_kv, k);
        pod(m_kv, type);
    }
    std::string m_kv, m_info, m_data;
    std::uint64_t m_nkv = 0, m_ntensors = 0;
};

// HF name -> GGUF name (FORMATS.md §2.5), written independently of the reader's table.
inline std::string hfToGguf(const std::string& hf)
{
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    static const std::map<std::string, std::string> kMap = {
        {"input_layernorm", "attn_norm"}, {"self_attn.q_proj", "attn_q"},      {"self_attn.k_proj", "attn_k"},
        {"self_attn.v_proj", "attn_v"},   {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
        {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},           {"mlp.down_proj", "ffn_down"}};
    const std::string rest = hf.substr(std::string("model.layers.").size());
    const auto dot = rest.find('.');
    const std::string layer = rest.substr(0, dot);
    std::string mod = rest.substr(dot + 1);
    const auto last = mod.rfind('.');
    const std::string kind = mod.substr(last + 1);
    mod = mod.substr(0, last);
    return "blk." + layer + "." + kMap.at(mod) + "." + kind;
}

} // namespace qbtest
