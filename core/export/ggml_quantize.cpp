#include "export/ggml_quantize.h"

#include "base/dtype.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>

// This file is compiled with -ffp-contract=off (see CMakeLists.txt): ggml's reference
// quantizers are specified as separate multiply and add, and a fused multiply-add would change
// which integer a value rounds to.

namespace qb::exporting {

using io::GgmlType;

const std::vector<GgmlType>& ggufExportTypes()
{
    static const std::vector<GgmlType> kTypes = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                                                 GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::F16,
                                                 GgmlType::BF16, GgmlType::F32};
    return kTypes;
}

bool isGgufExportType(GgmlType t)
{
    const auto& all = ggufExportTypes();
    return std::find(all.begin(), all.end(), t) != all.end();
}

std::string ggmlTypeLowerName(GgmlType t)
{
    std::string s = io::ggmlTypeName(int(t));
    for (char& c : s)
        c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::optional<GgmlType> parseGgufExportType(std::string_view name)
{
    for (GgmlType t : ggufExportTypes()) {
        const std::string lower = ggmlTypeLowerName(t);
        if (name.size() != lower.size()) continue;
        bool same = true;
        for (std::size_t i = 0; i < name.size(); ++i)
            same = same && char(std::tolower(static_cast<unsigned char>(name[i]))) == lower[i];
        if (same) return t;
    }
    return std::nullopt;
}

std::uint32_t llamaFileType(GgmlType t)
{
    switch (t) {
    case GgmlType::F32:
        return 0;
    case GgmlType::F16:
        return 1;
    case GgmlType::Q4_0:
        return 2;
    case GgmlType::Q4_1:
        return 3;
    case GgmlType::Q8_0:
        return 7;
    case GgmlType::Q5_0:
        return 8;
    case GgmlType::Q5_1:
        return 9;
    case GgmlType::BF16:
        return 32;
    default:
        return 0;
    }
}

std::size_t ggmlRowBytes(GgmlType t, std::int64_t n)
{
    const auto* tr = io::ggmlTypeTraits(int(t));
    if (!tr || n < 0 || n % tr->blockSize != 0) return 0;
    return std::size_t(n / tr->blockSize) * std::size_t(tr->typeSize);
}

namespace {

std::uint16_t f16(float x)
{
    return f32ToF16(x);
}

void putQ5(std::uint8_t* qhOut, std::uint8_t* qs, const std::uint8_t* v /*32 values 0..31*/)
{
    std::uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = std::uint8_t((v[j] & 0x0F) | ((v[j + 16] & 0x0F) << 4));
        qh |= std::uint32_t((v[j] & 0x10u) >> 4) << (j + 0);
        qh |= std::uint32_t((v[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(qhOut, &qh, 4);
}

void putNibbles(std::uint8_t* qs, const std::uint8_t* v /*32 values 0..15*/)
{
    for (int j = 0; j < 16; ++j)
        qs[j] = std::uint8_t(v[j] | (v[j + 16] << 4));
}

// quantize_row_q8_0_ref
void refQ8_0(const float* x, io::BlockQ8_0& y)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j)
        amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y.d = f16(d);
    for (int j = 0; j < 32; ++j) {
        const float x0 = x[j] * id;
        y.qs[j] = std::int8_t(std::round(x0));
    }
}

// quantize_row_q4_0_ref (bits 4, offset 8) and quantize_row_q5_0_ref (bits 5, offset 16).
void refSymmetric(const float* x, int bits, std::uint16_t& dOut, std::uint8_t* v)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j)
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    const int half = 1 << (bits - 1);
    const float d = max / float(-half);
    const float id = d ? 1.0f / d : 0.0f;
    dOut = f16(d);
    const float bias = float(half) + 0.5f;
    for (int j = 0; j < 32; ++j) {
        const float x0 = x[j] * id;
        v[j] = std::uint8_t(std::min(2 * half - 1, int(std::int8_t(x0 + bias))));
    }
}

// quantize_row_q4_1_ref (bits 4, clamped) and quantize_row_q5_1_ref (bits 5, not clamped).
void refMin(const float* x, int bits, std::uint16_t& dOut, std::uint16_t& mOut, std::uint8_t* v)
{
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; ++j) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / float((1 << bits) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    dOut = f16(d);
    mOut = f16(min);
    for (int j = 0; j < 32; ++j) {
        const float x0 = (x[j] - min) * id;
        v[j] = bits == 4 ? std::uint8_t(std::min(15, int(std::int8_t(x0 + 0.5f))))
                         : std::uint8_t(x0 + 0.5f);
    }
}

} // namespace

