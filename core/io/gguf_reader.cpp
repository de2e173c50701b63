// GGUF reader (FORMATS.md §4).
//
// Layout, all little-endian, packed:
//   u32 magic "GGUF" | u32 version (2 or 3) | u64 tensor_count | u64 kv_count
//   kv_count x { string key | u32 value type | value }        string = u64 length + bytes
//   tensor_count x { string name | u32 n_dims | n_dims x u64 ne | u32 ggml type | u64 offset }
//   zero padding to ALIGNMENT (general.alignment, u32, default 32)
//   tensor data: tensor i at data_start + offset_i, each padded to ALIGNMENT
// ne[0] is the fastest dimension, so the HF shape is ne reversed. Arrays are u32 element type +
// u64 count + elements; nested arrays are refused, as llama.cpp does.

#include "io/gguf_reader.h"

#include "io/ggml_codec.h"

#include "base/mapped_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace qb::io {

const char* ggufValueTypeName(GgufValueType t)
{
    static const char* kNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                   "bool", "string", "array", "u64", "i64", "f64"};
    const auto i = std::uint32_t(t);
    return i < 13 ? kNames[i] : "?";
}

bool GgufValue::toInt(std::int64_t& out) const
{
    if (const auto* u = std::get_if<std::uint64_t>(&scalar)) out = std::int64_t(*u);
    else if (const auto* i = std::get_if<std::int64_t>(&scalar)) out = *i;
    else if (const auto* b = std::get_if<bool>(&scalar)) out = *b;
    else return false;
    return !isArray();
}

bool GgufValue::toDouble(double& out) const
{
    if (isArray()) return false;
    if (const auto* d = std::get_if<double>(&scalar)) {
        out = *d;
        return true;
    }
    std::int64_t i = 0;
    if (!toInt(i)) return false;
    out = double(i);
    return true;
}

const std::string* GgufValue::toString() const { return isArray() ? nullptr : std::get_if<std::string>(&scalar); }

std::string GgufValue::display() const
{
    if (isArray()) return std::string("[") + ggufValueTypeName(elementType) + " x " + std::to_string(arraySize()) + "]";
    if (const auto* u = std::get_if<std::uint64_t>(&scalar)) return std::to_string(*u);
    if (const auto* i = std::get_if<std::int64_t>(&scalar)) return std::to_string(*i);
    if (const auto* b = std::get_if<bool>(&scalar)) return *b ? "true" : "false";
    if (const auto* d = std::get_if<double>(&scalar)) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.9g", *d);
        return buf;
    }
    return std::get<std::string>(scalar);
}

const GgufValue* GgufFile::find(const std::string& key) const
{
    const auto it = metadataIndex.find(key);
    return it == metadataIndex.end() ? nullptr : &metadata[it->second].second;
}

std::string GgufFile::architecture() const
{
    const GgufValue* v = find("general.architecture");
    const std::string* s = v ? v->toString() : nullptr;
    return s ? *s : std::string();
}

namespace {

// "F32, F16, Q4_0, ..." : the types whose tensors can be read, from the codec's table.
std::string decodableTypeNames()
{
    std::string list;
    for (GgmlType t : ggmlTypes())
        if (ggmlTypeTraits(int(t))->decode) list += (list.empty() ? "" : ", ") + std::string(ggmlTypeName(int(t)));
    return list;
}

struct Parser {
    ByteCursor cur;
    std::string path;

