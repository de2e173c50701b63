#pragma once
// The quantbench-cli subcommand registry. Each subcommand lives in its own cli/cmd_<name>.cpp
// and registers itself with a file-scope QB_CLI_COMMAND(...) object; cli_main.cpp dispatches.
// Commands print results on stdout (JSON with --json) and errors on stderr, and return the
// process exit code: 0 success, 1 failure (bad input, I/O), 2 usage error, 130 cancelled.

#include <string>
#include <vector>

namespace qb::cli {

struct CliCommand {
    const char* name;
    const char* summary; // one line for --help
    const char* usage;   // full usage text for `quantbench-cli help <name>`
    int (*run)(const std::vector<std::string>& args);
};

bool registerCommand(const CliCommand& cmd);
const std::vector<CliCommand>& commands();
const CliCommand* findCommand(const std::string& name);

// Prints "quantbench-cli <cmd>: <message>" on stderr and returns `code`.
int fail(const std::string& cmd, const std::string& message, int code = 1);

} // namespace qb::cli

#define QB_CLI_CONCAT_(a, b) a##b
#define QB_CLI_CONCAT(a, b) QB_CLI_CONCAT_(a, b)
#define QB_CLI_COMMAND(...)                                                                                            \
    static const bool QB_CLI_CONCAT(qbCliRegistered_, __LINE__) =                                                      \
        ::qb::cli::registerCommand(::qb::cli::CliCommand{__VA_ARGS__})
