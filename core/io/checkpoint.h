#pragma once
// Checkpoint: one entry point that opens any supported model checkpoint and describes it.
//
// openCheckpoint() reads headers only (safetensors JSON headers, the pickle of a PyTorch .bin,
// GGUF metadata and tensor infos) and maps the files, so opening a multi-GB model is instant; the
// weight bytes are touched only when readTensorF32() converts a tensor. Tensors are reported with
// Hugging Face names and shapes (row-major, PyTorch order) whatever the container, and the
// architecture's required tensors are checked to exist with the right shapes.
// Threading: a Checkpoint is immutable after openCheckpoint() returns; readTensorF32() is
// thread-safe and may run concurrently on different (or the same) tensors.

#include "base/model_config.h"
#include "base/packed_weight.h"
#include "base/result.h"
#include "base/tensor.h"
#include "io/tokenizer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace qb::io {

enum class CheckpointFormat { Safetensors, PytorchBin, Gguf };
const char* checkpointFormatName(CheckpointFormat f);

struct Checkpoint {
    std::string path; // what the user opened
    CheckpointFormat format = CheckpointFormat::Safetensors;
    ModelConfig config;
    std::vector<TensorInfo> tensors;   // HF names and HF shapes, file order
    std::string tokenizerPath;         // tokenizer.json beside the model, empty if none
    std::string quantization;          // e.g. "gptq 4-bit, group 32, asym": packed weights, dequantized when read
    std::string embeddedTokenizer;     // GGUF: its tokenizer.ggml.model ("gpt2", "llama"), empty if none
    std::vector<std::string> files;    // every file that holds tensors
    std::uint64_t fileBytes = 0;       // total size of those files
    std::vector<std::string> warnings; // non-fatal issues, e.g. unused tensors ignored
    const TensorInfo* find(const std::string& name) const;
};

// path: a HF directory (config.json + safetensors or .bin, single or sharded; a GPTQ directory's
// packed modules read as their dequantized weights, io/gptq.h), a .safetensors
// file, a .bin file, an index .json, or a .gguf file. For a file, config.json is looked up in its
// directory (GGUF carries its own config). Reads headers only: instant on multi-GB files.
Result<Checkpoint> openCheckpoint(const std::string& path);

// The model's tokenizer: tokenizer.json beside it, else the tokenizer a GGUF embeds
// (Tokenizer::fromGguf). The one place that says a model has none: "the model has no
// tokenizer.json beside it (<dir>): ..." as an InvalidArgument error.
Result<Tokenizer> loadCheckpointTokenizer(const Checkpoint& ck);

// Converts/dequantizes one tensor into dst (numel() floats, HF layout; undoes permutedHeads).
Status readTensorF32(const TensorInfo& t, float* dst);

// Rows [firstRow, firstRow + rows) of a 2-D tensor (rows < 0: all) as a compact view that decodes
// them exactly as readTensorF32 does, straight from the map (base/packed_weight.h): plain
// F32/F16/BF16 and GGUF block types (q/k rows un-permuted by a row order). nullptr when the
// tensor has no such view (GPTQ parts, other dtypes, a value offset, not 2-D): read it as F32.
// A byte size that does not match the shape is an error naming the tensor, as in readTensorF32.
Result<PackedWeightPtr> packTensor(const TensorInfo& t, std::int64_t firstRow = 0, std::int64_t rows = -1);

} // namespace qb::io
