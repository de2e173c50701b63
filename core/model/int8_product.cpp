#include "model/int8_product.h"

#include "base/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QB_INT8_VNNI 1
#endif

namespace qb::model {

namespace {

constexpr int kBlock = 32;    // values per Q4_0/Q8_0/activation block
constexpr int kGroup = 16;    // weight rows interleaved for one 16-lane vector
constexpr int kPair = 2;      // groups per kernel call: 32 output columns
constexpr int kMr = 4;        // activation rows per kernel call
constexpr int kTileRows = 64; // weight rows repacked at a time (a multiple of kGroup * kPair)
// GGUF legacy blocks (FORMATS.md; io/ggml_codec.h): an F16 scale, then 16 bytes of nibbles
// (value j in the low nibble of byte j, value j + 16 in its high nibble, each minus 8) or 32 int8.
constexpr std::size_t kQ4Bytes = 2 + kBlock / 2, kQ8Bytes = 2 + kBlock;

// A tile of weight rows in a kernel's layout. Per group g of 16 rows and block b (gb = g * blocks
// + b): for the VNNI kernel 512 int8 weights, quad c (values 4c..4c+3) of row r at
// [gb*512 + (c*16 + r)*4], and 16 corrections 128 * sum(w) at [gb*16] (the activations carry
// +128 so the dot instruction takes them unsigned); for the portable kernel the same weights as
// F32, value k of row r at [gb*512 + k*16 + r]; for both the rows' 16 F32 scales at [gb*16].
// Rows past the weight's end are zero.
struct PackedTile {
    int groups = 0, blocks = 0;
    std::vector<std::int8_t> w;
    std::vector<float> wf;
    std::vector<float> d;
    std::vector<std::int32_t> corr;
};

void repackTile(const PackedWeight& p, bool q4, Int8Kernel kernel, std::int64_t r0, int n, PackedTile& t)
{
    const int blocks = int(p.cols() / kBlock);
    const bool vnni = kernel == Int8Kernel::Avx512Vnni;
    t.groups = (n + kGroup * kPair - 1) / (kGroup * kPair) * kPair;
    t.blocks = blocks;
    const std::size_t gb = std::size_t(t.groups) * std::size_t(blocks);
    if (vnni) {
        t.w.assign(gb * 512, 0);
        t.corr.assign(gb * kGroup, 0);
    } else {
        t.wf.assign(gb * 512, 0.0f);
    }
    t.d.assign(gb * kGroup, 0.0f);
    std::int8_t v[kBlock];
    for (int r = 0; r < n; ++r) {
        const std::uint8_t* src = p.encodedRow(r0 + r);
        const int g = r / kGroup, lr = r % kGroup;
        for (int b = 0; b < blocks; ++b) {
            const std::uint8_t* blk = src + std::size_t(b) * (q4 ? kQ4Bytes : kQ8Bytes);
            if (q4) {
                for (int j = 0; j < kBlock / 2; ++j) {
                    v[j] = std::int8_t((blk[2 + j] & 0x0F) - 8);
                    v[j + kBlock / 2] = std::int8_t((blk[2 + j] >> 4) - 8);
                }
            } else {
                std::memcpy(v, blk + 2, kBlock);
            }
            const std::size_t at = std::size_t(g) * std::size_t(blocks) + std::size_t(b);
            if (vnni) {
                std::int8_t* dst = t.w.data() + at * 512;
                std::int32_t sum = 0;
                for (int c = 0; c < kBlock / 4; ++c)
                    for (int i = 0; i < 4; ++i) {
                        dst[(c * kGroup + lr) * 4 + i] = v[c * 4 + i];
                        sum += v[c * 4 + i];
                    }
                t.corr[at * kGroup + std::size_t(lr)] = 128 * sum;
            } else {
                float* dst = t.wf.data() + at * 512;
                for (int k = 0; k < kBlock; ++k)
                    dst[k * kGroup + lr] = float(v[k]);
            }
            f16RowToF32(blk, &t.d[at * kGroup + std::size_t(lr)], 1); // the block's F16 scale
        }
    }
}

// out[r * 32 + l] for activation rows a + r * lda (r < mr) and the 32 weight rows of groups g,
// g + 1: per block, the integer dot product, times (weight scale * activation scale), added in
// F32 by a fused multiply-add, blocks in order. The portable kernel forms the dot product in F32
// from the integers: every partial sum is an integer below 2^24 (32 * 127 * 127), so it is exact
// in any order, with or without fused multiply-adds, and equals the VNNI kernel's.
void kernelPortable(int mr, const std::uint8_t* a, std::int64_t lda, const float* as, std::int64_t ldas,
                    const PackedTile& t, int g, float* out)
{
    // 16 lanes as one GCC/Clang vector: SSE, AVX or AVX-512 code as the target allows.
    typedef float Lanes __attribute__((vector_size(kGroup * sizeof(float))));
    float acc[kMr][kPair][kGroup] = {};
    for (int b = 0; b < t.blocks; ++b)
        for (int r = 0; r < mr; ++r) {
            const std::uint8_t* x = a + r * lda + std::int64_t(b) * kBlock;
            const float s = as[r * ldas + b];
            for (int p = 0; p < kPair; ++p) {
                const std::size_t at = std::size_t(g + p) * std::size_t(t.blocks) + std::size_t(b);
                const float* w = t.wf.data() + at * 512;
                Lanes dot = {};
                for (int k = 0; k < kBlock; ++k) {
                    Lanes wk;
                    std::memcpy(&wk, w + k * kGroup, sizeof wk);
                    dot += float(int(x[k]) - 128) * wk;
                }
                const float* d = t.d.data() + at * kGroup;
                for (int l = 0; l < kGroup; ++l)
                    acc[r][p][l] = std::fma(dot[l], d[l] * s, acc[r][p][l]);
            }
        }
    for (int r = 0; r < mr; ++r)
        for (int p = 0; p < kPair; ++p)
            for (int l = 0; l < kGroup; ++l)
                out[r * kGroup * kPair + p * kGroup + l] = acc[r][p][l];
}

#ifdef QB_INT8_VNNI
template <int MR>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void kernelVnni(const std::uint8_t* a, std::int64_t lda,
                                                                       const float* as, std::int64_t ldas,
                                                                       const PackedTile& t, int g, float* out)
{
    __m512 acc[MR][kPair];
    for (int r = 0; r < MR; ++r)
        for (int p = 0; p < kPair; ++p)
            acc[r][p] = _mm512_setzero_ps();
    const std::size_t blocks = std::size_t(t.blocks);
    for (std::size_t b = 0; b < blocks; ++b) {
        const std::size_t at0 = std::size_t(g) * blocks + b, at1 = at0 + blocks;
        const std::int8_t* w0 = t.w.data() + at0 * 512;
        const std::int8_t* w1 = t.w.data() + at1 * 512;
        __m512i dot[MR][kPair];
        for (int r = 0; r < MR; ++r)
            for (int p = 0; p < kPair; ++p)
                dot[r][p] = _mm512_setzero_si512();
        for (int c = 0; c < kBlock / 4; ++c) {
            const __m512i v0 = _mm512_loadu_si512(w0 + c * 64), v1 = _mm512_loadu_si512(w1 + c * 64);
            for (int r = 0; r < MR; ++r) {
                std::int32_t quad;
                std::memcpy(&quad, a + r * lda + std::int64_t(b) * kBlock + c * 4, 4);
                const __m512i x = _mm512_set1_epi32(quad);
                dot[r][0] = _mm512_dpbusd_epi32(dot[r][0], x, v0);
                dot[r][1] = _mm512_dpbusd_epi32(dot[r][1], x, v1);
            }
        }
        const __m512 d0 = _mm512_loadu_ps(t.d.data() + at0 * kGroup), d1 = _mm512_loadu_ps(t.d.data() + at1 * kGroup);
        const __m512i c0 = _mm512_loadu_si512(t.corr.data() + at0 * kGroup);
        const __m512i c1 = _mm512_loadu_si512(t.corr.data() + at1 * kGroup);
        for (int r = 0; r < MR; ++r) {
            const __m512 s = _mm512_set1_ps(as[r * ldas + std::int64_t(b)]);
            acc[r][0] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r][0], c0)), _mm512_mul_ps(d0, s), acc[r][0]);
            acc[r][1] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r][1], c1)), _mm512_mul_ps(d1, s), acc[r][1]);
        }
    }
    for (int r = 0; r < MR; ++r) {
        _mm512_storeu_ps(out + r * kGroup * kPair, acc[r][0]);
        _mm512_storeu_ps(out + r * kGroup * kPair + kGroup, acc[r][1]);
    }
}

