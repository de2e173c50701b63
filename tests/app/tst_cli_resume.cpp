// quantbench-cli quantize --checkpoint-dir/--resume on the bundled demo model (4 layers): killed
// with SIGKILL once layer k (k = 0, 1, 2) is checkpointed, the resumed run exports a GGUF file
// byte-identical to an uninterrupted run's and prints the same metrics (timings aside); a run
// without --resume is refused instead of overwriting the checkpoint; a checkpoint of another plan,
// calibration or thread count, and a truncated one, are refused with a message (exit 1); a failed
// export keeps the finished quantization for --resume.

#include "cli_runner.h"

#include <QDeadlineTimer>
#include <QDir>
#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>
#include <QTest>
#include <QThread>

#include <csignal>

namespace {

constexpr int kDemoLayers = 4;

// NeUQI 3-bit takes about a second per layer of the demo model on one thread: time enough to
// kill the process while it works on the layer after the one it just checkpointed.
QStringList quantizeArgs()
{
    return {"quantize",   qbtest::demo(),
            "--calib",    qbtest::demo("/calib.txt"),
            "--nsamples", "8",
            "--seqlen",   "64",
            "--method",   "neuqi",
            "--bits",     "3",
            "--threads",  "1"};
}

// Layers done in DIR's checkpoint (its manifest.json), -1 when there is none.
int checkpointDone(const QString& dir)
{
    QFile f(dir + "/manifest.json");
    if (!f.open(QIODevice::ReadOnly)) return -1;
    const QJsonObject o = QJsonDocument::fromJson(f.readAll()).object();
    return o.contains("done") ? o.value("done").toInt() : -1;
}

// Starts a run and SIGKILLs it once DIR's checkpoint holds `layers` layers; returns the layers
// checkpointed when it died, or -1 when that never happened.
int killAfter(const QStringList& args, const QString& dir, int layers)
{
    QProcess p;
    p.setProcessChannelMode(QProcess::ForwardedErrorChannel);
    p.setStandardOutputFile(QProcess::nullDevice());
    p.start(QStringLiteral(QB_CLI_PATH), args);
    if (!p.waitForStarted()) return -1;
    QDeadlineTimer deadline(120000);
    while (checkpointDone(dir) < layers && p.state() == QProcess::Running && !deadline.hasExpired())
        QThread::msleep(2); // polling a file another process writes: no signal to wait for
    if (p.state() != QProcess::Running) return -1;
    ::kill(pid_t(p.processId()), SIGKILL);
    p.waitForFinished(30000);
    if (p.exitStatus() != QProcess::CrashExit) return -1;
    return checkpointDone(dir);
}

// The metrics without what depends on time.
QJsonObject withoutTimings(QJsonObject o)
{
    for (const char* k : {"seconds", "timings", "estimate"})
        o.remove(k);
    QJsonArray tensors;
    for (const QJsonValue& v : o.value("tensors").toArray()) {
        QJsonObject t = v.toObject();
        t.remove("search_seconds");
        t.remove("solve_seconds");
        tensors.append(t);
    }
    o.insert("tensors", tensors);
    QJsonObject ex = o.value("export").toObject();
    ex.remove("path");
    o.insert("export", ex);
    return o;
}

QByteArray readAll(const QString& path)
{
    QFile f(path);
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
}

} // namespace

class TestCliResume : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;
    QJsonObject m_reference;
    QByteArray m_referenceFile;

