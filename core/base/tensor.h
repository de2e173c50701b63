#pragma once
// TensorInfo: one stored tensor as a reader found it, before any conversion.
//
// This is the vocabulary shared by io (which produces it) and the modules that consume weights.
// `shape` is in PyTorch/Hugging Face order (row-major, last index fastest). `bytes` views the
// stored data, usually inside a memory-mapped file (no copy). For plain types `dtype` says how
// the bytes are encoded; for GGUF block-quantized tensors `ggmlType` holds the ggml type id
// (e.g. 8 = Q8_0) and `dtype` is F32, the type they dequantize to. Immutable, thread-safe.

#include "base/dtype.h"
#include "base/mapped_file.h"

#include <cstdint>
#include <string>
#include <vector>

namespace qb {

struct TensorInfo {
    std::string name;                // Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight
    std::vector<std::int64_t> shape; // HF order
    DType dtype = DType::F32;
    int ggmlType = -1; // >= 0: GGUF block encoding of `bytes`
    ByteRange bytes;
    std::string sourceName; // name in the file, when it differs (GGUF: blk.0.attn_q.weight)
    // > 0: rows are stored in llama.cpp's interleaved-pair RoPE order for this many heads
    // (GGUF arch `llama` q/k weights and biases); readers undo it when converting to F32.
    int permutedHeads = 0;

    std::int64_t numel() const
    {
        std::int64_t n = 1;
        for (auto d : shape)
            n *= d;
        return n;
    }
    std::int64_t rows() const { return shape.empty() ? 1 : shape.front(); }
    std::int64_t cols() const { return shape.empty() ? 1 : numel() / shape.front(); }
    std::string shapeString() const;
};

// "[4096, 11008]": a shape as every error message spells it.
inline std::string shapeString(const std::vector<std::int64_t>& shape)
{
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

inline std::string TensorInfo::shapeString() const { return qb::shapeString(shape); }

} // namespace qb
