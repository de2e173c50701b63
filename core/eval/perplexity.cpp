#include "eval/perplexity.h"

#include "model/forward.h"

#include <chrono>
#include <cmath>
#include <limits>

namespace qb::eval {

const char* scoreModeName(ScoreMode m) { return m == ScoreMode::All ? "all" : "second-half"; }

std::optional<ScoreMode> parseScoreMode(std::string_view s)
{
    if (s == "all") return ScoreMode::All;
    if (s == "second-half" || s == "second_half" || s == "half") return ScoreMode::SecondHalf;
    return std::nullopt;
}

int firstScoredPosition(ScoreMode m, int ctx) { return m == ScoreMode::All ? 0 : ctx / 2; }

Result<TokenWindows> makeWindows(std::span<const std::int32_t> tokens, int ctx, std::optional<std::int32_t> bos)
{
    if (ctx < 2)
        return makeError(ErrorCode::InvalidArgument, "context length must be at least 2, got " + std::to_string(ctx));
    if (tokens.size() < std::size_t(ctx))
        return makeError(ErrorCode::InvalidArgument, "text too short: " + std::to_string(tokens.size()) +
                                                         " tokens, fewer than one window of " + std::to_string(ctx));
    TokenWindows w;
    w.ctx = ctx;
    w.count = int(tokens.size() / std::size_t(ctx));
    w.ids.assign(tokens.begin(), tokens.begin() + std::ptrdiff_t(w.count) * ctx);
    if (bos)
        for (int i = 0; i < w.count; ++i)
            w.ids[std::size_t(i) * std::size_t(ctx)] = *bos;
    return w;
}

void NllAccumulator::add(std::span<const float> logProbs)
{
    for (float lp : logProbs)
        add(lp);
}

void NllAccumulator::add(float logProb)
{
    nll -= double(logProb);
    ++tokens;
}

double NllAccumulator::perplexity() const
{
    return tokens > 0 ? std::exp(nll / double(tokens)) : std::numeric_limits<double>::quiet_NaN();
}

Result<PerplexityResult> evaluatePerplexity(const model::Model& model, const TokenWindows& windows,
                                            const PerplexityOptions& options, RunContext* rc)
{
    QB_TRY_STATUS(model.validate());
    const int first = firstScoredPosition(options.mode, windows.ctx);
    const auto t0 = std::chrono::steady_clock::now();
    model::Workspace ws;
    model::RowMatrix hidden;
    std::vector<float> lp;
    NllAccumulator acc;
    auto perBatch = [&](std::span<const std::int32_t> ids) -> Status {
        QB_TRY_STATUS(model::runDecoder(model, ids, windows.ctx, hidden, ws));
        QB_TRY_STATUS(model::logProbs(model, hidden, windows.ctx, ids, first, lp, ws));
        acc.add(lp);
        return {};
    };
    QB_TRY_STATUS(detail::forEachWindowBatch(windows, options.batch, rc, "perplexity", perBatch));
    return detail::perplexityResult(acc, windows, options.mode, t0);
}

namespace detail {

Status forEachWindowBatch(const TokenWindows& windows, int batch, RunContext* rc, const std::string& what,
                          const std::function<Status(std::span<const std::int32_t> ids)>& perBatch)
{
    const int ctx = windows.ctx;
    if (windows.count <= 0 || ctx < 2 || windows.ids.size() != std::size_t(windows.count) * std::size_t(ctx))
        return makeError(ErrorCode::InvalidArgument, "no complete token window to evaluate");
    batch = std::max(1, batch);
    if (rc) rc->beginStage("evaluate", windows.count);
    for (int w0 = 0; w0 < windows.count; w0 += batch) {
        if (rc && rc->isCancelled()) return RunContext::cancelledError(what);
        const int nb = std::min(batch, windows.count - w0);
        QB_TRY_STATUS(
            perBatch({windows.ids.data() + std::size_t(w0) * std::size_t(ctx), std::size_t(nb) * std::size_t(ctx)}));
        if (rc) rc->advance(nb);
    }
    return {};
}

Result<PerplexityResult> perplexityResult(const NllAccumulator& nll, const TokenWindows& windows, ScoreMode mode,
                                          std::chrono::steady_clock::time_point start)
{
    PerplexityResult r;
    r.perplexity = nll.perplexity();
    r.tokensScored = nll.tokens;
    r.windows = windows.count;
    r.ctx = windows.ctx;
    r.mode = mode;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.tokensPerSecond = r.seconds > 0 ? double(windows.count) * windows.ctx / r.seconds : 0.0;
    if (std::isnan(r.perplexity))
        return makeError(ErrorCode::NumericalError, "perplexity is NaN (NaN in the model output)");
    return r;
}

} // namespace detail

} // namespace qb::eval
