#pragma once
// Integer products. (1) For GGUF Q4_0 and Q8_0 weights, computed as llama.cpp computes them on a CPU:
// each row of the activations is quantized to 8 bits per block of 32 (Q8_0: scale amax / 127
// stored as F16, values x / scale rounded half away from zero), each weight block is used as its
// integers (Q4_0: nibble - 8; Q8_0: the stored int8), every block's dot product is summed exactly
// in 32-bit integers and scaled by the two F16 scales, and the blocks are summed in F32.
//
// This is an opt-in evaluation mode (CLI `--kernels int8`, the window's Perplexity panel): the
// default product decodes the weights to F32 and keeps the activations in F32, so a quantized
// model's measured error is the weights' alone. With 8-bit activations the numbers follow what
// llama.cpp computes for the same file, and the products run on integer dot instructions
// (AVX-512 VNNI where the CPU has it, else a portable loop with the same arithmetic: the two give
// the same bits, the integer sums being exact and the F32 steps the same operations in the same
// order). QB_INT8_KERNEL=portable forces the portable loop (to check it on a VNNI machine).
//
// (2) For weights held as per-row uniform codes with per-token quantized activations (RUQuant's
// quantized path; "Integer products of per-row uniform codes" below).
//
// Use: wrap the weights (int8ProductWeight / withInt8Products); the forward pass
// (model/forward.cpp) multiplies through Int8ProductWeight::multiply when it meets one, and
// through UniformCodesWeight::multiply when the input group's quantizer kept the rows' codes.
// Thread-safety: the wrappers are immutable; multiply() may run concurrently.

#include "base/packed_weight.h"
#include "model/model.h"
#include "model/runtime.h"

#include <Eigen/Core>

#include <cstdint>
#include <memory>
#include <vector>

