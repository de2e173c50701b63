// Split pre-tokenizer regexes run through PCRE2 (8-bit, UTF + UCP, JIT when available), with the
// semantics of the regex engine of Hugging Face's tokenizers: Oniguruma, Ruby syntax, Unicode 16
// (tokenizers 0.23). A pattern is translated from Oniguruma's syntax to PCRE2's first; the places
// where the two engines read the same text differently, and what the translation does:
//   - Unicode version. Debian 12's PCRE2 10.42 has Unicode 14 tables, the reference Unicode 16
//     (digits of Kawi, Nag Mundari, Garay, ... are \p{N} there). \p{<general category>},
//     \p{Alphabetic}, \d, \w and the POSIX brackets built on them get the code points the
//     reference adds (tokenizer_unicode_delta.inc, generated from both engines); all other
//     properties (scripts, Uppercase, ...) keep PCRE2's Unicode 14 tables.
//   - \s is the White_Space property in Oniguruma; PCRE2's \s also takes U+180E. Spelled out.
//   - \w: Oniguruma's word characters are Alphabetic, M, Nd and Pc, plus ² ³ ¹ ¼ ½ ¾ outside
//     brackets only (PCRE2 10.42: L, N and '_'). Spelled out, and \b \B rebuilt on it.
//   - \h \H are hex digits in Oniguruma (horizontal space in PCRE2); \v is VT (a class in PCRE2);
//     \uHHHH is a code point (an error in PCRE2).
//   - ^ and $ are line anchors in Oniguruma's Ruby syntax (PCRE2_MULTILINE); '.' stops at LF
//     only in both (PCRE2_NEWLINE_LF). (?m) is "dot matches LF" in Ruby syntax: PCRE2's (?s).
//   - Quantifiers: *+ ++ ?+ are possessive in both; {n,m}+ and {n}+ are a greedy interval then a
//     '+' in Oniguruma (possessive in PCRE2), {n}? is an optional {n} (lazy in PCRE2), {,n} is
//     {0,n} (a literal in PCRE2 10.42), and a repeat may follow a repeat: all rewritten by
//     wrapping the repeated atom in (?:...).
//   - (?i:...) folds case in both with Unicode simple case folding (ſ and 's', K and 'k'); only
//     Oniguruma also folds one character to several (ß and "ss"): a caseless 'ss' or 'ß' in a
//     pattern (none of the published tokenizers has one) may match less here.
//   - Scripts: \p{Han} is the Script property in Oniguruma, Script_Extensions in PCRE2 10.42 (which
//     puts 。 in Han): written \p{sc:Han}. Grapheme clusters (\X) follow PCRE2's Unicode 14 rules,
//     which join some emoji sequences Oniguruma splits.
//   - Character classes may nest and intersect (&&) in Oniguruma ([^(\s|[.,!?])] in BLOOM): a
//     class is parsed into a set expression and written as one PCRE2 class where possible, else
//     as lookaheads around one code point.
//   - Oniguruma-only syntax PCRE2 would read differently is refused with Unsupported: the absent
//     operator (?~...), callouts (?{...}) and (*...) (PCRE2 verbs), \y \Y \Q \E, and option
//     letters other than i, m, x.
// Matches are found as the onig crate's find_iter does (an empty match right after a match is
// skipped), and a PCRE2 match limit stops catastrophic backtracking: the rest of that piece is then
// left unmatched rather than the call hanging.
// Threading: a compiled RegexProgram is immutable; matching uses a thread-local match block.

#include "io/tokenizer_detail.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <initializer_list>
#include <cctype>
#include <cstdio>

