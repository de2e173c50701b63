#include "io/json_value.h"

#include "io/utf8.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <unordered_set>

namespace qb::io {

namespace {
constexpr std::size_t kLinearKeyScan = 16; // objects up to this many members check keys linearly
}

const char* jsonTypeName(JsonType t)
{
    switch (t) {
    case JsonType::Null: return "null";
    case JsonType::Bool: return "boolean";
    case JsonType::Number: return "number";
    case JsonType::String: return "string";
    case JsonType::Array: return "array";
    case JsonType::Object: return "object";
    }
    return "?";
}

bool JsonValue::isInteger() const
{
    if (!isNumber()) return false;
    const double d = asNumber();
    return std::isfinite(d) && d == std::trunc(d) && std::fabs(d) <= 9.2e18;
}

const JsonValue* JsonValue::find(std::string_view key) const
{
    if (!isObject()) return nullptr;
    for (const JsonMember& m : asObject())
        if (m.key == key) return &m.value;
    return nullptr;
}

JsonValue& JsonValue::set(std::string key, JsonValue value)
{
    if (isNull()) m_v = JsonObject{};
    JsonObject& o = asObject();
    for (JsonMember& m : o)
        if (m.key == key) {
            m.value = std::move(value);
            return m.value;
        }
    o.push_back({std::move(key), std::move(value)});
    return o.back().value;
}

bool JsonValue::operator==(const JsonValue& other) const { return m_v == other.m_v; }

namespace {

class Parser {
public:
    Parser(std::string_view text, const std::string& name) : m_s(text), m_name(name) {}

    Result<JsonValue> document()
    {
        if (m_s.substr(0, 3) == "\xEF\xBB\xBF") m_pos = 3;
        // RFC 8259 §8.1: JSON text is UTF-8; broken bytes would pass into names and vocabularies.
        if (const std::size_t bad = firstInvalidUtf8(m_s); bad != std::string_view::npos)
            return fail("invalid UTF-8", bad);
        skipWs();
        if (m_pos >= m_s.size()) return fail("empty document: expected a JSON value");
        JsonValue v;
        if (!value(v, 0)) return m_error;
        skipWs();
        if (m_pos < m_s.size()) return fail("unexpected text after the JSON value");
        return v;
    }

private:
    Error fail(const std::string& msg, std::size_t at = std::string::npos)
    {
        if (at == std::string::npos) at = m_pos;
        std::size_t line = 1, col = 1;
        for (std::size_t i = 0; i < at && i < m_s.size(); ++i) {
            if (m_s[i] == '\n') {
                ++line;
                col = 1;
            } else {
                ++col;
            }
        }
        m_error = makeError(ErrorCode::Format, msg, m_name + ":" + std::to_string(line) + ":" + std::to_string(col));
        return m_error;
    }
    bool failed(const std::string& msg, std::size_t at = std::string::npos)
    {
        fail(msg, at);
        return false;
    }

    void skipWs()
    {
        while (m_pos < m_s.size() &&
               (m_s[m_pos] == ' ' || m_s[m_pos] == '\t' || m_s[m_pos] == '\n' || m_s[m_pos] == '\r'))
            ++m_pos;
    }

    bool literal(std::string_view word)
    {
        if (m_s.substr(m_pos, word.size()) != word) return false;
        m_pos += word.size();
        return true;
    }

    bool value(JsonValue& out, int depth)
    {
        if (depth > kJsonMaxDepth) return failed("nesting deeper than " + std::to_string(kJsonMaxDepth) + " levels");
        if (m_pos >= m_s.size()) return failed("unexpected end of text: expected a value");
        const char c = m_s[m_pos];
        switch (c) {
        case '{': return object(out, depth);
        case '[': return array(out, depth);
        case '"': {
            std::string s;
            if (!string(s)) return false;
            out = JsonValue(std::move(s));
            return true;
        }
        case 't':
            if (literal("true")) return out = JsonValue(true), true;
            break;
        case 'f':
            if (literal("false")) return out = JsonValue(false), true;
            break;
        case 'n':
            if (literal("null")) return out = JsonValue(), true;
            break;
        default:
            if (c == '-' || (c >= '0' && c <= '9')) return number(out);
        }
        if (c == '\'') return failed("strings must use double quotes");
        return failed(std::string("unexpected character '") + c + "': expected a value");
    }

