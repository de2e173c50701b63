#pragma once
// Tokenizer: Hugging Face `tokenizer.json` (model type BPE) read and run in C++, with the same
// ids as Hugging Face's own implementation. Two families are covered (FORMATS.md §3): byte-level
// BPE (GPT-2, Llama-3, Qwen2: ByteLevel / Split pre-tokenizers, byte<->unicode alphabet) and
// SentencePiece-style BPE (Llama-2, TinyLlama, Mistral: `▁` for spaces, `<0xHH>` byte fallback).
//
// Pipeline of encode(): split on added tokens (raw text) -> normalizer -> split on normalized
// added tokens -> pre-tokenizer -> BPE per pre-token -> post-processor (BOS/EOS). Split regexes
// run through PCRE2 with the meaning Hugging Face's Oniguruma gives them (tokenizer_regex.cpp);
// the GPT-2, Llama-3 "P3" and Qwen2 "PQ" patterns through faster hand-coded matchers. A
// component, or an Oniguruma-only regex construct, that we do not implement is refused at load
// time with ErrorCode::Unsupported rather than tokenized wrongly.
//
// Threading: a Tokenizer is an immutable value (shared_ptr<const Impl>): cheap to copy, and all
// const member functions may run concurrently from any thread. encode() keeps its per-word BPE
// cache local to the call. Text is UTF-8 in and out; invalid UTF-8 input bytes are treated as
// U+FFFD for classification (byte-level tokenizers still encode the original bytes, unless a
// Unicode normalizer such as NFC runs first and turns them into U+FFFD).
//
// Where the JavaScript port and the Rust crate disagree, the Rust crate wins (Split behavior
// Removed with a String pattern, Metaspace `split`, the Metaspace decoder's first token).
// truncation/padding in tokenizer.json are ignored: encode() never truncates.

#include "base/result.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qb::io {

namespace detail {
struct TokenizerImpl;
}
struct GgufFile;

class Tokenizer {
public:
    enum class Kind { ByteLevelBpe, SentencePieceBpe };
    // GGUF `tokenizer.ggml.token_type` values (same numbering as SentencePiece piece types).
    enum class TokenType : std::int32_t {
        Normal = 1,
        Unknown = 2,
        Control = 3,
        UserDefined = 4,
        Unused = 5,
        Byte = 6,
    };

    // Reads tokenizer.json and, when present beside it, tokenizer_config.json (bos/eos tokens,
    // add_bos_token/add_eos_token).
    static Result<Tokenizer> fromFile(const std::string& path);
    static Result<Tokenizer> fromJson(const std::string& json, const std::string& nameForErrors);
    // As fromJson, with the text of tokenizer_config.json (may be empty).
    static Result<Tokenizer> fromJsonWithConfig(const std::string& json, const std::string& configJson,
                                                const std::string& nameForErrors);

    // The tokenizer a GGUF file embeds (`tokenizer.ggml.*`: models "gpt2" and "llama"), with the
    // meaning llama.cpp gives those keys (tokenizer_gguf.cpp). InvalidArgument when the file has
    // no tokenizer.ggml.model; Unsupported for other models and pre-tokenizers we do not implement.
    static Result<Tokenizer> fromGguf(const GgufFile& file);

    // addSpecial: apply the post-processor (e.g. BOS) as HF's encode(text,
    // add_special_tokens=True).
    std::vector<std::int32_t> encode(std::string_view utf8, bool addSpecial = true) const;
    // Runs the tokenizer.json decoder; ids outside the vocabulary are skipped. skipSpecial drops
    // added tokens marked special. Invalid byte sequences become U+FFFD.
    std::string decode(const std::vector<std::int32_t>& ids, bool skipSpecial = false) const;

    std::int64_t vocabSize() const; // model vocab + added tokens (max id + 1)
    std::optional<std::int32_t> bosId() const;
    std::optional<std::int32_t> eosId() const;
    std::optional<std::int32_t> unkId() const;
    std::optional<std::int32_t> padId() const;
    bool addsBos() const;                                             // encode(text, true) prepends bosId()
    bool addsEos() const;                                             // encode(text, true) appends eosId()
    std::string tokenText(std::int32_t id) const;                     // the vocab string; empty for an unknown id
    std::optional<std::int32_t> tokenId(std::string_view text) const; // added tokens, then vocab
    bool isSpecial(std::int32_t id) const;                            // an added token flagged special
    Kind kind() const;
    const std::string& sourceName() const;

    // For GGUF export (FORMATS.md §3.5).
    // Token strings in id order, vocabSize() entries; ids without a token read "[PAD<id>]".
    std::vector<std::string> vocabulary() const;
    std::vector<TokenType> tokenTypes() const; // vocabSize() entries
    // Merges in rank order as (left, right), and as llama.cpp's "left right" strings (a space
    // inside a part is written as U+0120 there).
    const std::vector<std::pair<std::string, std::string>>& mergePairs() const;
    std::vector<std::string> merges() const;
    // `tokenizer.ggml.pre` guess from the pre-tokenizer: "llama-bpe" (P3), "qwen2" (PQ), "gpt-2"
    // (GPT-2 regex) or "default" (SentencePiece-style / anything else).
    std::string ggmlPre() const;

private:
    explicit Tokenizer(std::shared_ptr<const detail::TokenizerImpl> impl);
    std::shared_ptr<const detail::TokenizerImpl> m_impl;
};

} // namespace qb::io
