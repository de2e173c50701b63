#pragma once
// Shared helpers of the GGUF export tests: the demo model, exporting it, and evaluating a model
// file with our own reader + forward pass (perplexity of eval.txt, ctx 128, "all" scoring,
// no BOS: the golden convention of resources/demo).

#include "export/gguf_export.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"
#include "pipeline/model_loader.h"
#include "pipeline/perplexity_job.h"

#include <QtGlobal>

#include <string>

namespace qbtest {

inline std::string demoDir()
{
    return QB_DEMO_DIR;
}
inline std::string demoEvalText()
{
    return demoDir() + "/eval.txt";
}
inline constexpr int kEvalCtx = 128;

inline qb::io::Tokenizer demoTokenizer()
{
    auto t = qb::io::Tokenizer::fromFile(demoDir() + "/tokenizer.json");
    if (!t) qFatal("demo tokenizer: %s", t.error().toString().c_str());
    return *t;
}

inline qb::io::Checkpoint demoCheckpoint()
{
    auto ck = qb::io::openCheckpoint(demoDir());
    if (!ck)
        qFatal("demo model: %s (resources/demo/model.safetensors missing?)",
               ck.error().toString().c_str());
    return *ck;
}

// Perplexity of eval.txt for any model file our reader opens; NaN + message on failure.
inline double ourPerplexity(const std::string& modelPath, std::string* error = nullptr)
{
    auto ck = qb::io::openCheckpoint(modelPath);
    if (!ck) {
        if (error) *error = ck.error().toString();
        return qQNaN();
    }
    auto m = qb::pipeline::loadModel(*ck);
    if (!m) {
        if (error) *error = m.error().toString();
        return qQNaN();
    }
    auto text = qb::pipeline::readTextFile(demoEvalText());
    if (!text) return qQNaN();
    qb::pipeline::PerplexityJobOptions o;
    o.ctx = kEvalCtx;
    auto r = qb::pipeline::runPerplexity(**m, demoTokenizer(), *text, o);
    if (!r) {
        if (error) *error = r.error().toString();
        return qQNaN();
    }
    return r->perplexity;
}

} // namespace qbtest
