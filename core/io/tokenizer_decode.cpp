// Tokenizer decoders: token texts back to text through the tokenizer.json decoder chain
// (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace), as the Rust crate's decoders.
// Invalid UTF-8 left after the byte-level steps becomes U+FFFD.
// Threading: const over immutable loaded data.

#include "io/tokenizer_detail.h"

#include <cctype>
#include <cstdlib>

namespace qb::io::detail {

std::string TokenizerImpl::decodeTokens(std::vector<std::string> toks) const
{
    if (!hasDecoder) {
        std::string out;
        for (std::size_t i = 0; i < toks.size(); ++i) {
            if (i) out += ' ';
            out += toks[i];
        }
        return out;
    }
    for (const DecoderStep& d : decoders) {
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
                    if (b < 0) ok = false;
                    else mapped += char(b);
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
                if (tok.size() == 6 && tok.starts_with("<0x") && tok[5] == '>') {
                    char* end = nullptr;
                    const std::string hex = tok.substr(3, 2);
                    const long v = std::strtol(hex.c_str(), &end, 16);
                    if (end == hex.c_str() + 2 && std::isxdigit((unsigned char)hex[0])) byte = int(v);
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

} // namespace qb::io::detail
