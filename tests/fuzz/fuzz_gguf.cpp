// Fuzz harness: GGUF header, metadata key/values and tensor table (readGgufFile), the model
// config and HF tensor mapping derived from them, and F32 conversion of small tensors.
//
// Input: the bytes of one .gguf file.
#include "fuzz_util.h"

#include "io/checkpoint.h"
#include "io/gguf_reader.h"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace qb;
    const std::string path = fuzz::scratchPath("model.gguf");
    fuzz::writeFile(path, data, size);
    auto file = fuzz::note(io::readGgufFile(path));
    if (!file) return 0;
    std::size_t shown = 0;
    for (const auto& [key, value] : file->metadata) {
        (void)file->find(key);
        if (shown++ < 64) (void)value.display();
    }
    (void)file->architecture();
    volatile std::uint8_t sink = 0;
    for (const TensorInfo& t : file->tensors) {
        (void)io::ggufToHfName(t.sourceName.empty() ? t.name : t.sourceName);
        if (t.bytes.size() > 0) sink = sink ^ t.bytes.data()[0] ^ t.bytes.data()[t.bytes.size() - 1];
    }
    auto config = io::ggufModelConfig(*file);
    if (!config) return 0;
    for (const TensorInfo& t : io::ggufHfTensors(*file, *config)) {
        bool small = true;
        std::int64_t n = 1;
        for (std::int64_t d : t.shape) {
            if (d < 0 || d > 4096 || n * d > 4096) small = false;
            else n *= d;
        }
        if (!small) continue;
        std::vector<float> f(std::size_t(n) + 1);
        (void)io::readTensorF32(t, f.data());
    }
    return 0;
}
