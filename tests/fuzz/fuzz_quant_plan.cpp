// Fuzz harness: quantization plan JSON (quantPlanFromText), resolving it against a small LLaMA
// config, and the JSON round trip (a plan that loads must save and load back unchanged).
//
// Input: the text of one plan.json.
#include "fuzz_util.h"

#include "io/hf_config.h"
#include "pipeline/quant_plan.h"

#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace qb;
    static const ModelConfig config = [] {
        auto c = io::readHfConfig(QB_SOURCE_DIR "/tests/model/fixtures/llama_gqa/config.json");
        if (!c) std::abort();
        return *c;
    }();
    auto plan = fuzz::note(
        pipeline::quantPlanFromText(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz plan"));
    if (!plan) return 0;
    auto again = pipeline::quantPlanFromJson(pipeline::quantPlanToJson(*plan), "fuzz plan (saved)");
    if (!again || !(*again == *plan)) {
        std::fprintf(stderr, "plan does not survive a save/load round trip: %s\n",
                     again ? "loaded back different" : again.error().toString().c_str());
        std::abort();
    }
    if (auto resolved = pipeline::resolveQuantPlan(*plan, config))
        for (const auto& t : resolved->tensors)
            (void)resolved->find(t.name);
    return 0;
}
