#pragma once
// QuantPlan: which method, bits and group size every decoder linear layer gets, as a JSON plan
// with a default and ordered glob rules; validation, resolution per tensor, bit accounting.
//
// Plan schema (version 1; the GUI loads and saves the same JSON):
//   {
//     "version": 1,                                   optional, must be 1
//     "description": "free text",                     optional
//     "default": {"method": "neuqi", "bits": 4, "group_size": 128, "sym": false, "act_order": true},
//     "rules": [                                      optional, applied in order
//       {"match": "model.layers.*.mlp.down_proj", "bits": 8},
//       {"match": "model.layers.0.*", "skip": true}
//     ]
//   }
// Setting keys (in "default" and in every rule): method ("rtn" | "gptq" | "neuqi" | "cmpq", the ids
// of quant::allMethodTraits()), bits (integer 2..8; a fraction in [1, 8], e.g. 2.5, only for
// methods with fractional bits: cmpq; the others refuse it), group_size (positive integer, or -1 for one
// group per output channel; a size that does not divide the input width leaves a shorter last
// group; one larger than the width means per channel), sym, act_order, static_groups (booleans),
// block_size (integer >= 1), damping (number in [0, 1]), clip (number in (0, 1]: the Min-Max range
// of rtn/gptq weights is multiplied by it, RUQuant's "swc"), skip (boolean: keep the tensor in F32),
// target (the storage container the tensor is solved in, see below).
// Storage targets ("target", ARCHITECTURE.md rule 6): a GGUF block type ("Q8_0", "Q5_1", "Q5_0",
// "Q4_1", "Q4_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K"; "gguf:" prefix and any case accepted):
// RTN/GPTQ/NeUQI then solve inside that type's grid (quant/container_grid.h) and the export is
// exact by construction; the target implies bits, group and symmetry, so a "bits" set in the same
// object or a later one must agree (an error names the tensor otherwise). "F16", "BF16", "F32":
// the tensor is stored unquantized in that type (as "skip"). "none" (the default): a free grid
// (bits/group/sym as given) for evaluation, .qbproj and fake-quantized safetensors. "gptq": the
// free grid with every group storable in a GPTQ checkpoint (f16 scales, integer zero-points in
// [1, 2^bits - 1], quant::storableGptqParams), so a GPTQ export is exact and the run evaluates its
// embedding and head in F16 as the checkpoint stores them; one plan targets GGUF or gptq. A row width
// that is not a multiple of a K-quant's 256 takes llama.cpp's fallback type (a warning names it);
// one that no block type holds is an error before anything runs. Top-level "embed_type" and
// "head_type" (GGUF type names) choose the token embedding and output head types of a GGUF file;
// when a plan has GGUF targets they default to llama.cpp's Q4_K_M choices: the embedding in the
// plan's most common linear type, the head in Q6_K (Q8_0 when that is the most common).
// CMPQ keys (method cmpq only; quant/cmpq.h): bits is the average per weight with everything
// counted (codes, F16 codebooks, outliers and their indices); levels (ascending array of bit
// levels, default [2, 3, 4]), score ("mean_abs" | "l2" | "max_abs" | "mean_sq"), kmeans (false:
// uniform levels), kmeans_weights ("uniform" | "energy"), act_outliers and quant_outliers
// (fractions in [0, 0.5)), error_feedback, static_codebooks (with feedback: fit the codebooks once
// on the original weights instead of per column block), block_size, damping, bits_scope ("plan", the default:
// the CMPQ tensors asking for the same average share one budget, each tensor getting
// max(its minimum, x) with x solved so that the weighted average is the asked one; "tensor":
// every tensor meets the average itself). A target that cannot be met (even the lowest level with
// the codebooks and outliers costs more) is an error that names the minimum. cmpq ignores
// group_size and has no storage container (GGUF/GPTQ cannot hold per-channel codebooks).
// A rule also has "match": a glob over tensor names ('*' any run of characters including '.',
// '?' one character, '[a-z]' / '[!0-9]' classes), tried against the name both with and without
// the trailing ".weight". Resolution per tensor: start from "default", then every matching rule
// in order overwrites the fields it sets (later rules win; "skip": false un-skips); a field set
// nowhere takes the resolved method's default from the traits table (so act_order defaults to on
// for neuqi and off for gptq). Unknown keys, unknown methods (the message lists the valid ones),
// bits out of range, non-positive group sizes, wrong JSON types, and "sym": true with a method
// that has no symmetric grid (neuqi) are errors; a rule matching no tensor is a warning.
// Top-level "activations", "kv" and "transform" add activation/KV quantization and
// function-preserving transforms (schema in activation_plan.h); the weight rules are unchanged.
// Targets: the seven linear weights of every decoder layer. Embeddings, lm_head and norms are
// never quantized (as GPTQ), and rules cannot select them.
// Accounting: a quantized tensor costs bitsPerWeightUniform() bits per weight (codes + an F16
// scale per group + an F16 zero per group when asymmetric); a skipped tensor, and every tensor
// that is not a target, costs 16 bits (the F16/BF16 it would be stored in). bitsPerWeight is the
// average over the decoder linear weights; sizeBytes covers the whole model.
// Threading: plain values and pure functions. Memory: small (one spec per tensor).

