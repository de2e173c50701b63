// Tokenizer pre-tokenization (see tokenizer.h): the Unicode helpers every stage uses,
// the hand-coded Split regexes, and the pre-tokenizer chain (ByteLevel, Split, Metaspace) that
// cuts normalized text into the pieces the model encodes one at a time.
// The hand-coded matchers reproduce Oniguruma's leftmost-first alternation with backtracking for
// the three patterns of FORMATS.md §3.3; each alternative is commented with the branch it
// implements. They are used instead of PCRE2 (tokenizer_regex.cpp) for those three patterns
// because they are faster; tst_tokenizer checks that both give the same matches.
// Threading: pure functions; the byte<->unicode tables are function-local statics.

#include "io/tokenizer_detail.h"

#include <QChar>

namespace qb::io::detail {

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

// Qt 6.4 has Unicode 14 tables: what Unicode 15 and 16 assigned is unassigned there, and the
// delta table holds what the reference makes of it (no L or N code point changes class otherwise).
bool isLetter(char32_t c)
{
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    switch (QChar::category(c)) {
    case QChar::Letter_Uppercase:
    case QChar::Letter_Lowercase:
    case QChar::Letter_Titlecase:
    case QChar::Letter_Modifier:
    case QChar::Letter_Other: return true;
    case QChar::Other_NotAssigned: {
        static const UnicodeDelta* const delta = unicodeDelta("L");
        return inRanges(delta->added, delta->addedCount, c);
    }
    default: return false;
    }
}

bool isNumber(char32_t c)
{
    if (c < 0x80) return c >= '0' && c <= '9';
    switch (QChar::category(c)) {
    case QChar::Number_DecimalDigit:
    case QChar::Number_Letter:
    case QChar::Number_Other: return true;
    case QChar::Other_NotAssigned: {
        static const UnicodeDelta* const delta = unicodeDelta("N");
        return inRanges(delta->added, delta->addedCount, c);
    }
    default: return false;
    }
}

bool isWhitespace(char32_t c)
{
    // The Unicode White_Space property, spelled out (Oniguruma's \s in Unicode mode).
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85) return false;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

const std::array<std::string, 256>& byteToUnicode()
{
    static const std::array<std::string, 256> table = [] {
        std::array<std::string, 256> t;
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            appendUtf8(t[b], self ? char32_t(b) : char32_t(256 + n));
            if (!self) ++n;
        }
        return t;
    }();
    return table;
}

int unicodeToByte(char32_t c)
{
    static const std::array<std::int16_t, 324> table = [] {
        std::array<std::int16_t, 324> t;
        t.fill(-1);
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            t[self ? b : 256 + n] = std::int16_t(b);
            if (!self) ++n;
        }
        return t;
    }();
    return c < table.size() ? table[c] : -1;
}

// ---- regexes ----

