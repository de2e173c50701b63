// Fuzz harness: Hugging Face config.json (parseHfConfig, readHfConfig), then openCheckpoint() on a
// directory holding that config beside a small valid model.safetensors (the llama_gqa test
// fixture), so the config is checked against real tensors.
//
// Input: the text of one config.json.
#include "fuzz_util.h"

#include "io/checkpoint.h"
#include "io/hf_config.h"

#include <filesystem>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace qb;
    static const std::string dir = [] {
        const std::string weights = fuzz::scratchPath("model.safetensors", "model");
        std::filesystem::copy_file(QB_SOURCE_DIR "/tests/model/fixtures/llama_gqa/model.safetensors", weights,
                                   std::filesystem::copy_options::overwrite_existing);
        return std::filesystem::path(weights).parent_path().string();
    }();
    const std::string text(reinterpret_cast<const char*>(data), size);
    (void)io::parseHfConfig(text, "fuzz config.json");
    const std::string path = dir + "/config.json";
    fuzz::writeFile(path, text);
    if (!fuzz::note(io::readHfConfig(path))) return 0;
    (void)fuzz::note(io::openCheckpoint(dir));
    return 0;
}
