#include "cli/cli_command.h"

#include <algorithm>
#include <cstdio>
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

std::string jsonEscape(const std::string& s)
{
    std::string out;
    out.reserve(s.size() + 2);
    for (const unsigned char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out += char(c);
            }
        }
    }
    return out;
}

} // namespace qb::cli
