#include "base/model_config.h"

#include <string>

namespace qb {

namespace {

struct Limit {
    std::int64_t ModelConfig::* field;
    const char* hfName;
    const char* ggufSuffix; // "" where GGUF has no key (derived from tensors)
    std::int64_t max;
};

// Far above every released model (Llama 3.1 405B: hidden 16384, intermediate 53248, 126 layers,
// 128 heads; the largest vocabularies are about 256k), far below what would exhaust memory in
// the per-layer tables built from these numbers before any tensor is read.
constexpr Limit kLimits[] = {
    {&ModelConfig::vocabSize, "vocab_size", "", 1 << 24},
    {&ModelConfig::hiddenSize, "hidden_size", "embedding_length", 1 << 17},
    {&ModelConfig::intermediateSize, "intermediate_size", "feed_forward_length", 1 << 20},
    {&ModelConfig::numHiddenLayers, "num_hidden_layers", "block_count", 1024},
    {&ModelConfig::numAttentionHeads, "num_attention_heads", "attention.head_count", 1024},
    {&ModelConfig::numKeyValueHeads, "num_key_value_heads", "attention.head_count_kv", 1024},
    {&ModelConfig::headDim, "head_dim", "attention.key_length", 4096},
    {&ModelConfig::maxPositionEmbeddings, "max_position_embeddings", "context_length", std::int64_t(1) << 24},
};

} // namespace

const char* layerNormName(const ModelConfig& c, LayerNorm n)
{
    switch (n) {
    case LayerNorm::Input: return "input_layernorm";
    case LayerNorm::Post: return c.gemmaNorms ? "pre_feedforward_layernorm" : "post_attention_layernorm";
    case LayerNorm::Q: return c.qkNorm ? "self_attn.q_norm" : nullptr;
    case LayerNorm::K: return c.qkNorm ? "self_attn.k_norm" : nullptr;
    case LayerNorm::AttnOut: return c.gemmaNorms ? "post_attention_layernorm" : nullptr;
    case LayerNorm::MlpOut: return c.gemmaNorms ? "post_feedforward_layernorm" : nullptr;
    }
    return nullptr;
}

Status validateModelConfig(const ModelConfig& c, const std::string& source, ConfigSpelling spelling)
{
    const bool gguf = spelling == ConfigSpelling::Gguf;
    auto name = [&](const Limit& l) {
        return gguf && *l.ggufSuffix ? c.modelType + "." + l.ggufSuffix : std::string(l.hfName);
    };
    for (const Limit& l : kLimits) {
        const std::int64_t v = c.*l.field;
        if (v < 1 || v > l.max)
            return makeError(ErrorCode::Format,
                             name(l) + " " + std::to_string(v) + " is outside 1.." + std::to_string(l.max),
                             source + " field \"" + name(l) + "\"");
    }
    if (c.numKeyValueHeads > c.numAttentionHeads || c.numAttentionHeads % c.numKeyValueHeads != 0)
        return makeError(ErrorCode::Format,
                         "num_attention_heads " + std::to_string(c.numAttentionHeads) +
                             " is not a multiple of num_key_value_heads " + std::to_string(c.numKeyValueHeads),
                         source + " field \"" + name(kLimits[5]) + "\"");
    // q_proj has heads x head_dim rows: bound it like a hidden size.
    if (c.numAttentionHeads * c.headDim > (std::int64_t(1) << 18))
        return makeError(ErrorCode::Format,
                         "num_attention_heads x head_dim = " + std::to_string(c.numAttentionHeads * c.headDim) +
                             " exceeds " + std::to_string(1 << 18),
                         source + " field \"" + name(kLimits[6]) + "\"");
    for (auto [id, key] : {std::pair{c.bosTokenId, "bos_token_id"}, std::pair{c.eosTokenId, "eos_token_id"}})
        if (id < -1 || id >= c.vocabSize)
            return makeError(ErrorCode::Format,
                             std::string(key) + " " + std::to_string(id) + " is outside the vocabulary (size " +
                                 std::to_string(c.vocabSize) + ")",
                             source + " field \"" + (gguf ? std::string("tokenizer.ggml.") + key : std::string(key)) +
                                 "\"");
    return {};
}

} // namespace qb
