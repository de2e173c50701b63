#include "pipeline/quant_plan.h"

#include "pipeline/perplexity_job.h"

#include <cmath>
#include <fstream>

namespace qb::pipeline {

namespace {

constexpr std::string_view kSettingKeys[] = {"method",        "bits",       "group_size", "sym", "act_order",
                                             "static_groups", "block_size", "damping",    "skip"};

std::string joinKeys(bool withMatch)
{
    std::string s = withMatch ? "match" : "";
    for (std::string_view k : kSettingKeys) {
        if (!s.empty()) s += ", ";
        s += k;
    }
    return s;
}

std::string validMethods()
{
    std::string s;
    for (const quant::MethodTraits& t : quant::allMethodTraits()) {
        if (!s.empty()) s += ", ";
        s += t.id;
    }
    return s;
}

Error planError(const std::string& message, const std::string& where)
{
    return makeError(ErrorCode::InvalidArgument, message, where);
}

Result<bool> getBool(const io::JsonValue& v, const std::string& where)
{
    if (!v.isBool()) return planError("expected true or false, got " + std::string(io::jsonTypeName(v.type())), where);
    return v.asBool();
}

Result<int> getInt(const io::JsonValue& v, const std::string& where)
{
    if (!v.isInteger() || std::fabs(v.asNumber()) > 1e9)
        return planError(std::string("expected an integer, got ") +
                             (v.isNumber() ? std::to_string(v.asNumber()) : io::jsonTypeName(v.type())),
                         where);
    return int(v.asInteger());
}

Status parseSettings(const io::JsonValue& obj, bool isRule, const std::string& where, PlanSettings& s,
                     std::string* match)
{
    if (!obj.isObject())
        return planError("expected an object, got " + std::string(io::jsonTypeName(obj.type())), where);
    for (const io::JsonMember& m : obj.asObject()) {
        const std::string at = where + "." + m.key;
        const io::JsonValue& v = m.value;
        if (isRule && m.key == "match") {
            if (!v.isString() || v.asString().empty()) return planError("expected a non-empty glob string", at);
            *match = v.asString();
        } else if (m.key == "method") {
            if (!v.isString()) return planError("expected a method name string", at);
            const auto method = quant::methodFromId(v.asString());
            if (!method)
                return planError("unknown method \"" + v.asString() + "\" (valid: " + validMethods() + ")", at);
            s.method = *method;
        } else if (m.key == "bits") {
            QB_TRY(b, getInt(v, at));
            if (*b < quant::kMinBits || *b > quant::kMaxBits)
                return planError("bits " + std::to_string(*b) + " out of range [" + std::to_string(quant::kMinBits) +
                                     ", " + std::to_string(quant::kMaxBits) + "]",
                                 at);
            s.bits = *b;
        } else if (m.key == "group_size") {
            QB_TRY(g, getInt(v, at));
            if (*g == 0 || *g < -1)
                return planError("group size " + std::to_string(*g) +
                                     " must be positive (or -1 for one group per output channel)",
                                 at);
            s.groupSize = *g;
        } else if (m.key == "sym") {
            QB_TRY(b, getBool(v, at));
            s.sym = *b;
        } else if (m.key == "act_order") {
            QB_TRY(b, getBool(v, at));
            s.actOrder = *b;
        } else if (m.key == "static_groups") {
            QB_TRY(b, getBool(v, at));
            s.staticGroups = *b;
        } else if (m.key == "skip") {
            QB_TRY(b, getBool(v, at));
            s.skip = *b;
        } else if (m.key == "block_size") {
            QB_TRY(b, getInt(v, at));
            if (*b < 1) return planError("block size must be >= 1", at);
            s.blockSize = *b;
        } else if (m.key == "damping") {
            if (!v.isNumber() || !(v.asNumber() >= 0.0 && v.asNumber() <= 1.0))
                return planError("damping must be a number in [0, 1]", at);
            s.damping = v.asNumber();
        } else {
            return planError("unknown key \"" + m.key + "\" (valid: " + joinKeys(isRule) + ")", at);
        }
    }
    if (isRule && match->empty()) return planError("a rule needs a \"match\" glob", where);
    return {};
}

void overlay(PlanSettings& into, const PlanSettings& from)
{
    if (from.method) into.method = from.method;
    if (from.bits) into.bits = from.bits;
    if (from.groupSize) into.groupSize = from.groupSize;
    if (from.sym) into.sym = from.sym;
    if (from.actOrder) into.actOrder = from.actOrder;
    if (from.staticGroups) into.staticGroups = from.staticGroups;
    if (from.blockSize) into.blockSize = from.blockSize;
    if (from.damping) into.damping = from.damping;
    if (from.skip) into.skip = from.skip;
}

void writeSettings(io::JsonValue& o, const PlanSettings& s)
{
    if (s.method) o.set("method", std::string(quant::methodTraits(*s.method).id));
    if (s.bits) o.set("bits", *s.bits);
    if (s.groupSize) o.set("group_size", *s.groupSize);
    if (s.sym) o.set("sym", *s.sym);
    if (s.actOrder) o.set("act_order", *s.actOrder);
    if (s.staticGroups) o.set("static_groups", *s.staticGroups);
    if (s.blockSize) o.set("block_size", *s.blockSize);
    if (s.damping) o.set("damping", *s.damping);
    if (s.skip) o.set("skip", *s.skip);
}

struct Target {
    std::string name;
    int layer;
    model::Linear linear;
    std::int64_t rows, cols;
};

std::vector<Target> planTargets(const ModelConfig& c)
{
    const std::int64_t q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim;
    std::vector<Target> t;
    for (int l = 0; l < int(c.numHiddenLayers); ++l)
        for (model::Linear lin : model::kAllLinears) {
            std::int64_t r = 0, k = 0;
            switch (lin) {
            case model::Linear::Q: r = q, k = c.hiddenSize; break;
            case model::Linear::K:
            case model::Linear::V: r = kv, k = c.hiddenSize; break;
            case model::Linear::O: r = c.hiddenSize, k = q; break;
            case model::Linear::Gate:
            case model::Linear::Up: r = c.intermediateSize, k = c.hiddenSize; break;
            case model::Linear::Down: r = c.hiddenSize, k = c.intermediateSize; break;
            }
            t.push_back({model::tensorName(l, lin), l, lin, r, k});
        }
    return t;
}

// Parameters that are not decoder linear weights (all kept at 16 bits).
std::int64_t otherParams(const ModelConfig& c)
{
    const std::int64_t q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim;
    std::int64_t n = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.hiddenSize;
    std::int64_t perLayer = 2 * c.hiddenSize;
    if (c.attentionBias) perLayer += q + 2 * kv;
    if (c.attentionOutputBias) perLayer += c.hiddenSize;
    if (c.mlpBias) perLayer += 2 * c.intermediateSize + c.hiddenSize;
    return n + perLayer * c.numHiddenLayers;
}

} // namespace

const TensorPlan* ResolvedPlan::find(std::string_view name) const
{
    for (const TensorPlan& t : tensors)
        if (t.name == name || std::string_view(t.name).substr(0, t.name.size() - 7) == name) return &t;
    return nullptr;
}

bool globMatch(std::string_view p, std::string_view s)
{
    // Iterative matcher with single-star backtracking (linear in practice).
    std::size_t pi = 0, si = 0, starP = std::string_view::npos, starS = 0;
    auto classMatch = [&](std::size_t& i, char c) -> std::optional<bool> {
        std::size_t j = i + 1;
        bool neg = false;
        if (j < p.size() && (p[j] == '!' || p[j] == '^')) neg = true, ++j;
        bool hit = false, first = true;
        for (; j < p.size() && (first || p[j] != ']'); ++j, first = false) {
            if (j + 2 < p.size() && p[j + 1] == '-' && p[j + 2] != ']') {
                if (c >= p[j] && c <= p[j + 2]) hit = true;
                j += 2;
            } else if (p[j] == c) {
                hit = true;
            }
        }
        if (j >= p.size()) return std::nullopt; // no closing ']': treat '[' literally
        i = j + 1;
        return hit != neg;
    };
    while (si < s.size()) {
        if (pi < p.size() && p[pi] == '*') {
            starP = pi++;
            starS = si;
            continue;
        }
        if (pi < p.size()) {
            if (p[pi] == '?') {
                ++pi, ++si;
                continue;
            }
            if (p[pi] == '[') {
                std::size_t next = pi;
                const auto r = classMatch(next, s[si]);
                if (r && *r) {
                    pi = next, ++si;
                    continue;
                }
                if (!r && s[si] == '[') {
                    ++pi, ++si;
                    continue;
                }
            } else if (p[pi] == s[si]) {
                ++pi, ++si;
                continue;
            }
        }
        if (starP == std::string_view::npos) return false;
        pi = starP + 1;
        si = ++starS;
    }
    while (pi < p.size() && p[pi] == '*')
        ++pi;
    return pi == p.size();
}

bool planPatternMatches(std::string_view pattern, std::string_view name)
{
    if (globMatch(pattern, name)) return true;
    constexpr std::string_view suffix = ".weight";
    if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix)
        return globMatch(pattern, name.substr(0, name.size() - suffix.size()));
    return false;
}

