// Fuzz harness: safetensors header and data layout (readSafetensorsFile), and the sharded form
// (readShardIndex, readSafetensorsIndex).
//
// Input: the bytes of one .safetensors file; or, when the input holds the part separator
// (fuzz_util.h), a model.safetensors.index.json followed by the bytes of the shard that
// the index may name as "model-00001-of-00001.safetensors".
#include "fuzz_util.h"

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/shard_index.h"

#include <vector>

namespace {

// Touches every tensor's bytes (ASan sees an out-of-range view) and converts small ones to F32.
void touch(const std::vector<qb::TensorInfo>& tensors)
{
    volatile std::uint8_t sink = 0;
    for (const qb::TensorInfo& t : tensors) {
        if (t.bytes.size() > 0) sink = sink ^ t.bytes.data()[0] ^ t.bytes.data()[t.bytes.size() - 1];
        bool small = true;
        std::int64_t n = 1;
        for (std::int64_t d : t.shape) {
            if (d < 0 || d > 4096 || n * d > 4096) small = false;
            else n *= d;
        }
        if (small) {
            std::vector<float> f(std::size_t(n) + 1);
            (void)qb::io::readTensorF32(t, f.data());
        }
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace qb;
    const auto parts = fuzz::splitParts(data, size, 2);
    if (size < fuzz::kPartSeparator.size() ||
        std::string_view(reinterpret_cast<const char*>(data), size).find(fuzz::kPartSeparator) ==
            std::string_view::npos) {
        const std::string path = fuzz::scratchPath("model.safetensors");
        fuzz::writeFile(path, data, size);
        if (auto r = fuzz::note(io::readSafetensorsFile(path))) touch(*r);
        return 0;
    }
    const std::string index = fuzz::scratchPath("model.safetensors.index.json", "sharded");
    fuzz::writeFile(index, parts[0]);
    fuzz::writeFile(fuzz::scratchPath("model-00001-of-00001.safetensors", "sharded"), parts[1]);
    (void)io::readShardIndex(index);
    if (auto r = fuzz::note(io::readSafetensorsIndex(index))) touch(r->tensors);
    return 0;
}