    Error fail(const std::string& msg, std::uint64_t at) const
    {
        return makeError(ErrorCode::Format, msg, path + " at offset " + std::to_string(at));
    }
    Result<std::string> string()
    {
        const std::uint64_t at = cur.pos();
        QB_TRY(n, cur.read<std::uint64_t>());
        if (*n > cur.remaining())
            return makeError(ErrorCode::OutOfRange,
                             "string of " + std::to_string(*n) + " bytes runs past the end of the file",
                             path + " at offset " + std::to_string(at));
        return cur.readString(*n);
    }
    // One scalar of `type` into v.scalar, or appended to the array vectors when inArray.
    Status scalar(GgufValueType type, GgufValue& v, bool inArray)
    {
        auto put = [&](auto x) -> Status {
            using X = decltype(x);
            if (!inArray) {
                v.scalar = x;
            } else if constexpr (std::is_same_v<X, double>) {
                v.floats.push_back(x);
            } else if constexpr (std::is_same_v<X, std::string>) {
                v.strings.push_back(std::move(x));
            } else {
                v.ints.push_back(std::int64_t(x));
            }
            return {};
        };
#define QB_GGUF_READ(T, Cast)                                                                                          \
    {                                                                                                                  \
        QB_TRY(x, cur.read<T>());                                                                                      \
        return put(Cast(*x));                                                                                          \
    }
        switch (type) {
        case GgufValueType::UInt8: QB_GGUF_READ(std::uint8_t, std::uint64_t)
        case GgufValueType::Int8: QB_GGUF_READ(std::int8_t, std::int64_t)
        case GgufValueType::UInt16: QB_GGUF_READ(std::uint16_t, std::uint64_t)
        case GgufValueType::Int16: QB_GGUF_READ(std::int16_t, std::int64_t)
        case GgufValueType::UInt32: QB_GGUF_READ(std::uint32_t, std::uint64_t)
        case GgufValueType::Int32: QB_GGUF_READ(std::int32_t, std::int64_t)
        case GgufValueType::Float32: QB_GGUF_READ(float, double)
        case GgufValueType::Bool: QB_GGUF_READ(std::uint8_t, bool)
        case GgufValueType::UInt64: QB_GGUF_READ(std::uint64_t, std::uint64_t)
        case GgufValueType::Int64: QB_GGUF_READ(std::int64_t, std::int64_t)
        case GgufValueType::Float64: QB_GGUF_READ(double, double)
        case GgufValueType::String: {
            QB_TRY(s, string());
            return put(std::move(*s));
        }
        default: break;
        }
#undef QB_GGUF_READ
        return fail("unknown metadata value type " + std::to_string(std::uint32_t(type)), cur.pos());
    }
    Result<GgufValue> value(const std::string& key)
    {
        const std::uint64_t at = cur.pos();
        QB_TRY(t, cur.read<std::uint32_t>());
        GgufValue v;
        v.type = GgufValueType(*t);
        if (*t > 12) return fail("key " + key + " has unknown value type " + std::to_string(*t), at);
        if (v.type != GgufValueType::Array) {
            QB_TRY_STATUS(scalar(v.type, v, false));
            return v;
        }
        QB_TRY(et, cur.read<std::uint32_t>());
        QB_TRY(count, cur.read<std::uint64_t>());
        v.elementType = GgufValueType(*et);
        if (*et > 12 || v.elementType == GgufValueType::Array)
            return fail("key " + key + " is an array of unsupported element type " + std::to_string(*et), at);
        // Every element takes at least one byte: a count beyond the file is a corrupt header.
        if (*count > cur.remaining())
            return makeError(ErrorCode::OutOfRange,
                             "array of " + std::to_string(*count) + " elements runs past the end of the file",
                             path + ": key " + key + " at offset " + std::to_string(at));
        for (std::uint64_t i = 0; i < *count; ++i)
            QB_TRY_STATUS(scalar(v.elementType, v, true));
        return v;
    }
};

} // namespace

