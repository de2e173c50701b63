// Tokenizer: loading tokenizer.json, encode and decode (see tokenizer.h). The semantics follow
// the Rust `tokenizers` crate (AddedVocabulary, BPE::merge_word / Word::merge_all, the
// normalizers, pre-tokenizers, post-processors and decoders named in FORMATS.md §3).

#include "io/tokenizer.h"

#include "io/tokenizer_detail.h"

#include "io/json_value.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QString>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <queue>

namespace qb::io {

using namespace detail;

namespace {

Error unsupported(const std::string& what, const std::string& name)
{
    return makeError(ErrorCode::Unsupported, what, name);
}
Error format(const std::string& what, const std::string& name)
{
    return makeError(ErrorCode::Format, what, name);
}

// ---- string helpers ----

void replaceAll(std::string& s, std::string_view from, std::string_view to)
{
    if (from.empty()) return;
    std::string out;
    std::size_t pos = 0;
    for (;;) {
        const std::size_t hit = s.find(from, pos);
        if (hit == std::string::npos) break;
        out.append(s, pos, hit - pos);
        out.append(to);
        pos = hit + from.size();
    }
    if (pos == 0) return;
    out.append(s, pos, std::string::npos);
    s = std::move(out);
}

bool startsWith(std::string_view s, std::string_view p)
{
    return s.substr(0, p.size()) == p;
}

bool isAscii(std::string_view s)
{
    return std::all_of(s.begin(), s.end(), [](char c) { return (unsigned char)c < 0x80; });
}

// Rust's char::is_alphanumeric plus '_' (AddedVocabulary's word boundary test).
bool isWordChar(char32_t c)
{
    return c == '_' || isLetter(c) || isNumber(c);
}

char32_t lastCodePoint(std::string_view s)
{
    std::size_t i = s.size();
    while (i > 0 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80)
        --i;
    if (i > 0) --i;
    return decodeUtf8(s, i).cp;
}

// ---- added tokens ----

AddedMatcher buildMatcher(std::vector<AddedToken> tokens)
{
    AddedMatcher m;
    m.tokens = std::move(tokens);
    for (std::size_t i = 0; i < m.tokens.size(); ++i) {
        if (m.tokens[i].content.empty()) continue;
        m.byFirstByte[static_cast<unsigned char>(m.tokens[i].content[0])].push_back(int(i));
    }
    for (auto& bucket : m.byFirstByte)
        std::stable_sort(bucket.begin(), bucket.end(), [&](int a, int b) {
            return m.tokens[a].content.size() > m.tokens[b].content.size();
        });
    return m;
}

struct Fragment {
    std::size_t begin, end;
    std::int32_t id; // -1: plain text
};

// AddedVocabulary::find_matches: leftmost-longest, non-overlapping; single_word, lstrip and
// rstrip as in the Rust crate.
void splitOnAdded(const AddedMatcher& m, std::string_view s, std::vector<Fragment>& out)
{
    if (m.empty()) {
        out.push_back({0, s.size(), -1});
        return;
    }
    std::size_t startOffset = 0;
    std::size_t i = 0;
    while (i < s.size()) {
        const auto& bucket = m.byFirstByte[static_cast<unsigned char>(s[i])];
        const AddedToken* hit = nullptr;
        for (int k : bucket) {
            const std::string& c = m.tokens[k].content;
            if (s.compare(i, c.size(), c) == 0) {
                hit = &m.tokens[k];
                break;
            }
        }
        if (!hit) {
            ++i;
            continue;
        }
        std::size_t start = i, stop = i + hit->content.size();
        i = stop; // the search resumes after the match, even when it is rejected below
        if (hit->singleWord) {
            const bool startOk = start == 0 || !isWordChar(lastCodePoint(s.substr(0, start)));
            const bool stopOk = stop == s.size() || !isWordChar(decodeUtf8(s, stop).cp);
            if (!startOk || !stopOk) continue;
        }
        if (hit->lstrip) {
            std::size_t ns = start;
            while (ns > 0) {
                std::size_t p = ns - 1;
                while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80)
                    --p;
                if (!isWhitespace(decodeUtf8(s, p).cp)) break;
                ns = p;
            }
            start = std::max(ns, startOffset);
        }
        if (hit->rstrip) {
            while (stop < s.size()) {
                const CodePoint c = decodeUtf8(s, stop);
                if (!isWhitespace(c.cp)) break;
                stop += std::size_t(c.len);
            }
        }
        if (startOffset < start) out.push_back({startOffset, start, -1});
        out.push_back({start, stop, hit->id});
        startOffset = stop;
    }
    if (startOffset < s.size()) out.push_back({startOffset, s.size(), -1});
}

// ---- pre-tokenizer plumbing ----

struct Piece {
    std::string text;
    bool atStart; // begins at offset 0 of the original input (Metaspace prepend_scheme "first")
};

// Splits `s` given match spans, following SplitDelimiterBehavior; empty pieces are dropped.
void applySplit(const Piece& p, const std::vector<std::pair<std::size_t, std::size_t>>& hits,
                SplitBehavior behavior, bool invert, std::vector<Piece>& out)
{
    struct Span {
        std::size_t b, e;
        bool match;
    };
    std::vector<Span> spans;
    std::size_t prev = 0;
    for (auto [b, e] : hits) {
        if (prev < b) spans.push_back({prev, b, false});
        spans.push_back({b, e, true});
        prev = e;
    }
    if (prev < p.text.size()) spans.push_back({prev, p.text.size(), false});
    if (invert)
        for (auto& sp : spans)
            sp.match = !sp.match;

    std::vector<Span> res;
    switch (behavior) {
    case SplitBehavior::Removed:
        for (auto& sp : spans)
            if (!sp.match) res.push_back(sp);
        break;
    case SplitBehavior::Isolated:
        res = spans;
        break;
    case SplitBehavior::MergedWithPrevious: {
        bool prevMatch = false;
        for (auto& sp : spans) {
            if (sp.match && !prevMatch && !res.empty())
                res.back().e = sp.e;
            else
                res.push_back(sp);
            prevMatch = sp.match;
        }
        break;
    }
    case SplitBehavior::MergedWithNext: {
        bool prevMatch = false;
        for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
            if (it->match && !prevMatch && !res.empty())
                res.back().b = it->b;
            else
                res.push_back(*it);
            prevMatch = it->match;
        }
        std::reverse(res.begin(), res.end());
        break;
    }
    case SplitBehavior::Contiguous: {
        bool prevMatch = false;
        for (auto& sp : spans) {
            if (sp.match == prevMatch && !res.empty())
                res.back().e = sp.e;
            else
                res.push_back(sp);
            prevMatch = sp.match;
        }
        break;
    }
    }
    for (auto& sp : res)
        if (sp.e > sp.b) out.push_back({p.text.substr(sp.b, sp.e - sp.b), p.atStart && sp.b == 0});
}

