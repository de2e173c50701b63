// Keeps the module map of ARCHITECTURE.md true: numeric modules include no Qt at all, and
// nothing in core/ includes QtGui or QtWidgets. Scans the real source tree.

#include <QDirIterator>
#include <QFile>
#include <QRegularExpression>
#include <QTest>

class TestArchitecture : public QObject {
    Q_OBJECT

    struct Include {
        QString file;
        int line;
        QString header;
    };

    static QList<Include> includesUnder(const QString& dir)
    {
        QList<Include> out;
        static const QRegularExpression re(QStringLiteral("^\\s*#\\s*include\\s*[<\"]([^>\"]+)[>\"]"));
        QDirIterator it(dir, {QStringLiteral("*.h"), QStringLiteral("*.cpp")}, QDir::Files,
                        QDirIterator::Subdirectories);
        while (it.hasNext()) {
            const QString path = it.next();
            QFile f(path);
            if (!f.open(QIODevice::ReadOnly)) continue;
            int n = 0;
            while (!f.atEnd()) {
                ++n;
                const QString line = QString::fromUtf8(f.readLine());
                const auto m = re.match(line);
                if (m.hasMatch()) out.append({path, n, m.captured(1)});
            }
        }
        return out;
    }

    static bool isQtHeader(const QString& h)
    {
        return h.startsWith(QLatin1Char('Q')) || h.startsWith(QLatin1String("qt")) ||
               h.startsWith(QLatin1String("Qt")) || h.startsWith(QLatin1String("quazip"));
    }
    static bool isGuiHeader(const QString& h)
    {
        static const QStringList gui = {QStringLiteral("QtGui"), QStringLiteral("QtWidgets"),
                                        QStringLiteral("QtCharts"), QStringLiteral("QWidget"),
                                        QStringLiteral("QApplication"), QStringLiteral("QGuiApplication"),
                                        QStringLiteral("QImage"), QStringLiteral("QPixmap"),
                                        QStringLiteral("QPainter"), QStringLiteral("QColor"),
                                        QStringLiteral("QFont"), QStringLiteral("QIcon")};
        for (const auto& g : gui)
            if (h == g || h.startsWith(g + QLatin1Char('/'))) return true;
        return false;
    }

private Q_SLOTS:
    void numericModulesHaveNoQt_data()
    {
        QTest::addColumn<QString>("module");
        QTest::newRow("model") << QStringLiteral("model");
        QTest::newRow("quant") << QStringLiteral("quant");
        QTest::newRow("eval") << QStringLiteral("eval");
        QTest::newRow("base") << QStringLiteral("base");
    }
    void numericModulesHaveNoQt()
    {
        QFETCH(QString, module);
        const QString dir = QStringLiteral(QB_SOURCE_DIR "/core/") + module;
        QVERIFY(QDir(dir).exists());
        QStringList bad;
        for (const auto& inc : includesUnder(dir))
            if (isQtHeader(inc.header))
                bad << QStringLiteral("%1:%2 includes <%3>").arg(inc.file).arg(inc.line).arg(inc.header);
        QVERIFY2(bad.isEmpty(), qPrintable(bad.join(QLatin1Char('\n'))));
    }
    void coreHasNoGui()
    {
        QStringList bad;
        const auto incs = includesUnder(QStringLiteral(QB_SOURCE_DIR "/core"));
        QVERIFY(!incs.isEmpty());
        for (const auto& inc : incs)
            if (isGuiHeader(inc.header))
                bad << QStringLiteral("%1:%2 includes <%3>").arg(inc.file).arg(inc.line).arg(inc.header);
        QVERIFY2(bad.isEmpty(), qPrintable(bad.join(QLatin1Char('\n'))));
    }
    void detectorCatchesViolations()
    {
        // The checks above must be able to fail.
        QVERIFY(isQtHeader(QStringLiteral("QString")));
        QVERIFY(isQtHeader(QStringLiteral("QtCore/QFile")));
        QVERIFY(!isQtHeader(QStringLiteral("Eigen/Dense")));
        QVERIFY(isGuiHeader(QStringLiteral("QtWidgets/QLabel")));
        QVERIFY(isGuiHeader(QStringLiteral("QWidget")));
        QVERIFY(!isGuiHeader(QStringLiteral("QJsonDocument")));
    }
};

QTEST_GUILESS_MAIN(TestArchitecture)
#include "tst_architecture.moc"
