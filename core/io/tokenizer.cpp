// Tokenizer: the public facade (see tokenizer.h) and the encode pipeline that strings the stages
// together: raw added tokens -> normalizers -> normalized added tokens (tokenizer_normalize.cpp)
// -> pre-tokenizers (tokenizer_pretok.cpp) -> BPE per pre-token (tokenizer_bpe.cpp). Loading is
// in tokenizer_load.cpp, the decoders in tokenizer_decode.cpp. The semantics follow the Rust
// `tokenizers` crate (FORMATS.md §3).
// Threading: a Tokenizer shares one immutable TokenizerImpl; encode() keeps its word cache local.

#include "io/tokenizer.h"

#include "io/tokenizer_detail.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QString>

namespace qb::io {

using namespace detail;

namespace {

Result<std::string> readFile(const std::string& path)
{
    QFile f(QString::fromStdString(path));
    if (!f.open(QIODevice::ReadOnly))
        return makeError(ErrorCode::Io, "cannot open: " + f.errorString().toStdString(), path);
    const QByteArray data = f.readAll();
    return data.toStdString();
}

} // namespace

namespace detail {

void TokenizerImpl::encodeText(std::string_view text, std::vector<std::int32_t>& out, WordCache& cache) const
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

std::optional<std::int32_t> TokenizerImpl::lookup(std::string_view s) const
{
    for (const AddedToken& a : addedTokens)
        if (a.content == s) return a.id;
    auto it = vocab.find(s);
    if (it != vocab.end()) return it->second;
    return std::nullopt;
}

} // namespace detail

Tokenizer::Tokenizer(std::shared_ptr<const TokenizerImpl> impl) : m_impl(std::move(impl)) {}

Result<Tokenizer> Tokenizer::fromFile(const std::string& path)
{
    QB_TRY(json, readFile(path));
    std::string config;
    const QString cfgPath = QFileInfo(QString::fromStdString(path)).dir().filePath("tokenizer_config.json");
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

Result<Tokenizer> Tokenizer::fromJsonWithConfig(const std::string& json, const std::string& configJson,
                                                const std::string& name)
{
    QB_TRY(impl, loadTokenizer(json, configJson, name));
    return Tokenizer(std::move(*impl));
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
        if (id < 0 || std::size_t(id) >= t.idToToken.size() || !t.idPresent[std::size_t(id)]) continue;
        if (skipSpecial && t.idSpecial[std::size_t(id)]) continue;
        toks.push_back(t.idToToken[std::size_t(id)]);
    }
    return t.decodeTokens(std::move(toks));
}

std::int64_t Tokenizer::vocabSize() const { return std::int64_t(m_impl->idToToken.size()); }
std::optional<std::int32_t> Tokenizer::bosId() const { return m_impl->bosId; }
std::optional<std::int32_t> Tokenizer::eosId() const { return m_impl->eosId; }
std::optional<std::int32_t> Tokenizer::unkId() const { return m_impl->unkId; }
std::optional<std::int32_t> Tokenizer::padId() const { return m_impl->padId; }

bool Tokenizer::addsBos() const
{
    return m_impl->bosId && !m_impl->prefixIds.empty() && m_impl->prefixIds.front() == *m_impl->bosId;
}

bool Tokenizer::addsEos() const
{
    return m_impl->eosId && !m_impl->suffixIds.empty() && m_impl->suffixIds.back() == *m_impl->eosId;
}

std::string Tokenizer::tokenText(std::int32_t id) const
{
    if (id < 0 || std::size_t(id) >= m_impl->idToToken.size()) return {};
    return m_impl->idToToken[std::size_t(id)];
}

std::optional<std::int32_t> Tokenizer::tokenId(std::string_view text) const { return m_impl->lookup(text); }

bool Tokenizer::isSpecial(std::int32_t id) const
{
    return id >= 0 && std::size_t(id) < m_impl->idSpecial.size() && m_impl->idSpecial[std::size_t(id)];
}

Tokenizer::Kind Tokenizer::kind() const { return m_impl->kind; }
const std::string& Tokenizer::sourceName() const { return m_impl->name; }

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

const std::vector<std::pair<std::string, std::string>>& Tokenizer::mergePairs() const { return m_impl->mergeList; }

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
        if (s.type == PreTokStep::Type::SplitRegex && s.handCoded) {
            switch (*s.handCoded) {
            case HandCodedRegex::Llama3: return "llama-bpe";
            case HandCodedRegex::Qwen2: return "qwen2";
            case HandCodedRegex::Gpt2: return "gpt-2";
            }
        }
        if (s.type == PreTokStep::Type::ByteLevel && s.useRegex) return "gpt-2";
    }
    return "default";
}

} // namespace qb::io
