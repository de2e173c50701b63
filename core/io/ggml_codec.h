#pragma once
// The ggml codec: tensor types as stored in GGUF files, their on-disk block layouts, and one
// traits table indexed by the type id (ggml's `type_traits`) that gives each type's name, block
// geometry, encoder (ggml's reference quantizer quantize_row_*_ref, or a plain F32/F16/BF16
// conversion) and decoder (dequantize_row_*). Everything that needs to know a type's size, name
// or kernels asks the table. The K-quant kernels (Q2_K..Q6_K) live in io/ggml_kquants.h, the
// legacy 32-element kernels (Q4_0..Q8_0) in ggml_codec.cpp.
//
// Layout: a row of n elements (n a multiple of blockSize) is n / blockSize consecutive blocks of
// typeSize bytes, little-endian, with no alignment requirement (FORMATS.md §4.4-4.5); the block
// structs below are those exact byte layouts. Rounding and f16 conversion follow ggml bit for bit
// (f16: round to nearest even); the kernels are compiled without floating-point contraction.
// Ids read from files are plain ints (unknown ids are answered, not trusted); types we write are
// GgmlType. Pure functions, thread-safe, allocation-free.

#include "base/result.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qb::io {

enum class GgmlType : int {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
};
inline constexpr int kGgmlTypeCount = 31; // ids 0..30; ids without a type have no traits

inline constexpr int kGgmlQK = 32;    // elements per legacy block (Q4_0 .. Q8_1)
inline constexpr int kGgmlQK_K = 256; // elements per K-quant super-block (Q2_K .. Q8_K)

// Row kernels over n elements, n a multiple of the type's block size.
using GgmlEncodeRow = void (*)(const float* src, void* dst, std::int64_t n);
using GgmlDecodeRow = void (*)(const void* src, float* dst, std::int64_t n);

struct GgmlTypeTraits {
    GgmlType type;
    const char* name;     // "Q4_0"
    int blockSize;        // elements per block
    int typeSize;         // bytes per block
    bool isQuantized;     // block-quantized, not plain elements
    GgmlEncodeRow encode; // nullptr: not writable (runtime-only and integer types)
    GgmlDecodeRow decode; // nullptr: not readable as floats
};

// nullptr for ids that are not (or no longer) ggml types.
const GgmlTypeTraits* ggmlTypeTraits(int type);
// Every type that has traits, in id order.
const std::vector<GgmlType>& ggmlTypes();
const char* ggmlTypeName(int type);        // "?" for an unknown id
std::string ggmlTypeLowerName(GgmlType t); // "q4_0"
// "q4_0" / "Q4_0" -> type (any case); nullopt for a name that is no type.
std::optional<GgmlType> parseGgmlType(std::string_view name);
// Bytes of one row of n elements; 0 when n is not a whole number of blocks.
std::size_t ggmlRowBytes(GgmlType t, std::int64_t n);

// Encodes n floats into ggmlRowBytes(t, n) bytes at dst with the type's reference quantizer.
Status quantizeGgml(GgmlType t, const float* src, void* dst, std::int64_t n);
// Decodes n elements of ggml `type` at `src` into dst.
Status dequantizeGgml(int type, const void* src, float* dst, std::int64_t n);

// ---- Block layouts (exact ggml byte layouts; f16 fields are IEEE half bits) -------------------

struct BlockQ8_0 {
    std::uint16_t d; // f16
    std::int8_t qs[kGgmlQK];
};
struct BlockQ4_0 {
    std::uint16_t d;              // f16
    std::uint8_t qs[kGgmlQK / 2]; // element j in the low nibble of byte j, j+16 in the high one
};
struct BlockQ4_1 {
    std::uint16_t d; // f16
    std::uint16_t m; // f16, added
    std::uint8_t qs[kGgmlQK / 2];
};
struct BlockQ5_0 {
    std::uint16_t d;              // f16
    std::uint8_t qh[4];           // u32 LE: bit e is bit 4 of element e
    std::uint8_t qs[kGgmlQK / 2]; // low 4 bits, nibble order as Q4_0
};
struct BlockQ5_1 {
    std::uint16_t d; // f16
    std::uint16_t m; // f16, added
    std::uint8_t qh[4];
    std::uint8_t qs[kGgmlQK / 2];
};
// K-quants: super-blocks of 256 elements in 16 or 8 sub-blocks.
struct BlockQ2_K {
    std::uint8_t scales[16]; // low nibble: scale, high nibble: min, per 16 elements
    std::uint8_t qs[64];     // 2-bit codes
    std::uint16_t d;         // f16 super-block scale of the scales
    std::uint16_t dmin;      // f16 super-block scale of the mins
};
struct BlockQ3_K {
    std::uint8_t hmask[32];  // high bit of each code
    std::uint8_t qs[64];     // low 2 bits
    std::uint8_t scales[12]; // 16 six-bit scales, packed
    std::uint16_t d;         // f16
};
struct BlockQ4_K {
    std::uint16_t d;         // f16
    std::uint16_t dmin;      // f16
    std::uint8_t scales[12]; // 8 six-bit scales and mins, packed (get_scale_min_k4)
    std::uint8_t qs[128];    // 4-bit codes
};
struct BlockQ5_K {
    std::uint16_t d;
    std::uint16_t dmin;
    std::uint8_t scales[12];
    std::uint8_t qh[32];  // bit 4 of each code
    std::uint8_t qs[128]; // low 4 bits
};
struct BlockQ6_K {
    std::uint8_t ql[128];   // low 4 bits
    std::uint8_t qh[64];    // high 2 bits
    std::int8_t scales[16]; // per 16 elements
    std::uint16_t d;        // f16
};
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);

// Packs 32 levels of one legacy block in ggml's order: 0..15 into qs[16] nibbles (Q4_0/Q4_1),
// 0..31 into qs[16] plus the u32 qh of fifth bits (Q5_0/Q5_1).
void ggmlPackNibbles(const std::uint8_t* levels, std::uint8_t* qs);
void ggmlPackQ5(const std::uint8_t* levels, std::uint8_t* qh, std::uint8_t* qs);

} // namespace qb::io
