#include "io/zip_bundle.h"

#include <quazip.h>
#include <quazipfile.h>
#include <quazipnewinfo.h>

#include <QDateTime>
#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QTemporaryFile>

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

Status writeZipEntries(const std::string& path, const std::vector<ZipEntry>& entries,
                       const ZipWriteOptions& options)
{
    const QString target = QString::fromStdString(path);
    const QFileInfo info(target);
    if (!info.absoluteDir().exists())
        return makeError(ErrorCode::Io, "the target directory does not exist", path);
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
            return makeError(ErrorCode::Io, "cannot create zip archive (QuaZip error " +
                                                std::to_string(zip.getZipError()) + ")",
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

Result<std::map<std::string, std::vector<std::uint8_t>>> readZipEntries(const std::string& path)
{
    QuaZip zip(QString::fromStdString(path));
    if (!zip.open(QuaZip::mdUnzip))
        return makeError(ErrorCode::Io, "cannot open zip archive (QuaZip error " +
                                            std::to_string(zip.getZipError()) + ")",
                         path);
    std::map<std::string, std::vector<std::uint8_t>> out;
    for (bool more = zip.goToFirstFile(); more; more = zip.goToNextFile()) {
        const std::string name = zip.getCurrentFileName().toStdString();
        QuaZipFile f(&zip);
        if (!f.open(QIODevice::ReadOnly)) return makeError(ErrorCode::Format, "cannot open zip entry", path + ":" + name);
        const QByteArray data = f.readAll();
        f.close();
        if (f.getZipError() != 0)
            return makeError(ErrorCode::Format, "zip entry is corrupt (CRC-32 mismatch or truncated)",
                             path + ":" + name);
        out[name] = std::vector<std::uint8_t>(data.begin(), data.end());
    }
    if (zip.getZipError() != 0)
        return makeError(ErrorCode::Format, "cannot list zip archive (QuaZip error " +
                                                std::to_string(zip.getZipError()) + ")",
                         path);
    return out;
}

} // namespace qb::io
