#pragma once
// GPTQ checkpoint export (FORMATS.md §5): a Hugging Face directory that transformers (optimum +
// GPTQModel), AutoGPTQ and vLLM load as a GPTQ model.
//
// Per quantized linear `<module>.weight` [N out, K in] the directory holds
//   <module>.qweight I32 [K·b/32, N]  codes packed along the input axis (LSB-first bit stream,
//                                     b = 2, 3, 4, 8; for b = 3 codes straddle words),
//   <module>.qzeros  I32 [R, N·b/32]  integer zero-points Z packed along the output axis, stored
//                                     as Z − 1 (checkpoint_format "gptq", v1),
//   <module>.scales  F16 [R, N],  <module>.g_idx I32 [K] (group row of each input column),
//   <module>.bias    when the linear has one,
// with R = ceil(K/G); W[n,k] = scales[g,n]·(q[k,n] − Z[g,n]), g = g_idx[k]. Our grids use the
// offset form ŵ = s·(z + q) (quant/uniform_grid.h), so Z = −z. Every module keeps its own layout
// (bits 2/3/4/8, group_size, desc_act, sym): the most common one is the config's, and every module
// that differs gets a per-module override in `dynamic` (GPTQModel's convention, io/gptq.h), keyed
// by its exact name ("+:^model\.layers\.0\.mlp\.down_proj$": {"bits": 8}); decoder linears left
// unquantized are excluded with "-:" keys. Token embeddings and lm_head are written as F16 (the
// ecosystem's choice; embeddingDtype), norms as F32, other tensors in their original dtype (or
// plainDtype). config.json gets `quantization_config` and quantize_config.json is written as
// GPTQModel/AutoGPTQ write it; tokenizer files are copied.
//
// What the format cannot hold is analysed before anything is written (analyzeGptqGrids):
// real-valued or out-of-range zero-points (v1 stores Z − 1, so Z must be an integer in
// [1, 2^b − 1]); scales that F16 rounds. Bit widths GPTQ cannot store (5, 6, 7) are promoted
// exactly to 8 (reported). Policy Refuse turns any value-changing issue into an error naming the
// tensor; Round rounds (clamps) zeros to a storable integer and re-derives the codes from the
// dequantized values; the report gives the max abs change of the dequantized weights. F16 scale
// rounding is always reported.
// Atomic: staged in a directory beside the target, verified (verifyGptqDirectory), then swapped in.
// Memory: one tensor at a time. Threading: calling thread; stages "check", "write", "verify".

#include "base/result.h"
#include "base/run_context.h"
#include "export/model_verify.h"
#include "export/safetensors_export.h"
#include "io/checkpoint.h"
#include "io/gptq.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qb::exporting {

enum class GptqGridPolicy { Refuse, Round };

struct GptqExportOptions {
    GridLookup gridFor; // HF weight name -> grid (nullptr: stays unquantized)
    GptqGridPolicy policy = GptqGridPolicy::Refuse;
    // Token embeddings and lm_head (nullopt: their original dtype); norms are always F32.
    std::optional<DType> embeddingDtype = DType::F16;
    std::optional<DType> plainDtype; // other unquantized tensors (nullopt: original dtype)
    double dampPercent = 0.01;       // informational, written to the config
    bool verify = true;
    std::uint64_t failAfterBytesForTesting = 0;
};

struct GptqIssue {
    std::string tensor;
    std::string kind; // "real-zero", "zero-range", "bits" (exact promotion), "scale-f16"
    std::string detail;
    double maxAbsChange = 0; // of the dequantized weights if rounded
};

struct GptqModuleLayout {
    std::string tensor; // HF weight name
    io::GptqLayout layout;
};

struct GptqAnalysis {
    // The config's layout: the most common module layout.
    int bits = 0;
    int groupSize = -1; // config group_size (-1: per channel)
    bool descAct = false;
    bool sym = true;
    std::vector<GptqModuleLayout> modules; // every quantized linear, in checkpoint order
    std::vector<std::string> quantized;    // HF weight names with a grid
    std::vector<std::string> unquantized;  // decoder linears without a grid (written plain)
    std::vector<GptqIssue> issues;
    double maxAbsChange = 0; // over everything the export changes (zeros, promotions, F16 scales)
    // Issues that change values other than F16 scale rounding (what Refuse refuses).
    bool needsRounding() const;
    const io::GptqLayout* layoutOf(const std::string& weightName) const; // nullptr: not quantized
    std::size_t overrides() const; // modules whose layout differs from the config's

    std::string summary() const;
};

// Analysis only (no file touched); fails when the grids cannot be expressed at all.
Result<GptqAnalysis> analyzeGptqGrids(const io::Checkpoint& checkpoint, const GridLookup& gridFor);

struct GptqExportReport {
    std::string path;
    GptqAnalysis analysis;
    std::uint64_t bytes = 0; // model.safetensors
    std::size_t tensorCount = 0;
    std::vector<std::string> copiedFiles;
    std::vector<std::string> warnings;
    VerifyReport verify;
};

Result<GptqExportReport> exportGptq(const io::Checkpoint& checkpoint, const std::string& outDir,
                                    const GptqExportOptions& options, RunContext* ctx = nullptr);

// Checks a GPTQ directory (config quantization_config, model.safetensors structure, every packed
// module's tensor set/dtypes/shapes, scales finite and positive, g_idx in range, unquantized
// tensors finite). format = "gptq".
Result<VerifyReport> verifyGptqDirectory(const std::string& dir, RunContext* ctx = nullptr);
// True when dir/config.json declares quantization_config.quant_method "gptq".
bool isGptqDirectory(const std::string& dir);

} // namespace qb::exporting
