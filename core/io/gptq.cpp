// GPTQ checkpoints: bit packing, the quantization config with `dynamic` overrides, and packed
// modules turned into dequantize-on-demand weights (see gptq.h, FORMATS.md §5).

#include "io/gptq.h"

#include <QDir>
#include <QFile>
#include <QRegularExpression>

#include <algorithm>
#include <cmath>
#include <map>

namespace qb::io {

bool isGptqBits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

void packGptqStream(const std::uint32_t* values, std::size_t count, int bits, std::uint32_t* words)
{
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint64_t bit = std::uint64_t(bits) * i;
        const std::size_t w = std::size_t(bit / 32), off = std::size_t(bit % 32);
        words[w] |= values[i] << off;
        if (off + std::size_t(bits) > 32) words[w + 1] |= values[i] >> (32 - off);
    }
}

namespace {

std::uint32_t wordAt(const std::uint8_t* p)
{
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

} // namespace

std::uint32_t gptqStreamValue(const std::uint8_t* bytes, std::size_t strideWords, int bits, std::size_t index)
{
    const std::uint64_t bit = std::uint64_t(bits) * index;
    const std::size_t w = std::size_t(bit / 32), off = std::size_t(bit % 32);
    const std::uint32_t mask = (1u << bits) - 1;
    std::uint64_t v = wordAt(bytes + 4 * w * strideWords) >> off;
    if (off + std::size_t(bits) > 32) v |= std::uint64_t(wordAt(bytes + 4 * (w + 1) * strideWords)) << (32 - off);
    return std::uint32_t(v) & mask;
}

// ---- config ----

std::optional<GptqLayout> GptqConfig::layoutFor(const std::string& module) const
{
    const QString name = QString::fromStdString(module);
    for (const GptqDynamicRule& r : dynamic) {
        std::string pattern = r.key;
        if (pattern.starts_with("+:") || pattern.starts_with("-:")) pattern = pattern.substr(2);
        const QRegularExpression re(QString::fromStdString(pattern));
        if (!re.match(name, 0, QRegularExpression::NormalMatch, QRegularExpression::AnchorAtOffsetMatchOption)
                 .hasMatch())
            continue;
        if (r.exclude) return std::nullopt;
        GptqLayout l = base;
        l.bits = r.bits.value_or(l.bits);
        l.groupSize = r.groupSize.value_or(l.groupSize);
        l.descAct = r.descAct.value_or(l.descAct);
        l.sym = r.sym.value_or(l.sym);
        return l;
    }
    return base;
}

namespace {

Status readLayoutMembers(const JsonValue& o, const std::string& where, std::optional<int>& bits,
                         std::optional<int>& group, std::optional<bool>& descAct, std::optional<bool>& sym)
{
    if (const JsonValue* v = o.find("bits")) {
        if (!v->isInteger()) return makeError(ErrorCode::Format, "bits is not an integer", where);
        if (!isGptqBits(int(v->asInteger())))
            return makeError(ErrorCode::Unsupported,
                             "bits " + std::to_string(v->asInteger()) + ": GPTQ stores 2, 3, 4 or 8 bits", where);
        bits = int(v->asInteger());
    }
    if (const JsonValue* v = o.find("group_size")) {
        if (!v->isInteger() || v->asInteger() == 0 || v->asInteger() < -1)
            return makeError(ErrorCode::Format, "group_size must be a positive integer or -1", where);
        group = int(v->asInteger());
    }
    if (const JsonValue* v = o.find("desc_act"); v && v->isBool()) descAct = v->asBool();
    if (const JsonValue* v = o.find("sym"); v && v->isBool()) sym = v->asBool();
    return {};
}

} // namespace

Result<GptqConfig> parseGptqConfig(const JsonValue& qc, const std::string& name)
{
    if (!qc.isObject()) return makeError(ErrorCode::Format, "the GPTQ quantization config is not an object", name);
    GptqConfig c;
    std::optional<int> bits, group;
    std::optional<bool> descAct, sym;
    QB_TRY_STATUS(readLayoutMembers(qc, name, bits, group, descAct, sym));
    if (!bits) return makeError(ErrorCode::Format, "the GPTQ quantization config has no bits", name);
    c.base = {*bits, group.value_or(-1), descAct.value_or(false), sym.value_or(true)};
    const JsonValue* fmt = qc.find("checkpoint_format");
    if (!fmt) fmt = qc.find("format");
    if (fmt && fmt->isString()) {
        if (fmt->asString() == "gptq_v2") c.v2 = true;
        else if (fmt->asString() != "gptq")
            return makeError(ErrorCode::Unsupported,
                             "checkpoint_format \"" + fmt->asString() + "\" (gptq or gptq_v2 are read)", name);
    }
    if (const JsonValue* dyn = qc.find("dynamic"); dyn && !dyn->isNull()) {
        if (!dyn->isObject()) return makeError(ErrorCode::Format, "dynamic is not an object", name);
        for (const JsonMember& m : dyn->asObject()) {
            GptqDynamicRule r;
            r.key = m.key;
            r.exclude = m.key.starts_with("-:");
            const std::string where = name + ": dynamic \"" + m.key + "\"";
            const std::string pattern = m.key.starts_with("+:") || r.exclude ? m.key.substr(2) : m.key;
            const QRegularExpression re(QString::fromStdString(pattern));
            if (!re.isValid())
                return makeError(ErrorCode::Format, "not a valid regular expression: " + re.errorString().toStdString(),
                                 where);
            if (!m.value.isObject()) return makeError(ErrorCode::Format, "the override is not an object", where);
            QB_TRY_STATUS(readLayoutMembers(m.value, where, r.bits, r.groupSize, r.descAct, r.sym));
            c.dynamic.push_back(std::move(r));
        }
    }
    return c;
}

Result<std::optional<GptqConfig>> readGptqConfig(const std::string& dir)
{
    auto readJson = [](const QString& path) -> Result<std::optional<JsonValue>> {
        QFile f(path);
        if (!f.exists()) return std::optional<JsonValue>();
        if (!f.open(QIODevice::ReadOnly))
            return makeError(ErrorCode::Io, "cannot read: " + f.errorString().toStdString(), path.toStdString());
        const QByteArray b = f.readAll();
        QB_TRY(j, parseJson(std::string_view(b.constData(), std::size_t(b.size())), path.toStdString()));
        return std::optional<JsonValue>(std::move(*j));
    };
    auto isGptq = [](const JsonValue& qc) {
        const JsonValue* m = qc.find("quant_method");
        return m && m->isString() && m->asString() == "gptq";
    };
    const QDir d(QString::fromStdString(dir));
    QB_TRY(config, readJson(d.filePath("config.json")));
    if (*config)
        if (const JsonValue* qc = (*config)->find("quantization_config"); qc && isGptq(*qc)) {
            QB_TRY(c, parseGptqConfig(*qc, d.filePath("config.json").toStdString() + ": quantization_config"));
            return std::optional<GptqConfig>(std::move(*c));
        }
    QB_TRY(qfile, readJson(d.filePath("quantize_config.json")));
    if (*qfile && (*qfile)->isObject() && (!(*qfile)->find("quant_method") || isGptq(**qfile))) {
        QB_TRY(c, parseGptqConfig(**qfile, d.filePath("quantize_config.json").toStdString()));
        return std::optional<GptqConfig>(std::move(*c));
    }
    return std::optional<GptqConfig>();
}

std::string gptqModulePattern(const std::string& module, bool exclude)
{
    return (exclude ? "-:^" : "+:^") + QRegularExpression::escape(QString::fromStdString(module)).toStdString() + "$";
}

// ---- packed modules ----

Status attachGptqModules(std::vector<TensorInfo>& tensors, const GptqConfig& config, const std::string& path)
{
    std::map<std::string, std::size_t> index;
    for (std::size_t i = 0; i < tensors.size(); ++i)
        index[tensors[i].name] = i;
    std::vector<char> consumed(tensors.size(), 0);
    std::vector<TensorInfo> weights;
    for (const auto& [name, i] : index) {
        if (!name.ends_with(".qweight")) continue;
        const std::string module = name.substr(0, name.size() - 8);
        const std::string where = path + ": module " + module;
        auto part = [&](const char* suffix) -> const TensorInfo* {
            auto it = index.find(module + suffix);
            if (it == index.end()) return nullptr;
            consumed[it->second] = 1;
            return &tensors[it->second];
        };
        const TensorInfo* qw = &tensors[i];
        consumed[i] = 1;
        const TensorInfo *qz = part(".qzeros"), *sc = part(".scales"), *gi = part(".g_idx");
        if (!qz || !sc)
            return makeError(ErrorCode::Format,
                             std::string(!sc ? "scales" : "qzeros") + " missing for the packed qweight", where);
        if (index.count(module + ".weight"))
            return makeError(ErrorCode::Format, "has both a weight and a packed qweight", where);
        const auto layout = config.layoutFor(module);
        if (!layout)
            return makeError(ErrorCode::Format, "is packed but a \"-:\" dynamic rule excludes it from quantization",
                             where);
        const int b = layout->bits;
        if (!isGptqBits(b))
            return makeError(ErrorCode::Unsupported, "bits " + std::to_string(b) + ": GPTQ stores 2, 3, 4 or 8 bits",
                             where);
        if (qw->dtype != DType::I32 || qz->dtype != DType::I32 || (gi && gi->dtype != DType::I32))
            return makeError(ErrorCode::Format, "qweight, qzeros and g_idx must be I32", where);
        if (sc->dtype != DType::F16 && sc->dtype != DType::BF16 && sc->dtype != DType::F32)
            return makeError(ErrorCode::Format,
                             std::string("scales are ") + dtypeName(sc->dtype) + ", not a float type", where);
        if (qw->shape.size() != 2 || qz->shape.size() != 2 || sc->shape.size() != 2 || (gi && gi->shape.size() != 1))
            return makeError(ErrorCode::Shape, "qweight, qzeros and scales must be 2-D and g_idx 1-D", where);
        const std::int64_t N = qw->shape[1], K = gi ? gi->shape[0] : qw->shape[0] * 32 / b, R = sc->shape[0];
        auto shapes = [&] {
            return " (qweight " + qw->shapeString() + ", qzeros " + qz->shapeString() + ", scales " +
                   sc->shapeString() + (gi ? ", g_idx " + gi->shapeString() : std::string()) + ", " +
                   std::to_string(b) + " bits)";
        };
        if (qw->shape[0] * 32 != K * b)
            return makeError(ErrorCode::Shape,
                             "qweight has " + std::to_string(qw->shape[0]) + " rows; " + std::to_string(K) +
                                 " inputs at " + std::to_string(b) + " bits need " + std::to_string(K * b / 32) +
                                 shapes(),
                             where);
        if (N * b % 32 != 0 || sc->shape[1] != N || qz->shape[0] != R || qz->shape[1] != N * b / 32)
            return makeError(ErrorCode::Shape, "shapes do not agree" + shapes(), where);
        const std::int64_t G = layout->groupSize > 0 ? layout->groupSize : K;
        if (!gi && R != (K + G - 1) / G)
            return makeError(ErrorCode::Shape,
                             "no g_idx and " + std::to_string(R) + " group rows for group_size " +
                                 std::to_string(layout->groupSize) + shapes(),
                             where);
        auto parts = std::make_shared<GptqParts>();
        parts->bits = b;
        parts->groupSize = layout->groupSize;
        parts->zeroOffset = config.v2 ? 0 : 1;
        parts->qweight = *qw;
        parts->qzeros = *qz;
        parts->scales = *sc;
        if (gi) parts->gIdx = *gi;
        TensorInfo w;
        w.name = module + ".weight";
        w.shape = {N, K};
        w.dtype = DType::F32;
        w.bytes = qw->bytes;
        w.sourceName = name;
        w.gptq = std::move(parts);
        weights.push_back(std::move(w));
    }
    std::vector<TensorInfo> kept;
    kept.reserve(tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i)
        if (!consumed[i]) kept.push_back(std::move(tensors[i]));
    for (TensorInfo& w : weights)
        kept.push_back(std::move(w));
    tensors = std::move(kept);
    return {};
}

Status dequantizeGptq(const TensorInfo& w, float* dst)
{
    const GptqParts& p = *w.gptq;
    const std::string where = w.bytes.path() + ": tensor " + w.sourceName;
    const std::int64_t N = w.shape[0], K = w.shape[1], R = p.scales.shape[0];
    const int b = p.bits;
    for (const TensorInfo* t : {&p.qweight, &p.qzeros, &p.scales, &p.gIdx}) {
        const std::uint64_t need = std::uint64_t(t->numel()) * dtypeSize(t->dtype);
        if (!t->shape.empty() && t->bytes.size() != need)
            return makeError(ErrorCode::Shape,
                             t->name + " holds " + std::to_string(t->bytes.size()) + " bytes, shape " +
                                 t->shapeString() + " needs " + std::to_string(need),
                             where);
    }
    std::vector<float> scales(std::size_t(R * N));
    QB_TRY_STATUS(convertToF32(p.scales.dtype, p.scales.bytes.data(), scales.data(), scales.size()));
    std::vector<float> zeros(scales.size()); // Z per group row and output, as float
    const std::size_t zCols = std::size_t(N) * std::size_t(b) / 32;
    for (std::int64_t r = 0; r < R; ++r)
        for (std::int64_t n = 0; n < N; ++n)
            zeros[std::size_t(r * N + n)] =
                float(gptqStreamValue(p.qzeros.bytes.data() + 4 * std::size_t(r) * zCols, 1, b, std::size_t(n)) +
                      std::uint32_t(p.zeroOffset));
    std::vector<std::int32_t> g(static_cast<std::size_t>(K));
    const std::int64_t G = p.groupSize > 0 ? p.groupSize : K;
    for (std::int64_t k = 0; k < K; ++k) {
        std::int64_t gk = k / G;
        if (!p.gIdx.shape.empty()) {
            gk = std::int32_t(wordAt(p.gIdx.bytes.data() + 4 * k));
            if (gk < 0 || gk >= R)
                return makeError(ErrorCode::Format,
                                 "g_idx[" + std::to_string(k) + "] = " + std::to_string(gk) + " is outside [0, " +
                                     std::to_string(R) + ") (byte offset " +
                                     std::to_string(p.gIdx.bytes.fileOffset() + 4 * std::uint64_t(k)) + ")",
                                 where);
        }
        g[std::size_t(k)] = std::int32_t(gk);
    }
    // Codes come column by column of qweight; rows of 32 inputs at a time keep reads sequential.
    const std::uint8_t* qw = p.qweight.bytes.data();
    for (std::int64_t n = 0; n < N; ++n) {
        float* row = dst + n * K;
        for (std::int64_t k = 0; k < K; ++k) {
            const std::size_t gi = std::size_t(g[std::size_t(k)]) * std::size_t(N) + std::size_t(n);
            const float q = float(gptqStreamValue(qw + 4 * std::size_t(n), std::size_t(N), b, std::size_t(k)));
            row[k] = scales[gi] * (q - zeros[gi]);
        }
    }
    return {};
}

} // namespace qb::io
