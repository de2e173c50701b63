#pragma once
// Perplexity job: text file -> tokens -> windows -> forward pass -> perplexity (and, against a
// reference model, KL divergence and top-1 agreement).
//
// The text is tokenized once with the tokenizer's special tokens (so a BOS-adding tokenizer puts
// BOS at token 0); non-overlapping windows of `ctx` tokens are cut from the start, the trailing
// partial window dropped, and, when the tokenizer adds BOS, every window's first token is set to
// BOS (llama.cpp llama-perplexity). Scoring mode and result fields: see eval/perplexity.h.
// Progress: stage "tokenize" (no units), then "evaluate" (one unit per window); cancel is polled
// between batches. Threading: runs on the calling thread; `threads` > 0 sets the OpenMP/Eigen
// thread count for the forward pass (process-wide).

#include "base/result.h"
#include "base/run_context.h"
#include "eval/kl_divergence.h"
#include "eval/perplexity.h"
#include "io/tokenizer.h"
#include "model/model.h"

#include <string>
#include <string_view>

namespace qb::pipeline {

struct PerplexityJobOptions {
    int ctx = 512;
    eval::ScoreMode mode = eval::ScoreMode::All;
    int batch = 4;
    int threads = 0; // 0: leave the current setting
    // GGUF Q4_0/Q8_0 linears multiply with 8-bit activations and integer dot products, as
    // llama.cpp does (model/int8_product.h); the other weights as they are.
    bool int8Products = false;
};

Result<eval::PerplexityResult> runPerplexity(const model::Model& model, const io::Tokenizer& tokenizer,
                                             std::string_view text, const PerplexityJobOptions& options,
                                             RunContext* ctx = nullptr);

// The same windows through `model` and `reference` in one paired pass: the model's perplexity and
// its KL divergence from the reference (eval/kl_divergence.h; streaming, nothing per token kept).
Result<eval::KlDivergenceResult> runKlDivergence(const model::Model& model, const model::Model& reference,
                                                 const io::Tokenizer& tokenizer, std::string_view text,
                                                 const PerplexityJobOptions& options, RunContext* ctx = nullptr);

// The windows the evaluations score: the text tokenized with special tokens, cut as described above
// (stage "tokenize"); sets the thread count when options.threads > 0.
Result<eval::TokenWindows> textWindows(const io::Tokenizer& tokenizer, std::string_view text,
                                       const PerplexityJobOptions& options, RunContext* ctx = nullptr);

// Reads a whole (UTF-8) text file; the error names the file.
Result<std::string> readTextFile(const std::string& path);

} // namespace qb::pipeline
