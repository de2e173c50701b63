#include "pipeline/quant_plan.h"

#include "pipeline/perplexity_job.h"
#include "quant/container_grid.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <map>

#include <cmath>
#include <cstdio>
#include <fstream>

namespace qb::pipeline {

namespace {

constexpr std::string_view kSettingKeys[] = {"method",         "bits",           "group_size",       "sym",
                                             "act_order",      "static_groups",  "block_size",       "damping",
                                             "skip",           "target",         "levels",           "score",
                                             "kmeans",         "kmeans_weights", "act_outliers",     "quant_outliers",
                                             "error_feedback", "bits_scope",     "static_codebooks", "clip"};
constexpr std::string_view kPlainTargets[] = {"F16", "BF16", "F32"};

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
        } else if (m.key == "bits" && v.isNumber() && !v.isInteger()) {
            if (!(v.asNumber() >= 1.0 && v.asNumber() <= quant::kMaxBits))
                return planError("average bits " + std::to_string(v.asNumber()) + " out of range [1, 8]", at);
            s.avgBits = v.asNumber();
            s.bits.reset();
        } else if (m.key == "bits") {
            QB_TRY(b, getInt(v, at));
            s.avgBits.reset();
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
        } else if (m.key == "clip") {
            if (!v.isNumber() || !(v.asNumber() > 0.0 && v.asNumber() <= 1.0))
                return planError("clip (the weight range ratio) must be a number in (0, 1]", at);
            s.clip = v.asNumber();
        } else if (m.key == "levels") {
            if (!v.isArray() || v.asArray().empty())
                return planError("expected an ascending array of bit levels, e.g. [2, 3, 4]", at);
            std::vector<int> lv;
            for (const io::JsonValue& e : v.asArray()) {
                QB_TRY(b, getInt(e, at));
                if (*b < 1 || *b > quant::kMaxBits || (!lv.empty() && *b <= lv.back()))
                    return planError("levels must be strictly ascending integers in [1, 8]", at);
                lv.push_back(*b);
            }
            s.levels = lv;
        } else if (m.key == "score") {
            quant::CmpqScore sc;
            if (!v.isString() || !quant::cmpqScoreFromId(v.asString(), sc))
                return planError("score must be \"mean_abs\", \"l2\", \"max_abs\" or \"mean_sq\"", at);
            s.score = sc;
        } else if (m.key == "kmeans") {
            QB_TRY(b, getBool(v, at));
            s.kmeans = *b;
        } else if (m.key == "kmeans_weights") {
            if (!v.isString() || (v.asString() != "uniform" && v.asString() != "energy"))
                return planError("kmeans_weights must be \"uniform\" or \"energy\"", at);
            s.energyWeights = v.asString() == "energy";
        } else if (m.key == "act_outliers" || m.key == "quant_outliers") {
            if (!v.isNumber() || !(v.asNumber() >= 0.0 && v.asNumber() < 0.5))
                return planError(m.key + " must be a fraction in [0, 0.5)", at);
            (m.key == "act_outliers" ? s.actOutliers : s.quantOutliers) = v.asNumber();
        } else if (m.key == "static_codebooks") {
            QB_TRY(b, getBool(v, at));
            s.staticCodebooks = *b;
        } else if (m.key == "error_feedback") {
            QB_TRY(b, getBool(v, at));
            s.errorFeedback = *b;
        } else if (m.key == "bits_scope") {
            if (!v.isString() || (v.asString() != "plan" && v.asString() != "tensor"))
                return planError("bits_scope must be \"plan\" or \"tensor\"", at);
            s.tensorScope = v.asString() == "tensor";
        } else if (m.key == "target") {
            if (!v.isString()) return planError("expected a storage target string (e.g. \"gguf:Q4_K\")", at);
            auto t = parsePlanTarget(v.asString());
            if (!t) return planError(t.error().message, at);
            s.target = *t;
        } else {
            return planError("unknown key \"" + m.key + "\" (valid: " + joinKeys(isRule) + ")", at);
        }
    }
    // CMPQ keys beside another method in the same object are a mistake; inherited from a default
    // into a rule that switches method, they are ignored.
    const bool cmpqKeys = s.levels || s.score || s.kmeans || s.energyWeights || s.actOutliers || s.quantOutliers ||
                          s.errorFeedback || s.tensorScope || s.staticCodebooks;
    if (cmpqKeys && s.method && *s.method != quant::Method::Cmpq)
        return planError(std::string(quant::methodTraits(*s.method).id) +
                             " has no CMPQ settings (levels, score, kmeans, kmeans_weights, act_outliers, "
                             "quant_outliers, error_feedback, static_codebooks, bits_scope)",
                         where);
    if (isRule && match->empty()) return planError("a rule needs a \"match\" glob", where);
    return {};
}

