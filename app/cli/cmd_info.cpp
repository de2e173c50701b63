// quantbench-cli info: describe a checkpoint (config, parameter count, dtypes, files, tensors).

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "io/checkpoint.h"
#include "io/ggml_codec.h"
#include "io/gguf_reader.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>

#include <cstdio>
#include <iostream>
#include <map>

namespace {

using namespace qb;

std::string dtypeLabel(const TensorInfo& t)
{
    return t.ggmlType >= 0 ? io::ggmlTypeName(t.ggmlType) : dtypeName(t.dtype);
}

std::string humanBytes(std::uint64_t b)
{
    char buf[32];
    if (b >= (1ull << 30))
        std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1ull << 30));
    else if (b >= (1ull << 20))
        std::snprintf(buf, sizeof buf, "%.2f MiB", double(b) / double(1ull << 20));
    else if (b >= 1024)
        std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / 1024.0);
    else
        std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
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
        QJsonObject o;
        auto s = [](const std::string& x) { return QString::fromStdString(x); };
        o["path"] = s(ck->path);
        o["format"] = io::checkpointFormatName(ck->format);
        o["architecture"] = architectureName(c.architecture);
        o["model_type"] = s(c.modelType);
        o["hidden_size"] = qint64(c.hiddenSize);
        o["intermediate_size"] = qint64(c.intermediateSize);
        o["num_hidden_layers"] = qint64(c.numHiddenLayers);
        o["num_attention_heads"] = qint64(c.numAttentionHeads);
        o["num_key_value_heads"] = qint64(c.numKeyValueHeads);
        o["head_dim"] = qint64(c.headDim);
        o["vocab_size"] = qint64(c.vocabSize);
        o["max_position_embeddings"] = qint64(c.maxPositionEmbeddings);
        o["rope_theta"] = c.ropeTheta;
        o["rms_norm_eps"] = c.rmsNormEps;
        o["tie_word_embeddings"] = c.tieWordEmbeddings;
        o["rope_scaling"] =
            c.ropeScaling.type.empty() ? QJsonValue() : QJsonValue(s(c.ropeScaling.type));
        o["parameter_count"] = qint64(params);
        QJsonObject dt;
        for (const auto& [k, n] : dtypes)
            dt[s(k)] = n;
        o["dtypes"] = dt;
        o["file_bytes"] = qint64(ck->fileBytes);
        QJsonArray files, warnings, tensors;
        for (const auto& f : ck->files)
            files.append(s(f));
        for (const auto& w : ck->warnings)
            warnings.append(s(w));
        o["files"] = files;
        o["warnings"] = warnings;
        o["tokenizer"] =
            ck->tokenizerPath.empty() ? QJsonValue() : QJsonValue(s(ck->tokenizerPath));
        for (const TensorInfo& t : ck->tensors) {
            QJsonObject to;
            to["name"] = s(t.name);
            QJsonArray shape;
            for (auto d : t.shape)
                shape.append(qint64(d));
            to["shape"] = shape;
            to["dtype"] = s(dtypeLabel(t));
            to["bytes"] = qint64(t.bytes.size());
            tensors.append(to);
        }
        o["tensors"] = tensors;
        if (!metadata.empty()) {
            QJsonObject md;
            for (const auto& [k, v] : metadata)
                md[s(k)] = s(v);
            o["gguf_metadata"] = md;
        }
        std::cout << QJsonDocument(o).toJson(QJsonDocument::Indented).toStdString();
        return 0;
    }

    std::cout << "path:            " << ck->path << "\n"
              << "format:          " << io::checkpointFormatName(ck->format) << "\n"
              << "architecture:    " << architectureName(c.architecture) << " (" << c.modelType
              << ")\n"
              << "hidden:          " << c.hiddenSize << "\n"
              << "intermediate:    " << c.intermediateSize << "\n"
              << "layers:          " << c.numHiddenLayers << "\n"
              << "heads:           " << c.numAttentionHeads << " (kv " << c.numKeyValueHeads
              << ", head_dim " << c.headDim << ")\n"
              << "vocab:           " << c.vocabSize << "\n"
              << "rope theta:      " << c.ropeTheta
              << (c.ropeScaling.type.empty() ? "" : " (scaling " + c.ropeScaling.type + ")") << "\n"
              << "rms eps:         " << c.rmsNormEps << "\n"
              << "tied embeddings: " << (c.tieWordEmbeddings ? "yes" : "no") << "\n"
              << "parameters:      " << params << "\n"
              << "dtypes:         ";
    for (const auto& [k, n] : dtypes)
        std::cout << " " << k << " x" << n;
    std::cout << "\nfiles:           " << ck->files.size() << " (" << humanBytes(ck->fileBytes)
              << ")\n"
              << "tokenizer:       " << (ck->tokenizerPath.empty() ? "(none)" : ck->tokenizerPath)
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

QB_CLI_COMMAND(
    "info", "describe a model checkpoint (config, tensors, dtypes, sizes)",
    "Usage: quantbench-cli info MODEL [--json]\n\n"
    "MODEL is a Hugging Face directory (config.json + safetensors or pytorch_model.bin,\n"
    "single or sharded), a .safetensors/.bin file, an index .json, or a .gguf file.\n"
    "Prints the architecture, dimensions, parameter count, dtypes, files, tokenizer and\n"
    "the tensor table. --json prints one JSON object instead.\n"
    "Exit codes: 0 success, 1 the model cannot be read, 2 usage error.\n",
    runInfo);