Result<QuantPlan> quantPlanFromJson(const io::JsonValue& json, const std::string& name)
{
    if (!json.isObject()) return planError("a plan must be a JSON object", name);
    QuantPlan plan;
    bool haveDefault = false;
    for (const io::JsonMember& m : json.asObject()) {
        const std::string at = name + ": " + m.key;
        if (m.key == "version") {
            if (!m.value.isInteger() || m.value.asInteger() != kPlanVersion)
                return planError("unsupported plan version (expected " + std::to_string(kPlanVersion) + ")", at);
        } else if (m.key == "description") {
            if (!m.value.isString()) return planError("expected a string", at);
            plan.description = m.value.asString();
        } else if (m.key == "default") {
            QB_TRY_STATUS(parseSettings(m.value, false, at, plan.defaults, nullptr));
            haveDefault = true;
        } else if (m.key == "rules") {
            if (!m.value.isArray()) return planError("expected an array of rules", at);
            const io::JsonArray& rules = m.value.asArray();
            for (std::size_t i = 0; i < rules.size(); ++i) {
                PlanRule r;
                QB_TRY_STATUS(parseSettings(rules[i], true, at + "[" + std::to_string(i) + "]", r.settings, &r.match));
                plan.rules.push_back(std::move(r));
            }
        } else {
            return planError("unknown key \"" + m.key + "\" (valid: version, description, default, rules)", at);
        }
    }
    if (!haveDefault || !plan.defaults.method)
        return planError("the plan needs a \"default\" object with a \"method\" (" + validMethods() + ")", name);
    return plan;
}