void findString(std::string_view s, std::string_view pat,
                std::vector<std::pair<std::size_t, std::size_t>>& hits)
{
    if (pat.empty()) return;
    std::size_t pos = 0;
    while ((pos = s.find(pat, pos)) != std::string_view::npos) {
        hits.emplace_back(pos, pos + pat.size());
        pos += pat.size();
    }
}

std::vector<Piece> preTokenize(const std::vector<PreTokStep>& steps, Piece input)
{
    std::vector<Piece> cur;
    cur.push_back(std::move(input));
    std::vector<Piece> next;
    std::vector<std::pair<std::size_t, std::size_t>> hits;
    const auto& b2u = byteToUnicode();
    for (const PreTokStep& st : steps) {
        next.clear();
        for (Piece& p : cur) {
            hits.clear();
            switch (st.type) {
            case PreTokStep::Type::ByteLevel: {
                if (st.addPrefixSpace && !startsWith(p.text, " ")) p.text.insert(0, 1, ' ');
                std::vector<Piece> parts;
                if (st.useRegex) {
                    findRegexMatches(SplitRegex::Gpt2, p.text, hits);
                    applySplit(p, hits, SplitBehavior::Isolated, false, parts);
                } else if (!p.text.empty()) {
                    parts.push_back(std::move(p));
                }
                for (Piece& q : parts) {
                    std::string mapped;
                    mapped.reserve(q.text.size() * 2);
                    for (unsigned char c : q.text)
                        mapped += b2u[c];
                    next.push_back({std::move(mapped), q.atStart});
                }
                break;
            }
            case PreTokStep::Type::SplitRegex:
                findRegexMatches(st.regex, p.text, hits);
                applySplit(p, hits, st.behavior, st.invert, next);
                break;
            case PreTokStep::Type::SplitString:
                findString(p.text, st.pattern, hits);
                applySplit(p, hits, st.behavior, st.invert, next);
                break;
            case PreTokStep::Type::Metaspace: {
                replaceAll(p.text, " ", st.pattern);
                const bool prepend = st.prepend == PrependScheme::Always ||
                                     (st.prepend == PrependScheme::First && p.atStart);
                if (prepend && !startsWith(p.text, st.pattern)) p.text.insert(0, st.pattern);
                if (st.split) {
                    findString(p.text, st.pattern, hits);
                    applySplit(p, hits, SplitBehavior::MergedWithNext, false, next);
                } else if (!p.text.empty()) {
                    next.push_back(std::move(p));
                }
                break;
            }
            }
        }
        cur.swap(next);
    }
    return cur;
}