namespace qb::io::detail {

namespace {
#include "io/tokenizer_unicode_delta.inc"
} // namespace

const UnicodeDelta* unicodeDelta(std::string_view name)
{
    for (const UnicodeDelta& d : kUnicodeDeltas)
        if (name == d.name) return &d;
    return nullptr;
}

bool inRanges(const CodeRange* ranges, std::size_t count, char32_t c)
{
    const CodeRange* end = ranges + count;
    const CodeRange* it = std::upper_bound(ranges, end, c, [](char32_t v, const CodeRange& r) { return v < r.first; });
    return it != ranges && c <= (it - 1)->last;
}

namespace {

// ---- character sets, written as PCRE2 atoms that match one code point ----

// Concatenation (GCC 12 warns falsely on "literal" + std::string temporaries).
std::string cat(std::initializer_list<std::string_view> parts)
{
    std::string out;
    for (std::string_view p : parts)
        out += p;
    return out;
}

struct CharSet {
    enum class Op { Items, Union, Intersect, Complement } op = Op::Items;
    std::string items{}; // Op::Items: the body of a PCRE2 class, a union
    std::vector<CharSet> kids{};
};

CharSet items(std::string body) { return {CharSet::Op::Items, std::move(body), {}}; }

CharSet complement(CharSet s)
{
    if (s.op == CharSet::Op::Complement) return std::move(s.kids.front());
    return {CharSet::Op::Complement, {}, {std::move(s)}};
}

CharSet combine(CharSet::Op op, std::vector<CharSet> kids)
{
    if (kids.size() == 1) return std::move(kids.front());
    CharSet out{op, {}, {}};
    std::string merged; // a union's plain items merge into one class
    bool anyItems = false;
    for (CharSet& k : kids) {
        if (k.op == op) {
            for (CharSet& g : k.kids)
                out.kids.push_back(std::move(g));
        } else if (op == CharSet::Op::Union && k.op == CharSet::Op::Items) {
            merged += k.items;
            anyItems = true;
        } else {
            out.kids.push_back(std::move(k));
        }
    }
    if (anyItems) out.kids.insert(out.kids.begin(), items(std::move(merged)));
    if (out.kids.size() == 1) return std::move(out.kids.front());
    return out;
}

std::string emit(const CharSet& s)
{
    switch (s.op) {
    case CharSet::Op::Items: return s.items.empty() ? "(?!)" : cat({"[", s.items, "]"});
    case CharSet::Op::Complement: {
        const CharSet& k = s.kids.front();
        if (k.op == CharSet::Op::Items) return k.items.empty() ? "(?s:.)" : cat({"[^", k.items, "]"});
        return cat({"(?:(?!", emit(k), ")(?s:.))"});
    }
    case CharSet::Op::Union: {
        std::string out = "(?:";
        for (std::size_t i = 0; i < s.kids.size(); ++i)
            out += cat({i ? "|" : "", emit(s.kids[i])});
        return out + ")";
    }
    case CharSet::Op::Intersect: {
        std::string out = "(?:";
        for (std::size_t i = 0; i + 1 < s.kids.size(); ++i)
            out += cat({"(?=", emit(s.kids[i]), ")"});
        return cat({out, emit(s.kids.back()), ")"});
    }
    }
    return {};
}

std::string hexCode(char32_t c)
{
    char buf[16];
    std::snprintf(buf, sizeof buf, "\\x{%X}", unsigned(c));
    return buf;
}

std::string rangesText(const CodeRange* r, std::size_t n)
{
    std::string out;
    for (std::size_t i = 0; i < n; ++i) {
        out += hexCode(r[i].first);
        if (r[i].last != r[i].first) out += cat({"-", hexCode(r[i].last)});
    }
    return out;
}

// `pcreItems` (class items meaning `name` in PCRE2's Unicode 14) corrected to the reference's tables.
CharSet withDelta(std::string pcreItems, std::string_view name)
{
    const UnicodeDelta* d = unicodeDelta(name);
    if (!d) return items(std::move(pcreItems));
    CharSet s = items(std::move(pcreItems) + rangesText(d->added, d->addedCount));
    if (d->removedCount == 0) return s;
    return combine(CharSet::Op::Intersect, {complement(items(rangesText(d->removed, d->removedCount))), std::move(s)});
}

const char* const kWhiteSpaceItems = "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
                                     "\\x{202F}\\x{205F}\\x{3000}";
const char* const kHexItems = "0-9A-Fa-f";

CharSet whiteSpace() { return items(kWhiteSpaceItems); }
CharSet word(bool inClass)
{
    return inClass ? withDelta("\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}", "WordInClass")
                   : withDelta("\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}", "Word");
}

// Oniguruma matches property names loosely: case, spaces, '_' and '-' do not count.
std::string looseName(std::string_view name)
{
    std::string out;
    for (char c : name)
        if (c != ' ' && c != '_' && c != '-') out += char(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return out;
}

// General categories (short and long names) and the binary properties the delta table covers.
std::optional<std::string> canonicalProperty(std::string_view name)
{
    static const std::pair<const char*, const char*> kNames[] = {
        {"l", "L"},
        {"letter", "L"},
        {"lu", "Lu"},
        {"uppercaseletter", "Lu"},
        {"ll", "Ll"},
        {"lowercaseletter", "Ll"},
        {"lt", "Lt"},
        {"titlecaseletter", "Lt"},
        {"lm", "Lm"},
        {"modifierletter", "Lm"},
        {"lo", "Lo"},
        {"otherletter", "Lo"},
        {"m", "M"},
        {"mark", "M"},
        {"combiningmark", "M"},
        {"mn", "Mn"},
        {"nonspacingmark", "Mn"},
        {"mc", "Mc"},
        {"spacingmark", "Mc"},
        {"me", "Me"},
        {"enclosingmark", "Me"},
        {"n", "N"},
        {"number", "N"},
        {"nd", "Nd"},
        {"decimalnumber", "Nd"},
        {"nl", "Nl"},
        {"letternumber", "Nl"},
        {"no", "No"},
        {"othernumber", "No"},
        {"p", "P"},
        {"punctuation", "P"},
        {"pc", "Pc"},
        {"connectorpunctuation", "Pc"},
        {"pd", "Pd"},
        {"dashpunctuation", "Pd"},
        {"ps", "Ps"},
        {"openpunctuation", "Ps"},
        {"pe", "Pe"},
        {"closepunctuation", "Pe"},
        {"pi", "Pi"},
        {"initialpunctuation", "Pi"},
        {"pf", "Pf"},
        {"finalpunctuation", "Pf"},
        {"po", "Po"},
        {"otherpunctuation", "Po"},
        {"s", "S"},
        {"symbol", "S"},
        {"sm", "Sm"},
        {"mathsymbol", "Sm"},
        {"sc", "Sc"},
        {"currencysymbol", "Sc"},
        {"sk", "Sk"},
        {"modifiersymbol", "Sk"},
        {"so", "So"},
        {"othersymbol", "So"},
        {"z", "Z"},
        {"separator", "Z"},
        {"zs", "Zs"},
        {"spaceseparator", "Zs"},
        {"zl", "Zl"},
        {"lineseparator", "Zl"},
        {"zp", "Zp"},
        {"paragraphseparator", "Zp"},
        {"c", "C"},
        {"other", "C"},
        {"cc", "Cc"},
        {"control", "Cc"},
        {"cf", "Cf"},
        {"format", "Cf"},
        {"co", "Co"},
        {"privateuse", "Co"},
        {"cn", "Cn"},
        {"unassigned", "Cn"},
        {"cs", "Cs"},
        {"surrogate", "Cs"},
        {"alphabetic", "Alphabetic"},
        {"alpha", "Alphabetic"},
        {"whitespace", "WhiteSpace"},
        {"space", "WhiteSpace"},
    };
    const std::string key = looseName(name);
    for (auto [k, v] : kNames)
        if (key == k) return std::string(v);
    return std::nullopt;
}

// PCRE2 10.40+ reads \p{Han} as Script_Extensions (which takes 。 into Han), Oniguruma as Script:
// a script name is spelled \p{sc:Name}.
bool isScriptName(std::string_view name)
{
    const std::string probe = cat({"\\p{sc:", name, "}"});
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(probe.data()), probe.size(), PCRE2_UTF | PCRE2_UCP,
                                   &code, &offset, nullptr);
    pcre2_code_free(re);
    return re != nullptr;
}

CharSet property(std::string_view name)
{
    const auto canon = canonicalProperty(name);
    if (!canon && isScriptName(name)) return items(cat({"\\p{sc:", name, "}"}));
    if (!canon) return items(cat({"\\p{", name, "}"})); // binary properties: PCRE2's tables
    if (*canon == "WhiteSpace") return whiteSpace();
    return withDelta(cat({"\\p{", *canon, "}"}), *canon);
}

std::optional<CharSet> posixBracket(std::string_view name)
{
    if (name == "alpha") return property("Alphabetic");
    if (name == "digit") return property("Nd");
    if (name == "alnum") return combine(CharSet::Op::Union, {property("Alphabetic"), property("Nd")});
    if (name == "upper") return items("\\p{Uppercase}");
    if (name == "lower") return items("\\p{Lowercase}");
    if (name == "space") return whiteSpace();
    if (name == "blank") return combine(CharSet::Op::Union, {items("\\t"), property("Zs")});
    if (name == "cntrl") return property("Cc");
    if (name == "punct") return combine(CharSet::Op::Union, {property("P"), property("S")});
    if (name == "word") return word(true);
    if (name == "xdigit") return items(kHexItems);
    return std::nullopt;
}

// ---- the translator ----

class Translator {
public:
    explicit Translator(std::string_view p) : m_p(p) {}

