#include "io/ggml_types.h"

#include "base/dtype.h"

#include <cstring>

namespace qb::io {

const GgmlTypeTraits* ggmlTypeTraits(int type)
{
    static const GgmlTypeTraits kF32{"F32", 1, 4, true}, kF16{"F16", 1, 2, true},
        kQ4_0{"Q4_0", 32, 18, true}, kQ4_1{"Q4_1", 32, 20, true}, kQ5_0{"Q5_0", 32, 22, true},
        kQ5_1{"Q5_1", 32, 24, true}, kQ8_0{"Q8_0", 32, 34, true}, kQ8_1{"Q8_1", 32, 36, false},
        kQ2K{"Q2_K", 256, 84, true}, kQ3K{"Q3_K", 256, 110, true}, kQ4K{"Q4_K", 256, 144, true},
        kQ5K{"Q5_K", 256, 176, true}, kQ6K{"Q6_K", 256, 210, true}, kQ8K{"Q8_K", 256, 292, false},
        kI8{"I8", 1, 1, false}, kI16{"I16", 1, 2, false}, kI32{"I32", 1, 4, false},
        kI64{"I64", 1, 8, false}, kF64{"F64", 1, 8, false}, kBF16{"BF16", 1, 2, true};
    switch (GgmlType(type)) {
    case GgmlType::F32:
        return &kF32;
    case GgmlType::F16:
        return &kF16;
    case GgmlType::Q4_0:
        return &kQ4_0;
    case GgmlType::Q4_1:
        return &kQ4_1;
    case GgmlType::Q5_0:
        return &kQ5_0;
    case GgmlType::Q5_1:
        return &kQ5_1;
    case GgmlType::Q8_0:
        return &kQ8_0;
    case GgmlType::Q8_1:
        return &kQ8_1;
    case GgmlType::Q2_K:
        return &kQ2K;
    case GgmlType::Q3_K:
        return &kQ3K;
    case GgmlType::Q4_K:
        return &kQ4K;
    case GgmlType::Q5_K:
        return &kQ5K;
    case GgmlType::Q6_K:
        return &kQ6K;
    case GgmlType::Q8_K:
        return &kQ8K;
    case GgmlType::I8:
        return &kI8;
    case GgmlType::I16:
        return &kI16;
    case GgmlType::I32:
        return &kI32;
    case GgmlType::I64:
        return &kI64;
    case GgmlType::F64:
        return &kF64;
    case GgmlType::BF16:
        return &kBF16;
    }
    return nullptr;
}

const char* ggmlTypeName(int type)
{
    const auto* t = ggmlTypeTraits(type);
    return t ? t->name : "?";
}

Status dequantizeGgml(int type, const void* src, float* dst, std::int64_t n)
{
    const auto* traits = ggmlTypeTraits(type);
    if (!traits || !traits->canDequantize)
        return makeError(ErrorCode::Unsupported, std::string("cannot dequantize ggml type ") +
                                                     ggmlTypeName(type) + " (" +
                                                     std::to_string(type) + ")");
    if (n % traits->blockSize != 0)
        return makeError(ErrorCode::Shape, std::to_string(n) +
                                               " elements is not a multiple of the " +
                                               traits->name + " block size");
    const auto* p = static_cast<const std::uint8_t*>(src);
    const std::int64_t blocks = n / traits->blockSize;
    switch (GgmlType(type)) {
    case GgmlType::F32:
        std::memcpy(dst, p, std::size_t(n) * 4);
        return {};
    case GgmlType::F16:
        return convertToF32(DType::F16, p, dst, std::size_t(n));
    case GgmlType::BF16:
        return convertToF32(DType::BF16, p, dst, std::size_t(n));
    case GgmlType::Q8_0:
        for (std::int64_t b = 0; b < blocks; ++b, p += sizeof(BlockQ8_0)) {
            BlockQ8_0 blk;
            std::memcpy(&blk, p, sizeof blk);
            const float d = f16ToF32(blk.d);
            for (int j = 0; j < 32; ++j)
                dst[b * 32 + j] = float(blk.qs[j]) * d;
        }
        return {};
    case GgmlType::Q4_0:
        for (std::int64_t b = 0; b < blocks; ++b, p += sizeof(BlockQ4_0)) {
            BlockQ4_0 blk;
            std::memcpy(&blk, p, sizeof blk);
            const float d = f16ToF32(blk.d);
            for (int j = 0; j < 16; ++j) {
                dst[b * 32 + j] = float(int(blk.qs[j] & 0x0F) - 8) * d;
                dst[b * 32 + j + 16] = float(int(blk.qs[j] >> 4) - 8) * d;
            }
        }
        return {};
    case GgmlType::Q4_1:
        for (std::int64_t b = 0; b < blocks; ++b, p += sizeof(BlockQ4_1)) {
            BlockQ4_1 blk;
            std::memcpy(&blk, p, sizeof blk);
            const float d = f16ToF32(blk.d);
            const float m = f16ToF32(blk.m);
            for (int j = 0; j < 16; ++j) {
                dst[b * 32 + j] = float(blk.qs[j] & 0x0F) * d + m;
                dst[b * 32 + j + 16] = float(blk.qs[j] >> 4) * d + m;
            }
        }
        return {};
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
        const bool hasMin = GgmlType(type) == GgmlType::Q5_1;
        for (std::int64_t b = 0; b < blocks; ++b, p += traits->typeSize) {
            std::uint16_t dh = 0, mh = 0;
            std::uint32_t qh = 0;
            std::memcpy(&dh, p, 2);
            if (hasMin) std::memcpy(&mh, p + 2, 2);
            const std::uint8_t* q = p + (hasMin ? 4 : 2);
            std::memcpy(&qh, q, 4);
            const std::uint8_t* qs = q + 4;
            const float d = f16ToF32(dh);
            const float m = hasMin ? f16ToF32(mh) : 0.0f;
            const int off = hasMin ? 0 : 16;
            for (int j = 0; j < 16; ++j) {
                const int h0 = int((qh >> j) << 4) & 0x10;
                const int h1 = int(qh >> (j + 12)) & 0x10;
                const int x0 = ((qs[j] & 0x0F) | h0) - off;
                const int x1 = ((qs[j] >> 4) | h1) - off;
                dst[b * 32 + j] = hasMin ? float(x0) * d + m : float(x0) * d;
                dst[b * 32 + j + 16] = hasMin ? float(x1) * d + m : float(x1) * d;
            }
        }
        return {};
    }
    case GgmlType::Q2_K:
        for (std::int64_t b = 0; b < blocks; ++b, p += sizeof(BlockQ2_K)) {
            BlockQ2_K blk;
            std::memcpy(&blk, p, sizeof blk);
            const float d = f16ToF32(blk.d), dmin = f16ToF32(blk.dmin);
            float* y = dst + b * 256;
            for (int e = 0; e < 256; ++e) {
                const int half = e / 128, s = (e % 128) / 32, l = e % 32, sb = e / 16;
                const int q = (blk.qs[32 * half + l] >> (2 * s)) & 3;
                const float dl = d * float(blk.scales[sb] & 0xF);
                const float ml = dmin * float(blk.scales[sb] >> 4);
                y[e] = dl * float(q) - ml;
            }
        }
        return {};
    case GgmlType::Q3_K:
        for (std::int64_t b = 0; b < blocks; ++b, p += sizeof(BlockQ3_K)) {
            BlockQ3_K blk;
            std::memcpy(&blk, p, sizeof blk);
            const float d = f16ToF32(blk.d);
            int sc[16];
            for (int s = 0; s < 16; ++s) {
                const int lo = s < 8 ? (blk.scales[s] & 0xF) : (blk.scales[s - 8] >> 4);
                const int hi = (blk.scales[8 + s % 4] >> (2 * (s / 4))) & 3;
                sc[s] = (lo | (hi << 4)) - 32;
            }
            float* y = dst + b * 256;
            for (int e = 0; e < 256; ++e) {
                const int half = e / 128, s = (e % 128) / 32, l = e % 32;
                const int low = (blk.qs[32 * half + l] >> (2 * s)) & 3;
                const int high = (blk.hmask[e % 32] >> (e / 32)) & 1;
                const float dl = d * float(sc[e / 16]);
                y[e] = dl * float(low - (high ? 0 : 4));
            }
        }
        return {};
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
        const bool five = GgmlType(type) == GgmlType::Q5_K;
        for (std::int64_t b = 0; b < blocks; ++b, p += traits->typeSize) {
            std::uint16_t dh, mh;
            std::memcpy(&dh, p, 2);
            std::memcpy(&mh, p + 2, 2);
            const std::uint8_t* scales = p + 4;
            const std::uint8_t* qh = p + 16;
            const std::uint8_t* qs = five ? p + 48 : p + 16;
            const float d = f16ToF32(dh), dmin = f16ToF32(mh);
            float* y = dst + b * 256;
            for (int j = 0; j < 8; ++j) {
                std::uint8_t sc, m;
                ggmlScaleMinK4(j, scales, sc, m);
                const float d1 = d * float(sc), m1 = dmin * float(m);
                for (int l = 0; l < 32; ++l) {
                    const int e = 32 * j + l;
                    int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
                    if (five) q |= ((qh[l] >> j) & 1) << 4;
                    y[e] = d1 * float(q) - m1;
                }
            }
        }
        return {};
    }
    case GgmlType::Q6_K:
        for (std::int64_t b = 0; b < blocks; ++b, p += sizeof(BlockQ6_K)) {
            BlockQ6_K blk;
            std::memcpy(&blk, p, sizeof blk);
            const float d = f16ToF32(blk.d);
            float* y = dst + b * 256;
            for (int e = 0; e < 256; ++e) {
                const int h = e / 128, r = e % 128;
                const int low = (blk.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0xF;
                const int high = (blk.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
                const int q = (low | (high << 4)) - 32;
                y[e] = d * float(blk.scales[e / 16]) * float(q);
            }
        }
        return {};
    default:
        break;
    }
    return makeError(ErrorCode::Internal, "unreachable ggml type");
}

} // namespace qb::io
