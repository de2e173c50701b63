#include "io/ggml_codec.h"

#include "base/dtype.h"
#include "io/ggml_kquants.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>

// Compiled with -ffp-contract=off (see CMakeLists.txt): ggml's reference quantizers are specified
// as separate multiply and add, and a fused multiply-add would change which integer a value
// rounds to.

namespace qb::io {

void ggmlPackNibbles(const std::uint8_t* levels, std::uint8_t* qs)
{
    for (int j = 0; j < kGgmlQK / 2; ++j)
        qs[j] = std::uint8_t(levels[j] | (levels[j + 16] << 4));
}

void ggmlPackQ5(const std::uint8_t* levels, std::uint8_t* qhOut, std::uint8_t* qs)
{
    std::uint32_t qh = 0;
    for (int j = 0; j < kGgmlQK / 2; ++j) {
        qs[j] = std::uint8_t((levels[j] & 0x0F) | ((levels[j + 16] & 0x0F) << 4));
        qh |= std::uint32_t((levels[j] & 0x10u) >> 4) << (j + 0);
        qh |= std::uint32_t((levels[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(qhOut, &qh, 4);
}

namespace {

void unpackNibbles(const std::uint8_t* qs, int* levels)
{
    for (int j = 0; j < kGgmlQK / 2; ++j) {
        levels[j] = qs[j] & 0x0F;
        levels[j + 16] = qs[j] >> 4;
    }
}

void unpackQ5(const std::uint8_t* qhIn, const std::uint8_t* qs, int* levels)
{
    std::uint32_t qh;
    std::memcpy(&qh, qhIn, 4);
    for (int j = 0; j < kGgmlQK / 2; ++j) {
        levels[j] = (qs[j] & 0x0F) | (int((qh >> j) << 4) & 0x10);
        levels[j + 16] = (qs[j] >> 4) | (int(qh >> (j + 12)) & 0x10);
    }
}

// ---- Legacy 32-element blocks: quantize_row_*_ref and dequantize_row_* for one block -----------

void quantizeQ8_0(const float* x, BlockQ8_0& y)
{
    float amax = 0.0f;
    for (int j = 0; j < kGgmlQK; ++j)
        amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y.d = f32ToF16(d);
    for (int j = 0; j < kGgmlQK; ++j) {
        const float x0 = x[j] * id;
        y.qs[j] = std::int8_t(std::round(x0));
    }
}

// quantize_row_q4_0_ref (bits 4, offset 8) and quantize_row_q5_0_ref (bits 5, offset 16).
void quantizeSymmetric(const float* x, int bits, std::uint16_t& dOut, std::uint8_t* v)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kGgmlQK; ++j)
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    const int half = 1 << (bits - 1);
    const float d = max / float(-half);
    const float id = d ? 1.0f / d : 0.0f;
    dOut = f32ToF16(d);
    const float bias = float(half) + 0.5f;
    for (int j = 0; j < kGgmlQK; ++j) {
        const float x0 = x[j] * id;
        v[j] = std::uint8_t(std::min(2 * half - 1, int(std::int8_t(x0 + bias))));
    }
}

// quantize_row_q4_1_ref (bits 4, clamped) and quantize_row_q5_1_ref (bits 5, not clamped).
void quantizeMin(const float* x, int bits, std::uint16_t& dOut, std::uint16_t& mOut, std::uint8_t* v)
{
    float min = x[0], max = x[0];
    for (int j = 1; j < kGgmlQK; ++j) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / float((1 << bits) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    dOut = f32ToF16(d);
    mOut = f32ToF16(min);
    for (int j = 0; j < kGgmlQK; ++j) {
        const float x0 = (x[j] - min) * id;
        v[j] = bits == 4 ? std::uint8_t(std::min(15, int(std::int8_t(x0 + 0.5f)))) : std::uint8_t(x0 + 0.5f);
    }
}

void quantizeQ4_0(const float* x, BlockQ4_0& y)
{
    std::uint8_t v[kGgmlQK];
    quantizeSymmetric(x, 4, y.d, v);
    ggmlPackNibbles(v, y.qs);
}
void quantizeQ5_0(const float* x, BlockQ5_0& y)
{
    std::uint8_t v[kGgmlQK];
    quantizeSymmetric(x, 5, y.d, v);
    ggmlPackQ5(v, y.qh, y.qs);
}
void quantizeQ4_1(const float* x, BlockQ4_1& y)
{
    std::uint8_t v[kGgmlQK];
    quantizeMin(x, 4, y.d, y.m, v);
    ggmlPackNibbles(v, y.qs);
}
void quantizeQ5_1(const float* x, BlockQ5_1& y)
{
    std::uint8_t v[kGgmlQK];
    quantizeMin(x, 5, y.d, y.m, v);
    ggmlPackQ5(v, y.qh, y.qs);
}

void dequantizeQ8_0(const BlockQ8_0& x, float* y)
{
    const float d = f16ToF32(x.d);
    for (int j = 0; j < kGgmlQK; ++j)
        y[j] = float(x.qs[j]) * d;
}
// Q4_0 / Q5_0: x = d * (level - offset).
void dequantizeOffset(std::uint16_t dh, const int* levels, int offset, float* y)
{
    const float d = f16ToF32(dh);
    for (int j = 0; j < kGgmlQK; ++j)
        y[j] = float(levels[j] - offset) * d;
}
// Q4_1 / Q5_1: x = d * level + m.
void dequantizeMin(std::uint16_t dh, std::uint16_t mh, const int* levels, float* y)
{
    const float d = f16ToF32(dh), m = f16ToF32(mh);
    for (int j = 0; j < kGgmlQK; ++j)
        y[j] = float(levels[j]) * d + m;
}
void dequantizeQ4_0(const BlockQ4_0& x, float* y)
{
    int v[kGgmlQK];
    unpackNibbles(x.qs, v);
    dequantizeOffset(x.d, v, 8, y);
}
void dequantizeQ5_0(const BlockQ5_0& x, float* y)
{
    int v[kGgmlQK];
    unpackQ5(x.qh, x.qs, v);
    dequantizeOffset(x.d, v, 16, y);
}
void dequantizeQ4_1(const BlockQ4_1& x, float* y)
{
    int v[kGgmlQK];
    unpackNibbles(x.qs, v);
    dequantizeMin(x.d, x.m, v, y);
}
void dequantizeQ5_1(const BlockQ5_1& x, float* y)
{
    int v[kGgmlQK];
    unpackQ5(x.qh, x.qs, v);
    dequantizeMin(x.d, x.m, v, y);
}

// ---- Row kernels for the table: whole rows of blocks, any alignment -----------------------------

template <class Block, int QK, void (*EncodeBlock)(const float*, Block&)>
void encodeRow(const float* x, void* dst, std::int64_t n)
{
    auto* out = static_cast<std::uint8_t*>(dst);
    for (std::int64_t b = 0; b < n / QK; ++b, out += sizeof(Block)) {
        Block y{};
        EncodeBlock(x + b * QK, y);
        std::memcpy(out, &y, sizeof y);
    }
}

template <class Block, int QK, void (*DecodeBlock)(const Block&, float*)>
void decodeRow(const void* src, float* y, std::int64_t n)
{
    const auto* in = static_cast<const std::uint8_t*>(src);
    for (std::int64_t b = 0; b < n / QK; ++b, in += sizeof(Block)) {
        Block x;
        std::memcpy(&x, in, sizeof x);
        DecodeBlock(x, y + b * QK);
    }
}

// F32/F16/BF16 rows: plain conversions, which cannot fail for these types.
template <DType T>
void encodeFloats(const float* x, void* dst, std::int64_t n)
{
    (void)convertFromF32(T, x, dst, std::size_t(n));
}
template <DType T>
void decodeFloats(const void* src, float* y, std::int64_t n)
{
    (void)convertToF32(T, src, y, std::size_t(n));
}

template <class Block, int QK, void (*EncodeBlock)(const float*, Block&), void (*DecodeBlock)(const Block&, float*)>
constexpr GgmlTypeTraits blockTraits(GgmlType t, const char* name)
{
    return {
        t, name, QK, int(sizeof(Block)), true, &encodeRow<Block, QK, EncodeBlock>, &decodeRow<Block, QK, DecodeBlock>};
}

template <DType T>
constexpr GgmlTypeTraits floatTraits(GgmlType t, const char* name, int bytes)
{
    return {t, name, 1, bytes, false, &encodeFloats<T>, &decodeFloats<T>};
}

// Types that are only named and sized here: runtime-only blocks (Q8_1, Q8_K) and integers.
constexpr GgmlTypeTraits sizeOnlyTraits(GgmlType t, const char* name, int block, int bytes)
{
    return {t, name, block, bytes, block > 1, nullptr, nullptr};
}

// The table, indexed by type id (ggml's type_traits); ids without a type have name == nullptr.
constexpr std::array<GgmlTypeTraits, kGgmlTypeCount> kTraits = [] {
    std::array<GgmlTypeTraits, kGgmlTypeCount> table{};
    const GgmlTypeTraits rows[] = {
        floatTraits<DType::F32>(GgmlType::F32, "F32", 4),
        floatTraits<DType::F16>(GgmlType::F16, "F16", 2),
        blockTraits<BlockQ4_0, kGgmlQK, quantizeQ4_0, dequantizeQ4_0>(GgmlType::Q4_0, "Q4_0"),
        blockTraits<BlockQ4_1, kGgmlQK, quantizeQ4_1, dequantizeQ4_1>(GgmlType::Q4_1, "Q4_1"),
        blockTraits<BlockQ5_0, kGgmlQK, quantizeQ5_0, dequantizeQ5_0>(GgmlType::Q5_0, "Q5_0"),
        blockTraits<BlockQ5_1, kGgmlQK, quantizeQ5_1, dequantizeQ5_1>(GgmlType::Q5_1, "Q5_1"),
        blockTraits<BlockQ8_0, kGgmlQK, quantizeQ8_0, dequantizeQ8_0>(GgmlType::Q8_0, "Q8_0"),
        sizeOnlyTraits(GgmlType::Q8_1, "Q8_1", kGgmlQK, 36),
        blockTraits<BlockQ2_K, kGgmlQK_K, quantizeQ2_K, dequantizeQ2_K>(GgmlType::Q2_K, "Q2_K"),
        blockTraits<BlockQ3_K, kGgmlQK_K, quantizeQ3_K, dequantizeQ3_K>(GgmlType::Q3_K, "Q3_K"),
        blockTraits<BlockQ4_K, kGgmlQK_K, quantizeQ4_K, dequantizeQ4_K>(GgmlType::Q4_K, "Q4_K"),
        blockTraits<BlockQ5_K, kGgmlQK_K, quantizeQ5_K, dequantizeQ5_K>(GgmlType::Q5_K, "Q5_K"),
        blockTraits<BlockQ6_K, kGgmlQK_K, quantizeQ6_K, dequantizeQ6_K>(GgmlType::Q6_K, "Q6_K"),
        sizeOnlyTraits(GgmlType::Q8_K, "Q8_K", kGgmlQK_K, 292),
        sizeOnlyTraits(GgmlType::I8, "I8", 1, 1),
        sizeOnlyTraits(GgmlType::I16, "I16", 1, 2),
        sizeOnlyTraits(GgmlType::I32, "I32", 1, 4),
        sizeOnlyTraits(GgmlType::I64, "I64", 1, 8),
        sizeOnlyTraits(GgmlType::F64, "F64", 1, 8),
        floatTraits<DType::BF16>(GgmlType::BF16, "BF16", 2),
    };
    for (const auto& r : rows)
        table[std::size_t(r.type)] = r;
    return table;
}();

// Refuses a type without the kernel (`verb` it) and a length that is not whole blocks.
Status checkRow(int type, bool hasKernel, std::int64_t n, const char* verb)
{
    const GgmlTypeTraits* t = ggmlTypeTraits(type);
    if (!t || !hasKernel)
        return makeError(ErrorCode::Unsupported, std::string("cannot ") + verb + " ggml type " + ggmlTypeName(type) +
                                                     " (" + std::to_string(type) + ")");
    if (n < 0 || n % t->blockSize != 0)
        return makeError(ErrorCode::Shape,
                         std::to_string(n) + " elements is not a multiple of the " + t->name + " block size");
    return {};
}

} // namespace

const GgmlTypeTraits* ggmlTypeTraits(int type)
{
    if (type < 0 || type >= kGgmlTypeCount || !kTraits[std::size_t(type)].name) return nullptr;
    return &kTraits[std::size_t(type)];
}

const std::vector<GgmlType>& ggmlTypes()
{
    static const std::vector<GgmlType> kTypes = [] {
        std::vector<GgmlType> v;
        for (const auto& t : kTraits)
            if (t.name) v.push_back(t.type);
        return v;
    }();
    return kTypes;
}

const char* ggmlTypeName(int type)
{
    const auto* t = ggmlTypeTraits(type);
    return t ? t->name : "?";
}

std::string ggmlTypeLowerName(GgmlType t)
{
    std::string s = ggmlTypeName(int(t));
    for (char& c : s)
        c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::optional<GgmlType> parseGgmlType(std::string_view name)
{
    const auto sameIgnoringCase = [name](std::string_view other) {
        return name.size() == other.size() && std::equal(name.begin(), name.end(), other.begin(), [](char a, char b) {
                   return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
               });
    };
    for (GgmlType t : ggmlTypes())
        if (sameIgnoringCase(ggmlTypeName(int(t)))) return t;
    return std::nullopt;
}

std::size_t ggmlRowBytes(GgmlType t, std::int64_t n)
{
    const auto* tr = ggmlTypeTraits(int(t));
    if (!tr || n < 0 || n % tr->blockSize != 0) return 0;
    return std::size_t(n / tr->blockSize) * std::size_t(tr->typeSize);
}

Status quantizeGgml(GgmlType t, const float* src, void* dst, std::int64_t n)
{
    const auto* tr = ggmlTypeTraits(int(t));
    QB_TRY_STATUS(checkRow(int(t), tr && tr->encode, n, "encode"));
    tr->encode(src, dst, n);
    return {};
}

Status dequantizeGgml(int type, const void* src, float* dst, std::int64_t n)
{
    const auto* tr = ggmlTypeTraits(type);
    QB_TRY_STATUS(checkRow(type, tr && tr->decode, n, "decode"));
    tr->decode(src, dst, n);
    return {};
}

} // namespace qb::io
