#include "export/gguf_writer.h"

#include "export/atomic_file.h"

#include <cstring>

namespace qb::exporting {

namespace {

template <typename T>
void put(std::string& out, T v)
{
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T)); // little-endian hosts only (x86-64, aarch64)
    out.append(b, sizeof(T));
}

void putString(std::string& out, const std::string& s)
{
    put<std::uint64_t>(out, s.size());
    out += s;
}

std::uint64_t alignUp(std::uint64_t x) { return (x + kGgufAlignment - 1) / kGgufAlignment * kGgufAlignment; }

} // namespace

void GgufWriter::beginKv(const std::string& key, io::GgufValueType type)
{
    if (!m_keys.insert(key).second && !m_failed) {
        m_failed = true;
        m_firstError = makeError(ErrorCode::InvalidArgument, "duplicate GGUF key", key);
    }
    putString(m_kvBytes, key);
    put<std::uint32_t>(m_kvBytes, std::uint32_t(type));
    ++m_kvCount;
}

void GgufWriter::setU32(const std::string& k, std::uint32_t v)
{
    beginKv(k, io::GgufValueType::UInt32);
    put(m_kvBytes, v);
}
void GgufWriter::setI32(const std::string& k, std::int32_t v)
{
    beginKv(k, io::GgufValueType::Int32);
    put(m_kvBytes, v);
}
void GgufWriter::setU64(const std::string& k, std::uint64_t v)
{
    beginKv(k, io::GgufValueType::UInt64);
    put(m_kvBytes, v);
}
void GgufWriter::setF32(const std::string& k, float v)
{
    beginKv(k, io::GgufValueType::Float32);
    put(m_kvBytes, v);
}
void GgufWriter::setBool(const std::string& k, bool v)
{
    beginKv(k, io::GgufValueType::Bool);
    put<std::uint8_t>(m_kvBytes, v ? 1 : 0);
}
void GgufWriter::setString(const std::string& k, const std::string& v)
{
    beginKv(k, io::GgufValueType::String);
    putString(m_kvBytes, v);
}
void GgufWriter::setStringArray(const std::string& k, const std::vector<std::string>& v)
{
    beginKv(k, io::GgufValueType::Array);
    put<std::uint32_t>(m_kvBytes, std::uint32_t(io::GgufValueType::String));
    put<std::uint64_t>(m_kvBytes, v.size());
    for (const auto& s : v)
        putString(m_kvBytes, s);
}
void GgufWriter::setI32Array(const std::string& k, const std::vector<std::int32_t>& v)
{
    beginKv(k, io::GgufValueType::Array);
    put<std::uint32_t>(m_kvBytes, std::uint32_t(io::GgufValueType::Int32));
    put<std::uint64_t>(m_kvBytes, v.size());
    for (auto x : v)
        put(m_kvBytes, x);
}
void GgufWriter::setBoolArray(const std::string& k, const std::vector<bool>& v)
{
    beginKv(k, io::GgufValueType::Array);
    put<std::uint32_t>(m_kvBytes, std::uint32_t(io::GgufValueType::Bool));
    put<std::uint64_t>(m_kvBytes, v.size());
    for (bool x : v)
        put<std::uint8_t>(m_kvBytes, x ? 1 : 0);
}
void GgufWriter::setF32Array(const std::string& k, const std::vector<float>& v)
{
    beginKv(k, io::GgufValueType::Array);
    put<std::uint32_t>(m_kvBytes, std::uint32_t(io::GgufValueType::Float32));
    put<std::uint64_t>(m_kvBytes, v.size());
    for (auto x : v)
        put(m_kvBytes, x);
}

