#pragma once
// GPTQ checkpoints (FORMATS.md §5), the parts the exporter and the reader share: the bit packing,
// the quantization config with GPTQModel's per-module `dynamic` overrides, and the reader side
// that turns every packed module of an opened Hugging Face directory (qweight, qzeros, scales,
// g_idx) into one `<module>.weight` tensor [out, in] that readTensorF32 dequantizes on demand.
//
// Packing: along the packed axis consecutive b-bit codes form one little-endian bit stream, least
// significant bits first, cut into 32-bit words (b = 2, 3, 4, 8; for 3 bits codes straddle words).
// qweight [K·b/32, N] packs along the input axis, qzeros [R, N·b/32] along the output axis.
//
// `dynamic` (GPTQModel, read the same way by vLLM and SGLang): an ordered object whose keys are
// Python regexes matched with re.match (anchored at the start only) against the module name
// ("model.layers.0.mlp.down_proj"); the first key that matches decides. A key prefixed "-:"
// excludes the module (not quantized); "+:" or no prefix overrides the base config with the
// members of its value (bits, group_size, desc_act, sym). We write exact names,
// "+:^model\.layers\.0\.mlp\.down_proj$" (gptqModulePattern).
//
// Threading: pure functions over immutable inputs. Memory: dequantizing holds one group row of
// scales/zeros per output channel (R·N values) besides the output.

#include "base/result.h"
#include "base/tensor.h"
#include "io/json_value.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qb::io {

bool isGptqBits(int bits); // 2, 3, 4 or 8

// Value i of `values` into bits b·i ... of the zero-initialised `words`.
void packGptqStream(const std::uint32_t* values, std::size_t count, int bits, std::uint32_t* words);
// Value `index` of a stream whose 32-bit little-endian words start at `bytes` and lie `strideWords`
// words apart (1: contiguous; N: one column of qweight).
std::uint32_t gptqStreamValue(const std::uint8_t* bytes, std::size_t strideWords, int bits, std::size_t index);

struct GptqLayout {
    int bits = 4;
    int groupSize = -1; // -1: one group per output channel
    bool descAct = false;
    bool sym = true;
    bool operator==(const GptqLayout&) const = default;
};

struct GptqDynamicRule {
    std::string key; // as written, with its "+:" / "-:" prefix
    bool exclude = false;
    std::optional<int> bits, groupSize;
    std::optional<bool> descAct, sym;
};

struct GptqConfig {
    GptqLayout base;
    bool v2 = false; // checkpoint_format "gptq_v2": zeros stored as Z
    std::vector<GptqDynamicRule> dynamic;
    // The layout of one module after the dynamic rules; nullopt when a "-:" rule excludes it.
    std::optional<GptqLayout> layoutFor(const std::string& module) const;
};

// quantization_config (or quantize_config.json) → GptqConfig; Format errors name the member,
// Unsupported for bits other than 2/3/4/8 and unknown checkpoint formats.
Result<GptqConfig> parseGptqConfig(const JsonValue& qc, const std::string& nameForErrors);
// The GPTQ config of the Hugging Face directory `dir`: config.json's quantization_config with
// quant_method "gptq", else quantize_config.json; nullopt when it has neither.
Result<std::optional<GptqConfig>> readGptqConfig(const std::string& dir);
// The `dynamic` key that matches exactly one module name: "+:^a\.b\.c$" (or "-:..." to exclude).
std::string gptqModulePattern(const std::string& module, bool exclude = false);

// Replaces every packed module's qweight/qzeros/scales/g_idx in `tensors` by `<module>.weight`
// (shape [N, K], GptqParts attached), checking names, dtypes, shapes and the config's bits.
// `path` names the file in errors.
Status attachGptqModules(std::vector<TensorInfo>& tensors, const GptqConfig& config, const std::string& path);

// W [N x K] row-major F32 from a weight that attachGptqModules made.
Status dequantizeGptq(const TensorInfo& weight, float* dst);

} // namespace qb::io
