#include "io/ggml_kquants.h"

#include "base/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstring>

// Compiled with -ffp-contract=off (see CMakeLists.txt): ggml's reference quantizers are specified
// as separate multiply and add, and a fused multiply-add would change which integer a value
// rounds to.

namespace qb::io {

namespace {

constexpr float kGroupMaxEps = 1e-15f;

std::uint16_t f16(float x) { return f32ToF16(x); }

// ggml nearest_int: round to nearest, ties to even, via the 1.5*2^23 trick (|x| < 2^22).
int nearestInt(float fval)
{
    const float val = fval + 12582912.f;
    std::int32_t i;
    std::memcpy(&i, &val, 4);
    return (i & 0x007fffff) - 0x00400000;
}

// make_qkx2_quants: min-based codes 0..nmax with weighted least-squares refinement of (scale,
// min) over nstep+1 trial inverse scales. Returns the scale, *theMin = -min (>= 0).
float makeQkx2(int n, int nmax, const float* x, const float* weights, std::uint8_t* L, float* theMin,
               std::uint8_t* Laux, float rmin, float rdelta, int nstep, bool useMad)
{
    float min = x[0], max = x[0];
    float sumW = weights[0];
    float sumX = sumW * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sumW += w;
        sumX += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        *theMin = -min;
        return 0.f;
    }
    float iscale = float(nmax) / (max - min);
    float scale = 1 / iscale;
    float bestError = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearestInt(iscale * (x[i] - min));
        L[i] = std::uint8_t(std::max(0, std::min(nmax, l)));
        float diff = scale * float(L[i]) + min - x[i];
        diff = useMad ? std::fabs(diff) : diff * diff;
        bestError += weights[i] * diff;
    }
    if (nstep < 1) {
        *theMin = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
        float sumL = 0, sumL2 = 0, sumXL = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearestInt(iscale * (x[i] - min));
            l = std::max(0, std::min(nmax, l));
            Laux[i] = std::uint8_t(l);
            const float w = weights[i];
            sumL += w * float(l);
            sumL2 += w * float(l) * float(l);
            sumXL += w * float(l) * x[i];
        }
        const float D = sumW * sumL2 - sumL * sumL;
        if (D > 0) {
            float thisScale = (sumW * sumXL - sumX * sumL) / D;
            float thisMin = (sumL2 * sumX - sumL * sumXL) / D;
            if (thisMin > 0) {
                thisMin = 0;
                thisScale = sumXL / sumL2;
            }
            float curError = 0;
            for (int i = 0; i < n; ++i) {
                float diff = thisScale * float(Laux[i]) + thisMin - x[i];
                diff = useMad ? std::fabs(diff) : diff * diff;
                curError += weights[i] * diff;
            }
            if (curError < bestError) {
                for (int i = 0; i < n; ++i)
                    L[i] = Laux[i];
                bestError = curError;
                scale = thisScale;
                min = thisMin;
            }
        }
    }
    *theMin = -min;
    return scale;
}

// The start that make_qx_quants and make_q3_quants share: `max`, the element of largest
// magnitude (signed); signed codes l = clamp(nearest(-nmax / max * x), -nmax, nmax - 1) in L; and
// the x^2-weighted sums sumlx = sum w*x*l, suml2 = sum w*l*l. False, with L all 0, when the group
// is zero to within kGroupMaxEps.
bool startSymmetricCodes(int n, int nmax, const float* x, std::int8_t* L, float& max, float& sumlx, float& suml2)
{
    float amax = 0;
    max = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return false;
    }
    const float iscale = float(-nmax) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = std::max(-nmax, std::min(nmax - 1, nearestInt(iscale * x[i])));
        L[i] = std::int8_t(l);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * float(l);
        suml2 += w * float(l) * float(l);
    }
    return true;
}

