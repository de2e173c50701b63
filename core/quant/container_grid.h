#pragma once
// Storage-container grids: quantization that solves *inside* a GGUF block type, so that what a
// solver's error feedback sees is exactly what the file decodes to (ARCHITECTURE.md rule 6,
// FORMATS.md §4.5).
//
// What: a table of the containers (ggml's legacy 32-element types Q8_0, Q5_1, Q5_0, Q4_1, Q4_0
// and the 256-element K-quants Q6_K, Q5_K, Q4_K, Q3_K, Q2_K) described by their grid, not their
// bytes: block and sub-block sizes, code range, whether a block has a min, and how its scales are
// stored (an f16 per block, or small integer codes per sub-block under an f16 super-scale). A
// fitter chooses every (sub-)block's parameters for a weight matrix under those constraints and
// returns them as a QuantizedRows without codes: scale a (the exact float the decoder computes,
// d or d*sc), integral zero (the code offset: Q4_0 -8, Q3_K -4, ...), offset b (the min: dmin*m
// for K-quants, -m for Q4_1/Q5_1), so that grid point = fl(a * (level + zero) - b) bit for bit
// as ggml's dequantize_row_*; K-quants also keep (d, dmin) per super-block in superScales. RTN
// then rounds every weight to its (sub-)block grid; GPTQ walks the columns with these static
// parameters (GptqOptions::fixedGrid). export/ggml_quantize packs the result into blocks.
//
// Fitting (per row, block by block): GridInit::MinMax takes each sub-block's Min-Max range (the
// K-quant min clamped to <= 0, as ggml), then rounds the sub-block scales and mins to the
// container's codes under f16 super-scales taken from their maxima. GridInit::Neuqi weights every
// element with the damped Hessian diagonal (uniform without one), starts each sub-block from
// NeUQI's (scale, zero) and then searches the *stored* parameters directly: the f16 scale (and
// min) of a legacy block over a coarse-to-fine grid; for K-quants a few super-scales around the
// Min-Max one and, per sub-block, the neighbouring integer scale/min codes - each candidate scored
// by the exact weighted squared error of nearest rounding; Min-Max's parameters are always among
// the candidates, so NeUQI is never worse than Min-Max on that proxy.
// Threading: the fit runs rows through the optional ParallelFor (one scratch per worker);
// results do not depend on the schedule. Cancel is polled between row chunks.
// Units: weights and scales in the weight's units; codes are levels 0..2^bits-1.

#include "base/result.h"
#include "base/run_context.h"
#include "quant/gptq.h"
#include "quant/uniform_grid.h"

#include <Eigen/Core>

#include <string>
#include <string_view>
#include <vector>

namespace qb::quant {

struct ContainerSpec {
    const char* name; // the ggml type name: "Q4_K"
    int blockSize;    // elements per block (legacy: 32) or super-block (K-quants: 256)
    int blockBytes;   // bytes per block (ggml's type size)
    int subBlock;     // elements sharing one scale (and min): the group size of the grid
    int bits;         // code bits: levels 0..2^bits-1
    int codeOffset;   // the integer the decoder multiplies is level + codeOffset (grid zero)
    bool hasMin;      // grid points a*level - b with a stored min b (K: b >= 0)
    int scaleBits;    // 0: an f16 scale per block; else sub-block scale codes of this width
    bool scaleSigned; // sub-block scale codes are signed (Q3_K: -32..31, Q6_K: -128..127)
    int minBits;      // K-quants with a min: width of the unsigned sub-block min codes
    bool isKQuant() const { return scaleBits > 0; }
    int levels() const { return 1 << bits; }
    double bitsPerWeight() const { return 8.0 * double(blockBytes) / double(blockSize); }
};

// Every container, smallest bits per weight first.
const std::vector<ContainerSpec>& containerSpecs();
// By ggml type name, any case ("q4_k" / "Q4_K"); nullptr when no such container.
const ContainerSpec* findContainerSpec(std::string_view name);
// What llama.cpp (llama-quant.cpp) stores instead when a row is not a multiple of a K-quant's 256:
// Q2_K/Q3_K -> Q4_0 (IQ4_NL in current llama.cpp, which is not written here), Q4_K -> Q5_0,
// Q5_K -> Q5_1, Q6_K -> Q8_0; nullptr for the legacy types (no fallback but F16).
const ContainerSpec* containerRowFallback(const ContainerSpec& spec);

// Chooses the parameters of every (sub-)block of w ([rows x cols], cols a multiple of
// spec.blockSize) under the container's constraints. hDiag: cols non-negative weights (the damped
// Hessian diagonal) or null. The result has bits, scales, zeros, offsets (hasMin), groupIndex
// (contiguous sub-blocks), container and superScales (K-quants) set; codes and dequantized empty.
// Non-finite weights are an error naming the row.
Result<QuantizedRows> fitContainerGrid(const ContainerSpec& spec, Eigen::Ref<const MatrixXfR> w,
                                       const Eigen::VectorXd* hDiag, GridInit init, const NeuqiOptions& neuqi = {},
                                       RunContext* ctx = nullptr, const ParallelFor* par = nullptr);

// fitContainerGrid, then nearest rounding of every weight (RTN inside the container).
Result<QuantizedRows> quantizeRowsContainer(const ContainerSpec& spec, Eigen::Ref<const MatrixXfR> w,
                                            const Eigen::VectorXd* hDiag, GridInit init, const NeuqiOptions& neuqi = {},
                                            RunContext* ctx = nullptr, const ParallelFor* par = nullptr);

// The GptqOptions that solve inside the container with `fit` as the static grid.
GptqOptions containerGptqOptions(const ContainerSpec& spec, const GptqOptions& base, const QuantizedRows& fit);

} // namespace qb::quant
