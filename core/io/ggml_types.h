#pragma once
// ggml tensor types as stored in GGUF files: ids, block geometry, and reference dequantization.
//
// Block-quantized types pack `blockSize` consecutive elements of a row into `typeSize` bytes
// (FORMATS.md §4.4-4.5). dequantizeGgml() follows ggml's dequantize_row_* reference formulas in
// f32. Pure functions, thread-safe, allocation-free.

#include "base/result.h"

#include <cstdint>

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

struct GgmlTypeTraits {
    const char* name;   // "Q4_0"
    int blockSize;      // elements per block
    int typeSize;       // bytes per block
    bool canDequantize; // dequantizeGgml() supports it
};

// nullptr for ids that are not (or no longer) ggml types.
const GgmlTypeTraits* ggmlTypeTraits(int type);
const char* ggmlTypeName(int type); // "type 99" style fallback is not returned: "?" for unknown

struct BlockQ8_0 {
    std::uint16_t d; // f16
    std::int8_t qs[32];
};
struct BlockQ4_0 {
    std::uint16_t d;     // f16
    std::uint8_t qs[16]; // element j in the low nibble of byte j, element j+16 in the high nibble
};
struct BlockQ4_1 {
    std::uint16_t d; // f16
    std::uint16_t m; // f16, added
    std::uint8_t qs[16];
};
struct BlockQ5_0 {
    std::uint16_t d;     // f16
    std::uint8_t qh[4];  // u32 LE: bit e is bit 4 of element e
    std::uint8_t qs[16]; // low 4 bits, nibble order as Q4_0
};
struct BlockQ5_1 {
    std::uint16_t d; // f16
    std::uint16_t m; // f16, added
    std::uint8_t qh[4];
    std::uint8_t qs[16];
};
// K-quants: super-blocks of 256 elements (FORMATS.md §4.5), exact ggml byte layouts.
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
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);

// 6-bit scale and min j (0..7) of a Q4_K/Q5_K scales[12] array (ggml get_scale_min_k4).
inline void ggmlScaleMinK4(int j, const std::uint8_t* q, std::uint8_t& sc, std::uint8_t& m)
{
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = std::uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m = std::uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);

// Decodes n elements (a multiple of the block size) of ggml `type` at `src` into dst.
Status dequantizeGgml(int type, const void* src, float* dst, std::int64_t n);

} // namespace qb::io
