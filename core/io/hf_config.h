#pragma once
// Hugging Face config.json -> ModelConfig for LlamaForCausalLM, Qwen2ForCausalLM and
// MistralForCausalLM (FORMATS.md §2.1-2.2). Defaults follow transformers; anything the forward
// pass cannot honour (another architecture, a rope_scaling type other than llama3) is refused with
// an error naming the field and its value. Pure functions, thread-safe.

#include "base/model_config.h"
#include "base/result.h"

#include <string>

namespace qb::io {

// `json` is the file's text; `sourceName` names it in errors.
Result<ModelConfig> parseHfConfig(const std::string& json, const std::string& sourceName);
Result<ModelConfig> readHfConfig(const std::string& path);

} // namespace qb::io
