#include "export/atomic_file.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <utility>

namespace qb::exporting {

namespace {

constexpr std::size_t kBufferBytes = std::size_t(1) << 20;

std::string directoryOf(const std::string& path)
{
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

Error ioError(const std::string& what, const std::string& path, int err)
{
    return makeError(ErrorCode::Io, what + ": " + std::strerror(err), path);
}

} // namespace

Status checkDiskSpace(const std::string& dir, std::uint64_t bytes)
{
    struct statvfs st{};
    if (::statvfs(dir.c_str(), &st) != 0) return ioError("cannot query free disk space", dir, errno);
    const std::uint64_t avail = std::uint64_t(st.f_bavail) * std::uint64_t(st.f_frsize);
    const std::uint64_t need = bytes + (std::uint64_t(1) << 20);
    if (avail < need || need < bytes)
        return makeError(ErrorCode::Io,
                         "not enough free disk space: the export needs " + std::to_string(bytes) + " bytes, " +
                             std::to_string(avail) + " are available",
                         dir);
    return {};
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& o) noexcept { *this = std::move(o); }

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& o) noexcept
{
    if (this != &o) {
        discard();
        m_fd = std::exchange(o.m_fd, -1);
        m_target = std::move(o.m_target);
        m_tempPath = std::move(o.m_tempPath);
        m_buffer = std::move(o.m_buffer);
        m_written = std::exchange(o.m_written, 0);
        m_onDisk = std::exchange(o.m_onDisk, 0);
        m_failAfter = std::exchange(o.m_failAfter, 0);
    }
    return *this;
}

AtomicFileWriter::~AtomicFileWriter() { discard(); }

Result<AtomicFileWriter> AtomicFileWriter::open(const std::string& target, std::uint64_t expectedBytes)
{
    if (target.empty() || target.back() == '/')
        return makeError(ErrorCode::InvalidArgument, "output path names no file", target);
    const std::string dir = directoryOf(target);
    QB_TRY_STATUS(checkDiskSpace(dir, expectedBytes));
    const std::string base = target.substr(target.find_last_of('/') + 1);
    std::string tmpl = (dir == "/" ? "" : dir) + "/." + base + ".tmp-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const int fd = ::mkstemp(buf.data());
    if (fd < 0) return ioError("cannot create a temporary file", tmpl, errno);
    // mkstemp creates 0600; a model file should be as readable as any other new file.
    const mode_t mask = ::umask(0);
    ::umask(mask);
    ::fchmod(fd, 0666 & ~mask);
    AtomicFileWriter w;
    w.m_fd = fd;
    w.m_target = target;
    w.m_tempPath = buf.data();
    w.m_buffer.reserve(kBufferBytes);
    return w;
}

Status AtomicFileWriter::flushBuffer()
{
    std::size_t off = 0;
    while (off < m_buffer.size()) {
        std::size_t n = m_buffer.size() - off;
        if (m_failAfter && m_onDisk + n > m_failAfter) {
            // Simulated disk failure: write what "fits", then report EIO.
            const std::size_t fits = m_failAfter > m_onDisk ? std::size_t(m_failAfter - m_onDisk) : 0;
            if (fits) {
                if (::write(m_fd, m_buffer.data() + off, fits) < 0) return ioError("write failed", m_tempPath, errno);
                m_onDisk += fits;
            }
            return ioError("write failed after " + std::to_string(m_onDisk) + " bytes", m_tempPath, EIO);
        }
        const ssize_t w = ::write(m_fd, m_buffer.data() + off, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return ioError("write failed after " + std::to_string(m_onDisk) + " bytes", m_tempPath, errno);
        }
        off += std::size_t(w);
        m_onDisk += std::uint64_t(w);
    }
    m_buffer.clear();
    return {};
}

Status AtomicFileWriter::write(const void* data, std::size_t n)
{
    if (m_fd < 0) return makeError(ErrorCode::Internal, "write on a closed AtomicFileWriter", m_target);
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
        const std::size_t take = std::min(n, kBufferBytes - m_buffer.size());
        m_buffer.insert(m_buffer.end(), p, p + take);
        p += take;
        n -= take;
        m_written += take;
        if (m_buffer.size() == kBufferBytes) QB_TRY_STATUS(flushBuffer());
    }
    return {};
}

Status AtomicFileWriter::writeZeros(std::size_t n)
{
    static const char kZeros[256] = {};
    while (n > 0) {
        const std::size_t take = std::min(n, sizeof kZeros);
        QB_TRY_STATUS(write(kZeros, take));
        n -= take;
    }
    return {};
}

Status AtomicFileWriter::sync()
{
    if (m_fd < 0) return makeError(ErrorCode::Internal, "sync on a closed AtomicFileWriter", m_target);
    QB_TRY_STATUS(flushBuffer());
    if (::fsync(m_fd) != 0) return ioError("fsync failed", m_tempPath, errno);
    return {};
}

Status AtomicFileWriter::commit()
{
    if (m_fd < 0) return makeError(ErrorCode::Internal, "commit on a closed AtomicFileWriter", m_target);
    QB_TRY_STATUS(flushBuffer());
    if (::fsync(m_fd) != 0) return ioError("fsync failed", m_tempPath, errno);
    const int fd = std::exchange(m_fd, -1);
    if (::close(fd) != 0) {
        ::unlink(m_tempPath.c_str());
        return ioError("close failed", m_tempPath, errno);
    }
    if (::rename(m_tempPath.c_str(), m_target.c_str()) != 0) {
        const int err = errno;
        ::unlink(m_tempPath.c_str());
        return ioError("cannot rename the temporary file over the target", m_target, err);
    }
    m_tempPath.clear();
    // Make the rename itself durable.
    const int dfd = ::open(directoryOf(m_target).c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    return {};
}

void AtomicFileWriter::discard()
{
    if (m_fd >= 0) ::close(std::exchange(m_fd, -1));
    if (!m_tempPath.empty()) ::unlink(m_tempPath.c_str());
    m_tempPath.clear();
    m_buffer.clear();
}

} // namespace qb::exporting
