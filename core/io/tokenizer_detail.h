#pragma once
// Private to the tokenizer (tokenizer*.cpp): the loaded pipeline and the helpers its stages share.
// Which file does what:
//   tokenizer_load.cpp       tokenizer.json (+ tokenizer_config.json) -> TokenizerImpl, with limits
//   tokenizer_gguf.cpp       GGUF tokenizer.ggml.* metadata -> the tokenizer.json it stands for
//   tokenizer_normalize.cpp  added-token matching and the normalizer chain (text before splitting)
//   tokenizer_pretok.cpp     Unicode helpers, the hand-coded Split regexes, the pre-tokenizers
//   tokenizer_regex.cpp      any other Split regex: Oniguruma syntax translated for PCRE2
//   tokenizer_bpe.cpp        the BPE model (one pre-token -> ids)
//   tokenizer_decode.cpp     the decoder chain (tokens -> text)
//   tokenizer.cpp            the public facade and the encode pipeline that strings the stages
// Everything here is immutable after loading and safe for concurrent const use.

#include "io/json_value.h"
#include "io/tokenizer.h"
#include "io/utf8.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qb::io::detail {

// ---- Unicode helpers (UTF-8: io/utf8.h; categories: tokenizer_pretok.cpp) ----
using io::appendUtf8;
using io::CodePoint;
using io::decodeUtf8;
using io::firstInvalidUtf8;
using io::sanitizeUtf8;
// Unicode general categories L* and N* as Hugging Face's tokenizers has them (Unicode 16: Qt's
// Unicode 14 tables plus the delta below), and the White_Space property (Oniguruma's \s).
bool isLetter(char32_t c);
bool isNumber(char32_t c);
bool isWhitespace(char32_t c);

// Code points the reference's Unicode tables class differently from PCRE2's and Qt's
// (tokenizer_unicode_delta.inc, written by tests/io/tokenizer/make_unicode_delta.py).
struct CodeRange {
    char32_t first, last;
};
struct UnicodeDelta {
    const char* name; // a general category ("L", "Nd", ...), "Alphabetic", "Word", "WordInClass", "WhiteSpace"
    const CodeRange* added;
    std::size_t addedCount;
    const CodeRange* removed;
    std::size_t removedCount;
};
const UnicodeDelta* unicodeDelta(std::string_view name); // nullptr for a class not in the table
bool inRanges(const CodeRange* ranges, std::size_t count, char32_t c);
// Every non-overlapping occurrence of `from`, left to right; nothing when `from` is empty.
void replaceAll(std::string& s, std::string_view from, std::string_view to);

// The GPT-2 byte<->unicode table: UTF-8 text of the char standing for each byte, and back.
const std::array<std::string, 256>& byteToUnicode();
int unicodeToByte(char32_t c); // -1 when c is not in the table

using Spans = std::vector<std::pair<std::size_t, std::size_t>>; // byte ranges [begin, end)

// ---- Pre-tokenizer regexes, hand-coded (tokenizer_pretok.cpp) ----
enum class HandCodedRegex { Gpt2, Llama3, Qwen2 };
std::optional<HandCodedRegex> recogniseHandCodedRegex(std::string_view pattern);
const char* handCodedPattern(HandCodedRegex which); // the Oniguruma pattern it implements
// Byte spans of the regex's successive (leftmost-first) matches in s.
void findHandCodedMatches(HandCodedRegex which, std::string_view s, Spans& out);

// ---- Any Split regex: PCRE2 (tokenizer_regex.cpp) ----
constexpr std::size_t kMaxSplitPatternBytes = 8192;       // real patterns are under 1 KiB
constexpr std::uint32_t kSplitRegexMatchLimit = 10000000; // Oniguruma's default retry limit
struct RegexProgram;
// The Oniguruma pattern in PCRE2's syntax, with the reference's meaning (see tokenizer_regex.cpp);
// Unsupported for Oniguruma-only constructs.
Result<std::string> translateOnigurumaPattern(std::string_view pattern);
// Translates and compiles; Unsupported or Format errors name the pattern.
Result<std::shared_ptr<const RegexProgram>> compileSplitRegex(const std::string& pattern);
bool usesJit(const RegexProgram& p);
// Matches as the onig crate's find_iter; invalid UTF-8 bytes match as U+FFFD. A match that hits
// kSplitRegexMatchLimit leaves the rest of s unmatched.
void findRegexMatches(const RegexProgram& p, std::string_view s, Spans& out);

