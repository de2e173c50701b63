// quantbench-cli tokenize: encode a text file with a model's tokenizer and print the ids.

#include "cli/cli_args.h"
#include "cli/cli_command.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"

#include <QFile>
#include <QFileInfo>

#include <iostream>

namespace {

int runTokenize(const std::vector<std::string>& argv)
{
    using namespace qb;
    const char* cmd = "tokenize";
    cli::CliArgs args(argv, {"text"}, {"no-special", "json"});
    if (!args.ok()) return cli::fail(cmd, args.error(), 2);
    if (args.positionals().size() != 1) return cli::fail(cmd, "expected one MODEL argument", 2);
    const auto textPath = args.value("text");
    if (!textPath) return cli::fail(cmd, "--text FILE is required", 2);

    const std::string model = args.positionals().front();
    const QFileInfo info(QString::fromStdString(model));
    if (!info.exists()) return cli::fail(cmd, "no tokenizer: " + model + " does not exist");
    // A tokenizer.json itself, or any model the checkpoint opener reads (its tokenizer.json or the
    // tokenizer a GGUF embeds).
    Result<io::Tokenizer> tok = makeError(ErrorCode::InvalidArgument, "no tokenizer", model);
    const QString besideIt = info.isDir() ? info.absoluteFilePath() + "/tokenizer.json" : QString();
    if (info.isFile() && info.suffix() == "json" && info.fileName() != "config.json") {
        tok = io::Tokenizer::fromFile(model);
    } else if (!besideIt.isEmpty() && QFileInfo::exists(besideIt)) { // a directory with only a tokenizer
        tok = io::Tokenizer::fromFile(besideIt.toStdString());
    } else {
        auto ck = io::openCheckpoint(model);
        if (!ck)
            return cli::fail(cmd, "no tokenizer.json in " + model +
                                      " and it does not open as a model: " + ck.error().toString());
        tok = io::loadCheckpointTokenizer(*ck);
    }
    if (!tok) return cli::fail(cmd, "cannot load tokenizer: " + tok.error().toString());

    QFile f(QString::fromStdString(*textPath));
    if (!f.open(QIODevice::ReadOnly))
        return cli::fail(cmd, "cannot read " + *textPath + ": " + f.errorString().toStdString());
    const QByteArray text = f.readAll();

    const auto ids = tok->encode(std::string_view(text.constData(), std::size_t(text.size())), !args.has("no-special"));
    std::string out;
    out.reserve(ids.size() * 6 + 16);
    if (args.has("json")) {
        out += "{\"ids\":[";
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (i) out += ',';
            out += std::to_string(ids[i]);
        }
        out += "]}\n";
    } else {
        for (const auto id : ids) {
            out += std::to_string(id);
            out += '\n';
        }
    }
    std::cout << out << std::flush;
    return 0;
}

} // namespace

QB_CLI_COMMAND("tokenize", "encode a text file with a model's tokenizer and print the token ids",
               "Usage: quantbench-cli tokenize MODEL --text FILE [--no-special] [--json]\n"
               "  MODEL         a tokenizer.json, or a model (directory, file or .gguf): its tokenizer.json,\n"
               "                or the tokenizer a GGUF embeds\n"
               "  --text FILE   UTF-8 text to encode\n"
               "  --no-special  do not add BOS/EOS (add_special_tokens=False)\n"
               "  --json        print {\"ids\":[...]} instead of one id per line\n",
               &runTokenize);
