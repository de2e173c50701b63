#pragma once
// Uniform affine grids: the quantiser shared by RTN, GPTQ and NeUQI.
//
// What: b-bit (2..8) uniform grids with one (scale, zero) pair per output row and group of g
// consecutive input columns (g <= 0 or g >= width: one group per row; a g that does not divide
// the width leaves a shorter last group, as the reference GPTQ does). Min-Max initialisation in
// both the reference-GPTQ form and the plain METHODS.md §0 form; code/dequantise helpers.
//
// Conventions (METHODS.md §0, one internal form): offset form with a real zero z,
//   q = clamp(round(w/s - z), 0, L-1),   w_hat = s * (z + q),   L = 2^bits.
// The integer zero-point of GPTQ-style formats is Z = -z. When z is integral the code is computed
// as round(w/s) - z, which is bit-exact with the reference `clamp(round(x/scale) + zero)`
// (round-half-even is not translation invariant by odd integers, so the order matters).
// Rounding is round-half-to-even (std::nearbyint under the default FE_TONEAREST), like torch.
//
// Threading: free functions, no shared state, single-threaded and deterministic.
// Units: weights and scales are in the weight's own units; zeros are in grid steps.
// Layout: weight matrices are row-major [out rows x in columns], the layout of a Linear weight.
// Parameter matrices are [rows x groups], row-major. All arithmetic is in double.

