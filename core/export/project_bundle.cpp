#include "export/project_bundle.h"

#include "quant/cmpq.h"
#include "quant/container_grid.h"

#include "export/atomic_file.h"
#include "export/safetensors_export.h"
#include "io/safetensors.h"
#include "io/zip_bundle.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <unordered_map>

namespace qb::exporting {

namespace {

template <typename T>
std::vector<std::uint8_t> rawBytes(const T* p, std::size_t n)
{
    std::vector<std::uint8_t> out(n * sizeof(T));
    std::memcpy(out.data(), p, out.size()); // little-endian hosts only (as every reader here)
    return out;
}

std::vector<std::uint8_t> textBytes(const std::string& s) { return std::vector<std::uint8_t>(s.begin(), s.end()); }

Result<std::uint64_t> intField(const io::JsonValue& o, const char* k, const std::string& ctx)
{
    const io::JsonValue* v = o.find(k);
    if (!v || !v->isInteger() || v->asInteger() < 0)
        return makeError(ErrorCode::Format, std::string("missing or bad \"") + k + "\"", ctx);
    return std::uint64_t(v->asInteger());
}

std::string runGridsEntry(int run) { return "runs/" + std::to_string(run) + ".safetensors"; }

// The grids as one safetensors file (layout in the header) and their manifest entries.
Result<std::vector<std::uint8_t>> gridsToSafetensors(const std::vector<BundleTensor>& tensors, io::JsonArray* list)
{
    std::vector<SafetensorsTensor> st;
    for (const auto& t : tensors) {
        const auto& g = t.grid;
        if (g.cmpq) { // CMPQ: codes + per-channel bits and codebooks + kept channels + sparse outliers
            const quant::CmpqCodes& c = *g.cmpq;
            const std::int64_t rows = g.codes.rows(), cols = g.codes.cols();
            if (Status v = quant::validateCmpqCodes(g.codes, c); !v.ok()) return v.error().withContext(t.name);
            const auto k = std::int64_t(c.keptChannels.size()), o = std::int64_t(c.outlierIndex.size());
            st.push_back(safetensorsTensorFromBytes(t.name + ".codes", DType::U8, {rows, cols},
                                                    rawBytes(g.codes.data(), std::size_t(g.codes.size()))));
            st.push_back(safetensorsTensorFromBytes(t.name + ".channel_bits", DType::U8, {cols},
                                                    rawBytes(c.channelBits.data(), c.channelBits.size())));
            st.push_back(safetensorsTensorFromBytes(t.name + ".codebook", DType::F32, {std::int64_t(c.codebook.size())},
                                                    rawBytes(c.codebook.data(), c.codebook.size())));
            std::vector<std::int32_t> kept(c.keptChannels.begin(), c.keptChannels.end()),
                lv(c.levels.begin(), c.levels.end());
            st.push_back(safetensorsTensorFromBytes(t.name + ".kept_channels", DType::I32, {k},
                                                    rawBytes(kept.data(), kept.size())));
            st.push_back(safetensorsTensorFromBytes(t.name + ".kept_values", DType::F32, {rows, k},
                                                    rawBytes(c.keptValues.data(), std::size_t(c.keptValues.size()))));
            st.push_back(safetensorsTensorFromBytes(t.name + ".outlier_index", DType::I64, {o},
                                                    rawBytes(c.outlierIndex.data(), c.outlierIndex.size())));
            st.push_back(safetensorsTensorFromBytes(t.name + ".outlier_value", DType::F32, {o},
                                                    rawBytes(c.outlierValue.data(), c.outlierValue.size())));
            st.push_back(safetensorsTensorFromBytes(t.name + ".channel_score", DType::F32, {cols},
                                                    rawBytes(c.channelScore.data(), c.channelScore.size())));
            st.push_back(safetensorsTensorFromBytes(t.name + ".levels", DType::I32, {std::int64_t(lv.size())},
                                                    rawBytes(lv.data(), lv.size())));
            io::JsonValue e;
            e.set("name", t.name);
            e.set("method", "cmpq");
            e.set("bits", g.bits);
            e.set("rows", rows);
            e.set("cols", cols);
            e.set("groups", 0);
            e.set("codebook", std::int64_t(c.codebook.size()));
            e.set("kept", k);
            e.set("outliers", o);
            e.set("levels", std::int64_t(lv.size()));
            e.set("target_bits", c.targetBits);
            list->push_back(std::move(e));
            continue;
        }
        const std::int64_t rows = g.codes.rows(), cols = g.codes.cols(), groups = g.scales.cols();
        if (g.scales.rows() != rows || g.zeros.rows() != rows || g.zeros.cols() != groups ||
            std::int64_t(g.groupIndex.size()) != cols ||
            (g.offsets.size() && (g.offsets.rows() != rows || g.offsets.cols() != groups)) ||
            (g.superScales.size() && g.superScales.rows() != rows))
            return makeError(ErrorCode::Shape, "inconsistent grid", t.name);
        st.push_back(safetensorsTensorFromBytes(t.name + ".codes", DType::U8, {rows, cols},
                                                rawBytes(g.codes.data(), std::size_t(g.codes.size()))));
        st.push_back(safetensorsTensorFromBytes(t.name + ".scales", DType::F64, {rows, groups},
                                                rawBytes(g.scales.data(), std::size_t(g.scales.size()))));
        st.push_back(safetensorsTensorFromBytes(t.name + ".zeros", DType::F64, {rows, groups},
                                                rawBytes(g.zeros.data(), std::size_t(g.zeros.size()))));
        std::vector<std::int32_t> gi(g.groupIndex.begin(), g.groupIndex.end());
        st.push_back(safetensorsTensorFromBytes(t.name + ".g_idx", DType::I32, {cols}, rawBytes(gi.data(), gi.size())));
        // Grids solved inside a storage container (quant/container_grid.h): its name, the mins
        // and the K-quant super-scales, so that the export from a reopened project is exact.
        if (g.offsets.size())
            st.push_back(safetensorsTensorFromBytes(t.name + ".offsets", DType::F64, {rows, groups},
                                                    rawBytes(g.offsets.data(), std::size_t(g.offsets.size()))));
        if (g.superScales.size())
            st.push_back(safetensorsTensorFromBytes(t.name + ".super_scales", DType::F64,
                                                    {rows, std::int64_t(g.superScales.cols())},
                                                    rawBytes(g.superScales.data(), std::size_t(g.superScales.size()))));
        io::JsonValue e;
        e.set("name", t.name);
        if (!g.container.empty()) e.set("container", g.container);
        e.set("bits", g.bits);
        e.set("rows", rows);
        e.set("cols", cols);
        e.set("groups", groups);
        list->push_back(std::move(e));
    }
    return safetensorsToBytes(st);
}

// The grids listed in `tl` (manifest tensor entries) from the safetensors entry `entry`, each
// checked against the list (shapes, dtypes, bits, codes, group index, finite values).
Result<std::vector<BundleTensor>> readGrids(std::map<std::string, std::vector<std::uint8_t>>& entries,
                                            const std::string& entry, const io::JsonValue* tl, const std::string& path)
{
    std::vector<BundleTensor> out;
    auto tit = entries.find(entry);
    if (tit == entries.end()) return makeError(ErrorCode::Format, "the project file has no " + entry, path);
    // The one hardened safetensors parser, over the entry's bytes (moved, not copied).
    const auto tensorFile = MappedFile::fromBytes(std::move(tit->second), path + ":" + entry);
    QB_TRY(stored, io::parseSafetensors(ByteRange(tensorFile)));
    std::unordered_map<std::string, const TensorInfo*> byName;
    for (const TensorInfo& t : *stored)
        byName.emplace(t.name, &t);
    if (tl)
        for (const auto& e : tl->asArray()) {
            if (!e.isObject()) return makeError(ErrorCode::Format, "manifest \"tensors\" entry is not an object", path);
            const io::JsonValue* n = e.find("name");
            if (!n || !n->isString()) return makeError(ErrorCode::Format, "tensor entry without a name", path);
            const std::string name = n->asString();
            const std::string where = path + ": tensor " + name;
            QB_TRY(bits, intField(e, "bits", name));
            QB_TRY(rows, intField(e, "rows", name));
            QB_TRY(cols, intField(e, "cols", name));
            QB_TRY(groups, intField(e, "groups", name));
            if (*bits < 1 || *bits > 8)
                return makeError(ErrorCode::Format, "bits " + std::to_string(*bits) + " outside 1..8", where);
            const io::JsonValue* method = e.find("method");
            const bool cmpq = method && method->isString() && method->asString() == "cmpq";
            if (!cmpq && ((*cols > 0) != (*groups > 0) || *groups > *cols))
                return makeError(ErrorCode::Format,
                                 std::to_string(*groups) + " groups for " + std::to_string(*cols) + " columns", where);
            // Shapes are compared with what the parser validated against the bytes, so no size
            // arithmetic on the manifest's numbers is needed (nor can it overflow).
            auto get = [&](const std::string& suffix, DType dtype,
                           std::vector<std::int64_t> shape) -> Result<const TensorInfo*> {
                auto it = byName.find(name + suffix);
                if (it == byName.end())
                    return makeError(ErrorCode::Format, "missing tensor " + name + suffix, path + ":" + entry);
                const TensorInfo* t = it->second;
                if (t->dtype != dtype || t->shape != shape)
                    return makeError(ErrorCode::Shape,
                                     "tensor " + name + suffix + " is " + dtypeName(t->dtype) + " " + t->shapeString() +
                                         ", the manifest says " + dtypeName(dtype) + " " + shapeString(shape),
                                     path + ":" + entry);
                return t;
            };
            const auto r = std::int64_t(*rows), c = std::int64_t(*cols), g = std::int64_t(*groups);
            if (cmpq) {
                QB_TRY(nCodebook, intField(e, "codebook", name));
                QB_TRY(nKept, intField(e, "kept", name));
                QB_TRY(nOut, intField(e, "outliers", name));
                QB_TRY(nLevels, intField(e, "levels", name));
                const io::JsonValue* tb = e.find("target_bits");
                QB_TRY(codes, get(".codes", DType::U8, {r, c}));
                QB_TRY(cbits, get(".channel_bits", DType::U8, {c}));
                QB_TRY(book, get(".codebook", DType::F32, {std::int64_t(*nCodebook)}));
                QB_TRY(kept, get(".kept_channels", DType::I32, {std::int64_t(*nKept)}));
                QB_TRY(keptV, get(".kept_values", DType::F32, {r, std::int64_t(*nKept)}));
                QB_TRY(oi, get(".outlier_index", DType::I64, {std::int64_t(*nOut)}));
                QB_TRY(ov, get(".outlier_value", DType::F32, {std::int64_t(*nOut)}));
                QB_TRY(score, get(".channel_score", DType::F32, {c}));
                QB_TRY(lv, get(".levels", DType::I32, {std::int64_t(*nLevels)}));
                BundleTensor t;
                t.name = name;
                t.grid.bits = int(*bits);
                t.grid.codes.resize(Eigen::Index(r), Eigen::Index(c));
                std::memcpy(t.grid.codes.data(), (*codes)->bytes.data(), (*codes)->bytes.size());
                auto cc = std::make_shared<quant::CmpqCodes>();
                auto fill = [](auto& vec, const TensorInfo* ti) {
                    vec.resize(ti->bytes.size() / sizeof(vec[0]));
                    if (!vec.empty()) std::memcpy(vec.data(), ti->bytes.data(), ti->bytes.size());
                };
                fill(cc->channelBits, *cbits);
                fill(cc->codebook, *book);
                fill(cc->outlierIndex, *oi);
                fill(cc->outlierValue, *ov);
                fill(cc->channelScore, *score);
                std::vector<std::int32_t> keptI, lvI;
                fill(keptI, *kept);
                fill(lvI, *lv);
                cc->keptChannels.assign(keptI.begin(), keptI.end());
                cc->levels.assign(lvI.begin(), lvI.end());
                cc->keptValues.resize(Eigen::Index(r), Eigen::Index(*nKept));
                if (cc->keptValues.size())
                    std::memcpy(cc->keptValues.data(), (*keptV)->bytes.data(), (*keptV)->bytes.size());
                cc->codebookOffset.assign(std::size_t(c) + 1, 0);
                for (std::int64_t j = 0; j < c; ++j) {
                    const int b = cc->channelBits[std::size_t(j)];
                    cc->codebookOffset[std::size_t(j) + 1] =
                        cc->codebookOffset[std::size_t(j)] + (b > 0 && b <= 8 ? (1 << b) : 0);
                }
                cc->targetBits = tb && tb->isNumber() ? tb->asNumber() : 0.0;
                if (Status v = quant::validateCmpqCodes(t.grid.codes, *cc); !v.ok())
                    return v.error().withContext(where);
                for (float v : cc->codebook)
                    if (!std::isfinite(v)) return makeError(ErrorCode::Format, "non-finite codebook value", where);
                for (float v : cc->outlierValue)
                    if (!std::isfinite(v)) return makeError(ErrorCode::Format, "non-finite outlier value", where);
                if (!cc->keptValues.allFinite()) return makeError(ErrorCode::Format, "non-finite kept value", where);
                cc->bits = quant::cmpqBitsOf(std::vector<int>(cc->channelBits.begin(), cc->channelBits.end()),
                                             cc->keptChannels.size(), std::int64_t(cc->outlierIndex.size()), r,
                                             cc->levels.size());
                t.grid.groupIndex.assign(std::size_t(c), 0);
                t.grid.cmpq = std::move(cc);
                out.push_back(std::move(t));
                continue;
            }
            QB_TRY(codes, get(".codes", DType::U8, {r, c}));
            QB_TRY(scales, get(".scales", DType::F64, {r, g}));
            QB_TRY(zeros, get(".zeros", DType::F64, {r, g}));
            QB_TRY(gidx, get(".g_idx", DType::I32, {c}));
            BundleTensor t;
            t.name = name;
            t.grid.bits = int(*bits);
            t.grid.codes.resize(Eigen::Index(r), Eigen::Index(c));
            std::memcpy(t.grid.codes.data(), (*codes)->bytes.data(), (*codes)->bytes.size());
            t.grid.scales.resize(Eigen::Index(r), Eigen::Index(g));
            std::memcpy(t.grid.scales.data(), (*scales)->bytes.data(), (*scales)->bytes.size());
            t.grid.zeros.resize(Eigen::Index(r), Eigen::Index(g));
            std::memcpy(t.grid.zeros.data(), (*zeros)->bytes.data(), (*zeros)->bytes.size());
            std::vector<std::int32_t> gi(static_cast<std::size_t>(c));
            std::memcpy(gi.data(), (*gidx)->bytes.data(), (*gidx)->bytes.size());
            t.grid.groupIndex.assign(gi.begin(), gi.end());
            for (int x : t.grid.groupIndex)
                if (x < 0 || std::uint64_t(x) >= *groups)
                    return makeError(ErrorCode::Format, "g_idx " + std::to_string(x) + " out of range", where);
            const int maxCode = (1 << *bits) - 1;
            if (t.grid.codes.size() > 0 && int(t.grid.codes.maxCoeff()) > maxCode)
                return makeError(ErrorCode::Format,
                                 "code " + std::to_string(int(t.grid.codes.maxCoeff())) + " above " +
                                     std::to_string(maxCode) + " for " + std::to_string(*bits) + " bits",
                                 where);
            if (!t.grid.scales.allFinite() || !t.grid.zeros.allFinite())
                return makeError(ErrorCode::Format, "non-finite scale or zero point", where);
            if (const io::JsonValue* ct = e.find("container")) {
                const quant::ContainerSpec* spec = ct->isString() ? quant::findContainerSpec(ct->asString()) : nullptr;
                if (!spec || std::uint64_t(spec->bits) != *bits || c % spec->blockSize != 0 || g != c / spec->subBlock)
                    return makeError(ErrorCode::Format, "bad storage container for this grid", where);
                t.grid.container = spec->name;
                if (spec->hasMin) {
                    QB_TRY(off, get(".offsets", DType::F64, {r, g}));
                    t.grid.offsets.resize(Eigen::Index(r), Eigen::Index(g));
                    std::memcpy(t.grid.offsets.data(), (*off)->bytes.data(), (*off)->bytes.size());
                }
                if (spec->isKQuant()) {
                    const std::int64_t sc = 2 * (c / spec->blockSize);
                    QB_TRY(sup, get(".super_scales", DType::F64, {r, sc}));
                    t.grid.superScales.resize(Eigen::Index(r), Eigen::Index(sc));
                    std::memcpy(t.grid.superScales.data(), (*sup)->bytes.data(), (*sup)->bytes.size());
                }
                if (!t.grid.offsets.allFinite() || !t.grid.superScales.allFinite())
                    return makeError(ErrorCode::Format, "non-finite container parameter", where);
            }
            out.push_back(std::move(t));
        }
    return out;
}

} // namespace

const BundleTensor* ProjectBundle::find(const std::string& name) const
{
    for (const auto& t : tensors)
        if (t.name == name) return &t;
    return nullptr;
}

namespace {
bool sameCmpq(const quant::CmpqCodes* a, const quant::CmpqCodes* b)
{
    if (!a || !b) return a == b;
    return a->channelBits == b->channelBits && a->codebook == b->codebook && a->keptChannels == b->keptChannels &&
           a->keptValues.rows() == b->keptValues.rows() && a->keptValues.cols() == b->keptValues.cols() &&
           a->keptValues == b->keptValues && a->outlierIndex == b->outlierIndex && a->outlierValue == b->outlierValue &&
           a->channelScore == b->channelScore && a->levels == b->levels && a->targetBits == b->targetBits;
}
} // namespace

bool sameGrid(const quant::QuantizedRows& a, const quant::QuantizedRows& b)
{
    return a.bits == b.bits && a.codes.rows() == b.codes.rows() && a.codes.cols() == b.codes.cols() &&
           a.codes == b.codes && a.scales.rows() == b.scales.rows() && a.scales.cols() == b.scales.cols() &&
           a.scales == b.scales && a.zeros.rows() == b.zeros.rows() && a.zeros.cols() == b.zeros.cols() &&
           a.zeros == b.zeros && a.groupIndex == b.groupIndex && a.container == b.container &&
           a.offsets.rows() == b.offsets.rows() && a.offsets.cols() == b.offsets.cols() && a.offsets == b.offsets &&
           a.superScales.rows() == b.superScales.rows() && a.superScales.cols() == b.superScales.cols() &&
           a.superScales == b.superScales && sameCmpq(a.cmpq.get(), b.cmpq.get());
}

bool sameGrids(const std::vector<BundleTensor>& a, const std::vector<BundleTensor>& b)
{
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].name != b[i].name || !sameGrid(a[i].grid, b[i].grid)) return false;
    return true;
}

