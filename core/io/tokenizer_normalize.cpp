// Tokenizer text before pre-tokenization: added-token matching (the Rust crate's AddedVocabulary,
// run on the raw text and again on the normalized text) and the normalizer chain. Unicode
// normalization forms and lowercasing use QString (Qt's Unicode tables), entered without Qt's BOM
// stripping, with the reference's Unicode versions:
//   - NFC/NFD/NFKC/NFKD: the Rust crate normalizes with unicode-normalization-alignments, whose
//     tables are Unicode 9 (a code point assigned later is left as it is, with combining class 0).
//     Qt normalizes as of any earlier version it is asked for: Unicode 9.
//   - Lowercase: Rust's char::to_lowercase, one code point at a time, with the tables of the Rust
//     release the wheel was built with (Unicode 17 for tokenizers 0.23.3); Qt 6.4 has Unicode 14.
//     The code points they map differently are mapped first (tokenizer_lowercase_delta.inc).
// tst_tokenizer checks both on every code point against the reference.
// Threading: pure functions over immutable loaded data.

#include "io/tokenizer_detail.h"

#include <QString>
#include <QStringDecoder>

#include <algorithm>
#include <iterator>

namespace qb::io::detail {

namespace {

constexpr QChar::UnicodeVersion kReferenceNormalizationVersion = QChar::Unicode_9_0;

struct LowercaseDelta {
    char32_t from;
    char32_t to[3]; // unused entries are 0
};
#include "io/tokenizer_lowercase_delta.inc"

bool isAscii(std::string_view s)
{
    return std::all_of(s.begin(), s.end(), [](char c) { return (unsigned char)c < 0x80; });
}

// Rust's char::is_alphanumeric plus '_' (AddedVocabulary's word boundary test).
bool isWordChar(char32_t c) { return c == '_' || isLetter(c) || isNumber(c); }

// UTF-8 to QString keeping every code point: QString::fromUtf8 drops a leading U+FEFF as a byte
// order mark, which is text here (Qwen3's NFC would lose it at the start of a text).
QString toQString(std::string_view utf8)
{
    QStringDecoder decoder(QStringConverter::Utf8, QStringConverter::Flag::ConvertInitialBom);
    return decoder(QByteArrayView(utf8.data(), qsizetype(utf8.size())));
}

// A code point before which the text can be cut and each side normalized alone: a starter
// (combining class 0) that is never the second of a canonical composition pair, so that nothing
// before it reorders or composes with it or with what follows it: ASCII, Hangul syllables and CJK
// unified ideographs.
bool startsNormalizationChunk(char32_t c)
{
    return c < 0x80 || (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0x4E00 && c <= 0x9FFF);
}

// Qt's normalization rewrites its string in place, which takes time quadratic in the number of
// code points it changes (a megabyte of decomposed text: many seconds). Cut into chunks of
// about kChunk bytes, the text normalizes in linear time with the same result.
std::string normalizeForm(const std::string& s, QString::NormalizationForm form)
{
    constexpr std::size_t kChunk = 4096;
    std::string out;
    out.reserve(s.size() + s.size() / 4);
    std::size_t begin = 0;
    while (begin < s.size()) {
        std::size_t end = std::min(begin + kChunk, s.size());
        while (end < s.size()) {
            while (end < s.size() && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80)
                ++end;
            if (end == s.size()) break;
            const CodePoint c = decodeUtf8(s, end);
            if (startsNormalizationChunk(c.cp)) break;
            end += std::size_t(c.len);
        }
        const std::string_view chunk(s.data() + begin, end - begin);
        if (isAscii(chunk)) out.append(chunk); // invariant under every normalization form
        else out += toQString(chunk).normalized(form, kReferenceNormalizationVersion).toStdString();
        begin = end;
    }
    return out;
}

// The Lowercase normalizer: the delta's code points mapped as the reference does, then Qt.
std::string lowercase(const std::string& s)
{
    if (isAscii(s)) {
        std::string out = s;
        for (char& c : out)
            if (c >= 'A' && c <= 'Z') c = char(c + 32);
        return out;
    }
    constexpr char32_t kFirst = std::begin(kLowercaseDelta)->from;
    std::string mapped;
    bool changed = false;
    for (std::size_t pos = 0; pos < s.size();) {
        const CodePoint c = decodeUtf8(s, pos);
        const LowercaseDelta* d = nullptr;
        if (c.cp >= kFirst) {
            const auto* it = std::lower_bound(std::begin(kLowercaseDelta), std::end(kLowercaseDelta), c.cp,
                                              [](const LowercaseDelta& e, char32_t v) { return e.from < v; });
            if (it != std::end(kLowercaseDelta) && it->from == c.cp) d = it;
        }
        if (d) {
            if (!changed) mapped.assign(s, 0, pos);
            changed = true;
            for (char32_t t : d->to)
                if (t) appendUtf8(mapped, t);
        } else if (changed) {
            mapped.append(s, pos, std::size_t(c.len));
        }
        pos += std::size_t(c.len);
    }
    return toQString(changed ? mapped : s).toLower().toStdString();
}

char32_t lastCodePoint(std::string_view s)
{
    std::size_t i = s.size();
    while (i > 0 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80)
        --i;
    if (i > 0) --i;
    return decodeUtf8(s, i).cp;
}

} // namespace

// ---- added tokens ----

AddedMatcher buildAddedMatcher(std::vector<AddedToken> tokens)
{
    AddedMatcher m;
    m.tokens = std::move(tokens);
    for (std::size_t i = 0; i < m.tokens.size(); ++i) {
        if (m.tokens[i].content.empty()) continue;
        m.byFirstByte[static_cast<unsigned char>(m.tokens[i].content[0])].push_back(int(i));
    }
    for (auto& bucket : m.byFirstByte)
        std::stable_sort(bucket.begin(), bucket.end(),
                         [&](int a, int b) { return m.tokens[a].content.size() > m.tokens[b].content.size(); });
    return m;
}

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

// ---- normalizers ----

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
            s = normalizeForm(sanitizeUtf8(s), form);
            break;
        }
        case T::Lowercase: s = lowercase(s); break;
        case T::Prepend:
            if (!s.empty()) s.insert(0, n.a);
            break;
        case T::Replace: replaceAll(s, n.a, n.b); break;
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

} // namespace qb::io::detail