#include "base/result.h"

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace qb::quant {

using MatrixXfR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixXdR = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixU8R = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

inline constexpr int kMinBits = 2;
inline constexpr int kMaxBits = 8;

struct CmpqCodes; // cmpq.h

struct GridSpec {
    int bits = 4;
    int groupSize = -1;       // <= 0: per output channel (one group = the whole row)
    bool sym = false;         // symmetric: mid-grid integer zero (reference GPTQ)
    bool gptqStorage = false; // every group storable in a GPTQ checkpoint (storableGptqParams)
    // Min-Max clipping ratio in (0, 1]: the range [min, max] is multiplied by it before the scale
    // is taken (RUQuant/OmniQuant's weight clipping "swc"); values outside are clamped. Min-Max only.
    double clip = 1.0;
};

struct GroupParams {
    double scale = 1.0;
    double zero = 0.0;   // offset form: grid points are scale * (zero + {0..L-1})
    double offset = 0.0; // storage containers with a min (GGUF Q4_1, K-quants): grid points are
                         // scale * (zero + {0..L-1}) - offset, zero integral (container_grid.h)
};

inline int gridLevels(int bits) { return 1 << bits; }
// Effective group width for `cols` input columns (the whole row when per-channel).
inline int groupWidth(int groupSize, int cols) { return groupSize <= 0 || groupSize > cols ? cols : groupSize; }
// Number of groups per row, the last one possibly shorter.
inline int groupCount(int groupSize, int cols)
{
    const int g = groupWidth(groupSize, cols);
    return g <= 0 ? 0 : (cols + g - 1) / g;
}
Status validateGridSpec(const GridSpec& spec, int cols);

// Round half to even, as torch.round. Assumes the default floating-point rounding mode.
inline double roundHalfEvenUniform(double x) { return std::nearbyint(x); }

// GPTQ's column loop has a vectorised twin (gptq.cpp, quantizeColumnUniform): change both.
inline int quantizeCodeUniform(double w, const GroupParams& p, int levels)
{
    if (p.offset != 0.0) w += p.offset;
    const double zi = std::nearbyint(p.zero);
    const double t = zi == p.zero ? roundHalfEvenUniform(w / p.scale) - zi : roundHalfEvenUniform(w / p.scale - p.zero);
    const double c = std::fmin(std::fmax(t, 0.0), double(levels - 1));
    return int(c);
}
// With an integral zero and an offset (the container grids), scale * (zero + code) and the
// difference are exact in double, so float(...) is the single rounding a ggml decoder performs.
inline double dequantizeCodeUniform(int code, const GroupParams& p)
{
    const double v = p.scale * (p.zero + double(code));
    return p.offset != 0.0 ? v - p.offset : v;
}
inline double fakeQuantUniform(double w, const GroupParams& p, int levels)
{
    return dequantizeCodeUniform(quantizeCodeUniform(w, p, levels), p);
}

// Min-Max exactly as the reference GPTQ quant.py (find_params): the range is widened to include 0;
// sym uses max(|min|, max) and Z = L/2 (a row with min >= 0 keeps xmin = 0); an all-zero group
// gets [-1, 1]; Z = round(-xmin/s). Returns z = -Z (integral). clip < 1 multiplies the range
// (GridSpec::clip) after it is widened to 0.
GroupParams fitGroupMinMaxGptq(const double* w, int n, int bits, bool sym, double clip = 1.0);
// Plain Min-Max of METHODS.md §0 / the NeUQI guard: s = (max-min)/(L-1) (1 when below 1e-9),
// z = round(min/s). Asymmetric only.
GroupParams fitGroupMinMaxPlain(const double* w, int n, int bits);

// The GPTQ-checkpoint storage target (FORMATS.md §5): an f16 scale and an integer zero-point
// Z = -zero in [1, 2^bits - 1] (v1 stores Z - 1). p's scale is rounded to f16 (the smallest
// positive normal f16 when it would round to 0) and the better of the integers around its zero
// under groupLossUniform is kept, so what the solver sees is what the checkpoint decodes to.
GroupParams storableGptqParams(GroupParams p, const double* w, const double* h, int n, int bits);

// Weighted squared error sum_j a_j (w_j - Q(w_j))^2 with a_j = h_j / sum h (uniform when h is null
// or sums to 0): the diagonal-Hessian proxy of NeUQI, in weight units squared.
double groupLossUniform(const double* w, const double* h, int n, const GroupParams& p, int levels);

// A quantised weight matrix: codes, parameters and the dequantised ("fake-quant") values.
struct QuantizedRows {
    MatrixU8R codes;             // [rows x cols], in [0, L-1]
    MatrixXdR scales;            // [rows x groups]
    MatrixXdR zeros;             // [rows x groups], offset form (Z = -zero)
    MatrixXdR offsets;           // [rows x groups] or empty (all 0): GroupParams::offset
    std::vector<int> groupIndex; // per input column: which group column of scales/zeros (g_idx)
    // Solved inside a storage container (container_grid.h): its name ("Q4_K"), "" for a plain
    // grid; for K-quants the f16 super-block scale and min per row and super-block, as
    // [rows x 2*superBlocks] (d, dmin pairs; the sub-block scales are d * integer codes).
    std::string container;
    MatrixXdR superScales;
    MatrixXfR dequantized; // [rows x cols], scales(r, g) * (zeros(r, g) + code)
    int bits = 0;
    double proxyLoss = 0.0; // solver-specific (GPTQ: 1/2 sum (w-q)^2 / U_ii^2); 0 when unused
    int dampingRetries = 0; // GPTQ: extra damping rounds needed for a positive-definite H
    // tr((W - Q) H (W - Q)^T) on the undamped H when the solver knows it (GPTQ: from its errors),
    // else NaN (error_metrics.h computes it).
    double errorTrace = std::numeric_limits<double>::quiet_NaN();
    // CMPQ (cmpq.h): per-channel bits, codebooks and outliers; codes index the channel's codebook
    // and scales/zeros are empty. Null for the uniform grids.
    std::shared_ptr<const CmpqCodes> cmpq;
};

inline GroupParams groupParams(const QuantizedRows& q, Eigen::Index row, int group)
{
    return GroupParams{q.scales(row, group), q.zeros(row, group), q.offsets.size() ? q.offsets(row, group) : 0.0};
}

// Codes and dequantised values for given parameters. groupIndex has one entry per column;
// scales/zeros (and offsets, when not empty) are [rows x groups].
Result<QuantizedRows> quantizeRowsUniform(Eigen::Ref<const MatrixXfR> w, int bits, const MatrixXdR& scales,
                                          const MatrixXdR& zeros, const std::vector<int>& groupIndex,
                                          const MatrixXdR& offsets = {});
// Dequantise codes again (export round trip); CMPQ tensors through dequantizeRowsCmpq.
MatrixXfR dequantizeRowsUniform(const QuantizedRows& q);
// The same for rows [r0, r0 + n) only, into dst (n × cols, row-major): a compact model decodes
// its weights a tile at a time with it (quant/stored_grid.h). Bit-identical to the rows of
// dequantizeRowsUniform.
// `codes` are the n × cols codes of those rows (row-major), e.g. q.codes.row(r0).data() or
// unpacked from a denser store; q.codes itself is not read (cols = q.groupIndex.size()).
void dequantizeRowsInto(const QuantizedRows& q, Eigen::Index r0, Eigen::Index n, const std::uint8_t* codes, float* dst);
// Contiguous groups of `groupSize` columns: column j -> j / g.
std::vector<int> groupIndexContiguous(int groupSize, int cols);

} // namespace qb::quant
