#include "pipeline/allocator.h"

#include "quant/container_grid.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

namespace qb::pipeline {

Result<AllocationBudget> parseAllocationBudget(std::string_view raw)
{
    std::string text(raw);
    std::string lower;
    for (char c : text)
        if (!std::isspace(static_cast<unsigned char>(c))) lower += char(std::tolower(static_cast<unsigned char>(c)));
    const auto bad = [&](const std::string& why) {
        return makeError(ErrorCode::InvalidArgument,
                         "bad budget \"" + text + "\": " + why + " (write e.g. 3.5bpw, 2.1GB, 800MB or 1.5GiB)");
    };
    if (lower.empty()) return bad("empty");
    char* end = nullptr;
    const double v = std::strtod(lower.c_str(), &end);
    if (end == lower.c_str() || !std::isfinite(v) || v <= 0) return bad("not a positive number");
    const std::string unit(end);
    AllocationBudget b;
    if (unit.empty() || unit == "bpw" || unit == "bits") {
        if (v > 32) return bad("more than 32 bits per weight");
        b.kind = AllocationBudget::Kind::BitsPerWeight;
        b.value = v;
        return b;
    }
    static const std::pair<const char*, double> kUnits[] = {
        {"b", 1.0},         {"kb", 1e3},           {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"kib", 1024.0},
        {"mib", 1048576.0}, {"gib", 1073741824.0}, {"k", 1e3},  {"m", 1e6},  {"g", 1e9},
    };
    for (const auto& [name, scale] : kUnits)
        if (unit == name) {
            b.kind = AllocationBudget::Kind::Bytes;
            b.value = std::floor(v * scale);
            return b;
        }
    return bad("unknown unit \"" + unit + "\"");
}

std::string describeBudget(const AllocationBudget& b)
{
    char buf[64];
    if (b.kind == AllocationBudget::Kind::BitsPerWeight) std::snprintf(buf, sizeof buf, "%.3g bits/weight", b.value);
    else std::snprintf(buf, sizeof buf, "%.4g MB", b.value / 1e6);
    return buf;
}

int candidateBits(const SensitivityCandidate& c)
{
    if (c.settings.skip.value_or(false)) return c.settings.target == std::optional<std::string>("F32") ? 32 : 16;
    if (c.settings.target)
        if (const quant::ContainerSpec* spec = quant::findContainerSpec(*c.settings.target)) return spec->bits;
    return c.settings.bits.value_or(4);
}

namespace {

struct Point {
    std::size_t candidate = 0;
    std::uint64_t bytes = 0;
    double damage = 0;
};

// A unit: the tensors that share one candidate (one tensor, or q/k/v of a layer when tied).
struct Unit {
    std::vector<std::size_t> tensors;
    std::vector<Point> options; // allowed candidates, cost ascending
    std::vector<Point> hull;    // lower convex hull of options, cost ascending, damage descending
};

struct Problem {
    std::vector<Unit> units;
    std::int64_t linearParams = 0;
};

Result<Problem> buildProblem(const SensitivityAtlas& atlas, const AllocationConstraints& k)
{
    const std::size_t nt = atlas.tensors.size(), nc = atlas.candidates.size();
    if (nt == 0 || nc == 0 || atlas.cells.size() != nt)
        return makeError(ErrorCode::InvalidArgument, "allocate: the sensitivity atlas is empty");
    const std::vector<std::vector<double>> damage = atlas.damageTable();
    std::vector<std::optional<std::size_t>> pin(nt);
    for (const auto& [name, label] : k.pinned) {
        const auto t = atlas.findTensor(name);
        if (!t) return makeError(ErrorCode::InvalidArgument, "allocate: pinned tensor not in the atlas", name);
        const auto c = atlas.findCandidate(label);
        if (!c)
            return makeError(ErrorCode::InvalidArgument, "allocate: " + name + " is pinned to \"" + label +
                                                             "\", which is not a candidate (" +
                                                             candidateListText(atlas.candidates) + ")");
        pin[*t] = *c;
    }
    Problem p;
    // Units.
    std::vector<bool> used(nt, false);
    for (std::size_t t = 0; t < nt; ++t) {
        if (used[t]) continue;
        Unit u;
        u.tensors.push_back(t);
        used[t] = true;
        if (k.tieQkv && atlas.tensors[t].linear == model::Linear::Q)
            for (std::size_t s = 0; s < nt; ++s)
                if (!used[s] && atlas.tensors[s].layer == atlas.tensors[t].layer &&
                    (atlas.tensors[s].linear == model::Linear::K || atlas.tensors[s].linear == model::Linear::V)) {
                    u.tensors.push_back(s);
                    used[s] = true;
                }
        p.units.push_back(std::move(u));
    }
    for (std::size_t t = 0; t < nt; ++t)
        p.linearParams += atlas.tensors[t].params();
    // Allowed options per unit.
    for (Unit& u : p.units) {
        std::optional<std::size_t> unitPin;
        for (std::size_t t : u.tensors)
            if (pin[t]) {
                if (unitPin && *unitPin != *pin[t])
                    return makeError(ErrorCode::InvalidArgument,
                                     "allocate: q, k and v of a layer are tied but pinned to different candidates",
                                     atlas.tensors[t].name);
                unitPin = pin[t];
            }
        for (std::size_t c = 0; c < nc; ++c) {
            if (unitPin && c != *unitPin) continue;
            bool ok = true;
            if (!unitPin)
                for (std::size_t t : u.tensors) {
                    const int bits = candidateBits(atlas.candidates[c]);
                    const model::Linear lin = atlas.tensors[t].linear;
                    if (auto it = k.minBits.find(lin); it != k.minBits.end() && bits < it->second) ok = false;
                    if (auto it = k.maxBits.find(lin); it != k.maxBits.end() && bits > it->second) ok = false;
                }
            if (!ok) continue;
            Point pt;
            pt.candidate = c;
            for (std::size_t t : u.tensors) {
                pt.bytes += atlas.cells[t][c].bytes;
                pt.damage += damage[t][c];
            }
            u.options.push_back(pt);
        }
        if (u.options.empty())
            return makeError(ErrorCode::InvalidArgument,
                             "allocate: the min/max bits leave no candidate for " + atlas.tensors[u.tensors[0]].name);
        std::sort(u.options.begin(), u.options.end(), [](const Point& a, const Point& b) {
            return a.bytes != b.bytes ? a.bytes < b.bytes : a.damage < b.damage;
        });
        // Lower convex hull, keeping only points that lower the damage.
        for (const Point& q : u.options) {
            if (!u.hull.empty() && q.damage >= u.hull.back().damage) continue;
            if (!u.hull.empty() && q.bytes == u.hull.back().bytes) u.hull.pop_back();
            while (u.hull.size() >= 2) {
                const Point& a = u.hull[u.hull.size() - 2];
                const Point& b = u.hull.back();
                // b lies on or above the chord a-q: drop it.
                const double cross = (double(b.bytes) - double(a.bytes)) * (q.damage - a.damage) -
                                     (b.damage - a.damage) * (double(q.bytes) - double(a.bytes));
                if (cross <= 0) u.hull.pop_back();
                else break;
            }
            u.hull.push_back(q);
        }
    }
    return p;
}

struct Step {
    std::size_t unit = 0, to = 0; // hull index reached
    double efficiency = 0;        // damage saved per byte
};

std::vector<Step> pathSteps(const Problem& p)
{
    std::vector<Step> steps;
    for (std::size_t u = 0; u < p.units.size(); ++u) {
        const auto& h = p.units[u].hull;
        for (std::size_t i = 1; i < h.size(); ++i)
            steps.push_back({u, i, (h[i - 1].damage - h[i].damage) / double(h[i].bytes - h[i - 1].bytes)});
    }
    std::stable_sort(steps.begin(), steps.end(), [](const Step& a, const Step& b) {
        if (a.efficiency != b.efficiency) return a.efficiency > b.efficiency;
        return a.unit != b.unit ? a.unit < b.unit : a.to < b.to;
    });
    return steps;
}

Allocation finish(const SensitivityAtlas& atlas, const Problem& p, const std::vector<Point>& at)
{
    const std::vector<std::vector<double>> damage = atlas.damageTable();
    Allocation a;
    a.choice.assign(atlas.tensors.size(), 0);
    double bits = 0;
    for (std::size_t u = 0; u < p.units.size(); ++u)
        for (std::size_t t : p.units[u].tensors) {
            const std::size_t c = at[u].candidate;
            a.choice[t] = c;
            const SensitivityCell& cell = atlas.cells[t][c];
            a.damage += damage[t][c];
            a.linearBytes += cell.bytes;
            bits += cell.bitsPerWeight * double(atlas.tensors[t].params());
        }
    a.bitsPerWeight = p.linearParams > 0 ? bits / double(p.linearParams) : 0;
    a.totalBytes = a.linearBytes + atlas.otherBytes;
    return a;
}

} // namespace

Result<Allocation> allocateToBudget(const SensitivityAtlas& atlas, const AllocationBudget& budget,
                                    const AllocationConstraints& constraints)
{
    QB_TRY(p, buildProblem(atlas, constraints));
    // The budget as bytes of the decoder linears.
    double limit = 0;
    if (budget.kind == AllocationBudget::Kind::BitsPerWeight)
        limit = std::floor(budget.value * double(p->linearParams) / 8.0);
    else limit = budget.value - double(atlas.otherBytes);
    std::vector<Point> at;
    std::uint64_t used = 0;
    for (const Unit& u : p->units) {
        at.push_back(u.hull.front());
        used += u.hull.front().bytes;
    }
    if (double(used) > limit) {
        const Allocation cheapest = finish(atlas, *p, at);
        char buf[200];
        std::snprintf(buf, sizeof buf, "the smallest allocation the candidates allow is %.3f bits/weight (%.4g MB)",
                      cheapest.bitsPerWeight, double(cheapest.totalBytes) / 1e6);
        return makeError(ErrorCode::InvalidArgument, "allocate: the budget " + describeBudget(budget) +
                                                         " is below what any allocation needs: " + buf);
    }
    // The Lagrangian path, as far as it fits.
    std::vector<std::size_t> hullIndex(p->units.size(), 0);
    for (const Step& s : pathSteps(*p)) {
        const Unit& u = p->units[s.unit];
        if (hullIndex[s.unit] + 1 != s.to) continue; // an earlier step of this unit did not fit
        const std::uint64_t extra = u.hull[s.to].bytes - u.hull[s.to - 1].bytes;
        if (double(used + extra) > limit) continue; // later, smaller steps of other units may fit
        used += extra;
        hullIndex[s.unit] = s.to;
        at[s.unit] = u.hull[s.to];
    }
    // Fill: any single change (hull or not) that still fits and lowers the damage, best first.
    for (int round = 0; round < 64; ++round) {
        double bestGain = 0;
        std::size_t bestUnit = 0;
        const Point* bestPoint = nullptr;
        for (std::size_t ui = 0; ui < p->units.size(); ++ui)
            for (const Point& q : p->units[ui].options) {
                const double gain = at[ui].damage - q.damage;
                if (gain <= bestGain) continue;
                if (double(used) - double(at[ui].bytes) + double(q.bytes) > limit) continue;
                bestGain = gain;
                bestUnit = ui;
                bestPoint = &q;
            }
        if (!bestPoint) break;
        used = used - at[bestUnit].bytes + bestPoint->bytes;
        at[bestUnit] = *bestPoint;
    }
    Allocation a = finish(atlas, *p, at);
    a.budgetValue = budget.value;
    return a;
}

Result<std::vector<ParetoPoint>> paretoFront(const SensitivityAtlas& atlas, const AllocationConstraints& constraints)
{
    QB_TRY(p, buildProblem(atlas, constraints));
    std::vector<Point> at;
    for (const Unit& u : p->units)
        at.push_back(u.hull.front());
    Allocation a = finish(atlas, *p, at);
    std::vector<ParetoPoint> out;
    double bits = a.bitsPerWeight * double(p->linearParams);
    std::uint64_t bytes = a.totalBytes;
    double damage = a.damage;
    out.push_back({a.bitsPerWeight, bytes, damage});
    for (const Step& s : pathSteps(*p)) {
        const Unit& u = p->units[s.unit];
        const Point& from = u.hull[s.to - 1];
        const Point& to = u.hull[s.to];
        for (std::size_t t : u.tensors) {
            const double n = double(atlas.tensors[t].params());
            bits += (atlas.cells[t][to.candidate].bitsPerWeight - atlas.cells[t][from.candidate].bitsPerWeight) * n;
        }
        bytes = bytes + to.bytes - from.bytes;
        damage += to.damage - from.damage;
        out.push_back({bits / double(p->linearParams), bytes, std::max(0.0, damage)});
    }
    return out;
}

QuantPlan allocationToPlan(const SensitivityAtlas& atlas, const Allocation& allocation, const QuantPlan* base)
{
    QuantPlan plan;
    if (base) plan = *base;
    plan.rules.clear();
    if (!plan.embedType && !atlas.embedType.empty()) plan.embedType = atlas.embedType;
    if (!plan.headType && !atlas.headType.empty()) plan.headType = atlas.headType;
    std::vector<std::size_t> count(atlas.candidates.size(), 0);
    for (std::size_t c : allocation.choice)
        ++count[c];
    const std::size_t common = std::size_t(std::max_element(count.begin(), count.end()) - count.begin());
    auto settingsOf = [&](std::size_t c) {
        return candidatePlanSettings(atlas.candidates[c], !atlas.embedType.empty());
    };
    plan.defaults = settingsOf(common);
    for (std::size_t t = 0; t < allocation.choice.size(); ++t) {
        if (allocation.choice[t] == common) continue;
        std::string name = atlas.tensors[t].name;
        if (name.size() > 7 && name.ends_with(".weight")) name.resize(name.size() - 7);
        plan.rules.push_back({name, settingsOf(allocation.choice[t])});
    }
    char buf[160];
    std::snprintf(buf, sizeof buf, "allocated: %.3f bits/weight, predicted damage %.4g (%zu candidates)",
                  allocation.bitsPerWeight, allocation.damage, atlas.candidates.size());
    if (plan.description.empty() || plan.description.rfind("allocated:", 0) == 0) plan.description = buf;
    return plan;
}

Allocation uniformAllocation(const SensitivityAtlas& atlas, std::size_t candidate)
{
    Problem p;
    for (std::size_t t = 0; t < atlas.tensors.size(); ++t) {
        Unit u;
        u.tensors = {t};
        p.linearParams += atlas.tensors[t].params();
        p.units.push_back(std::move(u));
    }
    std::vector<Point> at(p.units.size(), Point{candidate, 0, 0});
    return finish(atlas, p, at);
}

std::optional<Allocation> bestUniformWithin(const SensitivityAtlas& atlas, const AllocationBudget& budget)
{
    std::optional<Allocation> best;
    for (std::size_t c = 0; c < atlas.candidates.size(); ++c) {
        Allocation u = uniformAllocation(atlas, c);
        const double used =
            budget.kind == AllocationBudget::Kind::BitsPerWeight ? u.bitsPerWeight : double(u.totalBytes);
        if (used > budget.value + 1e-9) continue;
        if (!best || u.damage < best->damage) best = std::move(u);
    }
    return best;
}

} // namespace qb::pipeline