// make_qx_quants with rmse_type 1 (weights x^2), no importance: symmetric codes in
// [-nmax, nmax-1] stored as code + nmax; 19 trial scales around -nmax/max.
float makeQx(int n, int nmax, const float* x, std::int8_t* L)
{
    float max, sumlx, suml2;
    if (!startSymmetricCodes(n, nmax, x, L, max, sumlx, suml2)) return 0.f;
    for (int i = 0; i < n; ++i)
        L[i] = std::int8_t(L[i] + nmax);
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        const float iscale = -(float(nmax) + 0.1f * float(is)) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearestInt(iscale * x[i]);
            l = std::max(-nmax, std::min(nmax - 1, l));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * float(l);
            suml2 += w * float(l) * float(l);
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                const int l = nearestInt(iscale * x[i]);
                L[i] = std::int8_t(nmax + std::max(-nmax, std::min(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// make_q3_quants with do_rmse: codes in [-nmax, nmax-1] (+nmax on return), coordinate-descent
// refinement of the weighted (x^2) least-squares scale.
float makeQ3(int n, int nmax, const float* x, std::int8_t* L)
{
    float max, sumlx, suml2;
    if (!startSymmetricCodes(n, nmax, x, L, max, sumlx, suml2)) return 0.f;
    for (int itry = 0; itry < 5; ++itry) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * float(L[i]);
            if (slx > 0) {
                float sl2 = suml2 - w * float(L[i]) * float(L[i]);
                int nl = nearestInt(x[i] * sl2 / slx);
                nl = std::max(-nmax, std::min(nmax - 1, nl));
                if (nl != L[i]) {
                    slx += w * x[i] * float(nl);
                    sl2 += w * float(nl) * float(nl);
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = std::int8_t(nl);
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; ++i)
        L[i] = std::int8_t(L[i] + nmax);
    return sumlx / suml2;
}

// Q3_K and Q6_K: the scales of the 16 sub-blocks of 16 elements, each fitted by `fit` (makeQ3 or
// makeQx) with codes into L; returns the scale of largest magnitude, signed (0 if all are 0).
float fitSubBlocks16(float (*fit)(int, int, const float*, std::int8_t*), int nmax, const float* x, std::int8_t* L,
                     float* scales)
{
    float maxScale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
        scales[j] = fit(16, nmax, x + 16 * j, L + 16 * j);
        const float s = std::fabs(scales[j]);
        if (s > amax) {
            amax = s;
            maxScale = scales[j];
        }
    }
    return maxScale;
}

// ggml get_scale_min_k4: 6-bit scale and min j (0..7) of a Q4_K/Q5_K scales[12] array.
void scaleMinK4(int j, const std::uint8_t* q, std::uint8_t& sc, std::uint8_t& m)
{
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = std::uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m = std::uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// The inverse of scaleMinK4: 8 six-bit scales and mins into scales[12].
void packScaleMinK4(const int* ls, const int* lm, std::uint8_t* packed)
{
    std::memset(packed, 0, 12);
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            packed[j] = std::uint8_t(ls[j]);
            packed[j + 4] = std::uint8_t(lm[j]);
        } else {
            packed[j + 4] = std::uint8_t((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            packed[j - 4] = std::uint8_t(packed[j - 4] | ((ls[j] >> 4) << 6));
            packed[j] = std::uint8_t(packed[j] | ((lm[j] >> 4) << 6));
        }
    }
}

// Q3_K: 16 signed six-bit scales (-32..31) into scales[12].
void packScalesQ3K(const int* sc, std::uint8_t* scales)
{
    std::memset(scales, 0, 12);
    for (int j = 0; j < 16; ++j) {
        int l = sc[j] + 32;
        if (j < 8) scales[j] = std::uint8_t(l & 0xF);
        else scales[j - 8] = std::uint8_t(scales[j - 8] | ((l & 0xF) << 4));
        l >>= 4;
        scales[j % 4 + 8] = std::uint8_t(scales[j % 4 + 8] | (l << (2 * (j / 4))));
    }
}

// The 2-bit planes of Q2_K and Q3_K: element e of each 128 in bits 2*((e mod 128)/32) of
// qs[32*(e/128) + e mod 32]. L holds levels 0..3.
template <class Level>
void pack2BitPlanes(const Level* L, std::uint8_t* qs)
{
    for (int j = 0; j < 256; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = std::uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}
int unpack2Bit(const std::uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

// Q4_K (nmax 15, rmin -1, 20 steps) and Q5_K (nmax 31, rmin -0.5, 15 steps): codes L[256].
void quantizeQ45K(const float* x, int nmax, std::uint16_t& dOut, std::uint16_t& dminOut, std::uint8_t* packed /*12*/,
                  std::uint8_t* L)
{
    std::uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float maxScale = 0, maxMin = 0;
    for (int j = 0; j < 8; ++j) {
        float sumX2 = 0;
        for (int l = 0; l < 32; ++l)
            sumX2 += x[32 * j + l] * x[32 * j + l];
        const float avX = std::sqrt(sumX2 / 32);
        for (int l = 0; l < 32; ++l)
            weights[l] = avX + std::fabs(x[32 * j + l]);
        scales[j] = nmax == 15
                        ? makeQkx2(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, false)
                        : makeQkx2(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, false);
        if (scales[j] > maxScale) maxScale = scales[j];
        if (mins[j] > maxMin) maxMin = mins[j];
    }
    const float invScale = maxScale > 0 ? 63.f / maxScale : 0.f;
    const float invMin = maxMin > 0 ? 63.f / maxMin : 0.f;
    int ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
        ls[j] = std::min(63, nearestInt(invScale * scales[j]));
        lm[j] = std::min(63, nearestInt(invMin * mins[j]));
    }
    packScaleMinK4(ls, lm, packed);
    dOut = f16(maxScale / 63.f);
    dminOut = f16(maxMin / 63.f);
    for (int j = 0; j < 8; ++j) {
        std::uint8_t sc, m;
        scaleMinK4(j, packed, sc, m);
        const float d = f16ToF32(dOut) * float(sc);
        if (!d) continue;
        const float dm = f16ToF32(dminOut) * float(m);
        for (int ii = 0; ii < 32; ++ii) {
            const int l = nearestInt((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = std::uint8_t(std::max(0, std::min(nmax, l)));
        }
    }
}

// Q4_K (qh == nullptr) and Q5_K: x = d*sc_j*q - dmin*mn_j per 32-element sub-block j.
void dequantizeQ45K(std::uint16_t dh, std::uint16_t dminh, const std::uint8_t* scales, const std::uint8_t* qh,
                    const std::uint8_t* qs, float* y)
{
    const float d = f16ToF32(dh), dmin = f16ToF32(dminh);
    for (int j = 0; j < 8; ++j) {
        std::uint8_t sc, m;
        scaleMinK4(j, scales, sc, m);
        const float d1 = d * float(sc), m1 = dmin * float(m);
        for (int l = 0; l < 32; ++l) {
            int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
            if (qh) q |= ((qh[l] >> j) & 1) << 4;
            y[32 * j + l] = d1 * float(q) - m1;
        }
    }
}

// Q3_K levels 0..7 (code + 4): bit 2 into hmask, the low two bits into the 2-bit planes.
void packLevelsQ3K(const std::uint8_t* L, BlockQ3_K& y)
{
    std::uint8_t low[256];
    std::memset(y.hmask, 0, 32);
    for (int j = 0; j < 256; ++j) {
        if (L[j] > 3) y.hmask[j % 32] = std::uint8_t(y.hmask[j % 32] | (1 << (j / 32)));
        low[j] = std::uint8_t(L[j] & 3);
    }
    pack2BitPlanes(low, y.qs);
}

// Q4_K levels 0..15: two sub-blocks of 32 per 32 bytes, low nibble first.
void packLevelsQ4K(const std::uint8_t* L, std::uint8_t* qs)
{
    for (int j = 0; j < 256; j += 64)
        for (int l = 0; l < 32; ++l)
            qs[j / 2 + l] = std::uint8_t(L[j + l] | (L[j + l + 32] << 4));
}

// Q5_K levels 0..31: the low nibbles as Q4_K, bit 4 of element 64k + 32h + l in bit 2k + h of qh[l].
void packLevelsQ5K(const std::uint8_t* L, BlockQ5_K& y)
{
    std::uint8_t low[256];
    std::memset(y.qh, 0, 32);
    for (int e = 0; e < 256; ++e) {
        low[e] = std::uint8_t(L[e] & 0xF);
        if (L[e] > 15) y.qh[e % 32] = std::uint8_t(y.qh[e % 32] | (1 << (e / 32)));
    }
    packLevelsQ4K(low, y.qs);
}

// Q6_K levels 0..63 (code + 32): low nibbles into ql, the top two bits into qh.
void packLevelsQ6K(const std::uint8_t* L, BlockQ6_K& y)
{
    for (int j = 0; j < 256; j += 128) {
        std::uint8_t* ql = y.ql + j / 2;
        std::uint8_t* qh = y.qh + j / 4;
        for (int l = 0; l < 32; ++l) {
            const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l] = std::uint8_t(q1 | (q3 << 4));
            ql[l + 32] = std::uint8_t(q2 | (q4 << 4));
            qh[l] = std::uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                 ((L[j + l + 96] >> 4) << 6));
        }
    }
}

} // namespace

// ---- quantize_row_q{2..6}_K_ref, one super-block -----------------------------------------------

void quantizeQ2_K(const float* x, BlockQ2_K& y)
{
    constexpr float q4scale = 15.f;
    std::uint8_t L[256], Laux[16];
    float weights[16], mins[16], scales[16];
    float maxScale = 0, maxMin = 0;
    for (int j = 0; j < 16; ++j) {
        for (int l = 0; l < 16; ++l)
            weights[l] = std::fabs(x[16 * j + l]);
        scales[j] = makeQkx2(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
        if (scales[j] > maxScale) maxScale = scales[j];
        if (mins[j] > maxMin) maxMin = mins[j];
    }
    if (maxScale > 0) {
        const float iscale = q4scale / maxScale;
        for (int j = 0; j < 16; ++j)
            y.scales[j] = std::uint8_t(nearestInt(iscale * scales[j]));
        y.d = f16(maxScale / q4scale);
    } else {
        for (int j = 0; j < 16; ++j)
            y.scales[j] = 0;
        y.d = f16(0.f);
    }
    if (maxMin > 0) {
        const float iscale = q4scale / maxMin;
        for (int j = 0; j < 16; ++j)
            y.scales[j] = std::uint8_t(y.scales[j] | (nearestInt(iscale * mins[j]) << 4));
        y.dmin = f16(maxMin / q4scale);
    } else {
        y.dmin = f16(0.f);
    }
    for (int j = 0; j < 16; ++j) {
        const float d = f16ToF32(y.d) * float(y.scales[j] & 0xF);
        if (!d) continue;
        const float dm = f16ToF32(y.dmin) * float(y.scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            const int l = nearestInt((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = std::uint8_t(std::max(0, std::min(3, l)));
        }
    }
    pack2BitPlanes(L, y.qs);
}

void quantizeQ3_K(const float* x, BlockQ3_K& y)
{
    std::int8_t L[256];
    float scales[16];
    const float maxScale = fitSubBlocks16(makeQ3, 4, x, L, scales);
    std::memset(y.scales, 0, 12);
    if (maxScale) {
        const float iscale = -32.f / maxScale;
        int sc[16];
        for (int j = 0; j < 16; ++j)
            sc[j] = std::max(-32, std::min(31, nearestInt(iscale * scales[j])));
        packScalesQ3K(sc, y.scales);
        y.d = f16(1 / iscale);
    } else {
        y.d = f16(0.f);
    }
    for (int j = 0; j < 16; ++j) {
        int sc = j < 8 ? (y.scales[j] & 0xF) : (y.scales[j - 8] >> 4);
        sc = (sc | (((y.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
        const float d = f16ToF32(y.d) * float(sc);
        if (!d) continue;
        for (int ii = 0; ii < 16; ++ii) {
            const int l = nearestInt(x[16 * j + ii] / d);
            L[16 * j + ii] = std::int8_t(std::max(-4, std::min(3, l)) + 4);
        }
    }
    packLevelsQ3K(reinterpret_cast<const std::uint8_t*>(L), y);
}

void quantizeQ4_K(const float* x, BlockQ4_K& y)
{
    std::uint8_t L[256];
    quantizeQ45K(x, 15, y.d, y.dmin, y.scales, L);
    packLevelsQ4K(L, y.qs);
}

void quantizeQ5_K(const float* x, BlockQ5_K& y)
{
    std::uint8_t L[256];
    quantizeQ45K(x, 31, y.d, y.dmin, y.scales, L);
    packLevelsQ5K(L, y);
}

void quantizeQ6_K(const float* x, BlockQ6_K& y)
{
    std::int8_t L[256];
    float scales[16];
    const float maxScale = fitSubBlocks16(makeQx, 32, x, L, scales);
    if (std::fabs(maxScale) < kGroupMaxEps) {
        std::memset(&y, 0, sizeof y);
        y.d = f16(0.f);
        return;
    }
    const float iscale = -128.f / maxScale;
    y.d = f16(1 / iscale);
    for (int ib = 0; ib < 16; ++ib)
        y.scales[ib] = std::int8_t(std::min(127, nearestInt(iscale * scales[ib])));
    for (int j = 0; j < 16; ++j) {
        const float d = f16ToF32(y.d) * float(y.scales[j]);
        if (!d) continue;
        for (int ii = 0; ii < 16; ++ii) {
            const int l = nearestInt(x[16 * j + ii] / d);
            L[16 * j + ii] = std::int8_t(std::max(-32, std::min(31, l)) + 32);
        }
    }
    packLevelsQ6K(reinterpret_cast<const std::uint8_t*>(L), y);
}

// ---- exact constructions from given levels and sub-block codes --------------------------------

void packQ2_K(const std::uint8_t* L, std::uint16_t d, std::uint16_t dmin, const int* sc, const int* m, BlockQ2_K& y)
{
    for (int j = 0; j < 16; ++j)
        y.scales[j] = std::uint8_t(sc[j] | (m[j] << 4));
    y.d = d;
    y.dmin = dmin;
    pack2BitPlanes(L, y.qs);
}

void packQ3_K(const std::uint8_t* L, std::uint16_t d, const int* sc, BlockQ3_K& y)
{
    packScalesQ3K(sc, y.scales);
    y.d = d;
    packLevelsQ3K(L, y);
}

void packQ4_K(const std::uint8_t* L, std::uint16_t d, std::uint16_t dmin, const int* sc, const int* m, BlockQ4_K& y)
{
    y.d = d;
    y.dmin = dmin;
    packScaleMinK4(sc, m, y.scales);
    packLevelsQ4K(L, y.qs);
}

void packQ5_K(const std::uint8_t* L, std::uint16_t d, std::uint16_t dmin, const int* sc, const int* m, BlockQ5_K& y)
{
    y.d = d;
    y.dmin = dmin;
    packScaleMinK4(sc, m, y.scales);
    packLevelsQ5K(L, y);
}

void packQ6_K(const std::uint8_t* L, std::uint16_t d, const int* sc, BlockQ6_K& y)
{
    y.d = d;
    for (int j = 0; j < 16; ++j)
        y.scales[j] = std::int8_t(sc[j]);
    packLevelsQ6K(L, y);
}

// ---- dequantize_row_q{2..6}_K, one super-block (FORMATS.md §4.5 index formulas) ----------------

void dequantizeQ2_K(const BlockQ2_K& x, float* y)
{
    const float d = f16ToF32(x.d), dmin = f16ToF32(x.dmin);
    for (int e = 0; e < 256; ++e) {
        const std::uint8_t sc = x.scales[e / 16];
        const float dl = d * float(sc & 0xF);
        const float ml = dmin * float(sc >> 4);
        y[e] = dl * float(unpack2Bit(x.qs, e)) - ml;
    }
}

void dequantizeQ3_K(const BlockQ3_K& x, float* y)
{
    const float d = f16ToF32(x.d);
    int sc[16];
    for (int s = 0; s < 16; ++s) {
        const int lo = s < 8 ? (x.scales[s] & 0xF) : (x.scales[s - 8] >> 4);
        const int hi = (x.scales[8 + s % 4] >> (2 * (s / 4))) & 3;
        sc[s] = (lo | (hi << 4)) - 32;
    }
    for (int e = 0; e < 256; ++e) {
        const int high = (x.hmask[e % 32] >> (e / 32)) & 1;
        const float dl = d * float(sc[e / 16]);
        y[e] = dl * float(unpack2Bit(x.qs, e) - (high ? 0 : 4));
    }
}

void dequantizeQ4_K(const BlockQ4_K& x, float* y) { dequantizeQ45K(x.d, x.dmin, x.scales, nullptr, x.qs, y); }

void dequantizeQ5_K(const BlockQ5_K& x, float* y) { dequantizeQ45K(x.d, x.dmin, x.scales, x.qh, x.qs, y); }

void dequantizeQ6_K(const BlockQ6_K& x, float* y)
{
    const float d = f16ToF32(x.d);
    for (int e = 0; e < 256; ++e) {
        const int h = e / 128, r = e % 128;
        const int low = (x.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0xF;
        const int high = (x.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        const int q = (low | (high << 4)) - 32;
        y[e] = d * float(x.scales[e / 16]) * float(q);
    }
}

} // namespace qb::io
