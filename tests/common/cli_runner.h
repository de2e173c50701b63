#pragma once
// Runs quantbench-cli (QB_CLI_PATH) for the command-line tests under tests/app: exit code,
// stdout and stderr of one invocation; a crash or a timeout reads as code -1.

#include <QByteArray>
#include <QFile>
#include <QProcess>
#include <QString>
#include <QStringList>

namespace qbtest {

struct CliRun {
    int code = -1;
    QByteArray out, err;
};

inline CliRun runCli(const QStringList& args, int timeoutMs = 300000)
{
    QProcess p;
    p.start(QStringLiteral(QB_CLI_PATH), args);
    CliRun r;
    if (!p.waitForFinished(timeoutMs)) {
        p.kill();
        p.waitForFinished();
        return r;
    }
    r.code = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -1;
    r.out = p.readAllStandardOutput();
    r.err = p.readAllStandardError();
    return r;
}

// The bundled demo model (resources/demo), or a file in it: demo("/calib.txt").
inline QString demo(const char* file = "") { return QStringLiteral(QB_DEMO_DIR) + QString::fromUtf8(file); }

inline bool writeFile(const QString& path, const QByteArray& data)
{
    QFile f(path);
    return f.open(QIODevice::WriteOnly) && f.write(data) == data.size();
}

} // namespace qbtest
