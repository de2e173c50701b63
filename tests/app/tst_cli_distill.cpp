// quantbench-cli quantize --distill on the bundled demo model (NeUQI W2 g64, issue 17): the --json
// "distill" block (loss before/after, steps, time, the loss curve), the distilled model is what
// --eval scores (better than without --distill), the GPTQ export of a distilled run reopens to the
// run's perplexity (the distilled scales/zeros stay storable), and usage errors exit 2.

#include "cli_runner.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

namespace {

QJsonObject parse(const QByteArray& out)
{
    QJsonParseError err;
    const QJsonObject o = QJsonDocument::fromJson(out, &err).object();
    return err.error == QJsonParseError::NoError ? o : QJsonObject{};
}

} // namespace

class TestCliDistill : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;
    QString m_eval;

    QStringList common() const
    {
        return {"quantize",   qbtest::demo(),
                "--calib",    qbtest::demo("/calib.txt"),
                "--nsamples", "8",
                "--seqlen",   "128",
                "--method",   "neuqi",
                "--bits",     "2",
                "--group",    "64",
                "--target",   "gptq",
                "--eval",     m_eval,
                "--ctx",      "128",
                "--no-kl",    "--threads",
                "2",          "--json"};
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QFile evalFile(qbtest::demo("/eval.txt"));
        QVERIFY(evalFile.open(QIODevice::ReadOnly));
        m_eval = m_dir.filePath("eval_short.txt");
        QVERIFY(qbtest::writeFile(m_eval, evalFile.read(16000)));
    }

    void distillJsonAndExportReproduces()
    {
        const QString out = m_dir.filePath("distilled-gptq");
        const auto plain = qbtest::runCli(common());
        QVERIFY2(plain.code == 0, plain.err.constData());
        const QJsonObject p = parse(plain.out);
        QVERIFY(!p.contains("distill"));
        const double pplPlain = p.value("perplexity").toDouble();

        const auto run =
            qbtest::runCli(common() + QStringList{"--distill", "--distill-steps", "24", "--distill-lr", "2e-3",
                                                  "--distill-batch", "2", "--out", out, "--format", "gptq"});
        QVERIFY2(run.code == 0, run.err.constData());
        const QJsonObject o = parse(run.out);
        QVERIFY2(o.contains("distill"), run.out.constData());
        const QJsonObject d = o.value("distill").toObject();
        for (const char* k : {"loss_before", "loss_after", "steps", "batch", "lr", "seconds", "trained_tensors"})
            QVERIFY2(d.value(k).isDouble(), k);
        QCOMPARE(d.value("loss").toString(), QStringLiteral("kl"));
        QCOMPARE(d.value("steps").toInt(), 24);
        QCOMPARE(d.value("batch").toInt(), 2);
        QCOMPARE(d.value("trained_tensors").toInt(), 28);
        QCOMPARE(d.value("step_loss").toArray().size(), 24);
        QVERIFY(d.value("seconds").toDouble() > 0);
        QVERIFY(o.value("timings").toObject().value("distill").isDouble());
        const double before = d.value("loss_before").toDouble(), after = d.value("loss_after").toDouble();
        qInfo("KL on the calibration windows %.4f -> %.4f; perplexity %.3f -> %.3f", before, after, pplPlain,
              o.value("perplexity").toDouble());
        QVERIFY(before > 0 && after < before);
        const double pplDistilled = o.value("perplexity").toDouble();
        QVERIFY(pplDistilled < pplPlain); // --eval scores the distilled model
        QVERIFY(o.value("export").toObject().value("verified").toBool());

        // The exported GPTQ directory, reopened, evaluates to the distilled run's perplexity.
        const auto ev = qbtest::runCli({"eval", out, "--text", m_eval, "--ctx", "128", "--threads", "2", "--json"});
        QVERIFY2(ev.code == 0, ev.err.constData());
        const double pplExport = parse(ev.out).value("perplexity").toDouble();
        qInfo("reopened GPTQ export: perplexity %.6f (run %.6f)", pplExport, pplDistilled);
        QVERIFY2(std::abs(pplExport / pplDistilled - 1) < 1e-5, qPrintable(QString::number(pplExport)));
    }

    void usageErrors()
    {
        const QStringList base = {"quantize",   qbtest::demo(),
                                  "--calib",    qbtest::demo("/calib.txt"),
                                  "--method",   "neuqi",
                                  "--bits",     "2",
                                  "--nsamples", "2",
                                  "--seqlen",   "32"};
        for (const QStringList& extra :
             {QStringList{"--distill-steps", "4"}, QStringList{"--distill", "--distill-lr", "0"},
              QStringList{"--distill", "--distill-loss", "l1"}, QStringList{"--distill", "--distill-lr", "abc"}}) {
            const auto r = qbtest::runCli(base + extra);
            QVERIFY2(r.code == 2, qPrintable(extra.join(' ') + ": " + QString::number(r.code)));
            QVERIFY(r.err.contains("distill"));
        }
    }
};

QTEST_GUILESS_MAIN(TestCliDistill)
#include "tst_cli_distill.moc"
