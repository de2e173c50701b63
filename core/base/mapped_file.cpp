#include "base/mapped_file.h"

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace qb {

Result<std::shared_ptr<const MappedFile>> MappedFile::open(const std::string& path)
{
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return makeError(ErrorCode::Io, std::string("cannot open file: ") + std::strerror(errno), path);
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        return makeError(ErrorCode::Io, std::string("cannot stat file: ") + std::strerror(err), path);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        return makeError(ErrorCode::Io, "not a regular file", path);
    }
    std::shared_ptr<MappedFile> file(new MappedFile());
    file->m_path = path;
    file->m_size = std::uint64_t(st.st_size);
    if (file->m_size > 0) {
        void* p = ::mmap(nullptr, std::size_t(file->m_size), PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            const int err = errno;
            ::close(fd);
            return makeError(err == ENOMEM ? ErrorCode::OutOfMemory : ErrorCode::Io,
                             std::string("cannot map file: ") + std::strerror(err), path);
        }
        file->m_data = static_cast<const std::uint8_t*>(p);
        file->m_mapped = true;
    }
    ::close(fd); // the mapping keeps its own reference
    return std::shared_ptr<const MappedFile>(std::move(file));
}

std::shared_ptr<const MappedFile> MappedFile::fromBytes(std::vector<std::uint8_t> bytes, std::string name)
{
    std::shared_ptr<MappedFile> file(new MappedFile());
    file->m_path = std::move(name);
    file->m_owned = std::move(bytes);
    file->m_size = file->m_owned.size();
    file->m_data = file->m_owned.empty() ? nullptr : file->m_owned.data();
    return file;
}

MappedFile::~MappedFile()
{
    if (m_data && m_mapped) ::munmap(const_cast<std::uint8_t*>(m_data), std::size_t(m_size));
}

ByteRange::ByteRange(std::shared_ptr<const MappedFile> file)
    : m_file(std::move(file)), m_data(m_file ? m_file->data() : nullptr), m_size(m_file ? m_file->size() : 0)
{}

Result<ByteRange> ByteRange::slice(std::uint64_t offset, std::uint64_t length) const
{
    if (offset > m_size || length > m_size - offset) return outOfRange(offset, length);
    ByteRange r = *this;
    r.m_data = m_data + offset;
    r.m_size = length;
    r.m_fileOffset = m_fileOffset + offset;
    return r;
}

Error ByteRange::outOfRange(std::uint64_t offset, std::uint64_t length) const
{
    return makeError(ErrorCode::OutOfRange,
                     "read of " + std::to_string(length) + " bytes at offset " + std::to_string(m_fileOffset + offset) +
                         " runs past the end (size " + std::to_string(m_fileOffset + m_size) + ")",
                     path());
}

Result<ByteRange> ByteCursor::take(std::uint64_t length)
{
    auto r = m_range.slice(m_pos, length);
    if (r.ok()) m_pos += length;
    return r;
}

Result<std::string> ByteCursor::readString(std::uint64_t length)
{
    QB_TRY(r, take(length));
    return std::string(r->view());
}

} // namespace qb