Result<QuantPlan> quantPlanFromText(std::string_view text, const std::string& name)
{
    QB_TRY(json, io::parseJson(text, name));
    return quantPlanFromJson(*json, name);
}

Result<QuantPlan> loadQuantPlan(const std::string& path)
{
    QB_TRY(text, readTextFile(path));
    return quantPlanFromText(*text, path);
}

io::JsonValue quantPlanToJson(const QuantPlan& plan)
{
    io::JsonValue root;
    root.set("version", kPlanVersion);
    if (!plan.description.empty()) root.set("description", plan.description);
    io::JsonValue def(io::JsonObject{});
    writeSettings(def, plan.defaults);
    root.set("default", std::move(def));
    io::JsonArray rules;
    for (const PlanRule& r : plan.rules) {
        io::JsonValue o;
        o.set("match", r.match);
        writeSettings(o, r.settings);
        rules.push_back(std::move(o));
    }
    root.set("rules", std::move(rules));
    return root;
}

Status saveQuantPlan(const QuantPlan& plan, const std::string& path)
{
    const std::string text = io::toJsonText(quantPlanToJson(plan));
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) return makeError(ErrorCode::Io, "cannot write plan", tmp);
        out << text;
        out.flush();
        if (!out) return makeError(ErrorCode::Io, "cannot write plan", tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        return makeError(ErrorCode::Io, "cannot replace plan file", path);
    }
    return {};
}

QuantPlan uniformQuantPlan(quant::Method method, int bits, std::optional<int> groupSize, std::optional<bool> sym,
                           std::optional<bool> actOrder)
{
    QuantPlan p;
    p.defaults.method = method;
    p.defaults.bits = bits;
    p.defaults.groupSize = groupSize;
    p.defaults.sym = sym;
    p.defaults.actOrder = actOrder;
    return p;
}

