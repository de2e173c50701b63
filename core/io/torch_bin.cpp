// PyTorch .bin reader (torch.save zip format, FORMATS.md §6).
//
// Archive: an uncompressed ZIP (ZIP64 when large). Members share one top folder <p>:
//   <p>/data.pkl      pickle of the state_dict (OrderedDict name -> tensor)
//   <p>/data/<key>    raw little-endian bytes of storage <key>
//   <p>/byteorder     "little" (absent before torch 2.1: little)
// QuaZip opens the archive and reads data.pkl (verifying its CRC-32). Tensor storages are taken
// straight from the memory mapping, never copied: our own parse of the central directory finds
// each member, and its data offset is taken from its LOCAL header
// (30 + name length + extra length), because torch pads the local extra field to align data to
// 64 bytes and the central copy of that field differs. Compressed members are refused.

#include "io/torch_bin.h"

#include "io/pickle.h"

#include <quazip.h>
#include <quazipfile.h>

#include <algorithm>
#include <cstring>
#include <map>

namespace qb::io {

namespace {

using detail::PickleRef;
using K = detail::PickleValue::Kind;

struct Zip {
    std::map<std::string, ByteRange> members; // name -> stored data
    std::map<std::string, int> methods;       // name -> compression method
};

Result<Zip> readZip(const ByteRange& all, const std::string& path)
{
    auto err = [&](const std::string& msg, std::uint64_t at) {
        return makeError(ErrorCode::Format, msg, path + " at offset " + std::to_string(at));
    };
    if (all.size() < 22) return err("file too short for a zip archive", 0);
    if (*all.read<std::uint32_t>(0) != 0x04034b50u) {
        return makeError(ErrorCode::Unsupported,
                         "not a zip-format torch checkpoint (the legacy pre-1.6 torch.save format "
                         "is not supported)",
                         path);
    }
    // End of central directory: the last signature within the final 64 KiB + 22 bytes.
    std::uint64_t eocd = 0;
    bool found = false;
    const std::uint64_t lowest = all.size() > 65557 ? all.size() - 65557 : 0;
    for (std::uint64_t p = all.size() - 22 + 1; p-- > lowest;)
        if (*all.read<std::uint32_t>(p) == 0x06054b50u) {
            eocd = p;
            found = true;
            break;
        }
    if (!found) return err("zip end-of-central-directory record not found (file truncated?)", all.size());
    std::uint64_t entries = *all.read<std::uint16_t>(eocd + 10);
    std::uint64_t cdSize = *all.read<std::uint32_t>(eocd + 12);
    std::uint64_t cdOffset = *all.read<std::uint32_t>(eocd + 16);
    if (entries == 0xFFFF || cdSize == 0xFFFFFFFFu || cdOffset == 0xFFFFFFFFu) {
        if (eocd < 20 || *all.read<std::uint32_t>(eocd - 20) != 0x07064b50u) return err("ZIP64 locator missing", eocd);
        QB_TRY(e64, all.read<std::uint64_t>(eocd - 20 + 8));
        QB_TRY(sig, all.read<std::uint32_t>(*e64));
        if (*sig != 0x06064b50u) return err("ZIP64 end-of-central-directory record missing", *e64);
        QB_TRY(entries64, all.read<std::uint64_t>(*e64 + 32));
        QB_TRY(cdSize64, all.read<std::uint64_t>(*e64 + 40));
        QB_TRY(cdOffset64, all.read<std::uint64_t>(*e64 + 48));
        entries = *entries64;
        cdSize = *cdSize64;
        cdOffset = *cdOffset64;
    }
    QB_TRY(cd, all.slice(cdOffset, cdSize));
    Zip zip;
    std::uint64_t p = 0;
    for (std::uint64_t i = 0; i < entries; ++i) {
        const std::uint64_t at = cdOffset + p;
        auto sig = cd->read<std::uint32_t>(p);
        if (!sig.ok() || *sig != 0x02014b50u) return err("bad zip central directory entry", at);
        QB_TRY(method, cd->read<std::uint16_t>(p + 10));
        QB_TRY(csize32, cd->read<std::uint32_t>(p + 20));
        QB_TRY(usize32, cd->read<std::uint32_t>(p + 24));
        QB_TRY(nameLen, cd->read<std::uint16_t>(p + 28));
        QB_TRY(extraLen, cd->read<std::uint16_t>(p + 30));
        QB_TRY(commentLen, cd->read<std::uint16_t>(p + 32));
        QB_TRY(local32, cd->read<std::uint32_t>(p + 42));
        QB_TRY(nameRange, cd->slice(p + 46, *nameLen));
        QB_TRY(extra, cd->slice(p + 46 + *nameLen, *extraLen));
        std::uint64_t usize = *usize32, csize = *csize32, local = *local32;
        // ZIP64 extended information: u64 values for the fields stored as 0xFFFFFFFF, in order.
        for (std::uint64_t e = 0; e + 4 <= extra->size();) {
            const std::uint16_t id = *extra->read<std::uint16_t>(e);
            const std::uint16_t len = *extra->read<std::uint16_t>(e + 2);
            if (id == 0x0001) {
                std::uint64_t q = e + 4;
                auto next = [&](std::uint64_t& field) -> Status {
                    if (field != 0xFFFFFFFFu) return {};
                    QB_TRY(v, extra->read<std::uint64_t>(q));
                    field = *v;
                    q += 8;
                    return {};
                };
                QB_TRY_STATUS(next(usize));
                QB_TRY_STATUS(next(csize));
                QB_TRY_STATUS(next(local));
            }
            e += 4 + std::uint64_t(len);
        }
        const std::string name(nameRange->view());
        QB_TRY(lsig, all.read<std::uint32_t>(local));
        if (*lsig != 0x04034b50u) return err("bad local header for member " + name, local);
        QB_TRY(lname, all.read<std::uint16_t>(local + 26));
        QB_TRY(lextra, all.read<std::uint16_t>(local + 28));
        const std::uint64_t dataAt = local + 30 + *lname + *lextra;
        auto data = all.slice(dataAt, csize);
        if (!data.ok())
            return makeError(ErrorCode::OutOfRange,
                             "member " + name + " data [" + std::to_string(dataAt) + ", " +
                                 std::to_string(dataAt + csize) + ") runs past the end of the file: file truncated",
                             path);
        if (*method == 0 && csize != usize) return err("stored member " + name + " has mismatched sizes", at);
        zip.members[name] = *data;
        zip.methods[name] = *method;
        p += 46 + std::uint64_t(*nameLen) + *extraLen + *commentLen;
    }
    return zip;
}

// Reads one (small) member through QuaZip, which inflates it if needed and verifies its CRC-32,
// so a corrupted pickle is reported as such instead of as a confusing opcode error.
Result<ByteRange> readMemberWithQuaZip(const std::string& path, const std::string& name, std::uint64_t maxBytes)
{
    QuaZip zip(QString::fromStdString(path));
    if (!zip.open(QuaZip::mdUnzip))
        return makeError(ErrorCode::Format,
                         "cannot open zip archive (QuaZip error " + std::to_string(zip.getZipError()) + ")", path);
    if (!zip.setCurrentFile(QString::fromStdString(name)))
        return makeError(ErrorCode::Format, "archive member " + name + " is missing", path);
    QuaZipFile f(&zip);
    if (!f.open(QIODevice::ReadOnly)) return makeError(ErrorCode::Format, "cannot read archive member " + name, path);
    // QuaZip may open a different entry of the same name from the one our own parse found: never
    // read more than the stored member holds, so a deflated twin cannot inflate without bound.
    std::vector<std::uint8_t> bytes;
    char chunk[1 << 16];
    for (qint64 n; (n = f.read(chunk, sizeof chunk)) > 0;) {
        if (bytes.size() + std::uint64_t(n) > maxBytes) {
            f.close();
            return makeError(ErrorCode::Format,
                             "archive member " + name + " inflates past " + std::to_string(maxBytes) +
                                 " bytes, the size of the stored member",
                             path);
        }
        bytes.insert(bytes.end(), chunk, chunk + n);
    }
    f.close();
    if (f.getZipError() != 0) // UNZ_CRCERROR and friends are reported on close
        return makeError(ErrorCode::Format, "archive member " + name + " is corrupt (CRC mismatch or truncated)", path);
    auto owned = MappedFile::fromBytes(std::move(bytes), path + ":" + name);
    return ByteRange(owned);
}

// Strided views are copied; all copies of one file together may exceed the file's size by at
// most this much (a broadcast bias in a tiny checkpoint), and no single copy may exceed the cap.
constexpr std::uint64_t kStridedCopySlackBytes = std::uint64_t(1) << 20;
constexpr std::uint64_t kMaxStridedCopyBytes = std::uint64_t(1) << 40;
constexpr std::size_t kMaxTensorDims = 64; // torch itself allows 64

std::string shapeText(const std::vector<std::int64_t>& v)
{
    std::string s = "(";
    for (std::size_t i = 0; i < v.size(); ++i)
        s += (i ? ", " : "") + std::to_string(v[i]);
    return s + ")";
}

bool isContiguous(const detail::PickleValue& t)
{
    std::int64_t expect = 1;
    for (std::size_t k = t.size.size(); k-- > 0;) {
        if (t.size[k] != 1 && t.stride[k] != expect) return false;
        expect *= t.size[k];
    }
    return true;
}

} // namespace

Result<TorchBinTensors> readTorchBinFile(const std::string& path)
{
    QB_TRY(file, MappedFile::open(path));
    const ByteRange all(*file);
    QB_TRY(zip, readZip(all, path));
    std::string prefix;
    bool found = false;
    for (const auto& [name, range] : zip->members)
        if (name == "data.pkl" || (name.size() > 9 && name.compare(name.size() - 9, 9, "/data.pkl") == 0 &&
                                   name.find('/') == name.size() - 9)) {
            prefix = name.substr(0, name.size() - 8);
            found = true;
            break;
        }
    if (!found) return makeError(ErrorCode::Format, "archive has no data.pkl member: not a torch checkpoint", path);
    auto member = [&](const std::string& name) -> Result<ByteRange> {
        const auto it = zip->members.find(prefix + name);
        if (it == zip->members.end())
            return makeError(ErrorCode::Format, "archive member " + prefix + name + " is missing", path);
        if (zip->methods[prefix + name] != 0)
            return makeError(ErrorCode::Unsupported,
                             "archive member " + prefix + name + " is compressed (method " +
                                 std::to_string(zip->methods[prefix + name]) + "); torch writes stored members only",
                             path);
        return it->second;
    };
    if (zip->members.count(prefix + "byteorder")) {
        QB_TRY(bo, member("byteorder"));
        if (bo->view().substr(0, 6) != "little")
            return makeError(ErrorCode::Unsupported, "big-endian torch checkpoint", path);
    }
    QB_TRY(pklMember, member("data.pkl")); // present and stored
    QB_TRY(pkl, readMemberWithQuaZip(path, prefix + "data.pkl", pklMember->size()));
    QB_TRY(root, detail::unpickleTorch(*pkl, path + ": " + prefix + "data.pkl"));
    PickleRef dict = *root;
    // Some training scripts wrap the weights: {"state_dict": {...}} or {"model": {...}}.
    if (dict->kind == K::Dict)
        for (const auto& [k, v] : dict->dict)
            if (k->kind == K::String && (k->s == "state_dict" || k->s == "model") && v->kind == K::Dict) {
                dict = v;
                break;
            }
    if (dict->kind != K::Dict)
        return makeError(ErrorCode::Format, "data.pkl does not hold a state_dict (a dict of tensors)", path);

    TorchBinTensors out;
    std::size_t skipped = 0;
    std::uint64_t copiedBytes = 0; // strided copies so far
    for (const auto& [k, v] : dict->dict) {
        if (k->kind != K::String || v->kind != K::Tensor) {
            ++skipped;
            continue;
        }
        const detail::PickleValue& t = *v;
        const std::string where = path + ": tensor " + k->s;
        TensorInfo info;
        info.name = k->s;
        info.shape = t.size;
        info.dtype = t.storage->dtype;
        const std::uint64_t esize = dtypeSize(info.dtype);
        auto storage = member("data/" + t.storage->storageKey);
        if (!storage.ok()) return storage.error().withContext(where);
        const std::uint64_t storageElems = storage->size() / esize;
        if (t.storage->storageNumel < 0 || std::uint64_t(t.storage->storageNumel) > storageElems)
            return makeError(ErrorCode::OutOfRange,
                             "storage " + t.storage->storageKey + " declares " +
                                 std::to_string(t.storage->storageNumel) + " elements but holds " +
                                 std::to_string(storageElems) + ": file truncated or corrupt",
                             where);
        // Element count and last element of the view, overflow-checked: a hostile size/stride
        // must not wrap around into a view that seems to fit its storage.
        if (t.size.size() > kMaxTensorDims)
            return makeError(ErrorCode::Format,
                             "tensor has " + std::to_string(t.size.size()) + " dimensions (at most " +
                                 std::to_string(kMaxTensorDims) + " are supported)",
                             where);
        std::int64_t numel = 1, last = t.storageOffset;
        bool overflow = false;
        for (std::size_t d = 0; d < t.size.size(); ++d) {
            if (t.size[d] < 0 || t.stride[d] < 0) return makeError(ErrorCode::Format, "negative size or stride", where);
            std::int64_t span = 0;
            overflow |= __builtin_mul_overflow(numel, t.size[d], &numel);
            if (t.size[d] > 0) {
                overflow |= __builtin_mul_overflow(t.size[d] - 1, t.stride[d], &span);
                overflow |= __builtin_add_overflow(last, span, &last);
            }
        }
        if (overflow)
            return makeError(ErrorCode::OutOfRange,
                             "view size " + shapeText(t.size) + " with strides " + shapeText(t.stride) +
                                 " overflows 64-bit element arithmetic",
                             where);
        if (numel > 0 && (t.storageOffset < 0 || std::uint64_t(last) >= storageElems))
            return makeError(ErrorCode::OutOfRange,
                             "view (offset " + std::to_string(t.storageOffset) + ", last element " +
                                 std::to_string(last) + ") lies outside storage " + t.storage->storageKey + " of " +
                                 std::to_string(storageElems) + " elements",
                             where + " at offset " + std::to_string(storage->fileOffset()));
        // A view may repeat storage elements (stride 0, overlapping strides): its row-major copy
        // is refused beyond what the whole file could plausibly expand to.
        if (numel > 0 && !isContiguous(t)) {
            const bool huge = std::uint64_t(numel) > kMaxStridedCopyBytes / esize;
            const std::uint64_t copyBytes = huge ? 0 : std::uint64_t(numel) * esize;
            if (huge || copiedBytes + copyBytes > all.size() + kStridedCopySlackBytes)
                return makeError(ErrorCode::OutOfRange,
                                 "strided view of " + std::to_string(numel) + " elements expands storage " +
                                     t.storage->storageKey + " (" + std::to_string(storageElems) +
                                     " elements) beyond the size of the file; refusing to copy it",
                                 where);
            copiedBytes += copyBytes;
        }
        if (numel == 0) {
            info.bytes = *storage->slice(0, 0);
        } else if (isContiguous(t)) {
            info.bytes = *storage->slice(std::uint64_t(t.storageOffset) * esize, std::uint64_t(numel) * esize);
        } else {
            // Gather a strided view into an owned row-major copy.
            std::vector<std::uint8_t> buf(std::size_t(numel) * esize);
            std::vector<std::int64_t> idx(t.size.size(), 0);
            const std::uint8_t* src = storage->data();
            for (std::int64_t e = 0; e < numel; ++e) {
                std::int64_t off = t.storageOffset;
                for (std::size_t d = 0; d < idx.size(); ++d)
                    off += idx[d] * t.stride[d];
                std::memcpy(buf.data() + std::size_t(e) * esize, src + std::uint64_t(off) * esize, esize);
                for (std::size_t d = idx.size(); d-- > 0;) {
                    if (++idx[d] < t.size[d]) break;
                    idx[d] = 0;
                }
            }
            info.bytes = ByteRange(MappedFile::fromBytes(std::move(buf), where + " (strided copy)"));
            out.warnings.push_back("tensor " + k->s + " is stored with non-contiguous strides; copied");
        }
        out.tensors.push_back(std::move(info));
    }
    if (skipped) out.warnings.push_back(std::to_string(skipped) + " non-tensor state_dict entries skipped");
    return out;
}

} // namespace qb::io
