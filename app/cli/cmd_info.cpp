// quantbench-cli info: describe a checkpoint (config, parameter count, dtypes, files, tensors).

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "io/checkpoint.h"
#include "io/ggml_codec.h"
#include "io/gguf_reader.h"
#include "io/json_value.h"

#include <QString>

#include <cstdio>
#include <iostream>
#include <map>

namespace {

using namespace qb;

std::string dtypeLabel(const TensorInfo& t)
{
    if (t.gptq) return "gptq-" + std::to_string(t.gptq->bits) + "bit";
    return t.ggmlType >= 0 ? io::ggmlTypeName(t.ggmlType) : dtypeName(t.dtype);
}

std::string humanBytes(std::uint64_t b)
{
    char buf[32];
    if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1ull << 30));
    else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", double(b) / double(1ull << 20));
    else if (b >= 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / 1024.0);
    else std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
    return buf;
}

int runInfo(const std::vector<std::string>& argv)
{
    const char* cmd = "info";
    cli::CliArgs args(argv, {}, {"json"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    auto ck = io::openCheckpoint(args.positionals().front());
    if (!ck) return cli::fail(cmd, ck.error().toString());
    const ModelConfig& c = ck->config;

    std::int64_t params = 0;
    std::map<std::string, int> dtypes;
    for (const TensorInfo& t : ck->tensors) {
        params += t.numel();
        ++dtypes[dtypeLabel(t)];
    }
    // GGUF files carry their own metadata; show it (arrays summarised).
    std::vector<std::pair<std::string, std::string>> metadata;
    if (ck->format == io::CheckpointFormat::Gguf && !ck->files.empty())
        if (auto g = io::readGgufFile(ck->files.front()); g.ok())
            for (const auto& [k, v] : g->metadata)
                metadata.emplace_back(k, v.display());

    if (args.has("json")) {
        // Through QString as before: bytes that are not UTF-8 (a tensor name or GGUF string can
        // hold anything) become U+FFFD, so the output stays valid JSON text.
        auto s = [](const std::string& x) { return QString::fromStdString(x).toStdString(); };
        io::JsonValue o;
        o.set("path", s(ck->path));
        o.set("format", io::checkpointFormatName(ck->format));
        o.set("architecture", architectureName(c.architecture));
        o.set("model_type", s(c.modelType));
        o.set("hidden_size", c.hiddenSize);
        o.set("intermediate_size", c.intermediateSize);
        o.set("num_hidden_layers", c.numHiddenLayers);
        o.set("num_attention_heads", c.numAttentionHeads);
        o.set("num_key_value_heads", c.numKeyValueHeads);
        o.set("head_dim", c.headDim);
        o.set("vocab_size", c.vocabSize);
        o.set("max_position_embeddings", c.maxPositionEmbeddings);
        o.set("rope_theta", c.ropeTheta);
        o.set("rms_norm_eps", c.rmsNormEps);
        o.set("tie_word_embeddings", c.tieWordEmbeddings);
        o.set("rope_scaling", c.ropeScaling.type.empty() ? io::JsonValue() : io::JsonValue(s(c.ropeScaling.type)));
        o.set("parameter_count", params);
        io::JsonValue dt(io::JsonObject{});
        for (const auto& [k, n] : dtypes)
            dt.set(s(k), n);
        o.set("dtypes", std::move(dt));
        o.set("file_bytes", std::int64_t(ck->fileBytes));
        io::JsonArray files, warnings, tensors;
        for (const auto& f : ck->files)
            files.push_back(s(f));
        for (const auto& w : ck->warnings)
            warnings.push_back(s(w));
        o.set("files", std::move(files));
        o.set("warnings", std::move(warnings));
        if (!ck->quantization.empty()) o.set("quantization", s(ck->quantization));
        o.set("tokenizer", !ck->tokenizerPath.empty()       ? io::JsonValue(s(ck->tokenizerPath))
                           : !ck->embeddedTokenizer.empty() ? io::JsonValue(s("embedded:" + ck->embeddedTokenizer))
                                                            : io::JsonValue());
        for (const TensorInfo& t : ck->tensors) {
            io::JsonArray shape;
            for (auto d : t.shape)
                shape.push_back(std::int64_t(d));
            io::JsonValue to;
            to.set("name", s(t.name));
            to.set("shape", std::move(shape));
            to.set("dtype", s(dtypeLabel(t)));
            to.set("bytes", std::int64_t(t.bytes.size()));
            tensors.push_back(std::move(to));
        }
        o.set("tensors", std::move(tensors));
        if (!metadata.empty()) {
            io::JsonValue md;
            for (const auto& [k, v] : metadata)
                md.set(s(k), s(v));
            o.set("gguf_metadata", std::move(md));
        }
        std::cout << io::toJsonText(o);
        return 0;
    }

    std::cout << "path:            " << ck->path << "\n"
              << "format:          " << io::checkpointFormatName(ck->format) << "\n"
              << "architecture:    " << architectureName(c.architecture) << " (" << c.modelType << ")\n"
              << "hidden:          " << c.hiddenSize << "\n"
              << "intermediate:    " << c.intermediateSize << "\n"
              << "layers:          " << c.numHiddenLayers << "\n"
              << "heads:           " << c.numAttentionHeads << " (kv " << c.numKeyValueHeads << ", head_dim "
              << c.headDim << ")\n"
              << "vocab:           " << c.vocabSize << "\n"
              << "rope theta:      " << c.ropeTheta
              << (c.ropeScaling.type.empty() ? "" : " (scaling " + c.ropeScaling.type + ")") << "\n"
              << "rms eps:         " << c.rmsNormEps << "\n"
              << "tied embeddings: " << (c.tieWordEmbeddings ? "yes" : "no") << "\n"
              << "parameters:      " << params << "\n"
              << "dtypes:         ";
    for (const auto& [k, n] : dtypes)
        std::cout << " " << k << " x" << n;
    std::cout << "\nfiles:           " << ck->files.size() << " (" << humanBytes(ck->fileBytes) << ")\n"
              << (ck->quantization.empty() ? std::string() : "quantization:    " + ck->quantization + "\n")
              << "tokenizer:       "
              << (!ck->tokenizerPath.empty()       ? ck->tokenizerPath
                  : !ck->embeddedTokenizer.empty() ? "embedded in the GGUF (" + ck->embeddedTokenizer + ")"
                                                   : std::string("(none)"))
              << "\n";
    for (const auto& w : ck->warnings)
        std::cout << "warning:         " << w << "\n";
    if (!metadata.empty()) {
        std::cout << "\nGGUF metadata:\n";
        for (const auto& [k, v] : metadata)
            std::cout << "  " << k << " = " << v << "\n";
    }
    std::size_t width = 4;
    for (const TensorInfo& t : ck->tensors)
        width = std::max(width, t.name.size());
    std::cout << "\n"
              << "name" << std::string(width - 4 + 2, ' ') << "shape            dtype   bytes\n";
    for (const TensorInfo& t : ck->tensors) {
        const std::string shape = t.shapeString(), dt = dtypeLabel(t);
        std::cout << t.name << std::string(width - t.name.size() + 2, ' ') << shape
                  << std::string(shape.size() < 17 ? 17 - shape.size() : 1, ' ') << dt
                  << std::string(dt.size() < 8 ? 8 - dt.size() : 1, ' ') << t.bytes.size() << "\n";
    }
    return 0;
}

} // namespace

QB_CLI_COMMAND("info", "describe a model checkpoint (config, tensors, dtypes, sizes)",
               "Usage: quantbench-cli info MODEL [--json]\n\n"
               "MODEL is a Hugging Face directory (config.json + safetensors or pytorch_model.bin,\n"
               "single or sharded), a .safetensors/.bin file, an index .json, or a .gguf file.\n"
               "Prints the architecture, dimensions, parameter count, dtypes, files, tokenizer and\n"
               "the tensor table. --json prints one JSON object instead.\n"
               "Exit codes: 0 success, 1 the model cannot be read, 2 usage error.\n",
               runInfo);
