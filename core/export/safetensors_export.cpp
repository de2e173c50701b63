#include "export/safetensors_export.h"

#include "export/atomic_file.h"
#include "export/hf_directory.h"
#include "io/json_value.h"
#include "io/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>

namespace qb::exporting {

std::uint64_t SafetensorsTensor::byteSize() const
{
    std::uint64_t n = dtypeSize(dtype);
    for (auto d : shape)
        n *= std::uint64_t(d);
    return n;
}

int safetensorsDtypeRank(DType t)
{
    // safetensors Dtype enum: BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16,
    // U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64.
    switch (t) {
    case DType::Bool: return 0;
    case DType::U8: return 4;
    case DType::I8: return 5;
    case DType::I16: return 9;
    case DType::F16: return 11;
    case DType::BF16: return 12;
    case DType::I32: return 13;
    case DType::F32: return 15;
    case DType::F64: return 17;
    case DType::I64: return 18;
    }
    return 0;
}

std::vector<std::size_t> safetensorsOrder(const std::vector<SafetensorsTensor>& t)
{
    std::vector<std::size_t> order(t.size());
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        const int ra = safetensorsDtypeRank(t[a].dtype), rb = safetensorsDtypeRank(t[b].dtype);
        return ra != rb ? ra > rb : t[a].name < t[b].name;
    });
    return order;
}

