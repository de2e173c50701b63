#include "export/ggml_quantize.h"

#include "base/dtype.h"
#include "io/ggml_kquants.h"
#include "quant/container_grid.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

namespace qb::exporting {

using io::GgmlType;

const std::vector<GgmlType>& ggufExportTypes()
{
    static const std::vector<GgmlType> kTypes = [] {
        std::vector<GgmlType> v;
        for (GgmlType t : io::ggmlTypes()) {
            const auto* tr = io::ggmlTypeTraits(int(t));
            if (tr->encode && tr->decode) v.push_back(t);
        }
        // Bits per weight, typeSize * 8 / blockSize, compared without division; ties keep id
        // order (Q4_0 before Q4_K, F16 before BF16).
        std::stable_sort(v.begin(), v.end(), [](GgmlType a, GgmlType b) {
            const auto* x = io::ggmlTypeTraits(int(a));
            const auto* y = io::ggmlTypeTraits(int(b));
            return x->typeSize * y->blockSize < y->typeSize * x->blockSize;
        });
        return v;
    }();
    return kTypes;
}

bool isGgufExportType(GgmlType t)
{
    const auto& all = ggufExportTypes();
    return std::find(all.begin(), all.end(), t) != all.end();
}

std::optional<GgmlType> parseGgufExportType(std::string_view name)
{
    const auto t = io::parseGgmlType(name);
    if (!t || !isGgufExportType(*t)) return std::nullopt;
    return t;
}

std::uint32_t llamaFileType(GgmlType t)
{
    // LlamaFileType (FORMATS.md §4.6); all-Q3_K/Q4_K/Q5_K files count as the _S variants.
    static constexpr std::pair<GgmlType, std::uint32_t> kFileTypes[] = {
        {GgmlType::F32, 0},   {GgmlType::F16, 1},   {GgmlType::Q4_0, 2},  {GgmlType::Q4_1, 3},  {GgmlType::Q8_0, 7},
        {GgmlType::Q5_0, 8},  {GgmlType::Q5_1, 9},  {GgmlType::Q2_K, 10}, {GgmlType::Q3_K, 11}, {GgmlType::Q4_K, 14},
        {GgmlType::Q5_K, 16}, {GgmlType::Q6_K, 18}, {GgmlType::BF16, 32}};
    for (const auto& [type, fileType] : kFileTypes)
        if (type == t) return fileType;
    return 0;
}

namespace {

// f16 bits of x when x is exactly an f16 value (finite), else nullopt.
std::optional<std::uint16_t> exactF16(double x)
{
    if (!std::isfinite(x)) return std::nullopt;
    const std::uint16_t h = f32ToF16(float(x));
    if (double(f16ToF32(h)) != x) return std::nullopt;
    return h;
}

bool isInteger(double z) { return std::isfinite(z) && std::nearbyint(z) == z; }

} // namespace

namespace {

// A K-quant row solved inside its container: super-scales from q.superScales, sub-block scale and
// min codes recovered exactly (a = d * sc, b = dmin * m), levels as they are.
bool encodeKQuantRow(GgmlType t, const quant::QuantizedRows& q, int row, void* dst)
{
    const quant::ContainerSpec* spec = quant::findContainerSpec(io::ggmlTypeName(int(t)));
    const std::int64_t cols = q.codes.cols();
    if (!spec || q.container != spec->name || cols % spec->blockSize != 0) return false;
    const int subs = spec->blockSize / spec->subBlock;
    const std::int64_t blocks = cols / spec->blockSize;
    if (q.superScales.cols() != 2 * blocks || q.scales.cols() != blocks * subs) return false;
    for (std::int64_t c = 0; c < cols; ++c)
        if (q.groupIndex[std::size_t(c)] != c / spec->subBlock) return false;
    const int scLo = spec->scaleSigned ? -(1 << (spec->scaleBits - 1)) : 0;
    const int scHi = spec->scaleSigned ? (1 << (spec->scaleBits - 1)) - 1 : (1 << spec->scaleBits) - 1;
    const int mHi = spec->hasMin ? (1 << spec->minBits) - 1 : 0;
    // The integer c with float(unit * c) == v, in [lo, hi] (0 when unit and v are 0).
    auto codeOf = [](double v, double unit, int lo, int hi) -> std::optional<int> {
        if (unit == 0.0) return v == 0.0 ? std::optional<int>(0) : std::nullopt;
        const double c = std::nearbyint(v / unit);
        if (c < lo || c > hi || double(float(unit * c)) != v) return std::nullopt;
        return int(c);
    };
    auto* out = static_cast<std::uint8_t*>(dst);
    const auto* tr = io::ggmlTypeTraits(int(t));
    for (std::int64_t b = 0; b < blocks; ++b) {
        const auto d = exactF16(q.superScales(row, 2 * b)), dmin = exactF16(q.superScales(row, 2 * b + 1));
        if (!d || !dmin) return false;
        int sc[16] = {}, m[16] = {};
        for (int j = 0; j < subs; ++j) {
            const int g = int(b) * subs + j;
            if (q.zeros(row, g) != spec->codeOffset) return false;
            const auto c = codeOf(q.scales(row, g), q.superScales(row, 2 * b), scLo, scHi);
            const double off = q.offsets.size() ? q.offsets(row, g) : 0.0;
            const auto mm = spec->hasMin ? codeOf(off, q.superScales(row, 2 * b + 1), 0, mHi)
                                         : (off == 0.0 ? std::optional<int>(0) : std::nullopt);
            if (!c || !mm) return false;
            sc[j] = *c;
            m[j] = *mm;
        }
        const std::uint8_t* L = q.codes.row(row).data() + b * spec->blockSize;
        for (int e = 0; e < spec->blockSize; ++e)
            if (L[e] >= spec->levels()) return false;
        void* y = out + b * tr->typeSize;
        switch (t) {
        case GgmlType::Q2_K: io::packQ2_K(L, *d, *dmin, sc, m, *static_cast<io::BlockQ2_K*>(y)); break;
        case GgmlType::Q3_K: io::packQ3_K(L, *d, sc, *static_cast<io::BlockQ3_K*>(y)); break;
        case GgmlType::Q4_K: io::packQ4_K(L, *d, *dmin, sc, m, *static_cast<io::BlockQ4_K*>(y)); break;
        case GgmlType::Q5_K: io::packQ5_K(L, *d, *dmin, sc, m, *static_cast<io::BlockQ5_K*>(y)); break;
        case GgmlType::Q6_K: io::packQ6_K(L, *d, sc, *static_cast<io::BlockQ6_K*>(y)); break;
        default: return false;
        }
    }
    return true;
}

} // namespace

bool encodeGridRow(GgmlType t, const quant::QuantizedRows& q, int row, void* dst)
{
    const std::int64_t cols = q.codes.cols();
    const auto* tr = io::ggmlTypeTraits(int(t));
    if (!tr || !isGgufExportType(t)) return false;
    if (!tr->isQuantized) return io::quantizeGgml(t, q.dequantized.row(row).data(), dst, cols).ok();
    if (q.cmpq) return false; // per-channel codebooks: no block type reproduces them from codes
    if (tr->blockSize == io::kGgmlQK_K) return encodeKQuantRow(t, q, row, dst);
    // Only the legacy 32-element blocks have exact constructions (FORMATS.md §4.9).
    constexpr int kQK = io::kGgmlQK;
    if (tr->blockSize != kQK || cols % kQK != 0 || std::int64_t(q.groupIndex.size()) != cols) return false;
    auto* out = static_cast<std::uint8_t*>(dst);
    std::uint8_t v[kQK];
    for (std::int64_t b = 0; b < cols / kQK; ++b) {
        const std::int64_t c0 = b * kQK;
        const int g = q.groupIndex[std::size_t(c0)];
        for (int j = 1; j < kQK; ++j)
            if (q.groupIndex[std::size_t(c0 + j)] != g) return false;
        const double s = q.scales(row, g), z = q.zeros(row, g);
        const double off = q.offsets.size() ? q.offsets(row, g) : 0.0; // grid s*(z + code) - off
        const auto d = exactF16(s);
        if (!d) return false;
        const std::uint8_t* codes = q.codes.row(row).data() + c0;
        // Shifted integer levels code + z + offset must land in [bottom, top].
        auto shifted = [&](int offset, int bottom, int top) {
            if (!isInteger(z) || off != 0.0) return false;
            for (int j = 0; j < kQK; ++j) {
                const double x = double(codes[j]) + z + offset;
                if (x < bottom || x > top) return false;
                v[j] = std::uint8_t(std::int8_t(x));
            }
            return true;
        };
        auto plainCodes = [&](int top) {
            for (int j = 0; j < kQK; ++j) {
                if (codes[j] > top) return false;
                v[j] = codes[j];
            }
            return true;
        };
        auto put = [&](const auto& y) { std::memcpy(out + b * tr->typeSize, &y, sizeof y); };
        switch (t) {
        case GgmlType::Q8_0: {
            io::BlockQ8_0 y;
            y.d = *d;
            if (!shifted(0, -128, 127)) return false;
            std::memcpy(y.qs, v, kQK);
            put(y);
            break;
        }
        case GgmlType::Q4_0: {
            io::BlockQ4_0 y;
            y.d = *d;
            if (!shifted(8, 0, 15)) return false;
            io::ggmlPackNibbles(v, y.qs);
            put(y);
            break;
        }
        case GgmlType::Q5_0: {
            io::BlockQ5_0 y;
            y.d = *d;
            if (!shifted(16, 0, 31)) return false;
            io::ggmlPackQ5(v, y.qh, y.qs);
            put(y);
            break;
        }
        case GgmlType::Q4_1: {
            io::BlockQ4_1 y;
            y.d = *d;
            const auto m = exactF16(s * z - off); // min-based: x = d*code + (s*z - off)
            if (!m || !plainCodes(15)) return false;
            y.m = *m;
            io::ggmlPackNibbles(v, y.qs);
            put(y);
            break;
        }
        case GgmlType::Q5_1: {
            io::BlockQ5_1 y;
            y.d = *d;
            if (const auto m = exactF16(s * z - off); m && plainCodes(31)) {
                y.m = *m;
            } else if (const auto m16 = exactF16(-16.0 * s); m16 && shifted(16, 0, 31)) {
                y.m = *m16; // x = d*(code + z + 16) - 16 d
            } else {
                return false;
            }
            io::ggmlPackQ5(v, y.qh, y.qs);
            put(y);
            break;
        }
        default: return false;
        }
    }
    return true;
}

namespace {

Status measure(GgmlType t, EncodedMatrix& e, const float* reference, std::int64_t rows, std::int64_t cols)
{
    const std::size_t rowBytes = io::ggmlRowBytes(t, cols);
    std::vector<float> decoded(static_cast<std::size_t>(cols));
    e.exact = true;
    e.maxAbsDiff = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
        QB_TRY_STATUS(io::dequantizeGgml(int(t), e.bytes.data() + std::size_t(r) * rowBytes, decoded.data(), cols));
        const float* ref = reference + r * cols;
        for (std::int64_t c = 0; c < cols; ++c) {
            const float a = decoded[std::size_t(c)], b = ref[c];
            if (std::memcmp(&a, &b, 4) != 0 && !(a == b)) e.exact = false; // +0 == -0 counts equal
            const double diff = std::fabs(double(a) - double(b));
            if (std::isnan(diff)) {
                e.exact = false;
                e.maxAbsDiff = std::numeric_limits<double>::infinity();
            } else {
                e.maxAbsDiff = std::max(e.maxAbsDiff, diff);
            }
        }
    }
    return {};
}

Status checkShape(GgmlType t, std::int64_t cols)
{
    if (!isGgufExportType(t))
        return makeError(ErrorCode::Unsupported, std::string("cannot write ggml type ") + io::ggmlTypeName(int(t)));
    if (io::ggmlRowBytes(t, cols) == 0)
        return makeError(ErrorCode::Shape, "row length " + std::to_string(cols) + " is not a multiple of the " +
                                               io::ggmlTypeName(int(t)) + " block size");
    return {};
}

} // namespace

