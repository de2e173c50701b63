#pragma once
// laneSum: a sum of n terms in eight interleaved partial sums, added in a fixed tree at the end.
//
// One chain of adds waits on the last add's latency at every term; eight independent chains
// vectorise (one AVX-512 register of doubles, two AVX2 ones). The order is fixed by n alone, so
// the same terms give the same bits however a caller splits its work over threads. Used where a
// long sum of products runs on one thread: GPTQ's and CMPQ's proxy loss per column, the error
// trace from the solver's errors, the reference trace's dot products.
// Threading: a pure function.

#include <cstdint>

namespace qb::quant {

// sum over i in [0, n) of term(i), term returning a double.
template <class Term>
inline double laneSum(std::int64_t n, const Term& term)
{
    double acc[8] = {};
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k)
            acc[k] += term(i + k);
    for (int k = 0; i < n; ++i, ++k)
        acc[k] += term(i);
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

} // namespace qb::quant