#include "base/model_config.h"
#include "base/result.h"
#include "io/json_value.h"
#include "pipeline/activation_plan.h"
#include "model/model.h"
#include "quant/method_traits.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qb::pipeline {

inline constexpr int kPlanVersion = 1;
inline constexpr int kUnquantizedBits = 16;

// Fields a default or a rule may set; unset fields leave the value from before.
struct PlanSettings {
    std::optional<quant::Method> method;
    std::optional<int> bits;
    std::optional<int> groupSize; // -1: per output channel
    std::optional<bool> sym;
    std::optional<bool> actOrder;
    std::optional<bool> staticGroups;
    std::optional<int> blockSize;
    std::optional<double> damping;
    std::optional<double> clip; // Min-Max range ratio of rtn/gptq weights (quant::GridSpec::clip)
    std::optional<bool> skip;
    std::optional<std::string> target; // canonical: "Q4_K", "F16", ... or "none"
    // A fractional "bits" (2.5), for methods with fractional bits (cmpq); setting bits or avgBits
    // clears the other.
    std::optional<double> avgBits;
    // CMPQ only (an error beside another method in the same object, ignored when inherited into a
    // rule that switches method): see the schema above.
    std::optional<std::vector<int>> levels;
    std::optional<quant::CmpqScore> score;
    std::optional<bool> kmeans;
    std::optional<bool> energyWeights;
    std::optional<double> actOutliers, quantOutliers;
    std::optional<bool> errorFeedback;
    std::optional<bool> staticCodebooks;
    std::optional<bool> tensorScope; // "bits_scope": "tensor" (true) or "plan" (false, default)
    bool operator==(const PlanSettings&) const = default;
};

struct PlanRule {
    std::string match;
    PlanSettings settings;
    bool operator==(const PlanRule&) const = default;
};

struct QuantPlan {
    std::string description;
    PlanSettings defaults; // method must be set (fromJson/validate check it)
    std::vector<PlanRule> rules;
    std::optional<std::string> embedType, headType; // GGUF type names (canonical upper case)
    ActivationPlan activation; // "activations", "kv", "transform" (activation_plan.h); empty: weights only
    bool operator==(const QuantPlan&) const = default;
};

// The settings one tensor ends up with.
struct TensorPlan {
    std::string name; // model.layers.N.<module>.weight
    int layer = 0;
    model::Linear linear = model::Linear::Q;
    std::int64_t rows = 0, cols = 0;
    bool skip = false;
    quant::Method method = quant::Method::Rtn;
    quant::GptqOptions options; // grid (bits, group, sym), act-order, groups, block, damping, init
    quant::CmpqOptions cmpq;    // method cmpq: its options, bits = this tensor's target average
    double bitsPerWeight = kUnquantizedBits;
    // The resolved storage target: a container name ("Q4_K"; solve inside it), "F16"/"BF16"/"F32"
    // (stored unquantized; skip is set), "gptq" (a free grid every group of which a GPTQ checkpoint
    // stores as it is), or "" (free grid). targetNote explains a fallback.
    std::string target;
    std::string targetNote;
    bool inContainer() const; // quantized inside a GGUF block type
};

