#include "io/gguf_names.h"

#include <regex>
#include <utility>

namespace qb::io {

namespace {

// Whole-model tensors, then per-layer tensors (inside model.layers.N. / blk.N.).
constexpr std::pair<const char*, const char*> kModelNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};
constexpr std::pair<const char*, const char*> kLayerNames[] = {
    {"input_layernorm", "attn_norm"}, {"self_attn.q_proj", "attn_q"},      {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},   {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},           {"mlp.down_proj", "ffn_down"},
};

} // namespace

std::string hfToGgufName(const std::string& hf)
{
    for (const auto& [h, g] : kModelNames)
        if (hf == h) return g;
    static const std::regex kLayer(R"(model\.layers\.(\d+)\.(.+)\.(weight|bias))");
    std::smatch m;
    if (!std::regex_match(hf, m, kLayer)) return {};
    for (const auto& [h, g] : kLayerNames)
        if (m[2] == h) return "blk." + m[1].str() + "." + g + "." + m[3].str();
    return {};
}

std::string ggufToHfName(const std::string& gguf)
{
    for (const auto& [h, g] : kModelNames)
        if (gguf == g) return h;
    static const std::regex kBlk(R"(blk\.(\d+)\.(\w+)\.(weight|bias))");
    std::smatch m;
    if (!std::regex_match(gguf, m, kBlk)) return {};
    for (const auto& [h, g] : kLayerNames)
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
