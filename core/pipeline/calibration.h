#pragma once
// Calibration set: n windows of L tokens sampled from a text, deterministically for a seed.
//
// The text is tokenized once (with the tokenizer's special tokens, as the perplexity job) and n
// window starts are drawn uniformly from [0, tokens - L] with replacement, like GPTQ's C4
// sampling (a random L-token segment per sample; here every sample comes from the one text).
// Windows may overlap. When the tokenizer adds a BOS token, every window's first token is set to
// BOS, matching how perplexity windows are evaluated. The generator is std::mt19937_64 seeded with
// `seed`, mapped to a range by rejection sampling (no std::uniform_int_distribution, whose output
// differs between standard libraries), so a seed gives the same windows on every platform.
// Errors: a text with fewer than L tokens, or n < 1, L < 2, return InvalidArgument naming the
// counts. Progress: stage "calibrate" (no units). Threading: pure functions.
// Memory: n·L int32 token ids.

#include "base/model_config.h"
#include "base/result.h"
#include "base/run_context.h"
#include "io/tokenizer.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qb::pipeline {

// The calibration window length a run uses when none is given: the literature's 2048 tokens
// (GPTQ, NeUQI: 128 windows x 2048), at most the model's context.
int defaultCalibrationLength(const ModelConfig& config);

struct CalibrationOptions {
    int nsamples = 128;
    int seqlen = 256;
    std::uint64_t seed = 0;
};

struct CalibrationSet {
    int seqlen = 0;
    int count = 0;
    std::vector<std::int32_t> ids;    // count × seqlen, window-major
    std::vector<std::int64_t> starts; // token offset of each window in the tokenized text
    std::int64_t textTokens = 0;      // tokens in the whole text
    std::int64_t tokens() const { return std::int64_t(count) * seqlen; }
};

// Samples windows from an already tokenized text.
Result<CalibrationSet> sampleCalibrationWindows(std::span<const std::int32_t> tokens, const CalibrationOptions& options,
                                                std::optional<std::int32_t> bos = std::nullopt);

// Tokenizes `text` and samples windows. nameForErrors (the file) goes into the error context.
Result<CalibrationSet> buildCalibrationSet(const io::Tokenizer& tokenizer, std::string_view text,
                                           const CalibrationOptions& options, RunContext* ctx = nullptr,
                                           const std::string& nameForErrors = "calibration text");

} // namespace qb::pipeline
