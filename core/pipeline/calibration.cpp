#include "pipeline/calibration.h"

#include <algorithm>

#include <random>

namespace qb::pipeline {

int defaultCalibrationLength(const ModelConfig& c)
{
    constexpr std::int64_t kLiterature = 2048;
    return int(c.maxPositionEmbeddings >= 2 ? std::min(kLiterature, c.maxPositionEmbeddings) : kLiterature);
}

namespace {

// Uniform integer in [0, n] from a 64-bit engine, by rejection (portable across libraries).
std::uint64_t uniformUpTo(std::mt19937_64& rng, std::uint64_t n)
{
    if (n == 0) return 0;
    const std::uint64_t range = n + 1; // n < 2^63 here
    const std::uint64_t limit = std::uint64_t(-1) - (std::uint64_t(-1) % range + 1) % range;
    while (true) {
        const std::uint64_t r = rng();
        if (r <= limit) return r % range;
    }
}

} // namespace

Result<CalibrationSet> sampleCalibrationWindows(std::span<const std::int32_t> tokens, const CalibrationOptions& o,
                                                std::optional<std::int32_t> bos)
{
    if (o.nsamples < 1)
        return makeError(ErrorCode::InvalidArgument, "calibration needs at least one sample (nsamples >= 1)");
    if (o.seqlen < 2)
        return makeError(ErrorCode::InvalidArgument, "calibration windows need at least 2 tokens (seqlen >= 2)");
    const std::int64_t n = std::int64_t(tokens.size());
    if (n < o.seqlen)
        return makeError(ErrorCode::InvalidArgument, "calibration text too short: " + std::to_string(n) +
                                                         " tokens, a window needs " + std::to_string(o.seqlen) +
                                                         " (use shorter windows or a longer text)");
    CalibrationSet set;
    set.seqlen = o.seqlen;
    set.count = o.nsamples;
    set.textTokens = n;
    set.ids.resize(std::size_t(o.nsamples) * std::size_t(o.seqlen));
    set.starts.resize(std::size_t(o.nsamples));
    std::mt19937_64 rng(o.seed);
    for (int i = 0; i < o.nsamples; ++i) {
        const auto start = std::int64_t(uniformUpTo(rng, std::uint64_t(n - o.seqlen)));
        set.starts[std::size_t(i)] = start;
        std::int32_t* dst = set.ids.data() + std::size_t(i) * std::size_t(o.seqlen);
        for (int t = 0; t < o.seqlen; ++t)
            dst[t] = tokens[std::size_t(start + t)];
        if (bos) dst[0] = *bos;
    }
    return set;
}

Result<CalibrationSet> buildCalibrationSet(const io::Tokenizer& tokenizer, std::string_view text,
                                           const CalibrationOptions& options, RunContext* ctx,
                                           const std::string& nameForErrors)
{
    if (ctx) ctx->beginStage("calibrate", 0, "tokenize " + nameForErrors);
    const std::vector<std::int32_t> tokens = tokenizer.encode(text, true);
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError("calibration");
    std::optional<std::int32_t> bos;
    if (tokenizer.addsBos()) bos = tokenizer.bosId();
    auto set = sampleCalibrationWindows(tokens, options, bos);
    if (!set.ok()) return set.error().withContext(nameForErrors);
    return set;
}

} // namespace qb::pipeline
