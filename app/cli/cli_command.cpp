#include "cli/cli_command.h"

#include <algorithm>
#include <iostream>

namespace qb::cli {

namespace {
std::vector<CliCommand>& registry()
{
    static std::vector<CliCommand> r;
    return r;
}
} // namespace

bool registerCommand(const CliCommand& cmd)
{
    auto& r = registry();
    r.push_back(cmd);
    std::sort(r.begin(), r.end(),
              [](const CliCommand& a, const CliCommand& b) { return std::string(a.name) < b.name; });
    return true;
}

const std::vector<CliCommand>& commands() { return registry(); }

const CliCommand* findCommand(const std::string& name)
{
    for (const auto& c : registry())
        if (name == c.name) return &c;
    return nullptr;
}

int fail(const std::string& cmd, const std::string& message, int code)
{
    std::cerr << "quantbench-cli " << cmd << ": " << message << std::endl;
    return code;
}

} // namespace qb::cli