void overlay(PlanSettings& into, const PlanSettings& from)
{
    if (from.method) into.method = from.method;
    if (from.bits) into.bits = from.bits, into.avgBits.reset();
    if (from.avgBits) into.avgBits = from.avgBits, into.bits.reset();
    if (from.levels) into.levels = from.levels;
    if (from.score) into.score = from.score;
    if (from.kmeans) into.kmeans = from.kmeans;
    if (from.energyWeights) into.energyWeights = from.energyWeights;
    if (from.actOutliers) into.actOutliers = from.actOutliers;
    if (from.quantOutliers) into.quantOutliers = from.quantOutliers;
    if (from.errorFeedback) into.errorFeedback = from.errorFeedback;
    if (from.staticCodebooks) into.staticCodebooks = from.staticCodebooks;
    if (from.tensorScope) into.tensorScope = from.tensorScope;
    if (from.groupSize) into.groupSize = from.groupSize;
    if (from.sym) into.sym = from.sym;
    if (from.actOrder) into.actOrder = from.actOrder;
    if (from.staticGroups) into.staticGroups = from.staticGroups;
    if (from.blockSize) into.blockSize = from.blockSize;
    if (from.damping) into.damping = from.damping;
    if (from.clip) into.clip = from.clip;
    if (from.skip) into.skip = from.skip;
    if (from.target) into.target = from.target;
}

void writeSettings(io::JsonValue& o, const PlanSettings& s)
{
    if (s.method) o.set("method", std::string(quant::methodTraits(*s.method).id));
    if (s.bits) o.set("bits", *s.bits);
    if (s.avgBits) o.set("bits", *s.avgBits);
    if (s.levels) {
        io::JsonArray a;
        for (int b : *s.levels)
            a.emplace_back(b);
        o.set("levels", io::JsonValue(std::move(a)));
    }
    if (s.score) o.set("score", std::string(quant::cmpqScoreId(*s.score)));
    if (s.kmeans) o.set("kmeans", *s.kmeans);
    if (s.energyWeights) o.set("kmeans_weights", std::string(*s.energyWeights ? "energy" : "uniform"));
    if (s.actOutliers) o.set("act_outliers", *s.actOutliers);
    if (s.quantOutliers) o.set("quant_outliers", *s.quantOutliers);
    if (s.errorFeedback) o.set("error_feedback", *s.errorFeedback);
    if (s.staticCodebooks) o.set("static_codebooks", *s.staticCodebooks);
    if (s.tensorScope) o.set("bits_scope", std::string(*s.tensorScope ? "tensor" : "plan"));
    if (s.groupSize) o.set("group_size", *s.groupSize);
    if (s.sym) o.set("sym", *s.sym);
    if (s.actOrder) o.set("act_order", *s.actOrder);
    if (s.staticGroups) o.set("static_groups", *s.staticGroups);
    if (s.blockSize) o.set("block_size", *s.blockSize);
    if (s.damping) o.set("damping", *s.damping);
    if (s.clip) o.set("clip", *s.clip);
    if (s.skip) o.set("skip", *s.skip);
    if (s.target) o.set("target", *s.target == "none" || *s.target == "gptq" ? *s.target : "gguf:" + *s.target);
}