Result<GgufFile> readGgufFile(const std::string& path)
{
    QB_TRY(mapped, MappedFile::open(path));
    const ByteRange all(*mapped);
    Parser p{ByteCursor(all), path};
    GgufFile f;
    f.path = path;
    if (all.size() < 24)
        return makeError(ErrorCode::Format,
                         "file is " + std::to_string(all.size()) + " bytes, too short for a GGUF header", path);
    const std::uint32_t magic = *p.cur.read<std::uint32_t>();
    if (magic != 0x46554747u) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "0x%08x", magic);
        return makeError(ErrorCode::Format, std::string("bad magic ") + buf + " (expected \"GGUF\"): not a GGUF file",
                         path + " at offset 0");
    }
    f.version = *p.cur.read<std::uint32_t>();
    if (f.version != 2 && f.version != 3)
        return makeError(ErrorCode::Unsupported,
                         "unsupported GGUF version " + std::to_string(f.version) +
                             ((f.version & 0xFFFF) == 0 ? " (wrong byte order?)" : "") +
                             "; versions 2 and 3 are supported",
                         path + " at offset 4");
    const std::uint64_t tensorCount = *p.cur.read<std::uint64_t>();
    const std::uint64_t kvCount = *p.cur.read<std::uint64_t>();
    if (tensorCount > all.size() || kvCount > all.size())
        return p.fail("tensor count " + std::to_string(tensorCount) + " or key count " + std::to_string(kvCount) +
                          " exceeds the file size",
                      8);
    for (std::uint64_t i = 0; i < kvCount; ++i) {
        const std::uint64_t at = p.cur.pos();
        QB_TRY(key, p.string());
        if (f.metadataIndex.count(*key)) return p.fail("duplicate key " + *key, at);
        QB_TRY(v, p.value(*key));
        f.metadataIndex[*key] = f.metadata.size();
        f.metadata.emplace_back(std::move(*key), std::move(*v));
    }
    if (const GgufValue* a = f.find("general.alignment")) {
        std::int64_t al = 0;
        if (a->type != GgufValueType::UInt32 || !a->toInt(al) || al <= 0 || (al & (al - 1)) != 0)
            return makeError(ErrorCode::Format,
                             "general.alignment must be a u32 power of two, got " + a->display() + " (" +
                                 ggufValueTypeName(a->type) + ")",
                             path);
        f.alignment = std::uint64_t(al);
    }
    struct Raw {
        std::uint64_t offset;
        std::uint64_t bytes;
        std::uint64_t infoAt;
    };
    std::vector<Raw> raws;
    for (std::uint64_t i = 0; i < tensorCount; ++i) {
        const std::uint64_t at = p.cur.pos();
        QB_TRY(name, p.string());
        QB_TRY(nd, p.cur.read<std::uint32_t>());
        if (*nd == 0 || *nd > 4) return p.fail("tensor " + *name + " has " + std::to_string(*nd) + " dimensions", at);
        TensorInfo t;
        t.name = *name;
        t.sourceName = *name;
        std::uint64_t numel = 1;
        for (std::uint32_t d = 0; d < *nd; ++d) {
            QB_TRY(ne, p.cur.read<std::uint64_t>());
            if (*ne > (std::uint64_t(1) << 40) || (*ne && numel > (std::uint64_t(1) << 50) / *ne))
                return p.fail("tensor " + *name + " has an absurd dimension " + std::to_string(*ne), at);
            numel *= *ne;
            t.shape.insert(t.shape.begin(), std::int64_t(*ne));
        }
        QB_TRY(type, p.cur.read<std::uint32_t>());
        QB_TRY(offset, p.cur.read<std::uint64_t>());
        const GgmlTypeTraits* traits = ggmlTypeTraits(int(*type));
        if (!traits)
            return makeError(ErrorCode::Unsupported, "unknown ggml type id " + std::to_string(*type),
                             path + ": tensor " + *name);
        if (!traits->decode)
            return makeError(ErrorCode::Unsupported,
                             std::string("unsupported tensor type ") + traits->name +
                                 " (supported: " + decodableTypeNames() + ")",
                             path + ": tensor " + *name);
        if (t.shape.back() % traits->blockSize != 0)
            return makeError(ErrorCode::Shape,
                             "row length " + std::to_string(t.shape.back()) + " is not a multiple of the " +
                                 traits->name + " block size",
                             path + ": tensor " + *name);
        if (*offset % f.alignment != 0)
            return p.fail("tensor " + *name + " data offset " + std::to_string(*offset) +
                              " is not a multiple of the alignment " + std::to_string(f.alignment),
                          at);
        switch (GgmlType(*type)) {
        case GgmlType::F32: t.dtype = DType::F32; break;
        case GgmlType::F16: t.dtype = DType::F16; break;
        case GgmlType::BF16: t.dtype = DType::BF16; break;
        default:
            t.dtype = DType::F32;
            t.ggmlType = int(*type);
            break;
        }
        raws.push_back({*offset, numel / traits->blockSize * std::uint64_t(traits->typeSize), at});
        f.tensors.push_back(std::move(t));
    }
    const std::uint64_t infoEnd = p.cur.pos();
    f.dataOffset = (infoEnd + f.alignment - 1) / f.alignment * f.alignment;
    for (std::size_t i = 0; i < f.tensors.size(); ++i) {
        const Raw& r = raws[i];
        const std::uint64_t begin = f.dataOffset + r.offset;
        if (r.offset > all.size() || begin > all.size() || r.bytes > all.size() - begin)
            return makeError(ErrorCode::OutOfRange,
                             "tensor data [" + std::to_string(begin) + ", " + std::to_string(begin + r.bytes) +
                                 ") runs past the end of the file (size " + std::to_string(all.size()) +
                                 "): file truncated",
                             path + ": tensor " + f.tensors[i].name + " at offset " + std::to_string(begin));
        f.tensors[i].bytes = *all.slice(begin, r.bytes);
    }
    // Overlapping data would mean two tensors share bytes: a corrupt file.
    std::vector<std::size_t> order(f.tensors.size());
    for (std::size_t i = 0; i < order.size(); ++i)
        order[i] = i;
    std::sort(order.begin(), order.end(), [&](auto a, auto b) { return raws[a].offset < raws[b].offset; });
    for (std::size_t k = 1; k < order.size(); ++k) {
        const Raw& prev = raws[order[k - 1]];
        const Raw& cur = raws[order[k]];
        if (prev.offset + prev.bytes > cur.offset)
            return p.fail("tensor " + f.tensors[order[k]].name + " data overlaps tensor " +
                              f.tensors[order[k - 1]].name,
                          cur.infoAt);
    }
    return f;
}

