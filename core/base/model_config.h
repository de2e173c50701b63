#pragma once
// ModelConfig: the hyper-parameters of a LLaMA-family decoder (LLaMA, Qwen2, Mistral).
//
// Produced by io from config.json or GGUF metadata and consumed by model; plain data, std only.
// Field names follow Hugging Face config.json. Dimensions are element counts.

#include "base/result.h"

#include <cstdint>
#include <string>

namespace qb {

enum class Architecture { Llama, Qwen2, Mistral };

inline const char* architectureName(Architecture a)
{
    switch (a) {
    case Architecture::Llama: return "LlamaForCausalLM";
    case Architecture::Qwen2: return "Qwen2ForCausalLM";
    case Architecture::Mistral: return "MistralForCausalLM";
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

struct ModelConfig {
    Architecture architecture = Architecture::Llama;
    std::string modelType; // "llama", "qwen2", "mistral"
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
    std::int64_t bosTokenId = -1;
    std::int64_t eosTokenId = -1;
    std::string torchDtype; // as written in config.json, informational
};

// How a config's fields are spelled in error messages: config.json keys or GGUF metadata keys.
enum class ConfigSpelling { HuggingFace, Gguf };

// The one model-config validator, run by every reader that produces a ModelConfig before anything
// is sized from it: every dimension in 1..a sane maximum, heads divisible by KV heads, special
// token ids inside the vocabulary. The error names the field (in `spelling`) and its value.
Status validateModelConfig(const ModelConfig& c, const std::string& source,
                           ConfigSpelling spelling = ConfigSpelling::HuggingFace);

} // namespace qb