struct PlanWarning {
    std::string type;   // "unmatched-rule"
    std::string detail; // e.g. "rule 2 (\"lm_head\") matches no tensor"
};

struct ResolvedPlan {
    std::vector<TensorPlan> tensors; // layer-major, Linear order within a layer
    std::vector<PlanWarning> warnings;
    double bitsPerWeight = 0;      // average over decoder linear weights
    std::int64_t linearParams = 0; // weights in decoder linears
    std::int64_t quantizedParams = 0;
    std::uint64_t linearBytes = 0;                       // decoder linears at their bits
    std::uint64_t sizeBytes = 0;                         // whole model: linears + everything else at 16 bits
                                                         // (GGUF targets: embedding, head at their types,
                                                         // norms and biases F32; tensor data only)
    bool ggufTargets = false;                            // some tensor has a GGUF target
    bool gptqTargets = false;                            // some tensor has the gptq target
    std::string embedType, headType;                     // resolved with GGUF targets; "F16" with gptq targets
    ActivationPlan activation;                           // the plan's, as it is
    const TensorPlan* find(std::string_view name) const; // with or without ".weight"
};

// "gguf:Q4_K" / "q4_k" / "F16" / "none" -> canonical target ("Q4_K", "F16", "none"); an error lists
// the valid names.
Result<std::string> parsePlanTarget(std::string_view text);
// Bits per weight of a GGUF type name (containers: block bytes; F16/BF16 16, F32 32); 0 if unknown.
double ggufTypeBitsPerWeight(std::string_view type);

// Glob match ('*', '?', '[...]') of a whole name.
bool globMatch(std::string_view pattern, std::string_view name);
// True when the rule pattern matches name or name without a trailing ".weight".
bool planPatternMatches(std::string_view pattern, std::string_view tensorName);

// Parses and validates (everything that does not need the model). nameForErrors prefixes errors.
Result<QuantPlan> quantPlanFromJson(const io::JsonValue& json, const std::string& nameForErrors = "plan");
Result<QuantPlan> quantPlanFromText(std::string_view text, const std::string& nameForErrors = "plan");
Result<QuantPlan> loadQuantPlan(const std::string& path);
// Only the fields that are set are written, so save -> load gives an equal plan.
io::JsonValue quantPlanToJson(const QuantPlan& plan);
Status saveQuantPlan(const QuantPlan& plan, const std::string& path);

// One line for lists and titles: "GPTQ 4b g128 sym +2 rules" ("skip" when the default skips).
std::string describeQuantPlan(const QuantPlan& plan);

// A one-rule-free plan: {"default": {...}} from explicit settings (the CLI's --method/--bits).
QuantPlan uniformQuantPlan(quant::Method method, int bits, std::optional<int> groupSize = std::nullopt,
                           std::optional<bool> sym = std::nullopt, std::optional<bool> actOrder = std::nullopt);
// The same with possibly fractional bits: an integer value sets bits, a fraction avgBits (refused
// at resolution by methods without fractional bits).
QuantPlan uniformQuantPlanBits(quant::Method method, double bits, std::optional<int> groupSize = std::nullopt,
                               std::optional<bool> sym = std::nullopt, std::optional<bool> actOrder = std::nullopt);

// RUQuant's setting (METHODS.md §4(b)) as a plan: RTN weights per output channel, asymmetric, range
// ratio 0.8 at <= 4 bits (swc; 1.0 above); activations per token at actBits with clip 0.9 at <= 4
// bits (lac; 1.0 above); Q, K and V at actBits per (head, token); smoothing α 0.6; RUQuant
// transforms (K 16, λ 3, T 1, B 128), ω fine-tuned for finetuneEpochs (0: off).
QuantPlan ruquantPresetPlan(int weightBits, int actBits, int finetuneEpochs = 0);

// Resolves the plan for every decoder linear of a model with this config, checks the combined
// settings, and does the bit accounting.
Result<ResolvedPlan> resolveQuantPlan(const QuantPlan& plan, const ModelConfig& config);

} // namespace qb::pipeline
