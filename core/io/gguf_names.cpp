#include "io/gguf_names.h"

#include <regex>
#include <span>
#include <utility>

namespace qb::io {

namespace {

// Whole-model tensors, then per-layer tensors (inside model.layers.N. / blk.N.).
constexpr std::pair<const char*, const char*> kModelNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};
using NamePair = std::pair<const char*, const char*>;
constexpr NamePair kLayerNames[] = {
    {"input_layernorm", "attn_norm"},    {"self_attn.q_proj", "attn_q"},      {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},      {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},       {"mlp.up_proj", "ffn_up"},           {"mlp.down_proj", "ffn_down"},
    {"self_attn.q_norm", "attn_q_norm"}, {"self_attn.k_norm", "attn_k_norm"},
};
// Gemma 2/3 (convert_hf_to_gguf / gguf-py tensor_mapping): four norms per layer.
constexpr NamePair kGemmaNames[] = {
    {"input_layernorm", "attn_norm"},
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"},
    {"post_attention_layernorm", "post_attention_norm"},
    {"pre_feedforward_layernorm", "ffn_norm"},
    {"post_feedforward_layernorm", "post_ffw_norm"},
    {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
    {"self_attn.q_norm", "attn_q_norm"},
    {"self_attn.k_norm", "attn_k_norm"},
};
// Phi-3: fused q/k/v and gate/up.
constexpr NamePair kPhi3Names[] = {
    {"input_layernorm", "attn_norm"},         {"self_attn.qkv_proj", "attn_qkv"}, {"self_attn.o_proj", "attn_output"},
    {"post_attention_layernorm", "ffn_norm"}, {"mlp.gate_up_proj", "ffn_up"},     {"mlp.down_proj", "ffn_down"},
};

std::span<const NamePair> layerNames(Architecture arch)
{
    switch (arch) {
    case Architecture::Gemma2:
    case Architecture::Gemma3: return kGemmaNames;
    case Architecture::Phi3: return kPhi3Names;
    default: return kLayerNames;
    }
}

} // namespace

const char* ggufArchitectureName(Architecture arch)
{
    switch (arch) {
    case Architecture::Llama:
    case Architecture::Mistral: return "llama";
    case Architecture::Qwen2: return "qwen2";
    case Architecture::Qwen3: return "qwen3";
    case Architecture::Gemma2: return "gemma2";
    case Architecture::Gemma3: return "gemma3";
    case Architecture::Phi3: return "phi3";
    }
    return "llama";
}

std::string hfToGgufName(const std::string& hf, Architecture arch)
{
    for (const auto& [h, g] : kModelNames)
        if (hf == h) return g;
    static const std::regex kLayer(R"(model\.layers\.(\d+)\.(.+)\.(weight|bias))");
    std::smatch m;
    if (!std::regex_match(hf, m, kLayer)) return {};
    for (const auto& [h, g] : layerNames(arch))
        if (m[2] == h) return "blk." + m[1].str() + "." + g + "." + m[3].str();
    return {};
}

std::string ggufToHfName(const std::string& gguf, Architecture arch)
{
    for (const auto& [h, g] : kModelNames)
        if (gguf == g) return h;
    static const std::regex kBlk(R"(blk\.(\d+)\.(\w+)\.(weight|bias))");
    std::smatch m;
    if (!std::regex_match(gguf, m, kBlk)) return {};
    for (const auto& [h, g] : layerNames(arch))
        if (m[2] == g) return "model.layers." + m[1].str() + "." + h + "." + m[3].str();
    return {};
}

std::vector<std::int64_t> llamaRopePermutation(std::int64_t heads, std::int64_t d)
{
    std::vector<std::int64_t> src(std::size_t(heads * d));
    for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t i = 0; i < d / 2; ++i)
            for (std::int64_t a = 0; a < 2; ++a)
                src[std::size_t(h * d + 2 * i + a)] = h * d + a * (d / 2) + i;
    return src;
}

} // namespace qb::io
