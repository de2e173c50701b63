#pragma once
// Read-only memory-mapped files and bounds-checked views into them.
//
// MappedFile maps a whole file read-only (POSIX mmap); the pages are loaded lazily by the OS, so
// mapping a 10 GB checkpoint costs nothing until tensors are touched. ByteRange is a cheap,
// copyable view that keeps its file alive (shared_ptr) and checks every access: asking for bytes
// past its end returns an Error naming the file and offset, never undefined behaviour.
// ByteCursor reads little-endian scalars sequentially from a ByteRange, for header parsers.
// Thread-safety: all objects are immutable after construction and may be shared across threads.

#include "base/result.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace qb {

class MappedFile {
public:
    static Result<std::shared_ptr<const MappedFile>> open(const std::string& path);
    // Owned in-memory bytes behind the same interface (e.g. a tensor materialized from a strided
    // view); `name` plays the role of the path in error messages.
    static std::shared_ptr<const MappedFile> fromBytes(std::vector<std::uint8_t> bytes, std::string name);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::uint8_t* data() const { return m_data; }
    std::uint64_t size() const { return m_size; }
    const std::string& path() const { return m_path; }

private:
    MappedFile() = default;
    std::string m_path;
    const std::uint8_t* m_data = nullptr;
    std::uint64_t m_size = 0;
    bool m_mapped = false;
    std::vector<std::uint8_t> m_owned;
};

class ByteRange {
public:
    ByteRange() = default;
    // The whole file.
    explicit ByteRange(std::shared_ptr<const MappedFile> file);

    const std::uint8_t* data() const { return m_data; }
    std::uint64_t size() const { return m_size; }
    bool empty() const { return m_size == 0; }
    // Offset of this view's first byte within its file.
    std::uint64_t fileOffset() const { return m_fileOffset; }
    std::string path() const { return m_file ? m_file->path() : std::string(); }
    const std::shared_ptr<const MappedFile>& file() const { return m_file; }

    // [offset, offset+length) of this view, or an OutOfRange error naming the file offset.
    Result<ByteRange> slice(std::uint64_t offset, std::uint64_t length) const;
    // Copies a trivially copyable value stored at `offset` (little-endian, any alignment).
    template <typename T>
    Result<T> read(std::uint64_t offset) const
    {
        static_assert(std::is_trivially_copyable_v<T>);
        if (offset > m_size || sizeof(T) > m_size - offset) return outOfRange(offset, sizeof(T));
        T v;
        std::memcpy(&v, m_data + offset, sizeof(T));
        return v;
    }
    std::string_view view() const { return {reinterpret_cast<const char*>(m_data), std::size_t(m_size)}; }
    Error outOfRange(std::uint64_t offset, std::uint64_t length) const;

private:
    std::shared_ptr<const MappedFile> m_file;
    const std::uint8_t* m_data = nullptr;
    std::uint64_t m_size = 0;
    std::uint64_t m_fileOffset = 0;
};

// Sequential little-endian reader over a ByteRange. Every read is bounds-checked.
class ByteCursor {
public:
    explicit ByteCursor(ByteRange range) : m_range(std::move(range)) {}
    std::uint64_t pos() const { return m_pos; }
    std::uint64_t remaining() const { return m_range.size() - m_pos; }
    const ByteRange& range() const { return m_range; }
    void seek(std::uint64_t pos) { m_pos = pos; }

    template <typename T>
    Result<T> read()
    {
        auto r = m_range.read<T>(m_pos);
        if (r.ok()) m_pos += sizeof(T);
        return r;
    }
    // `length` raw bytes as a view into the mapping.
    Result<ByteRange> take(std::uint64_t length);
    Result<std::string> readString(std::uint64_t length);

private:
    ByteRange m_range;
    std::uint64_t m_pos = 0;
};

} // namespace qb