Status quantizeGgmlRef(GgmlType t, const float* src, void* dst, std::int64_t n)
{
    if (!isGgufExportType(t))
        return makeError(ErrorCode::Unsupported,
                         std::string("cannot write ggml type ") + io::ggmlTypeName(int(t)));
    if (ggmlRowBytes(t, n) == 0 && n != 0)
        return makeError(ErrorCode::Shape, std::to_string(n) +
                                               " elements is not a multiple of the " +
                                               io::ggmlTypeName(int(t)) + " block size");
    auto* out = static_cast<std::uint8_t*>(dst);
    switch (t) {
    case GgmlType::F32:
        std::memcpy(out, src, std::size_t(n) * 4);
        return {};
    case GgmlType::F16:
        return convertFromF32(DType::F16, src, out, std::size_t(n));
    case GgmlType::BF16:
        return convertFromF32(DType::BF16, src, out, std::size_t(n));
    default:
        break;
    }
    const std::int64_t blocks = n / 32;
    std::uint8_t v[32];
    for (std::int64_t b = 0; b < blocks; ++b) {
        const float* x = src + b * 32;
        switch (t) {
        case GgmlType::Q8_0: {
            io::BlockQ8_0 y;
            refQ8_0(x, y);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q4_0: {
            io::BlockQ4_0 y;
            refSymmetric(x, 4, y.d, v);
            putNibbles(y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q5_0: {
            io::BlockQ5_0 y;
            refSymmetric(x, 5, y.d, v);
            putQ5(y.qh, y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q4_1: {
            io::BlockQ4_1 y;
            refMin(x, 4, y.d, y.m, v);
            putNibbles(y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q5_1: {
            io::BlockQ5_1 y;
            refMin(x, 5, y.d, y.m, v);
            putQ5(y.qh, y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        default:
            return makeError(ErrorCode::Internal, "unhandled ggml type");
        }
    }
    return {};
}

namespace {

// f16 bits of x when x is exactly an f16 value (finite), else nullopt.
std::optional<std::uint16_t> exactF16(double x)
{
    if (!std::isfinite(x)) return std::nullopt;
    const std::uint16_t h = f16(float(x));
    if (double(f16ToF32(h)) != x) return std::nullopt;
    return h;
}

bool isInteger(double z)
{
    return std::isfinite(z) && std::nearbyint(z) == z;
}

} // namespace

bool encodeGridRow(GgmlType t, const quant::QuantizedRows& q, int row, void* dst)
{
    const std::int64_t cols = q.codes.cols();
    auto* out = static_cast<std::uint8_t*>(dst);
    if (t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16)
        return quantizeGgmlRef(t, q.dequantized.row(row).data(), out, cols).ok();
    if (!isGgufExportType(t) || cols % 32 != 0 || std::int64_t(q.groupIndex.size()) != cols)
        return false;
    std::uint8_t v[32];
    for (std::int64_t b = 0; b < cols / 32; ++b) {
        const std::int64_t c0 = b * 32;
        const int g = q.groupIndex[std::size_t(c0)];
        for (int j = 1; j < 32; ++j)
            if (q.groupIndex[std::size_t(c0 + j)] != g) return false;
        const double s = q.scales(row, g), z = q.zeros(row, g);
        const auto d = exactF16(s);
        if (!d) return false;
        const std::uint8_t* codes = q.codes.row(row).data() + c0;
        // Shifted integer levels code + z + offset must land in [0, top].
        auto shifted = [&](int offset, int top) {
            if (!isInteger(z)) return false;
            for (int j = 0; j < 32; ++j) {
                const double x = double(codes[j]) + z + offset;
                if (x < 0 || x > top) return false;
                v[j] = std::uint8_t(x);
            }
            return true;
        };
        auto plainCodes = [&](int top) {
            for (int j = 0; j < 32; ++j) {
                if (codes[j] > top) return false;
                v[j] = codes[j];
            }
            return true;
        };
        switch (t) {
        case GgmlType::Q8_0: {
            io::BlockQ8_0 y;
            y.d = *d;
            if (!isInteger(z)) return false;
            for (int j = 0; j < 32; ++j) {
                const double x = double(codes[j]) + z;
                if (x < -128 || x > 127) return false;
                y.qs[j] = std::int8_t(x);
            }
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q4_0: {
            io::BlockQ4_0 y;
            y.d = *d;
            if (!shifted(8, 15)) return false;
            putNibbles(y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q5_0: {
            io::BlockQ5_0 y;
            y.d = *d;
            if (!shifted(16, 31)) return false;
            putQ5(y.qh, y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q4_1: {
            io::BlockQ4_1 y;
            y.d = *d;
            const auto m = exactF16(s * z); // min-based: x = d*code + s*z
            if (!m || !plainCodes(15)) return false;
            y.m = *m;
            putNibbles(y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q5_1: {
            io::BlockQ5_1 y;
            y.d = *d;
            if (const auto m = exactF16(s * z); m && plainCodes(31)) {
                y.m = *m;
            } else if (const auto m16 = exactF16(-16.0 * s); m16 && shifted(16, 31)) {
                y.m = *m16; // x = d*(code + z + 16) - 16 d
            } else {
                return false;
            }
            putQ5(y.qh, y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        default:
            return false;
        }
    }
    return true;
}

namespace {

Status measure(GgmlType t, EncodedMatrix& e, const float* reference, std::int64_t rows,
               std::int64_t cols)
{
    const std::size_t rowBytes = ggmlRowBytes(t, cols);
    std::vector<float> decoded(static_cast<std::size_t>(cols));
    e.exact = true;
    e.maxAbsDiff = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
        QB_TRY_STATUS(io::dequantizeGgml(int(t), e.bytes.data() + std::size_t(r) * rowBytes,
                                         decoded.data(), cols));
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
        return makeError(ErrorCode::Unsupported,
                         std::string("cannot write ggml type ") + io::ggmlTypeName(int(t)));
    if (ggmlRowBytes(t, cols) == 0)
        return makeError(ErrorCode::Shape, "row length " + std::to_string(cols) +
                                               " is not a multiple of the " +
                                               io::ggmlTypeName(int(t)) + " block size");
    return {};
}

} // namespace

Result<EncodedMatrix> encodeMatrixGgml(GgmlType t, const float* w, std::int64_t rows,
                                       std::int64_t cols)
{
    QB_TRY_STATUS(checkShape(t, cols));
    const std::size_t rowBytes = ggmlRowBytes(t, cols);
    EncodedMatrix e;
    e.bytes.resize(rowBytes * std::size_t(rows));
    for (std::int64_t r = 0; r < rows; ++r)
        QB_TRY_STATUS(
            quantizeGgmlRef(t, w + r * cols, e.bytes.data() + std::size_t(r) * rowBytes, cols));
    QB_TRY_STATUS(measure(t, e, w, rows, cols));
    return e;
}

Result<EncodedMatrix> encodeGridGgml(GgmlType t, const quant::QuantizedRows& q)
{
    const std::int64_t rows = q.codes.rows(), cols = q.codes.cols();
    QB_TRY_STATUS(checkShape(t, cols));
    if (q.dequantized.rows() != rows || q.dequantized.cols() != cols)
        return makeError(ErrorCode::Shape, "grid codes and dequantized values differ in shape");
    const std::size_t rowBytes = ggmlRowBytes(t, cols);
    EncodedMatrix e;
    e.bytes.resize(rowBytes * std::size_t(rows));
    e.fromGrid = true;
    for (std::int64_t r = 0; r < rows; ++r) {
        std::uint8_t* dst = e.bytes.data() + std::size_t(r) * rowBytes;
        if (!encodeGridRow(t, q, int(r), dst)) {
            e.fromGrid = false;
            QB_TRY_STATUS(quantizeGgmlRef(t, q.dequantized.row(r).data(), dst, cols));
        }
    }
    QB_TRY_STATUS(measure(t, e, q.dequantized.data(), rows, cols));
    return e;
}

Result<std::pair<GgmlType, EncodedMatrix>> encodeGridSmallestExact(const quant::QuantizedRows& q)
{
    for (GgmlType t : ggufExportTypes()) {
        if (ggmlRowBytes(t, q.codes.cols()) == 0) continue;
        QB_TRY(e, encodeGridGgml(t, q));
        if (e->exact || t == GgmlType::F32)
            return std::pair<GgmlType, EncodedMatrix>(t, std::move(*e));
    }
    return makeError(ErrorCode::Internal, "no export type holds the grid");
}

} // namespace qb::exporting