// ---- JSON loading ----

// Lenient member reads, as the loader always had them (QJsonValue's): a member that is missing,
// null or of another type reads as the default; an absent object reads as an empty one.
const JsonValue kAbsent;

const JsonValue& member(const JsonValue& o, std::string_view key)
{
    const JsonValue* v = o.find(key); // nullptr when o is not an object
    return v ? *v : kAbsent;
}
std::string str(const JsonValue& v)
{
    return v.isString() ? v.asString() : std::string();
}
bool flag(const JsonValue& v, bool dflt)
{
    return v.isBool() ? v.asBool() : dflt;
}
std::int64_t integer(const JsonValue& v, std::int64_t dflt)
{
    return v.isInteger() ? v.asInteger() : dflt;
}
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
                return unsupported("Replace normalizer with a regex pattern is not supported: " +
                                       toJsonText(pat, -1),
                                   name);
            t.normalizers.push_back(
                {T::Replace, str(member(pat, "String")), str(member(o, "content"))});
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
                const auto known = recogniseSplitRegex(re);
                if (!known)
                    return unsupported("Split pre-tokenizer regex is not one we implement "
                                       "(GPT-2, Llama-3, Qwen2): " +
                                           re,
                                       name);
                s.type = T::SplitRegex;
                s.regex = *known;
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
        if (const JsonValue* add = o.find("add_prefix_space"); add && !flag(*add, true))
            return PrependScheme::Never;
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
            if (!pat.find("String"))
                return unsupported("Replace decoder with a regex pattern is not supported", name);
            t.decoders.push_back(
                {T::Replace, str(member(pat, "String")), str(member(o, "content"))});
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
                if (!special)
                    return format("TemplateProcessing item is neither SpecialToken nor Sequence",
                                  name);
                const std::string id = str(member(*special, "id"));
                const JsonValue* entry = specials.find(id);
                if (!entry)
                    return format("TemplateProcessing names special token '" + id +
                                      "' missing from special_tokens",
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
        if (type != "BPE")
            return unsupported("tokenizer model type '" + type + "' is not supported (BPE only)",
                               name);
        const JsonValue& dropout = member(m, "dropout");
        if (dropout.isNumber() && dropout.asNumber() != 0.0)
            return unsupported("BPE dropout is not supported", name);
        const JsonValue& vocab = member(m, "vocab");
        if (!vocab.isObject() || vocab.asObject().empty())
            return format("model.vocab is missing or empty", name);
        t.vocab.reserve(vocab.asObject().size());
        for (const JsonMember& e : vocab.asObject()) {
            if (!e.value.isNumber()) return format("model.vocab entry '" + e.key + "' has no id", name);
            const std::int64_t id = integer(e.value, -1);
            if (id < 0 || id > INT32_MAX)
                return format("model.vocab id out of range for '" + e.key + "'", name);
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
        for (const JsonValue& mv : merges) {
            std::string a, b;
            if (mv.isString()) {
                const std::string& line = mv.asString();
                if (startsWith(line, "#version")) continue;
                const std::size_t sp = line.find(' ');
                if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
                    return format("merge " + std::to_string(rank) + " is not \"left right\": '" +
                                      line + "'",
                                  name);
                a = line.substr(0, sp);
                b = line.substr(sp + 1);
            } else if (mv.isArray() && mv.asArray().size() == 2) {
                a = str(mv.asArray()[0]);
                b = str(mv.asArray()[1]);
            } else {
                return format("merge " + std::to_string(rank) + " is neither a string nor a pair",
                              name);
            }
            auto ia = t.vocab.find(a), ib = t.vocab.find(b);
            std::string merged = a;
            merged += (!t.continuingPrefix.empty() && startsWith(b, t.continuingPrefix))
                          ? b.substr(t.continuingPrefix.size())
                          : b;
            auto im = t.vocab.find(merged);
            if (ia == t.vocab.end() || ib == t.vocab.end() || im == t.vocab.end())
                return format("merge " + std::to_string(rank) + " ('" + a + "' '" + b +
                                  "') uses a token missing from the vocabulary",
                              name);
            const std::uint64_t key =
                (std::uint64_t(std::uint32_t(ia->second)) << 32) | std::uint32_t(ib->second);
            t.merges.insert_or_assign(key, std::make_pair(rank, im->second));
            t.mergeList.emplace_back(std::move(a), std::move(b));
            ++rank;
        }
        return {};
    }
};

