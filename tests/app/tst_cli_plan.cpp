// quantbench-cli sensitivity and plan on the bundled demo model, run as a user runs them: the atlas
// JSON (every tensor and candidate, measured KL), its cache (a second call reads it; measurements
// made on another evaluation context are dropped and measured again, never mixed), and a plan
// allocated to a budget that `quantize --plan` accepts at the size allocated.

#include "cli_runner.h"

#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

class TestCliPlan : public QObject {
    Q_OBJECT

    static QStringList calib()
    {
        return {"--calib",      qbtest::demo("/calib.txt"), "--nsamples", "4", "--seqlen", "64", "--threads", "2",
                "--candidates", "rtn:2:64,rtn:4:64"};
    }
    static QStringList measure(const QString& ctx)
    {
        return {"--eval", qbtest::demo("/eval.txt"), "--ctx", ctx, "--measure", "2"};
    }

private Q_SLOTS:
    void atlasCacheAndMeasurements()
    {
        QTemporaryDir dir;
        const QStringList cache{"--cache", dir.filePath("cache")};
        const qbtest::CliRun a = qbtest::runCli(QStringList{"sensitivity", qbtest::demo()} + calib() + measure("64") +
                                                    cache + QStringList{"--json"},
                                                300000);
        QVERIFY2(a.code == 0, a.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(a.out).object();
        QCOMPARE(o.value("tensors").toArray().size(), 4 * 7);
        QCOMPARE(o.value("candidates").toString(), QString("rtn:2:64,rtn:4:64"));
        QCOMPARE(o.value("measured").toArray().size(), 2);
        const QString on = o.value("measured_on").toString();
        QVERIFY(!on.isEmpty());
        QVERIFY(!o.value("from_cache").toBool());
        for (const auto& m : o.value("measured").toArray())
            QVERIFY(m.toObject().value("kl_mean").toDouble() > 0);

        // Again with the same windows: the cached atlas and its measurements, nothing dropped.
        const qbtest::CliRun b =
            qbtest::runCli(QStringList{"sensitivity", qbtest::demo()} + calib() + measure("64") + cache, 300000);
        QVERIFY2(b.code == 0, b.err.constData());
        QVERIFY2(b.err.contains("from the cache"), b.err.constData());
        QVERIFY2(!b.err.contains("another evaluation"), b.err.constData());

        // Another context: the two measurements are dropped (said) and made again on these windows.
        const qbtest::CliRun c =
            qbtest::runCli(QStringList{"sensitivity", qbtest::demo()} + calib() + measure("32") + cache, 300000);
        QVERIFY2(c.code == 0, c.err.constData());
        QVERIFY2(c.err.contains("2 measurements in the cache were made on another evaluation"), c.err.constData());
        const qbtest::CliRun d = qbtest::runCli(QStringList{"sensitivity", qbtest::demo()} + calib() + measure("32") +
                                                    cache + QStringList{"--json"},
                                                300000);
        QVERIFY2(d.code == 0, d.err.constData());
        const QJsonObject od = QJsonDocument::fromJson(d.out).object();
        QVERIFY(od.value("from_cache").toBool());
        QCOMPARE(od.value("measured").toArray().size(), 2);
        QVERIFY(od.value("measured_on").toString() != on);
        QVERIFY(od.value("measured").toArray()[0].toObject().value("kl_mean").toDouble() !=
                o.value("measured").toArray()[0].toObject().value("kl_mean").toDouble());
    }

    void planMeetsTheBudget()
    {
        QTemporaryDir dir;
        const QString plan = dir.filePath("plan.json");
        const qbtest::CliRun r = qbtest::runCli(
            QStringList{"plan", qbtest::demo()} + calib() +
                QStringList{"--cache", dir.filePath("cache"), "--budget", "3bpw", "--out", plan, "--json"},
            300000);
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(r.out).object();
        const double bpw = o.value("bits_per_weight").toDouble();
        QVERIFY2(bpw <= 3.0 + 1e-9 && bpw > 2.5, qPrintable(QString::number(bpw)));
        QCOMPARE(o.value("resolved_bits_per_weight").toDouble(), bpw);
        QVERIFY(o.value("best_uniform").toObject().value("candidate").toString() == "rtn:2:64");
        QVERIFY(QFile::exists(plan));
        // The plan runs: quantize --plan reports the bits the planner allocated.
        const qbtest::CliRun q =
            qbtest::runCli({"quantize", qbtest::demo(), "--calib", qbtest::demo("/calib.txt"), "--nsamples", "4",
                            "--seqlen", "64", "--threads", "2", "--plan", plan, "--json"},
                           300000);
        QVERIFY2(q.code == 0, q.err.constData());
        const double qbpw = QJsonDocument::fromJson(q.out).object().value("bits_per_weight").toDouble();
        QVERIFY2(std::abs(qbpw - bpw) < 1e-6, qPrintable(QString("%1 vs %2").arg(qbpw).arg(bpw)));

        // A budget below the cheapest candidate is a clear usage error.
        const qbtest::CliRun low = qbtest::runCli(
            QStringList{"plan", qbtest::demo()} + calib() +
                QStringList{"--cache", dir.filePath("cache"), "--budget", "1bpw", "--out", dir.filePath("low.json")},
            300000);
        QVERIFY(low.code != 0);
        QVERIFY2(low.err.contains("quantbench-cli plan:"), low.err.constData());
        QVERIFY(!QFile::exists(dir.filePath("low.json")));
    }
};

QTEST_GUILESS_MAIN(TestCliPlan)
#include "tst_cli_plan.moc"
