#include "io/utf8.h"

namespace qb::io {

namespace {

// Second-byte ranges for multi-byte UTF-8 leads (Unicode Table 3-7).
bool utf8Lead(unsigned char b, int& len, unsigned char& lo, unsigned char& hi)
{
    lo = 0x80;
    hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        len = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        return false;
    }
    return true;
}

// Length of the valid prefix of the sequence at pos (complete = true when it is whole).
int utf8Scan(std::string_view s, std::size_t pos, bool& complete, char32_t& cp)
{
    const auto b0 = static_cast<unsigned char>(s[pos]);
    complete = false;
    if (b0 < 0x80) {
        complete = true;
        cp = b0;
        return 1;
    }
    int len = 0;
    unsigned char lo = 0, hi = 0;
    if (!utf8Lead(b0, len, lo, hi)) return 1;
    cp = b0 & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    int i = 1;
    for (; i < len; ++i) {
        if (pos + i >= s.size()) return i;
        const auto b = static_cast<unsigned char>(s[pos + i]);
        const unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) return i;
        cp = (cp << 6) | (b & 0x3F);
    }
    complete = true;
    return len;
}

} // namespace

CodePoint decodeUtf8(std::string_view s, std::size_t pos)
{
    bool complete = false;
    char32_t cp = 0;
    const int n = utf8Scan(s, pos, complete, cp);
    if (!complete) return {0xFFFD, 1};
    return {cp, n};
}

void appendUtf8(std::string& out, char32_t cp)
{
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

std::string sanitizeUtf8(std::string_view bytes)
{
    std::string out;
    out.reserve(bytes.size());
    std::size_t i = 0;
    while (i < bytes.size()) {
        bool complete = false;
        char32_t cp = 0;
        const int n = utf8Scan(bytes, i, complete, cp);
        if (complete) out.append(bytes.substr(i, n));
        else out += "\xEF\xBF\xBD";
        i += n;
    }
    return out;
}

std::size_t firstInvalidUtf8(std::string_view s)
{
    for (std::size_t i = 0; i < s.size();) {
        bool complete = false;
        char32_t cp = 0;
        const int n = utf8Scan(s, i, complete, cp);
        if (!complete) return i;
        i += std::size_t(n);
    }
    return std::string_view::npos;
}

} // namespace qb::io
