// quantbench-cli quantize on the bundled demo model: --json output with a plan, perplexity and
// the KL block, --no-kl, the saved plan, usage errors (exit 2), Ctrl-C cancels cleanly (exit 130).

#include "cli_runner.h"
#include "pipeline/quant_plan.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>
#include <QFileInfo>
#include <QTest>

#include <cmath>
#include <csignal>

using namespace qb;

class TestCliQuantize : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void cliQuantizeJson()
    {
        QTemporaryDir dir;
        const QString plan = dir.filePath("plan.json"), saved = dir.filePath("saved.json");
        QVERIFY(qbtest::writeFile(
            plan, R"({"default": {"method": "neuqi", "bits": 8, "group_size": 128}, )"
                  R"("rules": [{"match": "model.layers.0.*", "skip": true}, {"match": "lm_head", "bits": 4}]})"));
        QFile evalFile(qbtest::demo("/eval.txt"));
        QVERIFY(evalFile.open(QIODevice::ReadOnly));
        const QString shortEval = dir.filePath("eval_short.txt");
        QVERIFY(qbtest::writeFile(shortEval, evalFile.read(12000)));
        QProcess p;
        p.start(QStringLiteral(QB_CLI_PATH), {"quantize", qbtest::demo(), "--calib", qbtest::demo("/calib.txt"),
                                              "--nsamples", "4", "--seqlen", "64", "--plan", plan, "--eval", shortEval,
                                              "--ctx", "128", "--threads", "2", "--save-plan", saved, "--json"});
        QVERIFY(p.waitForFinished(300000));
        QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
        QJsonParseError err;
        const QJsonObject o = QJsonDocument::fromJson(p.readAllStandardOutput(), &err).object();
        QCOMPARE(err.error, QJsonParseError::NoError);
        for (const char* k : {"perplexity", "bits_per_weight", "seconds", "size_bytes", "tensors", "timings"})
            QVERIFY2(o.contains(k), k);
        const QJsonObject timings = o.value("timings").toObject();
        for (const char* k : {"calibrate", "load", "hessian", "search", "solve", "metrics", "evaluate", "total"})
            QVERIFY2(timings.value(k).isDouble(), k);
        QVERIFY(timings.value("metrics").toDouble() > 0);
        QVERIFY(o.value("perplexity").toDouble() > 1 && o.value("perplexity").toDouble() < 1000);
        const double bpw = o.value("bits_per_weight").toDouble();
        QVERIFY(bpw > 8.25 && bpw < 16); // layer 0 at 16 bits, the rest at 8 + overhead
        const QJsonArray tensors = o.value("tensors").toArray();
        QCOMPARE(tensors.size(), 28);
        const QJsonObject t0 = tensors.at(0).toObject(), t7 = tensors.at(7).toObject();
        for (const char* k : {"name", "method", "bits", "relative_error"})
            QVERIFY2(t7.contains(k), k);
        QCOMPARE(t0.value("method").toString(), QStringLiteral("none"));
        QCOMPARE(t0.value("bits").toInt(), 16);
        QCOMPARE(t7.value("name").toString(), QStringLiteral("model.layers.1.self_attn.q_proj.weight"));
        QCOMPARE(t7.value("method").toString(), QStringLiteral("neuqi"));
        QCOMPARE(t7.value("bits").toInt(), 8);
        QVERIFY(t7.value("relative_error").toDouble() > 0 && t7.value("relative_error").toDouble() < 0.05);
        QCOMPARE(o.value("warnings").toArray().size(), 1); // the lm_head rule
        // --eval measures KL against the original by default: 8 bits and layer 0 skipped barely move it.
        const QJsonObject kl = o.value("kl").toObject();
        for (const char* k : {"tokens", "mean", "mean_stderr", "median", "p99", "max", "top1_agreement",
                              "top1_agreement_stderr", "reference_perplexity"})
            QVERIFY2(kl.value(k).isDouble(), k);
        QVERIFY(kl.value("mean").toDouble() > 0 && kl.value("mean").toDouble() < 0.01);
        QVERIFY(kl.value("top1_agreement").toDouble() > 0.95 && kl.value("top1_agreement").toDouble() <= 1);
        QVERIFY(kl.value("median").toDouble() <= kl.value("p99").toDouble());
        QVERIFY(kl.value("p99").toDouble() <= kl.value("max").toDouble());
        QVERIFY(std::abs(kl.value("reference_perplexity").toDouble() / o.value("perplexity").toDouble() - 1) < 0.01);
        auto savedPlan = pipeline::loadQuantPlan(saved.toStdString());
        auto original = pipeline::loadQuantPlan(plan.toStdString());
        QVERIFY(savedPlan.ok() && original.ok() && *savedPlan == *original);
    }

    // KL is on with --eval and off with --no-kl, in the JSON and in the text report.
    void cliQuantizeKlOnAndOff_data()
    {
        QTest::addColumn<QStringList>("extra");
        QTest::addColumn<bool>("kl");
        QTest::newRow("json") << QStringList{"--json"} << true;
        QTest::newRow("json --no-kl") << QStringList{"--json", "--no-kl"} << false;
        QTest::newRow("text") << QStringList{} << true;
        QTest::newRow("text --no-kl") << QStringList{"--no-kl"} << false;
    }
    void cliQuantizeKlOnAndOff()
    {
        QFETCH(QStringList, extra);
        QFETCH(bool, kl);
        QTemporaryDir dir;
        QFile evalFile(qbtest::demo("/eval.txt"));
        QVERIFY(evalFile.open(QIODevice::ReadOnly));
        const QString shortEval = dir.filePath("eval_short.txt");
        QVERIFY(qbtest::writeFile(shortEval, evalFile.read(6000)));
        const auto r = qbtest::runCli(QStringList{"quantize", qbtest::demo(), "--calib", qbtest::demo("/calib.txt"),
                                                  "--nsamples", "4", "--seqlen", "64", "--method", "rtn", "--bits", "3",
                                                  "--eval", shortEval, "--ctx", "64", "--threads", "2"} +
                                      extra);
        QVERIFY2(r.code == 0, r.err.constData());
        if (extra.contains("--json")) {
            const QJsonObject o = QJsonDocument::fromJson(r.out).object();
            QVERIFY(o.value("perplexity").toDouble() > 1);
            QCOMPARE(o.contains("kl"), kl);
            if (kl) QVERIFY(o.value("kl").toObject().value("mean").toDouble() > 0);
        } else {
            QVERIFY2(r.out.contains("perplexity "), r.out.constData());
            QCOMPARE(r.out.contains("KL divergence from the original"), kl);
            if (kl) QVERIFY2(r.out.contains("same top token"), r.out.constData());
        }
    }

    void cliUsageErrors()
    {
        auto run = [](const QStringList& extra) {
            QProcess p;
            p.start(QStringLiteral(QB_CLI_PATH),
                    QStringList{"quantize", qbtest::demo(), "--calib", qbtest::demo("/calib.txt")} + extra);
            p.waitForFinished(60000);
            return std::make_pair(p.exitCode(), QString::fromUtf8(p.readAllStandardError()));
        };
        auto [c1, e1] = run({"--method", "awq", "--bits", "4"});
        QCOMPARE(c1, 2);
        QVERIFY2(e1.contains("valid: rtn|gptq|neuqi"), qPrintable(e1));
        auto [c2, e2] = run({"--plan", "x.json", "--bits", "4"});
        QCOMPARE(c2, 2);
        QVERIFY2(e2.contains("exclusive"), qPrintable(e2));
        auto [c3, e3] = run({"--method", "gptq", "--bits", "9"});
        QCOMPARE(c3, 2);
        auto [c4, e4] = run({"--method", "gptq"});
        QCOMPARE(c4, 2);
        QVERIFY2(e4.contains("--bits"), qPrintable(e4));
        auto [c5, e5] = run({"--method", "rtn", "--bits", "4", "--no-kl"});
        QCOMPARE(c5, 2);
        QVERIFY2(e5.contains("--no-kl goes with --eval"), qPrintable(e5));
        auto [c6, e6] = run({"--method", "gptq", "--bits", "3", "--target", "gguf:Q4_K"});
        QCOMPARE(c6, 2);
        QVERIFY2(e6.contains("--bits 3 conflicts with --target gguf:Q4_K, which stores 4-bit codes"), qPrintable(e6));
        auto [c7, e7] = run({"--method", "gptq", "--target", "gguf:Q4_3"});
        QCOMPARE(c7, 2);
        QVERIFY2(e7.contains("unknown storage target") && e7.contains("gguf:Q6_K"), qPrintable(e7));
        auto [c8, e8] = run({"--method", "gptq", "--target", "Q4_0", "--group", "64"});
        QCOMPARE(c8, 2);
        QVERIFY2(e8.contains("--group is implied by --target"), qPrintable(e8));
        auto [c9, e9] = run({"--method", "gptq", "--target", "Q4_0", "--head-type", "q9"});
        QCOMPARE(c9, 2);
        QVERIFY2(e9.contains("--head-type: not a GGUF type"), qPrintable(e9));
        auto [c10, e10] = run({"--method", "gptq", "--bits", "2.5"});
        QCOMPARE(c10, 2);
        QVERIFY2(e10.contains("gptq takes integer bits") && e10.contains("--method cmpq"), qPrintable(e10));
        auto [c11, e11] = run({"--method", "cmpq", "--bits", "2.5", "--target", "Q4_0"});
        QCOMPARE(c11, 2);
        QVERIFY2(e11.contains("codebooks") && e11.contains("drop --target"), qPrintable(e11));
    }

    // CMPQ (reconstruction) at a fractional average: the run reports it, .qbproj keeps the codes,
    // GGUF stores the tensors in F16 (the nearest exact container) and says so, GPTQ refuses with
    // the reason, fake-quantized safetensors evaluate like the GGUF file.
    void cliCmpqProjectExports()
    {
        QTemporaryDir dir;
        const QString proj = dir.filePath("cmpq.qbproj");
        const auto q = qbtest::runCli(QStringList{"quantize", qbtest::demo(), "--calib", qbtest::demo("/calib.txt"),
                                                  "--nsamples", "4", "--method", "cmpq", "--bits", "2.5", "--json",
                                                  "--out", proj, "--format", "qbproj"});
        QVERIFY2(q.code == 0, q.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(q.out).object();
        const double bpw = o.value("bits_per_weight").toDouble();
        QVERIFY2(bpw <= 2.5 && bpw > 2.4, qPrintable(QString::number(bpw)));
        const auto gguf =
            qbtest::runCli(QStringList{"export", proj, "--out", dir.filePath("m.gguf"), "--format", "gguf"});
        QVERIFY2(gguf.code == 0, gguf.err.constData());
        QVERIFY2(gguf.err.contains("CMPQ per-channel codebooks cannot be stored in a GGUF block type; stored as F16"),
                 gguf.err.constData());
        QVERIFY(gguf.out.contains("F16 x28"));
        const auto gptq =
            qbtest::runCli(QStringList{"export", proj, "--out", dir.filePath("gptq"), "--format", "gptq"});
        QVERIFY(gptq.code != 0);
        QVERIFY2(gptq.err.contains("cannot be stored in a GPTQ checkpoint") && !gptq.err.contains("--round-grids"),
                 gptq.err.constData());
        const auto st =
            qbtest::runCli(QStringList{"export", proj, "--out", dir.filePath("st"), "--format", "safetensors"});
        QVERIFY2(st.code == 0, st.err.constData());
    }

    // --target: the planned file size is printed before quantizing and equals the written file;
    // every linear is in the target type (agreeing --bits accepted), embedding/head as asked.
    void cliQuantizeIntoGgufTarget()
    {
        QTemporaryDir dir;
        const QString out = dir.filePath("q.gguf");
        const auto r = qbtest::runCli(QStringList{"quantize",
                                                  qbtest::demo(),
                                                  "--calib",
                                                  qbtest::demo("/calib.txt"),
                                                  "--nsamples",
                                                  "4",
                                                  "--seqlen",
                                                  "64",
                                                  "--method",
                                                  "gptq",
                                                  "--bits",
                                                  "4",
                                                  "--target",
                                                  "gguf:Q4_0",
                                                  "--embed-type",
                                                  "q8_0",
                                                  "--json",
                                                  "--out",
                                                  out,
                                                  "--format",
                                                  "gguf",
                                                  "--threads",
                                                  "2"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(r.out).object();
        const QJsonObject ex = o.value("export").toObject();
        QCOMPARE(ex.value("bytes").toDouble(), o.value("planned_gguf_bytes").toDouble());
        QCOMPARE(double(QFileInfo(out).size()), ex.value("bytes").toDouble());
        QVERIFY(ex.value("all_exact").toBool());
        int linears = 0;
        for (const auto& v : ex.value("tensors").toArray()) {
            const QJsonObject t = v.toObject();
            const QString hf = t.value("hf_name").toString();
            if (hf.contains("_proj")) {
                ++linears;
                QCOMPARE(t.value("type").toString(), QString("Q4_0"));
                QCOMPARE(t.value("planned").toString(), QString("Q4_0"));
                QCOMPARE(t.value("source").toString(), QString("grid"));
                QVERIFY(t.value("exact").toBool());
            }
            if (hf == "model.embed_tokens.weight") QCOMPARE(t.value("type").toString(), QString("Q8_0"));
            if (hf == "lm_head.weight") QCOMPARE(t.value("type").toString(), QString("Q8_0")); // Q6_K's fallback
        }
        QCOMPARE(linears, 28);
        for (const auto& v : o.value("tensors").toArray())
            QCOMPARE(v.toObject().value("target").toString(), QString("Q4_0"));
    }

    // Pre-flight: --dry-run prints the estimate and quantizes nothing; a --memory-limit below the
    // estimate refuses the run with what to change; a bad size is a usage error.
    void cliDryRunAndMemoryLimit()
    {
        QTemporaryDir dir;
        const QString out = dir.filePath("q.gguf");
        const QStringList base{"quantize", qbtest::demo(),
                               "--calib",  qbtest::demo("/calib.txt"),
                               "--method", "gptq",
                               "--bits",   "4",
                               "--eval",   qbtest::demo("/eval.txt"),
                               "--ctx",    "128"};
        const auto dry = qbtest::runCli(base + QStringList{"--dry-run", "--json", "--out", out, "--format", "gguf"});
        QVERIFY2(dry.code == 0, dry.err.constData());
        const QJsonObject e = QJsonDocument::fromJson(dry.out).object().value("estimate").toObject();
        QVERIFY(e.value("seconds").toDouble() > 0);
        QVERIFY(e.value("peak_bytes").toDouble() > 1e6);
        // The demo's weights are mapped from its safetensors file: part of the peak, counted apart.
        QVERIFY(e.value("mapped_bytes").toDouble() > 0 &&
                e.value("mapped_bytes").toDouble() < e.value("peak_bytes").toDouble());
        QVERIFY(e.value("fits").toBool());
        QVERIFY(e.value("memory").toObject().contains("calibration activations"));
        QVERIFY(!QFileInfo::exists(out)); // nothing ran
        const auto text = qbtest::runCli(base + QStringList{"--dry-run"});
        QVERIFY2(text.code == 0 && text.out.contains("estimate: about"), text.out.constData());
        const auto refused = qbtest::runCli(base + QStringList{"--memory-limit", "8M"});
        QCOMPARE(refused.code, 1);
        QVERIFY2(refused.err.contains("8 MB are available") && refused.err.contains("calibration windows"),
                 refused.err.constData());
        const auto bad = qbtest::runCli(base + QStringList{"--memory-limit", "lots"});
        QCOMPARE(bad.code, 2);
        QVERIFY2(bad.err.contains("expects a size such as 800M"), bad.err.constData());
    }

    void cliSigintCancels()
    {
        QProcess p;
        p.start(QStringLiteral(QB_CLI_PATH),
                {"quantize", qbtest::demo(), "--calib", qbtest::demo("/calib.txt"), "--nsamples", "16", "--seqlen",
                 "128", "--method", "neuqi", "--bits", "3", "--threads", "1"});
        QVERIFY(p.waitForStarted());
        QByteArray err;
        while (!err.contains("] solve: layer 0") && p.state() == QProcess::Running) {
            p.waitForReadyRead(100);
            err += p.readAllStandardError();
        }
        QVERIFY2(err.contains("] solve: layer 0"), err.constData());
        ::kill(pid_t(p.processId()), SIGINT);
        QVERIFY(p.waitForFinished(60000));
        QCOMPARE(p.exitStatus(), QProcess::NormalExit);
        QCOMPARE(p.exitCode(), 130);
        QVERIFY(p.readAllStandardError().contains("cancelled"));
    }
};

QTEST_GUILESS_MAIN(TestCliQuantize)
#include "tst_cli_quantize.moc"
