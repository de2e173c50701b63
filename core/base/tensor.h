#pragma once
// TensorInfo: one stored tensor as a reader found it, before any conversion.
//
// This is the vocabulary shared by io (which produces it) and the modules that consume weights.
// `shape` is in PyTorch/Hugging Face order (row-major, last index fastest). `bytes` views the
// stored data, usually inside a memory-mapped file (no copy). For plain types `dtype` says how
// the bytes are encoded; for GGUF block-quantized tensors `ggmlType` holds the ggml type id
// (e.g. 8 = Q8_0) and `dtype` is F32, the type they dequantize to. A linear weight stored as GPTQ
// parts (FORMATS.md §5) has `gptq` set: `bytes` is its qweight, `dtype` F32, and io dequantizes it
// from the parts (io/gptq.h). Immutable, thread-safe.

#include "base/dtype.h"
#include "base/mapped_file.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qb {

struct GptqParts;

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
    // Added to every value when converting to F32: -1 for Gemma norms in GGUF, which llama.cpp
    // stores as (1 + w) while Hugging Face stores w.
    float valueOffset = 0;
    std::shared_ptr<const GptqParts> gptq; // set: a GPTQ-packed linear weight [out, in]

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
    // The bytes are not plain `dtype` values (GGUF blocks, GPTQ parts): only io decodes them.
    bool encoded() const { return ggmlType >= 0 || gptq != nullptr; }
};

// The stored parts of a GPTQ-packed linear weight W [N out, K in] (FORMATS.md §5.1-5.3):
// W[n,k] = scales[g,n]·(q[k,n] − Z[g,n]), g = gIdx[k] (k / groupSize when the file has no g_idx),
// q unpacked from qweight [K·bits/32, N] and Z = stored qzeros [R, N·bits/32] + zeroOffset.
struct GptqParts {
    int bits = 4;
    int groupSize = -1;                       // -1: one group per row; used only without g_idx
    int zeroOffset = 1;                       // checkpoint_format "gptq" (v1) stores Z − 1; "gptq_v2" stores Z
    TensorInfo qweight, qzeros, scales, gIdx; // gIdx.shape empty when the file has none
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