    Result<std::string> run()
    {
        while (m_i < m_p.size() && m_error.empty())
            step();
        if (!m_error.empty()) return makeError(ErrorCode::Unsupported, m_error, {});
        return std::move(m_out);
    }

private:
    std::string_view m_p;
    std::size_t m_i = 0;
    std::string m_out;
    std::string m_error;
    std::size_t m_atom = std::string::npos; // where the last repeatable atom starts in m_out
    bool m_repeated = false;                // that atom already carries a quantifier
    bool m_extended = false;                // (?x): white space and # comments are not pattern
    struct Group {
        std::size_t start;
        bool extended;
    };
    std::vector<Group> m_groups;

    bool at(std::string_view s) const { return m_p.substr(m_i, s.size()) == s; }
    void fail(std::string what)
    {
        if (m_error.empty()) m_error = std::move(what);
    }

    void atom(const std::string& text)
    {
        m_atom = m_out.size();
        m_repeated = false;
        m_out += text;
    }
    void nonAtom(std::string_view text)
    {
        m_atom = std::string::npos;
        m_out += text;
    }

    // A quantifier as Oniguruma reads it; a repeat of a repeat wraps the first in (?:...).
    void quantifier(std::string_view q, bool fixedInterval, bool interval)
    {
        if (m_atom == std::string::npos) { // PCRE2 refuses it as Oniguruma does
            m_out += q;
            return;
        }
        if (m_repeated) {
            m_out.insert(m_atom, "(?:");
            m_out += ")";
        }
        m_out += q;
        m_repeated = true;
        if (m_i < m_p.size() && m_p[m_i] == '?' && !fixedInterval) { // lazy
            m_out += '?';
            ++m_i;
        } else if (m_i < m_p.size() && m_p[m_i] == '+' && !interval) { // possessive
            m_out += '+';
            ++m_i;
        }
    }

