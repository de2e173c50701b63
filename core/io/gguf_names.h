#pragma once
// The Hugging Face <-> GGUF (llama.cpp) vocabulary, in one place for the reader and the writer:
// tensor names (FORMATS.md §2.3) and the RoPE row permutation that llama.cpp's converter applies
// to q/k weights of arch `llama` (FORMATS.md §2.4). Pure functions, thread-safe.

#include <cstdint>
#include <string>
#include <vector>

namespace qb::io {

// GGUF name for a HF tensor name ("" when it has none, e.g. rotary buffers).
std::string hfToGgufName(const std::string& hfName);
// HF name for a GGUF tensor name ("" when the tensor is not one of the architecture's).
std::string ggufToHfName(const std::string& ggufName);

// GGUF row h*d + 2i + a holds HF row h*d + a*d/2 + i. Returns, for each GGUF row, the HF row it
// holds; rows = heads * headDim (headDim even). The writer gathers with it, the reader scatters.
std::vector<std::int64_t> llamaRopePermutation(std::int64_t heads, std::int64_t headDim);

} // namespace qb::io