bool cpuHasVnni()
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
}
#endif

bool isQ4(const PackedWeight& p) { return p.format() == "Q4_0"; }

} // namespace

void quantizeActivationsQ8(const Eigen::Ref<const RowMatrix>& x, Int8Activations& out, int threads)
{
    const std::int64_t rows = x.rows(), cols = x.cols(), blocks = cols / kBlock;
    out.rows = rows;
    out.cols = cols;
    out.values.resize(std::size_t(rows * cols));
    out.scales.resize(std::size_t(rows * blocks));
#pragma omp parallel for schedule(static) num_threads(std::max(1, threads)) if (threads > 1 && rows > 1)
    for (std::int64_t r = 0; r < rows; ++r) {
        const float* src = x.row(r).data();
        std::uint8_t* dst = out.values.data() + r * cols;
        for (std::int64_t b = 0; b < blocks; ++b) {
            const float* v = src + b * kBlock;
            float amax = 0.0f, probe = 0.0f;
            for (int i = 0; i < kBlock; ++i) {
                amax = std::max(amax, std::fabs(v[i]));
                probe += v[i] * 0.0f; // NaN when any value is NaN or infinite
            }
            if (!std::isfinite(amax) || probe != 0.0f) {
                // A non-finite activation: its block's products are NaN, as in F32 (not garbage codes).
                std::fill(dst + b * kBlock, dst + (b + 1) * kBlock, std::uint8_t(128));
                out.scales[std::size_t(r * blocks + b)] = std::numeric_limits<float>::quiet_NaN();
                continue;
            }
            // llama.cpp's Q8_0: d = amax / 127 (stored as F16), q = round(x / d) with 1/d unrounded.
            const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            for (int i = 0; i < kBlock; ++i) {
                const float q = std::clamp(std::round(v[i] * id), -127.0f, 127.0f);
                dst[b * kBlock + i] = std::uint8_t(int(q) + 128);
            }
            out.scales[std::size_t(r * blocks + b)] = f16ToF32(f32ToF16(d));
        }
    }
}

