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

void dequantizeQ2_K(const BlockQ2_K& x, float* y);
void dequantizeQ3_K(const BlockQ3_K& x, float* y);
void dequantizeQ4_K(const BlockQ4_K& x, float* y);
void dequantizeQ5_K(const BlockQ5_K& x, float* y);
void dequantizeQ6_K(const BlockQ6_K& x, float* y);

} // namespace qb::io