    // {n}, {n,}, {n,m}, {,m} at m_i; false when the brace is a literal.
    bool interval()
    {
        std::size_t j = m_i + 1;
        auto digits = [&] {
            const std::size_t b = j;
            while (j < m_p.size() && m_p[j] >= '0' && m_p[j] <= '9')
                ++j;
            return std::string(m_p.substr(b, j - b));
        };
        const std::string lo = digits();
        bool comma = false;
        std::string hi;
        if (j < m_p.size() && m_p[j] == ',') {
            comma = true;
            ++j;
            hi = digits();
        }
        if (j >= m_p.size() || m_p[j] != '}' || (lo.empty() && hi.empty())) return false;
        m_i = j + 1;
        const std::string q = cat({"{", lo.empty() ? "0" : lo, comma ? "," : "", hi, "}"});
        quantifier(q, !comma, true);
        return true;
    }

    // Reads a code point escape (\t \n \xHH \x{...} \uHHHH \ooo ...) after the backslash at
    // m_i; returns nullopt (m_i unchanged) when the escape is not one.
    std::optional<char32_t> codeEscape(bool inClass)
    {
        const char c = m_p[m_i + 1];
        auto hex = [&](std::size_t from, std::size_t maxDigits, std::size_t& end) -> std::optional<char32_t> {
            char32_t v = 0;
            std::size_t k = from;
            for (; k < m_p.size() && k - from < maxDigits; ++k) {
                const char d = m_p[k];
                const int digit = d >= '0' && d <= '9'   ? d - '0'
                                  : d >= 'a' && d <= 'f' ? d - 'a' + 10
                                  : d >= 'A' && d <= 'F' ? d - 'A' + 10
                                                         : -1;
                if (digit < 0) break;
                v = v * 16 + char32_t(digit);
            }
            if (k == from || v > 0x10FFFF) return std::nullopt;
            end = k;
            return v;
        };
        std::size_t end = 0;
        switch (c) {
        case 't': m_i += 2; return U'\t';
        case 'n': m_i += 2; return U'\n';
        case 'r': m_i += 2; return U'\r';
        case 'f': m_i += 2; return U'\f';
        case 'v': m_i += 2; return U'\v';
        case 'a': m_i += 2; return U'\a';
        case 'e': m_i += 2; return U'\x1B';
        case 'b':
            if (!inClass) return std::nullopt;
            m_i += 2;
            return U'\b';
        case 'x':
            if (m_i + 2 < m_p.size() && m_p[m_i + 2] == '{') {
                const auto v = hex(m_i + 3, 8, end);
                if (!v || end >= m_p.size() || m_p[end] != '}') {
                    fail("malformed \\x{...} escape");
                    return U'\0';
                }
                m_i = end + 1;
                return v;
            }
            if (const auto v = hex(m_i + 2, 2, end)) {
                m_i = end;
                return v;
            }
            return std::nullopt;
        case 'u':
            if (const auto v = hex(m_i + 2, 4, end); v && end == m_i + 6) {
                m_i = end;
                return v;
            }
            return std::nullopt;
        default: break;
        }
        if (c >= '0' && c <= '7' && (inClass || c == '0')) { // octal (outside a class \1-\9 are backrefs)
            char32_t v = 0;
            std::size_t k = m_i + 1;
            while (k < m_p.size() && k < m_i + 4 && m_p[k] >= '0' && m_p[k] <= '7')
                v = v * 8 + char32_t(m_p[k++] - '0');
            m_i = k;
            return v;
        }
        return std::nullopt;
    }