Int8Kernel bestInt8Kernel()
{
    // QB_INT8_KERNEL=portable runs the portable loop on any CPU (to check it where VNNI exists).
    static const bool portableForced = [] {
        const char* e = std::getenv("QB_INT8_KERNEL");
        return e && std::string_view(e) == "portable";
    }();
    if (portableForced) return Int8Kernel::Portable;
#ifdef QB_INT8_VNNI
    static const bool vnni = cpuHasVnni();
    if (vnni) return Int8Kernel::Avx512Vnni;
#endif
    return Int8Kernel::Portable;
}

const char* int8KernelName(Int8Kernel k) { return k == Int8Kernel::Avx512Vnni ? "avx512-vnni" : "portable"; }

bool int8ProductSupported(const PackedWeight& p)
{
    if (dynamic_cast<const Int8ProductWeight*>(&p)) return true;
    const std::string f = p.format();
    return (f == "Q4_0" || f == "Q8_0") && p.cols() > 0 && p.cols() % kBlock == 0 && p.rows() > 0 &&
           p.encodedRow(0) != nullptr;
}

Int8ProductWeight::Int8ProductWeight(PackedWeightPtr inner)
    : PackedWeight(inner->rows(), inner->cols()), m_inner(std::move(inner)), m_q4(isQ4(*m_inner))
{}

