// quantbench-cli export: rebuild a model export from a .qbproj project file: the stored grids
// (codes, scales, zeros, g_idx) plus the original model the project references.

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/export_support.h"
#include "export/project_bundle.h"
#include "io/checkpoint.h"

#include <iostream>

namespace {

using namespace qb;

int runExport(const std::vector<std::string>& argv)
{
    const char* cmd = "export";
    cli::CliArgs args(argv, {"out", "format", "gguf-type", "model"}, {"json", "round-grids", "no-verify"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one PROJECT.qbproj argument", 2);
    const auto out = args.value("out");
    const auto fmtName = args.value("format");
    if (!out || !fmtName) return cli::fail(cmd, "--out PATH and --format gguf|gptq|safetensors are required", 2);
    const auto fmt = cli::parseExportFormat(*fmtName);
    if (!fmt || *fmt == cli::ExportFormat::Qbproj) return cli::fail(cmd, "--format must be gguf, gptq or safetensors", 2);

    auto bundle = exporting::readProjectBundle(args.positionals().front());
    if (!bundle) return cli::fail(cmd, "cannot read project: " + bundle.error().toString());
    const std::string modelPath = args.value("model", bundle->model.path);
    auto ck = io::openCheckpoint(modelPath);
    if (!ck) return cli::fail(cmd, "cannot open the project's model: " + ck.error().toString());
    // The grids were computed on these files: warn when they changed size since.
    for (const auto& w : pipeline::modelFileWarnings(bundle->model))
        std::cerr << "quantbench-cli export: warning: " << w << "\n";
    auto grids = pipeline::gridsFromBundle(*bundle, *ck);
    if (!grids) return cli::fail(cmd, grids.error().toString());
    cli::ModelExportRequest req;
    req.out = *out;
    req.format = *fmt;
    req.ggufType = args.value("gguf-type", "auto");
    req.roundGrids = args.has("round-grids");
    req.verify = !args.has("no-verify");
    io::JsonValue json;
    RunContext rc;
    const int code = cli::writeModelExport(
        cmd, *ck, grids->lookup(), req, &rc, args.has("json") ? &json : nullptr);
    if (code == 0 && args.has("json")) std::cout << io::toJsonText(json, -1) << "\n";
    return code;
}

} // namespace

QB_CLI_COMMAND("export", "export a .qbproj project's quantized model as GGUF, GPTQ or safetensors",
               "Usage: quantbench-cli export PROJECT.qbproj --out PATH --format gguf|gptq|safetensors\n"
               "         [--gguf-type auto|q4_0|q4_1|q5_0|q5_1|q8_0|f16|f32] [--round-grids] [--model PATH]\n"
               "         [--no-verify] [--json]\n"
               "  Rebuilds the fake-quantized weights from the stored codes and the model the project\n"
               "  references (--model overrides its path). Writes atomically and verifies the result.\n"
               "  --round-grids  GPTQ: round real-valued/out-of-range zero-points and promote mixed bit\n"
               "                 widths instead of refusing (the max abs change is reported)\n",
               &runExport);
