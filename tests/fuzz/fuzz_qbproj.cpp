// Fuzz harness: .qbproj project bundles (readProjectBundle: zip entries, manifest, plan,
// metrics, tensors.safetensors) and what opening a project does with them: the plan and the
// run metrics are parsed, and the stored grids are checked against a small model (the llama_gqa
// test fixture) and dequantized.
//
// Input: the bytes of one .qbproj file; or, for an input that does not start with "PK", the
// entries of one: name, separator, bytes, separator, name, ... (fuzz_util.h), which the harness
// stores in a zip itself, so that mutations reach the manifest and tensors past the CRC-32s.
#include "fuzz_util.h"

#include "export/project_bundle.h"
#include "io/checkpoint.h"
#include "pipeline/project.h"
#include "pipeline/quant_plan.h"

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace {

std::uint32_t crc32(std::string_view b)
{
    std::uint32_t c = 0xFFFFFFFFu;
    for (unsigned char x : b) {
        c ^= x;
        for (int k = 0; k < 8; ++k)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

void put(std::string& out, std::uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; ++i)
        out += char((v >> (8 * i)) & 0xFF);
}

// A zip archive of stored entries (method 0), enough for QuaZip.
std::string storedZip(const std::vector<std::pair<std::string_view, std::string_view>>& entries)
{
    std::string body, cd;
    for (const auto& [name, bytes] : entries) {
        const std::uint32_t crc = crc32(bytes);
        const std::size_t local = body.size();
        put(body, 0x04034b50u, 4), put(body, 20, 2), put(body, 0, 2), put(body, 0, 2), put(body, 0, 4);
        put(body, crc, 4), put(body, bytes.size(), 4), put(body, bytes.size(), 4);
        put(body, name.size(), 2), put(body, 0, 2);
        body.append(name).append(bytes);
        put(cd, 0x02014b50u, 4), put(cd, 20, 2), put(cd, 20, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 4);
        put(cd, crc, 4), put(cd, bytes.size(), 4), put(cd, bytes.size(), 4);
        put(cd, name.size(), 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 4);
        put(cd, local, 4);
        cd.append(name);
    }
    std::string zip = body + cd;
    put(zip, 0x06054b50u, 4), put(zip, 0, 2), put(zip, 0, 2), put(zip, entries.size(), 2);
    put(zip, entries.size(), 2), put(zip, cd.size(), 4), put(zip, body.size(), 4), put(zip, 0, 2);
    return zip;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace qb;
    static const io::Checkpoint model = [] {
        auto ck = io::openCheckpoint(QB_SOURCE_DIR "/tests/model/fixtures/llama_gqa");
        if (!ck) std::abort();
        return *ck;
    }();
    const std::string path = fuzz::scratchPath("project.qbproj");
    if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
        fuzz::writeFile(path, data, size);
    } else {
        const auto parts = fuzz::splitParts(data, size, 16);
        std::vector<std::pair<std::string_view, std::string_view>> entries;
        for (std::size_t i = 0; i + 1 < parts.size(); i += 2)
            if (!parts[i].empty()) entries.emplace_back(parts[i], parts[i + 1]);
        fuzz::writeFile(path, storedZip(entries));
    }
    auto bundle = fuzz::note(exporting::readProjectBundle(path));
    if (!bundle) return 0;
    for (const auto& t : bundle->tensors)
        (void)bundle->find(t.name);
    (void)pipeline::quantPlanFromJson(bundle->plan, "fuzz plan.json");
    std::optional<double> perplexity;
    double seconds = 0;
    std::optional<eval::KlStats> kl;
    (void)pipeline::resultFromMetrics(bundle->metrics, &perplexity, &seconds, &kl);
    (void)pipeline::gridsFromBundle(*bundle, model);
    return 0;
}