void Int8ProductWeight::multiply(const Eigen::Ref<const RowMatrix>& x, Eigen::Ref<RowMatrix> out, int threads) const
{
    multiply(x, out, threads, bestInt8Kernel());
}

void Int8ProductWeight::multiply(const Eigen::Ref<const RowMatrix>& x, Eigen::Ref<RowMatrix> out, int threads,
                                 Int8Kernel kernel) const
{
    thread_local Int8Activations a;
    quantizeActivationsQ8(x, a, threads);
    multiply(a, out, threads, kernel);
}

void Int8ProductWeight::multiply(const Int8Activations& a, Eigen::Ref<RowMatrix> out, int threads,
                                 Int8Kernel kernel) const
{
    const std::int64_t N = rows(), M = a.rows, blocks = a.cols / kBlock;
    if (kernel == Int8Kernel::Avx512Vnni && bestInt8Kernel() != Int8Kernel::Avx512Vnni) kernel = Int8Kernel::Portable;
    // The portable kernel's F32 tile (4 bytes a weight) is kept to half the rows, to stay in L2.
    const std::int64_t tileRows = kernel == Int8Kernel::Portable ? kTileRows / 2 : kTileRows;
    const std::int64_t tiles = (N + tileRows - 1) / tileRows;
    const std::int64_t ldo = out.outerStride();
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(1, threads)) if (threads > 1 && tiles > 1)
    for (std::int64_t tile = 0; tile < tiles; ++tile) {
        thread_local PackedTile t;
        const std::int64_t r0 = tile * tileRows;
        const int n = int(std::min<std::int64_t>(tileRows, N - r0));
        repackTile(*m_inner, m_q4, kernel, r0, n, t);
        float buf[kMr * kGroup * kPair];
        for (std::int64_t m0 = 0; m0 < M; m0 += kMr) {
            const int mr = int(std::min<std::int64_t>(kMr, M - m0));
            const std::uint8_t* am = a.values.data() + m0 * a.cols;
            const float* sm = a.scales.data() + m0 * blocks;
            for (int g = 0; g < t.groups; g += kPair) {
#ifdef QB_INT8_VNNI
                if (kernel == Int8Kernel::Avx512Vnni) {
                    if (mr == kMr) kernelVnni<kMr>(am, a.cols, sm, blocks, t, g, buf);
                    else
                        for (int r = 0; r < mr; ++r)
                            kernelVnni<1>(am + r * a.cols, a.cols, sm + r * blocks, blocks, t, g,
                                          buf + r * kGroup * kPair);
                } else
#endif
                    kernelPortable(mr, am, a.cols, sm, blocks, t, g, buf);
                const std::int64_t c0 = r0 + std::int64_t(g) * kGroup;
                const int valid = int(std::clamp<std::int64_t>(N - c0, 0, kGroup * kPair));
                for (int r = 0; r < mr; ++r)
                    std::memcpy(out.data() + (m0 + r) * ldo + c0, buf + r * kGroup * kPair,
                                std::size_t(valid) * sizeof(float));
            }
        }
    }
}

// ---- Per-row uniform codes ----

