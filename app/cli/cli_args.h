#pragma once
// Minimal argument parser for quantbench-cli subcommands: positionals, --key value, --key=value
// and boolean --flags. Unknown options are errors, so typos never pass silently.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace qb::cli {

class CliArgs {
public:
    // `valueOptions` take a value, `flags` do not; both are spelled without the leading "--".
    CliArgs(std::vector<std::string> args, std::set<std::string> valueOptions, std::set<std::string> flags);

    bool ok() const { return m_error.empty(); }
    const std::string& error() const { return m_error; }

    const std::vector<std::string>& positionals() const { return m_positionals; }
    bool has(const std::string& key) const;
    std::optional<std::string> value(const std::string& key) const;
    std::string value(const std::string& key, const std::string& fallback) const;
    // Parses an integer option; sets error() and returns fallback on garbage.
    long long intValue(const std::string& key, long long fallback, long long min, long long max);
    double doubleValue(const std::string& key, double fallback);
    // A size in bytes: "1500000", "800M", "16G", "512K" (powers of 1024); sets error() on garbage.
    unsigned long long bytesValue(const std::string& key, unsigned long long fallback);

private:
    std::vector<std::string> m_positionals;
    std::map<std::string, std::string> m_values;
    std::set<std::string> m_flags;
    std::string m_error;
};

} // namespace qb::cli