std::string upper(std::string_view s)
{
    std::string u(s);
    for (char& c : u)
        c = char(std::toupper(static_cast<unsigned char>(c)));
    return u;
}

bool isPlainTarget(std::string_view t)
{
    return std::find(std::begin(kPlainTargets), std::end(kPlainTargets), t) != std::end(kPlainTargets);
}

Result<std::string> parseGgufTypeName(const io::JsonValue& v, const std::string& at)
{
    if (!v.isString()) return planError("expected a GGUF type name", at);
    auto t = parsePlanTarget(v.asString());
    if (!t || *t == "none") return planError("not a GGUF type: \"" + v.asString() + "\"", at);
    return *t;
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
    if (c.qkNorm) perLayer += 2 * c.headDim;
    if (c.gemmaNorms) perLayer += 2 * c.hiddenSize;
    return n + perLayer * c.numHiddenLayers;
}

} // namespace

const TensorPlan* ResolvedPlan::find(std::string_view name) const
{
    for (const TensorPlan& t : tensors)
        if (t.name == name || std::string_view(t.name).substr(0, t.name.size() - 7) == name) return &t;
    return nullptr;
}

bool TensorPlan::inContainer() const { return !skip && quant::findContainerSpec(target) != nullptr; }

Result<std::string> parsePlanTarget(std::string_view text)
{
    std::string t = upper(text);
    if (t.rfind("GGUF:", 0) == 0) t = t.substr(5);
    if (t == "NONE") return std::string("none");
    if (t == "GPTQ") return std::string("gptq");
    if (quant::findContainerSpec(t) || isPlainTarget(t)) return t;
    std::string valid = "none, gptq";
    for (const quant::ContainerSpec& c : quant::containerSpecs())
        valid += std::string(", gguf:") + c.name;
    for (std::string_view p : kPlainTargets)
        valid += ", gguf:" + std::string(p);
    return makeError(ErrorCode::InvalidArgument,
                     "unknown storage target \"" + std::string(text) + "\" (valid: " + valid + ")");
}

