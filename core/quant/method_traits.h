#pragma once
// The traits table of the weight quantisation methods: one row per Method, so the CLI and GUI
// build their menus and defaults from data (ggml type_traits style).
//
// What: name, identifier, description, which solver and grid initialiser, and the parameters
// (key, label, kind, default, range) with their defaults; plus the bits-per-weight accounting
// helper. Threading: immutable static data, safe from any thread.
// Units: bits; group size in input columns (-1 = per output channel); damping relative to
// mean(diag H); block size in columns.

#include "quant/cmpq.h"
#include "quant/gptq.h"

#include <optional>
#include <span>
#include <string_view>

namespace qb::quant {

enum class Method { Rtn, Gptq, Neuqi, Cmpq };

enum class ParamKind { Int, Bool, Double };

struct MethodParam {
    std::string_view key;   // CLI spelling, e.g. "group_size"
    std::string_view label; // GUI label
    ParamKind kind;
    double defaultValue;
    double minValue;
    double maxValue;
    std::string_view help;
};

struct MethodTraits {
    Method method;
    std::string_view id;   // "rtn", "gptq", "neuqi", "cmpq"
    std::string_view name; // "RTN", "GPTQ", "NeUQI", "CMPQ (reconstruction)"
    std::string_view description;
    bool needsHessian;  // full H (GPTQ error feedback)
    bool needsDiagonal; // diag H only (NeUQI init under RTN)
    bool supportsSym;
    GridInit init;
    GroupMode defaultGroupMode;
    // Average bits may be fractional (2.5): only methods whose allocation reaches any average
    // (CMPQ); the others take integer bits and refuse a fraction.
    bool fractionalBits;
    // Per-channel codebooks instead of a uniform grid (no group size, no storage container).
    bool codebooks;
    std::span<const MethodParam> params;
};

std::span<const MethodTraits> allMethodTraits();
const MethodTraits& methodTraits(Method method);
std::optional<Method> methodFromId(std::string_view id);
// The default value of a parameter; nullopt when the method has no such key.
std::optional<double> methodParamDefault(Method method, std::string_view key);
// GptqOptions carrying the method's defaults (RTN ignores the solver fields).
GptqOptions defaultGptqOptions(Method method);
// CmpqOptions carrying the CMPQ parameters' defaults.
CmpqOptions defaultCmpqOptions();

// Storage convention for bits per weight: one scale and (asymmetric only) one zero per group, each
// of scaleBits / zeroBits bits; by default F16 scale and F16 zero (a real NeUQI zero needs a float;
// GPTQ-format integer zeros packed in `bits` bits would pass zeroBits = bits). Symmetric grids store
// no zero. Groups that do not divide the width count the shorter last group as a full group:
//   bpw = bits + groups * (scaleBits + zeroBits') / cols,  groups = ceil(cols / g).
// groupSize <= 0 means per output channel (groups = 1 per row).
inline constexpr int kDefaultScaleBits = 16;
inline constexpr int kDefaultZeroBits = 16;
double bitsPerWeightUniform(int bits, int groupSize, int cols, bool sym, int scaleBits = kDefaultScaleBits,
                            int zeroBits = kDefaultZeroBits);

} // namespace qb::quant