namespace {

constexpr std::int64_t kCodesTileGroups = 4; // groups of 16 weight rows per parallel task (even)
constexpr int kCodesMr = 8;                  // activation rows per kernel call

// dots[r * 32 + p * 16 + l] = Σ_k a[r * lda + k] · w_p[k of row l] over `quads` quads of k, for
// the activation rows r < mr and the two groups of 16 weight rows w0 (p = 0) and w1 (p = 1).
void codesDotsPortable(int mr, const std::uint8_t* a, std::int64_t lda, std::int64_t quads, const std::int8_t* w0,
                       const std::int8_t* w1, std::int32_t* dots)
{
    for (int r = 0; r < mr; ++r)
        for (int p = 0; p < kPair; ++p) {
            const std::int8_t* w = p == 0 ? w0 : w1;
            for (int l = 0; l < kGroup; ++l) {
                std::int32_t sum = 0;
                for (std::int64_t c = 0; c < quads; ++c)
                    for (int i = 0; i < 4; ++i)
                        sum += std::int32_t(a[r * lda + c * 4 + i]) * std::int32_t(w[(c * kGroup + l) * 4 + i]);
                dots[r * kGroup * kPair + p * kGroup + l] = sum;
            }
        }
}

#ifdef QB_INT8_VNNI
template <int MR>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void codesDotsVnni(const std::uint8_t* a, std::int64_t lda,
                                                                          std::int64_t quads, const std::int8_t* w0,
                                                                          const std::int8_t* w1, std::int32_t* dots)
{
    __m512i acc[MR][kPair];
    for (int r = 0; r < MR; ++r)
        for (int p = 0; p < kPair; ++p)
            acc[r][p] = _mm512_setzero_si512();
    for (std::int64_t c = 0; c < quads; ++c) {
        const __m512i v0 = _mm512_loadu_si512(w0 + c * 64), v1 = _mm512_loadu_si512(w1 + c * 64);
        for (int r = 0; r < MR; ++r) {
            std::int32_t quad;
            std::memcpy(&quad, a + r * lda + c * 4, 4);
            const __m512i x = _mm512_set1_epi32(quad);
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], x, v0);
            acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], x, v1);
        }
    }
    for (int r = 0; r < MR; ++r) {
        _mm512_storeu_si512(dots + r * kGroup * kPair, acc[r][0]);
        _mm512_storeu_si512(dots + r * kGroup * kPair + kGroup, acc[r][1]);
    }
}
#endif

} // namespace

bool quantizeActivationCodes(Eigen::Ref<RowMatrix> rows, const ActQuantSpec& spec, ActivationCodes& out)
{
    const Eigen::Index n = rows.rows(), k = rows.cols();
    out.source = nullptr;
    out.rows = n;
    out.cols = k;
    out.stride = (k + 3) / 4 * 4;
    out.bits = spec.bits;
    out.codes.resize(std::size_t(n * out.stride));
    out.scale.resize(std::size_t(n));
    out.zero.resize(std::size_t(n));
    out.sum.resize(std::size_t(n));
    bool ok = spec.enabled() && spec.bits <= 8 && !spec.staticRange && spec.granularity == ActGranularity::PerToken;
    if (!ok) {
        fakeQuantizeActivations(rows, spec);
        return false;
    }
#pragma omp parallel for schedule(static) reduction(&& : ok)
    for (Eigen::Index r = 0; r < n; ++r) {
        float* row = rows.row(r).data();
        Eigen::Map<Eigen::ArrayXf> x(row, k);
        std::uint8_t* dst = out.codes.data() + r * out.stride;
        std::fill(dst + k, dst + out.stride, std::uint8_t(0));
        const RangeQuantizer q(std::min(0.0f, x.minCoeff()), std::max(0.0f, x.maxCoeff()), spec);
        if (!x.allFinite()) { // as fakeQuantizeActivations leaves such a row; no codes for it
            q.apply(row, k);
            ok = false;
            continue;
        }
        std::int32_t sum = 0;
        if (q.scale == 0) { // a zero row: its values stay 0
            std::fill(dst, dst + k, std::uint8_t(0));
            out.scale[std::size_t(r)] = 0;
            out.zero[std::size_t(r)] = 0;
        } else {
            // RangeQuantizer::apply's operations, value by value, keeping the code.
            for (Eigen::Index j = 0; j < k; ++j) {
                const float c = std::min(std::max(std::rint(row[j] * q.invScale) + q.zero, q.qmin), q.qmax);
                row[j] = (c - q.zero) * q.scale;
                const int u = int(c) - int(q.qmin);
                dst[j] = std::uint8_t(u);
                sum += u;
            }
            out.scale[std::size_t(r)] = q.scale;
            out.zero[std::size_t(r)] = int(q.zero) - int(q.qmin);
        }
        out.sum[std::size_t(r)] = sum;
    }
    if (ok) out.source = rows.data();
    return ok;
}

