#pragma once
// UTF-8: the one decoder and encoder for every text format we read and write (JSON, tokenizer.json,
// token pieces). Validity follows Unicode Table 3-7 (no overlongs, no surrogates, nothing above
// U+10FFFF); an invalid sequence decodes as U+FFFD consuming one byte, as Rust's
// String::from_utf8_lossy, so that our tokenizer and Hugging Face's see the same text.
// Threading: pure functions. Memory: the returned strings only.

#include <cstddef>
#include <string>
#include <string_view>

namespace qb::io {

struct CodePoint {
    char32_t cp;
    int len; // bytes consumed, >= 1
};

// Decodes one code point at `pos` (< s.size()); an invalid sequence yields U+FFFD with len 1.
CodePoint decodeUtf8(std::string_view s, std::size_t pos);
// Appends cp (<= U+10FFFF) as UTF-8.
void appendUtf8(std::string& out, char32_t cp);
// from_utf8_lossy: every invalid sequence becomes U+FFFD.
std::string sanitizeUtf8(std::string_view bytes);
// Offset of the first byte that does not start a valid sequence, or npos when all is valid.
std::size_t firstInvalidUtf8(std::string_view s);

} // namespace qb::io
