// quantbench-cli convert: write a checkpoint as GGUF (F32/F16/BF16 or ggml's reference
// Q8_0/Q4_0/Q4_1/Q5_0/Q5_1), verify it, and print the per-tensor exactness report.
// quantbench-cli verify: re-read a GGUF or safetensors model and print a summary.

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/cli_job.h"
#include "io/json_value.h"
#include "export/ggml_quantize.h"
#include "export/gguf_export.h"
#include "export/model_verify.h"
#include "export/gptq_export.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"

#include <cstdio>
#include <iostream>

namespace {

using namespace qb;

int runConvert(const std::vector<std::string>& argv)
{
    const char* cmd = "convert";
    cli::CliArgs args(argv, {"out", "gguf-type", "name"}, {"json", "no-verify", "report"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    const auto out = args.value("out");
    if (!out) return cli::fail(cmd, "--out FILE.gguf is required", 2);
    const auto type = exporting::parseGgufExportType(args.value("gguf-type", "f16"));
    if (!type) {
        std::string list; // from the ggml traits table, smallest bits per weight first
        for (const auto t : exporting::ggufExportTypes())
            list += (list.empty() ? "" : ", ") + io::ggmlTypeLowerName(t);
        return cli::fail(cmd, "--gguf-type must be one of " + list, 2);
    }

    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    auto tok = io::loadCheckpointTokenizer(*ck);
    if (!tok) return cli::fail(cmd, "cannot load tokenizer: " + tok.error().toString());

    exporting::GgufExportOptions opt;
    opt.weightType = *type;
    opt.modelName = args.value("name", "");
    opt.verify = !args.has("no-verify");
    cli::CliJob job(args.has("json"));
    auto r = exporting::exportGguf(*ck, *tok, *out, opt, &job.context());
    if (!r) return cli::fail(cmd, r.error());
    for (const auto& w : r->warnings)
        std::cerr << "quantbench-cli convert: warning: " << w << "\n";
    if (args.has("json")) {
        std::cout << "{\"path\":" << io::jsonQuote(r->path) << ",\"architecture\":\"" << r->architecture
                  << "\",\"bytes\":" << r->bytes << ",\"verified\":" << (opt.verify && r->verify.ok ? "true" : "false")
                  << ",\"tensors\":[";
        for (std::size_t i = 0; i < r->tensors.size(); ++i) {
            const auto& t = r->tensors[i];
            char diff[64];
            std::snprintf(diff, sizeof diff, "%.9g", t.maxAbsDiff);
            std::cout << (i ? "," : "") << "{\"name\":\"" << t.name << "\",\"type\":\"" << io::ggmlTypeName(int(t.type))
                      << "\",\"source\":\"" << t.source << "\",\"exact\":" << (t.exact ? "true" : "false")
                      << ",\"max_abs_diff\":" << diff << "}";
        }
        std::cout << "]}\n";
        return 0;
    }
    std::cout << "wrote " << r->path << " (" << r->architecture << ", " << r->tensors.size() << " tensors, " << r->bytes
              << " bytes)\n";
    if (args.has("report")) std::cout << r->exactnessTable();
    if (opt.verify) std::cout << r->verify.summary();
    return 0;
}

int runVerify(const std::vector<std::string>& argv)
{
    const char* cmd = "verify";
    cli::CliArgs args(argv, {}, {"tensors"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one FILE argument", 2);
    const std::string& target = args.positionals().front();
    // A GPTQ directory has no plain weights our checkpoint reader accepts: check it as GPTQ.
    auto r = exporting::isGptqDirectory(target) ? exporting::verifyGptqDirectory(target)
                                                : exporting::verifyModelFile(target);
    if (!r) return cli::fail(cmd, r.error().toString());
    std::cout << r->summary();
    if (args.has("tensors"))
        for (const auto& t : r->tensors) {
            std::string shape;
            for (auto d : t.shape) {
                if (!shape.empty()) shape += 'x';
                shape += std::to_string(d);
            }
            std::printf("  %-40s %-5s %-14s max|x| %.4g%s\n", t.name.c_str(), t.type.c_str(), shape.c_str(), t.maxAbs,
                        t.nonFinite ? "  NON-FINITE" : "");
        }
    return r->ok ? 0 : 1;
}

} // namespace

QB_CLI_COMMAND("convert", "write a model as GGUF (llama.cpp) and verify it",
               "quantbench-cli convert MODEL --out FILE.gguf [--gguf-type "
               "f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q2_k|q3_k|q4_k|q5_k|q6_k]\n"
               "                       [--name NAME] [--no-verify] [--report] [--json]\n"
               "  Writes atomically (temporary file + rename), re-reads and checks the result.\n"
               "  K-quant rows that are not a multiple of 256 fall back as llama.cpp does (warning).\n"
               "  --report prints per tensor: type, exact or not, max abs difference from the weights.\n",
               runConvert);
QB_CLI_COMMAND("verify", "re-read a GGUF, safetensors or GPTQ model and check it",
               "quantbench-cli verify FILE|DIR [--tensors]\n"
               "  Checks structure (GGUF: key types llama.cpp insists on, token count, names) and that\n"
               "  every tensor decodes to finite values; GPTQ directories: quantization_config, packed\n"
               "  tensor shapes for bits/group_size, positive scales, g_idx range. Exit 1 on a problem.\n",
               runVerify);