std::optional<std::int32_t> lookup(const TokenizerImpl& t, std::string_view s)
{
    for (const AddedToken& a : t.addedTokens)
        if (a.content == s) return a.id;
    auto it = t.vocab.find(s);
    if (it != t.vocab.end()) return it->second;
    return std::nullopt;
}

std::optional<std::string> configToken(const JsonValue& cfg, const char* key)
{
    const JsonValue& v = member(cfg, key);
    if (v.isString()) return v.asString();
    if (const JsonValue& content = member(v, "content"); content.isString()) return content.asString();
    return std::nullopt;
}

Result<JsonValue> parseObject(std::string_view json, const std::string& name)
{
    // The Rust crate reads tokenizer.json as a Rust string, which must be UTF-8; JsonValue would
    // pass broken bytes through into the vocabulary.
    if (const std::size_t bad = firstInvalidUtf8(json); bad != std::string_view::npos)
        return format("not valid JSON: invalid UTF-8 at offset " + std::to_string(bad), name);
    auto doc = parseJson(json, name);
    if (!doc)
        return makeError(ErrorCode::Format, "not valid JSON: " + doc.error().message,
                         doc.error().context);
    if (!doc->isObject()) return format("JSON top level is not an object", name);
    return std::move(*doc);
}

Result<std::string> readFile(const std::string& path)
{
    QFile f(QString::fromStdString(path));
    if (!f.open(QIODevice::ReadOnly))
        return makeError(ErrorCode::Io, "cannot open: " + f.errorString().toStdString(), path);
    const QByteArray data = f.readAll();
    return data.toStdString();
}

} // namespace

// ---- TokenizerImpl: encode ----

