#pragma once
// ModelConfig: the hyper-parameters of a LLaMA-family decoder (LLaMA, Qwen2, Mistral, Qwen3,
// Gemma 2, Gemma 3 text, Phi-3/3.5).
//
// Produced by io from config.json or GGUF metadata and consumed by model; plain data, std only.
// Field names follow Hugging Face config.json. Dimensions are element counts.

#include "base/result.h"

#include <cstdint>
#include <string>
#include <vector>

namespace qb {

enum class Architecture { Llama, Qwen2, Mistral, Qwen3, Gemma2, Gemma3, Phi3 };

inline const char* architectureName(Architecture a)
{
    switch (a) {
    case Architecture::Llama: return "LlamaForCausalLM";
    case Architecture::Qwen2: return "Qwen2ForCausalLM";
    case Architecture::Mistral: return "MistralForCausalLM";
    case Architecture::Qwen3: return "Qwen3ForCausalLM";
    case Architecture::Gemma2: return "Gemma2ForCausalLM";
    case Architecture::Gemma3: return "Gemma3ForCausalLM";
    case Architecture::Phi3: return "Phi3ForCausalLM";
    }
    return "?";
}

struct RopeScaling {
    std::string type; // "" (none) or "llama3"
    double factor = 1.0;
    double lowFreqFactor = 1.0;
    double highFreqFactor = 4.0;
    std::int64_t originalMaxPositionEmbeddings = 8192;
};

// The MLP activation: SwiGLU (silu) or GeGLU with the tanh approximation (gelu_pytorch_tanh).
enum class HiddenAct { Silu, GeluTanh };

struct ModelConfig {
    Architecture architecture = Architecture::Llama;
    std::string modelType; // "llama", "qwen2", "mistral", "qwen3", "gemma2", "gemma3_text", "phi3"
    std::int64_t vocabSize = 0;
    std::int64_t hiddenSize = 0;
    std::int64_t intermediateSize = 0;
    std::int64_t numHiddenLayers = 0;
    std::int64_t numAttentionHeads = 0;
    std::int64_t numKeyValueHeads = 0;
    std::int64_t headDim = 0;
    std::int64_t maxPositionEmbeddings = 2048;
    double rmsNormEps = 1e-6;
    double ropeTheta = 10000.0;
    RopeScaling ropeScaling;
    bool tieWordEmbeddings = false;
    bool attentionBias = false;       // q, k, v (and o for Llama) biases
    bool attentionOutputBias = false; // o_proj bias (Llama attention_bias only)
    bool mlpBias = false;
    // Architecture variants (all off for Llama/Qwen2/Mistral).
    HiddenAct hiddenAct = HiddenAct::Silu;
    bool qkNorm = false;             // per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3)
    bool gemmaNorms = false;         // Gemma: (1 + w) RMSNorms, norms after attention and MLP outputs,
                                     // embeddings scaled by sqrt(hidden_size)
    bool fusedProjections = false;   // Phi-3: stored as qkv_proj and gate_up_proj (split when loaded)
    double queryPreAttnScalar = 0;   // attention scale 1/sqrt(this); 0: head_dim
    double attnLogitSoftcap = 0;     // scores = cap * tanh(scores / cap); 0: none
    double finalLogitSoftcap = 0;    // logits = cap * tanh(logits / cap); 0: none
    std::int64_t slidingWindow = 0;  // keys j with i - j < window are seen on sliding layers; 0: none
    std::vector<bool> slidingLayers; // per layer: uses the sliding window (empty: none does)
    double ropeLocalTheta = 0;       // Gemma 3: rope theta of sliding layers (without rope scaling); 0: same
    std::int64_t bosTokenId = -1;
    std::int64_t eosTokenId = -1;
    std::string torchDtype; // as written in config.json, informational
};

// How a config's fields are spelled in error messages: config.json keys or GGUF metadata keys.
enum class ConfigSpelling { HuggingFace, Gguf };

// The one model-config validator, run by every reader that produces a ModelConfig before anything
// is sized from it: every dimension in 1..a sane maximum, heads divisible by KV heads, special
// token ids inside the vocabulary. The error names the field (in `spelling`) and its value.
// Whether decoder layer `layer` attends through the sliding window.
inline bool isSlidingLayer(const ModelConfig& c, std::int64_t layer)
{
    return c.slidingWindow > 0 && layer >= 0 && std::size_t(layer) < c.slidingLayers.size() &&
           c.slidingLayers[std::size_t(layer)];
}

// The norms of a decoder layer. Hugging Face names (inside model.layers.N.) per architecture:
// "input_layernorm", "post_attention_layernorm" (Gemma: the MLP input norm is
// "pre_feedforward_layernorm" and "post_attention_layernorm" normalises the attention output),
// "self_attn.q_norm"/"k_norm", "post_feedforward_layernorm"; nullptr where the architecture has none.
enum class LayerNorm { Input, Post, Q, K, AttnOut, MlpOut };
inline constexpr LayerNorm kAllLayerNorms[] = {LayerNorm::Input, LayerNorm::Post,    LayerNorm::Q,
                                               LayerNorm::K,     LayerNorm::AttnOut, LayerNorm::MlpOut};
const char* layerNormName(const ModelConfig& cfg, LayerNorm n);

Status validateModelConfig(const ModelConfig& c, const std::string& source,
                           ConfigSpelling spelling = ConfigSpelling::HuggingFace);

} // namespace qb
