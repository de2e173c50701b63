#include "export/imatrix_writer.h"

#include "export/atomic_file.h"
#include "export/gguf_writer.h"
#include "io/gguf_names.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <map>

namespace qb::exporting {

namespace {

// GGUF name -> entry, the order llama.cpp writes (sorted by name).
Result<std::map<std::string, const io::ImportanceEntry*>> ggufOrder(const io::ImportanceMatrix& m)
{
    if (m.entries.empty()) return makeError(ErrorCode::InvalidArgument, "the importance matrix has no entries");
    std::map<std::string, const io::ImportanceEntry*> out;
    for (const auto& [name, e] : m.entries) {
        QB_TRY_STATUS(io::validateImportanceEntry(name, e));
        if (e.columns() > std::numeric_limits<std::int32_t>::max())
            return makeError(ErrorCode::Shape, "too many columns", "entry " + name);
        const std::string gguf = io::hfToGgufName(name);
        const std::string key = gguf.empty() ? name : gguf;
        if (!out.emplace(key, &e).second)
            return makeError(ErrorCode::InvalidArgument, "two entries map to the same GGUF name", "entry " + key);
    }
    return out;
}

std::vector<std::uint8_t> floatBytes(const std::vector<float>& v)
{
    std::vector<std::uint8_t> b(v.size() * sizeof(float));
    if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
    return b;
}

std::vector<float> scaled(const std::vector<float>& v, double factor)
{
    std::vector<float> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i)
        out[i] = float(double(v[i]) * factor);
    return out;
}

Status writeGguf(const io::ImportanceMatrix& m, const std::map<std::string, const io::ImportanceEntry*>& entries,
                 const std::string& path, RunContext* ctx)
{
    GgufWriter w;
    w.setString("general.type", "imatrix");
    w.setStringArray("imatrix.datasets", m.datasets);
    w.setU32("imatrix.chunk_count", m.chunkCount);
    w.setU32("imatrix.chunk_size", m.chunkSize);
    for (const auto& [name, e] : entries) {
        const std::int64_t cols = e->columns();
        const double count = e->count;
        QB_TRY_STATUS(w.addTensor(
            name + ".in_sum2", {1, cols}, io::GgmlType::F32,
            [e, count]() -> Result<std::vector<std::uint8_t>> { return floatBytes(scaled(e->meanSquare, count)); }));
        QB_TRY_STATUS(
            w.addTensor(name + ".counts", {1, 1}, io::GgmlType::F32,
                        [count]() -> Result<std::vector<std::uint8_t>> { return floatBytes({float(count)}); }));
        if (!e->mean.empty()) {
            if (e->mean.size() != e->meanSquare.size())
                return makeError(ErrorCode::Shape, "means and mean squares differ in length", "entry " + name);
            QB_TRY_STATUS(w.addTensor(
                name + ".in_sum", {1, cols}, io::GgmlType::F32,
                [e, count]() -> Result<std::vector<std::uint8_t>> { return floatBytes(scaled(e->mean, count)); }));
        }
    }
    return w.write(path, ctx);
}

void putI32(std::vector<std::uint8_t>& out, std::int32_t v)
{
    std::uint8_t b[4];
    std::memcpy(b, &v, 4);
    out.insert(out.end(), b, b + 4);
}

Status writeDat(const io::ImportanceMatrix& m, const std::map<std::string, const io::ImportanceEntry*>& entries,
                const std::string& path)
{
    std::vector<std::uint8_t> out;
    putI32(out, std::int32_t(entries.size()));
    for (const auto& [name, e] : entries) {
        putI32(out, std::int32_t(name.size()));
        out.insert(out.end(), name.begin(), name.end());
        const double calls = m.chunkSize > 0 ? std::ceil(e->count / double(m.chunkSize)) : std::round(e->count);
        if (calls > double(std::numeric_limits<std::int32_t>::max()))
            return makeError(ErrorCode::InvalidArgument, "too many calls for the legacy format", "entry " + name);
        const std::int32_t ncall = std::int32_t(calls);
        putI32(out, ncall);
        putI32(out, std::int32_t(e->columns()));
        // Loaders divide by ncall; with no calls they take the values as they are.
        const std::vector<std::uint8_t> values = floatBytes(scaled(e->meanSquare, ncall > 0 ? double(ncall) : 1.0));
        out.insert(out.end(), values.begin(), values.end());
    }
    putI32(out, std::int32_t(std::min<std::uint32_t>(m.chunkCount, std::numeric_limits<std::int32_t>::max())));
    const std::string dataset = m.datasets.empty() ? std::string() : m.datasets.front();
    putI32(out, std::int32_t(dataset.size()));
    out.insert(out.end(), dataset.begin(), dataset.end());

    QB_TRY(file, AtomicFileWriter::open(path, out.size()));
    QB_TRY_STATUS(file->write(out.data(), out.size()));
    return file->commit();
}

} // namespace

Status writeImportanceMatrix(const io::ImportanceMatrix& m, const std::string& path, io::ImportanceFormat format,
                             RunContext* ctx)
{
    QB_TRY(entries, ggufOrder(m));
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError("importance matrix");
    Status st = format == io::ImportanceFormat::Gguf ? writeGguf(m, *entries, path, ctx) : writeDat(m, *entries, path);
    if (!st.ok() && st.error().code != ErrorCode::Cancelled) return st.error().withContext(path);
    return st;
}

} // namespace qb::exporting
