// quantbench-cli imatrix: our calibration statistics (mean x² per input column of every decoder
// linear) written as llama.cpp's importance matrix, for `llama-quantize --imatrix`; or, with
// --show, a summary of an importance matrix file.

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/cli_job.h"
#include "io/json_value.h"
#include "model/forward.h"
#include "pipeline/importance.h"

#include <cstdio>
#include <iostream>

namespace {

int showImatrix(const std::string& path, bool json)
{
    using namespace qb;
    auto m = io::readImportanceMatrix(path);
    if (!m) return qb::cli::fail("imatrix", m.error());
    if (json) {
        io::JsonValue o;
        o.set("format", std::string(io::importanceFormatName(m->format)));
        o.set("entries", double(m->entries.size()));
        o.set("chunk_count", double(m->chunkCount));
        o.set("chunk_size", double(m->chunkSize));
        io::JsonArray ds;
        for (const auto& d : m->datasets)
            ds.emplace_back(d);
        o.set("datasets", io::JsonValue(std::move(ds)));
        std::cout << io::toJsonText(o, -1) << "\n" << std::flush;
        return 0;
    }
    std::printf("%s: %s importance matrix, %zu entries, %u chunks of %u tokens\n", path.c_str(),
                io::importanceFormatName(m->format), m->entries.size(), m->chunkCount, m->chunkSize);
    for (const auto& d : m->datasets)
        std::printf("dataset %s\n", d.c_str());
    for (const auto& [name, e] : m->entries) {
        double mean = 0;
        for (float v : e.meanSquare)
            mean += v;
        std::printf("%-40s %6lld columns %10.0f %s  mean x^2 %.6g\n", name.c_str(), (long long)e.columns(), e.count,
                    m->format == io::ImportanceFormat::Dat ? "calls " : "tokens", mean / double(e.columns()));
    }
    return 0;
}

int runImatrixCmd(const std::vector<std::string>& argv)
{
    using namespace qb;
    const char* cmd = "imatrix";
    cli::CliArgs args(argv, {"calib", "nsamples", "seqlen", "seed", "threads", "batch", "out", "format", "show"},
                      {"json"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    const bool json = args.has("json");
    if (auto show = args.value("show")) {
        if (!args.positionals().empty() || args.has("out")) return cli::fail(cmd, "--show FILE takes nothing else", 2);
        return showImatrix(*show, json);
    }
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    const auto calibPath = args.value("calib");
    if (!calibPath) return cli::fail(cmd, "--calib FILE is required", 2);
    const auto out = args.value("out");
    if (!out) return cli::fail(cmd, "--out FILE is required", 2);
    const auto format = io::parseImportanceFormat(args.value("format", "gguf"));
    if (!format) return cli::fail(cmd, "--format must be gguf or dat", 2);
    pipeline::ImportanceExportRequest req;
    req.calibrate.calibration.textPath = *calibPath;
    req.calibrate.calibration.options.nsamples = int(args.intValue("nsamples", 128, 1, 1 << 20));
    req.calibrate.calibration.options.seqlen = int(args.intValue("seqlen", 0, 2, 1 << 20)); // 0: the model's
    req.calibrate.calibration.options.seed = std::uint64_t(args.intValue("seed", 0, 0, (1LL << 62)));
    req.calibrate.options.batch = int(args.intValue("batch", 8, 1, 4096));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (threads > 0) model::setNumThreads(threads);
    req.out = *out;
    req.format = *format;

    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    auto& seqlen = req.calibrate.calibration.options.seqlen;
    if (seqlen == 0) seqlen = pipeline::defaultCalibrationLength(ck->config);
    req.calibrate.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
    cli::CliJob job(json);
    auto r = pipeline::exportImportanceMatrix(req, &job.context());
    if (!r) return cli::fail(cmd, r.error());
    if (json) {
        io::JsonValue o;
        o.set("path", r->path);
        o.set("format", std::string(io::importanceFormatName(r->format)));
        o.set("entries", double(r->entries));
        o.set("bytes", double(r->bytes));
        o.set("windows", double(r->report->windows));
        o.set("seqlen", double(r->report->seqlen));
        o.set("seconds", r->seconds);
        std::cout << io::toJsonText(o, -1) << "\n" << std::flush;
        return 0;
    }
    std::printf("wrote %s (%s importance matrix, %d entries, %llu bytes) from %d windows of %d tokens in %.2f s\n",
                r->path.c_str(), io::importanceFormatName(r->format), r->entries, (unsigned long long)r->bytes,
                r->report->windows, r->report->seqlen, r->seconds);
    return 0;
}

} // namespace

QB_CLI_COMMAND("imatrix", "write calibration statistics as a llama.cpp importance matrix (or --show one)",
               "Usage: quantbench-cli imatrix MODEL --calib FILE [--nsamples 128] [--seqlen 2048] [--seed 0]\n"
               "         --out FILE [--format gguf|dat] [--batch N] [--threads N] [--json]\n"
               "       quantbench-cli imatrix --show FILE [--json]\n"
               "  Runs the calibration windows through the model and writes, for every decoder linear, the\n"
               "  mean x^2 of each input column (q/k/v share theirs, gate/up too) and the token count as\n"
               "  llama.cpp's imatrix tool does: GGUF (default; general.type imatrix, <name>.in_sum2 and\n"
               "  <name>.counts) or the legacy .dat (--format dat). `llama-quantize --imatrix FILE` uses it;\n"
               "  `quantbench-cli quantize --imatrix FILE` too. The file is read back and compared.\n"
               "  --show FILE    summary of a GGUF or .dat importance matrix (entries, columns, counts)\n",
               &runImatrixCmd);
