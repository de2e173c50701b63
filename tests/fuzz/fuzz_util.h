// Shared helpers for the fuzz harnesses (tests/fuzz/fuzz_*.cpp).
//
// Every harness defines LLVMFuzzerTestOneInput() and includes this header once. Built with
// clang and -DQB_FUZZ=ON, libFuzzer supplies main(); in the normal (GCC) build this header
// supplies a replay main() instead that runs every file of the directories (or files) named on
// the command line through the harness, so the committed corpora and regression reproducers run
// under CTest.
//
// Readers take paths, so inputs are written to files in one per-process scratch directory that
// is created on first use and removed at exit. Single-threaded, like libFuzzer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace qb::fuzz {

// The per-process scratch directory (absolute path, no trailing slash).
inline const std::string& scratchDir()
{
    static const std::string dir = [] {
        std::error_code ec;
        std::string base = std::filesystem::temp_directory_path(ec).string();
        if (ec || base.empty()) base = "/tmp";
        std::string tmpl = base + "/qb-fuzz-XXXXXX";
        if (!::mkdtemp(tmpl.data())) {
            std::perror("qb-fuzz: mkdtemp");
            std::abort();
        }
        static std::string removeAtExit;
        removeAtExit = tmpl;
        std::atexit([] {
            std::error_code ignored;
            std::filesystem::remove_all(removeAtExit, ignored);
        });
        return tmpl;
    }();
    return dir;
}

// A path inside the scratch directory (or inside a sub-directory of it, created on demand).
inline std::string scratchPath(const std::string& name, const std::string& subdir = {})
{
    std::string dir = scratchDir();
    if (!subdir.empty()) {
        dir += "/" + subdir;
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
    }
    return dir + "/" + name;
}

// Writes bytes to `path`, replacing what was there; aborts on failure (a harness bug).
inline void writeFile(const std::string& path, const void* data, std::size_t size)
{
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(static_cast<const char*>(data), std::streamsize(size));
    f.close();
    if (!f) {
        std::fprintf(stderr, "qb-fuzz: cannot write %s\n", path.c_str());
        std::abort();
    }
}
inline void writeFile(const std::string& path, std::string_view text) { writeFile(path, text.data(), text.size()); }

// With QB_FUZZ_VERBOSE set, prints why a reader refused an input (to check what a regression
// reproducer now gets); silent otherwise, so fuzzing runs at full speed.
template <typename R>
const R& note(const R& result)
{
    static const bool verbose = std::getenv("QB_FUZZ_VERBOSE") != nullptr;
    if (verbose && !result.ok()) std::fprintf(stderr, "  -> %s\n", result.error().toString().c_str());
    return result;
}

// Splits an input into parts at a separator line, so one input can describe several files
// (e.g. an index and its shard). Missing parts are empty.
inline constexpr std::string_view kPartSeparator = "\n--qbfuzz--\n";
inline std::vector<std::string_view> splitParts(const std::uint8_t* data, std::size_t size, std::size_t parts)
{
    std::string_view rest(reinterpret_cast<const char*>(data), size);
    std::vector<std::string_view> out;
    while (out.size() + 1 < parts) {
        const std::size_t at = rest.find(kPartSeparator);
        if (at == std::string_view::npos) break;
        out.push_back(rest.substr(0, at));
        rest.remove_prefix(at + kPartSeparator.size());
    }
    out.push_back(rest);
    out.resize(parts);
    return out;
}

} // namespace qb::fuzz

#ifndef QB_FUZZ_LIBFUZZER
// Replay driver: `fuzz_x DIR_OR_FILE...` runs every regular file (directories recursively, in
// sorted order) through the harness once. A crash shows up as a failing CTest; the file being run
// is printed first so the reproducer is named in the log.
int main(int argc, char** argv)
{
    namespace fs = std::filesystem;
    std::vector<fs::path> files;
    for (int i = 1; i < argc; ++i) {
        const fs::path p(argv[i]);
        std::error_code ec;
        if (fs::is_directory(p, ec)) {
            for (const auto& e : fs::recursive_directory_iterator(p, ec))
                if (e.is_regular_file()) files.push_back(e.path());
        } else if (fs::is_regular_file(p, ec)) {
            files.push_back(p);
        } else {
            std::fprintf(stderr, "qb-fuzz replay: %s: no such file or directory (skipped)\n", argv[i]);
        }
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) {
        std::ifstream in(f, std::ios::binary);
        const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::fprintf(stderr, "qb-fuzz replay: %s (%zu bytes)\n", f.c_str(), bytes.size());
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    }
    std::fprintf(stderr, "qb-fuzz replay: %zu inputs ran\n", files.size());
    return 0;
}
#endif
