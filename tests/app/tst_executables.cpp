// The shipped executables answer --version and --help, and refuse bad usage with exit code 2.

#include <QImage>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

class TestExecutables : public QObject {
    Q_OBJECT

    struct Run {
        int code;
        QString out;
        QString err;
    };
    static Run run(const QString& exe, const QStringList& args, bool headless = false)
    {
        QProcess p;
        if (headless) { // as on a server or in a terminal with no X: no display, no platform hint
            QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
            for (const char* k : {"DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"})
                env.remove(QString::fromLatin1(k));
            p.setProcessEnvironment(env);
        }
        p.start(exe, args);
        if (!p.waitForFinished(60000)) return {-1, {}, QStringLiteral("timeout")};
        return {p.exitCode(), QString::fromUtf8(p.readAllStandardOutput()),
                QString::fromUtf8(p.readAllStandardError())};
    }

private Q_SLOTS:
    void cliVersion()
    {
        const Run r = run(QStringLiteral(QB_CLI_PATH), {QStringLiteral("--version")});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.startsWith(QStringLiteral("quantbench-cli " QB_VERSION)), qPrintable(r.out));
    }
    void cliHelpListsCommands()
    {
        const Run r = run(QStringLiteral(QB_CLI_PATH), {QStringLiteral("--help")});
        QCOMPARE(r.code, 0);
        QVERIFY(r.out.contains(QStringLiteral("Usage: quantbench-cli <command>")));
        QVERIFY(r.out.contains(QStringLiteral("Commands:")));
    }
    void cliRejectsUnknownCommand()
    {
        const Run r = run(QStringLiteral(QB_CLI_PATH), {QStringLiteral("frobnicate")});
        QCOMPARE(r.code, 2);
        QVERIFY(r.err.contains(QStringLiteral("unknown command 'frobnicate'")));
        QCOMPARE(run(QStringLiteral(QB_CLI_PATH), {}).code, 2);
    }
    void guiVersion()
    {
        const Run r = run(QStringLiteral(QB_GUI_PATH), {QStringLiteral("--version")});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.contains(QStringLiteral(QB_VERSION)), qPrintable(r.out + r.err));
    }
    // Regression: both aborted ("could not connect to display") before the parser ran.
    void guiHelpAndVersionWithoutDisplay()
    {
        const Run v = run(QStringLiteral(QB_GUI_PATH), {QStringLiteral("--version")}, true);
        QVERIFY2(v.code == 0, qPrintable(v.err));
        QVERIFY2(v.out.contains(QStringLiteral("quantbench " QB_VERSION)), qPrintable(v.out));
        const Run h = run(QStringLiteral(QB_GUI_PATH), {QStringLiteral("--help")}, true);
        QVERIFY2(h.code == 0, qPrintable(h.err));
        QVERIFY(h.out.contains(QStringLiteral("--grab")));
        QVERIFY(h.out.contains(QStringLiteral("model")));
        const Run bad = run(QStringLiteral(QB_GUI_PATH), {QStringLiteral("--no-such-flag")}, true);
        QCOMPARE(bad.code, 2);
        QVERIFY2(bad.err.contains(QStringLiteral("no-such-flag")), qPrintable(bad.err));
    }
    void guiGrabRendersWindow()
    {
        QTemporaryDir dir;
        const QString png = dir.filePath(QStringLiteral("window.png"));
        const Run r = run(QStringLiteral(QB_GUI_PATH), {QStringLiteral("--grab"), png});
        QVERIFY2(r.code == 0, qPrintable(r.err.right(3000)));
        QImage img(png);
        QVERIFY(!img.isNull());
        QVERIFY(img.width() >= 1024);
    }
};

QTEST_GUILESS_MAIN(TestExecutables)
#include "tst_executables.moc"