    bool number(JsonValue& out)
    {
        const std::size_t start = m_pos;
        auto digits = [&] {
            const std::size_t s = m_pos;
            while (m_pos < m_s.size() && m_s[m_pos] >= '0' && m_s[m_pos] <= '9')
                ++m_pos;
            return m_pos - s;
        };
        if (m_s[m_pos] == '-') ++m_pos;
        if (m_pos < m_s.size() && m_s[m_pos] == '0') {
            ++m_pos;
            if (m_pos < m_s.size() && m_s[m_pos] >= '0' && m_s[m_pos] <= '9')
                return failed("numbers may not have leading zeros", start);
        } else if (digits() == 0) {
            return failed("invalid number: expected a digit", m_pos);
        }
        if (m_pos < m_s.size() && m_s[m_pos] == '.') {
            ++m_pos;
            if (digits() == 0) return failed("invalid number: expected a digit after '.'", m_pos);
        }
        if (m_pos < m_s.size() && (m_s[m_pos] == 'e' || m_s[m_pos] == 'E')) {
            ++m_pos;
            if (m_pos < m_s.size() && (m_s[m_pos] == '+' || m_s[m_pos] == '-')) ++m_pos;
            if (digits() == 0) return failed("invalid number: expected a digit in the exponent", m_pos);
        }
        double d = 0;
        const char* b = m_s.data() + start;
        const auto r = std::from_chars(b, m_s.data() + m_pos, d);
        if (r.ec == std::errc::result_out_of_range) return failed("number out of range", start);
        if (r.ec != std::errc() || r.ptr != m_s.data() + m_pos) return failed("invalid number", start);
        out = JsonValue(d);
        return true;
    }