namespace qb::model {

// Activations quantized per row and block of 32: values + 128 as unsigned bytes (the form the
// integer dot instructions take), and each block's scale (F16-rounded, as F32).
struct Int8Activations {
    std::int64_t rows = 0, cols = 0;
    std::vector<std::uint8_t> values; // rows x cols, q + 128
    std::vector<float> scales;        // rows x cols/32
};
// x [rows, cols], cols a multiple of 32. `threads` > 1 splits the rows.
void quantizeActivationsQ8(const Eigen::Ref<const RowMatrix>& x, Int8Activations& out, int threads = 1);

// Which kernel runs the block dot products.
enum class Int8Kernel { Portable, Avx512Vnni };
// The fastest this CPU runs (AVX-512 VNNI + BW, checked at run time), else Portable.
Int8Kernel bestInt8Kernel();
const char* int8KernelName(Int8Kernel k);

// A Q4_0 or Q8_0 weight whose products take 8-bit activations and integer dot products. Decoding
// (decodeRows: the embedding, F32 copies) is the inner weight's, unchanged.
class Int8ProductWeight final : public PackedWeight {
public:
    // inner: format "Q4_0" or "Q8_0", encodedRow() available, cols a multiple of 32 (else use
    // int8ProductWeight(), which returns inner as it is).
    explicit Int8ProductWeight(PackedWeightPtr inner);
    void decodeRows(std::int64_t r0, std::int64_t n, float* dst) const override { m_inner->decodeRows(r0, n, dst); }
    std::size_t bytes() const override { return m_inner->bytes(); }
    std::string format() const override { return m_inner->format(); }
    const std::uint8_t* encodedRow(std::int64_t r) const override { return m_inner->encodedRow(r); }
    // out [x.rows(), rows()] = x · Wᵀ as described above; x [*, cols()]. `kernel` is for tests
    // (bestInt8Kernel() otherwise; a kernel the CPU lacks falls back to Portable).
    void multiply(const Eigen::Ref<const RowMatrix>& x, Eigen::Ref<RowMatrix> out, int threads) const;
    void multiply(const Eigen::Ref<const RowMatrix>& x, Eigen::Ref<RowMatrix> out, int threads,
                  Int8Kernel kernel) const;
    // The same from activations already quantized (one quantization shared by several weights).
    void multiply(const Int8Activations& a, Eigen::Ref<RowMatrix> out, int threads, Int8Kernel kernel) const;

private:
    PackedWeightPtr m_inner;
    bool m_q4 = false;
};

// ---- Integer products of per-row uniform codes (RUQuant's W4A4 / W6A6 carry) ----
// A weight quantized per output row to integer codes on a uniform grid and activations quantized
// per row (per token) on theirs multiply as integers: x̂·ŵ = sa·sw·Σ (u - za)(q - Z), the sum
// formed exactly in 32-bit integers (codes times codes, minus the zero-point corrections), then
// one F32 conversion and one F32 product with sa·sw. The F32 fake-quantized product computes the
// same sum of products with a rounding at every addition, so the two agree to float rounding.
// The AVX-512 VNNI kernel and the portable loop give the same bits (integer sums exact, the F32
// steps the same operations). The forward pass takes this path only where the CPU has VNNI
// (bestInt8Kernel(); QB_INT8_KERNEL=portable turns it off); elsewhere it decodes the codes and
// multiplies in F32, as for any packed weight.

// Activations quantized per row: row r's value j is scale[r] * (codes[r * stride + j] - zero[r]).
struct ActivationCodes {
    std::int64_t rows = 0, cols = 0, stride = 0; // stride: cols rounded up to 4 (zero padded)
    const float* source = nullptr;               // the rows these codes describe (null: none)
    std::vector<std::uint8_t> codes;
    std::vector<float> scale;
    std::vector<std::int32_t> zero, sum; // sum: the row's codes added up
    int bits = 0;
};
// Fake-quantizes rows in place per row, bit for bit as fakeQuantizeActivations(rows, spec), and
// records the codes in `out` (out.source = rows' data). spec: enabled, per token, no static range,
// at most 8 bits. Returns false (out.source null; the rows still quantized as
// fakeQuantizeActivations does) when a row's range is not finite.
bool quantizeActivationCodes(Eigen::Ref<RowMatrix> rows, const ActQuantSpec& spec, ActivationCodes& out);

class UniformCodesWeight final : public PackedWeight {
public:
    // codes [rows x cols] row-major in [0, 2^bits) (bits 1..8); row r's value j is
    // float(scale[r] * (codes[r, j] - zero[r])) computed in double, zero[r] in [0, 2^bits).
    UniformCodesWeight(std::int64_t rows, std::int64_t cols, int bits, const std::vector<std::uint8_t>& codes,
                       std::vector<double> scale, std::vector<std::int32_t> zero);
    void decodeRows(std::int64_t r0, std::int64_t n, float* dst) const override;
    std::size_t bytes() const override;
    std::string format() const override;
    int bits() const { return m_bits; }
    // True when every product with `activationBits`-bit codes fits a 32-bit integer sum.
    bool integerProducts(int activationBits) const;
    // out [a.rows, rows()] = x̂ · ŵᵀ as described above (integerProducts(a.bits) must hold).
    void multiply(const ActivationCodes& a, Eigen::Ref<RowMatrix> out, int threads, Int8Kernel kernel) const;

private:
    int m_bits;
    std::int64_t m_stride;        // cols rounded up to 4
    std::vector<std::int8_t> m_w; // per group of 16 rows, quad c of row lr at [(g * quads + c) * 64 + lr * 4]:
                                  // code - 2^(bits-1), zero past the row's end
    std::vector<double> m_scale;
    std::vector<float> m_scaleF;
    std::vector<std::int32_t> m_zero, m_zc, m_sumW; // zc: zero - 2^(bits-1); sumW: Σ (code - 2^(bits-1))
};

// True for a weight int8ProductWeight() wraps: Q4_0/Q8_0 blocks with raw rows, 32 | cols.
bool int8ProductSupported(const PackedWeight& p);
// `p` wrapped when supported, else `p` itself (already wrapped: itself).
PackedWeightPtr int8ProductWeight(PackedWeightPtr p);
// A model that computes every supported linear (decoder layers and a separately packed head)
// with integer products; the rest is shared with `m`. Returns `m` itself when nothing is
// supported. `wrapped` (optional) receives how many weights were wrapped.
std::shared_ptr<const Model> withInt8Products(std::shared_ptr<const Model> m, int* wrapped = nullptr);

} // namespace qb::model