Result<ResolvedPlan> resolveQuantPlan(const QuantPlan& plan, const ModelConfig& config)
{
    if (!plan.defaults.method) return planError("the plan's default has no method", "plan");
    ResolvedPlan out;
    std::vector<int> ruleHits(plan.rules.size(), 0);
    double bitsTotal = 0;
    for (const Target& t : planTargets(config)) {
        PlanSettings s = plan.defaults;
        for (std::size_t i = 0; i < plan.rules.size(); ++i)
            if (planPatternMatches(plan.rules[i].match, t.name)) {
                overlay(s, plan.rules[i].settings);
                ++ruleHits[i];
            }
        TensorPlan tp;
        tp.name = t.name;
        tp.layer = t.layer;
        tp.linear = t.linear;
        tp.rows = t.rows;
        tp.cols = t.cols;
        tp.skip = s.skip.value_or(false);
        tp.method = *s.method;
        const quant::MethodTraits& traits = quant::methodTraits(tp.method);
        quant::GptqOptions o = quant::defaultGptqOptions(tp.method);
        if (s.bits) o.grid.bits = *s.bits;
        if (s.groupSize) o.grid.groupSize = *s.groupSize;
        if (s.sym) o.grid.sym = *s.sym;
        if (s.actOrder) o.actOrder = *s.actOrder;
        if (s.staticGroups) o.groups = *s.staticGroups ? quant::GroupMode::Static : quant::GroupMode::Dynamic;
        if (s.blockSize) o.blockSize = *s.blockSize;
        if (s.damping) o.damping = *s.damping;
        if (!tp.skip && o.grid.sym && !traits.supportsSym)
            return planError(std::string(traits.id) + " has no symmetric grid (its zero-point is real-valued); "
                                                      "remove \"sym\": true",
                             t.name);
        if (!tp.skip && o.init == quant::GridInit::Neuqi && o.groups == quant::GroupMode::Dynamic)
            return planError("neuqi needs static groups (\"static_groups\": true)", t.name);
        tp.options = o;
        tp.bitsPerWeight = tp.skip
                               ? double(kUnquantizedBits)
                               : quant::bitsPerWeightUniform(o.grid.bits, o.grid.groupSize, int(t.cols), o.grid.sym);
        const std::int64_t n = t.rows * t.cols;
        out.linearParams += n;
        if (!tp.skip) out.quantizedParams += n;
        bitsTotal += tp.bitsPerWeight * double(n);
        out.linearBytes += std::uint64_t(std::ceil(tp.bitsPerWeight * double(n) / 8.0));
        out.tensors.push_back(std::move(tp));
    }
    for (std::size_t i = 0; i < plan.rules.size(); ++i)
        if (ruleHits[i] == 0)
            out.warnings.push_back({"unmatched-rule", "rule " + std::to_string(i) + " (\"" + plan.rules[i].match +
                                                          "\") matches no tensor"});
    out.bitsPerWeight = out.linearParams > 0 ? bitsTotal / double(out.linearParams) : 0.0;
    out.sizeBytes = out.linearBytes + std::uint64_t(otherParams(config)) * (kUnquantizedBits / 8);
    return out;
}

std::string describeQuantPlan(const QuantPlan& plan)
{
    const PlanSettings& d = plan.defaults;
    const quant::Method m = d.method.value_or(quant::Method::Rtn);
    std::string s;
    if (d.skip.value_or(false)) s = "skip";
    else {
        s = std::string(quant::methodTraits(m).name) + " " + std::to_string(d.bits.value_or(4)) + "b";
        const int g = d.groupSize.value_or(int(quant::methodParamDefault(m, "group_size").value_or(-1)));
        s += g > 0 ? " g" + std::to_string(g) : std::string(" per-ch");
        if (d.sym.value_or(false)) s += " sym";
    }
    if (!plan.rules.empty())
        s += " +" + std::to_string(plan.rules.size()) + (plan.rules.size() == 1 ? " rule" : " rules");
    return s;
}

} // namespace qb::pipeline
