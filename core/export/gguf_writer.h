#pragma once
// GgufWriter: assembles and writes a GGUF v3 file (FORMATS.md §4.1-4.3).
//
// Layout written: "GGUF", u32 version 3, u64 tensor count, u64 KV count, the KVs in insertion
// order, the tensor infos in insertion order, zero padding to the alignment, then each tensor's
// data followed by zero padding to the alignment (after the last one too). Offsets are the
// running sum of aligned sizes in info order, which llama.cpp insists on. Metadata values are
// typed exactly as the caller asks (llama.cpp type-checks them: u32 counts, f32 eps, ...);
// duplicate keys and tensor names, names of 64 bytes or more, and rows that are not whole
// blocks are refused when added.
// Tensor data is produced lazily, one tensor at a time, by a callback called in info order during
// write(), so a model never has to be held encoded in memory. write() goes through
// AtomicFileWriter: a failure or a cancel leaves an existing file untouched.
// Threading: build and write on one thread; producers run on that thread.

#include "base/result.h"
#include "base/run_context.h"
#include "io/ggml_codec.h"
#include "io/gguf_reader.h"

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace qb::exporting {

inline constexpr std::uint32_t kGgufAlignment = 32;

struct GgufWriteOptions {
    std::uint64_t failAfterBytesForTesting = 0; // simulated write error (0 = off)
    // Runs on the complete, synced temporary file before it replaces the target; an error
    // discards the temporary (the target stays untouched).
    std::function<Status(const std::string& tempPath)> beforeCommit;
};

class GgufWriter {
public:
    using Producer = std::function<Result<std::vector<std::uint8_t>>()>;

    struct TensorEntry {
        std::string name;
        std::vector<std::int64_t> ne; // ggml order: ne[0] fastest (the HF shape reversed)
        io::GgmlType type = io::GgmlType::F32;
        std::uint64_t bytes = 0;
        std::uint64_t offset = 0; // relative to the data section
        Producer produce;
    };

    using WriteOptions = GgufWriteOptions;

    // Metadata. Keys must be unique; the first error is kept and returned by write().
    void setU32(const std::string& key, std::uint32_t v);
    void setI32(const std::string& key, std::int32_t v);
    void setU64(const std::string& key, std::uint64_t v);
    void setF32(const std::string& key, float v);
    void setBool(const std::string& key, bool v);
    void setString(const std::string& key, const std::string& v);
    void setStringArray(const std::string& key, const std::vector<std::string>& v);
    void setI32Array(const std::string& key, const std::vector<std::int32_t>& v);
    void setF32Array(const std::string& key, const std::vector<float>& v);
    void setBoolArray(const std::string& key, const std::vector<bool>& v);

    // `hfShape` in PyTorch order; stored reversed. The producer must return exactly the size
    // implied by type and shape.
    Status addTensor(const std::string& name, const std::vector<std::int64_t>& hfShape, io::GgmlType type,
                     Producer produce);

    const std::vector<TensorEntry>& tensors() const { return m_tensors; }
    std::uint64_t fileSize() const; // exact size of the file write() produces
    std::uint64_t kvCount() const { return m_kvCount; }

    // Progress: stage "write", one unit per tensor; cancel polled between tensors.
    Status write(const std::string& path, RunContext* ctx = nullptr, const WriteOptions& options = {});

private:
    void beginKv(const std::string& key, io::GgufValueType type);

    std::string m_kvBytes; // encoded KV section
    std::uint64_t m_kvCount = 0;
    std::set<std::string> m_keys;
    std::set<std::string> m_names;
    std::vector<TensorEntry> m_tensors;
    std::uint64_t m_dataBytes = 0;
    Error m_firstError;
    bool m_failed = false;
};

} // namespace qb::exporting