namespace {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum Cls : std::uint8_t { kLetter, kNumber, kSpace, kOther };

// The text as the matchers see it, three bytes per code point (a megabyte of text is touched
// once, not turned into 13 MB of vectors): what the branches compare code points with (ASCII
// itself, U+017F, or "other"), the class, and the UTF-8 length to map matches back to bytes.
constexpr std::uint8_t kLongS = 0x80;    // U+017F LATIN SMALL LETTER LONG S: (?i) folds it to 's'
constexpr std::uint8_t kNonAscii = 0xFF; // any other code point from U+0080 up, and invalid bytes

struct Text {
    std::vector<std::uint8_t> ch, cls, len;
};

constexpr std::array<std::uint8_t, 128> kAsciiClass = [] {
    std::array<std::uint8_t, 128> t{};
    for (int c = 0; c < 128; ++c)
        t[c] = (c | 0x20) >= 'a' && (c | 0x20) <= 'z' ? kLetter
               : c >= '0' && c <= '9'                 ? kNumber
               : c == ' ' || (c >= 0x09 && c <= 0x0D) ? kSpace
                                                      : kOther;
    return t;
}();

void classify(std::string_view s, Text& t)
{
    t.ch.clear();
    t.cls.clear();
    t.len.clear();
    t.ch.reserve(s.size());
    t.cls.reserve(s.size());
    t.len.reserve(s.size());
    std::size_t pos = 0;
    while (pos < s.size()) {
        const auto b = static_cast<unsigned char>(s[pos]);
        if (b < 0x80) {
            t.ch.push_back(b);
            t.cls.push_back(kAsciiClass[b]);
            t.len.push_back(1);
            ++pos;
            continue;
        }
        const CodePoint c = decodeUtf8(s, pos);
        t.ch.push_back(c.cp == 0x17F ? kLongS : kNonAscii);
        t.cls.push_back(isLetter(c.cp) ? kLetter : isNumber(c.cp) ? kNumber : isWhitespace(c.cp) ? kSpace : kOther);
        t.len.push_back(std::uint8_t(c.len));
        pos += std::size_t(c.len);
    }
}

bool isCrLf(std::uint8_t c) { return c == '\r' || c == '\n'; }

std::uint8_t foldAscii(std::uint8_t c)
{
    if (c >= 'A' && c <= 'Z') return std::uint8_t(c + 32);
    if (c == kLongS) return 's'; // LATIN SMALL LETTER LONG S case-folds to 's'
    return c;
}

// 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive. Returns the end or i.
std::size_t matchContraction(const Text& t, std::size_t i, bool ci)
{
    const std::size_t n = t.ch.size();
    if (t.ch[i] != '\'' || i + 1 >= n) return i;
    auto f = [&](std::size_t k) { return ci ? foldAscii(t.ch[k]) : t.ch[k]; };
    const char32_t a = f(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
        const char32_t b = f(i + 2);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    return i;
}

std::size_t runOf(const Text& t, std::size_t j, Cls c)
{
    while (j < t.cls.size() && t.cls[j] == c)
        ++j;
    return j;
}

// \s+(?!\S) then \s+ : whitespace run at i, leaving its last char when a non-space follows.
std::size_t matchTrailingSpace(const Text& t, std::size_t i)
{
    const std::size_t j = runOf(t, i, kSpace);
    if (j == t.cls.size()) return j;
    if (j - 1 > i) return j - 1;
    return i + 1;
}

std::size_t matchGpt2(const Text& t, std::size_t i)
{
    const std::size_t n = t.ch.size();
    if (std::size_t e = matchContraction(t, i, false); e != i) return e;
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
    for (Cls c : {kLetter, kNumber, kOther}) {
        if (t.ch[i] == ' ' && i + 1 < n && t.cls[i + 1] == c) return runOf(t, i + 1, c);
        if (t.cls[i] == c) return runOf(t, i, c);
    }
    return matchTrailingSpace(t, i);
}

std::size_t matchLlama3(const Text& t, std::size_t i, std::size_t maxDigits)
{
    const std::size_t n = t.ch.size();
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (std::size_t e = matchContraction(t, i, true); e != i) return e;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!isCrLf(t.ch[i]) && t.cls[i] != kLetter && t.cls[i] != kNumber && i + 1 < n && t.cls[i + 1] == kLetter)
        return runOf(t, i + 1, kLetter);
    if (t.cls[i] == kLetter) return runOf(t, i, kLetter);
    // \p{N}{1,3} (Llama-3) or \p{N} (Qwen2)
    if (t.cls[i] == kNumber) {
        std::size_t j = i;
        while (j < n && j - i < maxDigits && t.cls[j] == kNumber)
            ++j;
        return j;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    std::size_t start = std::size_t(-1);
    if (t.ch[i] == ' ' && i + 1 < n && t.cls[i + 1] == kOther) start = i + 1;
    else if (t.cls[i] == kOther) start = i;
    if (start != std::size_t(-1)) {
        std::size_t j = runOf(t, start, kOther);
        while (j < n && isCrLf(t.ch[j]))
            ++j;
        return j;
    }
    // \s*[\r\n]+ : up to and including the last CR/LF of the whitespace run
    const std::size_t j = runOf(t, i, kSpace);
    for (std::size_t k = j; k > i; --k)
        if (isCrLf(t.ch[k - 1])) return k;
    return matchTrailingSpace(t, i);
}

} // namespace

std::optional<HandCodedRegex> recogniseHandCodedRegex(std::string_view pattern)
{
    for (HandCodedRegex r : {HandCodedRegex::Gpt2, HandCodedRegex::Llama3, HandCodedRegex::Qwen2})
        if (pattern == handCodedPattern(r)) return r;
    return std::nullopt;
}

const char* handCodedPattern(HandCodedRegex which)
{
    switch (which) {
    case HandCodedRegex::Gpt2: return kGpt2Pattern;
    case HandCodedRegex::Llama3: return kLlama3Pattern;
    case HandCodedRegex::Qwen2: return kQwen2Pattern;
    }
    return "";
}

void findHandCodedMatches(HandCodedRegex which, std::string_view s, Spans& out)
{
    thread_local Text t; // capacity kept between calls (encode() calls this once per fragment)
    classify(s, t);
    std::size_t i = 0, byte = 0; // code point i starts at byte
    const std::size_t n = t.ch.size();
    auto bytesTo = [&](std::size_t e) {
        std::size_t b = byte;
        for (std::size_t k = i; k < e; ++k)
            b += t.len[k];
        return b;
    };
    while (i < n) {
        std::size_t e = i;
        switch (which) {
        case HandCodedRegex::Gpt2: e = matchGpt2(t, i); break;
        case HandCodedRegex::Llama3: e = matchLlama3(t, i, 3); break;
        case HandCodedRegex::Qwen2: e = matchLlama3(t, i, 1); break;
        }
        if (e == i) { // every code point matches some branch; guard against a stall anyway
            byte += t.len[i];
            ++i;
            continue;
        }
        const std::size_t end = bytesTo(e);
        out.emplace_back(byte, end);
        byte = end;
        i = e;
    }
    if (t.ch.capacity() > (std::size_t(1) << 24)) t = Text{}; // keep at most 48 MB between calls
}

// ---- pre-tokenizers ----

namespace {

// Splits `s` given match spans, following SplitDelimiterBehavior; empty pieces are dropped.
void applySplit(const Piece& p, const Spans& hits, SplitBehavior behavior, bool invert, std::vector<Piece>& out)
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
    case SplitBehavior::Isolated: res = std::move(spans); break;
    case SplitBehavior::MergedWithPrevious: {
        bool prevMatch = false;
        for (auto& sp : spans) {
            if (sp.match && !prevMatch && !res.empty()) res.back().e = sp.e;
            else res.push_back(sp);
            prevMatch = sp.match;
        }
        break;
    }
    case SplitBehavior::MergedWithNext: {
        bool prevMatch = false;
        for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
            if (it->match && !prevMatch && !res.empty()) res.back().b = it->b;
            else res.push_back(*it);
            prevMatch = it->match;
        }
        std::reverse(res.begin(), res.end());
        break;
    }
    case SplitBehavior::Contiguous: {
        bool prevMatch = false;
        for (auto& sp : spans) {
            if (sp.match == prevMatch && !res.empty()) res.back().e = sp.e;
            else res.push_back(sp);
            prevMatch = sp.match;
        }
        break;
    }
    }
    for (auto& sp : res)
        if (sp.e > sp.b) out.push_back({p.text.substr(sp.b, sp.e - sp.b), p.atStart && sp.b == 0});
}

