#pragma once
// Sorting one channel's floats ascending, as doubles: the step before CMPQ's 1-D k-means, run
// once per input channel of every linear (thousands of short arrays per layer).
//
// Order: by the IEEE bits as a monotone unsigned key (-0 before +0; equal values are equal, so
// any sort gives the same output). Two paths give the same output for every input:
//  - AVX-512F, up to kFloatSortNetworkMax values: a bitonic sorting network over 16-lane
//    registers held in registers (the keys padded with the largest key to a power of two);
//    3-4.5x faster than the radix sort on 64-128 values, 1.4x on 352;
//  - portable (any CPU, and longer arrays): an LSD radix sort on the top three bytes of the key
//    and an insertion pass for the low byte; std::sort below 48 values.
// The AVX-512 path is chosen at run time when the CPU has AVX-512F (QB_NATIVE or not).
// Threading: free functions; all scratch is the caller's (one FloatSortScratch per thread).
// Layout: x contiguous; out holds n doubles.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qb::quant {

inline constexpr std::size_t kFloatSortNetworkMax = 512;

struct FloatSortScratch {
    std::vector<std::uint32_t> keys, tmp;
};

// x[0..n) ascending into out[0..n) (as doubles), by the fastest path this CPU has.
void sortFloatsAscending(const float* x, std::size_t n, FloatSortScratch& s, double* out);

// The portable path alone (tests compare the two on CPUs that have both).
void sortFloatsAscendingPortable(const float* x, std::size_t n, FloatSortScratch& s, double* out);

// Whether sortFloatsAscending takes the AVX-512 network for arrays up to kFloatSortNetworkMax.
bool floatSortHasNetwork();

} // namespace qb::quant
