#include "export/ggml_quantize.h"

#include "base/dtype.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>

// This file is compiled with -ffp-contract=off (see CMakeLists.txt): ggml's reference
// quantizers are specified as separate multiply and add, and a fused multiply-add would change
// which integer a value rounds to.

namespace qb::exporting {

using io::GgmlType;

const std::vector<GgmlType>& ggufExportTypes()
{
    static const std::vector<GgmlType> kTypes = {
        GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q4_1,
        GgmlType::Q5_0, GgmlType::Q5_K, GgmlType::Q5_1, GgmlType::Q6_K, GgmlType::Q8_0,
        GgmlType::F16,  GgmlType::BF16, GgmlType::F32};
    return kTypes;
}

bool isGgufExportType(GgmlType t)
{
    const auto& all = ggufExportTypes();
    return std::find(all.begin(), all.end(), t) != all.end();
}

std::string ggmlTypeLowerName(GgmlType t)
{
    std::string s = io::ggmlTypeName(int(t));
    for (char& c : s)
        c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::optional<GgmlType> parseGgufExportType(std::string_view name)
{
    for (GgmlType t : ggufExportTypes()) {
        const std::string lower = ggmlTypeLowerName(t);
        if (name.size() != lower.size()) continue;
        bool same = true;
        for (std::size_t i = 0; i < name.size(); ++i)
            same = same && char(std::tolower(static_cast<unsigned char>(name[i]))) == lower[i];
        if (same) return t;
    }
    return std::nullopt;
}

std::uint32_t llamaFileType(GgmlType t)
{
    switch (t) {
    case GgmlType::F32:
        return 0;
    case GgmlType::F16:
        return 1;
    case GgmlType::Q4_0:
        return 2;
    case GgmlType::Q4_1:
        return 3;
    case GgmlType::Q8_0:
        return 7;
    case GgmlType::Q5_0:
        return 8;
    case GgmlType::Q5_1:
        return 9;
    case GgmlType::Q2_K:
        return 10;
    case GgmlType::Q3_K:
        return 11; // Q3_K_S (all Q3_K)
    case GgmlType::Q4_K:
        return 14; // Q4_K_S (all Q4_K)
    case GgmlType::Q5_K:
        return 16; // Q5_K_S (all Q5_K)
    case GgmlType::Q6_K:
        return 18;
    case GgmlType::BF16:
        return 32;
    default:
        return 0;
    }
}

std::size_t ggmlRowBytes(GgmlType t, std::int64_t n)
{
    const auto* tr = io::ggmlTypeTraits(int(t));
    if (!tr || n < 0 || n % tr->blockSize != 0) return 0;
    return std::size_t(n / tr->blockSize) * std::size_t(tr->typeSize);
}

namespace {

std::uint16_t f16(float x)
{
    return f32ToF16(x);
}

void putQ5(std::uint8_t* qhOut, std::uint8_t* qs, const std::uint8_t* v /*32 values 0..31*/)
{
    std::uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = std::uint8_t((v[j] & 0x0F) | ((v[j + 16] & 0x0F) << 4));
        qh |= std::uint32_t((v[j] & 0x10u) >> 4) << (j + 0);
        qh |= std::uint32_t((v[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(qhOut, &qh, 4);
}

void putNibbles(std::uint8_t* qs, const std::uint8_t* v /*32 values 0..15*/)
{
    for (int j = 0; j < 16; ++j)
        qs[j] = std::uint8_t(v[j] | (v[j + 16] << 4));
}

// quantize_row_q8_0_ref
void refQ8_0(const float* x, io::BlockQ8_0& y)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j)
        amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y.d = f16(d);
    for (int j = 0; j < 32; ++j) {
        const float x0 = x[j] * id;
        y.qs[j] = std::int8_t(std::round(x0));
    }
}

// quantize_row_q4_0_ref (bits 4, offset 8) and quantize_row_q5_0_ref (bits 5, offset 16).
void refSymmetric(const float* x, int bits, std::uint16_t& dOut, std::uint8_t* v)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j)
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    const int half = 1 << (bits - 1);
    const float d = max / float(-half);
    const float id = d ? 1.0f / d : 0.0f;
    dOut = f16(d);
    const float bias = float(half) + 0.5f;
    for (int j = 0; j < 32; ++j) {
        const float x0 = x[j] * id;
        v[j] = std::uint8_t(std::min(2 * half - 1, int(std::int8_t(x0 + bias))));
    }
}

// quantize_row_q4_1_ref (bits 4, clamped) and quantize_row_q5_1_ref (bits 5, not clamped).
void refMin(const float* x, int bits, std::uint16_t& dOut, std::uint16_t& mOut, std::uint8_t* v)
{
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; ++j) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / float((1 << bits) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    dOut = f16(d);
    mOut = f16(min);
    for (int j = 0; j < 32; ++j) {
        const float x0 = (x[j] - min) * id;
        v[j] = bits == 4 ? std::uint8_t(std::min(15, int(std::int8_t(x0 + 0.5f))))
                         : std::uint8_t(x0 + 0.5f);
    }
}


// ---- K-quants: ggml's quantize_row_q{2,3,4,5,6}_K_ref, re-implemented (FORMATS.md §4.5) ----

constexpr float kGroupMaxEps = 1e-15f;

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
float makeQkx2(int n, int nmax, const float* x, const float* weights, std::uint8_t* L,
               float* theMin, std::uint8_t* Laux, float rmin, float rdelta, int nstep, bool useMad)
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

// make_qx_quants with rmse_type 1 (weights x^2), no importance: symmetric codes in
// [-nmax, nmax-1] stored as code + nmax; 19 trial scales around -nmax/max.
float makeQx(int n, int nmax, const float* x, std::int8_t* L)
{
    float max = 0, amax = 0;
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
        return 0.f;
    }
    float iscale = float(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearestInt(iscale * x[i]);
        l = std::max(-nmax, std::min(nmax - 1, l));
        L[i] = std::int8_t(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * float(l);
        suml2 += w * float(l) * float(l);
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(float(nmax) + 0.1f * float(is)) / max;
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
    float max = 0, amax = 0;
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
        return 0.f;
    }
    const float iscale = float(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearestInt(iscale * x[i]);
        l = std::max(-nmax, std::min(nmax - 1, l));
        L[i] = std::int8_t(l);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * float(l);
        suml2 += w * float(l) * float(l);
    }
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

void refQ2K(const float* x, io::BlockQ2_K& y)
{
    constexpr float q4scale = 15.f;
    std::uint8_t L[256], Laux[16];
    float weights[16], mins[16], scales[16];
    float maxScale = 0, maxMin = 0;
    for (int j = 0; j < 16; ++j) {
        for (int l = 0; l < 16; ++l)
            weights[l] = std::fabs(x[16 * j + l]);
        scales[j] = makeQkx2(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f,
                             15, true);
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
    for (int j = 0; j < 256; j += 128)
        for (int l = 0; l < 32; ++l)
            y.qs[j / 4 + l] = std::uint8_t(L[j + l] | (L[j + l + 32] << 2) |
                                           (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

void refQ3K(const float* x, io::BlockQ3_K& y)
{
    std::int8_t L[256];
    float scales[16];
    float maxScale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
        scales[j] = makeQ3(16, 4, x + 16 * j, L + 16 * j);
        const float s = std::fabs(scales[j]);
        if (s > amax) {
            amax = s;
            maxScale = scales[j];
        }
    }
    std::memset(y.scales, 0, 12);
    if (maxScale) {
        const float iscale = -32.f / maxScale;
        for (int j = 0; j < 16; ++j) {
            int l = std::max(-32, std::min(31, nearestInt(iscale * scales[j]))) + 32;
            if (j < 8)
                y.scales[j] = std::uint8_t(l & 0xF);
            else
                y.scales[j - 8] = std::uint8_t(y.scales[j - 8] | ((l & 0xF) << 4));
            l >>= 4;
            y.scales[j % 4 + 8] = std::uint8_t(y.scales[j % 4 + 8] | (l << (2 * (j / 4))));
        }
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
    std::memset(y.hmask, 0, 32);
    int m = 0;
    std::uint8_t hm = 1;
    for (int j = 0; j < 256; ++j) {
        if (L[j] > 3) {
            y.hmask[m] = std::uint8_t(y.hmask[m] | hm);
            L[j] = std::int8_t(L[j] - 4);
        }
        if (++m == 32) {
            m = 0;
            hm = std::uint8_t(hm << 1);
        }
    }
    for (int j = 0; j < 256; j += 128)
        for (int l = 0; l < 32; ++l)
            y.qs[j / 4 + l] = std::uint8_t(L[j + l] | (L[j + l + 32] << 2) |
                                           (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// Q4_K (nmax 15, rmin -1, 20 steps) and Q5_K (nmax 31, rmin -0.5, 15 steps): codes L[256].
void refQ45K(const float* x, int nmax, std::uint16_t& dOut, std::uint16_t& dminOut,
             std::uint8_t* packed /*12*/, std::uint8_t* L)
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
        scales[j] = nmax == 15 ? makeQkx2(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                          -1.f, 0.1f, 20, false)
                               : makeQkx2(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                          -0.5f, 0.1f, 15, false);
        if (scales[j] > maxScale) maxScale = scales[j];
        if (mins[j] > maxMin) maxMin = mins[j];
    }
    const float invScale = maxScale > 0 ? 63.f / maxScale : 0.f;
    const float invMin = maxMin > 0 ? 63.f / maxMin : 0.f;
    std::memset(packed, 0, 12);
    for (int j = 0; j < 8; ++j) {
        const std::uint8_t ls = std::min<std::uint8_t>(63, std::uint8_t(nearestInt(invScale * scales[j])));
        const std::uint8_t lm = std::min<std::uint8_t>(63, std::uint8_t(nearestInt(invMin * mins[j])));
        if (j < 4) {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = std::uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
            packed[j - 4] = std::uint8_t(packed[j - 4] | ((ls >> 4) << 6));
            packed[j] = std::uint8_t(packed[j] | ((lm >> 4) << 6));
        }
    }
    dOut = f16(maxScale / 63.f);
    dminOut = f16(maxMin / 63.f);
    for (int j = 0; j < 8; ++j) {
        std::uint8_t sc, m;
        io::ggmlScaleMinK4(j, packed, sc, m);
        const float d = f16ToF32(dOut) * float(sc);
        if (!d) continue;
        const float dm = f16ToF32(dminOut) * float(m);
        for (int ii = 0; ii < 32; ++ii) {
            const int l = nearestInt((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = std::uint8_t(std::max(0, std::min(nmax, l)));
        }
    }
}

void refQ4K(const float* x, io::BlockQ4_K& y)
{
    std::uint8_t L[256];
    refQ45K(x, 15, y.d, y.dmin, y.scales, L);
    for (int j = 0; j < 256; j += 64)
        for (int l = 0; l < 32; ++l)
            y.qs[j / 2 + l] = std::uint8_t(L[j + l] | (L[j + l + 32] << 4));
}

void refQ5K(const float* x, io::BlockQ5_K& y)
{
    std::uint8_t L[256];
    refQ45K(x, 31, y.d, y.dmin, y.scales, L);
    std::memset(y.qh, 0, 32);
    std::uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < 256; n += 64) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                y.qh[j] = std::uint8_t(y.qh[j] | m1);
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                y.qh[j] = std::uint8_t(y.qh[j] | m2);
            }
            y.qs[n / 2 + j] = std::uint8_t(l1 | (l2 << 4));
        }
        m1 = std::uint8_t(m1 << 2);
        m2 = std::uint8_t(m2 << 2);
    }
}

void refQ6K(const float* x, io::BlockQ6_K& y)
{
    std::int8_t L[256];
    float scales[16];
    float maxScale = 0, maxAbsScale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        scales[ib] = makeQx(16, 32, x + 16 * ib, L + 16 * ib);
        const float a = std::fabs(scales[ib]);
        if (a > maxAbsScale) {
            maxAbsScale = a;
            maxScale = scales[ib];
        }
    }
    if (maxAbsScale < kGroupMaxEps) {
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
    for (int j = 0; j < 256; j += 128) {
        std::uint8_t* ql = y.ql + j / 2;
        std::uint8_t* qh = y.qh + j / 4;
        for (int l = 0; l < 32; ++l) {
            const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF,
                      q4 = L[j + l + 96] & 0xF;
            ql[l] = std::uint8_t(q1 | (q3 << 4));
            ql[l + 32] = std::uint8_t(q2 | (q4 << 4));
            qh[l] = std::uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                 ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
    }
}

} // namespace

Status quantizeGgmlRef(GgmlType t, const float* src, void* dst, std::int64_t n)
{
    if (!isGgufExportType(t))
        return makeError(ErrorCode::Unsupported,
                         std::string("cannot write ggml type ") + io::ggmlTypeName(int(t)));
    if (ggmlRowBytes(t, n) == 0 && n != 0)
        return makeError(ErrorCode::Shape, std::to_string(n) +
                                               " elements is not a multiple of the " +
                                               io::ggmlTypeName(int(t)) + " block size");
    auto* out = static_cast<std::uint8_t*>(dst);
    switch (t) {
    case GgmlType::F32:
        std::memcpy(out, src, std::size_t(n) * 4);
        return {};
    case GgmlType::F16:
        return convertFromF32(DType::F16, src, out, std::size_t(n));
    case GgmlType::BF16:
        return convertFromF32(DType::BF16, src, out, std::size_t(n));
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: {
        const std::size_t bytes = ggmlRowBytes(t, 256);
        for (std::int64_t b = 0; b < n / 256; ++b) {
            const float* x = src + b * 256;
            std::uint8_t* o = out + std::size_t(b) * bytes;
            auto put = [&](const auto& y) { std::memcpy(o, &y, sizeof y); };
            if (t == GgmlType::Q2_K) {
                io::BlockQ2_K y;
                refQ2K(x, y);
                put(y);
            } else if (t == GgmlType::Q3_K) {
                io::BlockQ3_K y;
                refQ3K(x, y);
                put(y);
            } else if (t == GgmlType::Q4_K) {
                io::BlockQ4_K y;
                refQ4K(x, y);
                put(y);
            } else if (t == GgmlType::Q5_K) {
                io::BlockQ5_K y;
                refQ5K(x, y);
                put(y);
            } else {
                io::BlockQ6_K y;
                refQ6K(x, y);
                put(y);
            }
        }
        return {};
    }
    default:
        break;
    }
    const std::int64_t blocks = n / 32;
    std::uint8_t v[32];
    for (std::int64_t b = 0; b < blocks; ++b) {
        const float* x = src + b * 32;
        switch (t) {
        case GgmlType::Q8_0: {
            io::BlockQ8_0 y;
            refQ8_0(x, y);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q4_0: {
            io::BlockQ4_0 y;
            refSymmetric(x, 4, y.d, v);
            putNibbles(y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q5_0: {
            io::BlockQ5_0 y;
            refSymmetric(x, 5, y.d, v);
            putQ5(y.qh, y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q4_1: {
            io::BlockQ4_1 y;
            refMin(x, 4, y.d, y.m, v);
            putNibbles(y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q5_1: {
            io::BlockQ5_1 y;
            refMin(x, 5, y.d, y.m, v);
            putQ5(y.qh, y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        default:
            return makeError(ErrorCode::Internal, "unhandled ggml type");
        }
    }
    return {};
}

namespace {

// f16 bits of x when x is exactly an f16 value (finite), else nullopt.
std::optional<std::uint16_t> exactF16(double x)
{
    if (!std::isfinite(x)) return std::nullopt;
    const std::uint16_t h = f16(float(x));
    if (double(f16ToF32(h)) != x) return std::nullopt;
    return h;
}

bool isInteger(double z)
{
    return std::isfinite(z) && std::nearbyint(z) == z;
}

} // namespace

bool encodeGridRow(GgmlType t, const quant::QuantizedRows& q, int row, void* dst)
{
    const std::int64_t cols = q.codes.cols();
    auto* out = static_cast<std::uint8_t*>(dst);
    if (t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16)
        return quantizeGgmlRef(t, q.dequantized.row(row).data(), out, cols).ok();
    if (!isGgufExportType(t) || cols % 32 != 0 || std::int64_t(q.groupIndex.size()) != cols)
        return false;
    std::uint8_t v[32];
    for (std::int64_t b = 0; b < cols / 32; ++b) {
        const std::int64_t c0 = b * 32;
        const int g = q.groupIndex[std::size_t(c0)];
        for (int j = 1; j < 32; ++j)
            if (q.groupIndex[std::size_t(c0 + j)] != g) return false;
        const double s = q.scales(row, g), z = q.zeros(row, g);
        const auto d = exactF16(s);
        if (!d) return false;
        const std::uint8_t* codes = q.codes.row(row).data() + c0;
        // Shifted integer levels code + z + offset must land in [0, top].
        auto shifted = [&](int offset, int top) {
            if (!isInteger(z)) return false;
            for (int j = 0; j < 32; ++j) {
                const double x = double(codes[j]) + z + offset;
                if (x < 0 || x > top) return false;
                v[j] = std::uint8_t(x);
            }
            return true;
        };
        auto plainCodes = [&](int top) {
            for (int j = 0; j < 32; ++j) {
                if (codes[j] > top) return false;
                v[j] = codes[j];
            }
            return true;
        };
        switch (t) {
        case GgmlType::Q8_0: {
            io::BlockQ8_0 y;
            y.d = *d;
            if (!isInteger(z)) return false;
            for (int j = 0; j < 32; ++j) {
                const double x = double(codes[j]) + z;
                if (x < -128 || x > 127) return false;
                y.qs[j] = std::int8_t(x);
            }
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q4_0: {
            io::BlockQ4_0 y;
            y.d = *d;
            if (!shifted(8, 15)) return false;
            putNibbles(y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q5_0: {
            io::BlockQ5_0 y;
            y.d = *d;
            if (!shifted(16, 31)) return false;
            putQ5(y.qh, y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q4_1: {
            io::BlockQ4_1 y;
            y.d = *d;
            const auto m = exactF16(s * z); // min-based: x = d*code + s*z
            if (!m || !plainCodes(15)) return false;
            y.m = *m;
            putNibbles(y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        case GgmlType::Q5_1: {
            io::BlockQ5_1 y;
            y.d = *d;
            if (const auto m = exactF16(s * z); m && plainCodes(31)) {
                y.m = *m;
            } else if (const auto m16 = exactF16(-16.0 * s); m16 && shifted(16, 31)) {
                y.m = *m16; // x = d*(code + z + 16) - 16 d
            } else {
                return false;
            }
            putQ5(y.qh, y.qs, v);
            std::memcpy(out + b * sizeof y, &y, sizeof y);
            break;
        }
        default:
            return false;
        }
    }
    return true;
}

namespace {

Status measure(GgmlType t, EncodedMatrix& e, const float* reference, std::int64_t rows,
               std::int64_t cols)
{
    const std::size_t rowBytes = ggmlRowBytes(t, cols);
    std::vector<float> decoded(static_cast<std::size_t>(cols));
    e.exact = true;
    e.maxAbsDiff = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
        QB_TRY_STATUS(io::dequantizeGgml(int(t), e.bytes.data() + std::size_t(r) * rowBytes,
                                         decoded.data(), cols));
        const float* ref = reference + r * cols;
        for (std::int64_t c = 0; c < cols; ++c) {
            const float a = decoded[std::size_t(c)], b = ref[c];
            if (std::memcmp(&a, &b, 4) != 0 && !(a == b)) e.exact = false; // +0 == -0 counts equal
            const double diff = std::fabs(double(a) - double(b));
            if (std::isnan(diff)) {
                e.exact = false;
                e.maxAbsDiff = std::numeric_limits<double>::infinity();
            } else {
                e.maxAbsDiff = std::max(e.maxAbsDiff, diff);
            }
        }
    }
    return {};
}

Status checkShape(GgmlType t, std::int64_t cols)
{
    if (!isGgufExportType(t))
        return makeError(ErrorCode::Unsupported,
                         std::string("cannot write ggml type ") + io::ggmlTypeName(int(t)));
    if (ggmlRowBytes(t, cols) == 0)
        return makeError(ErrorCode::Shape, "row length " + std::to_string(cols) +
                                               " is not a multiple of the " +
                                               io::ggmlTypeName(int(t)) + " block size");
    return {};
}

} // namespace

Result<EncodedMatrix> encodeMatrixGgml(GgmlType t, const float* w, std::int64_t rows,
                                       std::int64_t cols)
{
    QB_TRY_STATUS(checkShape(t, cols));
    const std::size_t rowBytes = ggmlRowBytes(t, cols);
    EncodedMatrix e;
    e.bytes.resize(rowBytes * std::size_t(rows));
    for (std::int64_t r = 0; r < rows; ++r)
        QB_TRY_STATUS(
            quantizeGgmlRef(t, w + r * cols, e.bytes.data() + std::size_t(r) * rowBytes, cols));
    QB_TRY_STATUS(measure(t, e, w, rows, cols));
    return e;
}

Result<EncodedMatrix> encodeGridGgml(GgmlType t, const quant::QuantizedRows& q)
{
    const std::int64_t rows = q.codes.rows(), cols = q.codes.cols();
    QB_TRY_STATUS(checkShape(t, cols));
    if (q.dequantized.rows() != rows || q.dequantized.cols() != cols)
        return makeError(ErrorCode::Shape, "grid codes and dequantized values differ in shape");
    const std::size_t rowBytes = ggmlRowBytes(t, cols);
    EncodedMatrix e;
    e.bytes.resize(rowBytes * std::size_t(rows));
    e.fromGrid = true;
    for (std::int64_t r = 0; r < rows; ++r) {
        std::uint8_t* dst = e.bytes.data() + std::size_t(r) * rowBytes;
        if (!encodeGridRow(t, q, int(r), dst)) {
            e.fromGrid = false;
            QB_TRY_STATUS(quantizeGgmlRef(t, q.dequantized.row(r).data(), dst, cols));
        }
    }
    QB_TRY_STATUS(measure(t, e, q.dequantized.data(), rows, cols));
    return e;
}

Result<std::pair<GgmlType, EncodedMatrix>> encodeGridSmallestExact(const quant::QuantizedRows& q)
{
    for (GgmlType t : ggufExportTypes()) {
        if (ggmlRowBytes(t, q.codes.cols()) == 0) continue;
        // No exact grid construction for the K-quants yet: the reference requantizer never
        // reproduces a grid, so they are not candidates here.
        if (io::ggmlTypeTraits(int(t))->blockSize == 256) continue;
        QB_TRY(e, encodeGridGgml(t, q));
        if (e->exact || t == GgmlType::F32)
            return std::pair<GgmlType, EncodedMatrix>(t, std::move(*e));
    }
    return makeError(ErrorCode::Internal, "no export type holds the grid");
}

} // namespace qb::exporting