Status GgufWriter::addTensor(const std::string& name, const std::vector<std::int64_t>& hfShape, io::GgmlType type,
                             Producer produce)
{
    const auto* traits = io::ggmlTypeTraits(int(type));
    if (!traits) return makeError(ErrorCode::InvalidArgument, "unknown ggml type " + std::to_string(int(type)), name);
    if (name.empty() || name.size() >= 64)
        return makeError(ErrorCode::InvalidArgument, "GGUF tensor names must be 1..63 bytes", name);
    if (hfShape.empty() || hfShape.size() > 4)
        return makeError(ErrorCode::Shape, "GGUF tensors have 1..4 dimensions", name);
    if (m_names.count(name)) return makeError(ErrorCode::InvalidArgument, "duplicate GGUF tensor name", name);
    TensorEntry e;
    e.name = name;
    e.ne.assign(hfShape.rbegin(), hfShape.rend());
    std::uint64_t numel = 1;
    for (auto d : e.ne) {
        if (d <= 0) return makeError(ErrorCode::Shape, "non-positive dimension", name);
        numel *= std::uint64_t(d);
    }
    if (e.ne[0] % traits->blockSize != 0)
        return makeError(ErrorCode::Shape,
                         "row length " + std::to_string(e.ne[0]) + " is not a multiple of the " + traits->name +
                             " block size " + std::to_string(traits->blockSize),
                         name);
    e.type = type;
    e.bytes = numel / std::uint64_t(traits->blockSize) * std::uint64_t(traits->typeSize);
    e.offset = m_dataBytes;
    e.produce = std::move(produce);
    m_dataBytes += alignUp(e.bytes);
    m_names.insert(name);
    m_tensors.push_back(std::move(e));
    return {};
}

namespace {

std::string encodeInfos(const std::vector<GgufWriter::TensorEntry>& tensors)
{
    std::string out;
    for (const auto& t : tensors) {
        putString(out, t.name);
        put<std::uint32_t>(out, std::uint32_t(t.ne.size()));
        for (auto d : t.ne)
            put<std::uint64_t>(out, std::uint64_t(d));
        put<std::uint32_t>(out, std::uint32_t(t.type));
        put<std::uint64_t>(out, t.offset);
    }
    return out;
}

std::uint64_t headerBytes(std::uint64_t kvBytes, std::uint64_t infoBytes) { return 24 + kvBytes + infoBytes; }

} // namespace

std::uint64_t GgufWriter::fileSize() const
{
    const std::uint64_t head = headerBytes(m_kvBytes.size(), encodeInfos(m_tensors).size());
    return (m_tensors.empty() ? head : alignUp(head)) + m_dataBytes;
}

Status GgufWriter::write(const std::string& path, RunContext* ctx, const WriteOptions& options)
{
    if (m_failed) return m_firstError;
    const std::string infos = encodeInfos(m_tensors);
    std::string head;
    put<std::uint32_t>(head, 0x46554747u); // "GGUF"
    put<std::uint32_t>(head, 3);
    put<std::uint64_t>(head, m_tensors.size());
    put<std::uint64_t>(head, m_kvCount);
    head += m_kvBytes;
    head += infos;
    if (!m_tensors.empty()) head.append(alignUp(head.size()) - head.size(), '\0');

    QB_TRY(file, AtomicFileWriter::open(path, fileSize()));
    if (options.failAfterBytesForTesting) file->failAfterBytesForTesting(options.failAfterBytesForTesting);
    QB_TRY_STATUS(file->write(head.data(), head.size()));
    if (ctx) ctx->beginStage("write", std::int64_t(m_tensors.size()), path);
    for (const auto& t : m_tensors) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("GGUF export of " + path);
        if (ctx) ctx->setDetail(t.name);
        auto data = t.produce ? t.produce() : Result<std::vector<std::uint8_t>>(std::vector<std::uint8_t>{});
        if (!data) return data.error().withContext(path + ": tensor " + t.name);
        if (data->size() != t.bytes)
            return makeError(ErrorCode::Internal,
                             "produced " + std::to_string(data->size()) + " bytes, expected " + std::to_string(t.bytes),
                             path + ": tensor " + t.name);
        QB_TRY_STATUS(file->write(data->data(), data->size()));
        QB_TRY_STATUS(file->writeZeros(std::size_t(alignUp(t.bytes) - t.bytes)));
        if (ctx) ctx->advance();
    }
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError("GGUF export of " + path);
    if (file->bytesWritten() != fileSize()) return makeError(ErrorCode::Internal, "GGUF size mismatch", path);
    if (options.beforeCommit) {
        QB_TRY_STATUS(file->sync());
        QB_TRY_STATUS(options.beforeCommit(file->tempPath()));
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("GGUF export of " + path);
    }
    return file->commit();
}

} // namespace qb::exporting