std::string safetensorsHeader(const std::vector<SafetensorsTensor>& t, const std::vector<std::size_t>& order,
                              const std::map<std::string, std::string>& metadata)
{
    io::JsonValue h = io::JsonObject{};
    if (!metadata.empty()) {
        io::JsonValue m = io::JsonObject{};
        for (const auto& [k, v] : metadata)
            m.set(k, v);
        h.set("__metadata__", std::move(m));
    }
    std::uint64_t off = 0;
    for (std::size_t i : order) {
        io::JsonValue e;
        e.set("dtype", dtypeName(t[i].dtype));
        io::JsonArray shape;
        for (auto d : t[i].shape)
            shape.push_back(io::JsonValue(d));
        e.set("shape", std::move(shape));
        const std::uint64_t end = off + t[i].byteSize();
        e.set("data_offsets", io::JsonArray{io::JsonValue(double(off)), io::JsonValue(double(end))});
        off = end;
        h.set(t[i].name, std::move(e));
    }
    std::string json = io::toJsonText(h, -1);
    json.append((8 - json.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    const std::uint64_t n = json.size();
    for (int b = 0; b < 8; ++b)
        out[std::size_t(b)] = char((n >> (8 * b)) & 0xff);
    return out + json;
}

namespace {

template <typename Sink>
Status streamSafetensors(const std::vector<SafetensorsTensor>& tensors, const std::map<std::string, std::string>& meta,
                         Sink&& sink, RunContext* ctx)
{
    std::set<std::string> names;
    for (const auto& t : tensors)
        if (!names.insert(t.name).second || t.name == "__metadata__")
            return makeError(ErrorCode::InvalidArgument, "duplicate or reserved tensor name", t.name);
    const auto order = safetensorsOrder(tensors);
    const std::string header = safetensorsHeader(tensors, order, meta);
    QB_TRY_STATUS(sink(header.data(), header.size()));
    if (ctx) ctx->beginStage("write", std::int64_t(order.size()));
    for (std::size_t i : order) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError(tensors[i].name);
        QB_TRY(bytes, tensors[i].produce());
        if (bytes->size() != tensors[i].byteSize())
            return makeError(ErrorCode::Internal,
                             "produced " + std::to_string(bytes->size()) + " bytes, expected " +
                                 std::to_string(tensors[i].byteSize()),
                             tensors[i].name);
        QB_TRY_STATUS(sink(bytes->data(), bytes->size()));
        if (ctx) ctx->advance();
    }
    return {};
}

} // namespace

Result<std::uint64_t> writeSafetensorsFile(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                                           const SafetensorsWriteOptions& opt, RunContext* ctx)
{
    std::uint64_t total = 0;
    for (const auto& t : tensors)
        total += t.byteSize();
    QB_TRY(w, AtomicFileWriter::open(path, total + 65536));
    if (opt.failAfterBytesForTesting) w->failAfterBytesForTesting(opt.failAfterBytesForTesting);
    QB_TRY_STATUS(
        streamSafetensors(tensors, opt.metadata, [&](const void* p, std::size_t n) { return w->write(p, n); }, ctx));
    const std::uint64_t bytes = w->bytesWritten();
    QB_TRY_STATUS(w->commit());
    return bytes;
}

Result<std::vector<std::uint8_t>> safetensorsToBytes(const std::vector<SafetensorsTensor>& tensors)
{
    std::vector<std::uint8_t> out;
    QB_TRY_STATUS(streamSafetensors(
        tensors, {{"format", "pt"}},
        [&](const void* p, std::size_t n) -> Status {
            const auto* b = static_cast<const std::uint8_t*>(p);
            out.insert(out.end(), b, b + n);
            return {};
        },
        nullptr));
    return out;
}

SafetensorsTensor safetensorsTensorFromBytes(std::string name, DType dtype, std::vector<std::int64_t> shape,
                                             std::vector<std::uint8_t> bytes)
{
    SafetensorsTensor t;
    t.name = std::move(name);
    t.dtype = dtype;
    t.shape = std::move(shape);
    auto shared = std::make_shared<std::vector<std::uint8_t>>(std::move(bytes));
    t.produce = [shared]() -> Result<std::vector<std::uint8_t>> { return *shared; };
    return t;
}

Result<VerifyReport> verifySafetensorsFile(const std::string& path, const std::vector<SafetensorsTensor>& expected,
                                           RunContext* ctx)
{
    VerifyReport r;
    r.path = path;
    r.format = "safetensors";
    QB_TRY(tensors, io::readSafetensorsFile(path));
    r.tensorCount = tensors->size();
    std::map<std::string, const TensorInfo*> byName;
    for (const auto& t : *tensors) {
        byName[t.name] = &t;
    }
    if (!expected.empty()) {
        if (expected.size() != tensors->size())
            r.problems.push_back("expected " + std::to_string(expected.size()) + " tensors, found " +
                                 std::to_string(tensors->size()));
        for (const auto& e : expected) {
            auto it = byName.find(e.name);
            if (it == byName.end()) {
                r.problems.push_back("missing tensor " + e.name);
                continue;
            }
            if (it->second->dtype != e.dtype)
                r.problems.push_back(e.name + ": dtype " + dtypeName(it->second->dtype) + ", expected " +
                                     dtypeName(e.dtype));
            if (it->second->shape != e.shape) r.problems.push_back(e.name + ": shape " + it->second->shapeString());
        }
    }
    if (ctx) ctx->beginStage("verify", std::int64_t(tensors->size()));
    std::vector<float> buf;
    for (const auto& t : *tensors) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError(t.name);
        VerifiedTensor v;
        v.name = t.name;
        v.type = dtypeName(t.dtype);
        v.shape = t.shape;
        r.fileBytes += t.bytes.size();
        if (dtypeIsFloat(t.dtype)) {
            buf.resize(std::size_t(t.numel()));
            QB_TRY_STATUS(convertToF32(t.dtype, t.bytes.data(), buf.data(), buf.size()));
            for (float x : buf) {
                if (!std::isfinite(x)) ++v.nonFinite;
                else v.maxAbs = std::max(v.maxAbs, double(std::fabs(x)));
            }
            if (v.nonFinite) r.problems.push_back(t.name + ": " + std::to_string(v.nonFinite) + " NaN/Inf values");
        }
        r.tensors.push_back(std::move(v));
        if (ctx) ctx->advance();
    }
    r.ok = r.problems.empty();
    return r;
}

namespace {

const char* torchDtypeName(DType t)
{
    switch (t) {
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    default: return "float32";
    }
}

std::vector<std::uint8_t> encodeFloats(const float* v, std::size_t n, DType t)
{
    std::vector<std::uint8_t> out(n * dtypeSize(t));
    (void)convertFromF32(t, v, out.data(), n);
    return out;
}

} // namespace

