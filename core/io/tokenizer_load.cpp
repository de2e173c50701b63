// Tokenizer loading: tokenizer.json (and tokenizer_config.json beside it) read with io::JsonValue
// into the pipeline of tokenizer_detail.h. Everything is checked here so that encode() and
// decode() cannot fail: a component or regex construct we do not implement is refused with
// ErrorCode::Unsupported, a malformed one with ErrorCode::Format, and so are files that would
// cost unbounded memory (ids far from dense, text-rewriting chains that grow text geometrically).
// Optional members are read leniently: missing, null or of another type reads as the default.
// Threading: a pure function of its inputs; the result is immutable.

#include "io/tokenizer_detail.h"

#include "io/json_value.h"

#include <algorithm>
#include <climits>
#include <cstdio>

namespace qb::io::detail {

namespace {

Error unsupported(const std::string& what, const std::string& name)
{
    return makeError(ErrorCode::Unsupported, what, name);
}
Error format(const std::string& what, const std::string& name) { return makeError(ErrorCode::Format, what, name); }

// Lenient member reads, as the loader always had them (QJsonValue's): a member that is missing,
// null or of another type reads as the default; an absent object reads as an empty one.
const JsonValue kAbsent;

const JsonValue& member(const JsonValue& o, std::string_view key)
{
    const JsonValue* v = o.find(key); // nullptr when o is not an object
    return v ? *v : kAbsent;
}
std::string str(const JsonValue& v) { return v.isString() ? v.asString() : std::string(); }
bool flag(const JsonValue& v, bool dflt) { return v.isBool() ? v.asBool() : dflt; }
std::int64_t integer(const JsonValue& v, std::int64_t dflt) { return v.isInteger() ? v.asInteger() : dflt; }
int smallInteger(const JsonValue& v, int dflt)
{
    const std::int64_t i = integer(v, dflt);
    return i >= INT_MIN && i <= INT_MAX ? int(i) : dflt;
}
const JsonArray& array(const JsonValue& v)
{
    static const JsonArray empty;
    return v.isArray() ? v.asArray() : empty;
}

struct Loader {
    std::string name;
    TokenizerImpl& t;

    Status normalizer(const JsonValue& o)
    {
        if (o.isNull()) return {};
        const std::string type = str(member(o, "type"));
        using T = NormalizerStep::Type;
        if (type == "Sequence") {
            for (const JsonValue& c : array(member(o, "normalizers")))
                QB_TRY_STATUS(normalizer(c));
        } else if (type == "NFC") {
            t.normalizers.push_back({T::Nfc, {}, {}});
        } else if (type == "NFD") {
            t.normalizers.push_back({T::Nfd, {}, {}});
        } else if (type == "NFKC") {
            t.normalizers.push_back({T::Nfkc, {}, {}});
        } else if (type == "NFKD") {
            t.normalizers.push_back({T::Nfkd, {}, {}});
        } else if (type == "Lowercase") {
            t.normalizers.push_back({T::Lowercase, {}, {}});
        } else if (type == "Prepend") {
            t.normalizers.push_back({T::Prepend, str(member(o, "prepend")), {}});
        } else if (type == "Strip") {
            NormalizerStep s{T::Strip, {}, {}};
            s.left = flag(member(o, "strip_left"), true);
            s.right = flag(member(o, "strip_right"), true);
            t.normalizers.push_back(s);
        } else if (type == "Replace") {
            const JsonValue& pat = member(o, "pattern");
            if (!pat.find("String"))
                return unsupported("Replace normalizer with a regex pattern is not supported: " + toJsonText(pat, -1),
                                   name);
            t.normalizers.push_back({T::Replace, str(member(pat, "String")), str(member(o, "content"))});
        } else {
            return unsupported("normalizer type '" + type + "' is not supported", name);
        }
        return {};
    }

    static Result<SplitBehavior> behavior(const std::string& b, const std::string& name)
    {
        if (b == "Removed") return SplitBehavior::Removed;
        if (b == "Isolated") return SplitBehavior::Isolated;
        if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
        if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
        if (b == "Contiguous") return SplitBehavior::Contiguous;
        return format("unknown Split behavior '" + b + "'", name);
    }

