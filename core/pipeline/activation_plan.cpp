#include "pipeline/activation_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>

namespace qb::pipeline {

using model::LinearKind;

namespace {

constexpr LinearKind kKinds[] = {LinearKind::Qkv, LinearKind::O, LinearKind::GateUp, LinearKind::Down};

Error planError(const std::string& message, const std::string& where)
{
    return makeError(ErrorCode::InvalidArgument, message, where);
}

Result<int> parseBits(const io::JsonValue& v, const std::string& at, int lo)
{
    if (!v.isInteger() || v.asInteger() < 0 || v.asInteger() > 8 || (v.asInteger() > 0 && v.asInteger() < lo))
        return planError("expected 0 (off) or an integer in [" + std::to_string(lo) + ", 8]", at);
    return int(v.asInteger());
}

// A number in (0, 1] (openZero) or [0, 1].
Result<double> parseRatio(const io::JsonValue& v, const std::string& at, bool openZero)
{
    if (!v.isNumber() || !std::isfinite(v.asNumber()) || v.asNumber() > 1 ||
        (openZero ? v.asNumber() <= 0 : v.asNumber() < 0))
        return planError(openZero ? "expected a number in (0, 1]" : "expected a number in [0, 1]", at);
    return v.asNumber();
}

Result<bool> parseBool(const io::JsonValue& v, const std::string& at)
{
    if (!v.isBool()) return planError("expected true or false", at);
    return v.asBool();
}

Status parseGroup(const io::JsonValue& v, const std::string& at, ActivationGroupSettings& g, bool allowGroups,
                  ActivationPlan* plan)
{
    if (!v.isObject()) return planError("expected an object", at);
    for (const io::JsonMember& m : v.asObject()) {
        const std::string where = at + "." + m.key;
        if (m.key == "bits") {
            QB_TRY(b, parseBits(m.value, where, 2));
            g.bits = *b;
        } else if (m.key == "sym") {
            QB_TRY(b, parseBool(m.value, where));
            g.sym = *b;
        } else if (m.key == "clip") {
            QB_TRY(c, parseRatio(m.value, where, true));
            g.clip = *c;
        } else if (m.key == "granularity") {
            if (!m.value.isString() || (m.value.asString() != "token" && m.value.asString() != "tensor"))
                return planError("expected \"token\" or \"tensor\"", where);
            g.granularity =
                m.value.asString() == "token" ? model::ActGranularity::PerToken : model::ActGranularity::PerTensor;
        } else if (m.key == "static") {
            QB_TRY(b, parseBool(m.value, where));
            g.staticRange = *b;
        } else if (m.key == "groups" && allowGroups) {
            if (!m.value.isObject()) return planError("expected an object of groups (qkv, o, gate_up, down)", where);
            for (const io::JsonMember& gm : m.value.asObject()) {
                const auto* k = std::find_if(std::begin(kKinds), std::end(kKinds),
                                             [&](LinearKind kind) { return gm.key == model::linearKindName(kind); });
                if (k == std::end(kKinds))
                    return planError("unknown group \"" + gm.key + "\" (valid: qkv, o, gate_up, down)", where);
                QB_TRY_STATUS(
                    parseGroup(gm.value, where + "." + gm.key, plan->groups[std::size_t(*k)], false, nullptr));
            }
        } else {
            return planError("unknown key \"" + m.key + "\" (valid: bits, sym, clip, granularity, static" +
                                 (allowGroups ? ", groups)" : ")"),
                             where);
        }
    }
    return {};
}

io::JsonValue groupJson(const ActivationGroupSettings& g)
{
    io::JsonValue o(io::JsonObject{});
    if (g.bits) o.set("bits", *g.bits);
    if (g.sym) o.set("sym", *g.sym);
    if (g.clip) o.set("clip", *g.clip);
    if (g.granularity) o.set("granularity", *g.granularity == model::ActGranularity::PerToken ? "token" : "tensor");
    if (g.staticRange) o.set("static", *g.staticRange);
    return o;
}

std::string number(double v)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

Result<int> parseCount(const io::JsonValue& v, const std::string& at, int lo, int hi)
{
    if (!v.isInteger() || v.asInteger() < lo || v.asInteger() > hi)
        return planError("expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", at);
    return int(v.asInteger());
}

Status parseRuquant(const io::JsonValue& v, const std::string& where, RuquantPlanOptions& r)
{
    if (!v.isObject()) return planError("expected an object", where);
    for (const io::JsonMember& m : v.asObject()) {
        const std::string at = where + "." + m.key;
        if (m.key == "block") {
            QB_TRY(b, parseCount(m.value, at, 2, 4096));
            if (*b % 2) return planError("the block size must be even (Givens rotations act on pairs)", at);
            r.blockSize = *b;
        } else if (m.key == "steps") {
            QB_TRY(b, parseCount(m.value, at, 0, 1024));
            r.householderSteps = *b;
        } else if (m.key == "givens_rounds") {
            QB_TRY(b, parseCount(m.value, at, 0, 64));
            r.givensRounds = *b;
        } else if (m.key == "perm_rounds") {
            QB_TRY(b, parseCount(m.value, at, 0, 16));
            r.permutationRounds = *b;
        } else if (m.key == "repo_givens") {
            QB_TRY(b, parseBool(m.value, at));
            r.repoGivens = *b;
        } else if (m.key == "finetune_epochs") {
            QB_TRY(b, parseCount(m.value, at, 0, 1000));
            r.finetuneEpochs = *b;
        } else if (m.key == "finetune_lr") {
            if (!m.value.isNumber() || !(m.value.asNumber() > 0 && m.value.asNumber() <= 1))
                return planError("expected a learning rate in (0, 1]", at);
            r.finetuneLr = m.value.asNumber();
        } else {
            return planError("unknown key \"" + m.key +
                                 "\" (valid: block, steps, givens_rounds, perm_rounds, repo_givens, finetune_epochs, "
                                 "finetune_lr)",
                             at);
        }
    }
    return {};
}

} // namespace

const char* planRotationName(PlanRotation r)
{
    switch (r) {
    case PlanRotation::None: return "none";
    case PlanRotation::Residual: return "residual";
    case PlanRotation::Hadamard: return "hadamard";
    case PlanRotation::Ruquant: return "ruquant";
    }
    return "none";
}

model::ActQuantSpec ActivationPlan::spec(LinearKind k) const
{
    const ActivationGroupSettings& g = groups[std::size_t(k)];
    model::ActQuantSpec s;
    s.bits = g.bits.value_or(defaults.bits.value_or(0));
    s.sym = g.sym.value_or(defaults.sym.value_or(false));
    s.clip = float(g.clip.value_or(defaults.clip.value_or(1.0)));
    s.granularity = g.granularity.value_or(defaults.granularity.value_or(model::ActGranularity::PerToken));
    return s;
}

bool ActivationPlan::staticRange(LinearKind k) const
{
    return groups[std::size_t(k)].staticRange.value_or(defaults.staticRange.value_or(false));
}

bool ActivationPlan::quantizesActivations() const { return maxActivationBits() > 0 || kvBits > 0 || qBits > 0; }

int ActivationPlan::maxActivationBits() const
{
    int b = 0;
    for (LinearKind k : kKinds)
        b = std::max(b, spec(k).bits);
    return b;
}

std::string ActivationPlan::describe() const
{
    std::string s;
    auto add = [&](std::string_view prefix, const std::string& part) {
        if (!s.empty()) s += ' ';
        s += prefix;
        s += part;
    };
    int lo = 99, hi = 0;
    for (LinearKind k : kKinds) {
        const int b = spec(k).bits;
        lo = std::min(lo, b == 0 ? 16 : b);
        hi = std::max(hi, b == 0 ? 16 : b);
    }
    if (lo < 16) add("A", lo == hi ? std::to_string(lo) : std::to_string(lo) + '-' + std::to_string(hi));
    if (kvBits > 0) add("KV", std::to_string(kvBits));
    if (qBits > 0) add("Q", std::to_string(qBits));
    if (smoothAlpha) add("+smooth ", number(*smoothAlpha));
    if (rotate != PlanRotation::None) add("+", planRotationName(rotate));
    if (rotate == PlanRotation::Ruquant && ruquant.finetuneEpochs > 0)
        add("ft", std::to_string(ruquant.finetuneEpochs));
    return s;
}

Result<bool> parseActivationPlanKey(const std::string& key, const io::JsonValue& value, const std::string& where,
                                    ActivationPlan& plan)
{
    if (key == "activations") {
        QB_TRY_STATUS(parseGroup(value, where, plan.defaults, true, &plan));
        plan.hasActivations = true;
        return true;
    }
    if (key == "kv") {
        if (!value.isObject()) return planError("expected an object", where);
        for (const io::JsonMember& m : value.asObject()) {
            const std::string at = where + "." + m.key;
            if (m.key == "bits") {
                QB_TRY(b, parseBits(m.value, at, 2));
                plan.kvBits = *b;
            } else if (m.key == "q_bits") {
                QB_TRY(b, parseBits(m.value, at, 2));
                plan.qBits = *b;
            } else if (m.key == "sym") {
                QB_TRY(b, parseBool(m.value, at));
                plan.kvSym = *b;
            } else if (m.key == "clip") {
                QB_TRY(c, parseRatio(m.value, at, true));
                plan.kvClip = *c;
            } else {
                return planError("unknown key \"" + m.key + "\" (valid: bits, q_bits, sym, clip)", at);
            }
        }
        plan.hasKv = true;
        return true;
    }
    if (key == "transform") {
        if (!value.isObject()) return planError("expected an object", where);
        for (const io::JsonMember& m : value.asObject()) {
            const std::string at = where + "." + m.key;
            if (m.key == "smooth") {
                if (m.value.isNull()) {
                    plan.smoothAlpha.reset();
                    continue;
                }
                QB_TRY(a, parseRatio(m.value, at, false));
                plan.smoothAlpha = *a;
            } else if (m.key == "rotate") {
                const std::string r = m.value.isString() ? m.value.asString() : "";
                if (r == "none") plan.rotate = PlanRotation::None;
                else if (r == "residual") plan.rotate = PlanRotation::Residual;
                else if (r == "hadamard") plan.rotate = PlanRotation::Hadamard;
                else if (r == "ruquant") plan.rotate = PlanRotation::Ruquant;
                else return planError("expected \"none\", \"residual\", \"hadamard\" or \"ruquant\"", at);
            } else if (m.key == "ruquant") {
                QB_TRY_STATUS(parseRuquant(m.value, at, plan.ruquant));
            } else if (m.key == "seed") {
                if (!m.value.isInteger() || m.value.asInteger() < 0)
                    return planError("expected a non-negative integer", at);
                plan.seed = std::uint64_t(m.value.asInteger());
            } else {
                return planError("unknown key \"" + m.key + "\" (valid: smooth, rotate, seed, ruquant)", at);
            }
        }
        plan.hasTransform = true;
        return true;
    }
    return false;
}

void writeActivationPlan(io::JsonValue& root, const ActivationPlan& plan)
{
    if (plan.hasActivations) {
        io::JsonValue a = groupJson(plan.defaults);
        io::JsonValue groups(io::JsonObject{});
        bool any = false;
        for (LinearKind k : kKinds)
            if (const ActivationGroupSettings& g = plan.groups[std::size_t(k)]; g != ActivationGroupSettings{}) {
                groups.set(model::linearKindName(k), groupJson(g));
                any = true;
            }
        if (any) a.set("groups", std::move(groups));
        root.set("activations", std::move(a));
    }
    if (plan.hasKv) {
        io::JsonValue kv(io::JsonObject{});
        kv.set("bits", plan.kvBits);
        if (plan.qBits) kv.set("q_bits", plan.qBits);
        if (plan.kvSym) kv.set("sym", true);
        if (plan.kvClip != 1.0) kv.set("clip", plan.kvClip);
        root.set("kv", std::move(kv));
    }
    if (plan.hasTransform) {
        io::JsonValue t(io::JsonObject{});
        if (plan.smoothAlpha) t.set("smooth", *plan.smoothAlpha);
        t.set("rotate", planRotationName(plan.rotate));
        if (plan.seed) t.set("seed", std::int64_t(plan.seed));
        if (plan.rotate == PlanRotation::Ruquant) {
            const RuquantPlanOptions& r = plan.ruquant;
            io::JsonValue o(io::JsonObject{});
            o.set("block", r.blockSize);
            o.set("steps", r.householderSteps);
            o.set("givens_rounds", r.givensRounds);
            o.set("perm_rounds", r.permutationRounds);
            if (r.repoGivens) o.set("repo_givens", true);
            o.set("finetune_epochs", r.finetuneEpochs);
            o.set("finetune_lr", r.finetuneLr);
            t.set("ruquant", std::move(o));
        }
        root.set("transform", std::move(t));
    }
}

} // namespace qb::pipeline