    // \s \S \d \D \w \W \h \H \p{..} \P{..} at m_i (a backslash); advances on success.
    std::optional<CharSet> classEscape(bool inClass)
    {
        const char c = m_p[m_i + 1];
        std::optional<CharSet> s;
        switch (c) {
        case 's': s = whiteSpace(); break;
        case 'S': s = complement(whiteSpace()); break;
        case 'd': s = property("Nd"); break;
        case 'D': s = complement(property("Nd")); break;
        case 'w': s = word(inClass); break;
        case 'W': s = complement(word(inClass)); break;
        case 'h': s = items(kHexItems); break;
        case 'H': s = complement(items(kHexItems)); break;
        case 'p':
        case 'P': {
            if (m_i + 2 >= m_p.size() || m_p[m_i + 2] != '{') return std::nullopt;
            const std::size_t close = m_p.find('}', m_i + 3);
            if (close == std::string_view::npos) return std::nullopt;
            std::string_view name = m_p.substr(m_i + 3, close - m_i - 3);
            bool negate = c == 'P';
            if (name.starts_with('^')) {
                negate = !negate;
                name.remove_prefix(1);
            }
            CharSet p = property(name);
            m_i = close + 1;
            return negate ? complement(std::move(p)) : p;
        }
        default: return std::nullopt;
        }
        m_i += 2;
        return s;
    }

    // One code point of literal text at m_i.
    char32_t literal()
    {
        const CodePoint cp = decodeUtf8(m_p, m_i);
        m_i += std::size_t(cp.len);
        return cp.cp;
    }

    // A bracket expression at m_i ('['): [^...], ranges, escapes, [:posix:], nested classes, &&.
    std::optional<CharSet> bracket(int depth)
    {
        if (depth > 32) {
            fail("character classes nest deeper than 32");
            return std::nullopt;
        }
        ++m_i; // '['
        bool negate = false;
        if (m_i < m_p.size() && m_p[m_i] == '^') {
            negate = true;
            ++m_i;
        }
        std::vector<CharSet> operands; // && intersects these
        std::vector<CharSet> unionKids;
        std::string plain;
        auto flush = [&] {
            if (!plain.empty()) unionKids.push_back(items(std::move(plain)));
            plain.clear();
            operands.push_back(unionKids.empty() ? items({}) : combine(CharSet::Op::Union, std::move(unionKids)));
            unionKids.clear();
        };
        bool first = true;
        for (;;) {
            if (m_i >= m_p.size()) {
                fail("unterminated character class");
                return std::nullopt;
            }
            const char c = m_p[m_i];
            if (c == ']' && !first) {
                ++m_i;
                break;
            }
            first = false;
            if (at("&&")) {
                m_i += 2;
                flush();
                continue;
            }
            if (c == '[' && at("[:")) {
                const std::size_t close = m_p.find(":]", m_i + 2);
                if (close != std::string_view::npos) {
                    std::string_view name = m_p.substr(m_i + 2, close - m_i - 2);
                    const bool neg = name.starts_with('^');
                    if (neg) name.remove_prefix(1);
                    auto s = posixBracket(name);
                    if (!s) {
                        fail(cat({"POSIX bracket [:", name, ":] is not supported"}));
                        return std::nullopt;
                    }
                    m_i = close + 2;
                    unionKids.push_back(neg ? complement(std::move(*s)) : std::move(*s));
                    continue;
                }
            }
            if (c == '[') {
                auto nested = bracket(depth + 1);
                if (!nested) return std::nullopt;
                unionKids.push_back(std::move(*nested));
                continue;
            }
            char32_t lo;
            if (c == '\\') {
                if (m_i + 1 >= m_p.size()) {
                    fail("pattern ends with a backslash");
                    return std::nullopt;
                }
                if (auto s = classEscape(true)) {
                    unionKids.push_back(std::move(*s));
                    continue;
                }
                if (auto v = codeEscape(true)) {
                    lo = *v;
                } else {
                    m_i += 1;
                    lo = literal(); // an escaped punctuation character stands for itself
                }
            } else {
                lo = literal();
            }
            // a range lo-hi (a '-' before ']' is literal)
            if (m_i + 1 < m_p.size() && m_p[m_i] == '-' && m_p[m_i + 1] != ']') {
                const std::size_t save = m_i;
                ++m_i;
                std::optional<char32_t> hi;
                if (m_p[m_i] == '\\' && m_i + 1 < m_p.size()) {
                    hi = codeEscape(true);
                    if (!hi && !std::isalnum(static_cast<unsigned char>(m_p[m_i + 1]))) {
                        ++m_i;
                        hi = literal();
                    }
                } else if (m_p[m_i] != '[') {
                    hi = literal();
                }
                if (hi) {
                    if (*hi < lo) {
                        fail("character class range is out of order");
                        return std::nullopt;
                    }
                    plain += cat({hexCode(lo), "-", hexCode(*hi)});
                    continue;
                }
                m_i = save;
            }
            plain += hexCode(lo);
        }
        flush();
        CharSet s = combine(CharSet::Op::Intersect, std::move(operands));
        return negate ? complement(std::move(s)) : s;
    }