    Status preTokenizer(const JsonValue& o)
    {
        if (o.isNull()) return {};
        const std::string type = str(member(o, "type"));
        using T = PreTokStep::Type;
        if (type == "Sequence") {
            for (const JsonValue& c : array(member(o, "pretokenizers")))
                QB_TRY_STATUS(preTokenizer(c));
        } else if (type == "ByteLevel") {
            PreTokStep s{T::ByteLevel};
            s.addPrefixSpace = flag(member(o, "add_prefix_space"), true);
            s.useRegex = flag(member(o, "use_regex"), true);
            t.preTokenizers.push_back(s);
        } else if (type == "Split") {
            PreTokStep s{T::SplitString};
            const JsonValue& pat = member(o, "pattern");
            if (const JsonValue* regex = pat.find("Regex")) {
                const std::string re = str(*regex);
                auto program = compileSplitRegex(re);
                if (!program) return makeError(program.error().code, program.error().message, name);
                s.type = T::SplitRegex;
                s.regex = std::move(*program);
                s.handCoded = recogniseHandCodedRegex(re);
            } else if (const JsonValue* string = pat.find("String")) {
                s.pattern = str(*string);
            } else {
                return format("Split pre-tokenizer without a pattern", name);
            }
            QB_TRY(b, behavior(str(member(o, "behavior")), name));
            s.behavior = *b;
            s.invert = flag(member(o, "invert"), false);
            t.preTokenizers.push_back(s);
        } else if (type == "Metaspace") {
            PreTokStep s{T::Metaspace};
            s.pattern = replacement(o);
            QB_TRY(sch, prependScheme(o));
            s.prepend = *sch;
            s.split = flag(member(o, "split"), true);
            t.preTokenizers.push_back(s);
        } else {
            return unsupported("pre_tokenizer type '" + type + "' is not supported", name);
        }
        return {};
    }

    // Metaspace (pre-tokenizer and decoder)
    static std::string replacement(const JsonValue& o)
    {
        const JsonValue* r = o.find("replacement");
        return r ? str(*r) : "\u2581";
    }
    Result<PrependScheme> prependScheme(const JsonValue& o)
    {
        if (const JsonValue* scheme = o.find("prepend_scheme")) {
            const std::string p = str(*scheme);
            if (p == "first") return PrependScheme::First;
            if (p == "always") return PrependScheme::Always;
            if (p == "never") return PrependScheme::Never;
            return format("unknown Metaspace prepend_scheme '" + p + "'", name);
        }
        if (const JsonValue* add = o.find("add_prefix_space"); add && !flag(*add, true)) return PrependScheme::Never;
        return PrependScheme::Always;
    }

    Status decoder(const JsonValue& o)
    {
        if (o.isNull()) return {};
        t.hasDecoder = true;
        const std::string type = str(member(o, "type"));
        using T = DecoderStep::Type;
        if (type == "Sequence") {
            for (const JsonValue& c : array(member(o, "decoders")))
                QB_TRY_STATUS(decoder(c));
        } else if (type == "ByteLevel") {
            t.decoders.push_back({T::ByteLevel});
        } else if (type == "ByteFallback") {
            t.decoders.push_back({T::ByteFallback});
        } else if (type == "Fuse") {
            t.decoders.push_back({T::Fuse});
        } else if (type == "Replace") {
            const JsonValue& pat = member(o, "pattern");
            if (!pat.find("String")) return unsupported("Replace decoder with a regex pattern is not supported", name);
            t.decoders.push_back({T::Replace, str(member(pat, "String")), str(member(o, "content"))});
        } else if (type == "Strip") {
            DecoderStep s{T::Strip, str(member(o, "content")), {}};
            s.start = smallInteger(member(o, "start"), 0);
            s.stop = smallInteger(member(o, "stop"), 0);
            t.decoders.push_back(s);
        } else if (type == "Metaspace") {
            DecoderStep s{T::Metaspace};
            s.a = replacement(o);
            QB_TRY(sch, prependScheme(o));
            s.prepend = *sch;
            t.decoders.push_back(s);
        } else {
            return unsupported("decoder type '" + type + "' is not supported", name);
        }
        return {};
    }