Result<SafetensorsExportReport> exportFakeQuantSafetensors(const io::Checkpoint& ck, const std::string& outDir,
                                                           const SafetensorsExportOptions& opt, RunContext* ctx)
{
    SafetensorsExportReport rep;
    rep.path = outDir;
    auto gridOf = [&](const TensorInfo& t) -> quant::StoredGridPtr {
        if (!opt.gridFor || t.shape.size() != 2) return nullptr;
        return opt.gridFor(t.name);
    };
    // Pass 1: does F16 hold every grid value?
    if (ctx) ctx->beginStage("check", std::int64_t(ck.tensors.size()));
    rep.gridDtype = opt.gridDtype.value_or(DType::F16);
    for (const TensorInfo& t : ck.tensors) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError(t.name);
        const quant::StoredGridPtr g = gridOf(t);
        if (!g) continue;
        if (g->rows() != t.shape[0] || g->cols() != t.shape[1])
            return makeError(ErrorCode::Shape, "quantization grid shape does not match the tensor", t.name);
        ++rep.gridTensors;
        if (opt.gridDtype || rep.gridDtype == DType::F32) continue;
        const quant::MatrixXfR v = g->values();
        for (Eigen::Index i = 0; i < v.size(); ++i) {
            const float x = v.data()[i];
            if (f16ToF32(f32ToF16(x)) != x) {
                rep.gridDtype = DType::F32;
                rep.dtypeReason = t.name + ": value " + std::to_string(x) + " is not an F16 value";
                break;
            }
        }
    }

    // Tensor list, produced lazily.
    std::vector<SafetensorsTensor> tensors;
    bool anyF32 = false;
    DType widest = rep.gridDtype;
    for (const TensorInfo& t : ck.tensors) {
        SafetensorsTensor s;
        s.name = t.name;
        s.shape = t.shape;
        quant::StoredGridPtr g = gridOf(t);
        const DType src = dtypeIsFloat(t.dtype) && !t.encoded() ? t.dtype : DType::F32;
        s.dtype = g ? rep.gridDtype : src;
        anyF32 = anyF32 || s.dtype == DType::F32;
        if (s.dtype == DType::BF16 && widest == DType::F16) widest = DType::BF16;
        const DType dt = s.dtype;
        s.produce = [&t, g, dt]() -> Result<std::vector<std::uint8_t>> {
            if (g) {
                const quant::MatrixXfR v = g->values();
                return encodeFloats(v.data(), std::size_t(v.size()), dt);
            }
            if (t.dtype == dt && !t.encoded())
                return std::vector<std::uint8_t>(t.bytes.data(), t.bytes.data() + t.bytes.size());
            std::vector<float> w(std::size_t(t.numel()));
            QB_TRY_STATUS(io::readTensorF32(t, w.data()));
            return encodeFloats(w.data(), w.size(), dt);
        };
        tensors.push_back(std::move(s));
    }
    if (anyF32) widest = DType::F32;

    std::uint64_t total = 0;
    for (const auto& t : tensors)
        total += t.byteSize();
    QB_TRY(stage, StagingDirectory::create(outDir, total + (1u << 20)));
    QB_TRY(config, sourceConfigJson(ck));
    io::JsonValue cfg = std::move(*config);
    cfg.set("torch_dtype", torchDtypeName(widest));
    if (cfg.find("quantization_config")) {
        io::JsonObject kept;
        for (auto& m : cfg.asObject())
            if (m.key != "quantization_config") kept.push_back(m);
        cfg = io::JsonValue(std::move(kept));
        rep.warnings.push_back("the source's quantization_config was dropped (the weights are dequantized)");
    }
    QB_TRY_STATUS(writeSmallFile(stage->file("config.json"), io::toJsonText(cfg, 2)));
    QB_TRY(payload, writeHfWeights(*stage, ck, tensors, opt.verify, opt.failAfterBytesForTesting, ctx));
    rep.copiedFiles = payload->copiedFiles;
    rep.bytes = payload->bytes;
    rep.tensorCount = tensors.size();
    if (opt.verify) {
        rep.verify = std::move(*payload->verify);
        rep.verify.path = outDir;
        auto reopened = io::openCheckpoint(stage->path());
        if (!reopened)
            rep.verify.problems.push_back("our reader refuses the directory: " + reopened.error().toString());
        rep.verify.ok = rep.verify.problems.empty();
        QB_TRY_STATUS(rep.verify.verificationStatus("safetensors", outDir));
    }
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError(outDir);
    QB_TRY_STATUS(stage->install());
    return rep;
}

Result<HfWeightsPayload> writeHfWeights(const StagingDirectory& stage, const io::Checkpoint& ck,
                                        const std::vector<SafetensorsTensor>& tensors, bool verify,
                                        std::uint64_t failAfterBytesForTesting, RunContext* ctx)
{
    HfWeightsPayload out;
    QB_TRY(copied, copyTokenizerFiles(checkpointDirectory(ck), stage.path()));
    out.copiedFiles = std::move(*copied);
    SafetensorsWriteOptions wo;
    wo.failAfterBytesForTesting = failAfterBytesForTesting;
    QB_TRY(bytes, writeSafetensorsFile(stage.file("model.safetensors"), tensors, wo, ctx));
    out.bytes = *bytes;
    if (verify) {
        QB_TRY(v, verifySafetensorsFile(stage.file("model.safetensors"), tensors, ctx));
        out.verify = std::move(*v);
    }
    return out;
}

} // namespace qb::exporting
