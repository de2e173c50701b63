#pragma once
// Shared helpers of the GGUF export tests: the demo model, exporting it, and evaluating a model
// file with our own reader + forward pass (perplexity of eval.txt, ctx 128, "all" scoring,
// no BOS: the golden convention of resources/demo).

#include "export/gguf_export.h"
#include "export/safetensors_export.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"
#include "pipeline/model_loader.h"
#include "pipeline/perplexity_job.h"

#include <QtGlobal>

#include <QDir>
#include <QFile>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace qbtest {

inline std::string demoDir() { return QB_DEMO_DIR; }
inline std::string demoEvalText() { return demoDir() + "/eval.txt"; }
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
    if (!ck) qFatal("demo model: %s (resources/demo/model.safetensors missing?)", ck.error().toString().c_str());
    return *ck;
}

// Perplexity of eval.txt (or textPath) for any model file our reader opens; NaN + message on failure.
// int8Products: the weights held as stored and GGUF Q4_0/Q8_0 products with 8-bit activations
// (model/int8_product.h), llama.cpp's arithmetic; else expanded to F32.
inline double ourPerplexity(const std::string& modelPath, std::string* error = nullptr, bool int8Products = false,
                            const std::string& textPath = demoEvalText())
{
    auto ck = qb::io::openCheckpoint(modelPath);
    if (!ck) {
        if (error) *error = ck.error().toString();
        return qQNaN();
    }
    qb::pipeline::LoadOptions lo;
    lo.compact = int8Products;
    auto m = qb::pipeline::loadModel(*ck, nullptr, nullptr, lo);
    if (!m) {
        if (error) *error = m.error().toString();
        return qQNaN();
    }
    auto text = qb::pipeline::readTextFile(textPath);
    if (!text) return qQNaN();
    qb::pipeline::PerplexityJobOptions o;
    o.ctx = kEvalCtx;
    o.int8Products = int8Products;
    auto r = qb::pipeline::runPerplexity(**m, demoTokenizer(), *text, o);
    if (!r) {
        if (error) *error = r.error().toString();
        return qQNaN();
    }
    return r->perplexity;
}

// The demo model widened so that every weight row is a multiple of 256 wide (K-quant
// super-blocks) while computing exactly the same function: hidden 128 -> 256 by duplicating the
// residual stream ([h, h] has the same RMS as h), heads 4 -> 8 and KV heads 2 -> 4 by duplicating
// heads (head_dim 32 and RoPE unchanged; GQA pairs copies with copies), intermediate 352 -> 512
// with zero rows/columns, inputs halved over the duplicated halves (exact: power of two). Same
// tokenizer, vocab 2048, 4 layers; a random model would not do, as its perplexity hardly depends
// on which values the weights decode to. Written as F32 safetensors + config.json + tokenizer
// files into `dir`. Returns "" on success, else the error.
inline std::string writeWidenedDemoModel(const std::string& dir)
{
    constexpr std::int64_t h0 = 128, h = 256, inter = 512; // demo: 128, 352
    QDir().mkpath(QString::fromStdString(dir));
    const qb::io::Checkpoint demo = demoCheckpoint();
    std::vector<qb::exporting::SafetensorsTensor> tensors;
    std::string error;
    auto put = [&](const std::string& name, std::vector<std::int64_t> shape, const std::vector<float>& v) {
        std::vector<std::uint8_t> bytes(v.size() * 4);
        std::memcpy(bytes.data(), v.data(), bytes.size());
        tensors.push_back(
            qb::exporting::safetensorsTensorFromBytes(name, qb::DType::F32, std::move(shape), std::move(bytes)));
    };
    for (const qb::TensorInfo& t : demo.tensors) {
        std::vector<float> w(static_cast<std::size_t>(t.numel()));
        if (auto st = qb::io::readTensorF32(t, w.data()); !st.ok()) return st.error().toString();
        const std::int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1, cols = t.shape.back();
        auto at = [&](std::int64_t r, std::int64_t c) { return w[std::size_t(r * cols + c)]; };
        // Output rows: dupRows -> [W; W], padRows -> zero rows up to `outRows`.
        // Input columns: dupCols -> [W/2, W/2], padCols -> zero columns up to `inCols`.
        auto build = [&](std::int64_t outRows, bool dupRows, std::int64_t inCols, bool dupCols) {
            std::vector<float> o(std::size_t(outRows * inCols), 0.0f);
            for (std::int64_t r = 0; r < outRows; ++r) {
                const std::int64_t sr = dupRows ? r % rows : r;
                if (sr >= rows) continue;
                for (std::int64_t c = 0; c < inCols; ++c) {
                    const std::int64_t sc = dupCols ? c % cols : c;
                    if (sc >= cols) continue;
                    o[std::size_t(r * inCols + c)] = dupCols ? at(sr, sc) * 0.5f : at(sr, sc);
                }
            }
            return o;
        };
        const std::string& n = t.name;
        auto has = [&n](const char* part) { return n.find(part) != std::string::npos; };
        if (t.shape.size() == 1) { // norms: duplicated
            std::vector<float> o(static_cast<std::size_t>(h));
            for (std::int64_t c = 0; c < h; ++c)
                o[std::size_t(c)] = w[std::size_t(c % h0)];
            put(n, {h}, o);
        } else if (n == "model.embed_tokens.weight") {
            std::vector<float> o(std::size_t(rows * h));
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t c = 0; c < h; ++c)
                    o[std::size_t(r * h + c)] = at(r, c % h0);
            put(n, {rows, h}, o);
        } else if (has("q_proj") || has("k_proj") || has("v_proj") || has("o_proj")) {
            put(n, {2 * rows, h}, build(2 * rows, true, h, true));
        } else if (has("gate_proj") || has("up_proj")) {
            put(n, {inter, h}, build(inter, false, h, true));
        } else if (has("down_proj")) {
            put(n, {h, inter}, build(h, true, inter, false));
        } else if (n == "lm_head.weight") {
            put(n, {rows, h}, build(rows, false, h, true));
        } else {
            return "unexpected demo tensor " + n;
        }
    }
    auto w = qb::exporting::writeSafetensorsFile(dir + "/model.safetensors", tensors);
    if (!w) return w.error().toString();
    const std::string config = R"({"architectures":["LlamaForCausalLM"],"model_type":"llama",)"
                               R"("bos_token_id":2047,"eos_token_id":2047,"head_dim":32,)"
                               R"("hidden_act":"silu","hidden_size":256,)"
                               R"("intermediate_size":512,"max_position_embeddings":512,)"
                               R"("num_attention_heads":8,"num_hidden_layers":4,)"
                               R"("num_key_value_heads":4,"rms_norm_eps":1e-05,)"
                               R"("rope_scaling":null,"rope_theta":10000.0,)"
                               R"("tie_word_embeddings":false,"torch_dtype":"float32",)"
                               R"("vocab_size":2048})";
    QFile c(QString::fromStdString(dir + "/config.json"));
    if (!c.open(QIODevice::WriteOnly) || c.write(config.data(), qint64(config.size())) < 0)
        return "cannot write config.json";
    c.close();
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
        const QString dst = QString::fromStdString(dir + "/" + f);
        QFile::remove(dst);
        if (!QFile::copy(QString::fromStdString(demoDir() + "/" + f), dst)) return std::string("cannot copy ") + f;
    }
    return {};
}

} // namespace qbtest
