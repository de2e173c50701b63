#include "io/zip_bundle.h"

#include <quazip.h>
#include <quazipfile.h>
#include <quazipfileinfo.h>
#include <quazipnewinfo.h>

#include <QDateTime>
#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QTemporaryFile>

#include <algorithm>
#include <cstdio>
#include <fcntl.h>
#include <unistd.h>

namespace qb::io {

namespace {

Status fsyncPath(const QString& path, bool directory)
{
    const int fd = ::open(QFile::encodeName(path).constData(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return makeError(ErrorCode::Io, "cannot open for fsync", path.toStdString());
    const int rc = ::fsync(fd);
    ::close(fd);
    if (rc != 0 && !directory) return makeError(ErrorCode::Io, "fsync failed", path.toStdString());
    return {};
}

} // namespace

Status writeZipEntries(const std::string& path, const std::vector<ZipEntry>& entries, const ZipWriteOptions& options)
{
    const QString target = QString::fromStdString(path);
    const QFileInfo info(target);
    if (!info.absoluteDir().exists()) return makeError(ErrorCode::Io, "the target directory does not exist", path);
    QTemporaryFile temp(info.absolutePath() + "/.tmp-" + info.fileName() + "-XXXXXX");
    temp.setAutoRemove(true);
    if (!temp.open()) return makeError(ErrorCode::Io, "cannot create a temporary file beside the target", path);
    const QString tempPath = temp.fileName();
    temp.close();

    std::uint64_t written = 0;
    {
        QuaZip zip(tempPath);
        zip.setZip64Enabled(true);
        zip.setUtf8Enabled(true);
        if (!zip.open(QuaZip::mdCreate))
            return makeError(ErrorCode::Io,
                             "cannot create zip archive (QuaZip error " + std::to_string(zip.getZipError()) + ")",
                             tempPath.toStdString());
        for (const ZipEntry& e : entries) {
            if (options.cancelled && options.cancelled()) {
                zip.close();
                return makeError(ErrorCode::Cancelled, "cancelled", path);
            }
            QuaZipFile f(&zip);
            QuaZipNewInfo ni(QString::fromStdString(e.name));
            ni.dateTime = QDateTime(QDate(2024, 1, 1), QTime(0, 0)); // reproducible archives
            ni.setPermissions(QFileDevice::ReadOwner | QFileDevice::WriteOwner | QFileDevice::ReadGroup |
                              QFileDevice::ReadOther);
            if (!f.open(QIODevice::WriteOnly, ni, nullptr, 0, e.compress ? Z_DEFLATED : 0,
                        e.compress ? Z_DEFAULT_COMPRESSION : 0))
                return makeError(ErrorCode::Io, "cannot add zip entry", e.name);
            const std::uint64_t n = e.bytes.size();
            if (options.failAfterBytesForTesting > 0 && written + n > options.failAfterBytesForTesting) {
                f.close();
                zip.close();
                return makeError(ErrorCode::Io, "write failed: No space left on device (injected)", path);
            }
            if (n > 0 && f.write(reinterpret_cast<const char*>(e.bytes.data()), qint64(n)) != qint64(n))
                return makeError(ErrorCode::Io, "write failed", e.name);
            written += n;
            f.close();
            if (f.getZipError() != 0) return makeError(ErrorCode::Io, "write failed (zip entry)", e.name);
        }
        zip.close();
        if (zip.getZipError() != 0)
            return makeError(ErrorCode::Io, "write failed (closing the zip archive)", tempPath.toStdString());
    }
    QB_TRY_STATUS(fsyncPath(tempPath, false));
    if (std::rename(QFile::encodeName(tempPath).constData(), QFile::encodeName(target).constData()) != 0)
        return makeError(ErrorCode::Io, "cannot rename the temporary file over the target", path);
    (void)fsyncPath(info.absolutePath(), true);
    return {};
}

Result<std::map<std::string, std::vector<std::uint8_t>>> readZipEntries(const std::string& path,
                                                                        const ZipReadLimits& limits)
{
    QuaZip zip(QString::fromStdString(path));
    if (!zip.open(QuaZip::mdUnzip))
        return makeError(ErrorCode::Io,
                         "cannot open zip archive (QuaZip error " + std::to_string(zip.getZipError()) + ")", path);
    const std::uint64_t fileBytes = std::uint64_t(std::max<qint64>(0, QFileInfo(QString::fromStdString(path)).size()));
    std::map<std::string, std::vector<std::uint8_t>> out;
    for (bool more = zip.goToFirstFile(); more; more = zip.goToNextFile()) {
        const std::string name = zip.getCurrentFileName().toStdString();
        const std::string where = path + ":" + name;
        QuaZipFileInfo64 info;
        if (!zip.getCurrentFileInfo(&info)) return makeError(ErrorCode::Format, "cannot read zip entry header", where);
        // Refuse a zip bomb before inflating anything: deflate cannot expand more than 1032:1.
        const std::uint64_t declared = info.uncompressedSize;
        const std::uint64_t reachable = info.method == 0
                                            ? std::min<std::uint64_t>(info.compressedSize, fileBytes)
                                            : std::min<std::uint64_t>(info.compressedSize, fileBytes) * 1032 + 1024;
        const std::uint64_t cap = info.method == 0 ? reachable : std::min(reachable, limits.maxInflatedEntryBytes);
        if (declared > cap)
            return makeError(ErrorCode::Format,
                             "zip entry declares " + std::to_string(declared) + " bytes from " +
                                 std::to_string(info.compressedSize) + " compressed (method " +
                                 std::to_string(info.method) + "), more than the " + std::to_string(cap) +
                                 " it may inflate to",
                             where);
        QuaZipFile f(&zip);
        if (!f.open(QIODevice::ReadOnly)) return makeError(ErrorCode::Format, "cannot open zip entry", where);
        // Read in chunks, never more than the declared size (plus one byte to notice a liar).
        std::vector<std::uint8_t> data;
        data.reserve(std::size_t(std::min<std::uint64_t>(declared, 64u << 20)));
        char chunk[1 << 16];
        while (true) {
            const qint64 n = f.read(chunk, sizeof chunk);
            if (n < 0) break; // reported through getZipError() below
            if (n == 0) break;
            if (data.size() + std::uint64_t(n) > declared) {
                f.close();
                return makeError(ErrorCode::Format,
                                 "zip entry inflates past its declared size of " + std::to_string(declared) + " bytes",
                                 where);
            }
            data.insert(data.end(), chunk, chunk + n);
        }
        f.close();
        if (f.getZipError() != 0)
            return makeError(ErrorCode::Format, "zip entry is corrupt (CRC-32 mismatch or truncated)", where);
        out[name] = std::move(data);
    }
    if (zip.getZipError() != 0)
        return makeError(ErrorCode::Format,
                         "cannot list zip archive (QuaZip error " + std::to_string(zip.getZipError()) + ")", path);
    return out;
}

} // namespace qb::io