UniformCodesWeight::UniformCodesWeight(std::int64_t rows, std::int64_t cols, int bits,
                                       const std::vector<std::uint8_t>& codes, std::vector<double> scale,
                                       std::vector<std::int32_t> zero)
    : PackedWeight(rows, cols), m_bits(bits), m_stride((cols + 3) / 4 * 4), m_scale(std::move(scale)),
      m_zero(std::move(zero))
{
    const std::int64_t groups = (rows + kGroup * kCodesTileGroups - 1) / (kGroup * kCodesTileGroups) * kCodesTileGroups;
    const std::int64_t quads = m_stride / 4;
    const int c = 1 << (bits - 1);
    m_w.assign(std::size_t(groups * quads * 64), 0);
    m_scaleF.resize(std::size_t(rows));
    m_zc.resize(std::size_t(rows));
    m_sumW.resize(std::size_t(rows));
    for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t g = r / kGroup, l = r % kGroup;
        std::int8_t* dst = m_w.data() + g * quads * 64 + l * 4;
        std::int32_t sum = 0;
        for (std::int64_t j = 0; j < cols; ++j) {
            const int w8 = int(codes[std::size_t(r * cols + j)]) - c;
            dst[(j / 4) * 64 + j % 4] = std::int8_t(w8);
            sum += w8;
        }
        m_sumW[std::size_t(r)] = sum;
        m_zc[std::size_t(r)] = m_zero[std::size_t(r)] - c;
        m_scaleF[std::size_t(r)] = float(m_scale[std::size_t(r)]);
    }
}

void UniformCodesWeight::decodeRows(std::int64_t r0, std::int64_t n, float* dst) const
{
    const std::int64_t quads = m_stride / 4, K = cols();
    const int c = 1 << (m_bits - 1);
    for (std::int64_t r = r0; r < r0 + n; ++r) {
        const std::int8_t* src = m_w.data() + (r / kGroup) * quads * 64 + (r % kGroup) * 4;
        const double s = m_scale[std::size_t(r)], z = double(m_zero[std::size_t(r)]);
        float* out = dst + (r - r0) * K;
        for (std::int64_t j = 0; j < K; ++j) // the fake-quantized value: scale * (code - zero) in double
            out[j] = float(s * (double(int(src[(j / 4) * 64 + j % 4]) + c) - z));
    }
}

std::size_t UniformCodesWeight::bytes() const
{
    return m_w.size() + m_scale.size() * (sizeof(double) + sizeof(float) + 3 * sizeof(std::int32_t));
}

std::string UniformCodesWeight::format() const { return std::to_string(m_bits) + "-bit per-row codes"; }

bool UniformCodesWeight::integerProducts(int activationBits) const
{
    if (activationBits < 1 || activationBits > 8) return false;
    // |Σ (u - za)(q - Z)| <= (2^a - 1)(2^w - 1)·K must fit an int32.
    const double bound = double((1 << activationBits) - 1) * double((1 << m_bits) - 1) * double(cols());
    return bound < 2147483647.0;
}

