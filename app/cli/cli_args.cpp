#include "cli/cli_args.h"

#include <cctype>

#include <charconv>
#include <cstdlib>

namespace qb::cli {

CliArgs::CliArgs(std::vector<std::string> args, std::set<std::string> valueOptions, std::set<std::string> flags)
{
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
            std::string key = a.substr(2);
            std::optional<std::string> inlineValue;
            if (const auto eq = key.find('='); eq != std::string::npos) {
                inlineValue = key.substr(eq + 1);
                key = key.substr(0, eq);
            }
            if (flags.count(key)) {
                if (inlineValue) {
                    m_error = "option --" + key + " takes no value";
                    return;
                }
                m_flags.insert(key);
            } else if (valueOptions.count(key)) {
                if (inlineValue) {
                    m_values[key] = *inlineValue;
                } else if (i + 1 < args.size()) {
                    m_values[key] = args[++i];
                } else {
                    m_error = "option --" + key + " needs a value";
                    return;
                }
            } else {
                m_error = "unknown option --" + key;
                return;
            }
        } else {
            m_positionals.push_back(a);
        }
    }
}

bool CliArgs::has(const std::string& key) const { return m_flags.count(key) || m_values.count(key); }

std::optional<std::string> CliArgs::value(const std::string& key) const
{
    auto it = m_values.find(key);
    if (it == m_values.end()) return std::nullopt;
    return it->second;
}

std::string CliArgs::value(const std::string& key, const std::string& fallback) const
{
    return value(key).value_or(fallback);
}

long long CliArgs::intValue(const std::string& key, long long fallback, long long min, long long max)
{
    auto v = value(key);
    if (!v) return fallback;
    long long out = 0;
    const auto* end = v->data() + v->size();
    auto [p, ec] = std::from_chars(v->data(), end, out);
    if (ec != std::errc() || p != end) {
        if (m_error.empty()) m_error = "--" + key + " expects an integer, got '" + *v + "'";
        return fallback;
    }
    if (out < min || out > max) {
        if (m_error.empty())
            m_error =
                "--" + key + " must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + *v;
        return fallback;
    }
    return out;
}

unsigned long long CliArgs::bytesValue(const std::string& key, unsigned long long fallback)
{
    auto v = value(key);
    if (!v) return fallback;
    std::string digits = *v;
    unsigned long long mult = 1;
    if (!digits.empty()) {
        const char u = char(std::toupper(static_cast<unsigned char>(digits.back())));
        const int shift = u == 'K' ? 10 : u == 'M' ? 20 : u == 'G' ? 30 : u == 'T' ? 40 : 0;
        if (shift) {
            mult = 1ULL << shift;
            digits.pop_back();
        }
    }
    unsigned long long out = 0;
    const auto* end = digits.data() + digits.size();
    auto [p, ec] = std::from_chars(digits.data(), end, out);
    if (digits.empty() || ec != std::errc() || p != end || out == 0 || out > (~0ULL) / mult) {
        if (m_error.empty()) m_error = "--" + key + " expects a size such as 800M or 16G, got '" + *v + "'";
        return fallback;
    }
    return out * mult;
}

double CliArgs::doubleValue(const std::string& key, double fallback)
{
    auto v = value(key);
    if (!v) return fallback;
    char* end = nullptr;
    const double out = std::strtod(v->c_str(), &end);
    if (end == v->c_str() || *end != '\0') {
        if (m_error.empty()) m_error = "--" + key + " expects a number, got '" + *v + "'";
        return fallback;
    }
    return out;
}

} // namespace qb::cli
