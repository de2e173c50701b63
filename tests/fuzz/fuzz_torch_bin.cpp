// Fuzz harness: PyTorch zip checkpoints (readTorchBinFile: zip central directory, data.pkl
// through QuaZip, the restricted unpickler, storage views and strided copies), plus the
// unpickler on its own.
//
// Input: the bytes of one pytorch_model.bin. An input that is not a zip archive is also fed to
// unpickleTorch() directly, so the pickle machine is reached without a valid zip around it.
#include "fuzz_util.h"

#include "io/pickle.h"
#include "io/torch_bin.h"

#include "base/mapped_file.h"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace qb;
    if (size < 4 || data[0] != 'P' || data[1] != 'K') {
        const ByteRange bytes(MappedFile::fromBytes(std::vector<std::uint8_t>(data, data + size), "fuzz.pkl"));
        (void)fuzz::note(io::detail::unpickleTorch(bytes, "fuzz.pkl"));
        return 0;
    }
    const std::string path = fuzz::scratchPath("pytorch_model.bin");
    fuzz::writeFile(path, data, size);
    auto r = fuzz::note(io::readTorchBinFile(path));
    if (!r) return 0;
    volatile std::uint8_t sink = 0;
    for (const TensorInfo& t : r->tensors)
        if (t.bytes.size() > 0) sink = sink ^ t.bytes.data()[0] ^ t.bytes.data()[t.bytes.size() - 1];
    return 0;
}
