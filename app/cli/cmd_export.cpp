// quantbench-cli export: rebuild a model export from a .qbproj project file: the stored grids
// (codes, scales, zeros, g_idx) plus the original model the project references.

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/cli_job.h"
#include "pipeline/workflows.h"

#include <iostream>

namespace {

using namespace qb;

int runExport(const std::vector<std::string>& argv)
{
    const char* cmd = "export";
    cli::CliArgs args(argv, {"out", "format", "gguf-type", "model", "run"}, {"json", "round-grids", "no-verify"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one PROJECT.qbproj argument", 2);
    const auto out = args.value("out");
    const auto fmtName = args.value("format");
    if (!out || !fmtName) return cli::fail(cmd, "--out PATH and --format gguf|gptq|safetensors are required", 2);
    const auto fmt = pipeline::parseExportFormat(*fmtName);
    if (!fmt || *fmt == pipeline::ExportFormat::Qbproj)
        return cli::fail(cmd, "--format must be gguf, gptq or safetensors", 2);
    if (const auto e = cli::ggufTypeUsageError(args.value("gguf-type", "auto")); !e.empty())
        return cli::fail(cmd, e, 2);
    const long long runNumber = args.intValue("run", 0, 1, 1 << 20); // 0: the project's selected run
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);

    cli::CliJob job(args.has("json"));
    pipeline::OpenProjectRequest open;
    open.path = args.positionals().front();
    open.modelPath = args.value("model", "");
    auto project = pipeline::openProject(open, &job.context());
    if (!project) return cli::fail(cmd, project.error(), "cannot open project: ");
    for (const auto& w : project->warnings)
        std::cerr << "quantbench-cli export: warning: " << w << "\n";
    if (runNumber > 0 && std::size_t(runNumber) > project->runs.size())
        return cli::fail(cmd,
                         "--run " + std::to_string(runNumber) + ": the project has " +
                             std::to_string(project->runs.size()) + " run(s)",
                         2);
    const int index = runNumber > 0 ? int(runNumber - 1) : project->gridsRun;
    if (index < 0) return cli::fail(cmd, "the project holds no quantized run to export");

    pipeline::ExportRequest req;
    req.checkpoint = project->checkpoint;
    req.run = project->runs[std::size_t(index)];
    req.target.out = *out;
    req.target.format = *fmt;
    req.target.ggufType = args.value("gguf-type", "auto");
    req.target.roundGrids = args.has("round-grids");
    req.target.verify = !args.has("no-verify");
    auto r = pipeline::exportRun(req, &job.context());
    if (!r) {
        if (r.error().code == ErrorCode::Unsupported && *fmt == pipeline::ExportFormat::Gptq && !req.target.roundGrids)
            return cli::fail(cmd, r.error(), "", "; pass --round-grids to round");
        return cli::fail(cmd, r.error());
    }
    io::JsonValue json;
    cli::reportExport(cmd, *r, args.has("json") ? &json : nullptr);
    if (args.has("json")) std::cout << io::toJsonText(json, -1) << "\n";
    return 0;
}

} // namespace

QB_CLI_COMMAND("export", "export a .qbproj project's quantized model as GGUF, GPTQ or safetensors",
               "Usage: quantbench-cli export PROJECT.qbproj --out PATH --format gguf|gptq|safetensors\n"
               "         [--gguf-type auto|q2_k|q3_k|q4_0|q4_1|q4_k|q5_0|q5_1|q5_k|q6_k|q8_0|f16|bf16|f32]\n"
               "         [--run N] [--round-grids] [--model PATH]\n"
               "         [--no-verify] [--json]\n"
               "  Rebuilds the fake-quantized weights from the stored codes and the model the project\n"
               "  references (--model overrides its path). Writes atomically and verifies the result.\n"
               "  --run N        the project's run N (1 = the first, as the window numbers them; every\n"
               "                 run saved with its grids exports); default: the run selected on saving\n"
               "  --round-grids  GPTQ: round real-valued/out-of-range zero-points and promote mixed bit\n"
               "                 widths instead of refusing (the max abs change is reported)\n",
               &runExport);
