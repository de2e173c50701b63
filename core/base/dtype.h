#pragma once
// Element types of stored tensors and the conversions to and from F32.
//
// F16 is IEEE binary16; BF16 is the upper half of an IEEE binary32. Narrowing conversions round
// to nearest, ties to even; NaN stays NaN (quiet) and infinities stay infinite; F16 overflow
// becomes infinity, F16 underflow becomes a subnormal or a signed zero. All functions are pure,
// thread-safe and allocation-free. Buffers are little-endian, as every file we read stores them.

#include "base/result.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qb {

enum class DType { F32, F16, BF16, F64, I8, U8, I16, I32, I64, Bool };

const char* dtypeName(DType t); // safetensors spelling: "F32", "BF16", ...
std::size_t dtypeSize(DType t); // bytes per element
bool dtypeIsFloat(DType t);
std::optional<DType> dtypeFromName(std::string_view name); // safetensors spelling

float f16ToF32(std::uint16_t h);
std::uint16_t f32ToF16(float f);
float bf16ToF32(std::uint16_t b);
std::uint16_t f32ToBf16(float f);

// How many of n values are NaN or infinite: one pass over the exponent bits (vectorised; no early
// exit, so the whole of a large matrix costs about a copy of it).
std::size_t countNonFinite(const float* x, std::size_t n);
std::size_t countNonFinite(const double* x, std::size_t n);

// Converts n elements of type `t` at `src` (little-endian, any alignment) into F32.
// Integer types convert by value. Fails only for types with no float meaning (none today).
Status convertToF32(DType t, const void* src, float* dst, std::size_t n);
// Converts n floats into F32, F16 or BF16 at `dst` (any alignment).
Status convertFromF32(DType t, const float* src, void* dst, std::size_t n);

} // namespace qb