double ggufTypeBitsPerWeight(std::string_view type)
{
    if (const quant::ContainerSpec* c = quant::findContainerSpec(type)) return c->bitsPerWeight();
    if (type == "F16" || type == "BF16") return 16.0;
    if (type == "F32") return 32.0;
    return 0.0;
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
        } else if (m.key == "embed_type") {
            QB_TRY(t, parseGgufTypeName(m.value, at));
            plan.embedType = *t;
        } else if (m.key == "head_type") {
            QB_TRY(t, parseGgufTypeName(m.value, at));
            plan.headType = *t;
        } else if (m.key == "rules") {
            if (!m.value.isArray()) return planError("expected an array of rules", at);
            const io::JsonArray& rules = m.value.asArray();
            for (std::size_t i = 0; i < rules.size(); ++i) {
                PlanRule r;
                QB_TRY_STATUS(parseSettings(rules[i], true, at + "[" + std::to_string(i) + "]", r.settings, &r.match));
                plan.rules.push_back(std::move(r));
            }
        } else {
            QB_TRY(handled, parseActivationPlanKey(m.key, m.value, at, plan.activation));
            if (!*handled)
                return planError("unknown key \"" + m.key +
                                     "\" (valid: version, description, default, rules, embed_type, head_type, "
                                     "activations, kv, transform)",
                                 at);
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
    if (plan.embedType) root.set("embed_type", *plan.embedType);
    if (plan.headType) root.set("head_type", *plan.headType);
    writeActivationPlan(root, plan.activation);
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

QuantPlan uniformQuantPlanBits(quant::Method method, double bits, std::optional<int> groupSize, std::optional<bool> sym,
                               std::optional<bool> actOrder)
{
    QuantPlan p = uniformQuantPlan(method, int(bits), groupSize, sym, actOrder);
    if (bits != std::floor(bits)) {
        p.defaults.bits.reset();
        p.defaults.avgBits = bits;
    }
    return p;
}

QuantPlan ruquantPresetPlan(int weightBits, int actBits, int finetuneEpochs)
{
    QuantPlan p = uniformQuantPlan(quant::Method::Rtn, weightBits, -1, false);
    p.description = "RUQuant W" + std::to_string(weightBits) + "A" + std::to_string(actBits) +
                    (finetuneEpochs > 0 ? " + fine-tune" : "");
    if (weightBits <= 4) p.defaults.clip = 0.8; // swc
    ActivationPlan& a = p.activation;
    a.hasActivations = a.hasKv = a.hasTransform = true;
    a.defaults.bits = actBits;
    a.defaults.clip = actBits <= 4 ? 0.9 : 1.0; // lac
    a.kvBits = a.qBits = actBits;
    a.smoothAlpha = 0.6;
    a.rotate = PlanRotation::Ruquant;
    a.ruquant.finetuneEpochs = finetuneEpochs;
    return p;
}

namespace {

// The type a row of `cols` elements is stored in when `type` is asked for: itself, llama.cpp's
// K-quant fallback, or nothing ("" with the reason in *why).
std::string typeForRow(const std::string& type, std::int64_t cols, std::string* why)
{
    const quant::ContainerSpec* spec = quant::findContainerSpec(type);
    if (!spec || cols % spec->blockSize == 0) return type;
    const quant::ContainerSpec* fb = quant::containerRowFallback(*spec);
    if (fb && cols % fb->blockSize == 0) return fb->name;
    *why = "a row of " + std::to_string(cols) + " elements fits no " + type + " block (" +
           std::to_string(spec->blockSize) + " elements" + (fb ? std::string(", nor its fallback ") + fb->name : "") +
           ")";
    return "";
}

// CMPQ budgets: every cmpq tensor must afford its lowest level with codebooks and outliers; the
// ones with plan scope asking for the same average share it (water-filling over the minimums).
Status shareCmpqBudgets(std::vector<TensorPlan>& tensors, const std::vector<bool>& tensorScope)
{
    std::map<double, std::vector<std::size_t>> shared; // asked average -> tensors
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        const TensorPlan& tp = tensors[i];
        if (tp.skip || tp.method != quant::Method::Cmpq) continue;
        const double minimum = quant::cmpqMinimumBitsPerWeight(tp.rows, tp.cols, tp.cmpq);
        if (tensorScope[i]) {
            if (minimum > tp.cmpq.bits + 1e-12)
                return planError("cmpq: " + std::to_string(tp.cmpq.bits) +
                                     " bits/weight is below this tensor's "
                                     "minimum of " +
                                     std::to_string(minimum) + " (lowest level, F16 codebooks of " +
                                     std::to_string(tp.rows) + "-weight channels, outliers)",
                                 tp.name);
        } else {
            shared[tp.cmpq.bits].push_back(i);
        }
    }
    for (const auto& [avg, members] : shared) {
        std::vector<std::pair<double, double>> mins; // (minimum, weights)
        double n = 0, need = 0;
        for (std::size_t i : members) {
            const TensorPlan& tp = tensors[i];
            const double w = double(tp.rows * tp.cols);
            mins.emplace_back(quant::cmpqMinimumBitsPerWeight(tp.rows, tp.cols, tp.cmpq), w);
            n += w;
            need += mins.back().first * w;
        }
        if (need > avg * n * (1 + 1e-12))
            return planError("cmpq: an average of " + std::to_string(avg) + " bits/weight is below the minimum of " +
                                 std::to_string(need / n) +
                                 " for these tensors (lowest level, F16 codebooks, outliers); "
                                 "raise the bits, lower the outlier budgets or add a lower level",
                             tensors[members.front()].name);
        // x with sum w * max(min, x) = avg * n: tensors whose minimum is above x are held at it,
        // taken from the largest minimum down.
        std::sort(mins.begin(), mins.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
        double fixedBits = 0, fixedW = 0, x = avg;
        for (const auto& [minimum, w] : mins) {
            x = n - fixedW > 0 ? (avg * n - fixedBits) / (n - fixedW) : avg;
            if (minimum <= x) break;
            fixedBits += minimum * w;
            fixedW += w;
        }
        for (std::size_t i : members) {
            TensorPlan& tp = tensors[i];
            tp.cmpq.bits = std::max(quant::cmpqMinimumBitsPerWeight(tp.rows, tp.cols, tp.cmpq), x);
            tp.bitsPerWeight = tp.cmpq.bits;
        }
    }
    return {};
}

} // namespace

Result<ResolvedPlan> resolveQuantPlan(const QuantPlan& plan, const ModelConfig& config)
{
    if (!plan.defaults.method) return planError("the plan's default has no method", "plan");
    ResolvedPlan out;
    out.activation = plan.activation;
    std::vector<int> ruleHits(plan.rules.size(), 0);
    double bitsTotal = 0;
    std::map<std::string, std::int64_t> requested;                        // container -> params asked for
    std::map<std::pair<std::string, std::string>, std::int64_t> fellBack; // (asked, stored) -> tensors
    std::vector<bool> cmpqTensorScope; // per tensor: a cmpq tensor that meets its average alone
    for (const Target& t : planTargets(config)) {
        PlanSettings s = plan.defaults;
        // Where bits and target were last set (0: default, i + 1: rule i): a target overrides
        // bits set before it, but bits set with it or after it must agree.
        int bitsFrom = s.bits ? 0 : -1, targetFrom = s.target ? 0 : -1;
        for (std::size_t i = 0; i < plan.rules.size(); ++i)
            if (planPatternMatches(plan.rules[i].match, t.name)) {
                if (plan.rules[i].settings.bits) bitsFrom = int(i) + 1;
                if (plan.rules[i].settings.target) targetFrom = int(i) + 1;
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
        if (s.clip) o.grid.clip = *s.clip;
        const std::string target = s.target.value_or("none");
        const quant::ContainerSpec* spec = quant::findContainerSpec(target);
        if (target == "gptq") {
            tp.target = target;
            out.gptqTargets = true;
            o.grid.gptqStorage = true;
        } else if (target != "none") {
            tp.target = target;
            out.ggufTargets = true;
        }
        if (out.gptqTargets && out.ggufTargets)
            return planError("a plan stores into one kind of file: GGUF types or gptq, not both", t.name);
        if (isPlainTarget(target)) tp.skip = true; // stored unquantized in that type
        if (spec && !tp.skip) {
            if (s.bits && bitsFrom >= targetFrom && *s.bits != spec->bits)
                return planError("bits " + std::to_string(*s.bits) + " conflicts with target " + target +
                                     ", which stores " + std::to_string(spec->bits) +
                                     "-bit codes (drop \"bits\" or choose a target with " + std::to_string(*s.bits) +
                                     "-bit codes)",
                                 t.name);
            requested[target] += t.rows * t.cols;
            std::string why;
            const std::string stored = typeForRow(target, t.cols, &why);
            if (stored.empty()) return planError(why + "; choose target F16 or skip this tensor", t.name);
            if (stored != target) {
                ++fellBack[{target, stored}];
                tp.targetNote = "row length " + std::to_string(t.cols) + " is not a multiple of " +
                                std::to_string(spec->blockSize) + ": " + target + " falls back to " + stored +
                                " (as llama.cpp)";
                tp.target = stored;
                spec = quant::findContainerSpec(stored);
            }
            o.grid = quant::GridSpec{spec->bits, spec->subBlock, !spec->hasMin};
            o.groups = quant::GroupMode::Static;
        } else if (!tp.skip) {
            if (o.grid.sym && !traits.supportsSym)
                return planError(std::string(traits.id) + " has no symmetric grid (its zero-point is real-valued); "
                                                          "remove \"sym\": true",
                                 t.name);
            if (o.init == quant::GridInit::Neuqi && o.groups == quant::GroupMode::Dynamic)
                return planError("neuqi needs static groups (\"static_groups\": true)", t.name);
            if (o.grid.clip != 1.0 && (o.init != quant::GridInit::MinMax || tp.method == quant::Method::Cmpq))
                return planError(std::string(traits.id) + " chooses its own range; \"clip\" applies to the Min-Max "
                                                          "grids of rtn and gptq",
                                 t.name);
        }
        if (spec && !tp.skip && s.clip && *s.clip != 1.0)
            return planError("a storage target fixes the grid; \"clip\" needs the free grid (target none or gptq)",
                             t.name);
        if (s.avgBits && !traits.fractionalBits && !tp.skip)
            return planError(std::string(traits.id) + " takes integer bits (2..8); a fractional average (" +
                                 std::to_string(*s.avgBits) + ") needs a method that allocates bits per channel: cmpq",
                             t.name);
        if (tp.method == quant::Method::Cmpq && !tp.skip) {
            if (!tp.target.empty())
                return planError("cmpq stores per-channel codebooks, which no GGUF type or GPTQ checkpoint can hold; "
                                 "drop the storage target (the result goes to .qbproj or fake-quantized safetensors)",
                                 t.name);
            quant::CmpqOptions& c = tp.cmpq;
            c = quant::defaultCmpqOptions();
            if (s.avgBits) c.bits = *s.avgBits;
            else if (s.bits) c.bits = *s.bits;
            if (s.levels) c.levels = *s.levels;
            if (s.score) c.score = *s.score;
            if (s.kmeans) c.uniformLevels = !*s.kmeans;
            if (s.energyWeights)
                c.weights = *s.energyWeights ? quant::CmpqWeights::Energy : quant::CmpqWeights::Uniform;
            if (s.actOutliers) c.actOutliers = *s.actOutliers;
            if (s.quantOutliers) c.quantOutliers = *s.quantOutliers;
            if (s.errorFeedback) c.errorFeedback = *s.errorFeedback;
            if (s.staticCodebooks) c.staticCodebooks = *s.staticCodebooks;
            if (s.blockSize) c.blockSize = *s.blockSize;
            if (s.damping) c.damping = *s.damping;
            if (!(c.bits >= 1.0 && c.bits <= 8.0))
                return planError("average bits " + std::to_string(c.bits) + " out of range [1, 8]", t.name);
            if (Status st = quant::validateCmpqOptions(c); !st.ok()) return planError(st.error().message, t.name);
            o.grid.bits = c.levels.back();
            cmpqTensorScope.push_back(s.tensorScope.value_or(false));
        } else {
            cmpqTensorScope.push_back(false);
        }
        tp.options = o;
        if (tp.skip)
            tp.bitsPerWeight = isPlainTarget(target) ? ggufTypeBitsPerWeight(target) : double(kUnquantizedBits);
        else if (spec) tp.bitsPerWeight = spec->bitsPerWeight();
        else if (tp.method == quant::Method::Cmpq) tp.bitsPerWeight = tp.cmpq.bits;
        else tp.bitsPerWeight = quant::bitsPerWeightUniform(o.grid.bits, o.grid.groupSize, int(t.cols), o.grid.sym);
        out.tensors.push_back(std::move(tp));
    }
    QB_TRY_STATUS(shareCmpqBudgets(out.tensors, cmpqTensorScope));
    for (const TensorPlan& tp : out.tensors) {
        const std::int64_t n = tp.rows * tp.cols;
        out.linearParams += n;
        if (!tp.skip) out.quantizedParams += n;
        bitsTotal += tp.bitsPerWeight * double(n);
        out.linearBytes += std::uint64_t(std::ceil(tp.bitsPerWeight * double(n) / 8.0));
    }
    for (std::size_t i = 0; i < plan.rules.size(); ++i)
        if (ruleHits[i] == 0)
            out.warnings.push_back({"unmatched-rule", "rule " + std::to_string(i) + " (\"" + plan.rules[i].match +
                                                          "\") matches no tensor"});
    for (const auto& [pair, count] : fellBack)
        out.warnings.push_back({"target-fallback", std::to_string(count) + " tensor" + (count == 1 ? "" : "s") +
                                                       " with rows that are not a multiple of 256 store " + pair.first +
                                                       " as " + pair.second + " (as llama.cpp)"});
    out.bitsPerWeight = out.linearParams > 0 ? bitsTotal / double(out.linearParams) : 0.0;
    out.sizeBytes = out.linearBytes + std::uint64_t(otherParams(config)) * (kUnquantizedBits / 8);
    if (out.gptqTargets) { // GPTQ checkpoints store the embedding and head in F16, as the ecosystem does
        out.embedType = out.headType = "F16";
        out.sizeBytes = out.linearBytes + std::uint64_t(otherParams(config)) * 2;
    }
    if (out.ggufTargets) {
        // llama.cpp's Q4_K_M choices: the embedding in the most common type, the head in Q6_K.
        std::string dominant = "F16";
        std::int64_t most = 0;
        for (const auto& [type, params] : requested)
            if (params > most) most = params, dominant = type;
        const std::string embedAsk = plan.embedType.value_or(dominant);
        const std::string headAsk =
            plan.headType.value_or(dominant == "Q8_0" ? "Q8_0" : (quant::findContainerSpec(dominant) ? "Q6_K" : "F16"));
        std::string why;
        out.embedType = typeForRow(embedAsk, config.hiddenSize, &why);
        if (out.embedType.empty()) return planError(why, "embed_type");
        out.headType = typeForRow(headAsk, config.hiddenSize, &why);
        if (out.headType.empty()) return planError(why, "head_type");
        const std::array<std::array<std::string, 3>, 2> chosen{
            {{"token embedding", embedAsk, out.embedType}, {"output head", headAsk, out.headType}}};
        for (const auto& [what, asked, stored] : chosen)
            if (asked != stored)
                out.warnings.push_back({"target-fallback", what + ": " + asked + " stored as " + stored + " (rows of " +
                                                               std::to_string(config.hiddenSize) + ")"});
        const double table = double(config.vocabSize * config.hiddenSize);
        double bytes = table * ggufTypeBitsPerWeight(out.embedType) / 8.0;
        if (!config.tieWordEmbeddings) bytes += table * ggufTypeBitsPerWeight(out.headType) / 8.0;
        const std::int64_t small = otherParams(config) - config.vocabSize * config.hiddenSize *
                                                             (config.tieWordEmbeddings ? 1 : 2); // norms, biases
        out.sizeBytes = out.linearBytes + std::uint64_t(std::ceil(bytes)) + std::uint64_t(small) * 4;
    }
    return out;
}

std::string describeQuantPlan(const QuantPlan& plan)
{
    const PlanSettings& d = plan.defaults;
    const quant::Method m = d.method.value_or(quant::Method::Rtn);
    std::string s;
    if (d.skip.value_or(false)) s = "skip";
    else if (d.target && *d.target != "none") s = std::string(quant::methodTraits(m).name) + " " + *d.target;
    else {
        if (d.avgBits || m == quant::Method::Cmpq) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%g", d.avgBits.value_or(double(d.bits.value_or(3))));
            s = std::string(quant::methodTraits(m).name) + " " + buf + " bpw";
            if (!plan.rules.empty())
                s += " +" + std::to_string(plan.rules.size()) + (plan.rules.size() == 1 ? " rule" : " rules");
            if (const std::string a = plan.activation.describe(); !a.empty()) s += " " + a;
            return s;
        }
        s = std::string(quant::methodTraits(m).name) + " " + std::to_string(d.bits.value_or(4)) + "b";
        const int g = d.groupSize.value_or(int(quant::methodParamDefault(m, "group_size").value_or(-1)));
        s += g > 0 ? " g" + std::to_string(g) : std::string(" per-ch");
        if (d.sym.value_or(false)) s += " sym";
        if (d.target == "gptq") s += " (GPTQ storage)";
    }
    if (!plan.rules.empty())
        s += " +" + std::to_string(plan.rules.size()) + (plan.rules.size() == 1 ? " rule" : " rules");
    if (const std::string a = plan.activation.describe(); !a.empty()) s += " " + a;
    return s;
}

} // namespace qb::pipeline