    void group()
    {
        // m_p[m_i] == '('
        if (at("(*")) return fail("(*...) is a callout in Oniguruma and a verb in PCRE2: not supported");
        if (!at("(?")) {
            m_groups.push_back({m_out.size(), m_extended});
            nonAtom("(");
            ++m_i;
            return;
        }
        const char k = m_i + 2 < m_p.size() ? m_p[m_i + 2] : '\0';
        if (k == '#') { // comment
            const std::size_t close = m_p.find(')', m_i);
            if (close == std::string_view::npos) return fail("unterminated (?# comment");
            m_i = close + 1;
            return;
        }
        if (k == '~') return fail("the absent operator (?~...) is not supported");
        if (k == '{') return fail("callouts (?{...}) are not supported");
        if (k == '(') { // conditional: copy the condition through its ')'
            const std::size_t close = m_p.find(')', m_i + 3);
            if (close == std::string_view::npos) return fail("unterminated conditional group");
            m_groups.push_back({m_out.size(), m_extended});
            nonAtom(m_p.substr(m_i, close + 1 - m_i));
            m_i = close + 1;
            return;
        }
        if (k == ':' || k == '=' || k == '!' || k == '>' || (k == '<' && m_i + 3 < m_p.size()) || k == '\'' ||
            k == 'P') {
            // non-capturing, lookaround, atomic, named (?<name> (?'name' (?P<name>
            std::size_t j = m_i + 3;
            if (k == '<' && (m_p[j] == '=' || m_p[j] == '!')) {
                ++j;
            } else if (k == '<' || k == '\'' || k == 'P') {
                const std::size_t close = m_p.find(k == '\'' ? '\'' : '>', j);
                if (close == std::string_view::npos) return fail("unterminated group name");
                j = close + 1;
            }
            m_groups.push_back({m_out.size(), m_extended});
            nonAtom(m_p.substr(m_i, j - m_i));
            m_i = j;
            return;
        }
        // options: (?imx-imx) or (?imx-imx:...)
        std::string opts = "(?";
        bool on = true, extended = m_extended;
        std::size_t j = m_i + 2;
        for (; j < m_p.size() && m_p[j] != ')' && m_p[j] != ':'; ++j) {
            const char o = m_p[j];
            if (o == '-') {
                on = false;
                opts += '-';
            } else if (o == 'i') {
                opts += 'i';
            } else if (o == 'm') {
                opts += 's'; // Ruby's "dot matches newline"
            } else if (o == 'x') {
                opts += 'x';
                extended = on;
            } else {
                return fail(cat({"group option '", std::string(1, o), "' is not supported (i, m, x are)"}));
            }
        }
        if (j >= m_p.size()) return fail("unterminated group");
        if (m_p[j] == ')') { // applies to the rest of the enclosing group
            m_extended = extended;
            nonAtom(opts + ")");
        } else {
            m_groups.push_back({m_out.size(), m_extended});
            m_extended = extended;
            nonAtom(opts + ":");
        }
        m_i = j + 1;
    }