void findString(std::string_view s, std::string_view pat, Spans& hits)
{
    if (pat.empty()) return;
    std::size_t pos = 0;
    while ((pos = s.find(pat, pos)) != std::string_view::npos) {
        hits.emplace_back(pos, pos + pat.size());
        pos += pat.size();
    }
}

} // namespace

std::vector<Piece> preTokenize(const std::vector<PreTokStep>& steps, Piece input)
{
    std::vector<Piece> cur;
    cur.push_back(std::move(input));
    std::vector<Piece> next;
    Spans hits;
    const auto& b2u = byteToUnicode();
    for (const PreTokStep& st : steps) {
        next.clear();
        for (Piece& p : cur) {
            hits.clear();
            switch (st.type) {
            case PreTokStep::Type::ByteLevel: {
                if (st.addPrefixSpace && !p.text.starts_with(" ")) p.text.insert(0, 1, ' ');
                std::vector<Piece> parts;
                if (st.useRegex) {
                    findHandCodedMatches(HandCodedRegex::Gpt2, p.text, hits);
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
                if (st.handCoded) findHandCodedMatches(*st.handCoded, p.text, hits);
                else findRegexMatches(*st.regex, p.text, hits);
                applySplit(p, hits, st.behavior, st.invert, next);
                break;
            case PreTokStep::Type::SplitString:
                findString(p.text, st.pattern, hits);
                applySplit(p, hits, st.behavior, st.invert, next);
                break;
            case PreTokStep::Type::Metaspace: {
                replaceAll(p.text, " ", st.pattern);
                const bool prepend =
                    st.prepend == PrependScheme::Always || (st.prepend == PrependScheme::First && p.atStart);
                if (prepend && !p.text.starts_with(st.pattern)) p.text.insert(0, st.pattern);
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

} // namespace qb::io::detail