namespace detail {

std::string TokenizerImpl::normalize(std::string s) const
{
    for (const NormalizerStep& n : normalizers) {
        using T = NormalizerStep::Type;
        switch (n.type) {
        case T::Nfc:
        case T::Nfd:
        case T::Nfkc:
        case T::Nfkd: {
            if (isAscii(s)) break; // ASCII is invariant under every normalization form
            const auto form = n.type == T::Nfc    ? QString::NormalizationForm_C
                              : n.type == T::Nfd  ? QString::NormalizationForm_D
                              : n.type == T::Nfkc ? QString::NormalizationForm_KC
                                                  : QString::NormalizationForm_KD;
            s = QString::fromStdString(sanitizeUtf8(s)).normalized(form).toStdString();
            break;
        }
        case T::Lowercase:
            s = QString::fromStdString(s).toLower().toStdString();
            break;
        case T::Prepend:
            if (!s.empty()) s.insert(0, n.a);
            break;
        case T::Replace:
            replaceAll(s, n.a, n.b);
            break;
        case T::Strip: {
            std::size_t b = 0, e = s.size();
            if (n.left)
                while (b < e) {
                    const CodePoint c = decodeUtf8(s, b);
                    if (!isWhitespace(c.cp)) break;
                    b += std::size_t(c.len);
                }
            if (n.right)
                while (e > b) {
                    std::size_t p = e - 1;
                    while (p > b && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80)
                        --p;
                    if (!isWhitespace(decodeUtf8(s, p).cp)) break;
                    e = p;
                }
            s = s.substr(b, e - b);
            break;
        }
        }
    }
    return s;
}

void TokenizerImpl::bpeWord(std::string_view word, std::vector<std::int32_t>& out) const
{
    if (ignoreMerges) {
        auto it = vocab.find(word);
        if (it != vocab.end()) {
            out.push_back(it->second);
            return;
        }
    }
    struct Sym {
        std::int32_t id;
        int prev, next;
        bool alive;
    };
    std::vector<Sym> syms;
    syms.reserve(word.size());
    auto add = [&](std::int32_t id) {
        const int n = int(syms.size());
        if (n > 0) syms[n - 1].next = n;
        syms.push_back({id, n - 1, -1, true});
    };
    std::int32_t pendingUnk = -1;
    std::string s;
    std::size_t pos = 0;
    while (pos < word.size()) {
        const CodePoint c = decodeUtf8(word, pos);
        const bool first = pos == 0;
        const bool last = pos + std::size_t(c.len) >= word.size();
        s.clear();
        if (!first) s += continuingPrefix;
        s.append(word.substr(pos, std::size_t(c.len)));
        if (last) s += endOfWordSuffix;
        pos += std::size_t(c.len);
        if (auto it = vocab.find(s); it != vocab.end()) {
            if (pendingUnk >= 0) {
                add(pendingUnk);
                pendingUnk = -1;
            }
            add(it->second);
            continue;
        }
        if (byteFallback) {
            bool all = true;
            for (unsigned char b : s)
                all = all && byteTokenIds[b] >= 0;
            if (all) {
                for (unsigned char b : s)
                    add(byteTokenIds[b]);
                continue;
            }
        }
        if (unkId) {
            if (pendingUnk >= 0 && !fuseUnk) add(pendingUnk);
            pendingUnk = *unkId;
        }
    }
    if (pendingUnk >= 0) add(pendingUnk);

    struct Cand {
        std::int32_t rank;
        int pos;
        std::int32_t newId;
        bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    auto pairInfo = [&](std::int32_t a,
                        std::int32_t b) -> const std::pair<std::int32_t, std::int32_t>* {
        auto it = merges.find((std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b));
        return it == merges.end() ? nullptr : &it->second;
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> queue;
    for (int i = 0; i + 1 < int(syms.size()); ++i)
        if (auto m = pairInfo(syms[i].id, syms[i + 1].id)) queue.push({m->first, i, m->second});
    while (!queue.empty()) {
        const Cand top = queue.top();
        queue.pop();
        Sym& left = syms[top.pos];
        if (!left.alive || left.next < 0) continue;
        Sym& right = syms[left.next];
        const auto m = pairInfo(left.id, right.id);
        if (!m || m->second != top.newId) continue; // stale entry
        left.id = top.newId;
        right.alive = false;
        left.next = right.next;
        if (left.next >= 0) syms[left.next].prev = top.pos;
        if (left.prev >= 0)
            if (auto pm = pairInfo(syms[left.prev].id, left.id))
                queue.push({pm->first, left.prev, pm->second});
        if (left.next >= 0)
            if (auto nm = pairInfo(left.id, syms[left.next].id))
                queue.push({nm->first, top.pos, nm->second});
    }
    for (const Sym& sy : syms)
        if (sy.alive) out.push_back(sy.id);
}

void TokenizerImpl::encodeText(std::string_view text, std::vector<std::int32_t>& out,
                               WordCache& cache) const
{
    std::vector<Fragment> frags;
    splitOnAdded(rawAdded, text, frags);
    std::vector<Fragment> sub;
    for (const Fragment& f : frags) {
        if (f.id >= 0) {
            out.push_back(f.id);
            continue;
        }
        const std::string norm = normalize(std::string(text.substr(f.begin, f.end - f.begin)));
        if (norm.empty()) continue;
        sub.clear();
        splitOnAdded(normalizedAdded, norm, sub);
        for (const Fragment& g : sub) {
            if (g.id >= 0) {
                out.push_back(g.id);
                continue;
            }
            Piece p{norm.substr(g.begin, g.end - g.begin), f.begin == 0 && g.begin == 0};
            for (const Piece& w : preTokenize(preTokenizers, std::move(p))) {
                if (w.text.empty()) continue;
                auto it = cache.find(w.text);
                if (it == cache.end()) {
                    std::vector<std::int32_t> ids;
                    bpeWord(w.text, ids);
                    it = cache.emplace(w.text, std::move(ids)).first;
                }
                out.insert(out.end(), it->second.begin(), it->second.end());
            }
        }
    }
}

} // namespace detail

// ---- Tokenizer ----

Tokenizer::Tokenizer(std::shared_ptr<const TokenizerImpl> impl) : m_impl(std::move(impl)) {}

Result<Tokenizer> Tokenizer::fromFile(const std::string& path)
{
    QB_TRY(json, readFile(path));
    std::string config;
    const QString cfgPath =
        QFileInfo(QString::fromStdString(path)).dir().filePath("tokenizer_config.json");
    if (QFileInfo::exists(cfgPath)) {
        QB_TRY(c, readFile(cfgPath.toStdString()));
        config = std::move(*c);
    }
    return fromJsonWithConfig(*json, config, path);
}

Result<Tokenizer> Tokenizer::fromJson(const std::string& json, const std::string& nameForErrors)
{
    return fromJsonWithConfig(json, {}, nameForErrors);
}

namespace {

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
        case T::Nfd:
            g.unicode(4);
            break;
        case T::Nfkc:
        case T::Nfkd:
            g.unicode(18);
            break;
        case T::Lowercase:
            g.unicode(3);
            break;
        case T::Prepend:
            g.prepend(n.a);
            break;
        case T::Replace:
            g.replace(n.a, n.b);
            break;
        case T::Strip:
            break;
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

Result<Tokenizer> Tokenizer::fromJsonWithConfig(const std::string& json,
                                                const std::string& configJson,
                                                const std::string& name)
{
    QB_TRY(rootR, parseObject(json, name));
    const JsonValue& root = *rootR;
    JsonValue cfg; // null: every member reads as absent
    if (!configJson.empty()) {
        QB_TRY(c, parseObject(configJson, name + " (tokenizer_config.json)"));
        cfg = std::move(*c);
    }
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
    t.rawAdded = buildMatcher(std::move(raw));
    t.normalizedAdded = buildMatcher(std::move(normalized));

    // id table
    std::int64_t maxId = -1;
    for (const auto& [s, id] : t.vocab)
        maxId = std::max<std::int64_t>(maxId, id);
    for (const AddedToken& a : t.addedTokens)
        maxId = std::max<std::int64_t>(maxId, a.id);
    constexpr std::int64_t kMaxVocab = std::int64_t(1) << 24; // far above any real vocabulary
    if (maxId >= kMaxVocab)
        return format("token id " + std::to_string(maxId) + " is implausibly large", name);
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
        if (id < 0 || id > maxId)
            return format("post_processor uses unknown id " + std::to_string(id), name);
    for (std::int32_t id : t.suffixIds)
        if (id < 0 || id > maxId)
            return format("post_processor uses unknown id " + std::to_string(id), name);

    // kind
    t.kind = Kind::SentencePieceBpe;
    for (const PreTokStep& s : t.preTokenizers)
        if (s.type == PreTokStep::Type::ByteLevel) t.kind = Kind::ByteLevelBpe;
    for (const DecoderStep& s : t.decoders)
        if (s.type == DecoderStep::Type::ByteLevel) t.kind = Kind::ByteLevelBpe;

    // special ids: tokenizer_config.json first, then the template, then well-known names
    auto resolve = [&](const char* key) -> std::optional<std::int32_t> {
        if (auto s = configToken(cfg, key)) return lookup(t, *s);
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
            if ((t.bosId = lookup(t, s))) break;
    if (!t.eosId)
        for (const char* s :
             {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>"})
            if ((t.eosId = lookup(t, s))) break;
    if (!processorAdds) {
        if (flag(member(cfg, "add_bos_token"), false) && t.bosId) t.prefixIds.push_back(*t.bosId);
        if (flag(member(cfg, "add_eos_token"), false) && t.eosId) t.suffixIds.push_back(*t.eosId);
    }
    return Tokenizer(std::move(impl));
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view utf8, bool addSpecial) const
{
    const TokenizerImpl& t = *m_impl;
    std::vector<std::int32_t> out;
    out.reserve(utf8.size() / 3 + 8);
    if (addSpecial) out.insert(out.end(), t.prefixIds.begin(), t.prefixIds.end());
    WordCache cache;
    t.encodeText(utf8, out, cache);
    if (addSpecial) out.insert(out.end(), t.suffixIds.begin(), t.suffixIds.end());
    return out;
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids, bool skipSpecial) const
{
    const TokenizerImpl& t = *m_impl;
    std::vector<std::string> toks;
    toks.reserve(ids.size());
    for (std::int32_t id : ids) {
        if (id < 0 || std::size_t(id) >= t.idToToken.size() || !t.idPresent[std::size_t(id)])
            continue;
        if (skipSpecial && t.idSpecial[std::size_t(id)]) continue;
        toks.push_back(t.idToToken[std::size_t(id)]);
    }
    if (!t.hasDecoder) {
        std::string out;
        for (std::size_t i = 0; i < toks.size(); ++i) {
            if (i) out += ' ';
            out += toks[i];
        }
        return out;
    }
    for (const DecoderStep& d : t.decoders) {
        using T = DecoderStep::Type;
        switch (d.type) {
        case T::ByteLevel: {
            std::string bytes;
            for (const std::string& tok : toks) {
                std::string mapped;
                bool ok = true;
                for (std::size_t p = 0; p < tok.size() && ok;) {
                    const CodePoint c = decodeUtf8(tok, p);
                    const int b = unicodeToByte(c.cp);
                    if (b < 0)
                        ok = false;
                    else
                        mapped += char(b);
                    p += std::size_t(c.len);
                }
                bytes += ok ? mapped : tok;
            }
            toks.assign(1, sanitizeUtf8(bytes));
            break;
        }
        case T::Replace:
            for (std::string& tok : toks)
                replaceAll(tok, d.a, d.b);
            break;
        case T::ByteFallback: {
            std::vector<std::string> res;
            std::string pending;
            std::size_t pendingCount = 0;
            auto flush = [&] {
                if (pendingCount == 0) return;
                if (sanitizeUtf8(pending) == pending) {
                    res.push_back(pending);
                } else {
                    for (std::size_t i = 0; i < pendingCount; ++i)
                        res.push_back("\xEF\xBF\xBD");
                }
                pending.clear();
                pendingCount = 0;
            };
            for (std::string& tok : toks) {
                int byte = -1;
                if (tok.size() == 6 && startsWith(tok, "<0x") && tok[5] == '>') {
                    char* end = nullptr;
                    const std::string hex = tok.substr(3, 2);
                    const long v = std::strtol(hex.c_str(), &end, 16);
                    if (end == hex.c_str() + 2 && std::isxdigit((unsigned char)hex[0]))
                        byte = int(v);
                }
                if (byte >= 0) {
                    pending += char(byte);
                    ++pendingCount;
                } else {
                    flush();
                    res.push_back(std::move(tok));
                }
            }
            flush();
            toks = std::move(res);
            break;
        }
        case T::Fuse: {
            std::string all;
            for (const std::string& tok : toks)
                all += tok;
            toks.assign(1, std::move(all));
            break;
        }
        case T::Strip: {
            const char32_t content = d.a.empty() ? 0 : decodeUtf8(d.a, 0).cp;
            for (std::string& tok : toks) {
                std::vector<std::pair<std::size_t, char32_t>> cps; // offset, code point
                for (std::size_t p = 0; p < tok.size();) {
                    const CodePoint c = decodeUtf8(tok, p);
                    cps.emplace_back(p, c.cp);
                    p += std::size_t(c.len);
                }
                std::size_t b = 0, e = cps.size();
                for (int i = 0; i < d.start && b < e && cps[b].second == content; ++i)
                    ++b;
                for (int i = 0; i < d.stop && e > b && cps[e - 1].second == content; ++i)
                    --e;
                const std::size_t bb = b < cps.size() ? cps[b].first : tok.size();
                const std::size_t ee = e < cps.size() ? cps[e].first : tok.size();
                tok = tok.substr(bb, ee - bb);
            }
            break;
        }
        case T::Metaspace:
            for (std::size_t i = 0; i < toks.size(); ++i) {
                // Rust drops every replacement char of the first token unless scheme is never.
                replaceAll(toks[i], d.a, i == 0 && d.prepend != PrependScheme::Never ? "" : " ");
            }
            break;
        }
    }
    std::string out;
    for (const std::string& tok : toks)
        out += tok;
    return out;
}

std::int64_t Tokenizer::vocabSize() const
{
    return std::int64_t(m_impl->idToToken.size());
}
std::optional<std::int32_t> Tokenizer::bosId() const
{
    return m_impl->bosId;
}
std::optional<std::int32_t> Tokenizer::eosId() const
{
    return m_impl->eosId;
}
std::optional<std::int32_t> Tokenizer::unkId() const
{
    return m_impl->unkId;
}
std::optional<std::int32_t> Tokenizer::padId() const
{
    return m_impl->padId;
}

bool Tokenizer::addsBos() const
{
    return m_impl->bosId && !m_impl->prefixIds.empty() &&
           m_impl->prefixIds.front() == *m_impl->bosId;
}

bool Tokenizer::addsEos() const
{
    return m_impl->eosId && !m_impl->suffixIds.empty() &&
           m_impl->suffixIds.back() == *m_impl->eosId;
}

std::string Tokenizer::tokenText(std::int32_t id) const
{
    if (id < 0 || std::size_t(id) >= m_impl->idToToken.size()) return {};
    return m_impl->idToToken[std::size_t(id)];
}

std::optional<std::int32_t> Tokenizer::tokenId(std::string_view text) const
{
    return lookup(*m_impl, text);
}

bool Tokenizer::isSpecial(std::int32_t id) const
{
    return id >= 0 && std::size_t(id) < m_impl->idSpecial.size() &&
           m_impl->idSpecial[std::size_t(id)];
}

Tokenizer::Kind Tokenizer::kind() const
{
    return m_impl->kind;
}
const std::string& Tokenizer::sourceName() const
{
    return m_impl->name;
}

std::vector<std::string> Tokenizer::vocabulary() const
{
    std::vector<std::string> v = m_impl->idToToken;
    for (std::size_t i = 0; i < v.size(); ++i)
        if (!m_impl->idPresent[i]) v[i] = "[PAD" + std::to_string(i) + "]";
    return v;
}

std::vector<Tokenizer::TokenType> Tokenizer::tokenTypes() const
{
    const TokenizerImpl& t = *m_impl;
    std::vector<TokenType> types(t.idToToken.size(), TokenType::Normal);
    for (std::size_t i = 0; i < types.size(); ++i)
        if (!t.idPresent[i]) types[i] = TokenType::Unused;
    if (t.kind == Kind::SentencePieceBpe)
        for (std::int32_t id : t.byteTokenIds)
            if (id >= 0) types[std::size_t(id)] = TokenType::Byte;
    for (const AddedToken& a : t.addedTokens)
        types[std::size_t(a.id)] = a.special ? TokenType::Control : TokenType::UserDefined;
    if (t.unkId) types[std::size_t(*t.unkId)] = TokenType::Unknown;
    return types;
}

const std::vector<std::pair<std::string, std::string>>& Tokenizer::mergePairs() const
{
    return m_impl->mergeList;
}

std::vector<std::string> Tokenizer::merges() const
{
    std::vector<std::string> out;
    out.reserve(m_impl->mergeList.size());
    for (auto [a, b] : m_impl->mergeList) {
        replaceAll(a, " ", "\u0120");
        replaceAll(b, " ", "\u0120");
        out.push_back(a + " " + b);
    }
    return out;
}

std::string Tokenizer::ggmlPre() const
{
    for (const PreTokStep& s : m_impl->preTokenizers) {
        if (s.type == PreTokStep::Type::SplitRegex) {
            switch (s.regex) {
            case SplitRegex::Llama3:
                return "llama-bpe";
            case SplitRegex::Qwen2:
                return "qwen2";
            case SplitRegex::Gpt2:
                return "gpt-2";
            }
        }
        if (s.type == PreTokStep::Type::ByteLevel && s.useRegex) return "gpt-2";
    }
    return "default";
}

} // namespace qb::io
