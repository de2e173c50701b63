// quantbench-cli lab: the transform lab (pipeline/transform_lab.h) for one linear input: per stage
// (original, smoothed, Hadamard, smoothed + Hadamard, with --ruquant RUQuant's stages) how
// outlier-heavy the activations are, what a given activation quantizer costs on them and how
// uniform the data is inside the quantizer's cells, as a table or JSON.

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "cli/cli_job.h"
#include "io/json_value.h"
#include "model/forward.h"
#include "pipeline/transform_lab.h"

#include <cstdio>
#include <iostream>

namespace {

std::optional<qb::model::LinearKind> parseInput(const std::string& s)
{
    using qb::model::LinearKind;
    for (LinearKind k : {LinearKind::Qkv, LinearKind::O, LinearKind::GateUp, LinearKind::Down})
        if (s == qb::model::linearKindName(k)) return k;
    return std::nullopt;
}

// `s` padded with spaces to `width` characters (UTF-8 aware: labels carry "α").
std::string padded(const std::string& s, std::size_t width)
{
    std::size_t chars = 0;
    for (unsigned char c : s)
        chars += (c & 0xC0) != 0x80;
    return s + std::string(chars < width ? width - chars : 0, ' ');
}

int runLabCmd(const std::vector<std::string>& argv)
{
    using namespace qb;
    const char* cmd = "lab";
    cli::CliArgs args(argv,
                      {"calib", "layer", "input", "smooth", "abits", "clip", "nsamples", "seqlen", "seed", "tokens",
                       "bins", "threads", "wbits", "ruquant-block", "cell-channel", "cell-bins"},
                      {"json", "sym", "no-hadamard", "channels", "ruquant"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    const auto calib = args.value("calib");
    if (!calib) return cli::fail(cmd, "--calib FILE is required", 2);
    const auto input = parseInput(args.value("input", "qkv"));
    if (!input) return cli::fail(cmd, "--input must be qkv, o, gate_up or down", 2);
    pipeline::TransformLabRequest req;
    req.calibrationText = *calib;
    req.kind = *input;
    req.layer = int(args.intValue("layer", 0, 0, 1 << 20));
    req.smoothAlpha = args.doubleValue("smooth", 0.6);
    req.hadamard = !args.has("no-hadamard");
    req.seed = std::uint64_t(args.intValue("seed", 0, 0, (1LL << 62)));
    req.calibration.nsamples = int(args.intValue("nsamples", 32, 1, 1 << 20));
    req.calibration.seqlen = int(args.intValue("seqlen", 256, 2, 1 << 20));
    req.calibration.seed = req.seed;
    req.options.maxTokens = int(args.intValue("tokens", 4096, 1, 1 << 24));
    req.options.bins = int(args.intValue("bins", 128, 2, 1 << 16));
    req.options.quant.bits = int(args.intValue("abits", 4, 0, 8));
    req.options.quant.clip = float(args.doubleValue("clip", 1.0));
    req.options.quant.sym = args.has("sym");
    req.options.weightBits = int(args.intValue("wbits", 0, 0, 8));
    req.ruquant = args.has("ruquant");
    req.ruquantOptions.blockSize = int(args.intValue("ruquant-block", 128, 2, 1 << 20));
    req.ruquantOptions.seed = req.seed;
    req.options.cellChannel = int(args.intValue("cell-channel", -1, -1, 1 << 24));
    req.options.cellBins = int(args.intValue("cell-bins", 20, 2, 1 << 16));
    const int threads = int(args.intValue("threads", 0, 0, 4096));
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (req.options.quant.bits == 1) return cli::fail(cmd, "--abits must be 0 (off) or 2..8", 2);
    if (req.options.weightBits == 1) return cli::fail(cmd, "--wbits must be 0 (unquantized) or 2..8", 2);
    if (!(req.smoothAlpha >= 0 && req.smoothAlpha <= 1)) return cli::fail(cmd, "--smooth must be in [0, 1]", 2);
    if (!(req.options.quant.clip > 0 && req.options.quant.clip <= 1))
        return cli::fail(cmd, "--clip must be in (0, 1]", 2);
    if (args.has("ruquant-block") && !req.ruquant) return cli::fail(cmd, "--ruquant-block needs --ruquant", 2);
    if (req.options.cellChannel >= 0 && req.options.quant.bits == 0)
        return cli::fail(cmd, "--cell-channel needs the activation quantizer (--abits 2..8)", 2);
    if (threads > 0) model::setNumThreads(threads);
    const bool json = args.has("json");

    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, "cannot open model: " + ck.error().toString());
    req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
    cli::CliJob job(json);
    auto r = pipeline::runTransformLab(req, &job.context());
    if (!r) return cli::fail(cmd, r.error());
    if (json) {
        std::cout << io::toJsonText(pipeline::transformLabJson(*r, args.has("channels")), -1) << "\n" << std::flush;
        return 0;
    }
    const std::string quant =
        r->quant.bits > 0 ? "A" + std::to_string(r->quant.bits) + (r->quant.sym ? " sym" : " asym") + " per token" +
                                (r->quant.clip < 1 ? ", clip " + std::to_string(r->quant.clip).substr(0, 4) : "")
                          : "activations unquantized";
    const std::string weights =
        r->weightBits > 0 ? "weights W" + std::to_string(r->weightBits) + " per channel" : "weights unquantized";
    std::printf("layer %d %s input: %lld channels, %lld of %lld calibration tokens; %s; %s; values in [%.4g, %.4g]\n",
                r->layer, model::linearKindName(r->kind), (long long)r->channels, (long long)r->sampledTokens,
                (long long)r->totalTokens, quant.c_str(), weights.c_str(), r->histLo, r->histHi);
    std::printf("%-30s %10s %9s %9s %10s %12s %10s\n", "stage", "max/med ch", "kurtosis", "tok kurt", "tok max|x|",
                "quant relMSE", "out error");
    for (const auto& s : r->stages)
        std::printf("%s %10.2f %9.2f %9.2f %10.4g %12.4g %10.4f\n", padded(s.label, 30).c_str(), s.channelRatio,
                    s.moments.kurtosis, s.tokens.kurtosisMean, s.tokens.maxAbsMedian, s.quantError, s.outputError);
    if (r->quant.bits > 0) {
        // Within-cell: how far reconstructing at the cells' centroids (Lloyd-Max) would beat their
        // midpoints (the uniform quantizer), in cell units.
        const bool one = r->cellChannel >= 0;
        std::printf("\nwithin-cell (position u in [0, 1) inside the A%d cells; MSE midpoint / MSE centroid, mean "
                    "|centroid - midpoint|)\n",
                    r->quant.bits);
        std::printf("%-30s %12s %10s", "stage", "all: ratio", "|offset|");
        if (one) std::printf("   channel %-5d %8s %10s %8s", r->cellChannel, "ratio", "|offset|", "clipped");
        std::printf("\n");
        for (const auto& s : r->stages) {
            std::printf("%s %12.4f %10.4f", padded(s.label, 30).c_str(), s.cells.mseRatio, s.cells.meanAbsOffset);
            if (one)
                std::printf("   %13s %8.4f %10.4f %8lld", "", s.channelCells.mseRatio, s.channelCells.meanAbsOffset,
                            (long long)s.channelCells.clipped);
            std::printf("\n");
        }
    }
    for (const auto& s : r->stages)
        if (!s.transform.empty())
            std::printf("  %s: %s (channels are rotated coordinates)\n", s.label.c_str(), s.transform.c_str());
    for (const auto& n : r->notes)
        std::printf("note: %s\n", n.c_str());
    return 0;
}

} // namespace

QB_CLI_COMMAND("lab", "transform lab: outliers and activation quantization error of one linear input, per transform",
               "Usage: quantbench-cli lab MODEL --calib FILE [--layer 0] [--input qkv|o|gate_up|down]\n"
               "         [--smooth 0.6] [--abits 4] [--clip 1.0] [--sym] [--wbits 0] [--no-hadamard] [--nsamples 32]\n"
               "         [--seqlen 256] [--seed 0] [--tokens 4096] [--bins 128] [--threads N] [--json [--channels]]\n"
               "         [--ruquant [--ruquant-block 128]] [--cell-channel J] [--cell-bins 20]\n"
               "  Captures the input of one linear group (q/k/v, o, gate/up or down of decoder layer --layer)\n"
               "  over the calibration windows (at most --tokens rows, evenly spaced) and, per stage -- original,\n"
               "  smoothed (SmoothQuant, exponent --smooth), randomized Hadamard (--seed), smoothed + Hadamard --\n"
               "  prints: max/median of the per-channel max |x|, excess kurtosis of all values and per token\n"
               "  (mean), the median per-token max |x|, the relative MSE of fake-quantizing the activations\n"
               "  (--abits per token; 0: off), and the output error ||X W^T - Q(X_t) W_t^T|| / ||X W^T|| of the\n"
               "  group's weights transformed to match (--wbits B: and fake-quantized per output channel, RTN\n"
               "  asymmetric, so the number is WxAy). --json prints it as JSON; --channels adds the\n"
               "  per-channel arrays and histograms (common range hist_range).\n"
               "  --ruquant adds RUQuant's stages (stage 1, zig-zag, stage 1 again, global Householder; each\n"
               "  cumulative, block size --ruquant-block, seed --seed), fitted on the captured input's mean per\n"
               "  position after smoothing with --smooth (the lab's capture is the FP forward pass).\n"
               "  Within-cell (with --abits): where the values sit inside the per-token quantizer's cells,\n"
               "  per stage pooled over every channel and, with --cell-channel J, for channel J (a rotated\n"
               "  coordinate in rotated stages): the MSE of reconstructing at the cells' midpoints over the\n"
               "  MSE at their centroids (1: uniform inside the cells) and the mean |centroid - midpoint| in\n"
               "  cell units; --json adds the position histograms (--cell-bins) and per-level offsets.\n",
               &runLabCmd);