Result<ModelConfig> ggufModelConfig(const GgufFile& file)
{
    const std::string arch = file.architecture();
    ModelConfig c;
    struct Known {
        const char* gguf;
        Architecture arch;
        const char* modelType;
    };
    static const Known kKnown[] = {
        {"llama", Architecture::Llama, "llama"},         {"qwen2", Architecture::Qwen2, "qwen2"},
        {"qwen3", Architecture::Qwen3, "qwen3"},         {"gemma2", Architecture::Gemma2, "gemma2"},
        {"gemma3", Architecture::Gemma3, "gemma3_text"}, {"phi3", Architecture::Phi3, "phi3"}};
    const Known* known = nullptr;
    for (const Known& k : kKnown)
        if (arch == k.gguf) known = &k;
    if (!known)
        return makeError(ErrorCode::Unsupported,
                         "unsupported architecture \"" + arch +
                             "\" (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3)",
                         file.path + " key \"general.architecture\"");
    c.architecture = known->arch;
    c.modelType = known->modelType;
    c.attentionBias = c.architecture == Architecture::Qwen2;
    const bool gemma = c.architecture == Architecture::Gemma2 || c.architecture == Architecture::Gemma3;
    c.gemmaNorms = gemma;
    c.qkNorm = c.architecture == Architecture::Qwen3 || c.architecture == Architecture::Gemma3;
    c.fusedProjections = c.architecture == Architecture::Phi3;
    c.hiddenAct = gemma ? HiddenAct::GeluTanh : HiddenAct::Silu;
    auto get = [&](const std::string& suffix, bool required, std::int64_t def) -> Result<std::int64_t> {
        const std::string key = arch + "." + suffix;
        const GgufValue* v = file.find(key);
        std::int64_t x = def;
        if (!v) {
            if (required)
                return makeError(ErrorCode::Format, "missing required key", file.path + " key \"" + key + "\"");
            return def;
        }
        if (v->isArray() && !v->ints.empty()) {
            // Per-layer arrays: accept when uniform.
            x = v->ints.front();
            for (auto e : v->ints)
                if (e != x)
                    return makeError(ErrorCode::Unsupported, "per-layer values differ",
                                     file.path + " key \"" + key + "\"");
        } else if (!v->toInt(x)) {
            return makeError(ErrorCode::Format, std::string("expected an integer, got ") + ggufValueTypeName(v->type),
                             file.path + " key \"" + key + "\"");
        }
        if (x <= 0)
            return makeError(ErrorCode::Format, "must be positive, got " + std::to_string(x),
                             file.path + " key \"" + key + "\"");
        return x;
    };
    auto getF = [&](const std::string& suffix, double def, bool required) -> Result<double> {
        const std::string key = arch + "." + suffix;
        const GgufValue* v = file.find(key);
        double x = def;
        if (!v) {
            if (required)
                return makeError(ErrorCode::Format, "missing required key", file.path + " key \"" + key + "\"");
            return def;
        }
        if (!v->toDouble(x) || !(x > 0))
            return makeError(ErrorCode::Format, "expected a positive number, got " + v->display(),
                             file.path + " key \"" + key + "\"");
        return x;
    };
    QB_TRY(ctx, get("context_length", false, 2048));
    QB_TRY(hidden, get("embedding_length", true, 0));
    QB_TRY(layers, get("block_count", true, 0));
    QB_TRY(ff, get("feed_forward_length", true, 0));
    QB_TRY(heads, get("attention.head_count", true, 0));
    QB_TRY(kv, get("attention.head_count_kv", false, *heads));
    QB_TRY(eps, getF("attention.layer_norm_rms_epsilon", 1e-5, true));
    QB_TRY(theta, getF("rope.freq_base", 10000.0, false));
    if (*hidden % *heads != 0 && !file.find(arch + ".attention.key_length"))
        return makeError(ErrorCode::Format, "embedding_length is not divisible by head_count", file.path);
    QB_TRY(headDim, get("attention.key_length", false, *hidden / *heads));
    if (*heads % *kv != 0)
        return makeError(ErrorCode::Format, "head_count is not a multiple of head_count_kv", file.path);
    c.maxPositionEmbeddings = *ctx;
    c.hiddenSize = *hidden;
    c.numHiddenLayers = *layers;
    c.intermediateSize = *ff;
    c.numAttentionHeads = *heads;
    c.numKeyValueHeads = *kv;
    c.rmsNormEps = *eps;
    c.ropeTheta = *theta;
    c.headDim = *headDim;
    if (const GgufValue* st = file.find(arch + ".rope.scaling.type")) {
        const std::string* s = st->toString();
        if (s && *s == "linear") {
            QB_TRY(factor, getF("rope.scaling.factor", 1.0, true));
            c.ropeScaling.type = "linear";
            c.ropeScaling.factor = *factor;
        } else if (s && *s != "none") {
            return makeError(ErrorCode::Unsupported, "unsupported RoPE scaling \"" + *s + "\" (none or linear)",
                             file.path + " key \"" + arch + ".rope.scaling.type\"");
        }
    }
    // Gemma: llama.cpp scales queries by 1/sqrt(head_dim), except the 27B models
    // (query_pre_attn_scalar = hidden / heads there), and defaults Gemma 2's soft-caps to 50/30.
    if (gemma) {
        const bool is27B = (c.architecture == Architecture::Gemma2 && c.numHiddenLayers == 46) ||
                           (c.architecture == Architecture::Gemma3 && c.numHiddenLayers == 62);
        c.queryPreAttnScalar = is27B ? double(c.hiddenSize / c.numAttentionHeads) : double(c.headDim);
        if (c.architecture == Architecture::Gemma2) {
            QB_TRY(acap, getF("attn_logit_softcapping", 50.0, false));
            QB_TRY(fcap, getF("final_logit_softcapping", 30.0, false));
            c.attnLogitSoftcap = *acap;
            c.finalLogitSoftcap = *fcap;
        } else {
            QB_TRY(local, getF("rope.freq_base_swa", 10000.0, false));
            c.ropeLocalTheta = *local;
        }
    }
    // Sliding-window attention: the window, and which layers use it (sliding_window_pattern: a
    // period n, layers with (i + 1) % n != 0 slide, or one bool per layer; without it llama.cpp's
    // defaults: Gemma 2 every other layer, Gemma 3 five in six, all layers otherwise).
    if (const GgufValue* sw = file.find(arch + ".attention.sliding_window")) {
        std::int64_t window = 0;
        if (!sw->toInt(window) || window < 0)
            return makeError(ErrorCode::Format, "expected a non-negative integer, got " + sw->display(),
                             file.path + " key \"" + arch + ".attention.sliding_window\"");
        if (window > 0) {
            std::int64_t period = c.architecture == Architecture::Gemma2   ? 2
                                  : c.architecture == Architecture::Gemma3 ? 6
                                                                           : 0;
            std::vector<bool> layersSliding(std::size_t(c.numHiddenLayers), true);
            const std::string patternKey = arch + ".attention.sliding_window_pattern";
            if (const GgufValue* pat = file.find(patternKey)) {
                if (pat->isArray()) {
                    if (std::int64_t(pat->ints.size()) != c.numHiddenLayers)
                        return makeError(ErrorCode::Format, "expected one entry per layer",
                                         file.path + " key \"" + patternKey + "\"");
                    for (std::size_t i = 0; i < layersSliding.size(); ++i)
                        layersSliding[i] = pat->ints[i] != 0;
                    period = 0;
                } else if (!pat->toInt(period) || period < 0) {
                    return makeError(ErrorCode::Format, "expected a period or one bool per layer",
                                     file.path + " key \"" + patternKey + "\"");
                }
            }
            if (period > 0)
                for (std::size_t i = 0; i < layersSliding.size(); ++i)
                    layersSliding[i] = (std::int64_t(i) + 1) % period != 0;
            c.slidingWindow = window;
            c.slidingLayers = std::move(layersSliding);
        }
    }
    // Vocabulary: token_embd rows are authoritative; the token list is the fallback.
    for (const TensorInfo& t : file.tensors)
        if (t.name == "token_embd.weight" && t.shape.size() == 2) c.vocabSize = t.shape[0];
    if (c.vocabSize == 0)
        if (const GgufValue* toks = file.find("tokenizer.ggml.tokens")) c.vocabSize = std::int64_t(toks->arraySize());
    c.tieWordEmbeddings = std::none_of(file.tensors.begin(), file.tensors.end(),
                                       [](const TensorInfo& t) { return t.name == "output.weight"; });
    if (arch == "llama")
        for (const TensorInfo& t : file.tensors) {
            const std::string& n = t.name;
            if (n.find(".attn_q.bias") != std::string::npos) c.attentionBias = true;
            if (n.find(".attn_output.bias") != std::string::npos) c.attentionOutputBias = true;
            if (n.find(".ffn_up.bias") != std::string::npos) c.mlpBias = true;
        }
    std::int64_t id = -1;
    if (const GgufValue* v = file.find("tokenizer.ggml.bos_token_id"); v && v->toInt(id)) c.bosTokenId = id;
    if (const GgufValue* v = file.find("tokenizer.ggml.eos_token_id"); v && v->toInt(id)) c.eosTokenId = id;
    if (const GgufValue* v = file.find("general.file_type")) c.torchDtype = "gguf file_type " + v->display();
    QB_TRY_STATUS(validateModelConfig(c, file.path, ConfigSpelling::Gguf));
    return c;
}

std::vector<TensorInfo> ggufHfTensors(const GgufFile& file, const ModelConfig& config)
{
    // convert_hf_to_gguf permutes q/k rows only for arch llama (and Mistral, written as llama).
    const bool permute = config.architecture == Architecture::Llama || config.architecture == Architecture::Mistral;
    std::vector<TensorInfo> out;
    out.reserve(file.tensors.size());
    for (TensorInfo t : file.tensors) {
        const std::string hf = ggufToHfName(t.sourceName, config.architecture);
        if (!hf.empty()) t.name = hf;
        if (config.gemmaNorms && hf.size() > 11 && hf.compare(hf.size() - 11, 11, "norm.weight") == 0)
            t.valueOffset = -1.0f;
        if (permute && hf.find("self_attn.q_proj") != std::string::npos)
            t.permutedHeads = int(config.numAttentionHeads);
        if (permute && hf.find("self_attn.k_proj") != std::string::npos) t.permutedHeads = int(config.numKeyValueHeads);
        out.push_back(std::move(t));
    }
    return out;
}

} // namespace qb::io
