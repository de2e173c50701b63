#include "quant/method_traits.h"

#include <array>

namespace qb::quant {

namespace {

constexpr MethodParam kBits{"bits", "Bits", ParamKind::Int, 4, kMinBits, kMaxBits, "bits per weight code"};
constexpr MethodParam kGroup{"group_size",
                             "Group size",
                             ParamKind::Int,
                             128,
                             -1,
                             1 << 20,
                             "input columns per (scale, zero) group; -1 = per output channel"};
constexpr MethodParam kSym{"sym", "Symmetric", ParamKind::Bool, 0, 0, 1, "symmetric grid with a mid-grid zero"};
constexpr MethodParam kActOrder{
    "act_order", "Act-order", ParamKind::Bool, 0, 0, 1, "process columns by descending diag(H)"};
constexpr MethodParam kActOrderOn{
    "act_order", "Act-order", ParamKind::Bool, 1, 0, 1, "process columns by descending diag(H)"};
constexpr MethodParam kStatic{"static_groups",
                              "Static groups",
                              ParamKind::Bool,
                              0,
                              0,
                              1,
                              "fit all group parameters on the original weights before error feedback"};
constexpr MethodParam kStaticOn{"static_groups",
                                "Static groups",
                                ParamKind::Bool,
                                1,
                                0,
                                1,
                                "fit all group parameters on the original weights before error feedback"};
constexpr MethodParam kBlock{"block_size",
                             "Block size",
                             ParamKind::Int,
                             kGptqDefaultBlockSize,
                             1,
                             1 << 16,
                             "lazy-batch column block (does not change the result)"};
constexpr MethodParam kDamp{"damping",
                            "Damping",
                            ParamKind::Double,
                            kGptqDefaultDamping,
                            0.0,
                            1.0,
                            "added to diag(H) as a fraction of its mean"};

constexpr MethodParam kAvgBits{"bits",
                               "Average bits",
                               ParamKind::Double,
                               3.0,
                               1.0,
                               kMaxBits,
                               "average bits per weight, everything counted (codes, codebooks, outliers); fractional"};
constexpr MethodParam kActOutliers{"act_outliers",
                                   "Activation outliers",
                                   ParamKind::Double,
                                   kCmpqDefaultActOutliers,
                                   0.0,
                                   0.49,
                                   "fraction of input channels (highest activation score) kept in F16"};
constexpr MethodParam kQuantOutliers{"quant_outliers",
                                     "Quantization outliers",
                                     ParamKind::Double,
                                     kCmpqDefaultQuantOutliers,
                                     0.0,
                                     0.49,
                                     "fraction of weights with the largest trial error kept in a sparse F16 list"};
constexpr MethodParam kFeedback{"error_feedback",
                                "Error feedback",
                                ParamKind::Bool,
                                1,
                                0,
                                1,
                                "GPTQ-style error feedback through the Hessian across columns"};
constexpr MethodParam kKmeans{"kmeans",
                              "K-means codebooks",
                              ParamKind::Bool,
                              1,
                              0,
                              1,
                              "non-uniform per-channel codebooks by weighted k-means (off: uniform levels)"};

constexpr std::array kRtnParams{kBits, kGroup, kSym};
constexpr std::array kCmpqParams{kAvgBits, kActOutliers, kQuantOutliers, kFeedback, kKmeans, kBlock, kDamp};
constexpr std::array kGptqParams{kBits, kGroup, kSym, kActOrder, kStatic, kBlock, kDamp};
constexpr std::array kNeuqiParams{kBits, kGroup, kActOrderOn, kStaticOn, kBlock, kDamp};

const std::array<MethodTraits, 4> kTraits{{
    {Method::Rtn, "rtn", "RTN", "Round to nearest on a Min-Max grid per group; no calibration data.", false, false,
     true, GridInit::MinMax, GroupMode::Static, false, false, kRtnParams},
    {Method::Gptq, "gptq", "GPTQ",
     "GPTQ (Frantar et al.): column-wise error feedback through the inverse Hessian, Min-Max grid as the "
     "reference implementation.",
     true, false, true, GridInit::MinMax, GroupMode::Dynamic, false, false, kGptqParams},
    {Method::Neuqi, "neuqi", "NeUQI",
     "GPTQ with NeUQI initialisation (Lin et al.): per-group scale search with a real zero-point under the "
     "diagonal Hessian proxy, static groups, act-order.",
     true, true, false, GridInit::Neuqi, GroupMode::Static, false, false, kNeuqiParams},
    {Method::Cmpq, "cmpq", "CMPQ (reconstruction)",
     "Channel-wise mixed precision (Chen et al., reconstructed: no public code): bits per input channel from "
     "calibration activation scores to any fractional average, everything counted; non-uniform per-channel "
     "codebooks by weighted k-means; activation- and quantization-based outliers in F16; optional GPTQ-style "
     "error feedback.",
     true, false, false, GridInit::MinMax, GroupMode::Static, true, true, kCmpqParams},
}};

} // namespace

std::span<const MethodTraits> allMethodTraits() { return kTraits; }

const MethodTraits& methodTraits(Method method) { return kTraits[std::size_t(method)]; }

std::optional<Method> methodFromId(std::string_view id)
{
    for (const MethodTraits& t : kTraits)
        if (t.id == id) return t.method;
    return std::nullopt;
}

std::optional<double> methodParamDefault(Method method, std::string_view key)
{
    for (const MethodParam& p : methodTraits(method).params)
        if (p.key == key) return p.defaultValue;
    return std::nullopt;
}

GptqOptions defaultGptqOptions(Method method)
{
    const MethodTraits& t = methodTraits(method);
    GptqOptions o;
    o.init = t.init;
    o.grid.bits = int(methodParamDefault(method, "bits").value_or(4));
    o.grid.groupSize = int(methodParamDefault(method, "group_size").value_or(-1));
    o.grid.sym = methodParamDefault(method, "sym").value_or(0) != 0;
    o.actOrder = methodParamDefault(method, "act_order").value_or(0) != 0;
    o.groups = methodParamDefault(method, "static_groups").value_or(0) != 0 ? GroupMode::Static : GroupMode::Dynamic;
    o.blockSize = int(methodParamDefault(method, "block_size").value_or(kGptqDefaultBlockSize));
    o.damping = methodParamDefault(method, "damping").value_or(kGptqDefaultDamping);
    return o;
}

CmpqOptions defaultCmpqOptions()
{
    CmpqOptions o;
    o.bits = methodParamDefault(Method::Cmpq, "bits").value_or(3.0);
    o.actOutliers = methodParamDefault(Method::Cmpq, "act_outliers").value_or(kCmpqDefaultActOutliers);
    o.quantOutliers = methodParamDefault(Method::Cmpq, "quant_outliers").value_or(kCmpqDefaultQuantOutliers);
    o.errorFeedback = methodParamDefault(Method::Cmpq, "error_feedback").value_or(1) != 0;
    o.uniformLevels = methodParamDefault(Method::Cmpq, "kmeans").value_or(1) == 0;
    o.blockSize = int(methodParamDefault(Method::Cmpq, "block_size").value_or(kGptqDefaultBlockSize));
    o.damping = methodParamDefault(Method::Cmpq, "damping").value_or(kGptqDefaultDamping);
    return o;
}

double bitsPerWeightUniform(int bits, int groupSize, int cols, bool sym, int scaleBits, int zeroBits)
{
    if (cols <= 0) return double(bits);
    const int groups = groupCount(groupSize, cols);
    const double perGroup = double(scaleBits) + (sym ? 0.0 : double(zeroBits));
    return double(bits) + double(groups) * perGroup / double(cols);
}

} // namespace qb::quant
