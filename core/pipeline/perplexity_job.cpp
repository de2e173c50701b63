#include "pipeline/perplexity_job.h"

#include "model/forward.h"
#include "model/int8_product.h"

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

// `model` itself (not owned), or its copy with integer products when the options ask for them.
std::shared_ptr<const model::Model> withOptionalInt8(const model::Model& model, const PerplexityJobOptions& options,
                                                     int* wrapped = nullptr)
{
    std::shared_ptr<const model::Model> view(&model, [](const model::Model*) {});
    return options.int8Products ? model::withInt8Products(view, wrapped) : view;
}

} // namespace

Result<eval::PerplexityResult> runPerplexity(const model::Model& model, const io::Tokenizer& tokenizer,
                                             std::string_view text, const PerplexityJobOptions& options,
                                             RunContext* ctx)
{
    QB_TRY(windows, textWindows(tokenizer, text, options, ctx));
    int wrapped = 0;
    const auto m = withOptionalInt8(model, options, &wrapped);
    QB_TRY(r, eval::evaluatePerplexity(*m, *windows, evalOptions(options), ctx));
    r->int8Weights = wrapped;
    return std::move(*r);
}

Result<eval::KlDivergenceResult> runKlDivergence(const model::Model& model, const model::Model& reference,
                                                 const io::Tokenizer& tokenizer, std::string_view text,
                                                 const PerplexityJobOptions& options, RunContext* ctx)
{
    QB_TRY(windows, textWindows(tokenizer, text, options, ctx));
    int wrapped = 0;
    const auto m = withOptionalInt8(model, options, &wrapped), ref = withOptionalInt8(reference, options);
    QB_TRY(r, eval::evaluateKlDivergence(*m, *ref, *windows, evalOptions(options), ctx));
    r->perplexity.int8Weights = wrapped;
    return std::move(*r);
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
