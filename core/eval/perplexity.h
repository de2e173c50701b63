#pragma once
// Perplexity of a causal LM over non-overlapping token windows, as value structs.
//
// Windowing (llama.cpp llama-perplexity convention): windows of `ctx` tokens cut from the start
// of the token stream, the trailing partial window dropped; when the tokenizer adds a BOS token
// the first token of every window is replaced by BOS. Scoring: the logits at positions
// [first, ctx-1) predict the tokens at [first+1, ctx), with first = 0 ("all": every token of a
// window except its first) or first = ctx/2 ("second-half", as llama-perplexity). Perplexity =
// exp(mean negative log-likelihood), accumulated in double. Seconds are wall-clock.
// Threading: evaluatePerplexity() runs the model's OpenMP-parallel forward pass on the calling
// thread and polls the RunContext between batches. Pure std + Eigen (through model).

#include "base/result.h"
#include "base/run_context.h"
#include "model/model.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qb::eval {

enum class ScoreMode { All, SecondHalf };
const char* scoreModeName(ScoreMode m); // "all", "second-half"
std::optional<ScoreMode> parseScoreMode(std::string_view s);
// First position whose logits are scored: 0 or ctx/2.
int firstScoredPosition(ScoreMode m, int ctx);

struct TokenWindows {
    int ctx = 0;
    int count = 0;
    std::vector<std::int32_t> ids; // count × ctx, window-major
};

// Cuts windows as described above; bos replaces each window's first token when set.
// Fails with a clear message when fewer than ctx tokens are available (or ctx < 2).
Result<TokenWindows> makeWindows(std::span<const std::int32_t> tokens, int ctx,
                                 std::optional<std::int32_t> bos = std::nullopt);

// Running sum of negative log-likelihoods.
struct NllAccumulator {
    double nll = 0;
    std::int64_t tokens = 0;
    void add(std::span<const float> logProbs);
    void add(float logProb);
    double perplexity() const; // exp(nll / tokens); NaN when nothing was scored
};

struct PerplexityOptions {
    ScoreMode mode = ScoreMode::All;
    int batch = 4; // windows per forward pass
};

struct PerplexityResult {
    double perplexity = 0;
    std::int64_t tokensScored = 0;
    std::int64_t windows = 0;
    int ctx = 0;
    ScoreMode mode = ScoreMode::All;
    double seconds = 0;
    double tokensPerSecond = 0; // processed (prefill) tokens, windows × ctx, per second
    int int8Weights = 0;        // linears multiplied with 8-bit activations (model/int8_product.h)
};

// Runs every window through the model in batches (progress stage "evaluate", one unit per
// window) and returns the perplexity. Cancel -> ErrorCode::Cancelled.
Result<PerplexityResult> evaluatePerplexity(const model::Model& model, const TokenWindows& windows,
                                            const PerplexityOptions& options, RunContext* ctx = nullptr);

namespace detail {

// The batch loop of the evaluations: checks the windows, starts stage "evaluate" (one unit per
// window), polls cancel before every batch (the error names `what`) and hands perBatch the ids of
// each batch (a whole number of windows).
Status forEachWindowBatch(const TokenWindows& windows, int batch, RunContext* ctx, const std::string& what,
                          const std::function<Status(std::span<const std::int32_t> ids)>& perBatch);
// The result of an accumulator over `windows`, timed since `start`; NaN is a NumericalError.
Result<PerplexityResult> perplexityResult(const NllAccumulator& nll, const TokenWindows& windows, ScoreMode mode,
                                          std::chrono::steady_clock::time_point start);

} // namespace detail

} // namespace qb::eval