    void escape()
    {
        if (m_i + 1 >= m_p.size()) return fail("pattern ends with a backslash");
        const char c = m_p[m_i + 1];
        if (c == 'b' || c == 'B') { // word boundary on Oniguruma's \w
            const std::string w = emit(word(false));
            const std::string b = cat({"(?:(?<=", w, ")(?!", w, ")|(?<!", w, ")(?=", w, "))"});
            const std::string nb = cat({"(?:(?<=", w, ")(?=", w, ")|(?<!", w, ")(?!", w, "))"});
            nonAtom(c == 'b' ? b : nb);
            m_i += 2;
            return;
        }
        if (c == 'y' || c == 'Y' || c == 'Q' || c == 'E')
            return fail(cat({"\\", std::string(1, c), " is not supported (Oniguruma and PCRE2 read it differently)"}));
        if (c == 'O') {
            atom("(?s:.)");
            m_i += 2;
            return;
        }
        if (auto s = classEscape(false)) return atom(emit(*s));
        if (auto v = codeEscape(false)) return atom(hexCode(*v));
        if (c == 'A' || c == 'z' || c == 'Z' || c == 'G' || c == 'K') {
            nonAtom(m_p.substr(m_i, 2));
            m_i += 2;
            return;
        }
        if (c == 'k' || c == 'g') { // \k<name> \g<name> \k'n': backreference, subroutine call
            if (m_i + 2 < m_p.size() && (m_p[m_i + 2] == '<' || m_p[m_i + 2] == '\'')) {
                const std::size_t close = m_p.find(m_p[m_i + 2] == '<' ? '>' : '\'', m_i + 3);
                if (close == std::string_view::npos) return fail("unterminated \\k or \\g name");
                atom(std::string(m_p.substr(m_i, close + 1 - m_i)));
                m_i = close + 1;
                return;
            }
        }
        if (c >= '1' && c <= '9') { // backreference
            std::size_t j = m_i + 1;
            while (j < m_p.size() && m_p[j] >= '0' && m_p[j] <= '9')
                ++j;
            atom(std::string(m_p.substr(m_i, j - m_i)));
            m_i = j;
            return;
        }
        // \R \X \N \cX, escaped punctuation: the same in both engines
        std::size_t len = 2;
        if (c == 'c' && m_i + 2 < m_p.size()) len = 3;
        if (static_cast<unsigned char>(c) >= 0x80) { // an escaped non-ASCII character is itself
            m_i += 1;
            atom(hexCode(literal()));
            return;
        }
        atom(std::string(m_p.substr(m_i, len)));
        m_i += len;
    }

    void step()
    {
        const char c = m_p[m_i];
        if (m_extended) {
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
                ++m_i;
                return;
            }
            if (c == '#') {
                const std::size_t nl = m_p.find('\n', m_i);
                m_i = nl == std::string_view::npos ? m_p.size() : nl + 1;
                return;
            }
        }
        switch (c) {
        case '\\': return escape();
        case '[': {
            auto s = bracket(0);
            if (s) atom(emit(*s));
            return;
        }
        case '(': return group();
        case ')':
            if (m_groups.empty()) return fail("unmatched ')'");
            m_atom = m_groups.back().start;
            m_extended = m_groups.back().extended;
            m_repeated = false;
            m_groups.pop_back();
            m_out += ')';
            ++m_i;
            return;
        case '|':
            nonAtom("|");
            ++m_i;
            return;
        case '^':
        case '$':
            nonAtom(std::string(1, c));
            ++m_i;
            return;
        case '*':
        case '+':
        case '?': ++m_i; return quantifier(std::string(1, c), false, false);
        case '{':
            if (interval()) return;
            ++m_i;
            return atom("\\{");
        case '.': ++m_i; return atom(".");
        default: {
            const std::size_t b = m_i;
            literal();
            const std::string_view text = m_p.substr(b, m_i - b);
            // characters PCRE2 might read as syntax are escaped; the rest pass as they are
            if (text == "}" || text == "]" || text == "#" || text == " ") return atom(cat({"\\", text}));
            return atom(std::string(text));
        }
        }
    }
};

} // namespace

Result<std::string> translateOnigurumaPattern(std::string_view pattern) { return Translator(pattern).run(); }

// ---- compiled programs ----

