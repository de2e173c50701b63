#include "pipeline/model_loader.h"

#include "base/mapped_file.h"

#include <cstring>

#include <algorithm>
#include <cmath>

namespace qb::pipeline {

namespace {

// Counts NaN/Inf among n floats into the warnings under `name`.
void warnNonFinite(const std::string& name, std::int64_t nan, std::int64_t inf, std::int64_t n,
                   std::vector<LoadWarning>* warnings)
{
    if ((nan || inf) && warnings)
        warnings->push_back(
            {"non-finite", name,
             std::to_string(nan) + " NaN, " + std::to_string(inf) + " Inf of " + std::to_string(n) + " values"});
}

// Reads `name` into a float buffer of rows × cols (cols = 0: a vector of `rows`).
Status readInto(const io::Checkpoint& ck, const std::string& name, std::int64_t rows, std::int64_t cols, float* dst,
                std::vector<LoadWarning>* warnings)
{
    const TensorInfo* t = ck.find(name);
    if (!t) return makeError(ErrorCode::Format, "required tensor missing", name);
    const std::int64_t expected = cols > 0 ? rows * cols : rows;
    const bool shapeOk = cols > 0 ? (t->shape.size() == 2 && t->shape[0] == rows && t->shape[1] == cols)
                                  : (t->shape.size() == 1 && t->shape[0] == rows);
    if (!shapeOk || t->numel() != expected) {
        std::string want = "[";
        want += std::to_string(rows);
        if (cols > 0) want += ", " + std::to_string(cols);
        want += "]";
        return makeError(ErrorCode::Shape, "expected shape " + want + ", got " + t->shapeString(), name);
    }
    Status st = io::readTensorF32(*t, dst);
    if (!st.ok()) return st.error().withContext(name);
    std::int64_t nan = 0, inf = 0;
    for (std::int64_t i = 0; i < expected; ++i) {
        if (std::isnan(dst[i])) ++nan;
        else if (std::isinf(dst[i])) ++inf;
    }
    warnNonFinite(name, nan, inf, expected, warnings);
    return {};
}

// Rows [firstRow, firstRow + rows) of the [fusedRows or rows, cols] tensor `name` as a packed view
// (nullptr: no view, read it as F32), scanned for NaN/Inf as readInto does.
Result<PackedWeightPtr> packInto(const io::Checkpoint& ck, const std::string& name, std::int64_t tensorRows,
                                 std::int64_t firstRow, std::int64_t rows, std::int64_t cols,
                                 std::vector<LoadWarning>* warnings)
{
    const TensorInfo* t = ck.find(name);
    if (!t) return makeError(ErrorCode::Format, "required tensor missing", name);
    if (t->shape.size() != 2 || t->shape[0] != tensorRows || t->shape[1] != cols)
        return makeError(ErrorCode::Shape,
                         "expected shape [" + std::to_string(tensorRows) + ", " + std::to_string(cols) + "], got " +
                             t->shapeString(),
                         name);
    QB_TRY(p, io::packTensor(*t, firstRow, rows));
    if (!*p) return PackedWeightPtr{};
    // Decode it once in row blocks, in parallel: the scan readTensorF32's callers get.
    const PackedWeight& w = **p;
    const std::int64_t block = 64, blocks = (rows + block - 1) / block;
    std::int64_t nan = 0, inf = 0;
#pragma omp parallel reduction(+ : nan, inf)
    {
        std::vector<float> buf(std::size_t(block * cols));
#pragma omp for schedule(static)
        for (std::int64_t b = 0; b < blocks; ++b) {
            const std::int64_t r0 = b * block, n = std::min(block, rows - r0);
            w.decodeRows(r0, n, buf.data());
            for (std::int64_t i = 0; i < n * cols; ++i) {
                if (std::isnan(buf[std::size_t(i)])) ++nan;
                else if (std::isinf(buf[std::size_t(i)])) ++inf;
            }
        }
    }
    warnNonFinite(name, nan, inf, rows * cols, warnings);
    return p;
}

std::string layerPrefix(int l) { return "model.layers." + std::to_string(l) + "."; }

int tensorsPerLayer(const ModelConfig& c)
{
    int n = 2 + (c.fusedProjections ? 4 : 7);
    if (c.qkNorm) n += 2;
    if (c.gemmaNorms) n += 2;
    if (c.attentionBias) n += 3;
    if (c.attentionOutputBias) n += 1;
    if (c.mlpBias) n += 3;
    return n;
}

Status loadLayerInto(const io::Checkpoint& ck, int l, model::DecoderLayerWeights& w, std::vector<LoadWarning>* warnings,
                     RunContext* ctx, bool compact)
{
    const ModelConfig& c = ck.config;
    w.allocate(c);
    auto tick = [&]() -> Status {
        if (ctx) {
            ctx->advance();
            if (ctx->isCancelled()) return RunContext::cancelledError("loading " + layerPrefix(l));
        }
        return {};
    };
    const std::string p = layerPrefix(l);
    for (LayerNorm n : kAllLayerNorms) {
        const char* name = model::layerNormName(c, n);
        if (!name) continue;
        model::RowVector& v = model::layerNorm(w, n);
        QB_TRY_STATUS(readInto(ck, p + name + ".weight", v.size(), 0, v.data(), warnings));
        // Gemma's RMSNorm multiplies by (1 + w), computed in F32 as transformers does.
        if (c.gemmaNorms) v.array() += 1.0f;
        QB_TRY_STATUS(tick());
    }
    std::vector<float> fused;
    for (model::Linear lin : model::kAllLinears) {
        model::RowMatrix& m = w.weight(lin);
        const model::FusedSlice fs = model::fusedSlice(c, l, lin);
        PackedWeightPtr packed;
        if (compact) {
            QB_TRY(p, packInto(ck, fs.name, fs.fusedRows > 0 ? fs.fusedRows : m.rows(), fs.firstRow, m.rows(), m.cols(),
                               warnings));
            packed = std::move(*p);
        }
        if (packed) {
            m.resize(0, 0);
            w.packed[std::size_t(lin)] = std::move(packed);
            if (fs.fusedRows == 0 || fs.firstRow == 0) QB_TRY_STATUS(tick());
        } else if (fs.fusedRows > 0) {
            // Phi-3: read qkv_proj / gate_up_proj once (at its first part) and split the rows.
            if (fs.firstRow == 0) {
                fused.resize(std::size_t(fs.fusedRows * m.cols()));
                QB_TRY_STATUS(readInto(ck, fs.name, fs.fusedRows, m.cols(), fused.data(), warnings));
                QB_TRY_STATUS(tick());
            }
            std::copy_n(fused.data() + fs.firstRow * m.cols(), m.size(), m.data());
        } else {
            QB_TRY_STATUS(readInto(ck, model::tensorName(l, lin), m.rows(), m.cols(), m.data(), warnings));
            QB_TRY_STATUS(tick());
        }
        model::RowVector& b = w.bias(lin);
        if (b.size() > 0) {
            QB_TRY_STATUS(readInto(ck, model::tensorName(l, lin, true), b.size(), 0, b.data(), warnings));
            QB_TRY_STATUS(tick());
        }
    }
    return {};
}

// Every decoder layer into `m`, one progress unit per tensor.
Status loadLayers(const io::Checkpoint& ck, model::Model& m, std::vector<LoadWarning>* warnings, RunContext* ctx,
                  bool compact)
{
    for (int l = 0; l < m.numLayers(); ++l) {
        if (ctx) ctx->setDetail("layer " + std::to_string(l));
        auto w = std::make_shared<model::DecoderLayerWeights>();
        Status st = loadLayerInto(ck, l, *w, warnings, ctx, compact);
        if (!st.ok()) return st.error().code == ErrorCode::Cancelled ? st.error() : st.error().withContext(ck.path);
        m.setLayer(l, std::move(w));
    }
    return {};
}

} // namespace

Result<std::shared_ptr<model::DecoderLayerWeights>> loadDecoderLayer(const io::Checkpoint& ck, int layer,
                                                                     std::vector<LoadWarning>* warnings)
{
    if (layer < 0 || layer >= ck.config.numHiddenLayers)
        return makeError(ErrorCode::OutOfRange, "no decoder layer " + std::to_string(layer), ck.path);
    auto w = std::make_shared<model::DecoderLayerWeights>();
    Status st = loadLayerInto(ck, layer, *w, warnings, nullptr, false);
    if (!st.ok()) return st.error().withContext(ck.path);
    return w;
}

Result<std::shared_ptr<model::Model>> loadModel(const io::Checkpoint& ck, RunContext* ctx,
                                                std::vector<LoadWarning>* warnings, const LoadOptions& options)
{
    const ModelConfig& c = ck.config;
    QB_TRY_STATUS(model::checkConfig(c));
    auto m = std::make_shared<model::Model>(c);
    const int layers = options.loadLayers ? int(c.numHiddenLayers) : 0;
    const std::int64_t total = 2 + (c.tieWordEmbeddings ? 0 : 1) + std::int64_t(layers) * tensorsPerLayer(c);
    if (ctx) ctx->beginStage("load", total, ck.path);
    auto fail = [&](const Error& e) { return e.withContext(ck.path); };
    auto tick = [&]() -> Status {
        if (ctx) {
            ctx->advance();
            if (ctx->isCancelled()) return RunContext::cancelledError("loading " + ck.path);
        }
        return {};
    };
    // A [V, K] matrix into the model: packed when asked and possible, else F32.
    auto matrix = [&](const std::string& name, model::RowMatrix& dst, bool embedding) -> Status {
        if (options.compact) {
            auto p = packInto(ck, name, c.vocabSize, 0, c.vocabSize, c.hiddenSize, warnings);
            if (!p) return fail(p.error());
            if (*p) {
                if (embedding) m->setPackedEmbedding(std::move(*p));
                else m->setPackedLmHead(std::move(*p));
                return {};
            }
        }
        dst.resize(c.vocabSize, c.hiddenSize);
        Status st = readInto(ck, name, c.vocabSize, c.hiddenSize, dst.data(), warnings);
        if (!st.ok()) return fail(st.error());
        return {};
    };
    try {
        QB_TRY_STATUS(matrix("model.embed_tokens.weight", m->embedding(), true));
        QB_TRY_STATUS(tick());
        Status st;
        m->finalNorm().resize(c.hiddenSize);
        st = readInto(ck, "model.norm.weight", c.hiddenSize, 0, m->finalNorm().data(), warnings);
        if (!st.ok()) return fail(st.error());
        if (c.gemmaNorms) m->finalNorm().array() += 1.0f;
        QB_TRY_STATUS(tick());
        if (!c.tieWordEmbeddings) {
            QB_TRY_STATUS(matrix("lm_head.weight", m->lmHeadOwned(), false));
            QB_TRY_STATUS(tick());
        }
        if (layers > 0) QB_TRY_STATUS(loadLayers(ck, *m, warnings, ctx, options.compact));
    } catch (const std::bad_alloc&) {
        return makeError(ErrorCode::OutOfMemory, "not enough memory for the F32 weights", ck.path);
    }
    return m;
}

Status loadDecoderLayers(const io::Checkpoint& ck, model::Model& model, RunContext* ctx,
                         std::vector<LoadWarning>* warnings, bool compact)
{
    if (model.numLayers() != ck.config.numHiddenLayers)
        return makeError(ErrorCode::Shape,
                         "the model has " + std::to_string(model.numLayers()) + " decoder layers, the checkpoint " +
                             std::to_string(ck.config.numHiddenLayers),
                         ck.path);
    if (ctx) ctx->beginStage("load", std::int64_t(model.numLayers()) * tensorsPerLayer(ck.config), ck.path);
    try {
        return loadLayers(ck, model, warnings, ctx, compact);
    } catch (const std::bad_alloc&) {
        return makeError(ErrorCode::OutOfMemory, "not enough memory for the F32 decoder layers", ck.path);
    }
}

Result<io::Checkpoint> checkpointOverModel(const io::Checkpoint& names, const model::Model& m)
{
    const ModelConfig& c = m.config();
    if (c.gemmaNorms || c.fusedProjections)
        return makeError(ErrorCode::Unsupported,
                         std::string("writing a transformed model is not supported for ") +
                             (c.gemmaNorms ? "Gemma's (1 + w) norms" : "Phi-3's fused projections"),
                         names.path);
    if (c.hiddenSize != names.config.hiddenSize || c.numHiddenLayers != names.config.numHiddenLayers ||
        c.vocabSize != names.config.vocabSize)
        return makeError(ErrorCode::Shape, "the model does not have the checkpoint's shape", names.path);
    QB_TRY_STATUS(m.validate());
    io::Checkpoint out = names;
    out.config.tieWordEmbeddings = c.tieWordEmbeddings;
    out.quantization.clear();
    out.tensors.clear();
    auto add = [&](const std::string& name, const float* data, std::vector<std::int64_t> shape) {
        TensorInfo t;
        t.name = name;
        t.shape = std::move(shape);
        t.dtype = DType::F32;
        const std::size_t bytes = std::size_t(t.numel()) * sizeof(float);
        std::vector<std::uint8_t> buf(bytes);
        std::memcpy(buf.data(), data, bytes);
        t.bytes = ByteRange(MappedFile::fromBytes(std::move(buf), "memory:" + name));
        out.tensors.push_back(std::move(t));
    };
    auto matrix = [&](const std::string& name, const model::RowMatrix& x, const PackedWeightPtr& packed = nullptr) {
        if (!packed) return add(name, x.data(), {x.rows(), x.cols()});
        const model::RowMatrix decoded = model::decodePacked(*packed);
        add(name, decoded.data(), {decoded.rows(), decoded.cols()});
    };
    auto vector = [&](const std::string& name, const model::RowVector& x) {
        if (x.size() > 0) add(name, x.data(), {x.size()});
    };
    matrix("model.embed_tokens.weight", m.embedding(), m.packedEmbedding());
    vector("model.norm.weight", m.finalNorm());
    if (!c.tieWordEmbeddings) matrix("lm_head.weight", m.lmHead(), m.packedLmHead());
    for (int l = 0; l < m.numLayers(); ++l) {
        const model::DecoderLayerWeights& w = *m.layer(l);
        const std::string prefix = "model.layers." + std::to_string(l) + ".";
        for (LayerNorm n :
             {LayerNorm::Input, LayerNorm::Post, LayerNorm::Q, LayerNorm::K, LayerNorm::AttnOut, LayerNorm::MlpOut})
            if (const char* name = layerNormName(c, n)) vector(prefix + name + ".weight", model::layerNorm(w, n));
        for (model::Linear lin : model::kAllLinears) {
            matrix(model::tensorName(l, lin), w.weight(lin), w.packedWeight(lin));
            vector(model::tensorName(l, lin, true), w.bias(lin));
        }
    }
    return out;
}

} // namespace qb::pipeline