namespace {

std::uint64_t gridStorageBytes(const quant::QuantizedRows& g, std::uint64_t codes)
{
    if (g.cmpq)
        return codes + g.cmpq->channelBits.size() +
               4 * std::uint64_t(g.cmpq->codebook.size() + g.cmpq->keptValues.size() + g.cmpq->channelScore.size() +
                                 g.cmpq->outlierValue.size()) +
               8 * std::uint64_t(g.cmpq->outlierIndex.size());
    return codes + 8 * std::uint64_t(g.scales.size() + g.zeros.size()) + 4 * std::uint64_t(g.groupIndex.size()) +
           8 * std::uint64_t(g.offsets.size() + g.superScales.size());
}

} // namespace

std::uint64_t gridStorageBytes(const quant::QuantizedRows& g)
{
    return gridStorageBytes(g, std::uint64_t(g.codes.size()));
}

std::uint64_t gridStorageBytes(const quant::StoredGrid& g)
{
    return gridStorageBytes(g.params(), std::uint64_t(g.rows()) * std::uint64_t(g.cols()));
}

Status writeProjectBundle(const std::string& path, const ProjectBundle& b, const BundleWriteOptions& opt,
                          RunContext* ctx)
{
    io::JsonValue man;
    man.set("format", "qbproj");
    man.set("version", b.version);
    man.set("created_by", b.createdBy);
    io::JsonValue model;
    model.set("path", b.model.path);
    model.set("format", b.model.format);
    io::JsonArray files;
    for (const auto& [p, n] : b.model.files) {
        io::JsonValue f;
        f.set("path", p);
        f.set("bytes", double(n));
        files.push_back(std::move(f));
    }
    model.set("files", std::move(files));
    model.set("bytes", double(b.model.bytes));
    man.set("model", std::move(model));

    io::JsonArray tlistMain;
    QB_TRY(tensorBytes, gridsToSafetensors(b.tensors, &tlistMain));
    man.set("tensors", std::move(tlistMain));
    std::vector<std::pair<std::string, std::vector<std::uint8_t>>> runEntries;
    io::JsonArray runList;
    for (const auto& rg : b.runGrids) {
        if (rg.run < 0) return makeError(ErrorCode::InvalidArgument, "negative run index for stored grids", path);
        const std::string entry = runGridsEntry(rg.run);
        for (const auto& [n, bytes] : runEntries)
            if (n == entry) return makeError(ErrorCode::InvalidArgument, "two grid sets for one run", entry);
        io::JsonArray list;
        QB_TRY(bytes, gridsToSafetensors(rg.tensors, &list));
        io::JsonValue e;
        e.set("run", rg.run);
        e.set("entry", entry);
        e.set("tensors", std::move(list));
        runList.push_back(std::move(e));
        runEntries.emplace_back(entry, std::move(*bytes));
    }
    if (!runList.empty()) man.set("run_grids", std::move(runList));
    io::JsonValue entries;
    entries.set("plan", "plan.json");
    entries.set("calibration", "calibration.json");
    entries.set("metrics", "metrics.json");
    entries.set("tensors", "tensors.safetensors");
    man.set("entries", std::move(entries));
    io::JsonArray extras;
    for (const auto& [n, v] : b.extras)
        extras.push_back(io::JsonValue(n));
    man.set("extras", std::move(extras));

    std::vector<io::ZipEntry> z;
    z.push_back({"manifest.json", textBytes(io::toJsonText(man, 2)), true});
    z.push_back({"plan.json", textBytes(io::toJsonText(b.plan, 2)), true});
    z.push_back({"calibration.json", textBytes(io::toJsonText(b.calibration, 2)), true});
    z.push_back({"metrics.json", textBytes(io::toJsonText(b.metrics, 2)), true});
    for (const auto& [n, v] : b.extras)
        z.push_back({"extras/" + n + ".json", textBytes(io::toJsonText(v, 2)), true});
    z.push_back({"tensors.safetensors", std::move(*tensorBytes), false});
    for (auto& [n, bytes] : runEntries)
        z.push_back({n, std::move(bytes), false});

    std::uint64_t total = 0;
    for (const auto& e : z)
        total += e.bytes.size() + 128 + e.name.size();
    const std::filesystem::path p(path);
    QB_TRY_STATUS(checkDiskSpace(p.has_parent_path() ? p.parent_path().string() : ".", total));
    if (ctx) ctx->beginStage("write", std::int64_t(z.size()));
    io::ZipWriteOptions zo;
    zo.failAfterBytesForTesting = opt.failAfterBytesForTesting;
    bool first = true;
    zo.cancelled = [&]() {
        if (!ctx) return false;
        if (!first) ctx->advance();
        first = false;
        return ctx->isCancelled();
    };
    return io::writeZipEntries(path, z, zo);
}

