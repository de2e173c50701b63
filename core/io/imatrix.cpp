#include "io/imatrix.h"

#include "io/gguf_names.h"
#include "io/gguf_reader.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>

namespace qb::io {

namespace {

std::string hfNameOf(const std::string& ggufName)
{
    const std::string hf = ggufToHfName(ggufName);
    return hf.empty() ? ggufName : hf;
}

bool endsWith(const std::string& s, const std::string& suffix, std::string& stem)
{
    if (s.size() <= suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    stem = s.substr(0, s.size() - suffix.size());
    return true;
}

Result<std::vector<float>> f32Values(const TensorInfo& t, const std::string& what)
{
    if (t.encoded() || t.dtype != DType::F32) return makeError(ErrorCode::Format, what + " is not F32", t.name);
    std::vector<float> v(std::size_t(t.numel()));
    if (t.bytes.size() != v.size() * sizeof(float))
        return makeError(ErrorCode::Shape,
                         what + " has " + std::to_string(t.bytes.size()) + " bytes for shape " + t.shapeString(),
                         t.name);
    if (!v.empty()) std::memcpy(v.data(), t.bytes.data(), v.size() * sizeof(float));
    return v;
}

// ne = [n, nmat] (HF shape [nmat, n] or [n]): the number of matrices must be one.
Result<std::int64_t> singleMatrixColumns(const TensorInfo& t)
{
    std::int64_t nmat = 1;
    for (std::size_t i = 0; i + 1 < t.shape.size(); ++i)
        nmat *= t.shape[i];
    if (nmat != 1)
        return makeError(ErrorCode::Unsupported,
                         "holds " + std::to_string(nmat) + " matrices (MoE experts); only one per weight is supported",
                         t.name);
    return t.shape.empty() ? std::int64_t(1) : t.shape.back();
}

Result<ImportanceMatrix> readGgufImatrix(const std::string& path)
{
    QB_TRY(file, readGgufFile(path));
    if (const GgufValue* type = file->find("general.type")) {
        const std::string* s = type->toString();
        if (!s || *s != "imatrix")
            return makeError(ErrorCode::Format,
                             "not an importance matrix: general.type is " + type->display() + " (expected \"imatrix\")",
                             path);
    } else if (!file->find("imatrix.chunk_count")) {
        return makeError(ErrorCode::Format, "not an importance matrix: no general.type or imatrix.* metadata", path);
    }
    ImportanceMatrix m;
    m.format = ImportanceFormat::Gguf;
    if (const GgufValue* ds = file->find("imatrix.datasets")) {
        if (!ds->isArray() || ds->elementType != GgufValueType::String)
            return makeError(ErrorCode::Format, "imatrix.datasets is not a string array", path);
        m.datasets = ds->strings;
    }
    for (const auto& [key, slot] :
         {std::pair("imatrix.chunk_count", &m.chunkCount), std::pair("imatrix.chunk_size", &m.chunkSize)}) {
        const GgufValue* v = file->find(key);
        std::int64_t n = 0;
        if (!v) continue;
        if (!v->toInt(n) || n < 0 || n > std::int64_t(UINT32_MAX))
            return makeError(ErrorCode::Format, std::string(key) + " is not an unsigned count: " + v->display(), path);
        *slot = std::uint32_t(n);
    }

    struct Parts {
        const TensorInfo *sum2 = nullptr, *counts = nullptr, *sum = nullptr;
    };
    std::map<std::string, Parts> parts; // GGUF weight name -> its tensors
    for (const TensorInfo& t : file->tensors) {
        std::string stem;
        if (endsWith(t.name, ".in_sum2", stem)) parts[stem].sum2 = &t;
        else if (endsWith(t.name, ".counts", stem)) parts[stem].counts = &t;
        else if (endsWith(t.name, ".in_sum", stem)) parts[stem].sum = &t;
    }
    if (parts.empty()) return makeError(ErrorCode::Format, "no importance entries (no *.in_sum2 tensors)", path);
    for (const auto& [gguf, p] : parts) {
        const std::string ctx = path + ": entry " + gguf;
        if (!p.sum2 || !p.counts)
            return makeError(ErrorCode::Format,
                             std::string("entry has no ") + (p.sum2 ? ".counts" : ".in_sum2") + " tensor", ctx);
        for (const TensorInfo* t : {p.sum2, p.counts})
            if (auto cols = singleMatrixColumns(*t); !cols.ok()) return cols.error().withContext(path);
        QB_TRY(sum2, f32Values(*p.sum2, "in_sum2"));
        QB_TRY(counts, f32Values(*p.counts, "counts"));
        if (counts->size() != 1)
            return makeError(ErrorCode::Shape, "counts has " + std::to_string(counts->size()) + " values (expected 1)",
                             ctx);
        ImportanceEntry e;
        e.count = double((*counts)[0]);
        const double c = e.count > 0 ? e.count : 0;
        e.meanSquare.resize(sum2->size());
        for (std::size_t i = 0; i < sum2->size(); ++i)
            e.meanSquare[i] = c > 0 ? float(double((*sum2)[i]) / c) : 0.0f;
        if (p.sum) {
            QB_TRY(sum, f32Values(*p.sum, "in_sum"));
            if (sum->size() != sum2->size())
                return makeError(ErrorCode::Shape,
                                 "in_sum has " + std::to_string(sum->size()) + " values, in_sum2 " +
                                     std::to_string(sum2->size()),
                                 ctx);
            e.mean.resize(sum->size());
            for (std::size_t i = 0; i < sum->size(); ++i)
                e.mean[i] = c > 0 ? float(double((*sum)[i]) / c) : 0.0f;
        }
        // Non-finite sums stay non-finite after the division, so checking the means checks them.
        if (Status st = validateImportanceEntry(gguf, e); !st.ok()) return st.error().withContext(path);
        m.entries[hfNameOf(gguf)] = std::move(e);
    }
    return m;
}

// Little-endian reader over the bytes of a legacy .dat; errors name the offset and the entry.
struct DatCursor {
    const std::vector<std::uint8_t>& bytes;
    const std::string& path;
    std::size_t at = 0;

    std::size_t left() const { return bytes.size() - at; }
    Error truncated(const std::string& what) const
    {
        return makeError(ErrorCode::Format,
                         "truncated: " + what + " needs more than the " + std::to_string(left()) + " bytes left",
                         path + " at offset " + std::to_string(at));
    }
    Result<std::int32_t> i32(const std::string& what)
    {
        if (left() < 4) return truncated(what);
        std::int32_t v;
        std::memcpy(&v, bytes.data() + at, 4);
        at += 4;
        return v;
    }
};

} // namespace

std::optional<ImportanceFormat> parseImportanceFormat(const std::string& name)
{
    std::string s = name;
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (s == "gguf") return ImportanceFormat::Gguf;
    if (s == "dat") return ImportanceFormat::Dat;
    return std::nullopt;
}

const char* importanceFormatName(ImportanceFormat f) { return f == ImportanceFormat::Dat ? "dat" : "gguf"; }

const ImportanceEntry* ImportanceMatrix::find(const std::string& hfName) const
{
    auto it = entries.find(hfName);
    if (it == entries.end()) it = entries.find(hfName + ".weight");
    return it == entries.end() ? nullptr : &it->second;
}

Status validateImportanceEntry(const std::string& name, const ImportanceEntry& e, std::int64_t cols)
{
    if (cols >= 0 && e.columns() != cols)
        return makeError(ErrorCode::Shape,
                         "has " + std::to_string(e.columns()) + " columns, the model's tensor " + std::to_string(cols),
                         "entry " + name);
    if (e.meanSquare.empty()) return makeError(ErrorCode::Shape, "has no values", "entry " + name);
    if (!std::isfinite(e.count) || e.count < 0)
        return makeError(ErrorCode::NumericalError, "count " + std::to_string(e.count) + " is not a token count",
                         "entry " + name);
    for (std::size_t i = 0; i < e.meanSquare.size(); ++i) {
        if (!std::isfinite(e.meanSquare[i]))
            return makeError(ErrorCode::NumericalError, "value is NaN/Inf",
                             "entry " + name + " column " + std::to_string(i));
        if (e.meanSquare[i] < 0)
            return makeError(ErrorCode::Format, "sum of squares is negative",
                             "entry " + name + " column " + std::to_string(i));
    }
    for (std::size_t i = 0; i < e.mean.size(); ++i)
        if (!std::isfinite(e.mean[i]))
            return makeError(ErrorCode::NumericalError, "in_sum is NaN/Inf",
                             "entry " + name + " column " + std::to_string(i));
    return {};
}

Result<ImportanceMatrix> parseImportanceMatrixDat(const std::vector<std::uint8_t>& bytes, const std::string& path)
{
    DatCursor in{bytes, path};
    QB_TRY(n, in.i32("the entry count"));
    // Every entry takes at least 16 bytes (len, one name byte, ncall, nval, one value).
    if (*n < 1 || std::size_t(*n) > in.left() / 16)
        return makeError(ErrorCode::Format,
                         "entry count " + std::to_string(*n) + " does not fit a " + std::to_string(bytes.size()) +
                             "-byte file: not an importance matrix",
                         path);
    ImportanceMatrix m;
    m.format = ImportanceFormat::Dat;
    for (std::int32_t i = 0; i < *n; ++i) {
        const std::string entry = "entry " + std::to_string(i);
        QB_TRY(len, in.i32(entry + " name length"));
        if (*len < 1 || std::size_t(*len) > in.left())
            return in.truncated(entry + " name of " + std::to_string(*len) + " bytes");
        const std::string name(reinterpret_cast<const char*>(bytes.data() + in.at), std::size_t(*len));
        in.at += std::size_t(*len);
        QB_TRY(ncall, in.i32("entry " + name + " ncall"));
        QB_TRY(nval, in.i32("entry " + name + " value count"));
        if (*ncall < 0)
            return makeError(ErrorCode::Format, "negative ncall " + std::to_string(*ncall), path + ": entry " + name);
        if (*nval < 1)
            return makeError(ErrorCode::Format, "value count " + std::to_string(*nval), path + ": entry " + name);
        if (std::size_t(*nval) > in.left() / 4)
            return in.truncated("entry " + name + " values (" + std::to_string(*nval) + ")");
        ImportanceEntry e;
        e.count = double(*ncall);
        e.meanSquare.resize(std::size_t(*nval));
        std::memcpy(e.meanSquare.data(), bytes.data() + in.at, std::size_t(*nval) * 4);
        in.at += std::size_t(*nval) * 4;
        if (*ncall > 0)
            for (float& v : e.meanSquare)
                v = float(double(v) / double(*ncall));
        if (Status st = validateImportanceEntry(name, e); !st.ok()) return st.error().withContext(path);
        const std::string hf = hfNameOf(name);
        if (m.entries.count(hf)) return makeError(ErrorCode::Format, "duplicate entry", path + ": entry " + name);
        m.entries[hf] = std::move(e);
    }
    // The trailer (chunk count and dataset) is optional in old files; a partial one is truncation.
    if (in.left() > 0) {
        QB_TRY(last, in.i32("the chunk count"));
        m.chunkCount = std::uint32_t(std::max(0, *last));
        QB_TRY(len, in.i32("the dataset name length"));
        if (*len < 0 || std::size_t(*len) > in.left())
            return in.truncated("the dataset name of " + std::to_string(*len) + " bytes");
        if (*len > 0) m.datasets.emplace_back(reinterpret_cast<const char*>(bytes.data() + in.at), std::size_t(*len));
        in.at += std::size_t(*len);
        if (in.left() > 0)
            return makeError(ErrorCode::Format, std::to_string(in.left()) + " bytes after the dataset name",
                             path + " at offset " + std::to_string(in.at));
    }
    return m;
}

Result<ImportanceMatrix> readImportanceMatrix(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    if (!f) return makeError(ErrorCode::Io, "cannot open the importance matrix", path);
    char magic[4] = {};
    f.read(magic, 4);
    if (f.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return readGgufImatrix(path);
    f.clear();
    f.seekg(0, std::ios::end);
    const std::streamoff size = f.tellg();
    if (size < 0) return makeError(ErrorCode::Io, "cannot read the importance matrix", path);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
    f.seekg(0);
    if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size))
        return makeError(ErrorCode::Io, "cannot read the importance matrix", path);
    return parseImportanceMatrixDat(bytes, path);
}

} // namespace qb::io
