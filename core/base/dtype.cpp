#include "base/dtype.h"

#include <bit>
#include <cstring>

namespace qb {

const char* dtypeName(DType t)
{
    switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I16: return "I16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::Bool: return "BOOL";
    }
    return "?";
}

std::size_t dtypeSize(DType t)
{
    switch (t) {
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16: return 2;
    case DType::F64:
    case DType::I64: return 8;
    case DType::I8:
    case DType::U8:
    case DType::Bool: return 1;
    }
    return 0;
}

bool dtypeIsFloat(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64; }

std::optional<DType> dtypeFromName(std::string_view name)
{
    static constexpr struct {
        std::string_view n;
        DType t;
    } kNames[] = {
        {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64}, {"I8", DType::I8},
        {"U8", DType::U8},   {"I16", DType::I16}, {"I32", DType::I32},   {"I64", DType::I64}, {"BOOL", DType::Bool},
    };
    for (const auto& e : kNames)
        if (e.n == name) return e.t;
    return std::nullopt;
}

float f16ToF32(std::uint16_t h)
{
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1Fu;
    std::uint32_t mant = h & 0x3FFu;
    std::uint32_t bits;
    if (exp == 0x1F) { // Inf / NaN: keep the payload, widened
        bits = sign | 0x7F800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else { // subnormal: normalise
        int e = -1;
        do {
            ++e;
            mant <<= 1;
        } while ((mant & 0x400u) == 0);
        bits = sign | (std::uint32_t(112 - e) << 23) | ((mant & 0x3FFu) << 13);
    }
    return std::bit_cast<float>(bits);
}

std::uint16_t f32ToF16(float f)
{
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const std::uint16_t sign = std::uint16_t((x >> 16) & 0x8000u);
    const std::uint32_t absx = x & 0x7FFFFFFFu;
    if (absx > 0x7F800000u) { // NaN: keep the top payload bits, force quiet
        return std::uint16_t(sign | 0x7E00u | ((absx >> 13) & 0x3FFu));
    }
    if (absx >= 0x477FF000u) return std::uint16_t(sign | 0x7C00u); // rounds to >= 65520: Inf
    if (absx >= 0x38800000u) {                                     // normal f16 range (>= 2^-14)
        const std::uint32_t mant = absx & 0x7FFFFFu;
        const std::uint32_t exp = (absx >> 23) - 112u;
        std::uint32_t r = (exp << 10) | (mant >> 13);
        const std::uint32_t rem = mant & 0x1FFFu;
        if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r; // carry may bump the exponent
        return std::uint16_t(sign | r);
    }
    if (absx < 0x33000000u) return sign; // below half the smallest subnormal (2^-25): zero
    // Subnormal result: value = m * 2^-24 with m in [0, 1023]
    const std::uint32_t exp = absx >> 23;                      // biased f32 exponent
    const std::uint32_t mant = (absx & 0x7FFFFFu) | 0x800000u; // with hidden bit
    const int shift = int(126 - exp);                          // bits to drop: 14..24
    std::uint32_t r = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return std::uint16_t(sign | r);
}

float bf16ToF32(std::uint16_t b) { return std::bit_cast<float>(std::uint32_t(b) << 16); }

std::uint16_t f32ToBf16(float f)
{
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return std::uint16_t((x >> 16) | 0x0040u); // quiet NaN
    const std::uint32_t rounding = 0x7FFFu + ((x >> 16) & 1u);
    return std::uint16_t((x + rounding) >> 16);
}

namespace {
template <typename T>
T loadLe(const unsigned char* p)
{
    T v;
    std::memcpy(&v, p, sizeof(T)); // x86/ARM hosts are little-endian; static_assert below
    return v;
}
static_assert(std::endian::native == std::endian::little, "Quantbench assumes a little-endian host");
} // namespace

Status convertToF32(DType t, const void* src, float* dst, std::size_t n)
{
    const auto* p = static_cast<const unsigned char*>(src);
    switch (t) {
    case DType::F32: std::memcpy(dst, p, n * 4); return {};
    case DType::F16:
        for (std::size_t i = 0; i < n; ++i)
            dst[i] = f16ToF32(loadLe<std::uint16_t>(p + 2 * i));
        return {};
    case DType::BF16:
        for (std::size_t i = 0; i < n; ++i)
            dst[i] = bf16ToF32(loadLe<std::uint16_t>(p + 2 * i));
        return {};
    case DType::F64:
        for (std::size_t i = 0; i < n; ++i)
            dst[i] = float(loadLe<double>(p + 8 * i));
        return {};
    case DType::I8:
        for (std::size_t i = 0; i < n; ++i)
            dst[i] = float(std::int8_t(p[i]));
        return {};
    case DType::U8:
    case DType::Bool:
        for (std::size_t i = 0; i < n; ++i)
            dst[i] = float(p[i]);
        return {};
    case DType::I16:
        for (std::size_t i = 0; i < n; ++i)
            dst[i] = float(loadLe<std::int16_t>(p + 2 * i));
        return {};
    case DType::I32:
        for (std::size_t i = 0; i < n; ++i)
            dst[i] = float(loadLe<std::int32_t>(p + 4 * i));
        return {};
    case DType::I64:
        for (std::size_t i = 0; i < n; ++i)
            dst[i] = float(loadLe<std::int64_t>(p + 8 * i));
        return {};
    }
    return makeError(ErrorCode::Unsupported, "unknown dtype");
}

Status convertFromF32(DType t, const float* src, void* dst, std::size_t n)
{
    auto* p = static_cast<unsigned char*>(dst);
    switch (t) {
    case DType::F32: std::memcpy(p, src, n * 4); return {};
    case DType::F16:
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint16_t h = f32ToF16(src[i]);
            std::memcpy(p + 2 * i, &h, 2);
        }
        return {};
    case DType::BF16:
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint16_t h = f32ToBf16(src[i]);
            std::memcpy(p + 2 * i, &h, 2);
        }
        return {};
    default: break;
    }
    return makeError(ErrorCode::Unsupported, std::string("cannot store floats as ") + dtypeName(t));
}

namespace {
// A value is NaN or infinite exactly when its exponent bits are all ones.
template <typename Bits, typename T>
std::size_t countExponentAllOnes(const T* x, std::size_t n, Bits exponent)
{
    std::size_t count = 0;
    for (std::size_t i = 0; i < n; ++i) {
        Bits b;
        std::memcpy(&b, x + i, sizeof b);
        count += (b & exponent) == exponent ? 1u : 0u;
    }
    return count;
}
} // namespace

std::size_t countNonFinite(const float* x, std::size_t n)
{
    return countExponentAllOnes<std::uint32_t>(x, n, 0x7F800000u);
}

std::size_t countNonFinite(const double* x, std::size_t n)
{
    return countExponentAllOnes<std::uint64_t>(x, n, 0x7FF0000000000000ull);
}

} // namespace qb
