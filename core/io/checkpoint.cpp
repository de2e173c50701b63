// openCheckpoint(): finds the files behind a path, dispatches to the container reader, checks the
// architecture's tensors, and readTensorF32() converts one tensor to f32 in HF layout.

#include "io/checkpoint.h"

#include "io/ggml_codec.h"
#include "io/gguf_names.h"
#include "io/gguf_reader.h"
#include "io/gptq.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "io/shard_index.h"
#include "io/torch_bin.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>

#include <algorithm>
#include <cstring>
#include <set>
#include <unordered_map>

namespace qb::io {

const char* checkpointFormatName(CheckpointFormat f)
{
    switch (f) {
    case CheckpointFormat::Safetensors: return "safetensors";
    case CheckpointFormat::PytorchBin: return "pytorch-bin";
    case CheckpointFormat::Gguf: return "gguf";
    }
    return "?";
}

const TensorInfo* Checkpoint::find(const std::string& name) const
{
    for (const TensorInfo& t : tensors)
        if (t.name == name) return &t;
    return nullptr;
}

namespace {

bool endsWith(const std::string& s, const std::string& suffix)
{
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The tensors the architecture reads, with their HF shapes.
std::vector<std::pair<std::string, std::vector<std::int64_t>>> expectedTensors(const ModelConfig& c)
{
    const std::int64_t K = c.hiddenSize, F = c.intermediateSize, V = c.vocabSize;
    const std::int64_t q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim;
    std::vector<std::pair<std::string, std::vector<std::int64_t>>> e;
    e.push_back({"model.embed_tokens.weight", {V, K}});
    for (std::int64_t l = 0; l < c.numHiddenLayers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        for (LayerNorm n : kAllLayerNorms)
            if (const char* name = layerNormName(c, n))
                e.push_back({p + name + ".weight", {n == LayerNorm::Q || n == LayerNorm::K ? c.headDim : K}});
        if (c.fusedProjections) {
            e.push_back({p + "self_attn.qkv_proj.weight", {q + 2 * kv, K}});
        } else {
            e.push_back({p + "self_attn.q_proj.weight", {q, K}});
            e.push_back({p + "self_attn.k_proj.weight", {kv, K}});
            e.push_back({p + "self_attn.v_proj.weight", {kv, K}});
        }
        e.push_back({p + "self_attn.o_proj.weight", {K, q}});
        if (c.attentionBias) {
            e.push_back({p + "self_attn.q_proj.bias", {q}});
            e.push_back({p + "self_attn.k_proj.bias", {kv}});
            e.push_back({p + "self_attn.v_proj.bias", {kv}});
        }
        if (c.attentionOutputBias) e.push_back({p + "self_attn.o_proj.bias", {K}});
        if (c.fusedProjections) {
            e.push_back({p + "mlp.gate_up_proj.weight", {2 * F, K}});
        } else {
            e.push_back({p + "mlp.gate_proj.weight", {F, K}});
            e.push_back({p + "mlp.up_proj.weight", {F, K}});
        }
        e.push_back({p + "mlp.down_proj.weight", {K, F}});
        if (c.mlpBias) {
            e.push_back({p + "mlp.gate_proj.bias", {F}});
            e.push_back({p + "mlp.up_proj.bias", {F}});
            e.push_back({p + "mlp.down_proj.bias", {K}});
        }
    }
    e.push_back({"model.norm.weight", {K}});
    if (!c.tieWordEmbeddings) e.push_back({"lm_head.weight", {V, K}});
    return e;
}

Status validateTensors(Checkpoint& ck)
{
    // Old .bin files carry RoPE inverse-frequency buffers; they are recomputed from the config.
    std::vector<TensorInfo> kept;
    kept.reserve(ck.tensors.size());
    std::size_t invFreq = 0;
    for (TensorInfo& t : ck.tensors) {
        if (endsWith(t.name, "rotary_emb.inv_freq")) {
            ++invFreq;
            continue;
        }
        kept.push_back(std::move(t));
    }
    ck.tensors = std::move(kept);
    if (invFreq)
        ck.warnings.push_back("ignored " + std::to_string(invFreq) +
                              " rotary_emb.inv_freq buffers (recomputed from the config)");

    std::unordered_map<std::string, const TensorInfo*> byName;
    for (const TensorInfo& t : ck.tensors) {
        if (!byName.emplace(t.name, &t).second)
            return makeError(ErrorCode::Format, "duplicate tensor " + t.name, ck.path);
    }
    std::set<std::string> expected;
    for (const auto& [name, shape] : expectedTensors(ck.config)) {
        expected.insert(name);
        const auto it = byName.find(name);
        if (it == byName.end())
            return makeError(ErrorCode::Shape,
                             "required tensor " + name + " is missing (expected shape " + shapeString(shape) + ")",
                             ck.path);
        if (it->second->shape != shape)
            return makeError(ErrorCode::Shape,
                             "tensor " + name + " has shape " + it->second->shapeString() + ", expected " +
                                 shapeString(shape),
                             ck.path);
    }
    std::size_t unused = 0;
    std::string first;
    for (const TensorInfo& t : ck.tensors) {
        if (expected.count(t.name) || t.name == "rope_freqs.weight") continue;
        if (t.name == "lm_head.weight") continue; // present although tied: harmless
        if (!unused++) first = t.name;
    }
    if (unused) ck.warnings.push_back(std::to_string(unused) + " unused tensor(s) ignored (first: " + first + ")");
    return {};
}

Status addFiles(Checkpoint& ck, const std::vector<std::string>& files)
{
    for (const std::string& f : files) {
        const QFileInfo fi(QString::fromStdString(f));
        ck.files.push_back(f);
        ck.fileBytes += std::uint64_t(fi.size());
    }
    return {};
}

Status openHf(Checkpoint& ck, const std::string& tensorsPath, CheckpointFormat format, bool sharded)
{
    const QDir dir = QFileInfo(QString::fromStdString(tensorsPath)).absoluteDir();
    QB_TRY(config, readHfConfig(dir.filePath("config.json").toStdString()));
    ck.config = std::move(*config);
    ck.format = format;
    if (format == CheckpointFormat::Safetensors) {
        if (sharded) {
            QB_TRY(st, readSafetensorsIndex(tensorsPath));
            ck.tensors = std::move(st->tensors);
            QB_TRY_STATUS(addFiles(ck, st->files));
        } else {
            QB_TRY(st, readSafetensorsFile(tensorsPath));
            ck.tensors = std::move(*st);
            QB_TRY_STATUS(addFiles(ck, {tensorsPath}));
        }
        // A GPTQ checkpoint: packed modules become weights dequantized when read (io/gptq.h).
        QB_TRY(gptq, readGptqConfig(dir.absolutePath().toStdString()));
        if (*gptq) {
            QB_TRY_STATUS(attachGptqModules(ck.tensors, **gptq, tensorsPath));
            const GptqLayout& b = (*gptq)->base;
            ck.quantization =
                "gptq " + std::to_string(b.bits) + "-bit, group " + std::to_string(b.groupSize) +
                (b.descAct ? ", act-order" : "") + (b.sym ? ", sym" : ", asym") +
                ((*gptq)->dynamic.empty() ? std::string()
                                          : ", " + std::to_string((*gptq)->dynamic.size()) + " per-module overrides");
        }
    } else {
        std::vector<std::string> shards{tensorsPath};
        if (sharded) {
            QB_TRY(index, readShardIndex(tensorsPath));
            shards = index->shards;
        }
        std::set<std::string> seen;
        for (const std::string& shard : shards) {
            QB_TRY(bin, readTorchBinFile(shard));
            for (TensorInfo& t : bin->tensors) {
                if (!seen.insert(t.name).second)
                    return makeError(ErrorCode::Format, "tensor appears in more than one shard",
                                     shard + ": tensor " + t.name);
                ck.tensors.push_back(std::move(t));
            }
            for (auto& w : bin->warnings)
                ck.warnings.push_back(shard + ": " + w);
        }
        QB_TRY_STATUS(addFiles(ck, shards));
    }
    return {};
}

bool hasGgufMagic(const QFileInfo& info)
{
    QFile f(info.absoluteFilePath());
    return info.isFile() && f.open(QIODevice::ReadOnly) && f.read(4) == "GGUF";
}

Status openGguf(Checkpoint& ck, const std::string& path)
{
    QB_TRY(file, readGgufFile(path));
    QB_TRY(config, ggufModelConfig(*file));
    ck.config = std::move(*config);
    ck.format = CheckpointFormat::Gguf;
    ck.tensors = ggufHfTensors(*file, ck.config);
    if (const GgufValue* m = file->find("tokenizer.ggml.model"); m && m->toString())
        ck.embeddedTokenizer = *m->toString();
    return addFiles(ck, {path});
}

} // namespace

Result<Checkpoint> openCheckpoint(const std::string& path)
{
    Checkpoint ck;
    ck.path = path;
    const QFileInfo info(QString::fromStdString(path));
    if (!info.exists()) return makeError(ErrorCode::Io, "no such file or directory", path);
    std::string target = info.absoluteFilePath().toStdString();
    Status st;
    if (info.isDir()) {
        const QDir dir(info.absoluteFilePath());
        auto has = [&](const char* name) { return dir.exists(name); };
        auto at = [&](const char* name) { return dir.filePath(name).toStdString(); };
        if (!has("config.json")) {
            const QStringList ggufs = dir.entryList({"*.gguf"}, QDir::Files, QDir::Name);
            if (ggufs.size() == 1) {
                st = openGguf(ck, dir.filePath(ggufs.front()).toStdString());
            } else {
                return makeError(ErrorCode::Io, "config.json not found in model directory", path);
            }
        } else if (has("model.safetensors.index.json")) {
            st = openHf(ck, at("model.safetensors.index.json"), CheckpointFormat::Safetensors, true);
        } else if (has("model.safetensors")) {
            st = openHf(ck, at("model.safetensors"), CheckpointFormat::Safetensors, false);
        } else if (has("pytorch_model.bin.index.json")) {
            st = openHf(ck, at("pytorch_model.bin.index.json"), CheckpointFormat::PytorchBin, true);
        } else if (has("pytorch_model.bin")) {
            st = openHf(ck, at("pytorch_model.bin"), CheckpointFormat::PytorchBin, false);
        } else {
            const QStringList sts = dir.entryList({"*.safetensors"}, QDir::Files, QDir::Name);
            if (sts.size() != 1)
                return makeError(ErrorCode::Io,
                                 "no model.safetensors, pytorch_model.bin or index file in the "
                                 "model directory",
                                 path);
            st = openHf(ck, dir.filePath(sts.front()).toStdString(), CheckpointFormat::Safetensors, false);
        }
    } else if (endsWith(target, ".gguf")) {
        st = openGguf(ck, target);
    } else if (endsWith(target, ".safetensors")) {
        st = openHf(ck, target, CheckpointFormat::Safetensors, false);
    } else if (endsWith(target, ".bin") || endsWith(target, ".pt") || endsWith(target, ".pth")) {
        st = openHf(ck, target, CheckpointFormat::PytorchBin, false);
    } else if (endsWith(target, ".safetensors.index.json")) {
        st = openHf(ck, target, CheckpointFormat::Safetensors, true);
    } else if (endsWith(target, ".bin.index.json")) {
        st = openHf(ck, target, CheckpointFormat::PytorchBin, true);
    } else if (endsWith(target, "config.json")) {
        return openCheckpoint(info.absolutePath().toStdString());
    } else if (hasGgufMagic(info)) { // a GGUF by content, whatever its name (e.g. a temporary file)
        st = openGguf(ck, target);
    } else {
        return makeError(ErrorCode::Unsupported,
                         "unrecognised checkpoint file (expected a directory, .safetensors, .bin, "
                         "an index .json or .gguf)",
                         path);
    }
    if (!st.ok()) return st.error();
    const QString dirPath = info.isDir() ? info.absoluteFilePath() : info.absolutePath();
    const QString tok = QDir(dirPath).filePath("tokenizer.json");
    if (QFileInfo::exists(tok)) ck.tokenizerPath = tok.toStdString();
    QB_TRY_STATUS(validateTensors(ck));
    return ck;
}

namespace {

// The stored bytes match the shape in t's encoding (ggml blocks or plain dtype); the message
// names the tensor as `where`.
Status checkStoredBytes(const TensorInfo& t, const std::string& where)
{
    const std::int64_t n = t.numel();
    if (t.ggmlType >= 0) {
        const auto* traits = ggmlTypeTraits(t.ggmlType);
        if (!traits) return makeError(ErrorCode::Unsupported, "unknown ggml type " + std::to_string(t.ggmlType), where);
        if (n % traits->blockSize != 0)
            return makeError(ErrorCode::Shape,
                             "shape " + t.shapeString() + " is not a whole number of " + traits->name + " blocks",
                             where);
        const std::uint64_t need = std::uint64_t(n / traits->blockSize) * traits->typeSize;
        if (t.bytes.size() != need)
            return makeError(ErrorCode::Shape,
                             "holds " + std::to_string(t.bytes.size()) + " bytes, " + traits->name + " shape " +
                                 t.shapeString() + " needs " + std::to_string(need),
                             where);
        return {};
    }
    const std::uint64_t need = std::uint64_t(n) * dtypeSize(t.dtype);
    if (t.bytes.size() != need)
        return makeError(ErrorCode::Shape,
                         "holds " + std::to_string(t.bytes.size()) + " bytes, " + dtypeName(t.dtype) + " shape " +
                             t.shapeString() + " needs " + std::to_string(need),
                         where);
    return {};
}

// The heads' rows a permutation moved: HF row r (within a head of d rows) is stored at
// GGUF row inverse[r] (FORMATS.md §2.4).
Result<std::vector<std::int64_t>> unpermutedRowOrder(const TensorInfo& t, const std::string& where)
{
    const std::int64_t rows = t.rows(), heads = t.permutedHeads;
    if (rows % heads != 0 || (rows / heads) % 2 != 0)
        return makeError(
            ErrorCode::Shape,
            std::to_string(rows) + " rows do not split into " + std::to_string(heads) + " heads of even size", where);
    const std::int64_t d = rows / heads;
    const std::vector<std::int64_t> perm = llamaRopePermutation(1, d);
    std::vector<std::int64_t> order(static_cast<std::size_t>(rows));
    for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t r = 0; r < d; ++r)
            order[std::size_t(h * d + perm[std::size_t(r)])] = h * d + r;
    return order;
}

} // namespace

Status readTensorF32(const TensorInfo& t, float* dst)
{
    const std::int64_t n = t.numel();
    const std::string where = t.bytes.path() + ": tensor " + t.name;
    if (t.gptq) {
        QB_TRY_STATUS(dequantizeGptq(t, dst));
    } else if (t.ggmlType >= 0) {
        QB_TRY_STATUS(checkStoredBytes(t, where));
        auto s = dequantizeGgml(t.ggmlType, t.bytes.data(), dst, n);
        if (!s.ok()) return s.error().withContext(where);
    } else {
        QB_TRY_STATUS(checkStoredBytes(t, where));
        auto s = convertToF32(t.dtype, t.bytes.data(), dst, std::size_t(n));
        if (!s.ok()) return s.error().withContext(where);
    }
    if (t.valueOffset != 0)
        for (std::int64_t i = 0; i < n; ++i)
            dst[i] += t.valueOffset;
    if (t.permutedHeads > 0 && n > 0) { // an empty tensor has no rows to move
        // Undo the llama.cpp export permutation (FORMATS.md §2.4, io/gguf_names.h). It stays
        // inside each head: gather one head at a time through a one-head buffer.
        QB_TRY(order, unpermutedRowOrder(t, where));
        const std::int64_t cols = t.cols(), d = t.rows() / t.permutedHeads;
        std::vector<float> head(std::size_t(d * cols));
        for (std::int64_t h = 0; h < t.permutedHeads; ++h) {
            float* base = dst + h * d * cols;
            std::memcpy(head.data(), base, head.size() * sizeof(float));
            for (std::int64_t r = 0; r < d; ++r)
                std::memcpy(base + r * cols, head.data() + ((*order)[std::size_t(h * d + r)] - h * d) * cols,
                            std::size_t(cols) * sizeof(float));
        }
    }
    return {};
}

Result<PackedWeightPtr> packTensor(const TensorInfo& t, std::int64_t firstRow, std::int64_t rows)
{
    if (t.gptq || t.valueOffset != 0 || t.shape.size() != 2) return PackedWeightPtr{};
    const std::string where = t.bytes.path() + ": tensor " + t.name;
    if (rows < 0) rows = t.rows() - firstRow;
    if (firstRow < 0 || rows < 0 || firstRow + rows > t.rows())
        return makeError(
            ErrorCode::OutOfRange,
            "rows " + std::to_string(firstRow) + "+" + std::to_string(rows) + " outside " + t.shapeString(), where);
    const GgmlTypeTraits* traits = t.ggmlType >= 0 ? ggmlTypeTraits(t.ggmlType) : nullptr;
    if (t.ggmlType >= 0 && (!traits || !traits->decode)) return PackedWeightPtr{};
    if (t.ggmlType < 0 && t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
        return PackedWeightPtr{};
    QB_TRY_STATUS(checkStoredBytes(t, where));
    const std::int64_t cols = t.cols();
    if (traits && cols % traits->blockSize != 0)
        return makeError(ErrorCode::Shape,
                         "rows of " + std::to_string(cols) + " values are not whole " + traits->name + " blocks",
                         where);
    const std::size_t rowBytes = traits ? std::size_t(cols / traits->blockSize) * std::size_t(traits->typeSize)
                                        : std::size_t(cols) * dtypeSize(t.dtype);
    std::vector<std::int64_t> order;
    if (t.permutedHeads > 0) {
        if (firstRow != 0 || rows != t.rows())
            return makeError(ErrorCode::Unsupported, "a row slice of a head-permuted tensor", where);
        QB_TRY(o, unpermutedRowOrder(t, where));
        order = std::move(*o);
    }
    QB_TRY(bytes, t.bytes.slice(std::uint64_t(firstRow) * rowBytes, std::uint64_t(rows) * rowBytes));
    PackedWeightPtr p = traits ? makeRowCodecWeight(std::move(*bytes), rows, cols, rowBytes, traits->decode,
                                                    traits->name, std::move(order))
                               : makeDTypeWeight(std::move(*bytes), t.dtype, rows, cols, std::move(order));
    if (!p) return makeError(ErrorCode::Format, "cannot view the stored rows", where);
    return p;
}

Result<Tokenizer> loadCheckpointTokenizer(const Checkpoint& ck)
{
    if (ck.tokenizerPath.empty() && !ck.embeddedTokenizer.empty() && ck.format == CheckpointFormat::Gguf &&
        !ck.files.empty()) {
        QB_TRY(file, readGgufFile(ck.files.front()));
        return Tokenizer::fromGguf(*file);
    }
    if (ck.tokenizerPath.empty()) {
        const QFileInfo info(QString::fromStdString(ck.path));
        const QString dir = info.isDir() ? info.absoluteFilePath() : info.absolutePath();
        return makeError(ErrorCode::InvalidArgument,
                         "the model has no tokenizer.json beside it (" + dir.toStdString() +
                             ") and embeds none: tokenizing text (calibration, evaluation, export) needs one",
                         ck.path);
    }
    return Tokenizer::fromFile(ck.tokenizerPath);
}

} // namespace qb::io
