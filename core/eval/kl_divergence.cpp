#include "eval/kl_divergence.h"

#include "model/forward.h"

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

namespace qb::eval {

TokenComparison compareNextToken(std::span<const float> ref, std::span<const float> q, std::int32_t target)
{
    const model::RowLogSoftmax sr = model::rowLogSoftmax(ref), sq = model::rowLogSoftmax(q);
    // log p_j - log q_j in double throughout: the difference of two nearly equal log-probabilities
    // is what KL sums, and float rounding of l_j - max would be of its order.
    // In chunks through buffers, so that Eigen's exp takes several doubles at a time.
    constexpr std::size_t kChunk = 256;
    alignas(64) double lp[kChunk], diff[kChunk];
    double kl = 0;
    for (std::size_t s = 0; s < ref.size(); s += kChunk) {
        const std::size_t c = std::min(kChunk, ref.size() - s);
        for (std::size_t j = 0; j < c; ++j) {
            lp[j] = sr.logProbDouble(ref[s + j]);
            diff[j] = lp[j] - sq.logProbDouble(q[s + j]);
        }
        const Eigen::Index n = Eigen::Index(c);
        kl += (Eigen::Map<const Eigen::ArrayXd>(lp, n).exp() * Eigen::Map<const Eigen::ArrayXd>(diff, n)).sum();
    }
    TokenComparison c;
    c.kl = std::isnan(kl) ? kl : std::max(0.0, kl);
    c.refLogProb = sr.logProb(ref[std::size_t(target)]);
    c.logProb = sq.logProb(q[std::size_t(target)]);
    c.sameTop1 = sr.argmax == sq.argmax;
    return c;
}

namespace {

constexpr int kLogBins = KlAccumulator::kDecades * KlAccumulator::kBinsPerDecade;

// Lower edge of log bin b (1..kLogBins); b = kLogBins + 1 is the upper end of the range.
double binEdge(int b)
{
    return KlAccumulator::kHistogramLow * std::pow(10.0, double(b - 1) / KlAccumulator::kBinsPerDecade);
}

} // namespace

void KlAccumulator::add(double kl, bool sameTop1)
{
    m_min = m_count == 0 ? kl : std::min(m_min, kl);
    m_max = m_count == 0 ? kl : std::max(m_max, kl);
    ++m_count;
    m_same += sameTop1 ? 1 : 0;
    m_sum += kl;
    m_sumSquares += kl * kl;
    std::size_t b = 0;
    if (kl >= kHistogramLow)
        b = std::size_t(
            std::min<double>(kLogBins + 1, 1 + std::floor(std::log10(kl / kHistogramLow) * kBinsPerDecade)));
    ++m_bins[b];
}

double KlAccumulator::quantile(double q) const
{
    if (m_count == 0) return 0;
    // The value of rank k: the values of its bin spread evenly over the bin, in log space for the
    // log bins; linearly in the two end bins, from the minimum up and from the maximum down.
    auto valueAt = [this](std::int64_t k) {
        std::int64_t before = 0;
        for (std::size_t b = 0; b < m_bins.size(); ++b) {
            const std::int64_t c = m_bins[b];
            if (k >= before + c) {
                before += c;
                continue;
            }
            const double i = double(k - before);
            double v;
            if (b == 0) v = m_min + i / double(c) * (std::min(kHistogramLow, m_max) - m_min);
            else if (b == m_bins.size() - 1)
                v = m_max - (double(c) - 1 - i) / double(c) * (m_max - binEdge(kLogBins + 1));
            else v = binEdge(int(b)) * std::pow(binEdge(int(b) + 1) / binEdge(int(b)), (i + 0.5) / double(c));
            return std::clamp(v, m_min, m_max);
        }
        return m_max;
    };
    const double r = std::clamp(q, 0.0, 1.0) * double(m_count - 1);
    const auto k = std::int64_t(std::floor(r));
    const double lo = valueAt(k);
    if (k + 1 >= m_count) return lo;
    return lo + (r - double(k)) * (valueAt(k + 1) - lo);
}

KlStats KlAccumulator::stats() const
{
    KlStats s;
    s.tokens = m_count;
    if (m_count == 0) return s;
    const double n = double(m_count);
    s.mean = m_sum / n;
    s.top1Agreement = double(m_same) / n;
    if (m_count > 1) {
        s.meanStderr = std::sqrt(std::max(0.0, m_sumSquares / n - s.mean * s.mean) / (n - 1));
        s.top1AgreementStderr = std::sqrt(s.top1Agreement * (1 - s.top1Agreement) / (n - 1));
    }
    s.median = quantile(0.5);
    s.p99 = quantile(0.99);
    s.max = m_max;
    return s;
}

Result<KlDivergenceResult> evaluateKlDivergence(const model::Model& model, const model::Model& reference,
                                                const TokenWindows& windows, const PerplexityOptions& options,
                                                RunContext* rc)
{
    const int ctx = windows.ctx;
    const int first = firstScoredPosition(options.mode, ctx);
    if (ctx >= 2 && first >= ctx - 1)
        return makeError(ErrorCode::InvalidArgument,
                         "no scored position in a window of " + std::to_string(ctx) + " tokens");
    QB_TRY_STATUS(model.validate());
    QB_TRY_STATUS(reference.validate());
    const Eigen::Index V = model.lmHeadRows();
    if (reference.lmHeadRows() != V)
        return makeError(ErrorCode::Shape, "the reference model has a vocabulary of " +
                                               std::to_string(reference.lmHeadRows()) + " tokens, the model " +
                                               std::to_string(V));
    const auto t0 = std::chrono::steady_clock::now();
    model::Workspace ws;
    model::RowMatrix hiddenRef, hidden, logitsRef, logits;
    std::vector<TokenComparison> rows;
    NllAccumulator nllRef, nll;
    KlAccumulator kl;
    // Both models over one batch, then their logits chunk by chunk (a named lambda: the OpenMP
    // pragma cannot sit inside a macro argument).
    auto perBatch = [&](std::span<const std::int32_t> ids) -> Status {
        // embed() checks every id of the batch, targets included.
        QB_TRY_STATUS(model::runDecoder(reference, ids, ctx, hiddenRef, ws));
        QB_TRY_STATUS(model::runDecoder(model, ids, ctx, hidden, ws));
        const Eigen::Index total = Eigen::Index(ids.size() / std::size_t(ctx)) * (ctx - 1 - first);
        const Eigen::Index chunk = model::logitsChunkRows(model, total);
        for (Eigen::Index c0 = 0; c0 < total; c0 += chunk) {
            const Eigen::Index n = std::min(chunk, total - c0);
            model::scoredLogits(reference, hiddenRef, ctx, first, c0, n, logitsRef, ws);
            model::scoredLogits(model, hidden, ctx, first, c0, n, logits, ws);
            rows.resize(std::size_t(n));
#pragma omp parallel for schedule(static)
            for (Eigen::Index i = 0; i < n; ++i) {
                const std::int32_t target = ids[std::size_t(model::scoredHiddenRow(c0 + i, ctx, first) + 1)];
                rows[std::size_t(i)] = compareNextToken({logitsRef.row(i).data(), std::size_t(V)},
                                                        {logits.row(i).data(), std::size_t(V)}, target);
            }
            for (const TokenComparison& c : rows) {
                if (std::isnan(c.kl))
                    return makeError(ErrorCode::NumericalError, "KL divergence is NaN (NaN in a model output)");
                nllRef.add(c.refLogProb);
                nll.add(c.logProb);
                kl.add(c.kl, c.sameTop1);
            }
        }
        return {};
    };
    QB_TRY_STATUS(detail::forEachWindowBatch(windows, options.batch, rc, "KL divergence", perBatch));
    KlDivergenceResult r;
    QB_TRY(p, detail::perplexityResult(nll, windows, options.mode, t0));
    r.perplexity = *p;
    r.kl = kl.stats();
    r.kl.referencePerplexity = nllRef.perplexity();
    return r;
}

} // namespace qb::eval
