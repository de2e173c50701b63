// quantbench-cli quantize --method ruquant end to end on the demo model: the preset plan it saves
// (RUQuant's W4A4 defaults), a run with perplexity and the RUQuant notes, fine-tuning, and the
// usage errors of the RUQuant flags.

#include "cli_runner.h"
#include "io/json_value.h"
#include "pipeline/quant_plan.h"

#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;

class TestCliRuquant : public QObject {
    Q_OBJECT

    using Run = qbtest::CliRun;
    static Run run(const QStringList& args) { return qbtest::runCli(args, 240000); }
    static QStringList base()
    {
        return {"quantize", qbtest::demo(), "--calib", qbtest::demo("/calib.txt"), "--nsamples", "4", "--seqlen", "32"};
    }

private Q_SLOTS:
    void presetRunAndPlan()
    {
        QTemporaryDir dir;
        const QString plan = dir.filePath("plan.json");
        const Run r =
            run(base() + QStringList{"--method", "ruquant", "--bits", "4", "--eval", qbtest::demo("/eval.txt"), "--ctx",
                                     "64", "--no-kl", "--save-plan", plan});
        QVERIFY2(r.code == 0, r.err.constData());
        QVERIFY2(r.out.contains("activations: A4 KV4 Q4 +smooth 0.6 +ruquant"), r.out.constData());
        QVERIFY(r.out.contains("RUQuant (seed 0): B 128, K 16, lambda 3, T 1, 16 groups"));
        QVERIFY(r.out.contains("online (not storable in a plain weights file): qkv: RUQuant 128"));
        auto p = pipeline::loadQuantPlan(plan.toStdString());
        QVERIFY(p.ok());
        QCOMPARE(*p, pipeline::ruquantPresetPlan(4, 4));
        QCOMPARE(p->defaults.clip.value_or(1.0), 0.8);
        QCOMPARE(p->activation.spec(model::LinearKind::Down).clip, 0.9f);
    }

    void finetuneJson()
    {
        const Run r = run(base() + QStringList{"--method", "ruquant", "--bits", "6", "--ruquant-finetune",
                                               "--ruquant-epochs", "1", "--ruquant-block", "32", "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(r.out).object();
        QVERIFY2(!o.isEmpty(), r.out.constData());
        QVERIFY(std::abs(o.value("bits_per_weight").toDouble() - 6.2) < 0.2);
        const QString text = QString::fromUtf8(QJsonDocument(o).toJson());
        QVERIFY2(text.contains("fine-tuned 1 epochs"), qPrintable(text));
        QVERIFY2(text.contains("B 32"), qPrintable(text));
    }

    void errors_data()
    {
        QTest::addColumn<QStringList>("args");
        QTest::addColumn<QString>("needle");
        QTest::newRow("group") << QStringList{"--method", "ruquant", "--bits", "4", "--group", "64"} << "--group";
        QTest::newRow("finetune without ruquant")
            << QStringList{"--method", "rtn", "--bits", "4", "--ruquant-finetune"} << "--method ruquant";
        QTest::newRow("odd block") << QStringList{"--method", "ruquant", "--bits", "4", "--ruquant-block", "7"}
                                   << "even";
        QTest::newRow("lr") << QStringList{"--method", "ruquant", "--bits", "4", "--ruquant-lr", "2"} << "--ruquant-lr";
        QTest::newRow("wclip") << QStringList{"--method", "rtn", "--bits", "4", "--wclip", "1.5"} << "--wclip";
        QTest::newRow("wclip neuqi") << QStringList{"--method", "neuqi", "--bits", "4", "--wclip", "0.8"} << "clip";
        QTest::newRow("abits 1") << QStringList{"--method", "ruquant", "--bits", "4", "--abits", "1"} << "abits";
    }
    void errors()
    {
        QFETCH(QStringList, args);
        QFETCH(QString, needle);
        const Run r = run(base() + args + QStringList{"--dry-run"});
        QCOMPARE(r.code, 2);
        QVERIFY2(r.err.contains(needle.toUtf8()), r.err.constData());
    }
};

QTEST_GUILESS_MAIN(TestCliRuquant)
#include "tst_cli_ruquant.moc"
