#include "export/gguf_export.h"

#include "export/ggml_quantize.h"
#include "export/gguf_writer.h"
#include "io/gguf_names.h"
#include "quant/container_grid.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <numbers>
#include <regex>
#include <set>
#include <sstream>

namespace qb::exporting {

using io::GgmlType;

bool GgufExportReport::allExact() const
{
    for (const auto& t : tensors)
        if (!t.exact && t.source != "quantized") return false;
    return true;
}

std::string GgufExportReport::exactnessTable() const
{
    std::ostringstream o;
    o << "tensor                          type  source            exact  max|diff|\n";
    for (const auto& t : tensors) {
        char line[256];
        std::snprintf(line, sizeof line, "%-31s %-5s %-17s %-6s %.3g\n", t.name.c_str(), io::ggmlTypeName(int(t.type)),
                      t.source.c_str(), t.exact ? "yes" : "no", t.maxAbsDiff);
        o << line;
    }
    return o.str();
}

namespace {

struct Planned {
    const TensorInfo* source = nullptr; // nullptr: synthesized (rope_freqs)
    std::string gguf;
    std::vector<std::int64_t> hfShape;
    GgmlType type = GgmlType::F32;
    quant::StoredGridPtr grid; // unpacked where it is encoded
    std::string planned;       // the type asked for, "" when none in particular
    int permuteHeads = 0;      // > 0: apply the llama RoPE row permutation
    float addToValues = 0;     // Gemma norms: llama.cpp stores (1 + w)
    std::vector<float> synthesized;
};

// llama.cpp's fallback for K-quant tensors whose rows are not a multiple of 256.
std::optional<GgmlType> kquantRowFallback(GgmlType t)
{
    const quant::ContainerSpec* spec = quant::findContainerSpec(io::ggmlTypeName(int(t)));
    const quant::ContainerSpec* fb = spec ? quant::containerRowFallback(*spec) : nullptr;
    return fb ? io::parseGgmlType(fb->name) : std::nullopt;
}

// Canonical HF order: embeddings, layers in order (attention, then MLP), final norm, lm_head.
int layerOf(const std::string& hf)
{
    static const std::regex kLayer(R"(model\.layers\.(\d+)\..*)");
    std::smatch m;
    return std::regex_match(hf, m, kLayer) ? std::stoi(m[1].str()) : -1;
}

std::vector<float> llama3RopeFactors(const ModelConfig& c)
{
    const RopeScaling& rs = c.ropeScaling;
    const double lowWavelen = double(rs.originalMaxPositionEmbeddings) / rs.lowFreqFactor;
    const double highWavelen = double(rs.originalMaxPositionEmbeddings) / rs.highFreqFactor;
    std::vector<float> f;
    for (std::int64_t i = 0; i < c.headDim; i += 2) {
        const double freq = 1.0 / std::pow(c.ropeTheta, double(i) / double(c.headDim));
        const double wavelen = 2 * std::numbers::pi / freq;
        if (wavelen < highWavelen) f.push_back(1.0f);
        else if (wavelen > lowWavelen) f.push_back(float(rs.factor));
        else {
            const double smooth = (double(rs.originalMaxPositionEmbeddings) / wavelen - rs.lowFreqFactor) /
                                  (rs.highFreqFactor - rs.lowFreqFactor);
            f.push_back(float(1.0 / ((1 - smooth) / rs.factor + smooth)));
        }
    }
    return f;
}

Status addTokenizer(GgufWriter& w, const io::Tokenizer& tok, std::int64_t embedRows)
{
    std::vector<std::string> tokens = tok.vocabulary();
    std::vector<io::Tokenizer::TokenType> types = tok.tokenTypes();
    if (std::int64_t(tokens.size()) > embedRows)
        return makeError(ErrorCode::Shape,
                         "the tokenizer has " + std::to_string(tokens.size()) + " tokens but the embedding only " +
                             std::to_string(embedRows) + " rows",
                         tok.sourceName());
    while (std::int64_t(tokens.size()) < embedRows) {
        tokens.push_back("[PAD" + std::to_string(tokens.size()) + "]");
        types.push_back(io::Tokenizer::TokenType::Unused);
    }
    types.resize(tokens.size(), io::Tokenizer::TokenType::Unused);
    std::set<std::string> seen;
    for (const auto& t : tokens)
        if (!seen.insert(t).second)
            return makeError(ErrorCode::Format, "duplicate token string \"" + t + "\" (llama.cpp refuses it)",
                             tok.sourceName());
    std::vector<std::int32_t> typeIds(types.size());
    for (std::size_t i = 0; i < types.size(); ++i)
        typeIds[i] = std::int32_t(types[i]);

    const bool bpe = tok.kind() == io::Tokenizer::Kind::ByteLevelBpe;
    w.setString("tokenizer.ggml.model", bpe ? "gpt2" : "llama");
    w.setString("tokenizer.ggml.pre", bpe ? tok.ggmlPre() : "default");
    w.setStringArray("tokenizer.ggml.tokens", tokens);
    if (!bpe) {
        // SentencePiece merge priority as scores: -rank of the first merge producing a piece.
        std::map<std::string, float> score;
        const auto& merges = tok.mergePairs();
        for (std::size_t r = 0; r < merges.size(); ++r)
            score.emplace(merges[r].first + merges[r].second, -float(r));
        std::vector<float> scores(tokens.size(), 0.0f);
        for (std::size_t i = 0; i < tokens.size(); ++i)
            if (auto it = score.find(tokens[i]); it != score.end() && typeIds[i] == 1) scores[i] = it->second;
        w.setF32Array("tokenizer.ggml.scores", scores);
    }
    w.setI32Array("tokenizer.ggml.token_type", typeIds);
    if (bpe) w.setStringArray("tokenizer.ggml.merges", tok.merges());
    if (auto id = tok.bosId()) w.setU32("tokenizer.ggml.bos_token_id", std::uint32_t(*id));
    if (auto id = tok.eosId()) w.setU32("tokenizer.ggml.eos_token_id", std::uint32_t(*id));
    if (auto id = tok.unkId()) w.setU32("tokenizer.ggml.unknown_token_id", std::uint32_t(*id));
    if (auto id = tok.padId()) w.setU32("tokenizer.ggml.padding_token_id", std::uint32_t(*id));
    // Always explicit: llama.cpp's defaults depend on the pre-tokenizer (llama-bpe adds BOS).
    w.setBool("tokenizer.ggml.add_bos_token", tok.addsBos());
    w.setBool("tokenizer.ggml.add_eos_token", tok.addsEos());
    return {};
}

void addArchitecture(GgufWriter& w, const std::string& a, const ModelConfig& c, std::int64_t vocab)
{
    w.setU32(a + ".vocab_size", std::uint32_t(vocab));
    w.setU32(a + ".context_length", std::uint32_t(c.maxPositionEmbeddings));
    w.setU32(a + ".embedding_length", std::uint32_t(c.hiddenSize));
    w.setU32(a + ".block_count", std::uint32_t(c.numHiddenLayers));
    w.setU32(a + ".feed_forward_length", std::uint32_t(c.intermediateSize));
    w.setU32(a + ".attention.head_count", std::uint32_t(c.numAttentionHeads));
    w.setU32(a + ".attention.head_count_kv", std::uint32_t(c.numKeyValueHeads));
    w.setF32(a + ".attention.layer_norm_rms_epsilon", float(c.rmsNormEps));
    w.setF32(a + ".rope.freq_base", float(c.ropeTheta));
    w.setU32(a + ".rope.dimension_count", std::uint32_t(c.headDim));
    if (c.headDim * c.numAttentionHeads != c.hiddenSize || c.gemmaNorms) {
        w.setU32(a + ".attention.key_length", std::uint32_t(c.headDim));
        w.setU32(a + ".attention.value_length", std::uint32_t(c.headDim));
    }
    if (c.ropeScaling.type == "linear") {
        w.setString(a + ".rope.scaling.type", "linear");
        w.setF32(a + ".rope.scaling.factor", float(c.ropeScaling.factor));
    }
    if (c.architecture == Architecture::Gemma2) {
        w.setF32(a + ".attn_logit_softcapping", float(c.attnLogitSoftcap));
        w.setF32(a + ".final_logit_softcapping", float(c.finalLogitSoftcap));
    }
    if (c.architecture == Architecture::Gemma3 && c.ropeLocalTheta > 0)
        w.setF32(a + ".rope.freq_base_swa", float(c.ropeLocalTheta));
    if (c.slidingWindow > 0) {
        w.setU32(a + ".attention.sliding_window", std::uint32_t(c.slidingWindow));
        // One bool per layer (gguf-py add_sliding_window_pattern), unless every layer slides.
        if (std::find(c.slidingLayers.begin(), c.slidingLayers.end(), false) != c.slidingLayers.end()) {
            std::vector<bool> pattern(c.slidingLayers.begin(), c.slidingLayers.end());
            w.setBoolArray(a + ".attention.sliding_window_pattern", pattern);
        }
    }
}

// Reorders whole rows (rowBytes each) so that output row r takes input row perm[r].
std::vector<std::uint8_t> permuteRows(const std::vector<std::uint8_t>& in, std::size_t rowBytes,
                                      const std::vector<std::int64_t>& perm)
{
    std::vector<std::uint8_t> out(in.size());
    for (std::size_t r = 0; r < perm.size(); ++r)
        std::memcpy(out.data() + r * rowBytes, in.data() + std::size_t(perm[r]) * rowBytes, rowBytes);
    return out;
}

Result<std::vector<std::uint8_t>> produce(const Planned& p, const ModelConfig& c, TensorExactness& ex)
{
    const std::int64_t rows = p.hfShape.size() == 2 ? p.hfShape[0] : 1;
    const std::int64_t cols = p.hfShape.back();
    EncodedMatrix e;
    if (p.grid) {
        QB_TRY(g, encodeGridGgml(p.type, p.grid->unpack(true)));
        e = std::move(*g);
        ex.source = e.fromGrid ? "grid" : "grid-requantized";
    } else {
        std::vector<float> w;
        if (p.source) {
            w.resize(std::size_t(p.source->numel()));
            QB_TRY_STATUS(io::readTensorF32(*p.source, w.data()));
            if (p.addToValues != 0)
                for (float& x : w)
                    x += p.addToValues;
        } else {
            w = p.synthesized;
        }
        QB_TRY(m, encodeMatrixGgml(p.type, w.data(), rows, cols));
        e = std::move(*m);
        ex.source = io::ggmlTypeTraits(int(p.type))->isQuantized ? "quantized" : "weights";
    }
    ex.exact = e.exact;
    ex.maxAbsDiff = e.maxAbsDiff;
    if (p.permuteHeads > 0) {
        const auto perm = io::llamaRopePermutation(p.permuteHeads, c.headDim);
        const std::size_t total = p.hfShape.size() == 2 ? std::size_t(rows) : std::size_t(cols);
        if (perm.size() != total)
            return makeError(ErrorCode::Shape, "q/k rows " + std::to_string(total) + " != heads x head_dim");
        // 1-D biases permute elements (4-byte F32 "rows").
        const std::size_t rowBytes = p.hfShape.size() == 2 ? io::ggmlRowBytes(p.type, cols) : 4;
        return permuteRows(e.bytes, rowBytes, perm);
    }
    return std::move(e.bytes);
}

} // namespace

Result<GgufExportReport> exportGguf(const io::Checkpoint& ck, const io::Tokenizer& tok, const std::string& outPath,
                                    const GgufExportOptions& opt, RunContext* ctx)
{
    const ModelConfig& c = ck.config;
    if (!isGgufExportType(opt.weightType))
        return makeError(ErrorCode::Unsupported,
                         std::string("cannot export weights as ") + io::ggmlTypeName(int(opt.weightType)));
    if (c.ropeScaling.type != "" && c.ropeScaling.type != "llama3" && c.ropeScaling.type != "linear")
        return makeError(ErrorCode::Unsupported, "RoPE scaling \"" + c.ropeScaling.type + "\" is not exported",
                         ck.path);
    if (c.ropeScaling.type == "llama3" && io::ggufArchitectureName(c.architecture) != std::string("llama"))
        return makeError(ErrorCode::Unsupported,
                         "llama3 RoPE scaling is exported for arch llama only, not " + c.modelType, ck.path);
    if (c.headDim <= 0 || c.headDim % 2)
        return makeError(ErrorCode::Shape, "head_dim must be positive and even", ck.path);
    GgufExportReport report;
    report.path = outPath;
    report.architecture = io::ggufArchitectureName(c.architecture);
    const std::string& arch = report.architecture;
    const bool permute = arch == "llama";

    // Plan the tensors in canonical order.
    std::vector<const TensorInfo*> order;
    for (const TensorInfo& t : ck.tensors)
        order.push_back(&t);
    auto rank = [](const TensorInfo* t) {
        if (t->name == "model.embed_tokens.weight") return std::pair(-2, 0);
        if (t->name == "model.norm.weight") return std::pair(1 << 30, 0);
        if (t->name == "lm_head.weight") return std::pair(1 << 30, 1);
        return std::pair(layerOf(t->name), 0);
    };
    std::stable_sort(order.begin(), order.end(), [&](auto* a, auto* b) { return rank(a) < rank(b); });

    std::vector<Planned> plan;
    std::int64_t embedRows = 0;
    for (const TensorInfo* t : order) {
        if (t->name == "lm_head.weight" && c.tieWordEmbeddings) continue;
        Planned p;
        p.source = t;
        p.gguf = io::hfToGgufName(t->name, c.architecture);
        if (p.gguf.empty()) {
            report.warnings.push_back("not exported (llama.cpp has no place for it): " + t->name);
            continue;
        }
        p.hfShape = t->shape;
        if (t->name == "model.embed_tokens.weight") embedRows = t->rows();
        const bool isMatrix = t->shape.size() == 2;
        if (c.gemmaNorms && !isMatrix && t->name.size() > 11 &&
            t->name.compare(t->name.size() - 11, 11, "norm.weight") == 0)
            p.addToValues = 1.0f;
        if (permute && (t->name.find("self_attn.q_proj") != std::string::npos ||
                        t->name.find("self_attn.k_proj") != std::string::npos))
            p.permuteHeads =
                int(t->name.find("q_proj") != std::string::npos ? c.numAttentionHeads : c.numKeyValueHeads);
        p.grid = isMatrix && opt.gridFor ? opt.gridFor(t->name) : nullptr;
        if (p.grid && (p.grid->rows() != t->shape[0] || p.grid->cols() != t->shape[1]))
            return makeError(ErrorCode::Shape, "quantization grid shape does not match the tensor", t->name);
        const bool isEmbed = t->name == "model.embed_tokens.weight", isHead = t->name == "lm_head.weight";
        if (!isMatrix) {
            p.type = GgmlType::F32;
        } else if (auto it = opt.typeOverrides.find(t->name); it != opt.typeOverrides.end()) {
            p.type = it->second;
        } else if (p.grid && !p.grid->params().container.empty()) {
            const std::string& container = p.grid->params().container;
            const auto ct = io::parseGgmlType(container);
            if (!ct) return makeError(ErrorCode::Format, "unknown storage container " + container, t->name);
            p.type = *ct;
            p.planned = container;
        } else if (p.grid && p.grid->params().cmpq && !opt.planOnly) {
            // CMPQ: per-channel codebooks fit no GGUF block type; every value is F16, so the
            // nearest exact container is F16 (or the forced type, requantized, when one is given).
            p.type = opt.gridType ? *opt.gridType : GgmlType::F16;
            report.warnings.push_back(t->name + ": CMPQ per-channel codebooks cannot be stored in a GGUF block type; " +
                                      (opt.gridType && *opt.gridType != GgmlType::F16 && *opt.gridType != GgmlType::F32
                                           ? std::string("requantized to ") + io::ggmlTypeName(int(p.type)) +
                                                 " as asked (not exact; F16 is the nearest exact container)"
                                           : std::string("stored as ") + io::ggmlTypeName(int(p.type)) +
                                                 ", the nearest exact container (every CMPQ value is F16)") +
                                      "; the codes themselves stay in .qbproj");
        } else if (p.grid && opt.gridType) {
            p.type = *opt.gridType;
        } else if (p.grid && opt.planOnly) {
            p.type = GgmlType::F32; // the smallest exact type is only known from the data
        } else if (p.grid) {
            QB_TRY(best, encodeGridSmallestExact(p.grid->unpack(true)));
            p.type = best->first;
            if (p.type == GgmlType::F32)
                report.warnings.push_back(t->name +
                                          ": its grid fits no GGUF type exactly, so it is stored as F32 (quantize "
                                          "with a GGUF storage target to store it compactly and exactly)");
        } else if (isEmbed && opt.embedType) {
            p.type = *opt.embedType;
            p.planned = io::ggmlTypeName(int(p.type));
        } else if (isHead && opt.headType) {
            p.type = *opt.headType;
            p.planned = io::ggmlTypeName(int(p.type));
        } else {
            p.type = opt.weightType;
        }
        if (!isGgufExportType(p.type))
            return makeError(ErrorCode::Unsupported, std::string("cannot write type ") + io::ggmlTypeName(int(p.type)),
                             t->name);
        if (io::ggmlRowBytes(p.type, t->shape.back()) == 0) {
            if (const auto fb = kquantRowFallback(p.type); fb && io::ggmlRowBytes(*fb, t->shape.back()) != 0) {
                report.warnings.push_back(t->name + ": row length " + std::to_string(t->shape.back()) +
                                          " is not a multiple of the " + io::ggmlTypeName(int(p.type)) +
                                          " block size; written as " + io::ggmlTypeName(int(*fb)));
                p.type = *fb;
                plan.push_back(std::move(p));
                continue;
            }
            report.warnings.push_back(t->name + ": row length " + std::to_string(t->shape.back()) +
                                      " is not a multiple of the " + io::ggmlTypeName(int(p.type)) +
                                      " block size; written as F16");
            p.type = GgmlType::F16;
        }
        plan.push_back(std::move(p));
    }
    if (embedRows == 0) return makeError(ErrorCode::Format, "the checkpoint has no model.embed_tokens.weight", ck.path);
    if (c.ropeScaling.type == "llama3" && arch == "llama") {
        Planned p;
        p.gguf = "rope_freqs.weight";
        p.synthesized = llama3RopeFactors(c);
        p.hfShape = {std::int64_t(p.synthesized.size())};
        plan.insert(plan.begin() + 1, std::move(p));
    }

    // Metadata.
    GgufWriter w;
    w.setString("general.architecture", arch);
    w.setString("general.type", "model");
    std::string name = opt.modelName;
    if (name.empty()) {
        std::string p = ck.path;
        while (p.size() > 1 && p.back() == '/')
            p.pop_back();
        name = p.substr(p.find_last_of('/') + 1);
    }
    w.setString("general.name", name);
    w.setU32("general.alignment", kGgufAlignment);
    std::map<GgmlType, int> matrixTypes;
    bool quantized = false;
    for (const auto& p : plan)
        if (p.hfShape.size() == 2) {
            ++matrixTypes[p.type];
            quantized = quantized || io::ggmlTypeTraits(int(p.type))->isQuantized;
        }
    GgmlType dominant = GgmlType::F32;
    int most = 0;
    for (const auto& [t, n] : matrixTypes)
        if (n > most) most = n, dominant = t;
    w.setU32("general.file_type", llamaFileType(dominant));
    if (quantized) w.setU32("general.quantization_version", 2);
    addArchitecture(w, arch, c, embedRows);
    QB_TRY_STATUS(addTokenizer(w, tok, embedRows));

    report.tensors.resize(plan.size());
    std::vector<ExpectedTensor> expected;
    for (std::size_t i = 0; i < plan.size(); ++i) {
        const Planned& p = plan[i];
        TensorExactness& ex = report.tensors[i];
        ex.name = p.gguf;
        ex.hfName = p.source ? p.source->name : "";
        ex.type = p.type;
        ex.planned = p.planned;
        QB_TRY_STATUS(w.addTensor(p.gguf, p.hfShape, p.type, [&p, &c, &ex] { return produce(p, c, ex); }));
        ex.bytes = w.tensors().back().bytes;
        expected.push_back({p.gguf, std::vector<std::int64_t>(p.hfShape.rbegin(), p.hfShape.rend()), p.type});
    }

    if (opt.planOnly) {
        report.bytes = w.fileSize();
        return report;
    }
    GgufWriter::WriteOptions wo;
    wo.failAfterBytesForTesting = opt.failAfterBytesForTesting;
    if (opt.verify)
        wo.beforeCommit = [&](const std::string& temp) -> Status {
            QB_TRY(v, verifyGgufFile(temp, expected, ctx));
            report.verify = std::move(*v);
            report.verify.path = outPath;
            return report.verify.verificationStatus("GGUF", outPath);
        };
    QB_TRY_STATUS(w.write(outPath, ctx, wo));
    report.bytes = w.fileSize();
    return report;
}

} // namespace qb::exporting
