#include "export/gptq_export.h"

#include "export/hf_directory.h"
#include "io/gptq.h"
#include "io/json_value.h"
#include "io/safetensors.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>

namespace qb::exporting {

namespace {

bool isLinearWeight(const std::string& n)
{
    return n.rfind("model.layers.", 0) == 0 && n.size() > 12 && n.compare(n.size() - 12, 12, "_proj.weight") == 0;
}

std::string modulePrefix(const std::string& weightName)
{
    return weightName.substr(0, weightName.size() - std::string(".weight").size());
}

// Column layout of a grid: contiguous groups (g_idx = k / width) or an arbitrary map (act-order).
struct GroupShape {
    int groups = 1;
    int width = 0; // columns per group (max over groups)
    bool contiguous = true;
};

GroupShape groupShape(const quant::QuantizedRows& g)
{
    GroupShape s;
    const auto& gi = g.groupIndex;
    s.groups = int(g.scales.cols());
    std::vector<int> count(std::size_t(std::max(1, s.groups)), 0);
    for (std::size_t k = 0; k < gi.size(); ++k) {
        if (gi[k] >= 0 && gi[k] < s.groups) ++count[std::size_t(gi[k])];
        if (k == 0 ? gi[k] != 0 : (gi[k] != gi[k - 1] && gi[k] != gi[k - 1] + 1)) s.contiguous = false;
    }
    s.width = *std::max_element(count.begin(), count.end());
    return s;
}

int storableBits(int bits)
{
    for (int b : {2, 3, 4, 8})
        if (bits <= b) return b;
    return 0;
}

// A grid re-expressed in the GPTQ form: integer codes/zeros at `bits`, F16 scales, R group rows.
struct Converted {
    std::vector<std::uint8_t> codes;   // [N x K]
    std::vector<int> zeros;            // [N x R]
    std::vector<std::uint16_t> scales; // [N x R] F16
    std::vector<int> gidx;             // [K]
    int n = 0, k = 0, r = 0;
    double zeroChange = 0, scaleChange = 0;
    bool realZero = false, zeroRange = false, scaleRounded = false;
};

struct Layout {
    int bits = 4;
    int groupSize = -1;
    bool descAct = false;
};

Result<Converted> convertGrid(const std::string& name, const quant::QuantizedRows& g, const Layout& L)
{
    Converted c;
    c.n = int(g.codes.rows());
    c.k = int(g.codes.cols());
    if (int(g.groupIndex.size()) != c.k)
        return makeError(ErrorCode::Shape, "g_idx length differs from the columns", name);
    const int G = L.groupSize > 0 ? L.groupSize : c.k;
    c.r = (c.k + G - 1) / G;
    const GroupShape gs = groupShape(g);
    // New group row of each column and the source group each row takes.
    std::vector<int> src(std::size_t(c.r), -1);
    c.gidx.resize(std::size_t(c.k));
    for (int k = 0; k < c.k; ++k) {
        const int sg = g.groupIndex[std::size_t(k)];
        if (L.descAct) {
            if (sg >= c.r)
                return makeError(ErrorCode::Unsupported,
                                 "has " + std::to_string(gs.groups) + " groups; group_size " + std::to_string(G) +
                                     " allows " + std::to_string(c.r),
                                 name);
            c.gidx[std::size_t(k)] = sg;
            src[std::size_t(sg)] = sg;
        } else {
            const int row = k / G;
            if (src[std::size_t(row)] >= 0 && src[std::size_t(row)] != sg)
                return makeError(ErrorCode::Unsupported,
                                 "its groups (width " + std::to_string(gs.width) +
                                     ") cannot be expressed with group_size " + std::to_string(G),
                                 name);
            src[std::size_t(row)] = sg;
            c.gidx[std::size_t(k)] = row;
        }
    }
    for (auto& s : src)
        if (s < 0) s = 0; // unused group rows (act-order with fewer groups): copies of group 0
    const int maxq = (1 << L.bits) - 1;
    c.codes.resize(std::size_t(c.n) * std::size_t(c.k));
    c.zeros.resize(std::size_t(c.n) * std::size_t(c.r));
    c.scales.resize(std::size_t(c.n) * std::size_t(c.r));
    std::vector<int> zOfSrc(std::size_t(g.scales.cols()));
    std::vector<char> exactOfSrc(std::size_t(g.scales.cols()));
    std::vector<double> s16OfSrc(std::size_t(g.scales.cols()));
    for (int n = 0; n < c.n; ++n) {
        for (Eigen::Index sg = 0; sg < g.scales.cols(); ++sg) {
            const double s = g.scales(n, sg), z = g.zeros(n, sg);
            const double Z = -z;
            const double zr = std::nearbyint(Z);
            const bool integral = zr == Z;
            const int zi = int(std::clamp(zr, 1.0, double(maxq)));
            c.realZero = c.realZero || !integral;
            c.zeroRange = c.zeroRange || (integral && zi != int(zr));
            zOfSrc[std::size_t(sg)] = zi;
            exactOfSrc[std::size_t(sg)] = integral && zi == int(zr);
            const std::uint16_t h = f32ToF16(float(s));
            const double s16 = f16ToF32(h);
            if (!(s16 > 0) || !std::isfinite(s16))
                return makeError(ErrorCode::NumericalError,
                                 "scale " + std::to_string(s) + " (row " + std::to_string(n) +
                                     ") is not a positive F16 value",
                                 name);
            if (s16 != s) c.scaleRounded = true;
            s16OfSrc[std::size_t(sg)] = s16;
        }
        for (int k = 0; k < c.k; ++k) {
            const int sg = g.groupIndex[std::size_t(k)];
            const double s = g.scales(n, sg), z = g.zeros(n, sg);
            const int q0 = g.codes(n, k);
            const double w = s * (z + double(q0));
            int q = q0;
            const int Z = zOfSrc[std::size_t(sg)];
            if (!exactOfSrc[std::size_t(sg)]) {
                q = int(std::clamp(std::nearbyint(w / s + double(Z)), 0.0, double(maxq)));
                c.zeroChange = std::max(c.zeroChange, std::fabs(s * double(q - Z) - w));
            }
            c.codes[std::size_t(n) * std::size_t(c.k) + std::size_t(k)] = std::uint8_t(q);
            const double s16 = s16OfSrc[std::size_t(sg)];
            c.scaleChange = std::max(c.scaleChange, std::fabs((s16 - s) * double(q - Z)));
        }
        for (int r = 0; r < c.r; ++r) {
            const int sg = src[std::size_t(r)];
            c.zeros[std::size_t(n) * std::size_t(c.r) + std::size_t(r)] = zOfSrc[std::size_t(sg)];
            c.scales[std::size_t(n) * std::size_t(c.r) + std::size_t(r)] = f32ToF16(float(g.scales(n, sg)));
        }
    }
    return c;
}

std::vector<std::uint8_t> wordsToBytes(const std::vector<std::uint32_t>& w)
{
    std::vector<std::uint8_t> out(w.size() * 4);
    for (std::size_t i = 0; i < w.size(); ++i)
        for (int b = 0; b < 4; ++b)
            out[i * 4 + std::size_t(b)] = std::uint8_t(w[i] >> (8 * b));
    return out;
}

struct Packed {
    std::vector<std::uint8_t> qweight, qzeros, scales, gidx;
};

Packed pack(const Converted& c, int b)
{
    Packed p;
    const int mask = (1 << b) - 1;
    // qweight [K·b/32, N]: column n is the bit stream of codes over k.
    const std::size_t qRows = std::size_t(c.k) * std::size_t(b) / 32;
    std::vector<std::uint32_t> qw(qRows * std::size_t(c.n), 0), col(qRows);
    std::vector<std::uint32_t> vals(std::size_t(c.k));
    for (int n = 0; n < c.n; ++n) {
        for (int k = 0; k < c.k; ++k)
            vals[std::size_t(k)] = c.codes[std::size_t(n) * std::size_t(c.k) + std::size_t(k)];
        std::fill(col.begin(), col.end(), 0u);
        io::packGptqStream(vals.data(), vals.size(), b, col.data());
        for (std::size_t r = 0; r < qRows; ++r)
            qw[r * std::size_t(c.n) + std::size_t(n)] = col[r];
    }
    p.qweight = wordsToBytes(qw);
    // qzeros [R, N·b/32]: row r is the bit stream of (Z − 1) over n.
    const std::size_t zCols = std::size_t(c.n) * std::size_t(b) / 32;
    std::vector<std::uint32_t> qz(std::size_t(c.r) * zCols, 0);
    std::vector<std::uint32_t> zv(std::size_t(c.n));
    for (int r = 0; r < c.r; ++r) {
        for (int n = 0; n < c.n; ++n)
            zv[std::size_t(n)] =
                std::uint32_t((c.zeros[std::size_t(n) * std::size_t(c.r) + std::size_t(r)] - 1) & mask);
        io::packGptqStream(zv.data(), zv.size(), b, qz.data() + std::size_t(r) * zCols);
    }
    p.qzeros = wordsToBytes(qz);
    // scales [R, N] F16.
    p.scales.resize(std::size_t(c.r) * std::size_t(c.n) * 2);
    for (int r = 0; r < c.r; ++r)
        for (int n = 0; n < c.n; ++n) {
            const std::uint16_t h = c.scales[std::size_t(n) * std::size_t(c.r) + std::size_t(r)];
            const std::size_t o = (std::size_t(r) * std::size_t(c.n) + std::size_t(n)) * 2;
            p.scales[o] = std::uint8_t(h & 0xff);
            p.scales[o + 1] = std::uint8_t(h >> 8);
        }
    std::vector<std::uint32_t> gi(c.gidx.begin(), c.gidx.end());
    p.gidx = wordsToBytes(gi);
    return p;
}

const char* torchDtype(DType t) { return t == DType::F16 ? "float16" : t == DType::BF16 ? "bfloat16" : "float32"; }

} // namespace

bool GptqAnalysis::needsRounding() const
{
    for (const auto& i : issues)
        if (i.kind != "scale-f16" && i.kind != "bits") return true;
    return false;
}

const io::GptqLayout* GptqAnalysis::layoutOf(const std::string& weightName) const
{
    for (const auto& m : modules)
        if (m.tensor == weightName) return &m.layout;
    return nullptr;
}

std::size_t GptqAnalysis::overrides() const
{
    const io::GptqLayout base{bits, groupSize, descAct, sym};
    return std::size_t(std::count_if(modules.begin(), modules.end(), [&](const auto& m) { return m.layout != base; }));
}

std::string GptqAnalysis::summary() const
{
    std::ostringstream o;
    o << "GPTQ: bits " << bits << ", group_size " << groupSize << ", desc_act " << (descAct ? "true" : "false")
      << ", sym " << (sym ? "true" : "false") << "; " << quantized.size() << " quantized linears";
    if (const std::size_t n = overrides()) o << ", " << n << " with per-module overrides (dynamic)";
    if (!unquantized.empty()) o << ", " << unquantized.size() << " left unquantized";
    o << "\n";
    for (const auto& i : issues)
        o << "  " << i.kind << "  " << i.tensor << ": " << i.detail << " (max abs change " << i.maxAbsChange << ")\n";
    return o.str();
}

Result<GptqAnalysis> analyzeGptqGrids(const io::Checkpoint& ck, const GridLookup& gridFor)
{
    GptqAnalysis a;
    // Each module keeps its own layout; the most common one becomes the config's, the others
    // per-module `dynamic` overrides.
    std::vector<std::pair<io::GptqLayout, int>> counts;
    for (const TensorInfo& t : ck.tensors) {
        const quant::StoredGridPtr stored = gridFor && t.shape.size() == 2 ? gridFor(t.name) : nullptr;
        if (!stored) {
            if (isLinearWeight(t.name)) a.unquantized.push_back(t.name);
            continue;
        }
        if (stored->rows() != t.shape[0] || stored->cols() != t.shape[1])
            return makeError(ErrorCode::Shape, "quantization grid shape does not match the tensor", t.name);
        const quant::QuantizedRows* g = &stored->params();
        if (g->cmpq) // not Unsupported: --round-grids cannot help either
            return makeError(ErrorCode::InvalidArgument,
                             "CMPQ per-channel codebooks cannot be stored in a GPTQ checkpoint (uniform grids only); "
                             "the nearest exact containers are fake-quantized safetensors or GGUF F16 (every CMPQ "
                             "value is F16), and .qbproj keeps the codes",
                             t.name);
        a.quantized.push_back(t.name);
        const GroupShape gs = groupShape(*g);
        io::GptqLayout L;
        L.bits = storableBits(g->bits);
        if (L.bits == 0)
            return makeError(ErrorCode::Unsupported,
                             "a " + std::to_string(g->bits) + "-bit grid: GPTQ stores at most 8 bits", t.name);
        L.groupSize = gs.groups > 1 ? gs.width : -1;
        L.descAct = !gs.contiguous;
        if (std::int64_t(t.shape[1]) * L.bits % 32 != 0 || std::int64_t(t.shape[0]) * L.bits % 32 != 0)
            return makeError(ErrorCode::Shape,
                             "GPTQ packing at " + std::to_string(L.bits) + " bits needs both dimensions (" +
                                 t.shapeString() + ") to fill whole 32-bit words",
                             t.name);
        if (g->bits != L.bits)
            a.issues.push_back({t.name, "bits",
                                std::to_string(g->bits) + "-bit grid stored as " + std::to_string(L.bits) +
                                    " bits (exact: same scales, zeros and codes)",
                                0});
        QB_TRY(c, convertGrid(t.name, stored->unpack(), {L.bits, L.groupSize, L.descAct}));
        if (c->realZero)
            a.issues.push_back(
                {t.name, "real-zero", "real-valued zero-points rounded to integers, codes re-derived", c->zeroChange});
        else if (c->zeroRange)
            a.issues.push_back({t.name, "zero-range",
                                "zero-points outside [1, " + std::to_string((1 << L.bits) - 1) +
                                    "] (v1 stores Z-1) clamped, codes re-derived",
                                c->zeroChange});
        if (c->scaleRounded) a.issues.push_back({t.name, "scale-f16", "scales rounded to F16", c->scaleChange});
        a.maxAbsChange = std::max({a.maxAbsChange, c->zeroChange + c->scaleChange});
        L.sym = std::all_of(c->zeros.begin(), c->zeros.end(), [&](int z) { return z == (1 << (L.bits - 1)); });
        a.modules.push_back({t.name, L});
        auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& e) { return e.first == L; });
        if (it == counts.end()) counts.emplace_back(L, 1);
        else ++it->second;
    }
    if (a.modules.empty())
        return makeError(ErrorCode::InvalidArgument, "no quantized tensor to export as GPTQ", ck.path);
    const io::GptqLayout base = std::max_element(counts.begin(), counts.end(), [](const auto& x, const auto& y) {
                                    return x.second < y.second;
                                })->first; // first of the most common: the first module's layout on a tie
    a.bits = base.bits;
    a.groupSize = base.groupSize;
    a.descAct = base.descAct;
    a.sym = base.sym;
    return a;
}