    bool hex4(std::uint32_t& cp)
    {
        if (m_pos + 4 > m_s.size()) return failed("truncated \\u escape");
        cp = 0;
        for (int i = 0; i < 4; ++i) {
            const char h = m_s[m_pos++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= std::uint32_t(h - '0');
            else if (h >= 'a' && h <= 'f') cp |= std::uint32_t(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') cp |= std::uint32_t(h - 'A' + 10);
            else return failed("invalid hex digit in \\u escape", m_pos - 1);
        }
        return true;
    }

    bool string(std::string& s)
    {
        const std::size_t start = m_pos;
        ++m_pos; // opening quote
        while (true) {
            if (m_pos >= m_s.size()) return failed("unterminated string", start);
            const char c = m_s[m_pos];
            if (c == '"') {
                ++m_pos;
                return true;
            }
            if (static_cast<unsigned char>(c) < 0x20) return failed("control character in string (escape it)");
            if (c != '\\') {
                s += c;
                ++m_pos;
                continue;
            }
            ++m_pos;
            if (m_pos >= m_s.size()) return failed("unterminated string", start);
            const char e = m_s[m_pos++];
            switch (e) {
            case '"': s += '"'; break;
            case '\\': s += '\\'; break;
            case '/': s += '/'; break;
            case 'b': s += '\b'; break;
            case 'f': s += '\f'; break;
            case 'n': s += '\n'; break;
            case 'r': s += '\r'; break;
            case 't': s += '\t'; break;
            case 'u': {
                std::uint32_t cp = 0;
                if (!hex4(cp)) return false;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    std::uint32_t lo = 0;
                    if (m_s.substr(m_pos, 2) != "\\u") return failed("unpaired high surrogate in \\u escape");
                    m_pos += 2;
                    if (!hex4(lo)) return false;
                    if (lo < 0xDC00 || lo > 0xDFFF) return failed("invalid low surrogate in \\u escape");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return failed("unpaired low surrogate in \\u escape");
                }
                appendUtf8(s, char32_t(cp));
                break;
            }
            default: return failed(std::string("invalid escape '\\") + e + "'", m_pos - 2);
            }
        }
    }

    bool array(JsonValue& out, int depth)
    {
        ++m_pos;
        JsonArray a;
        skipWs();
        if (m_pos < m_s.size() && m_s[m_pos] == ']') {
            ++m_pos;
            out = JsonValue(std::move(a));
            return true;
        }
        while (true) {
            skipWs();
            JsonValue v;
            if (!value(v, depth + 1)) return false;
            a.push_back(std::move(v));
            const Next next = afterMember(']', "array");
            if (next == Next::Failed) return false;
            if (next == Next::Closed) {
                out = JsonValue(std::move(a));
                return true;
            }
        }
    }

    // After an array element or object member: ',' (another follows) or the closing bracket.
    enum class Next { Another, Closed, Failed };
    Next afterMember(char close, const char* what)
    {
        const std::string pair = std::string("',' or '") + close + "'";
        skipWs();
        std::string problem;
        if (m_pos >= m_s.size()) {
            problem = std::string("unterminated ") + what + ": expected " + pair;
        } else if (m_s[m_pos] == ',') {
            ++m_pos;
            skipWs();
            if (m_pos >= m_s.size() || m_s[m_pos] != close) return Next::Another;
            problem = std::string("trailing comma in ") + what;
        } else if (m_s[m_pos] == close) {
            ++m_pos;
            return Next::Closed;
        } else {
            problem = "expected " + pair + " in " + what;
        }
        fail(problem);
        return Next::Failed;
    }

    bool object(JsonValue& out, int depth)
    {
        ++m_pos;
        JsonObject o;
        // Member indices hashed by their keys (read from o at each use, so no key is copied).
        const auto keyHash = [&o](std::size_t i) { return std::hash<std::string_view>{}(o[i].key); };
        const auto keyEqual = [&o](std::size_t a, std::size_t b) { return o[a].key == o[b].key; };
        std::unordered_set<std::size_t, decltype(keyHash), decltype(keyEqual)> seen(0, keyHash, keyEqual);
        skipWs();
        if (m_pos < m_s.size() && m_s[m_pos] == '}') {
            ++m_pos;
            out = JsonValue(std::move(o));
            return true;
        }
        while (true) {
            skipWs();
            if (m_pos >= m_s.size()) return failed("unterminated object: expected a key");
            if (m_s[m_pos] != '"') return failed("expected a double-quoted object key");
            const std::size_t keyPos = m_pos;
            std::string key;
            if (!string(key)) return false;
            // Linear for the small objects of configs; hashed beyond that, so that a header or
            // manifest with 100k keys costs O(n), not O(n^2).
            bool duplicate = false;
            if (o.size() < kLinearKeyScan) {
                for (const JsonMember& m : o)
                    duplicate = duplicate || m.key == key;
                o.push_back({std::move(key), JsonValue()});
            } else {
                if (seen.empty())
                    for (std::size_t i = 0; i < o.size(); ++i)
                        seen.insert(i);
                o.push_back({std::move(key), JsonValue()});
                duplicate = !seen.insert(o.size() - 1).second;
            }
            if (duplicate) return failed("duplicate object key \"" + o.back().key + "\"", keyPos);
            skipWs();
            if (m_pos >= m_s.size() || m_s[m_pos] != ':') return failed("expected ':' after object key");
            ++m_pos;
            skipWs();
            if (!value(o.back().value, depth + 1)) return false;
            const Next next = afterMember('}', "object");
            if (next == Next::Failed) return false;
            if (next == Next::Closed) {
                out = JsonValue(std::move(o));
                return true;
            }
        }
    }

    std::string_view m_s;
    const std::string& m_name;
    std::size_t m_pos = 0;
    Error m_error;
};

void writeNumber(std::string& out, double d)
{
    if (!std::isfinite(d)) {
        out += "null";
        return;
    }
    char buf[64];
    if (d == std::trunc(d) && std::fabs(d) < 9.007199254740992e15) {
        std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(d));
        out += buf;
        return;
    }
    const auto r = std::to_chars(buf, buf + sizeof buf, d); // shortest round-trip form
    out.append(buf, r.ptr);
}

bool isScalar(const JsonValue& v) { return !v.isArray() && !v.isObject(); }

void write(std::string& out, const JsonValue& v, int indent, int level)
{
    auto newline = [&](int lv) {
        if (indent < 0) return;
        out += '\n';
        out.append(std::size_t(indent * lv), ' ');
    };
    switch (v.type()) {
    case JsonType::Null: out += "null"; return;
    case JsonType::Bool: out += v.asBool() ? "true" : "false"; return;
    case JsonType::Number: writeNumber(out, v.asNumber()); return;
    case JsonType::String: out += jsonQuote(v.asString()); return;
    case JsonType::Array: {
        const JsonArray& a = v.asArray();
        bool flat = indent < 0;
        if (!flat) {
            flat = true;
            for (const JsonValue& e : a)
                flat = flat && isScalar(e);
        }
        out += '[';
        for (std::size_t i = 0; i < a.size(); ++i) {
            if (i) out += flat && indent >= 0 ? ", " : ",";
            if (!flat) newline(level + 1);
            write(out, a[i], indent, level + 1);
        }
        if (!flat && !a.empty()) newline(level);
        out += ']';
        return;
    }
    case JsonType::Object: {
        const JsonObject& o = v.asObject();
        out += '{';
        for (std::size_t i = 0; i < o.size(); ++i) {
            if (i) out += ',';
            newline(level + 1);
            out += jsonQuote(o[i].key);
            out += indent < 0 ? ":" : ": ";
            write(out, o[i].value, indent, level + 1);
        }
        if (!o.empty()) newline(level);
        out += '}';
        return;
    }
    }
}

} // namespace

Result<JsonValue> parseJson(std::string_view text, const std::string& nameForErrors)
{
    Parser p(text, nameForErrors);
    return p.document();
}

std::string jsonQuote(std::string_view raw)
{
    // JSON text must be UTF-8: invalid bytes (a file name, a token piece) are written as U+FFFD.
    const std::string repaired = firstInvalidUtf8(raw) == std::string_view::npos ? std::string() : sanitizeUtf8(raw);
    const std::string_view s = repaired.empty() ? raw : std::string_view(repaired);
    std::string out;
    out.reserve(s.size() + 2);
    out += '"';
    for (const char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(static_cast<unsigned char>(c)));
                out += buf;
            } else {
                out += c;
            }
        }
    }
    out += '"';
    return out;
}

std::string toJsonText(const JsonValue& value, int indent)
{
    std::string out;
    write(out, value, indent, 0);
    if (indent >= 0) out += '\n';
    return out;
}

} // namespace qb::io
