// safetensors reader.
//
// File layout (FORMATS.md §1):
//   u64 LE N | N bytes of UTF-8 JSON header (may be padded with spaces) | data buffer
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end)} with offsets
// relative to the buffer start (8 + N); an optional "__metadata__" maps strings to strings.
// Rules enforced, as the reference (Rust) reader does:
//   * N <= 100 000 000 and 8 + N <= file size; the header is a JSON object;
//   * dtype is one we convert (F32 F16 BF16 F64 I8 U8 I16 I32 I64 BOOL), else Unsupported;
//   * (end - begin) == numel * element size, computed without overflow;
//   * sorted by begin, the tensors tile the buffer exactly: first begins at 0, each begins where
//     the previous ended, and the last ends at the end of the file (no gap, overlap or trailer).

#include "io/safetensors.h"

#include "io/shard_index.h"

#include "io/json_value.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

namespace qb::io {

namespace {

constexpr std::uint64_t kMaxHeader = 100'000'000;
constexpr std::size_t kMaxDims = 8; // PyTorch tensors of LLMs have at most 4

struct Entry {
    TensorInfo info;
    std::uint64_t begin = 0;
    std::uint64_t end = 0;
};

Error formatError(const std::string& path, const std::string& msg, const std::string& tensor = {})
{
    return makeError(ErrorCode::Format, msg, tensor.empty() ? path : path + ": tensor " + tensor);
}

// A JSON number that is a non-negative integer (exactly representable).
bool toUInt(const JsonValue& v, std::uint64_t& out)
{
    if (!v.isNumber()) return false;
    const double d = v.asNumber();
    if (!(d >= 0) || d != std::floor(d) || d > 9.007199254740992e15) return false;
    out = std::uint64_t(d);
    return true;
}

Result<Entry> parseEntry(const std::string& path, const std::string& name, const JsonValue& v)
{
    if (!v.isObject()) return formatError(path, "header entry is not an object", name);
    Entry e;
    e.info.name = name;
    const JsonValue* dt = v.find("dtype");
    if (!dt || !dt->isString()) return formatError(path, "missing or non-string \"dtype\"", name);
    const std::string dtName = dt->asString();
    const auto dtype = dtypeFromName(dtName);
    if (!dtype)
        return makeError(ErrorCode::Unsupported, "unsupported dtype \"" + dtName + "\"", path + ": tensor " + name);
    e.info.dtype = *dtype;
    const JsonValue* shape = v.find("shape");
    if (!shape || !shape->isArray()) return formatError(path, "missing or non-array \"shape\"", name);
    if (shape->asArray().size() > kMaxDims)
        return formatError(
            path, std::to_string(shape->asArray().size()) + " dimensions (at most " + std::to_string(kMaxDims) + ")",
            name);
    std::uint64_t numel = 1;
    bool overflow = false;
    for (const JsonValue& d : shape->asArray()) {
        std::uint64_t n = 0;
        if (!toUInt(d, n)) return formatError(path, "shape entries must be non-negative integers", name);
        e.info.shape.push_back(std::int64_t(n));
        if (n != 0 && numel > std::numeric_limits<std::uint64_t>::max() / n) overflow = true;
        numel *= n;
    }
    const JsonValue* offs = v.find("data_offsets");
    if (!offs || !offs->isArray() || offs->asArray().size() != 2 || !toUInt(offs->asArray()[0], e.begin) ||
        !toUInt(offs->asArray()[1], e.end))
        return formatError(path, "\"data_offsets\" must be [begin, end] integers", name);
    if (e.end < e.begin)
        return formatError(path, "data_offsets end " + std::to_string(e.end) + " < begin " + std::to_string(e.begin),
                           name);
    const std::uint64_t esize = dtypeSize(e.info.dtype);
    if (overflow || (esize && numel > std::numeric_limits<std::uint64_t>::max() / esize))
        return formatError(path, "shape " + e.info.shapeString() + " overflows", name);
    if (numel * esize != e.end - e.begin)
        return makeError(ErrorCode::Shape,
                         "shape " + e.info.shapeString() + " of " + dtName + " needs " + std::to_string(numel * esize) +
                             " bytes but data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                             ") hold " + std::to_string(e.end - e.begin),
                         path + ": tensor " + name);
    return e;
}

} // namespace

Result<std::vector<TensorInfo>> readSafetensorsFile(const std::string& path)
{
    QB_TRY(file, MappedFile::open(path));
    return parseSafetensors(ByteRange(*file));
}

