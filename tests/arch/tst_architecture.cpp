// Keeps the module map of ARCHITECTURE.md true: numeric modules include no Qt at all, nothing in
// core/ includes QtGui or QtWidgets, core/ reads and writes JSON only through io::JsonValue (no
// QJson* headers), and every project include follows the module matrix (dependencies point
// down: core never includes ui/ or app/, io never includes model, ...).
// Scans the real source tree.

#include <QDirIterator>
#include <QFile>
#include <QMap>
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

    static inline const QString kCore = QStringLiteral(QB_SOURCE_DIR "/core");

    // "file:line includes <header>" for each include under dir whose header is flagged.
    static QStringList flaggedIncludes(const QString& dir, bool (*flagged)(const QString&))
    {
        QStringList bad;
        for (const auto& inc : includesUnder(dir))
            if (flagged(inc.header))
                bad << QStringLiteral("%1:%2 includes <%3>").arg(inc.file).arg(inc.line).arg(inc.header);
        return bad;
    }

    static bool isQtHeader(const QString& h)
    {
        return h.startsWith(QLatin1Char('Q')) || h.startsWith(QLatin1String("qt")) ||
               h.startsWith(QLatin1String("Qt")) || h.startsWith(QLatin1String("quazip"));
    }
    static bool isGuiHeader(const QString& h)
    {
        static const QStringList gui = {
            QStringLiteral("QtGui"),   QStringLiteral("QtWidgets"),    QStringLiteral("QtCharts"),
            QStringLiteral("QWidget"), QStringLiteral("QApplication"), QStringLiteral("QGuiApplication"),
            QStringLiteral("QImage"),  QStringLiteral("QPixmap"),      QStringLiteral("QPainter"),
            QStringLiteral("QColor"),  QStringLiteral("QFont"),        QStringLiteral("QIcon")};
        for (const auto& g : gui)
            if (h == g || h.startsWith(g + QLatin1Char('/'))) return true;
        return false;
    }

    // Qt's JSON classes: core/ has one JSON stack, io::JsonValue (key order kept, duplicate keys
    // refused, depth limit).
    static bool isQtJsonHeader(const QString& h)
    {
        const QString name = h.startsWith(QLatin1String("QtCore/")) ? h.mid(7) : h;
        return name.startsWith(QLatin1String("QJson"));
    }

    // Which project folders each folder may include (its own always): ARCHITECTURE.md's
    // "may use" column. A project include is a quoted "<folder>/file.h".
    static const QMap<QString, QStringList>& includeMatrix()
    {
        static const QStringList core = {QStringLiteral("base"),  QStringLiteral("io"),   QStringLiteral("model"),
                                         QStringLiteral("quant"), QStringLiteral("eval"), QStringLiteral("pipeline"),
                                         QStringLiteral("export")};
        static const QStringList uiParts = {QStringLiteral("tasks"), QStringLiteral("models"), QStringLiteral("charts"),
                                            QStringLiteral("widgets")};
        static const QMap<QString, QStringList> m = {
            {QStringLiteral("core/base"), {}},
            {QStringLiteral("core/io"), {QStringLiteral("base")}},
            {QStringLiteral("core/model"), {QStringLiteral("base")}},
            {QStringLiteral("core/quant"), {QStringLiteral("base")}},
            {QStringLiteral("core/eval"), {QStringLiteral("base"), QStringLiteral("model"), QStringLiteral("quant")}},
            {QStringLiteral("core/export"), {QStringLiteral("base"), QStringLiteral("io"), QStringLiteral("quant")}},
            {QStringLiteral("core/pipeline"), core},
            {QStringLiteral("ui"), core + uiParts},
            {QStringLiteral("app/cli"), core + QStringList{QStringLiteral("cli")}}, // batch: no widgets
            {QStringLiteral("app"), core + uiParts + QStringList{QStringLiteral("cli")}},
        };
        return m;
    }
    // The matrix row for a source file (the longest folder prefix), and its violations.
    static QStringList matrixViolations(const QString& relPath, const QString& header)
    {
        static const QRegularExpression projectInclude(QStringLiteral("^([a-z_]+)/[^/]+\\.h$"));
        const auto m = projectInclude.match(header);
        if (!m.hasMatch()) return {};
        const QString target = m.captured(1);
        static const QStringList projectFolders = includeMatrix().value(QStringLiteral("app"));
        if (!projectFolders.contains(target)) return {}; // a system header such as <sys/stat.h>
        QString row;
        for (auto it = includeMatrix().cbegin(); it != includeMatrix().cend(); ++it)
            if (relPath.startsWith(it.key() + QLatin1Char('/')) && it.key().size() > row.size()) row = it.key();
        if (row.isEmpty()) return {};
        const QString own = row.section(QLatin1Char('/'), -1);
        if (target == own || includeMatrix().value(row).contains(target)) return {};
        return {QStringLiteral("%1 includes \"%2\" (%3 may use: %4)")
                    .arg(relPath, header, row, includeMatrix().value(row).join(QStringLiteral(", ")))};
    }