Result<ProjectBundle> readProjectBundle(const std::string& path)
{
    QB_TRY(entries, io::readZipEntries(path));
    auto text = [&](const std::string& name) -> Result<io::JsonValue> {
        auto it = entries->find(name);
        if (it == entries->end()) return makeError(ErrorCode::Format, "the project file has no " + name, path);
        return io::parseJson(std::string_view(reinterpret_cast<const char*>(it->second.data()), it->second.size()),
                             path + ":" + name);
    };
    QB_TRY(man, text("manifest.json"));
    const io::JsonValue* fmt = man->find("format");
    if (!fmt || !fmt->isString() || fmt->asString() != "qbproj")
        return makeError(ErrorCode::Format, "not a Quantbench project (manifest format is not \"qbproj\")", path);
    const io::JsonValue* ver = man->find("version");
    if (!ver || !ver->isString()) return makeError(ErrorCode::Format, "the manifest has no version", path);
    ProjectBundle b;
    b.version = ver->asString();
    int major = -1;
    try {
        major = std::stoi(b.version);
    } catch (...) {
        return makeError(ErrorCode::Format, "bad project version \"" + b.version + "\"", path);
    }
    if (major > kQbprojMajorVersion)
        return makeError(ErrorCode::Unsupported,
                         "project file version " + b.version + " is newer than this Quantbench supports (" +
                             std::to_string(kQbprojMajorVersion) + ".x); open it with a newer Quantbench",
                         path);
    if (major < 1) return makeError(ErrorCode::Format, "bad project version \"" + b.version + "\"", path);
    if (const auto* c = man->find("created_by"); c && c->isString()) b.createdBy = c->asString();
    if (const io::JsonValue* m = man->find("model"); m && m->isObject()) {
        if (const auto* v = m->find("path"); v && v->isString()) b.model.path = v->asString();
        if (const auto* v = m->find("format"); v && v->isString()) b.model.format = v->asString();
        if (const auto* v = m->find("bytes"); v && v->isInteger()) b.model.bytes = std::uint64_t(v->asInteger());
        if (const auto* fs = m->find("files"); fs && fs->isArray())
            for (const auto& f : fs->asArray()) {
                const auto* fp = f.find("path");
                const auto* fb = f.find("bytes");
                if (fp && fp->isString() && fb && fb->isInteger())
                    b.model.files.emplace_back(fp->asString(), std::uint64_t(fb->asInteger()));
            }
    }
    QB_TRY(plan, text("plan.json"));
    b.plan = std::move(*plan);
    QB_TRY(cal, text("calibration.json"));
    b.calibration = std::move(*cal);
    QB_TRY(met, text("metrics.json"));
    b.metrics = std::move(*met);
    if (const auto* ex = man->find("extras"); ex && ex->isArray())
        for (const auto& n : ex->asArray()) {
            if (!n.isString()) continue;
            QB_TRY(v, text("extras/" + n.asString() + ".json"));
            b.extras.emplace_back(n.asString(), std::move(*v));
        }
    const io::JsonValue* tl = man->find("tensors");
    if (tl && !tl->isArray()) return makeError(ErrorCode::Format, "manifest \"tensors\" is not an array", path);
    QB_TRY(main, readGrids(*entries, "tensors.safetensors", tl, path));
    b.tensors = std::move(*main);
    if (const io::JsonValue* rl = man->find("run_grids")) {
        if (!rl->isArray()) return makeError(ErrorCode::Format, "manifest \"run_grids\" is not an array", path);
        for (const auto& e : rl->asArray()) {
            const io::JsonValue* run = e.isObject() ? e.find("run") : nullptr;
            if (!run || !run->isInteger() || run->asInteger() < 0 || run->asInteger() > 1000000)
                return makeError(ErrorCode::Format, "manifest \"run_grids\" entry without a run index", path);
            BundleRunGrids rg;
            rg.run = int(run->asInteger());
            for (const auto& other : b.runGrids)
                if (other.run == rg.run)
                    return makeError(ErrorCode::Format, "two grid sets for run " + std::to_string(rg.run), path);
            const io::JsonValue* list = e.find("tensors");
            if (!list || !list->isArray())
                return makeError(ErrorCode::Format, "manifest \"run_grids\" entry without a tensor list", path);
            QB_TRY(grids, readGrids(*entries, runGridsEntry(rg.run), list, path));
            rg.tensors = std::move(*grids);
            b.runGrids.push_back(std::move(rg));
        }
    }
    return b;
}

} // namespace qb::exporting
