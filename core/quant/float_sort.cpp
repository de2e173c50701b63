#include "quant/float_sort.h"

#include <algorithm>
#include <array>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QB_FLOAT_SORT_AVX512 1
#endif

namespace qb::quant {

namespace {

// The monotone key of a float's bits: ascending as unsigned exactly when the floats are (-0 < +0).
inline std::uint32_t floatKey(std::uint32_t u) { return (u & 0x80000000u) ? ~u : (u | 0x80000000u); }
inline std::uint32_t keyFloatBits(std::uint32_t key) { return (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key; }

#ifdef QB_FLOAT_SORT_AVX512
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge source and trip
// -Wuninitialized inside its own headers (a false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// A bitonic sorting network over R registers of 16 keys (16 * R keys, R a power of two up to 32),
// all held in registers. Lane i of register r is element 16 r + i. A compare-exchange of lanes
// i and i ^ d keeps the minimum in the lane where takeMax(i) is clear; in the merge of blocks of
// size s, a block is descending when its index has the bit s set (the classic network).

// Lane i takes the maximum at distance d = 2^e within blocks of 2^ls (ls = 5: any block above 16
// lanes, whose direction is the register's), for an ascending block.
constexpr std::uint16_t takeMaxMask(int ls, int e)
{
    std::uint16_t m = 0;
    for (int i = 0; i < 16; ++i) {
        const bool upper = (i & (1 << e)) != 0;
        const bool descending = ls < 5 && (i & (1 << ls)) != 0;
        if (upper != descending) m = std::uint16_t(m | (1u << i));
    }
    return m;
}

__attribute__((target("avx512f"), always_inline)) inline __m512i compareExchange(__m512i v, __m512i partner,
                                                                                 __mmask16 takeMax)
{
    const __m512i p = _mm512_permutexvar_epi32(partner, v);
    return _mm512_mask_blend_epi32(takeMax, _mm512_min_epu32(v, p), _mm512_max_epu32(v, p));
}

template <int R>
__attribute__((target("avx512f"))) void sortNetwork(const float* x, std::size_t n, double* out)
{
    alignas(64) static constexpr std::uint32_t kPartner[4][16] = {
        {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14},
        {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13},
        {4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11},
        {8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}};
    __m512i partner[4];
    for (int e = 0; e < 4; ++e)
        partner[e] = _mm512_load_si512(kPartner[e]);
    auto laneMask = [n](int r) {
        const std::size_t base = 16 * std::size_t(r), left = n > base ? n - base : 0;
        return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
    };
    const __m512i all = _mm512_set1_epi32(-1), top = _mm512_set1_epi32(std::int32_t(0x80000000u));
    __m512i v[R];
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) { // keys; the padding lanes the largest key
        const __mmask16 m = laneMask(r);
        const __m512i u = _mm512_maskz_loadu_epi32(m, x + 16 * r);
        const __m512i key = _mm512_xor_si512(u, _mm512_or_si512(_mm512_srai_epi32(u, 31), top));
        v[r] = _mm512_mask_mov_epi32(all, m, key);
    }
    // Each register sorted, descending in odd registers when there are several (blocks of 16).
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int ls = 1; ls <= 4; ++ls)
#pragma GCC unroll 4
            for (int e = ls - 1; e >= 0; --e) {
                __mmask16 m = takeMaxMask(ls, e);
                if (ls == 4 && R > 1 && (r & 1)) m = __mmask16(~m);
                v[r] = compareExchange(v[r], partner[e], m);
            }
    // Merges of blocks of s = 32 .. 16 R: across registers for distances of 16 and more, then
    // within each register.
#pragma GCC unroll 8
    for (int s = 32; s <= 16 * R; s *= 2) {
#pragma GCC unroll 8
        for (int d = s / 2; d >= 16; d /= 2) {
            const int dr = d / 16;
#pragma GCC unroll 32
            for (int pair = 0; pair < R / 2; ++pair) { // registers r and r + dr, r without the bit dr
                const int r = (pair / dr) * 2 * dr + pair % dr;
                const __m512i a = v[r], b = v[(r + dr) % R]; // % R: a no-op (r + dr < R) GCC 12 needs to see it
                const __m512i lo = _mm512_min_epu32(a, b), hi = _mm512_max_epu32(a, b);
                const bool descending = ((16 * r) & s) != 0;
                v[r] = descending ? hi : lo;
                v[(r + dr) % R] = descending ? lo : hi;
            }
        }
#pragma GCC unroll 32
        for (int r = 0; r < R; ++r) {
            const bool descending = ((16 * r) & s) != 0;
#pragma GCC unroll 4
            for (int e = 3; e >= 0; --e)
                v[r] =
                    compareExchange(v[r], partner[e], descending ? __mmask16(~takeMaxMask(5, e)) : takeMaxMask(5, e));
        }
    }
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) { // back to float bits, out as doubles (the first n)
        const __m512i key = v[r];
        const __m512i u =
            _mm512_xor_si512(key, _mm512_or_si512(_mm512_andnot_si512(_mm512_srai_epi32(key, 31), all), top));
        const __m512 f = _mm512_castsi512_ps(u);
        const __mmask16 m = laneMask(r);
        const __m256 lo = _mm512_castps512_ps256(f);
        const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1));
        _mm512_mask_storeu_pd(out + 16 * r, __mmask8(m & 0xFF), _mm512_cvtps_pd(lo));
        _mm512_mask_storeu_pd(out + 16 * r + 8, __mmask8(m >> 8), _mm512_cvtps_pd(hi));
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

bool cpuHasAvx512f()
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}
#endif

} // namespace

