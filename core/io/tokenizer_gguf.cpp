// The tokenizer a GGUF file embeds: `tokenizer.ggml.*` metadata turned back into the tokenizer.json
// it stands for (the inverse of FORMATS.md §3.5, which the GGUF exporter writes), then loaded by the
// same loader as a file, so that every check and every encode path is shared.
//
// What the keys mean is what llama.cpp does with them (llama-vocab.cpp), since a GGUF is read by it:
//  - model "gpt2": byte-level BPE over `tokens` + `merges` ("left right", split at the first space
//    after the first byte); `pre` names llama.cpp's pre-tokenizer, a list of regexes each splitting
//    the pieces of the one before with matches and gaps kept — a Sequence of Split(Isolated) steps
//    followed by ByteLevel(use_regex = false). The "llama3" family ignores merges for a piece that
//    is itself a token, as llama.cpp does. The "qwen2" family normalizes to NFC first, as Qwen2's
//    tokenizer.json and transformers' GGUF loader do (llama.cpp does not: it differs on text that is
//    not in NFC).
//  - model "llama": SentencePiece-style BPE (legacy form: "▁" prepended to every stretch of text
//    between added tokens when add_space_prefix, spaces replaced by "▁", <0xHH> byte fallback,
//    unknown pieces fused into `unk`). Merges come from `merges` when the file has them, else from
//    `scores` as transformers' GGUF loader derives them: every split of a piece into two tokens,
//    ranked by the piece's score (highest first), ties by the ids of the parts.
//  - token_type CONTROL / UNKNOWN are special added tokens and USER_DEFINED plain added tokens,
//    matched on the raw text; UNUSED "[PAD<id>]" fillers are left out of the vocabulary.
//  - bos/eos/unknown/padding ids and add_bos_token / add_eos_token (defaults as llama.cpp's: BOS
//    for "llama" and the "llama3" family, no EOS).
// Threading: pure function of the file; the result is immutable.

#include "io/gguf_reader.h"
#include "io/tokenizer_detail.h"

#include <algorithm>
#include <unordered_map>

