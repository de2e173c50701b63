#include "io/ggml_types.h"

#include "base/dtype.h"

#include <cstring>

namespace qb::io {

const GgmlTypeTraits* ggmlTypeTraits(int type)
{
    static const GgmlTypeTraits kF32{"F32", 1, 4, true}, kF16{"F16", 1, 2, true},
        kQ4_0{"Q4_0", 32, 18, true}, kQ4_1{"Q4_1", 32, 20, true}, kQ5_0{"Q5_0", 32, 22, true},
        kQ5_1{"Q5_1", 32, 24, true}, kQ8_0{"Q8_0", 32, 34, true}, kQ8_1{"Q8_1", 32, 36, false},
        kQ2K{"Q2_K", 256, 84, false}, kQ3K{"Q3_K", 256, 110, false}, kQ4K{"Q4_K", 256, 144, false},
        kQ5K{"Q5_K", 256, 176, false}, kQ6K{"Q6_K", 256, 210, false}, kQ8K{"Q8_K", 256, 292, false},
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
    default:
        break;
    }
    return makeError(ErrorCode::Internal, "unreachable ggml type");
}

} // namespace qb::io
