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
// Setting keys (in "default" and in every rule): method ("rtn" | "gptq" | "neuqi", the ids of
// quant::allMethodTraits()), bits (integer 2..8), group_size (positive integer, or -1 for one
// group per output channel; a size that does not divide the input width leaves a shorter last
// group; one larger than the width means per channel), sym, act_order, static_groups (booleans),
// block_size (integer >= 1), damping (number in [0, 1]), skip (boolean: keep the tensor in F32).
// A rule also has "match": a glob over tensor names ('*' any run of characters including '.',
// '?' one character, '[a-z]' / '[!0-9]' classes), tried against the name both with and without
// the trailing ".weight". Resolution per tensor: start from "default", then every matching rule
// in order overwrites the fields it sets (later rules win; "skip": false un-skips); a field set
// nowhere takes the resolved method's default from the traits table (so act_order defaults to on
// for neuqi and off for gptq). Unknown keys, unknown methods (the message lists the valid ones),
// bits out of range, non-positive group sizes, wrong JSON types, and "sym": true with a method
// that has no symmetric grid (neuqi) are errors; a rule matching no tensor is a warning.
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
    std::optional<bool> skip;
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
    double bitsPerWeight = kUnquantizedBits;
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
    const TensorPlan* find(std::string_view name) const; // with or without ".weight"
};

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

// Resolves the plan for every decoder linear of a model with this config, checks the combined
// settings, and does the bit accounting.
Result<ResolvedPlan> resolveQuantPlan(const QuantPlan& plan, const ModelConfig& config);

} // namespace qb::pipeline
