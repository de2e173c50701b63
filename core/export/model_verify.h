#pragma once
// Verification of written model files: re-read with our own readers and check what llama.cpp
// and transformers would check (FORMATS.md §4.8 and §1.4), plus that every value is finite.
//
// verifyGgufFile() checks a GGUF against an expected tensor list (names, ggml types, ggml dims,
// in order) when one is given, the structural rules (version 3, alignment 32 or declared,
// cumulative aligned offsets - guaranteed by the reader's bounds checks plus our recomputation,
// names < 64 bytes, required architecture keys with their exact value types) and decodes every
// tensor to F32 to look for NaN/Inf. verifyModelFile() does the value checks for any checkpoint
// openCheckpoint() accepts (safetensors, .bin, GGUF). Both apply the loader's model-level checks
// (openCheckpoint: config, duplicate names, required tensors), so a file that `info` refuses never
// verifies. One VerifyReport for every format (GPTQ directories too, gptq_export.h).
// Memory: one tensor at a time.
// Threading: calling thread only; progress stage "verify", cancel polled between tensors.

#include "base/result.h"
#include "base/run_context.h"
#include "io/ggml_codec.h"

#include <cstdint>
#include <string>
#include <vector>

namespace qb::exporting {

struct ExpectedTensor {
    std::string name;             // GGUF name
    std::vector<std::int64_t> ne; // ggml order
    io::GgmlType type = io::GgmlType::F32;
};

struct VerifiedTensor {
    std::string name;
    std::string type;                // ggml or dtype name
    std::vector<std::int64_t> shape; // as the file stores it (GGUF: ne order; others: HF)
    std::int64_t nonFinite = 0;
    double maxAbs = 0;
};

struct VerifyReport {
    bool ok = false;
    std::string path;
    std::string format; // "gguf", "safetensors", ...
    std::string architecture;
    std::uint64_t tensorCount = 0;
    std::uint64_t kvCount = 0;
    std::uint64_t fileBytes = 0;
    std::vector<VerifiedTensor> tensors;
    std::vector<std::string> problems; // empty when ok
    std::string summary() const;       // multi-line, for the CLI
    // {} when ok; otherwise the Format error every exporter returns before installing a file:
    // "the written <what> failed verification (not installed): <problems>" at `target`.
    Status verificationStatus(const std::string& what, const std::string& target) const;
};

// `expected` empty: structural and value checks only.
Result<VerifyReport> verifyGgufFile(const std::string& path, const std::vector<ExpectedTensor>& expected = {},
                                    RunContext* ctx = nullptr);
// Any checkpoint path (GGUF goes through verifyGgufFile).
Result<VerifyReport> verifyModelFile(const std::string& path, RunContext* ctx = nullptr);

} // namespace qb::exporting