    // Appends the ids this processor puts before and after a single sequence.
    Status postProcessor(const JsonValue& o, bool& addsSpecial)
    {
        if (o.isNull()) return {};
        const std::string type = str(member(o, "type"));
        if (type == "Sequence") {
            for (const JsonValue& c : array(member(o, "processors")))
                QB_TRY_STATUS(postProcessor(c, addsSpecial));
        } else if (type == "ByteLevel") {
            // offsets only
        } else if (type == "TemplateProcessing") {
            addsSpecial = true;
            const JsonValue& specials = member(o, "special_tokens");
            std::vector<std::int32_t> pre, post;
            bool seenA = false;
            for (const JsonValue& item : array(member(o, "single"))) {
                if (item.find("Sequence")) {
                    seenA = true;
                    continue;
                }
                const JsonValue* special = item.find("SpecialToken");
                if (!special) return format("TemplateProcessing item is neither SpecialToken nor Sequence", name);
                const std::string id = str(member(*special, "id"));
                const JsonValue* entry = specials.find(id);
                if (!entry)
                    return format("TemplateProcessing names special token '" + id + "' missing from special_tokens",
                                  name);
                for (const JsonValue& x : array(member(*entry, "ids")))
                    (seenA ? post : pre).push_back(std::int32_t(integer(x, 0)));
            }
            t.prefixIds.insert(t.prefixIds.begin(), pre.begin(), pre.end());
            t.suffixIds.insert(t.suffixIds.end(), post.begin(), post.end());
        } else if (type == "BertProcessing" || type == "RobertaProcessing") {
            addsSpecial = true;
            const JsonArray& cls = array(member(o, "cls"));
            const JsonArray& sep = array(member(o, "sep"));
            if (cls.size() != 2 || sep.size() != 2) return format(type + " without cls/sep", name);
            t.prefixIds.insert(t.prefixIds.begin(), std::int32_t(integer(cls[1], 0)));
            t.suffixIds.push_back(std::int32_t(integer(sep[1], 0)));
        } else {
            return unsupported("post_processor type '" + type + "' is not supported", name);
        }
        return {};
    }

    Status model(const JsonValue& m)
    {
        const JsonValue* typeValue = m.find("type");
        const std::string type = typeValue ? str(*typeValue) : "BPE";
        if (type != "BPE") return unsupported("tokenizer model type '" + type + "' is not supported (BPE only)", name);
        const JsonValue& dropout = member(m, "dropout");
        if (dropout.isNumber() && dropout.asNumber() != 0.0) return unsupported("BPE dropout is not supported", name);
        const JsonValue& vocab = member(m, "vocab");
        if (!vocab.isObject() || vocab.asObject().empty()) return format("model.vocab is missing or empty", name);
        t.vocab.reserve(vocab.asObject().size());
        for (const JsonMember& e : vocab.asObject()) {
            if (!e.value.isNumber()) return format("model.vocab entry '" + e.key + "' has no id", name);
            const std::int64_t id = integer(e.value, -1);
            if (id < 0 || id > INT32_MAX) return format("model.vocab id out of range for '" + e.key + "'", name);
            t.vocab.emplace(e.key, std::int32_t(id)); // keys are unique: the parser refuses repeats
        }
        t.continuingPrefix = str(member(m, "continuing_subword_prefix"));
        t.endOfWordSuffix = str(member(m, "end_of_word_suffix"));
        t.fuseUnk = flag(member(m, "fuse_unk"), false);
        t.byteFallback = flag(member(m, "byte_fallback"), false);
        t.ignoreMerges = flag(member(m, "ignore_merges"), false);
        if (const JsonValue& unk = member(m, "unk_token"); unk.isString()) {
            auto it = t.vocab.find(unk.asString());
            if (it != t.vocab.end()) t.unkId = it->second;
        }
        for (int b = 0; b < 256; ++b) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "<0x%02X>", b);
            auto it = t.vocab.find(std::string_view(buf));
            t.byteTokenIds[b] = it == t.vocab.end() ? -1 : it->second;
        }

