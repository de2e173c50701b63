// Tokenizer text before pre-tokenization: added-token matching (the Rust crate's AddedVocabulary,
// run on the raw text and again on the normalized text) and the normalizer chain. Unicode
// normalization forms and lowercasing use QString (Qt's Unicode tables), entered without Qt's BOM
// stripping.
// Threading: pure functions over immutable loaded data.

#include "io/tokenizer_detail.h"

#include <QString>
#include <QStringDecoder>

#include <algorithm>

namespace qb::io::detail {

namespace {

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
            s = toQString(sanitizeUtf8(s)).normalized(form).toStdString();
            break;
        }
        case T::Lowercase: s = toQString(s).toLower().toStdString(); break;
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