void UniformCodesWeight::multiply(const ActivationCodes& a, Eigen::Ref<RowMatrix> out, int threads,
                                  Int8Kernel kernel) const
{
    const std::int64_t N = rows(), M = a.rows, K = cols(), quads = m_stride / 4;
    if (kernel == Int8Kernel::Avx512Vnni && bestInt8Kernel() != Int8Kernel::Avx512Vnni) kernel = Int8Kernel::Portable;
    const std::int64_t groups = std::int64_t(m_w.size()) / (quads * 64);
    const std::int64_t tasks = groups / kCodesTileGroups;
    const std::int64_t ldo = out.outerStride();
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(1, threads)) if (threads > 1 && tasks > 1)
    for (std::int64_t task = 0; task < tasks; ++task) {
        alignas(64) std::int32_t dots[kCodesMr * kGroup * kPair];
        for (std::int64_t m0 = 0; m0 < M; m0 += kCodesMr) {
            const int mr = int(std::min<std::int64_t>(kCodesMr, M - m0));
            const std::uint8_t* am = a.codes.data() + m0 * a.stride;
            for (std::int64_t g = task * kCodesTileGroups; g < (task + 1) * kCodesTileGroups; g += kPair) {
                const std::int64_t c0 = g * kGroup;
                if (c0 >= N) break;
                const std::int8_t* w0 = m_w.data() + g * quads * 64;
                const std::int8_t* w1 = w0 + quads * 64;
#ifdef QB_INT8_VNNI
                if (kernel == Int8Kernel::Avx512Vnni) {
                    if (mr == kCodesMr) {
                        codesDotsVnni<kCodesMr>(am, a.stride, quads, w0, w1, dots);
                    } else {
                        int r = 0;
                        for (; r + 4 <= mr; r += 4)
                            codesDotsVnni<4>(am + r * a.stride, a.stride, quads, w0, w1, dots + r * kGroup * kPair);
                        for (; r < mr; ++r)
                            codesDotsVnni<1>(am + r * a.stride, a.stride, quads, w0, w1, dots + r * kGroup * kPair);
                    }
                } else
#endif
                    codesDotsPortable(mr, am, a.stride, quads, w0, w1, dots);
                // Σ (u - za)(w8 - zc) = Σ u·w8 - zc·Σu - za·Σw8 + K·za·zc, in wrapping 32-bit
                // arithmetic (exact: the true sum fits, integerProducts()), then sa·sw in F32.
                const int valid = int(std::min<std::int64_t>(N - c0, kGroup * kPair));
                for (int r = 0; r < mr; ++r) {
                    const std::size_t t = std::size_t(m0 + r);
                    const std::uint32_t za = std::uint32_t(a.zero[t]), su = std::uint32_t(a.sum[t]);
                    const float sa = a.scale[t];
                    float* o = out.data() + (m0 + r) * ldo + c0;
                    const std::int32_t* d = dots + r * kGroup * kPair;
                    for (int j = 0; j < valid; ++j) {
                        const std::size_t row = std::size_t(c0 + j);
                        const std::uint32_t zc = std::uint32_t(m_zc[row]);
                        const std::uint32_t v = std::uint32_t(d[j]) - zc * su - za * std::uint32_t(m_sumW[row]) +
                                                std::uint32_t(K) * za * zc;
                        o[j] = float(std::int32_t(v)) * (sa * m_scaleF[row]);
                    }
                }
            }
        }
    }
}

PackedWeightPtr int8ProductWeight(PackedWeightPtr p)
{
    if (!p || dynamic_cast<const Int8ProductWeight*>(p.get()) || !int8ProductSupported(*p)) return p;
    return std::make_shared<Int8ProductWeight>(std::move(p));
}

std::shared_ptr<const Model> withInt8Products(std::shared_ptr<const Model> m, int* wrapped)
{
    int count = 0;
    std::shared_ptr<Model> copy; // made at the first weight to wrap (the F32 parts are copied)
    for (int l = 0; l < m->numLayers(); ++l) {
        const auto layer = m->layer(l);
        if (!layer) continue;
        std::shared_ptr<DecoderLayerWeights> w;
        for (std::size_t i = 0; i < layer->packed.size(); ++i) {
            PackedWeightPtr q = int8ProductWeight(layer->packed[i]);
            if (q == layer->packed[i]) continue; // unsupported, absent or already wrapped
            if (!copy) copy = std::make_shared<Model>(*m);
            if (!w) w = std::make_shared<DecoderLayerWeights>(*layer);
            w->packed[i] = std::move(q);
            ++count;
        }
        if (w) copy->setLayer(l, std::move(w));
    }
    if (PackedWeightPtr h = int8ProductWeight(m->packedLmHead()); h != m->packedLmHead()) {
        if (!copy) copy = std::make_shared<Model>(*m);
        if (copy->config().tieWordEmbeddings) copy->setPackedEmbedding(std::move(h));
        else copy->setPackedLmHead(std::move(h));
        ++count;
    }
    if (wrapped) *wrapped = count;
    if (!copy) return m;
    return copy;
}

} // namespace qb::model