Result<GptqExportReport> exportGptq(const io::Checkpoint& ck, const std::string& outDir, const GptqExportOptions& opt,
                                    RunContext* ctx)
{
    if (ctx) ctx->beginStage("check", 0);
    QB_TRY(an, analyzeGptqGrids(ck, opt.gridFor));
    GptqExportReport rep;
    rep.path = outDir;
    rep.analysis = *an;
    if (opt.policy == GptqGridPolicy::Refuse && an->needsRounding()) {
        std::string what;
        for (const auto& i : an->issues)
            if (i.kind != "scale-f16" && i.kind != "bits") {
                what = i.tensor + ": " + i.detail;
                break;
            }
        return makeError(ErrorCode::Unsupported,
                         "the GPTQ format cannot hold these grids as they are (" + what +
                             "); export with rounding (max abs change " + std::to_string(an->maxAbsChange) +
                             ") or choose another format",
                         outDir);
    }
    for (const auto& n : an->unquantized)
        rep.warnings.push_back("not quantized, written as a plain weight: " + n);

    auto cache = std::make_shared<std::map<std::string, std::pair<int, Packed>>>();
    std::vector<SafetensorsTensor> tensors;
    DType torchDt = DType::F16; // config torch_dtype: what the token embeddings are written in
    for (const TensorInfo& t : ck.tensors) {
        const io::GptqLayout* layout = an->layoutOf(t.name);
        if (!layout) {
            SafetensorsTensor s;
            s.name = t.name;
            s.shape = t.shape;
            const DType src = dtypeIsFloat(t.dtype) && !t.encoded() ? t.dtype : DType::F32;
            const bool embedding = t.name == "model.embed_tokens.weight" || t.name == "lm_head.weight";
            if (embedding && opt.embeddingDtype) s.dtype = *opt.embeddingDtype;
            else if (t.name.ends_with("norm.weight")) s.dtype = DType::F32;
            else s.dtype = opt.plainDtype.value_or(src);
            if (t.name == "model.embed_tokens.weight") torchDt = s.dtype;
            const DType dt = s.dtype;
            s.produce = [&t, dt]() -> Result<std::vector<std::uint8_t>> {
                if (t.dtype == dt && !t.encoded())
                    return std::vector<std::uint8_t>(t.bytes.data(), t.bytes.data() + t.bytes.size());
                std::vector<float> w(std::size_t(t.numel()));
                QB_TRY_STATUS(io::readTensorF32(t, w.data()));
                std::vector<std::uint8_t> out(w.size() * dtypeSize(dt));
                QB_TRY_STATUS(convertFromF32(dt, w.data(), out.data(), w.size()));
                return out;
            };
            tensors.push_back(std::move(s));
            continue;
        }
        const std::string prefix = modulePrefix(t.name);
        const quant::StoredGridPtr g = opt.gridFor(t.name);
        const Layout L{layout->bits, layout->groupSize, layout->descAct};
        const int b = L.bits;
        const std::int64_t N = t.shape[0], K = t.shape[1];
        const std::int64_t G = L.groupSize > 0 ? L.groupSize : K;
        const std::int64_t R = (K + G - 1) / G;
        auto part = [cache, prefix, g, L, name = t.name](int which) -> Result<std::vector<std::uint8_t>> {
            auto it = cache->find(prefix);
            if (it == cache->end()) {
                QB_TRY(c, convertGrid(name, g->unpack(), L));
                it = cache->emplace(prefix, std::pair(0, pack(*c, L.bits))).first;
            }
            Packed& p = it->second.second;
            std::vector<std::uint8_t>& v = which == 0   ? p.qweight
                                           : which == 1 ? p.qzeros
                                           : which == 2 ? p.scales
                                                        : p.gidx;
            std::vector<std::uint8_t> out = std::move(v);
            if (++it->second.first == 4) cache->erase(it);
            return out;
        };
        tensors.push_back({prefix + ".qweight", DType::I32, {K * b / 32, N}, [part] { return part(0); }});
        tensors.push_back({prefix + ".qzeros", DType::I32, {R, N * b / 32}, [part] { return part(1); }});
        tensors.push_back({prefix + ".scales", DType::F16, {R, N}, [part] { return part(2); }});
        tensors.push_back({prefix + ".g_idx", DType::I32, {K}, [part] { return part(3); }});
    }

    std::uint64_t total = 0;
    for (const auto& t : tensors)
        total += t.byteSize();
    QB_TRY(stage, StagingDirectory::create(outDir, total + (1u << 20)));

    io::JsonValue qc;
    qc.set("quant_method", "gptq");
    qc.set("bits", an->bits);
    qc.set("group_size", an->groupSize);
    qc.set("desc_act", an->descAct);
    qc.set("sym", an->sym);
    qc.set("checkpoint_format", "gptq");
    qc.set("damp_percent", opt.dampPercent);
    qc.set("true_sequential", true);
    qc.set("static_groups", false);
    qc.set("lm_head", false);
    qc.set("pack_dtype", "int32");
    // Per-module exceptions (GPTQModel's `dynamic`, FORMATS in README): unquantized linears
    // excluded, modules whose layout differs from the base overridden, each by its exact name.
    const io::GptqLayout base{an->bits, an->groupSize, an->descAct, an->sym};
    io::JsonValue dyn = io::JsonObject{};
    for (const auto& n : an->unquantized)
        dyn.set(io::gptqModulePattern(modulePrefix(n), true), io::JsonObject{});
    for (const auto& m : an->modules) {
        if (m.layout == base) continue;
        io::JsonValue o = io::JsonObject{};
        if (m.layout.bits != base.bits) o.set("bits", m.layout.bits);
        if (m.layout.groupSize != base.groupSize) o.set("group_size", m.layout.groupSize);
        if (m.layout.descAct != base.descAct) o.set("desc_act", m.layout.descAct);
        if (m.layout.sym != base.sym) o.set("sym", m.layout.sym);
        dyn.set(io::gptqModulePattern(modulePrefix(m.tensor)), std::move(o));
    }
    if (!dyn.asObject().empty()) qc.set("dynamic", std::move(dyn));
    io::JsonValue meta;
    meta.set("quantizer", io::JsonArray{io::JsonValue("quantbench:0.1")});
    qc.set("meta", meta);
    QB_TRY(config, sourceConfigJson(ck));
    io::JsonValue cfg = std::move(*config);
    cfg.set("torch_dtype", torchDtype(torchDt));
    cfg.set("quantization_config", qc);
    QB_TRY_STATUS(writeSmallFile(stage->file("config.json"), io::toJsonText(cfg, 2)));
    io::JsonValue qfile = qc;
    qfile.set("format", "gptq");
    qfile.set("model_file_base_name", "model");
    QB_TRY_STATUS(writeSmallFile(stage->file("quantize_config.json"), io::toJsonText(qfile, 2)));
    QB_TRY(payload, writeHfWeights(*stage, ck, tensors, opt.verify, opt.failAfterBytesForTesting, ctx));
    rep.copiedFiles = payload->copiedFiles;
    rep.bytes = payload->bytes;
    rep.tensorCount = tensors.size();
    if (opt.verify) {
        const VerifyReport& v1 = *payload->verify;
        QB_TRY(v2, verifyGptqDirectory(stage->path(), ctx));
        rep.verify = std::move(*v2);
        rep.verify.path = outDir;
        rep.verify.problems.insert(rep.verify.problems.begin(), v1.problems.begin(), v1.problems.end());
        rep.verify.ok = rep.verify.problems.empty();
        QB_TRY_STATUS(rep.verify.verificationStatus("GPTQ checkpoint", outDir));
    }
    if (ctx && ctx->isCancelled()) return RunContext::cancelledError(outDir);
    QB_TRY_STATUS(stage->install());
    return rep;
}

