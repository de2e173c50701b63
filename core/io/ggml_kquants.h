#pragma once
// ggml K-quant kernels: Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, one 256-element super-block at a time.
// quantize* re-implement ggml's quantize_row_q{2..6}_K_ref (make_qkx2_quants, make_q3_quants and
// make_qx_quants without importance weights), dequantize* its dequantize_row_q{2..6}_K; both are
// bit-exact against ggml (FORMATS.md §4.5). Callers normally go through the traits table in
// io/ggml_codec.h, which runs these over whole rows.
//
// x / y point at 256 floats; blocks use the layouts of io/ggml_codec.h. Pure functions,
// thread-safe, allocation-free; compiled without floating-point contraction.

#include "io/ggml_codec.h"

namespace qb::io {

void quantizeQ2_K(const float* x, BlockQ2_K& y);
void quantizeQ3_K(const float* x, BlockQ3_K& y);
void quantizeQ4_K(const float* x, BlockQ4_K& y);
void quantizeQ5_K(const float* x, BlockQ5_K& y);
void quantizeQ6_K(const float* x, BlockQ6_K& y);

// Exact constructions (target-aware quantization, quant/container_grid.h): given levels L[256]
// (0..2^bits-1: Q3_K code + 4, Q6_K code + 32), f16 super-scales and the sub-block scale/min
// codes (Q2_K 16 x 0..15; Q4_K/Q5_K 8 x 0..63; Q3_K 16 x -32..31; Q6_K 16 x -128..127), writes
// the super-block that dequantize* decodes to d*sc*code - dmin*m. Codes must be in range.
void packQ2_K(const std::uint8_t* L, std::uint16_t d, std::uint16_t dmin, const int* sc, const int* m, BlockQ2_K& y);
void packQ3_K(const std::uint8_t* L, std::uint16_t d, const int* sc, BlockQ3_K& y);
void packQ4_K(const std::uint8_t* L, std::uint16_t d, std::uint16_t dmin, const int* sc, const int* m, BlockQ4_K& y);
void packQ5_K(const std::uint8_t* L, std::uint16_t d, std::uint16_t dmin, const int* sc, const int* m, BlockQ5_K& y);
void packQ6_K(const std::uint8_t* L, std::uint16_t d, const int* sc, BlockQ6_K& y);

void dequantizeQ2_K(const BlockQ2_K& x, float* y);
void dequantizeQ3_K(const BlockQ3_K& x, float* y);
void dequantizeQ4_K(const BlockQ4_K& x, float* y);
void dequantizeQ5_K(const BlockQ5_K& x, float* y);
void dequantizeQ6_K(const BlockQ6_K& x, float* y);

} // namespace qb::io
