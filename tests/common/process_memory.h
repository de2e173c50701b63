#pragma once
// Resident memory of the test process (Linux /proc), for tests that check memory is released.

#include <QFile>
#include <QtGlobal>

namespace qbtest {

// Current resident set size in bytes (VmRSS), or -1 where /proc is not available.
inline qint64 residentBytes()
{
    QFile f(QStringLiteral("/proc/self/status"));
    if (!f.open(QIODevice::ReadOnly)) return -1;
    for (const QByteArray& line : f.readAll().split('\n'))
        if (line.startsWith("VmRSS:")) return line.mid(6).trimmed().split(' ').value(0).toLongLong() * 1024;
    return -1;
}

} // namespace qbtest