Result<std::vector<TensorInfo>> parseSafetensors(const ByteRange& all)
{
    const std::string path = all.path();
    if (all.size() < 8)
        return formatError(path,
                           "file is " + std::to_string(all.size()) + " bytes, too short for the 8-byte header length");
    const std::uint64_t n = *all.read<std::uint64_t>(0);
    if (n > kMaxHeader)
        return formatError(path, "header length " + std::to_string(n) + " exceeds the 100000000-byte limit (offset 0)");
    if (n > all.size() - 8)
        return formatError(path, "header length " + std::to_string(n) + " runs past the end of the file (size " +
                                     std::to_string(all.size()) + ", offset 0)");
    const ByteRange header = *all.slice(8, n);
    auto doc = parseJson(header.view(), path + ": header");
    if (!doc)
        return formatError(path, "header is not valid JSON: " + doc.error().message + " (" + doc.error().context + ")");
    if (!doc->isObject()) return formatError(path, "header JSON is not an object");

    const std::uint64_t dataStart = 8 + n;
    const std::uint64_t dataSize = all.size() - dataStart;
    std::vector<Entry> entries;
    for (const JsonMember& member : doc->asObject()) {
        const std::string& name = member.key;
        if (name == "__metadata__") {
            if (!member.value.isObject()) return formatError(path, "\"__metadata__\" is not an object");
            for (const JsonMember& m : member.value.asObject())
                if (!m.value.isString())
                    return formatError(path, "\"__metadata__\" value for \"" + m.key + "\" is not a string");
            continue;
        }
        QB_TRY(e, parseEntry(path, name, member.value));
        entries.push_back(std::move(*e));
    }
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t expected = 0;
    std::string prev;
    for (const Entry& e : entries) {
        const std::string where = path + ": tensor " + e.info.name + ", buffer offset " + std::to_string(e.begin) +
                                  " (file offset " + std::to_string(dataStart + e.begin) + ")";
        if (e.begin < expected)
            return makeError(ErrorCode::Format,
                             "data overlaps " + (prev.empty() ? std::string("the buffer start") : "tensor " + prev) +
                                 ", which ends at buffer offset " + std::to_string(expected),
                             where);
        if (e.begin > expected)
            return makeError(ErrorCode::Format,
                             "gap of " + std::to_string(e.begin - expected) +
                                 " bytes before this tensor (expected buffer offset " + std::to_string(expected) + ")",
                             where);
        if (e.end > dataSize)
            return makeError(ErrorCode::OutOfRange,
                             "data ends at buffer offset " + std::to_string(e.end) +
                                 " past the end of the file (buffer holds " + std::to_string(dataSize) +
                                 " bytes): file truncated",
                             where);
        expected = e.end;
        prev = e.info.name;
    }
    if (expected != dataSize)
        return makeError(ErrorCode::Format,
                         std::to_string(dataSize - expected) + " trailing bytes after the last tensor" +
                             (prev.empty() ? std::string() : " (" + prev + ")") + " at buffer offset " +
                             std::to_string(expected),
                         path);
    std::vector<TensorInfo> out;
    out.reserve(entries.size());
    for (Entry& e : entries) {
        e.info.bytes = *all.slice(dataStart + e.begin, e.end - e.begin);
        out.push_back(std::move(e.info));
    }
    return out;
}

Result<ShardedTensors> readSafetensorsIndex(const std::string& indexPath)
{
    QB_TRY(index, readShardIndex(indexPath));
    ShardedTensors out;
    std::set<std::string> seen;
    for (const std::string& shard : index->shards) {
        QB_TRY(tensors, readSafetensorsFile(shard));
        for (TensorInfo& t : *tensors) {
            if (!seen.insert(t.name).second)
                return makeError(ErrorCode::Format, "tensor appears in more than one shard",
                                 shard + ": tensor " + t.name);
            out.tensors.push_back(std::move(t));
        }
        out.files.push_back(shard);
    }
    for (const auto& [name, shard] : index->weightMap) {
        const auto it =
            std::find_if(out.tensors.begin(), out.tensors.end(), [&](const TensorInfo& t) { return t.name == name; });
        if (it == out.tensors.end())
            return makeError(ErrorCode::Format,
                             "index weight_map lists tensor " + name + " in " + shard + " but no shard holds it",
                             indexPath);
    }
    return out;
}

} // namespace qb::io
