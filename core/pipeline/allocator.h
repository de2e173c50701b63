#pragma once
// Mixed-precision allocation to a budget from a sensitivity atlas (issue 16, items 3, 4, 6).
//
// What: every decoder linear gets one candidate of the atlas (pipeline/sensitivity.h) so that the
// summed predicted damage (SensitivityAtlas::damage(): the proxy loss, in nats of KL where measured) is as
// small as possible under a size budget: average bits per weight over the decoder linears, or the
// whole file in bytes (the atlas's otherBytes — embedding, head, norms at the candidates' storage —
// added to the linears). A multiple-choice knapsack solved by its Lagrangian path: each unit (a
// tensor, or the q/k/v of a layer when they are tied) keeps only its lower convex hull of (bytes,
// damage); starting from every unit's cheapest point, hull steps are taken in order of damage saved
// per byte while they fit, then every unit is offered any single change that still fits and lowers
// the damage. The result is optimal for the budgets on the path and within one unit's step of the
// budget otherwise. paretoFront() returns the whole path (one point per step): predicted damage
// against size from the cheapest to the best allocation, in O(N C log(N C)) — milliseconds for a
// 32-layer model.
// Constraints: pinned tensors keep a given candidate (counted in the budget); per-kind min/max bits
// (a candidate's bits: its grid's, a GGUF type's nominal, 16 for F16) drop candidates outside;
// tieQkv gives q, k and v of a layer one candidate.
// The allocation becomes a plan (toPlan): the most common candidate as the default, one exact-name
// rule per other tensor; resolving it for the model reproduces the allocation's sizes.
// Threading: pure functions on plain values.

#include "base/result.h"
#include "pipeline/quant_plan.h"
#include "pipeline/sensitivity.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qb::pipeline {

struct AllocationBudget {
    enum class Kind { BitsPerWeight, Bytes };
    Kind kind = Kind::BitsPerWeight;
    double value = 4.0; // bits per weight over the decoder linears, or total bytes
};

// "3.5bpw", "3.5" (bits per weight), "2.1GB", "800MB", "1500000B" (decimal units: 1 GB = 1e9 B,
// as file managers show sizes; "GiB"/"MiB" are powers of 1024).
Result<AllocationBudget> parseAllocationBudget(std::string_view text);
std::string describeBudget(const AllocationBudget& budget);

struct AllocationConstraints {
    std::map<std::string, std::string> pinned; // tensor name -> candidate label
    // Per linear kind (model::Linear), bounds on a candidate's bits.
    std::map<model::Linear, int> minBits, maxBits;
    bool tieQkv = false;
};

// The nominal bits of a candidate (see the header comment).
int candidateBits(const SensitivityCandidate& candidate);

struct Allocation {
    std::vector<std::size_t> choice; // candidate per atlas tensor
    double damage = 0;               // summed predicted damage
    double bitsPerWeight = 0;        // over the decoder linears
    std::uint64_t linearBytes = 0;
    std::uint64_t totalBytes = 0; // linearBytes + atlas.otherBytes
    double budgetValue = 0;       // the budget met, in its unit
};

// Fails when even the cheapest allowed choice exceeds the budget (the message gives that minimum)
// or a constraint names an unknown tensor/candidate or leaves a tensor no candidate.
Result<Allocation> allocateToBudget(const SensitivityAtlas& atlas, const AllocationBudget& budget,
                                    const AllocationConstraints& constraints = {});

struct ParetoPoint {
    double bitsPerWeight = 0;
    std::uint64_t totalBytes = 0;
    double damage = 0;
};
// The Lagrangian path from the cheapest to the least damaging allocation (cost increasing, damage
// non-increasing).
Result<std::vector<ParetoPoint>> paretoFront(const SensitivityAtlas& atlas,
                                             const AllocationConstraints& constraints = {});

// The allocation as a plan; `base` supplies description/embed/head types (GGUF atlases get the
// atlas's embed/head types when base has none).
QuantPlan allocationToPlan(const SensitivityAtlas& atlas, const Allocation& allocation,
                           const QuantPlan* base = nullptr);

// The uniform allocation of one candidate (every unpinned tensor), e.g. to compare at equal size.
Allocation uniformAllocation(const SensitivityAtlas& atlas, std::size_t candidate);
// The least damaging uniform allocation within `budget` (its candidate in allocation.choice[0]);
// nullopt when no single candidate fits. What a mixed allocation is compared with.
std::optional<Allocation> bestUniformWithin(const SensitivityAtlas& atlas, const AllocationBudget& budget);

} // namespace qb::pipeline
