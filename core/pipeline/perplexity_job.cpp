#include "pipeline/perplexity_job.h"

#include "model/forward.h"

#include <fstream>
#include <iterator>
#include <sstream>

namespace qb::pipeline {

Result<eval::TokenWindows> textWindows(const io::Tokenizer& tokenizer, std::string_view text,
                                       const PerplexityJobOptions& options, RunContext* ctx)
{
    if (options.threads > 0) model::setNumThreads(options.threads);
    if (ctx) ctx->beginStage("tokenize", 0);
    const std::vector<std::int32_t> tokens = tokenizer.encode(text, true);
    std::optional<std::int32_t> bos;
    if (tokenizer.addsBos()) bos = tokenizer.bosId();
    QB_TRY(windows, eval::makeWindows(tokens, options.ctx, bos));
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError("perplexity");
    return std::move(*windows);
}

namespace {

eval::PerplexityOptions evalOptions(const PerplexityJobOptions& options)
{
    eval::PerplexityOptions po;
    po.mode = options.mode;
    po.batch = options.batch;
    return po;
}

} // namespace

Result<eval::PerplexityResult> runPerplexity(const model::Model& model, const io::Tokenizer& tokenizer,
                                             std::string_view text, const PerplexityJobOptions& options,
                                             RunContext* ctx)
{
    QB_TRY(windows, textWindows(tokenizer, text, options, ctx));
    return eval::evaluatePerplexity(model, *windows, evalOptions(options), ctx);
}

Result<eval::KlDivergenceResult> runKlDivergence(const model::Model& model, const model::Model& reference,
                                                 const io::Tokenizer& tokenizer, std::string_view text,
                                                 const PerplexityJobOptions& options, RunContext* ctx)
{
    QB_TRY(windows, textWindows(tokenizer, text, options, ctx));
    return eval::evaluateKlDivergence(model, reference, *windows, evalOptions(options), ctx);
}

Result<std::string> readTextFile(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) return makeError(ErrorCode::Io, "cannot open text file", path);
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) return makeError(ErrorCode::Io, "cannot read text file", path);
    return ss.str();
}

} // namespace qb::pipeline
