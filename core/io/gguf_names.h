#pragma once
// The Hugging Face <-> GGUF (llama.cpp) vocabulary, in one place for the reader and the writer:
// tensor names (FORMATS.md §2.3) and the RoPE row permutation that llama.cpp's converter applies
// to q/k weights of arch `llama` (FORMATS.md §2.4). Pure functions, thread-safe.

#include "base/model_config.h"

#include <cstdint>
#include <string>
#include <vector>

namespace qb::io {

// GGUF name for a HF tensor name ("" when it has none, e.g. rotary buffers). Names depend on the
// architecture: Gemma's post_attention_layernorm is llama.cpp's post_attention_norm (its MLP input
// norm, pre_feedforward_layernorm, is ffn_norm), Phi-3's gate_up_proj is ffn_up.
std::string hfToGgufName(const std::string& hfName, Architecture arch = Architecture::Llama);
// HF name for a GGUF tensor name ("" when the tensor is not one of the architecture's).
std::string ggufToHfName(const std::string& ggufName, Architecture arch = Architecture::Llama);
// llama.cpp's general.architecture for an architecture ("llama" for Mistral too).
const char* ggufArchitectureName(Architecture arch);

// GGUF row h*d + 2i + a holds HF row h*d + a*d/2 + i. Returns, for each GGUF row, the HF row it
// holds; rows = heads * headDim (headDim even). The writer gathers with it, the reader scatters.
std::vector<std::int64_t> llamaRopePermutation(std::int64_t heads, std::int64_t headDim);

} // namespace qb::io
