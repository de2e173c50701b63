#pragma once
// GGUF v3 (and v2) reader: metadata key/values, tensor infos, and the mapping of llama.cpp's
// `llama`/`qwen2` conventions back to Hugging Face names, shapes and row order.
//
// The file is memory-mapped; tensor data is never copied here. Shapes are returned in HF order
// (ggml `ne` reversed) with the bytes untouched: an nn.Linear [out, in] is stored with
// ne = [in, out] and identical bytes. Arrays in metadata are decoded eagerly (a 150k-token
// vocabulary costs a few MB). Pure functions over immutable results, thread-safe.
// The byte layout is described at the top of gguf_reader.cpp.

#include "base/model_config.h"
#include "base/result.h"
#include "base/tensor.h"
#include "io/gguf_names.h" // ggufToHfName, used with the reader

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace qb::io {

enum class GgufValueType : std::uint32_t {
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
};
const char* ggufValueTypeName(GgufValueType t);

// One metadata value. Scalars live in `scalar` (unsigned -> uint64, signed -> int64, floats ->
// double, bool, string); arrays keep their element type and decode into `ints` (integer and bool
// elements), `floats` or `strings`.
struct GgufValue {
    GgufValueType type = GgufValueType::UInt32;
    GgufValueType elementType = GgufValueType::UInt8; // arrays only
    std::variant<std::uint64_t, std::int64_t, double, bool, std::string> scalar;
    std::vector<std::int64_t> ints;
    std::vector<double> floats;
    std::vector<std::string> strings;

    bool isArray() const { return type == GgufValueType::Array; }
    std::uint64_t arraySize() const { return ints.size() + floats.size() + strings.size(); }
    // Numeric scalar as int64/double (bools count as 0/1); nullopt-like failure as false.
    bool toInt(std::int64_t& out) const;
    bool toDouble(double& out) const;
    const std::string* toString() const; // nullptr unless a string scalar
    // Short human rendering: scalars in full, arrays as "[type x N]".
    std::string display() const;
};

struct GgufFile {
    std::string path;
    std::uint32_t version = 3;
    std::uint64_t alignment = 32;
    std::uint64_t dataOffset = 0;                            // file offset of the tensor data section
    std::vector<std::pair<std::string, GgufValue>> metadata; // file order
    std::map<std::string, std::size_t> metadataIndex;        // key -> position in `metadata`
    // Tensors with their GGUF names in `name` and `sourceName`, HF-order shapes, file order.
    std::vector<TensorInfo> tensors;

    const GgufValue* find(const std::string& key) const;
    std::string architecture() const; // general.architecture, "" if absent
};

// Parses and bounds-checks the whole header and every tensor's data range.
Result<GgufFile> readGgufFile(const std::string& path);

// ModelConfig from `{arch}.*` keys (arch `llama` or `qwen2`); vocab from token_embd rows.
Result<ModelConfig> ggufModelConfig(const GgufFile& file);

// Tensors renamed to HF names, with permutedHeads set on q/k (arch `llama`). Tensors without an
// HF name keep their GGUF name (e.g. rope_freqs.weight).
std::vector<TensorInfo> ggufHfTensors(const GgufFile& file, const ModelConfig& config);

} // namespace qb::io