namespace qb::io {

using namespace detail;

namespace {

Error unsupported(const std::string& what, const std::string& name)
{
    return makeError(ErrorCode::Unsupported, what, name);
}
Error format(const std::string& what, const std::string& name) { return makeError(ErrorCode::Format, what, name); }

// llama.cpp's GPT-2 expression (its hand-coded GPT-2 split; HF's adds a final |\s+, which only
// re-isolates white space the other alternatives leave as a gap anyway).
constexpr const char* kGpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

struct PreTokenizer {
    std::vector<std::string> regexes;
    bool ignoreMerges = false, addBos = false;
    bool nfc = false; // Qwen2's tokenizer.json normalizes to NFC (transformers' GGUF loader keeps it)
};

// llama.cpp's pre-tokenizer names (llama_vocab::impl::load) and the regex lists its BPE tokenizer
// runs for them; the patterns we hand-code are written as Hugging Face spells them so that the
// faster matchers take them.
std::optional<PreTokenizer> preTokenizerFor(const std::string& pre)
{
    auto is = [&](std::initializer_list<const char*> names) {
        return std::any_of(names.begin(), names.end(), [&](const char* n) { return pre == n; });
    };
    if (is({"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "midm-2.0", "lfm2"}))
        return PreTokenizer{{handCodedPattern(HandCodedRegex::Llama3)}, true, true};
    if (is({"dbrx", "smaug-bpe", "chatglm-bpe"})) return PreTokenizer{{handCodedPattern(HandCodedRegex::Llama3)}};
    if (is({"qwen2", "stablelm2", "hunyuan", "deepseek-r1-qwen", "megrez", "grok-2"}))
        return PreTokenizer{{handCodedPattern(HandCodedRegex::Qwen2)}, false, false, true};
    if (is({"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "jina-v2-code", "mpt",
            "olmo", "jais", "trillion", "granite-docling"}))
        return PreTokenizer{{kGpt2Regex}};
    if (is({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"}))
        return PreTokenizer{{"\\p{N}", kGpt2Regex}};
    if (pre == "falcon") return PreTokenizer{{"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2Regex, "[0-9][0-9][0-9]"}};
    if (is({"deepseek-v3", "hunyuan-dense"}))
        return PreTokenizer{
            {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
             "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{"
             "M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}};
    if (pre == "default") return PreTokenizer{{"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2Regex, "\\p{N}+", "[0-9][0-9][0-9]"}};
    return std::nullopt;
}

const GgufValue* key(const GgufFile& f, const std::string& k) { return f.find("tokenizer.ggml." + k); }

std::optional<std::int64_t> intKey(const GgufFile& f, const std::string& k)
{
    std::int64_t v = 0;
    const GgufValue* g = key(f, k);
    return g && !g->isArray() && g->toInt(v) ? std::optional(v) : std::nullopt;
}

std::optional<bool> boolKey(const GgufFile& f, const std::string& k)
{
    const GgufValue* g = key(f, k);
    if (!g || g->type != GgufValueType::Bool) return std::nullopt;
    return std::get<bool>(g->scalar);
}

JsonValue splitStep(const std::string& regex)
{
    JsonValue p;
    p.set("Regex", regex);
    JsonValue s;
    s.set("type", "Split");
    s.set("pattern", std::move(p));
    s.set("behavior", "Isolated");
    s.set("invert", false);
    return s;
}

JsonValue typed(const char* type)
{
    JsonValue v;
    v.set("type", type);
    return v;
}

// Merges from SentencePiece scores (transformers' GGUF tokenizer skeleton, FORMATS.md §3.5).
JsonArray mergesFromScores(const std::vector<std::string>& tokens, const std::vector<double>& scores,
                           const std::vector<std::int64_t>& types)
{
    std::unordered_map<std::string_view, std::int32_t> id;
    for (std::size_t i = 0; i < tokens.size(); ++i)
        id.emplace(tokens[i], std::int32_t(i));
    struct Merge {
        double score;
        std::int32_t left, right;
    };
    std::vector<Merge> merges;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        if (types[i] != std::int64_t(Tokenizer::TokenType::Normal)) continue;
        const std::string_view t = tokens[i];
        for (std::size_t cut = 1; cut < t.size(); ++cut) {
            if ((std::uint8_t(t[cut]) & 0xC0) == 0x80) continue; // inside a UTF-8 sequence
            auto l = id.find(t.substr(0, cut)), r = id.find(t.substr(cut));
            if (l != id.end() && r != id.end()) merges.push_back({scores[i], l->second, r->second});
        }
    }
    std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
        if (a.score != b.score) return a.score > b.score;
        return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
    JsonArray out;
    out.reserve(merges.size());
    for (const Merge& m : merges)
        out.push_back(JsonArray{tokens[std::size_t(m.left)], tokens[std::size_t(m.right)]});
    return out;
}

} // namespace

Result<Tokenizer> Tokenizer::fromGguf(const GgufFile& file)
{
    const std::string name = file.path + " (embedded tokenizer)";
    const GgufValue* modelKey = key(file, "model");
    if (!modelKey || !modelKey->toString())
        return makeError(ErrorCode::InvalidArgument, "the GGUF file has no tokenizer.ggml.model", file.path);
    const std::string model = *modelKey->toString();
    if (model != "gpt2" && model != "llama")
        return unsupported("tokenizer.ggml.model \"" + model + "\" is not supported (gpt2 or llama)", name);
    const bool bpe = model == "gpt2";

    const GgufValue* tokensKey = key(file, "tokens");
    if (!tokensKey || !tokensKey->isArray() || tokensKey->elementType != GgufValueType::String ||
        tokensKey->strings.empty())
        return format("tokenizer.ggml.tokens is missing or not an array of strings", name);
    const std::vector<std::string>& tokens = tokensKey->strings;
    const std::size_t n = tokens.size();
    std::vector<std::int64_t> types(n, std::int64_t(TokenType::Normal));
    if (const GgufValue* t = key(file, "token_type")) {
        if (!t->isArray() || t->ints.size() != n)
            return format("tokenizer.ggml.token_type has " + std::to_string(t->arraySize()) + " entries for " +
                              std::to_string(n) + " tokens",
                          name);
        types = t->ints;
    }
    std::vector<double> scores(n, 0.0);
    const GgufValue* scoresKey = key(file, "scores");
    if (scoresKey) {
        if (!scoresKey->isArray() || scoresKey->floats.size() != n)
            return format("tokenizer.ggml.scores has " + std::to_string(scoresKey->arraySize()) + " entries for " +
                              std::to_string(n) + " tokens",
                          name);
        scores = scoresKey->floats;
    }

    // vocabulary and added tokens
    JsonObject vocab;
    vocab.reserve(n);
    JsonArray added;
    std::unordered_map<std::string_view, std::size_t> seen;
    bool byteTokens = false;
    for (std::size_t i = 0; i < n; ++i) {
        const auto type = TokenType(types[i]);
        if (type == TokenType::Unused && tokens[i] == "[PAD" + std::to_string(i) + "]") continue;
        if (!seen.emplace(tokens[i], i).second)
            return format("token " + std::to_string(i) + " \"" + tokens[i] + "\" repeats token " +
                              std::to_string(seen[tokens[i]]),
                          name);
        vocab.push_back({tokens[i], JsonValue(std::int64_t(i))});
        byteTokens = byteTokens || type == TokenType::Byte;
        if (type == TokenType::Control || type == TokenType::Unknown || type == TokenType::UserDefined) {
            JsonValue a;
            a.set("id", std::int64_t(i));
            a.set("content", tokens[i]);
            a.set("single_word", false);
            a.set("lstrip", false);
            a.set("rstrip", false);
            a.set("normalized", false); // llama.cpp matches them on the raw text
            a.set("special", type != TokenType::UserDefined);
            added.push_back(std::move(a));
        }
    }

    JsonArray merges;
    if (const GgufValue* m = key(file, "merges")) {
        if (!m->isArray() || m->elementType != GgufValueType::String)
            return format("tokenizer.ggml.merges is not an array of strings", name);
        merges.reserve(m->strings.size());
        for (std::size_t r = 0; r < m->strings.size(); ++r) {
            const std::string& line = m->strings[r];
            const std::size_t sp = line.size() > 1 ? line.find(' ', 1) : std::string::npos;
            if (sp == std::string::npos)
                return format("tokenizer.ggml.merges[" + std::to_string(r) + "] is not \"left right\": '" + line + "'",
                              name);
            merges.push_back(JsonArray{line.substr(0, sp), line.substr(sp + 1)});
        }
    } else if (!bpe) {
        if (!scoresKey) return format("a \"llama\" tokenizer needs tokenizer.ggml.scores (or merges)", name);
        merges = mergesFromScores(tokens, scores, types);
    } else {
        return format("a \"gpt2\" tokenizer needs tokenizer.ggml.merges", name);
    }

    auto idText = [&](const char* k) -> std::optional<std::string> {
        const auto id = intKey(file, k);
        if (!id || *id < 0 || std::size_t(*id) >= n) return std::nullopt;
        return tokens[std::size_t(*id)];
    };

    JsonValue root;
    root.set("version", "1.0");
    root.set("added_tokens", std::move(added));
    JsonValue m;
    m.set("type", "BPE");
    bool addBos = !bpe;
    if (bpe) {
        const GgufValue* preKey = key(file, "pre");
        const std::string pre = preKey && preKey->toString() ? *preKey->toString() : "default";
        const auto p = preTokenizerFor(pre);
        if (!p) return unsupported("tokenizer.ggml.pre \"" + pre + "\" is not a pre-tokenizer we implement", name);
        JsonArray steps;
        for (const std::string& r : p->regexes)
            steps.push_back(splitStep(r));
        JsonValue byteLevel = typed("ByteLevel");
        byteLevel.set("add_prefix_space", false);
        byteLevel.set("trim_offsets", false);
        byteLevel.set("use_regex", false);
        steps.push_back(byteLevel);
        JsonValue seq = typed("Sequence");
        seq.set("pretokenizers", std::move(steps));
        root.set("normalizer", p->nfc ? typed("NFC") : JsonValue());
        root.set("pre_tokenizer", std::move(seq));
        root.set("decoder", byteLevel);
        m.set("ignore_merges", p->ignoreMerges);
        addBos = p->addBos;
    } else {
        const bool spacePrefix = boolKey(file, "add_space_prefix").value_or(true);
        JsonArray norm;
        if (spacePrefix) {
            JsonValue prepend = typed("Prepend");
            prepend.set("prepend", "\u2581");
            norm.push_back(std::move(prepend));
        }
        JsonValue pattern;
        pattern.set("String", " ");
        JsonValue replace = typed("Replace");
        replace.set("pattern", pattern);
        replace.set("content", "\u2581");
        norm.push_back(replace);
        JsonValue nseq = typed("Sequence");
        nseq.set("normalizers", std::move(norm));
        root.set("normalizer", std::move(nseq));
        root.set("pre_tokenizer", nullptr);
        JsonValue back = typed("Replace");
        JsonValue space;
        space.set("String", "\u2581");
        back.set("pattern", std::move(space));
        back.set("content", " ");
        JsonArray dec{back, typed("ByteFallback"), typed("Fuse")};
        if (spacePrefix) {
            JsonValue strip = typed("Strip");
            strip.set("content", " ");
            strip.set("start", 1);
            strip.set("stop", 0);
            dec.push_back(std::move(strip));
        }
        JsonValue dseq = typed("Sequence");
        dseq.set("decoders", std::move(dec));
        root.set("decoder", std::move(dseq));
        m.set("fuse_unk", true);
        m.set("byte_fallback", byteTokens);
        if (auto unk = idText("unknown_token_id")) m.set("unk_token", *unk);
    }
    m.set("vocab", std::move(vocab));
    m.set("merges", std::move(merges));
    root.set("model", std::move(m));
    root.set("post_processor", nullptr);

    JsonValue config(JsonObject{});
    for (const auto& [k, cfgKey] : {std::pair{"bos_token_id", "bos_token"},
                                    {"eos_token_id", "eos_token"},
                                    {"unknown_token_id", "unk_token"},
                                    {"padding_token_id", "pad_token"}})
        if (auto text = idText(k)) config.set(cfgKey, *text);
    config.set("add_bos_token", boolKey(file, "add_bos_token").value_or(addBos));
    config.set("add_eos_token", boolKey(file, "add_eos_token").value_or(false));
    QB_TRY(impl, loadTokenizerDocument(root, config, name));
    return Tokenizer(std::move(*impl));
}

} // namespace qb::io
