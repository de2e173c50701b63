#pragma once
// The weight-and-activation part of a quantization plan: activation and K/V quantizers per linear
// input group, and the function-preserving transforms that make them work (SmoothQuant smoothing,
// Hadamard rotation). Carried by QuantPlan (quant_plan.h) as three optional top-level objects:
//   "activations": {"bits": 4, "sym": false, "clip": 0.9, "granularity": "token" | "tensor",
//                   "static": false,
//                   "groups": {"down": {"bits": 8}, "o": {...}, "qkv": {...}, "gate_up": {...}}}
//   "kv":          {"bits": 4, "sym": false, "clip": 1.0, "q_bits": 0}
//   "transform":   {"smooth": 0.6, "rotate": "none" | "residual" | "hadamard" | "ruquant", "seed": 0,
//                   "ruquant": {"block": 128, "steps": 16, "givens_rounds": 3, "perm_rounds": 1,
//                               "repo_givens": false, "finetune_epochs": 0, "finetune_lr": 0.01}}
// activations: bits 4..8 (0 or absent: off) for every linear input group; "groups" overrides
// any field per group (qkv, o, gate_up, down); clip in (0, 1] multiplies the dynamic range
// (RUQuant's lac); "static": one per-tensor range per group and layer calibrated once, instead of
// each token's own range. kv: bits of the keys and values per (head, token) vector (0: off), and
// optionally of the queries (q_bits, as RUQuant); attention probabilities are never quantized.
// transform: "smooth" is SmoothQuant's exponent α in [0, 1] (absent: no smoothing); "rotate":
// "residual" rotates the residual stream with a randomized Hadamard matrix and folds it into every
// weight (a plain weights file holds it), "hadamard" adds QuaRot's online Hadamards on the o_proj
// and down_proj inputs and per head on q/k (these stay online: a GGUF cannot hold them);
// "ruquant" builds RUQuant's data-driven transforms per layer and input group (pipeline/ruquant.h:
// block rotations from Householder and Givens steps, zig-zag permutation, global Householder,
// optionally fine-tuned; online, plus the per-head q/k Hadamard), tuned by the "ruquant" object
// (block size B, Householder steps K, Givens rounds λ, permutation rounds T, the public code's
// mirrored Givens, fine-tuning epochs and learning rate of ω); "seed" draws the Hadamard signs and
// RUQuant's random targets. Absent objects leave everything off: a plan without them is the
// weight-only plan it always was, and its JSON is unchanged.
// Threading: plain values and pure functions.

#include "base/result.h"
#include "io/json_value.h"
#include "model/runtime.h"

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace qb::pipeline {

enum class PlanRotation { None, Residual, Hadamard, Ruquant };
const char* planRotationName(PlanRotation r); // "none", "residual", "hadamard", "ruquant"

// RUQuant's construction settings (METHODS.md §4(b) defaults).
struct RuquantPlanOptions {
    int blockSize = 128;
    int householderSteps = 16;
    int givensRounds = 3;
    int permutationRounds = 1;
    bool repoGivens = false;
    int finetuneEpochs = 0; // 0: ω is not fine-tuned
    double finetuneLr = 1e-2;
    bool operator==(const RuquantPlanOptions&) const = default;
};

struct ActivationGroupSettings {
    std::optional<int> bits; // 0: off
    std::optional<bool> sym;
    std::optional<double> clip;
    std::optional<model::ActGranularity> granularity;
    std::optional<bool> staticRange;
    bool operator==(const ActivationGroupSettings&) const = default;
};

struct ActivationPlan {
    bool hasActivations = false; // the "activations" object is present
    ActivationGroupSettings defaults;
    std::array<ActivationGroupSettings, 4> groups; // by model::LinearKind
    bool hasKv = false;
    int kvBits = 0, qBits = 0;
    bool kvSym = false;
    double kvClip = 1.0;
    bool hasTransform = false;
    std::optional<double> smoothAlpha;
    PlanRotation rotate = PlanRotation::None;
    std::uint64_t seed = 0;
    RuquantPlanOptions ruquant; // used when rotate is Ruquant
    bool operator==(const ActivationPlan&) const = default;

    // The quantizer of group k (static ranges are filled in later, by calibration).
    model::ActQuantSpec spec(model::LinearKind k) const;
    bool staticRange(model::LinearKind k) const;
    model::ActQuantSpec kvSpec() const { return {kvBits, kvSym, float(kvClip)}; }
    model::ActQuantSpec qSpec() const { return {qBits, kvSym, float(kvClip)}; }
    bool quantizesActivations() const; // some group or K/V has bits
    bool transforms() const { return smoothAlpha.has_value() || rotate != PlanRotation::None; }
    bool empty() const { return !quantizesActivations() && !transforms(); }
    // The largest activation bits over the groups, 0 when none ("A4" in a W4A4 label).
    int maxActivationBits() const;
    // "A4 KV4 +smooth 0.6 +hadamard", "" when empty.
    std::string describe() const;
};

// Parses one of the three top-level keys ("activations", "kv", "transform") into plan; false when
// `key` is not one of them.
Result<bool> parseActivationPlanKey(const std::string& key, const io::JsonValue& value, const std::string& where,
                                    ActivationPlan& plan);
// Writes the objects that are present into the plan's root object.
void writeActivationPlan(io::JsonValue& root, const ActivationPlan& plan);

} // namespace qb::pipeline