bool isGptqDirectory(const std::string& dir)
{
    auto text = readSmallFile(dir + "/config.json");
    if (!text) return false;
    auto j = io::parseJson(*text, "config.json");
    if (!j) return false;
    const io::JsonValue* qc = j->find("quantization_config");
    const io::JsonValue* m = qc ? qc->find("quant_method") : nullptr;
    return m && m->isString() && m->asString() == "gptq";
}

Result<VerifyReport> verifyGptqDirectory(const std::string& dir, RunContext* ctx)
{
    QB_TRY(text, readSmallFile(dir + "/config.json"));
    QB_TRY(cfg, io::parseJson(*text, dir + "/config.json"));
    const io::JsonValue* qc = cfg->find("quantization_config");
    if (!qc || !qc->isObject()) return makeError(ErrorCode::Format, "config.json has no quantization_config", dir);
    auto num = [&](const char* k) -> std::optional<std::int64_t> {
        const io::JsonValue* v = qc->find(k);
        return v && v->isInteger() ? std::optional(v->asInteger()) : std::nullopt;
    };
    QB_TRY(st, verifySafetensorsFile(dir + "/model.safetensors", {}, ctx));
    VerifyReport r = std::move(*st);
    r.path = dir;
    r.format = "gptq";
    const auto bits = num("bits"), group = num("group_size");
    const io::JsonValue* fmt = qc->find("checkpoint_format");
    if (!bits || (*bits != 2 && *bits != 3 && *bits != 4 && *bits != 8))
        r.problems.push_back("quantization_config.bits must be 2, 3, 4 or 8");
    if (!group || *group == 0 || *group < -1)
        r.problems.push_back("quantization_config.group_size is missing or invalid");
    if (fmt && !(fmt->isString() && (fmt->asString() == "gptq" || fmt->asString() == "gptq_v2")))
        r.problems.push_back("unknown checkpoint_format");
    if (!r.problems.empty()) {
        r.ok = false;
        return r;
    }
    auto gptq = io::parseGptqConfig(*qc, dir + "/config.json: quantization_config");
    if (!gptq) {
        r.problems.push_back(gptq.error().message + " (" + gptq.error().context + ")");
        r.ok = false;
        return r;
    }
    QB_TRY(tensors, io::readSafetensorsFile(dir + "/model.safetensors"));
    std::map<std::string, const TensorInfo*> by;
    for (const auto& t : *tensors)
        by[t.name] = &t;
    int modules = 0;
    for (const auto& [name, t] : by) {
        if (name.size() < 8 || name.compare(name.size() - 8, 8, ".qweight") != 0) continue;
        ++modules;
        const std::string p = name.substr(0, name.size() - 8);
        const TensorInfo* qz = by.count(p + ".qzeros") ? by[p + ".qzeros"] : nullptr;
        const TensorInfo* sc = by.count(p + ".scales") ? by[p + ".scales"] : nullptr;
        const TensorInfo* gi = by.count(p + ".g_idx") ? by[p + ".g_idx"] : nullptr;
        if (!qz || !sc || !gi) {
            r.problems.push_back(p + ": qzeros, scales or g_idx missing");
            continue;
        }
        if (by.count(p + ".weight")) r.problems.push_back(p + ": both weight and qweight present");
        if (t->dtype != DType::I32 || qz->dtype != DType::I32 || gi->dtype != DType::I32 || sc->dtype != DType::F16) {
            r.problems.push_back(p + ": dtypes must be qweight/qzeros/g_idx I32 and scales F16");
            continue;
        }
        if (t->shape.size() != 2 || gi->shape.size() != 1 || sc->shape.size() != 2 || qz->shape.size() != 2) {
            r.problems.push_back(p + ": wrong tensor ranks");
            continue;
        }
        const auto layout = gptq->layoutFor(p);
        if (!layout) {
            r.problems.push_back(p + ": packed, but a \"-:\" dynamic rule excludes it");
            continue;
        }
        const std::int64_t b = layout->bits, K = gi->shape[0], N = t->shape[1];
        const std::int64_t G = layout->groupSize > 0 ? layout->groupSize : K, R = (K + G - 1) / G;
        if (t->shape[0] != K * b / 32 || sc->shape != std::vector<std::int64_t>{R, N} ||
            qz->shape != std::vector<std::int64_t>{R, N * b / 32}) {
            r.problems.push_back(p + ": shapes qweight " + t->shapeString() + ", qzeros " + qz->shapeString() +
                                 ", scales " + sc->shapeString() + ", g_idx " + gi->shapeString() +
                                 " do not match bits " + std::to_string(b) + " / group_size " +
                                 std::to_string(layout->groupSize));
            continue;
        }
        std::vector<float> s(std::size_t(sc->numel()));
        QB_TRY_STATUS(convertToF32(DType::F16, sc->bytes.data(), s.data(), s.size()));
        if (std::any_of(s.begin(), s.end(), [](float x) { return !(x > 0) || !std::isfinite(x); }))
            r.problems.push_back(p + ": scales must be finite and positive");
        std::vector<float> g(static_cast<std::size_t>(K));
        QB_TRY_STATUS(convertToF32(DType::I32, gi->bytes.data(), g.data(), g.size()));
        if (std::any_of(g.begin(), g.end(), [R](float x) { return x < 0 || x >= float(R); }))
            r.problems.push_back(p + ": g_idx values outside [0, " + std::to_string(R) + ")");
    }
    if (modules == 0) r.problems.push_back("no packed (qweight) module found");
    r.architecture = "gptq " + std::to_string(*bits) + "-bit, group " + std::to_string(*group) + ", " +
                     std::to_string(modules) + " packed modules";
    r.ok = r.problems.empty();
    return r;
}

} // namespace qb::exporting