bool floatSortHasNetwork()
{
#ifdef QB_FLOAT_SORT_AVX512
    static const bool has = cpuHasAvx512f();
    return has;
#else
    return false;
#endif
}

void sortFloatsAscending(const float* x, std::size_t n, FloatSortScratch& s, double* out)
{
#ifdef QB_FLOAT_SORT_AVX512
    if (n <= kFloatSortNetworkMax && floatSortHasNetwork()) {
        if (n <= 16) sortNetwork<1>(x, n, out);
        else if (n <= 32) sortNetwork<2>(x, n, out);
        else if (n <= 64) sortNetwork<4>(x, n, out);
        else if (n <= 128) sortNetwork<8>(x, n, out);
        else if (n <= 256) sortNetwork<16>(x, n, out);
        else sortNetwork<32>(x, n, out);
        return;
    }
#endif
    sortFloatsAscendingPortable(x, n, s, out);
}

// The portable path: an LSD radix sort on the IEEE bits (passes of 8 bits over the top three bytes
// of the key, the histograms counted in one pass, a pass whose digit is the same for every value
// skipped, then an insertion pass for the low byte), std::sort below 48 values. The radix sort wins
// from about 40 values up (2.5x at 64, 3.8x at 128, 6x at 352: its branches do not depend on the
// data, while std::sort's comparisons mispredict on every fresh channel).
void sortFloatsAscendingPortable(const float* x, std::size_t n, FloatSortScratch& s, double* out)
{
    s.keys.resize(n);
    auto keyOf = [x](std::size_t i) {
        std::uint32_t u;
        std::memcpy(&u, x + i, 4);
        return floatKey(u);
    };
    auto emit = [out, n](const std::uint32_t* sortedKeys) {
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint32_t u = keyFloatBits(sortedKeys[i]);
            float f;
            std::memcpy(&f, &u, 4);
            out[i] = double(f);
        }
    };
    if (n < 48) { // the keys, not the values: -0 before +0 as on the other paths
        for (std::size_t i = 0; i < n; ++i)
            s.keys[i] = keyOf(i);
        std::sort(s.keys.begin(), s.keys.end());
        emit(s.keys.data());
        return;
    }
    constexpr int kPasses = 4, kBuckets = 256;
    constexpr int kFirstPass = 1; // byte 0 is left to the insertion pass at the end
    s.tmp.resize(n);
    // Two sets of histograms, even and odd elements, summed after: a run of one digit then waits
    // on two counters' increments in turn rather than on one.
    std::array<std::array<std::uint32_t, kBuckets>, kPasses> count{}, count2{};
    std::size_t i = 0;
    for (; i + 1 < n; i += 2) {
        const std::uint32_t a = keyOf(i), b = keyOf(i + 1);
        s.keys[i] = a;
        s.keys[i + 1] = b;
        for (int p = kFirstPass; p < kPasses; ++p) {
            ++count[std::size_t(p)][(a >> (8 * p)) & 0xFFu];
            ++count2[std::size_t(p)][(b >> (8 * p)) & 0xFFu];
        }
    }
    if (i < n) {
        s.keys[i] = keyOf(i);
        for (int p = kFirstPass; p < kPasses; ++p)
            ++count[std::size_t(p)][(s.keys[i] >> (8 * p)) & 0xFFu];
    }
    for (int p = kFirstPass; p < kPasses; ++p)
        for (int d = 0; d < kBuckets; ++d)
            count[std::size_t(p)][std::size_t(d)] += count2[std::size_t(p)][std::size_t(d)];
    std::vector<std::uint32_t>*src = &s.keys, *dst = &s.tmp;
    for (int p = kFirstPass; p < kPasses; ++p) {
        std::array<std::uint32_t, kBuckets>& c = count[std::size_t(p)];
        if (c[((*src)[0] >> (8 * p)) & 0xFFu] == n) continue; // one digit everywhere: already in order
        std::uint32_t sum = 0;
        for (std::uint32_t& v : c) {
            const std::uint32_t t = v;
            v = sum;
            sum += t;
        }
        // Two independent streams: the first half from the front into each bucket's start, the
        // second from the back into its end (both keep the order: the pass stays stable). Runs of
        // one digit (the sign and exponent bytes of a channel's values) then wait on two counter
        // chains at a time instead of one.
        std::array<std::uint32_t, kBuckets> end;
        for (int d = 0; d + 1 < kBuckets; ++d)
            end[std::size_t(d)] = c[std::size_t(d) + 1];
        end[kBuckets - 1] = std::uint32_t(n);
        const std::uint32_t* in = src->data();
        std::uint32_t* out = dst->data();
        const int shift = 8 * p;
        std::size_t lo = 0, hi = n;
        while (hi - lo >= 2) {
            const std::uint32_t a = in[lo++], b = in[--hi];
            out[c[(a >> shift) & 0xFFu]++] = a;
            out[--end[(b >> shift) & 0xFFu]] = b;
        }
        if (lo < hi) out[c[(in[lo] >> shift) & 0xFFu]++] = in[lo];
        std::swap(src, dst);
    }
    // Ordered by the top three bytes: keys equal there may be out of order in their low byte, and
    // only then (rare: 2^-15 apart in relative terms); an insertion pass finishes the sort.
    std::uint32_t* sortedKeys = src->data();
    for (std::size_t i = 1; i < n; ++i) {
        const std::uint32_t key = sortedKeys[i];
        if (key >= sortedKeys[i - 1]) continue;
        std::size_t j = i;
        do {
            sortedKeys[j] = sortedKeys[j - 1];
            --j;
        } while (j > 0 && sortedKeys[j - 1] > key);
        sortedKeys[j] = key;
    }
    emit(sortedKeys);
}

} // namespace qb::quant
