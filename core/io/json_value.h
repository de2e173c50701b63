#pragma once
// JsonValue: a small std-only JSON document model (RFC 8259) for configuration files such as
// quantization plans, with parse errors that say where and what, and a serializer.
//
// A value is a std::variant over {null, bool, number (double), string (UTF-8), array, object}.
// Objects keep their members in file order (a vector of key/value members), so a document
// written back reads in the order the user wrote it; duplicate keys are a parse error (a config
// that says two things is ambiguous). Numbers are doubles: integers are exact up to 2^53 and are
// written back without a fractional part; other numbers are written as the shortest text that
// reads back to the same double. NaN/Inf cannot be written (JSON has no spelling) and become null.
// Parse errors carry ErrorCode::Format, a message ("expected ':' after object key") and the
// context "<name>:<line>:<column>" (1-based, column in bytes).
// Threading: plain values; parse/serialize are pure functions, safe from any thread.
// Memory: the tree owns all its strings; nesting deeper than kJsonMaxDepth is refused.

#include "base/result.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace qb::io {

inline constexpr int kJsonMaxDepth = 256;

struct JsonMember;
class JsonValue;
using JsonArray = std::vector<JsonValue>;
using JsonObject = std::vector<JsonMember>;

enum class JsonType { Null, Bool, Number, String, Array, Object };
const char* jsonTypeName(JsonType t); // "null", "boolean", "number", "string", "array", "object"

class JsonValue {
public:
    using Storage = std::variant<std::monostate, bool, double, std::string, JsonArray, JsonObject>;

    // Defined below JsonMember: constructing the variant needs JsonMember complete (clang with
    // libstdc++ instantiates the variant's destructor here; GCC defers it).
    JsonValue();
    JsonValue(std::nullptr_t);
    JsonValue(bool b);
    JsonValue(double d);
    JsonValue(int i);
    JsonValue(std::int64_t i);
    JsonValue(const char* s);
    JsonValue(std::string s);
    JsonValue(JsonArray a);
    JsonValue(JsonObject o);

    JsonType type() const { return JsonType(m_v.index()); }
    bool isNull() const { return type() == JsonType::Null; }
    bool isBool() const { return type() == JsonType::Bool; }
    bool isNumber() const { return type() == JsonType::Number; }
    bool isString() const { return type() == JsonType::String; }
    bool isArray() const { return type() == JsonType::Array; }
    bool isObject() const { return type() == JsonType::Object; }
    // A number with no fractional part that fits in int64.
    bool isInteger() const;

    // Accessors assert the type; check it first.
    bool asBool() const { return std::get<bool>(m_v); }
    double asNumber() const { return std::get<double>(m_v); }
    std::int64_t asInteger() const { return std::int64_t(std::get<double>(m_v)); }
    const std::string& asString() const { return std::get<std::string>(m_v); }
    const JsonArray& asArray() const { return std::get<JsonArray>(m_v); }
    JsonArray& asArray() { return std::get<JsonArray>(m_v); }
    const JsonObject& asObject() const { return std::get<JsonObject>(m_v); }
    JsonObject& asObject() { return std::get<JsonObject>(m_v); }

    // Object member lookup (first match); nullptr when absent or not an object.
    const JsonValue* find(std::string_view key) const;
    JsonValue* find(std::string_view key) { return const_cast<JsonValue*>(std::as_const(*this).find(key)); }
    // Appends (or replaces) a member; turns a null value into an object first.
    JsonValue& set(std::string key, JsonValue value);

    const Storage& storage() const { return m_v; }
    bool operator==(const JsonValue& other) const;

private:
    Storage m_v;
};

struct JsonMember {
    std::string key;
    JsonValue value;
    bool operator==(const JsonMember& o) const { return key == o.key && value == o.value; }
};

inline JsonValue::JsonValue() = default; // null
inline JsonValue::JsonValue(std::nullptr_t) {}
inline JsonValue::JsonValue(bool b) : m_v(b) {}
inline JsonValue::JsonValue(double d) : m_v(d) {}
inline JsonValue::JsonValue(int i) : m_v(double(i)) {}
inline JsonValue::JsonValue(std::int64_t i) : m_v(double(i)) {}
inline JsonValue::JsonValue(const char* s) : m_v(std::string(s)) {}
inline JsonValue::JsonValue(std::string s) : m_v(std::move(s)) {}
inline JsonValue::JsonValue(JsonArray a) : m_v(std::move(a)) {}
inline JsonValue::JsonValue(JsonObject o) : m_v(std::move(o)) {}

// Parses one JSON document (surrounding whitespace allowed, nothing else after it). A UTF-8 BOM
// is skipped; text that is not valid UTF-8 is a Format error at the first bad byte. nameForErrors (a file name) prefixes the error context.
Result<JsonValue> parseJson(std::string_view text, const std::string& nameForErrors = "json");

// indent < 0: compact one line; otherwise pretty-printed with `indent` spaces per level and a
// trailing newline. Arrays of scalars only stay on one line when pretty-printing.
std::string toJsonText(const JsonValue& value, int indent = 2);

// The JSON spelling of a string (with quotes), escaping control characters, '"' and '\'; invalid
// UTF-8 is written as U+FFFD, so the output is always valid JSON text.
std::string jsonQuote(std::string_view s);

} // namespace qb::io
