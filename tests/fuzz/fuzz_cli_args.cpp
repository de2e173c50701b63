// Fuzz harness: what quantbench-cli parses from text: the argument vector (CliArgs with the
// option sets of the subcommands), integer/number option values, the names given to --format,
// --gguf-type, --score and --method, and text files read through readTextFile (--calib, --eval,
// --text).
//
// Input: arguments, one per line. The first byte picks the subcommand's option set.
#include "fuzz_util.h"

#include "cli/cli_args.h"
#include "eval/perplexity.h"
#include "export/ggml_quantize.h"
#include "pipeline/perplexity_job.h"
#include "pipeline/project.h"
#include "quant/method_traits.h"

#include <set>
#include <string>
#include <vector>

namespace {

struct OptionSet {
    std::set<std::string> values, flags;
};

const OptionSet kOptionSets[] = {
    // quantize
    {{"calib", "nsamples", "seqlen", "seed", "plan", "method", "bits", "group", "eval", "ctx", "score", "threads",
      "batch", "save-plan", "out", "format", "gguf-type"},
     {"sym", "act-order", "json", "round-grids"}},
    // eval
    {{"text", "ctx", "score", "threads", "batch"}, {"json"}},
    // export
    {{"out", "format", "gguf-type", "model"}, {"json", "round-grids", "no-verify"}},
    // convert
    {{"out", "gguf-type", "name"}, {"json", "no-verify", "report"}},
    // tokenize
    {{"text"}, {"no-special", "json"}},
    // info
    {{}, {"json", "tensors"}},
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace qb;
    if (size == 0) return 0;
    const OptionSet& set = kOptionSets[data[0] % std::size(kOptionSets)];
    const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
    std::vector<std::string> argv;
    for (std::size_t b = 0; b <= text.size();) {
        std::size_t e = text.find('\n', b);
        if (e == std::string_view::npos) e = text.size();
        argv.emplace_back(text.substr(b, e - b));
        b = e + 1;
    }
    cli::CliArgs args(argv, set.values, set.flags);
    for (const std::string& key : set.values) {
        (void)args.intValue(key, 0, -(1LL << 40), 1LL << 40);
        (void)args.doubleValue(key, 0);
        (void)args.value(key, "");
    }
    for (const std::string& key : set.flags)
        (void)args.has(key);
    for (const std::string& p : args.positionals()) {
        (void)pipeline::parseExportFormat(p);
        (void)exporting::parseGgufExportType(p);
        (void)eval::parseScoreMode(p);
        (void)quant::methodFromId(p);
    }
    // The text files the CLI reads (--calib, --eval, --text): the whole input as one file.
    const std::string path = fuzz::scratchPath("text.txt");
    fuzz::writeFile(path, text);
    (void)pipeline::readTextFile(path);
    return 0;
}
