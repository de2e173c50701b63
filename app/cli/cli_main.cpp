// quantbench-cli: batch front end over core/pipeline. Dispatches to the registered subcommands.

#include "cli/cli_command.h"

#include <QCoreApplication>

#include <algorithm>
#include <cstring>
#include <exception>
#include <iostream>
#include <new>
#include <string>

namespace {

void printHelp()
{
    std::cout << "quantbench-cli " QB_VERSION " - post-training quantization workbench (batch)\n\n"
                 "Usage: quantbench-cli <command> [options]\n"
                 "       quantbench-cli help <command>\n"
                 "       quantbench-cli --version | --help\n\n"
                 "Commands:\n";
    for (const auto& c : qb::cli::commands())
        std::cout << "  " << c.name << std::string(12 - std::min<size_t>(11, std::strlen(c.name)), ' ') << c.summary
                  << "\n";
    std::cout << "\nExit codes: 0 success, 1 failure, 2 usage error, 130 cancelled.\n";
}

} // namespace

int main(int argc, char** argv)
{
    QCoreApplication app(argc, argv); // Qt Core for file I/O in io/; no event loop is needed
    QCoreApplication::setApplicationName("quantbench-cli");
    QCoreApplication::setApplicationVersion(QB_VERSION);

    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        printHelp();
        return 2;
    }
    const std::string first = args.front();
    if (first == "--version" || first == "-V") {
        std::cout << "quantbench-cli " QB_VERSION " (Qt " << qVersion() << ")\n";
        return 0;
    }
    if (first == "--help" || first == "-h") {
        printHelp();
        return 0;
    }
    if (first == "help") {
        if (args.size() < 2) {
            printHelp();
            return 0;
        }
        if (const auto* c = qb::cli::findCommand(args[1])) {
            std::cout << c->usage;
            return 0;
        }
        return qb::cli::fail("help", "unknown command '" + args[1] + "'", 2);
    }
    const auto* cmd = qb::cli::findCommand(first);
    if (!cmd) {
        std::cerr << "quantbench-cli: unknown command '" << first << "' (see --help)\n";
        return 2;
    }
    args.erase(args.begin());
    for (const auto& a : args)
        if (a == "--help" || a == "-h") {
            std::cout << cmd->usage;
            return 0;
        }
    // The last line of defence: whatever escapes a command (a bug, or memory running out where
    // no size check caught it) ends with a message and exit 1, never std::terminate's SIGABRT.
    try {
        return cmd->run(args);
    } catch (const std::bad_alloc&) {
        return qb::cli::fail(first, "out of memory (the input asks for more memory than this machine has)", 1);
    } catch (const std::exception& e) {
        return qb::cli::fail(first, std::string("internal error: ") + e.what(), 1);
    } catch (...) {
        return qb::cli::fail(first, "internal error (unknown exception)", 1);
    }
}