        const JsonArray& merges = array(member(m, "merges"));
        t.mergeList.reserve(merges.size());
        t.merges.reserve(merges.size());
        std::int32_t rank = 0;
        std::string merged; // reused: most merges fit its capacity
        for (const JsonValue& mv : merges) {
            std::string_view a, b;
            if (mv.isString()) {
                const std::string_view line = mv.asString();
                if (line.starts_with("#version")) continue;
                const std::size_t sp = line.find(' ');
                if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
                    return format(
                        "merge " + std::to_string(rank) + " is not \"left right\": '" + std::string(line) + "'", name);
                a = line.substr(0, sp);
                b = line.substr(sp + 1);
            } else if (mv.isArray() && mv.asArray().size() == 2) {
                const JsonArray& pair = mv.asArray(); // a non-string part reads as the empty token
                a = pair[0].isString() ? std::string_view(pair[0].asString()) : std::string_view();
                b = pair[1].isString() ? std::string_view(pair[1].asString()) : std::string_view();
            } else {
                return format("merge " + std::to_string(rank) + " is neither a string nor a pair", name);
            }
            auto ia = t.vocab.find(a), ib = t.vocab.find(b);
            merged.assign(a);
            if (!t.continuingPrefix.empty() && b.starts_with(t.continuingPrefix))
                merged.append(b.substr(t.continuingPrefix.size()));
            else merged.append(b);
            auto im = t.vocab.find(merged);
            if (ia == t.vocab.end() || ib == t.vocab.end() || im == t.vocab.end())
                return format("merge " + std::to_string(rank) + " ('" + std::string(a) + "' '" + std::string(b) +
                                  "') uses a token missing from the vocabulary",
                              name);
            const std::uint64_t key = (std::uint64_t(std::uint32_t(ia->second)) << 32) | std::uint32_t(ib->second);
            t.merges.insert_or_assign(key, std::make_pair(rank, im->second));
            t.mergeList.emplace_back(a, b);
            ++rank;
        }
        return {};
    }
};

std::optional<std::string> configToken(const JsonValue& cfg, const char* key)
{
    const JsonValue& v = member(cfg, key);
    if (v.isString()) return v.asString();
    if (const JsonValue& content = member(v, "content"); content.isString()) return content.asString();
    return std::nullopt;
}

Result<JsonValue> parseObject(std::string_view json, const std::string& name)
{
    // The Rust crate reads tokenizer.json as a Rust string, which must be UTF-8: parseJson refuses
    // anything else.
    auto doc = parseJson(json, name);
    if (!doc) return makeError(ErrorCode::Format, "not valid JSON: " + doc.error().message, doc.error().context);
    if (!doc->isObject()) return format("JSON top level is not an object", name);
    return std::move(*doc);
}

// Normalizers, pre-tokenizers and decoders rewrite text, and a file can chain rewrites that grow
// it geometrically (64 Replace steps that each double every space). encode()/decode() cannot
// fail, so such a chain is refused when the file is loaded: the worst case of each chain,
// output <= factor * input + added bytes, must stay within these limits. Real tokenizers stay
// far below them (Prepend "▁" + Replace " " -> "▁": factor 3, 3 bytes added).
constexpr double kMaxTextGrowthFactor = 1024;
constexpr double kMaxTextGrowthAdded = 1 << 20;

struct TextGrowth {
    double factor = 1, added = 0;
    bool rewritten = false; // a Replace/Prepend ran: Unicode steps may now meet new text

    void scale(double f)
    {
        factor *= f;
        added *= f;
    }
    void replace(const std::string& from, const std::string& to)
    {
        if (from.empty()) return;
        if (to.size() > from.size()) scale(double(to.size()) / double(from.size()));
        rewritten = true;
    }
    void prepend(const std::string& p)
    {
        added += double(p.size());
        rewritten = true;
    }
    // Unicode normalization, case mapping and UTF-8 repair expand a code point a bounded number
    // of times (NFKD: up to 18 code points); repeated on unchanged text they expand nothing.
    void unicode(double worst)
    {
        if (rewritten) scale(worst);
    }
    bool ok() const { return factor <= kMaxTextGrowthFactor && added <= kMaxTextGrowthAdded; }
};

