#pragma once
// KL divergence and top-token agreement of a model against a reference model (llama.cpp
// llama-perplexity --kl-divergence), beside the model's perplexity, as value structs.
//
// For every scored position (the windows and score mode of perplexity.h), with P the reference's
// next-token distribution and Q the evaluated model's: KL(P || Q) = Σ_j p_j (log p_j - log q_j) in
// nats, log-softmax and the sum in double (negative rounding noise is clamped to 0), and whether
// argmax P == argmax Q (first index on ties). Reported like llama.cpp: mean KL with its
// uncertainty sqrt((E[x²] - E[x]²) / (n - 1)), median, 99th percentile and maximum, and the top-1
// agreement p with sqrt(p (1 - p) / (n - 1)); plus the reference's perplexity on the same windows.
//
// Streaming: evaluateKlDivergence() runs both models over the same batch of windows, compares
// their logits chunk by chunk and keeps only running sums and a fixed log-spaced histogram of the
// per-token KL (KlAccumulator): no logits file, no per-token list. Its memory is that of one batch
// for each model (two hidden states [batch·ctx, K] and two logits chunks of at most 64 MB each,
// see model::logitsChunkRows) and does not grow with the text. The price: the median and the 99th
// percentile come from the histogram (256 bins per decade from 1e-12 to 1e3 nats), within 1 %
// of the exact order statistic interpolated as llama.cpp does (values under 1e-12 nats share one
// bin: there within 1e-12 absolute); mean, uncertainty, maximum and top-1 agreement are exact.
// Threading: runs both models' OpenMP-parallel forward passes on the calling thread; positions of a
// chunk are compared in parallel and accumulated in order, so results are deterministic. Polls the
// RunContext between batches. Pure std + Eigen (through model).

#include "base/result.h"
#include "base/run_context.h"
#include "eval/perplexity.h"
#include "model/model.h"

#include <array>
#include <cstdint>
#include <span>

namespace qb::eval {

// One scored position of both models.
struct TokenComparison {
    double kl = 0;         // KL(P_ref || P) in nats
    float refLogProb = 0;  // log P_ref(target), exactly as model::logProbs() computes it
    float logProb = 0;     // log P(target)
    bool sameTop1 = false; // argmax P_ref == argmax P
};

// Compares two rows of next-token logits (same vocabulary) for a target token in [0, V).
TokenComparison compareNextToken(std::span<const float> referenceLogits, std::span<const float> logits,
                                 std::int32_t target);

struct KlStats {
    std::int64_t tokens = 0;
    double mean = 0, meanStderr = 0;     // nats
    double median = 0, p99 = 0, max = 0; // nats (median, p99: from the histogram)
    double top1Agreement = 0;            // fraction of positions whose argmaxes agree, 0..1
    double top1AgreementStderr = 0;
    double referencePerplexity = 0; // the reference model on the same windows
};

// Running statistics of per-token KL values in constant memory.
class KlAccumulator {
public:
    void add(double kl, bool sameTop1);
    std::int64_t count() const { return m_count; }
    // Order statistic at fraction q of the values (q·(n-1) with interpolation), from the histogram.
    double quantile(double q) const;
    // Everything but referencePerplexity.
    KlStats stats() const;

    static constexpr double kHistogramLow = 1e-12; // nats; smaller values share one bin
    static constexpr int kDecades = 15;            // up to 1e3 nats; larger values share one bin
    static constexpr int kBinsPerDecade = 256;

private:
    std::array<std::int64_t, kDecades * kBinsPerDecade + 2> m_bins{}; // [0]: below low, back(): above
    double m_sum = 0, m_sumSquares = 0;
    double m_min = 0, m_max = 0;
    std::int64_t m_count = 0, m_same = 0;
};

struct KlDivergenceResult {
    PerplexityResult perplexity; // of the evaluated model; seconds and tokens/s cover both models
    KlStats kl;
};

// Runs `model` and `reference` over every window in batches (progress stage "evaluate", one unit
// per window) and compares them as described above. Both models must share the vocabulary; both
// need all their decoder layers. Cancel -> ErrorCode::Cancelled.
Result<KlDivergenceResult> evaluateKlDivergence(const model::Model& model, const model::Model& reference,
                                                const TokenWindows& windows, const PerplexityOptions& options,
                                                RunContext* ctx = nullptr);

} // namespace qb::eval