// ---- Pipeline ----
struct NormalizerStep {
    enum class Type { Nfc, Nfd, Nfkc, Nfkd, Lowercase, Prepend, Replace, Strip } type;
    std::string a{}, b{}; // Prepend: a; Replace: a -> b
    bool left = false, right = false;
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
enum class PrependScheme { First, Always, Never };

struct PreTokStep {
    enum class Type { ByteLevel, SplitRegex, SplitString, Metaspace } type;
    bool addPrefixSpace = false;                 // ByteLevel
    bool useRegex = true;                        // ByteLevel
    std::shared_ptr<const RegexProgram> regex{}; // SplitRegex
    std::optional<HandCodedRegex> handCoded{};   // SplitRegex: a faster matcher with the same matches
    std::string pattern{};                       // SplitString pattern, Metaspace replacement
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false;
    PrependScheme prepend = PrependScheme::Always; // Metaspace
    bool split = true;                             // Metaspace
};

struct DecoderStep {
    enum class Type { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace } type;
    std::string a{}, b{}; // Replace a -> b; Strip content (one char); Metaspace replacement
    int start = 0, stop = 0;
    PrependScheme prepend = PrependScheme::Always;
};

struct AddedToken {
    std::string content;
    std::int32_t id = 0;
    bool special = false, normalized = false, lstrip = false, rstrip = false, singleWord = false;
};

// Leftmost-longest matching of added-token contents, bucketed by first byte.
struct AddedMatcher {
    std::array<std::vector<int>, 256> byFirstByte; // indices into tokens, longest first
    std::vector<AddedToken> tokens;
    bool empty() const { return tokens.empty(); }
};

// A stretch of text: an added token (id >= 0) or plain text between them (id -1).
struct Fragment {
    std::size_t begin, end;
    std::int32_t id;
};
// tokenizer_normalize.cpp
AddedMatcher buildAddedMatcher(std::vector<AddedToken> tokens);
// AddedVocabulary::find_matches: the whole of s as fragments, in order.
void splitOnAdded(const AddedMatcher& m, std::string_view s, std::vector<Fragment>& out);

// A pre-token on its way through the pre-tokenizers.
struct Piece {
    std::string text;
    bool atStart; // begins at offset 0 of the original input (Metaspace prepend_scheme "first")
};
// tokenizer_pretok.cpp
std::vector<Piece> preTokenize(const std::vector<PreTokStep>& steps, Piece input);

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;
using WordCache = std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>>;

struct TokenizerImpl {
    std::string name;
    Tokenizer::Kind kind = Tokenizer::Kind::ByteLevelBpe;

    // model
    StringIdMap vocab;
    std::vector<std::pair<std::string, std::string>> mergeList;
    std::unordered_map<std::uint64_t, std::pair<std::int32_t, std::int32_t>> merges; // -> rank, id
    std::optional<std::int32_t> unkId;
    bool fuseUnk = false, byteFallback = false, ignoreMerges = false;
    std::string continuingPrefix, endOfWordSuffix;
    std::array<std::int32_t, 256> byteTokenIds{}; // <0xHH> ids, -1 when absent

    std::vector<NormalizerStep> normalizers;
    std::vector<PreTokStep> preTokenizers;
    std::vector<DecoderStep> decoders;
    bool hasDecoder = false;
    std::vector<std::int32_t> prefixIds, suffixIds; // post-processor, single sequence

    AddedMatcher rawAdded, normalizedAdded;
    std::vector<AddedToken> addedTokens;

    // id -> token text for every id (model vocab, overridden by added tokens)
    std::vector<std::string> idToToken;
    std::vector<std::uint8_t> idPresent;
    std::vector<std::uint8_t> idSpecial;

    std::optional<std::int32_t> bosId, eosId, padId;

    // tokenizer.cpp
    void encodeText(std::string_view text, std::vector<std::int32_t>& out, WordCache& cache) const;
    std::optional<std::int32_t> lookup(std::string_view token) const; // added tokens, then vocab
    // tokenizer_bpe.cpp
    void bpeWord(std::string_view word, std::vector<std::int32_t>& out) const;
    // tokenizer_normalize.cpp
    std::string normalize(std::string s) const;
    // tokenizer_decode.cpp: runs the decoders over the tokens' texts
    std::string decodeTokens(std::vector<std::string> tokens) const;
};

// tokenizer_load.cpp. configJson may be empty; name is the file name for error contexts.
Result<std::shared_ptr<const TokenizerImpl>> loadTokenizer(std::string_view json, std::string_view configJson,
                                                           const std::string& name);
// The same from parsed documents: tokenizer.json's root object and tokenizer_config.json's (null when
// there is none). Vocabulary keys must be unique (the JSON parser guarantees it for files).
Result<std::shared_ptr<const TokenizerImpl>> loadTokenizerDocument(const JsonValue& root, const JsonValue& config,
                                                                   const std::string& name);

} // namespace qb::io::detail