private Q_SLOTS:
    void includesFollowTheModuleMatrix()
    {
        QStringList bad;
        int checked = 0;
        for (const QString& top : {QStringLiteral("core"), QStringLiteral("ui"), QStringLiteral("app")}) {
            for (const auto& inc : includesUnder(QStringLiteral(QB_SOURCE_DIR "/") + top)) {
                const QString rel = inc.file.mid(int(qstrlen(QB_SOURCE_DIR)) + 1);
                ++checked;
                for (const QString& v : matrixViolations(rel, inc.header))
                    bad << QStringLiteral("%1:%2: %3").arg(rel).arg(inc.line).arg(v);
            }
        }
        QVERIFY(checked > 100);
        QVERIFY2(bad.isEmpty(), qPrintable(bad.join(QLatin1Char('\n'))));
    }
    void matrixCatchesViolations()
    {
        QVERIFY(!matrixViolations(QStringLiteral("core/io/x.cpp"), QStringLiteral("model/model.h")).isEmpty());
        QVERIFY(!matrixViolations(QStringLiteral("core/quant/x.h"), QStringLiteral("io/json_value.h")).isEmpty());
        QVERIFY(!matrixViolations(QStringLiteral("core/pipeline/x.cpp"), QStringLiteral("widgets/main_window.h"))
                     .isEmpty());
        QVERIFY(
            !matrixViolations(QStringLiteral("core/export/x.cpp"), QStringLiteral("pipeline/quant_plan.h")).isEmpty());
        QVERIFY(
            !matrixViolations(QStringLiteral("app/cli/cmd_x.cpp"), QStringLiteral("widgets/main_window.h")).isEmpty());
        QVERIFY(
            matrixViolations(QStringLiteral("app/gui_main.cpp"), QStringLiteral("widgets/main_window.h")).isEmpty());
        QVERIFY(matrixViolations(QStringLiteral("core/eval/x.cpp"), QStringLiteral("model/model.h")).isEmpty());
        QVERIFY(matrixViolations(QStringLiteral("core/io/x.cpp"), QStringLiteral("io/json_value.h")).isEmpty());
        QVERIFY(matrixViolations(QStringLiteral("core/base/x.cpp"), QStringLiteral("sys/stat.h")).isEmpty());
    }
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
        const QStringList bad = flaggedIncludes(dir, isQtHeader);
        QVERIFY2(bad.isEmpty(), qPrintable(bad.join(QLatin1Char('\n'))));
    }
    void coreHasNoGui()
    {
        QVERIFY(QDir(kCore).exists());
        const QStringList bad = flaggedIncludes(kCore, isGuiHeader);
        QVERIFY2(bad.isEmpty(), qPrintable(bad.join(QLatin1Char('\n'))));
    }
    void coreUsesOneJsonStack()
    {
        QVERIFY(QDir(kCore).exists());
        const QStringList bad = flaggedIncludes(kCore, isQtJsonHeader);
        QVERIFY2(bad.isEmpty(), qPrintable(bad.join(QLatin1Char('\n')) + "\nuse io/json_value.h"));
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
        QVERIFY(isQtJsonHeader(QStringLiteral("QJsonDocument")));
        QVERIFY(isQtJsonHeader(QStringLiteral("QtCore/QJsonObject")));
        QVERIFY(!isQtJsonHeader(QStringLiteral("io/json_value.h")));
        QVERIFY(!isQtJsonHeader(QStringLiteral("QFile")));
    }
};

QTEST_GUILESS_MAIN(TestArchitecture)
#include "tst_architecture.moc"