Status checkTextGrowth(const TokenizerImpl& t, const std::string& name)
{
    auto refuse = [&](const char* what, const TextGrowth& g) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s can grow a text %.3g-fold plus %.3g bytes (limit %g-fold plus %g)", what,
                      g.factor, g.added, kMaxTextGrowthFactor, kMaxTextGrowthAdded);
        return format(buf, name);
    };
    TextGrowth g;
    for (const NormalizerStep& n : t.normalizers) {
        using T = NormalizerStep::Type;
        switch (n.type) {
        case T::Nfc:
        case T::Nfd: g.unicode(4); break;
        case T::Nfkc:
        case T::Nfkd: g.unicode(18); break;
        case T::Lowercase: g.unicode(3); break;
        case T::Prepend: g.prepend(n.a); break;
        case T::Replace: g.replace(n.a, n.b); break;
        case T::Strip: break;
        }
        if (!g.ok()) return refuse("the normalizer chain", g);
    }
    for (const PreTokStep& p : t.preTokenizers)
        if (p.type == PreTokStep::Type::Metaspace) {
            g.replace(" ", p.pattern);
            g.prepend(p.pattern);
            if (!g.ok()) return refuse("the normalizer and pre-tokenizer chain", g);
        }
    TextGrowth d;
    for (const DecoderStep& s : t.decoders) {
        using T = DecoderStep::Type;
        if (s.type == T::Replace) d.replace(s.a, s.b);
        if (s.type == T::ByteLevel || s.type == T::ByteFallback) d.unicode(3);
        if (!d.ok()) return refuse("the decoder chain", d);
    }
    return {};
}

} // namespace

Result<std::shared_ptr<const TokenizerImpl>> loadTokenizer(std::string_view json, std::string_view configJson,
                                                           const std::string& name)
{
    QB_TRY(root, parseObject(json, name));
    JsonValue cfg; // null: every member reads as absent
    if (!configJson.empty()) {
        QB_TRY(c, parseObject(configJson, name + " (tokenizer_config.json)"));
        cfg = std::move(*c);
    }
    return loadTokenizerDocument(*root, cfg, name);
}