Result<EncodedMatrix> encodeMatrixGgml(GgmlType t, const float* w, std::int64_t rows, std::int64_t cols)
{
    QB_TRY_STATUS(checkShape(t, cols));
    const std::size_t rowBytes = io::ggmlRowBytes(t, cols);
    EncodedMatrix e;
    e.bytes.resize(rowBytes * std::size_t(rows));
    for (std::int64_t r = 0; r < rows; ++r)
        QB_TRY_STATUS(io::quantizeGgml(t, w + r * cols, e.bytes.data() + std::size_t(r) * rowBytes, cols));
    QB_TRY_STATUS(measure(t, e, w, rows, cols));
    return e;
}

Result<EncodedMatrix> encodeGridGgml(GgmlType t, const quant::QuantizedRows& q)
{
    const std::int64_t rows = q.codes.rows(), cols = q.codes.cols();
    QB_TRY_STATUS(checkShape(t, cols));
    if (q.dequantized.rows() != rows || q.dequantized.cols() != cols)
        return makeError(ErrorCode::Shape, "grid codes and dequantized values differ in shape");
    const std::size_t rowBytes = io::ggmlRowBytes(t, cols);
    EncodedMatrix e;
    e.bytes.resize(rowBytes * std::size_t(rows));
    e.fromGrid = true;
    for (std::int64_t r = 0; r < rows; ++r) {
        std::uint8_t* dst = e.bytes.data() + std::size_t(r) * rowBytes;
        if (!encodeGridRow(t, q, int(r), dst)) {
            e.fromGrid = false;
            QB_TRY_STATUS(io::quantizeGgml(t, q.dequantized.row(r).data(), dst, cols));
        }
    }
    QB_TRY_STATUS(measure(t, e, q.dequantized.data(), rows, cols));
    return e;
}

Result<std::pair<GgmlType, EncodedMatrix>> encodeGridSmallestExact(const quant::QuantizedRows& q)
{
    for (GgmlType t : ggufExportTypes()) {
        if (io::ggmlRowBytes(t, q.codes.cols()) == 0) continue;
        // No exact grid construction for the K-quants yet: the reference requantizer never
        // reproduces a grid, so they are not candidates here.
        if (io::ggmlTypeTraits(int(t))->blockSize == io::kGgmlQK_K) continue;
        QB_TRY(e, encodeGridGgml(t, q));
        if (e->exact || t == GgmlType::F32) return std::pair<GgmlType, EncodedMatrix>(t, std::move(*e));
    }
    return makeError(ErrorCode::Internal, "no export type holds the grid");
}

} // namespace qb::exporting