private Q_SLOTS:
    // The uninterrupted run: its metrics and GGUF file, and its checkpoint gone after success.
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        const QString out = m_dir.filePath("reference.gguf");
        const auto r = qbtest::runCli(quantizeArgs() + QStringList{"--out", out, "--format", "gguf", "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        m_reference = withoutTimings(QJsonDocument::fromJson(r.out).object());
        QCOMPARE(m_reference.value("tensors").toArray().size(), 7 * kDemoLayers);
        m_referenceFile = readAll(out);
        QVERIFY(!m_referenceFile.isEmpty());
        QVERIFY(!QFileInfo::exists(out + ".checkpoint")); // removed after the export
    }

    void cliKilledAndResumed_data()
    {
        QTest::addColumn<int>("layer");
        QTest::newRow("killed after layer 0") << 0;
        QTest::newRow("killed after layer 1") << 1;
        QTest::newRow("killed after layer 2") << 2;
    }
    void cliKilledAndResumed()
    {
        QFETCH(int, layer);
        QTemporaryDir tmp;
        const QString out = tmp.filePath("model.gguf"), ckpt = out + ".checkpoint"; // the default beside --out
        const QStringList args = quantizeArgs() + QStringList{"--out", out, "--format", "gguf", "--json"};
        const int done = killAfter(args, ckpt, layer + 1);
        qInfo("killed with %d of %d layers checkpointed", done, kDemoLayers);
        QVERIFY2(done >= layer + 1 && done < kDemoLayers, qPrintable(QString::number(done)));
        QVERIFY(!QFileInfo::exists(out));

        // Without --resume the finished layers are not thrown away.
        const auto refused = qbtest::runCli(args);
        QCOMPARE(refused.code, 1);
        QVERIFY2(refused.err.contains("holds the checkpoint of an interrupted quantize run") &&
                     refused.err.contains("--resume"),
                 refused.err.constData());
        QCOMPARE(checkpointDone(ckpt), done);

        const auto resumed = qbtest::runCli(args + QStringList{"--resume"});
        QVERIFY2(resumed.code == 0, resumed.err.constData());
        QVERIFY2(resumed.err.contains(QStringLiteral("layers 0..%1 taken from the checkpoint").arg(done - 1).toUtf8()),
                 resumed.err.constData());
        QCOMPARE(withoutTimings(QJsonDocument::fromJson(resumed.out).object()), m_reference);
        QVERIFY(readAll(out) == m_referenceFile); // bit for bit
        QVERIFY(!QFileInfo::exists(ckpt));
    }

    // A checkpoint of another plan, calibration or thread count, and a truncated one, are refused
    // with what differs; the checkpoint stays for the right --resume, which then succeeds.
    void cliResumeRefusesForeignAndDamaged()
    {
        QTemporaryDir tmp;
        const QString ckpt = tmp.filePath("ckpt");
        const QStringList args = quantizeArgs() + QStringList{"--checkpoint-dir", ckpt, "--json"};
        const int done = killAfter(args, ckpt, 2);
        QVERIFY2(done >= 2 && done < kDemoLayers, qPrintable(QString::number(done)));

        struct Case {
            QStringList args;
            const char* message;
        };
        QStringList otherBits = args, otherSeed = args, otherThreads = args;
        otherBits[otherBits.indexOf("--bits") + 1] = "4";
        otherSeed << "--seed" << "1";
        otherThreads[otherThreads.indexOf("--threads") + 1] = "2";
        for (const Case& c : {Case{otherBits, "the plan"}, Case{otherSeed, "the calibration"},
                              Case{otherThreads, "the thread count (1 in the checkpoint, 2 now"}}) {
            const auto r = qbtest::runCli(c.args + QStringList{"--resume"});
            QCOMPARE(r.code, 1);
            QVERIFY2(r.err.contains("is from another run") && r.err.contains(c.message), r.err.constData());
            QCOMPARE(checkpointDone(ckpt), done);
        }

        // Truncated: a clear error naming the file, not a crash.
        const QString layer0 = ckpt + "/layer-0.bin";
        const QByteArray saved = readAll(layer0);
        QVERIFY(QFile::resize(layer0, saved.size() / 3));
        const auto truncated = qbtest::runCli(args + QStringList{"--resume"});
        QCOMPARE(truncated.code, 1);
        QVERIFY2(truncated.err.contains("cannot resume") && truncated.err.contains("truncated") &&
                     truncated.err.contains("layer-0.bin"),
                 truncated.err.constData());
        QVERIFY(qbtest::writeFile(layer0, saved));

        const auto resumed = qbtest::runCli(args + QStringList{"--resume"});
        QVERIFY2(resumed.code == 0, resumed.err.constData());
        const QJsonObject metrics = withoutTimings(QJsonDocument::fromJson(resumed.out).object());
        QCOMPARE(metrics.value("tensors"), m_reference.value("tensors"));
        QVERIFY(!QFileInfo::exists(ckpt));
    }

    // An export that fails keeps the finished quantization: --resume exports without running it again.
    void cliFailedExportResumes()
    {
        QTemporaryDir tmp;
        const QString out = tmp.filePath("gptq");
        const QStringList args = quantizeArgs() + QStringList{"--out", out, "--format", "gptq"};
        const auto refused = qbtest::runCli(args); // NeUQI's real-valued zero-points: not GPTQ-storable
        QCOMPARE(refused.code, 1);
        QVERIFY2(refused.err.contains("every layer is checkpointed in " + (out + ".checkpoint").toUtf8()),
                 refused.err.constData());
        QCOMPARE(checkpointDone(out + ".checkpoint"), kDemoLayers);
        const auto resumed = qbtest::runCli(args + QStringList{"--round-grids", "--resume"});
        QVERIFY2(resumed.code == 0, resumed.err.constData());
        QVERIFY2(resumed.err.contains("layers 0..3 taken from the checkpoint"), resumed.err.constData());
        QVERIFY(QFileInfo::exists(out + "/config.json"));
        QVERIFY(!QFileInfo::exists(out + ".checkpoint"));
    }

    void cliResumeUsage()
    {
        const auto r = qbtest::runCli(quantizeArgs() + QStringList{"--resume"});
        QCOMPARE(r.code, 2);
        QVERIFY2(r.err.contains("--resume needs --checkpoint-dir"), r.err.constData());
    }
};

QTEST_GUILESS_MAIN(TestCliResume)
#include "tst_cli_resume.moc"