Result<std::shared_ptr<const TokenizerImpl>> loadTokenizerDocument(const JsonValue& root, const JsonValue& cfg,
                                                                   const std::string& name)
{
    if (!root.isObject()) return format("JSON top level is not an object", name);
    auto impl = std::make_shared<TokenizerImpl>();
    TokenizerImpl& t = *impl;
    t.name = name;
    Loader ld{name, t};
    const JsonValue& model = member(root, "model");
    if (!model.isObject()) return format("no \"model\" object", name);
    QB_TRY_STATUS(ld.model(model));
    QB_TRY_STATUS(ld.normalizer(member(root, "normalizer")));
    QB_TRY_STATUS(ld.preTokenizer(member(root, "pre_tokenizer")));
    QB_TRY_STATUS(ld.decoder(member(root, "decoder")));
    QB_TRY_STATUS(checkTextGrowth(t, name));
    bool processorAdds = false;
    QB_TRY_STATUS(ld.postProcessor(member(root, "post_processor"), processorAdds));

    // added tokens
    std::vector<AddedToken> raw, normalized;
    for (const JsonValue& o : array(member(root, "added_tokens"))) {
        AddedToken a;
        a.content = str(member(o, "content"));
        const std::int64_t id = integer(member(o, "id"), -1);
        if (id < 0 || id > INT32_MAX || a.content.empty())
            return format("added token without a valid id or content: '" + a.content + "'", name);
        a.id = std::int32_t(id);
        a.special = flag(member(o, "special"), false);
        a.normalized = flag(member(o, "normalized"), !a.special);
        a.lstrip = flag(member(o, "lstrip"), false);
        a.rstrip = flag(member(o, "rstrip"), false);
        a.singleWord = flag(member(o, "single_word"), false);
        t.addedTokens.push_back(a);
        if (a.normalized) {
            AddedToken n = a;
            n.content = t.normalize(a.content);
            if (!n.content.empty()) normalized.push_back(std::move(n));
        } else {
            raw.push_back(a);
        }
    }
    t.rawAdded = buildAddedMatcher(std::move(raw));
    t.normalizedAdded = buildAddedMatcher(std::move(normalized));

    // id table
    std::int64_t maxId = -1;
    for (const auto& [s, id] : t.vocab)
        maxId = std::max<std::int64_t>(maxId, id);
    for (const AddedToken& a : t.addedTokens)
        maxId = std::max<std::int64_t>(maxId, a.id);
    constexpr std::int64_t kMaxVocab = std::int64_t(1) << 24; // far above any real vocabulary
    if (maxId >= kMaxVocab) return format("token id " + std::to_string(maxId) + " is implausibly large", name);
    // The id table is dense: a few tokens with huge ids would cost gigabytes for a tiny file.
    const std::int64_t tokens = std::int64_t(t.vocab.size() + t.addedTokens.size());
    if (maxId > 2 * tokens + 65536)
        return format("token id " + std::to_string(maxId) + " is implausibly large for " + std::to_string(tokens) +
                          " tokens (ids must be nearly dense)",
                      name);
    t.idToToken.assign(std::size_t(maxId + 1), {});
    t.idPresent.assign(std::size_t(maxId + 1), 0);
    t.idSpecial.assign(std::size_t(maxId + 1), 0);
    // Two spellings may share an id (the Rust crate keeps whichever its hash map yields last):
    // the first in the file names it, so vocabulary() does not depend on hashing.
    for (const JsonMember& e : member(model, "vocab").asObject()) {
        const auto id = std::size_t(e.value.asInteger()); // checked by Loader::model
        if (t.idPresent[id]) continue;
        t.idToToken[id] = e.key;
        t.idPresent[id] = 1;
    }
    for (const AddedToken& a : t.addedTokens) {
        t.idToToken[std::size_t(a.id)] = a.content;
        t.idPresent[std::size_t(a.id)] = 1;
        t.idSpecial[std::size_t(a.id)] = a.special ? 1 : 0;
    }
    for (std::int32_t id : t.prefixIds)
        if (id < 0 || id > maxId) return format("post_processor uses unknown id " + std::to_string(id), name);
    for (std::int32_t id : t.suffixIds)
        if (id < 0 || id > maxId) return format("post_processor uses unknown id " + std::to_string(id), name);

    // kind
    t.kind = Tokenizer::Kind::SentencePieceBpe;
    for (const PreTokStep& s : t.preTokenizers)
        if (s.type == PreTokStep::Type::ByteLevel) t.kind = Tokenizer::Kind::ByteLevelBpe;
    for (const DecoderStep& s : t.decoders)
        if (s.type == DecoderStep::Type::ByteLevel) t.kind = Tokenizer::Kind::ByteLevelBpe;

    // special ids: tokenizer_config.json first, then the template, then well-known names
    auto resolve = [&](const char* key) -> std::optional<std::int32_t> {
        if (auto s = configToken(cfg, key)) return t.lookup(*s);
        return std::nullopt;
    };
    t.bosId = resolve("bos_token");
    t.eosId = resolve("eos_token");
    t.padId = resolve("pad_token");
    if (auto u = resolve("unk_token"); u && !t.unkId) t.unkId = u;
    if (!t.bosId && !t.prefixIds.empty()) t.bosId = t.prefixIds.front();
    if (!t.eosId && !t.suffixIds.empty()) t.eosId = t.suffixIds.back();
    if (!t.bosId)
        for (const char* s : {"<s>", "<|begin_of_text|>"})
            if ((t.bosId = t.lookup(s))) break;
    if (!t.eosId)
        for (const char* s : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>"})
            if ((t.eosId = t.lookup(s))) break;
    if (!processorAdds) {
        if (flag(member(cfg, "add_bos_token"), false) && t.bosId) t.prefixIds.push_back(*t.bosId);
        if (flag(member(cfg, "add_eos_token"), false) && t.eosId) t.suffixIds.push_back(*t.eosId);
    }
    return std::shared_ptr<const TokenizerImpl>(std::move(impl));
}

} // namespace qb::io::detail
