// Fuzz harness: tokenizer.json (+ tokenizer_config.json): load, then encode a fixed text and a
// chunk of the input itself, decode the ids, and query the vocabulary.
//
// Input: a tokenizer.json; optionally followed by the part separator (fuzz_util.h) and a
// tokenizer_config.json.
#include "fuzz_util.h"

#include "io/tokenizer.h"

#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace qb;
    const auto parts = fuzz::splitParts(data, size, 2);
    const std::string json(parts[0]);
    auto tok = parts[1].empty() ? io::Tokenizer::fromJson(json, "fuzz tokenizer.json")
                                : io::Tokenizer::fromJsonWithConfig(json, std::string(parts[1]), "fuzz tokenizer.json");
    if (!fuzz::note(tok).ok()) return 0;
    const std::string_view texts[] = {"Hello world! 123  \n\tñ 日本 <s>", std::string_view(json).substr(0, 256)};
    for (std::string_view text : texts) {
        const auto ids = tok->encode(text, true);
        (void)tok->decode(ids, false);
        (void)tok->decode(ids, true);
        for (std::size_t i = 0; i < ids.size() && i < 16; ++i) {
            (void)tok->tokenText(ids[i]);
            (void)tok->isSpecial(ids[i]);
        }
    }
    (void)tok->vocabSize();
    (void)tok->tokenId("<s>");
    (void)tok->decode({-1, 0, 1, 2, 2147483647}, false);
    if (tok->vocabSize() <= 1 << 16) {
        (void)tok->tokenTypes();
        (void)tok->merges();
        (void)tok->ggmlPre();
    }
    return 0;
}