struct RegexProgram {
    pcre2_code* code = nullptr;
    pcre2_match_context* context = nullptr;
    bool jit = false;
    ~RegexProgram()
    {
        pcre2_match_context_free(context);
        pcre2_code_free(code);
    }
};

Result<std::shared_ptr<const RegexProgram>> compileSplitRegex(const std::string& pattern)
{
    auto shown = [&] { return pattern.size() > 200 ? pattern.substr(0, 200) + "..." : pattern; };
    if (pattern.size() > kMaxSplitPatternBytes)
        return makeError(ErrorCode::Unsupported,
                         "Split regex of " + std::to_string(pattern.size()) + " bytes is longer than the " +
                             std::to_string(kMaxSplitPatternBytes) + " we accept: " + shown(),
                         {});
    auto translated = translateOnigurumaPattern(pattern);
    if (!translated)
        return makeError(ErrorCode::Unsupported, "Split regex '" + shown() + "': " + translated.error().message, {});
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    pcre2_set_bsr(cc, PCRE2_BSR_UNICODE);
    pcre2_set_max_pattern_length(cc, kMaxSplitPatternBytes * 64); // property escapes grow when spelled out
    auto program = std::make_shared<RegexProgram>();
    program->code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated->data()), translated->size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C, &code, &offset, cc);
    pcre2_compile_context_free(cc);
    if (!program->code) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(code, message, sizeof message);
        return makeError(ErrorCode::Format,
                         "Split regex '" + shown() + "' does not compile: " + reinterpret_cast<const char*>(message) +
                             " (at offset " + std::to_string(offset) + " of its PCRE2 form)",
                         {});
    }
    program->jit = pcre2_jit_compile(program->code, PCRE2_JIT_COMPLETE) == 0;
    program->context = pcre2_match_context_create(nullptr);
    pcre2_set_match_limit(program->context, kSplitRegexMatchLimit);
    pcre2_set_heap_limit(program->context, 64 * 1024); // KiB
    return std::shared_ptr<const RegexProgram>(std::move(program));
}

bool usesJit(const RegexProgram& p) { return p.jit; }

namespace {

struct MatchData {
    pcre2_match_data* data = pcre2_match_data_create(1, nullptr); // the whole match is all we read
    ~MatchData() { pcre2_match_data_free(data); }
};

// The onig crate's find_iter over `s` (valid UTF-8).
void findValid(const RegexProgram& p, std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out)
{
    thread_local MatchData md;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    std::size_t lastEnd = 0;
    bool skipNextEmpty = false;
    while (lastEnd <= s.size()) {
        int rc = pcre2_match(p.code, subject, s.size(), lastEnd, PCRE2_NO_UTF_CHECK, md.data, p.context);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) // deep backtracking: the interpreter keeps its stack on the heap
            rc = pcre2_match(p.code, subject, s.size(), lastEnd, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md.data, p.context);
        if (rc < 0) return; // no match, or a limit hit: the rest stays unmatched
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.data);
        const std::size_t b = ov[0], e = ov[1];
        if (e < b) return; // \K in a lookahead can report a start after the end
        lastEnd = e;
        if (b == e) {
            lastEnd += b < s.size() ? std::size_t(decodeUtf8(s, b).len) : 1;
            if (skipNextEmpty) {
                skipNextEmpty = false;
                continue;
            }
        } else {
            skipNextEmpty = true;
        }
        out.emplace_back(b, e);
    }
}

} // namespace

void findRegexMatches(const RegexProgram& p, std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out)
{
    if (firstInvalidUtf8(s) == std::string_view::npos) return findValid(p, s, out);
    // Invalid bytes are matched as U+FFFD (as the hand-coded matchers classify them); spans are
    // mapped back to the original bytes.
    std::string clean;
    std::vector<std::size_t> origin; // byte offset in s of each byte of clean, plus the end
    clean.reserve(s.size() + 16);
    for (std::size_t pos = 0; pos < s.size();) {
        const CodePoint c = decodeUtf8(s, pos);
        const std::size_t before = clean.size();
        appendUtf8(clean, c.cp);
        origin.insert(origin.end(), clean.size() - before, pos);
        pos += std::size_t(c.len);
    }
    origin.push_back(s.size());
    const std::size_t first = out.size();
    findValid(p, clean, out);
    for (std::size_t i = first; i < out.size(); ++i)
        out[i] = {origin[out[i].first], origin[out[i].second]};
}

} // namespace qb::io::detail
