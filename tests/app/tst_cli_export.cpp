// quantbench-cli convert, verify, quantize --out and export on the bundled demo model: every format
// is written, verified by `verify`, and a project exported later equals a direct export; export
// --run N picks any run of a project saved with several.

#include "export/project_bundle.h"
#include "export_test_util.h"
#include "io/checkpoint.h"
#include "pipeline/workflows.h"
#include "quant_test_util.h"

#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;

class TestCliExport : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void cliConvertAndVerify()
    {
        QTemporaryDir dir;
        const QString out = dir.filePath("cli.gguf");
        QProcess p;
        p.start(QStringLiteral(QB_CLI_PATH),
                {"convert", QString::fromStdString(qbtest::demoDir()), "--out", out, "--gguf-type", "q5_1", "--json"});
        QVERIFY(p.waitForFinished(120000));
        QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
        const QByteArray json = p.readAllStandardOutput();
        QVERIFY(json.contains("\"verified\":true"));
        QVERIFY(json.contains("\"type\":\"Q5_1\""));
        p.start(QStringLiteral(QB_CLI_PATH), {"verify", out});
        QVERIFY(p.waitForFinished(120000));
        QCOMPARE(p.exitCode(), 0);
        QVERIFY(p.readAllStandardOutput().contains("OK"));
        p.start(QStringLiteral(QB_CLI_PATH),
                {"verify", QString::fromStdString(qbtest::demoDir() + "/model.safetensors")});
        QVERIFY(p.waitForFinished(120000));
        QCOMPARE(p.exitCode(), 0);
    }

    void cliQuantizeGptqAndVerify()
    {
        QTemporaryDir dir;
        const QString out = dir.filePath("cli-gptq");
        const QString demo = QString::fromStdString(qbtest::demoDir());
        QProcess p;
        p.start(QStringLiteral(QB_CLI_PATH), {"quantize",   demo,       "--calib",  demo + "/calib.txt",
                                              "--nsamples", "8",        "--seqlen", "64",
                                              "--method",   "gptq",     "--bits",   "4",
                                              "--group",    "32",       "--sym",    "--out",
                                              out,          "--format", "gptq",     "--json"});
        QVERIFY(p.waitForFinished(120000));
        QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
        const QByteArray json = p.readAllStandardOutput();
        QVERIFY2(json.contains("\"verified\":true") && json.contains("\"format\":\"gptq\""), json.constData());
        p.start(QStringLiteral(QB_CLI_PATH), {"verify", out});
        QVERIFY(p.waitForFinished(60000));
        const QByteArray summary = p.readAllStandardOutput();
        QCOMPARE(p.exitCode(), 0);
        QVERIFY2(summary.contains("gptq 4-bit") && summary.contains("OK"), summary.constData());
    }

    void cliQuantizeSafetensorsAndVerify()
    {
        QTemporaryDir dir;
        const QString out = dir.filePath("cli-st");
        const QString demo = QString::fromStdString(qbtest::demoDir());
        QProcess p;
        p.start(QStringLiteral(QB_CLI_PATH),
                {"quantize", demo, "--calib", demo + "/calib.txt", "--nsamples", "8", "--seqlen", "64", "--method",
                 "rtn", "--bits", "4", "--group", "32", "--out", out, "--format", "safetensors"});
        QVERIFY(p.waitForFinished(120000));
        QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
        QVERIFY(p.readAllStandardOutput().contains("fake-quantized safetensors"));
        p.start(QStringLiteral(QB_CLI_PATH), {"verify", out});
        QVERIFY(p.waitForFinished(60000));
        QCOMPARE(p.exitCode(), 0);
        QVERIFY(p.readAllStandardOutput().contains("OK"));
    }

    // quantize --format qbproj, then export the project in every model format; the fake-quantized
    // safetensors rebuilt from the project equals the one written straight from quantize.
    void cliQuantizeProjectThenExport()
    {
        QTemporaryDir dir;
        const QString demo = QString::fromStdString(qbtest::demoDir());
        const QStringList common = {
            "quantize", demo,     "--calib", demo + "/calib.txt", "--nsamples", "8",    "--seqlen", "64", "--method",
            "gptq",     "--bits", "4",       "--group",           "32",         "--sym"};
        QProcess p;
        p.start(QStringLiteral(QB_CLI_PATH),
                common + QStringList{"--out", dir.filePath("run.qbproj"), "--format", "qbproj"});
        QVERIFY(p.waitForFinished(120000));
        QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
        p.start(QStringLiteral(QB_CLI_PATH),
                common + QStringList{"--out", dir.filePath("direct"), "--format", "safetensors"});
        QVERIFY(p.waitForFinished(120000));
        QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
        // The project carries before/after weight histograms of every quantized tensor.
        {
            auto bundle = exporting::readProjectBundle(dir.filePath("run.qbproj").toStdString());
            QVERIFY2(bundle.ok(), bundle.ok() ? "" : bundle.error().toString().c_str());
            const io::JsonValue* hist = nullptr;
            for (const auto& [name, value] : bundle->extras)
                if (name == "histograms") hist = &value;
            QVERIFY(hist);
            const io::JsonValue* tensors = hist->find("tensors");
            QVERIFY(tensors && tensors->isObject());
            QCOMPARE(int(tensors->asObject().size()), 4 * 7); // every decoder linear of the demo
            for (const auto& member : tensors->asObject()) {
                std::int64_t before = 0, after = 0;
                for (const auto& c : member.value.find("original")->asArray())
                    before += c.asInteger();
                for (const auto& c : member.value.find("quantized")->asArray())
                    after += c.asInteger();
                QCOMPARE(before, after); // same tensor, same number of weights
                QVERIFY(before >= 64 * 128);
                QCOMPARE(int(member.value.find("original")->asArray().size()), 64);
            }
        }
        for (const char* fmt : {"gguf", "gptq", "safetensors"}) {
            const QString out = dir.filePath(QString("from-project-") + fmt + (QString(fmt) == "gguf" ? ".gguf" : ""));
            p.start(QStringLiteral(QB_CLI_PATH),
                    {"export", dir.filePath("run.qbproj"), "--out", out, "--format", fmt, "--json"});
            QVERIFY(p.waitForFinished(120000));
            QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
            const QByteArray json = p.readAllStandardOutput();
            QVERIFY2(json.contains("\"verified\":true"), json.constData());
            if (QString(fmt) == "gguf") QVERIFY2(json.contains("\"all_exact\":true"), json.constData());
        }
        QCOMPARE(qbtest::slurpFile(dir.filePath("from-project-safetensors/model.safetensors")),
                 qbtest::slurpFile(dir.filePath("direct/model.safetensors")));
        const double pg = qbtest::ourPerplexity(dir.filePath("from-project-gguf.gguf").toStdString());
        const double ps = qbtest::ourPerplexity(dir.filePath("direct").toStdString());
        qInfo("perplexity: safetensors from quantize %.9f, GGUF exported from the project %.9f", ps, pg);
        QVERIFY(std::fabs(pg - ps) <= 1e-6 * ps);
    }

    // A project with two runs (the second selected on saving): export --run 1 writes the first
    // run's GGUF, byte for byte what exporting it before saving gave; --run 3 is a usage error.
    void cliExportAnyRunOfAProject()
    {
        QTemporaryDir dir;
        auto ck = io::openCheckpoint(qbtest::demoDir());
        QVERIFY(ck.ok());
        auto checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
        pipeline::SaveProjectRequest save;
        save.path = dir.filePath("two.qbproj").toStdString();
        save.checkpoint = checkpoint;
        for (int bits : {4, 3}) {
            pipeline::QuantizeRequest q;
            q.checkpoint = checkpoint;
            q.plan = pipeline::uniformQuantPlan(quant::Method::Rtn, bits, 32);
            q.calibration.textPath = qbtest::demoDir() + "/calib.txt";
            q.calibration.options.nsamples = 4;
            q.calibration.options.seqlen = 64;
            auto r = pipeline::quantizeModel(q);
            QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
            save.runs.push_back({"RTN",
                                 pipeline::quantPlanToJson(q.plan),
                                 r->result,
                                 std::nullopt,
                                 r->seconds,
                                 q.calibration.toJson(),
                                 std::nullopt,
                                 {}});
        }
        save.gridsRun = 1;
        auto saved = pipeline::saveProject(save);
        QVERIFY2(saved.ok() && saved->verified, saved.ok() ? saved->verifySummary.c_str() : "");
        pipeline::ExportRequest direct;
        direct.checkpoint = checkpoint;
        direct.run = save.runs[0];
        direct.target.out = dir.filePath("direct.gguf").toStdString();
        QVERIFY(pipeline::exportRun(direct).ok());

        QProcess p;
        const QString out = dir.filePath("run1.gguf");
        p.start(QStringLiteral(QB_CLI_PATH),
                {"export", dir.filePath("two.qbproj"), "--run", "1", "--out", out, "--format", "gguf"});
        QVERIFY(p.waitForFinished(120000));
        QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
        QCOMPARE(qbtest::slurpFile(out), qbtest::slurpFile(dir.filePath("direct.gguf")));
        p.start(QStringLiteral(QB_CLI_PATH),
                {"export", dir.filePath("two.qbproj"), "--run", "3", "--out", out, "--format", "gguf"});
        QVERIFY(p.waitForFinished(120000));
        QCOMPARE(p.exitCode(), 2);
        const QByteArray err = p.readAllStandardError();
        QVERIFY2(err.contains("the project has 2 run(s)"), err.constData());
    }
};

QTEST_GUILESS_MAIN(TestCliExport)
#include "tst_cli_export.moc"
