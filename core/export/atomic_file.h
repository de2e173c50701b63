#pragma once
// AtomicFileWriter: writes a file so that readers see either the old file or the complete new
// one, never a torn mixture (FORMATS.md / issue 5, "atomic and safe").
//
// The bytes go to a uniquely named temporary file in the target's directory (same file system,
// so the final rename(2) is atomic); commit() flushes the buffer, fsync()s the file, renames it
// over the target and fsync()s the directory. Anything else (an error, a cancel, destruction
// without commit) closes and unlinks the temporary, leaving an existing target untouched.
// Before anything is written, open() checks with statvfs(2) that the directory has room for the
// announced size. POSIX only, std only (no Qt), buffered (1 MiB).
// Threading: one writer object per thread; not copyable, movable.

#include "base/result.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qb::exporting {

// Fails with ErrorCode::Io naming the directory, the bytes needed and the bytes available when
// `dir` has less than `bytes` (+ 1 MiB slack) free for unprivileged users.
Status checkDiskSpace(const std::string& dir, std::uint64_t bytes);

class AtomicFileWriter {
public:
    AtomicFileWriter() = default;
    AtomicFileWriter(AtomicFileWriter&& other) noexcept;
    AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
    AtomicFileWriter(const AtomicFileWriter&) = delete;
    AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
    ~AtomicFileWriter(); // discards an uncommitted temporary

    // Checks free space for `expectedBytes` and creates the temporary next to `target`.
    static Result<AtomicFileWriter> open(const std::string& target, std::uint64_t expectedBytes);

    Status write(const void* data, std::size_t n);
    Status writeZeros(std::size_t n);
    // Flushes the buffer and fsync()s the temporary, e.g. to re-read it before commit().
    Status sync();
    // Flush, fsync, rename over the target, fsync the directory. The writer is closed after.
    Status commit();
    // Closes and unlinks the temporary (also done by the destructor).
    void discard();

    std::uint64_t bytesWritten() const { return m_written; }
    const std::string& tempPath() const { return m_tempPath; }
    const std::string& targetPath() const { return m_target; }

    // Test hook: the write that would take the file past `bytes` fails like a full disk (EIO).
    void failAfterBytesForTesting(std::uint64_t bytes) { m_failAfter = bytes; }

private:
    Status flushBuffer();

    int m_fd = -1;
    std::string m_target;
    std::string m_tempPath;
    std::vector<char> m_buffer;
    std::uint64_t m_written = 0; // bytes accepted (buffered or on disk)
    std::uint64_t m_onDisk = 0;
    std::uint64_t m_failAfter = 0; // 0 = off
};

} // namespace qb::exporting
