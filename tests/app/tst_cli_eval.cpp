// quantbench-cli eval and bench on the bundled demo model: JSON output against the golden
// perplexity, a clear one-line error for a text shorter than a window, usage errors, bench output
// (and bench --quantize --reference against the PyTorch reference where python3-torch is installed).

#include "cli_runner.h"
#include "model/int8_product.h"
#include "model_test_util.h"

#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <cstdint>

namespace {
constexpr double kPplRelTolerance = 5e-4; // 0.05 %
} // namespace

class TestCliEval : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void cliEvalJson()
    {
        const qbtest::CliRun r = qbtest::runCli({"eval", qbtest::demo(), "--text", qbtest::demo() + "/eval.txt",
                                                 "--ctx", "128", "--threads", "2", "--batch", "8", "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(r.out).object();
        QCOMPARE(o.keys(),
                 (QStringList{"estimate", "perplexity", "seconds", "tokens_per_second", "tokens_scored", "windows"}));
        QVERIFY(o.value("estimate").toObject().value("peak_bytes").toDouble() > 0); // the pre-flight it started from
        const QJsonObject g = qbtest::goldenJson();
        const QJsonObject all = g.value("perplexity").toObject().value("all").toObject();
        QVERIFY(std::abs(o.value("perplexity").toDouble() / all.value("value").toDouble() - 1) < kPplRelTolerance);
        QCOMPARE(o.value("tokens_scored").toInteger(), all.value("tokens_scored").toInteger());
        QCOMPARE(o.value("windows").toInt(), g.value("windows").toInt());
    }

    void cliEvalShortTextFails()
    {
        QTemporaryDir dir;
        const QString path = dir.filePath("short.txt");
        QFile f(path);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write("Too short for a window.\n");
        f.close();
        const qbtest::CliRun r = qbtest::runCli({"eval", qbtest::demo(), "--text", path, "--ctx", "128"});
        QVERIFY(r.code != 0);
        QVERIFY(r.out.isEmpty());
        // Progress lines ("[ 3%] load: ...") may come first; the error is one line, the last.
        const QList<QByteArray> lines = r.err.trimmed().split('\n');
        QVERIFY2(lines.last().startsWith("quantbench-cli eval: ") && lines.last().contains("too short"),
                 r.err.constData());
        for (const QByteArray& l : lines.mid(0, lines.size() - 1))
            QVERIFY2(l.startsWith("["), r.err.constData());
        const qbtest::CliRun bad = qbtest::runCli({"eval", qbtest::demo(), "--text", path, "--score", "middle"});
        QCOMPARE(bad.code, 2);
        const qbtest::CliRun missing = qbtest::runCli({"eval", qbtest::demo() + "/nope", "--text", path});
        QVERIFY(missing.code != 0);
    }

    void cliBench()
    {
        const qbtest::CliRun r =
            qbtest::runCli({"bench", qbtest::demo(), "--ctx", "64", "--windows", "2", "--threads", "2", "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(r.out).object();
        QVERIFY(o.value("tokens_per_second").toDouble() > 0);
        QVERIFY(o.value("peak_rss_mib").toDouble() > 1);
        const qbtest::CliRun t = qbtest::runCli({"bench", qbtest::demo(), "--ctx", "64", "--windows", "1"});
        QVERIFY2(t.code == 0, t.err.constData());
        QVERIFY(t.out.contains("tokens/s") && t.out.contains("peak resident memory"));
    }

    // bench --rotate ruquant: its construction against one calibration pass, split into the pass
    // through the quantized layers and RUQuant's own work; one JSON object per line with --json.
    void cliBenchRuquant()
    {
        const QStringList base = {
            "bench", qbtest::demo(), "--ctx",   "32",       "--windows", "2",         "--abits", "4", "--kvbits",
            "4",     "--rotate",     "ruquant", "--repeat", "1",         "--threads", "1"};
        const qbtest::CliRun r = qbtest::runCli(base + QStringList{"--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        QJsonObject ru;
        for (const QByteArray& line : r.out.split('\n')) {
            if (line.trimmed().isEmpty()) continue;
            QJsonParseError e;
            const QJsonDocument d = QJsonDocument::fromJson(line, &e);
            QVERIFY2(e.error == QJsonParseError::NoError, line.constData());
            if (d.object().contains("ruquant")) ru = d.object().value("ruquant").toObject();
        }
        QCOMPARE(ru.value("layers").toInt(), 4);
        const double build = ru.value("construction_seconds").toDouble(),
                     prop = ru.value("propagate_seconds").toDouble(),
                     pass = ru.value("calibration_pass_seconds").toDouble();
        QVERIFY(pass > 0 && build > 0 && prop > 0 && prop < build);
        QVERIFY(std::abs(ru.value("ratio").toDouble() - build / pass) < 1e-2 * build / pass + 1e-3);
        // The carry multiplies in integers exactly where the CPU has AVX-512 VNNI.
        QVERIFY(ru.value("integer_products").isBool());
        QCOMPARE(ru.value("integer_products").toBool(),
                 qb::model::bestInt8Kernel() == qb::model::Int8Kernel::Avx512Vnni);
        const qbtest::CliRun t = qbtest::runCli(base);
        QVERIFY2(t.code == 0, t.err.constData());
        QVERIFY2(t.out.contains("calibration pass (FP, through the 4 decoder layers)") &&
                     t.out.contains("RUQuant construction:"),
                 t.out.constData());
    }

    // bench --hadamard: the fast transform timed beside the dense GEMM; 172 has no construction, so
    // it runs block-diagonally and says so; an odd width is a clear error.
    void cliBenchHadamard()
    {
        const qbtest::CliRun r =
            qbtest::runCli({"bench", "--hadamard", "352,172", "--rows", "8", "--repeat", "1", "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonArray sizes = QJsonDocument::fromJson(r.out).object().value("sizes").toArray();
        QCOMPARE(sizes.size(), 2);
        QCOMPARE(sizes[0].toObject().value("construction").toString(),
                 QStringLiteral("Hadamard 352 (44 x 8, Paley I q=43), randomized seed 0"));
        QVERIFY(sizes[1].toObject().value("construction").toString().startsWith("block-diagonal Hadamard 172"));
        for (const auto v : sizes)
            QVERIFY(v.toObject().value("fast_seconds").toDouble() > 0 &&
                    v.toObject().value("dense_seconds").toDouble() > 0);
        const qbtest::CliRun bad = qbtest::runCli({"bench", "--hadamard", "7"});
        QCOMPARE(bad.code, 1);
        QVERIFY2(bad.err.contains("no Hadamard matrix of order 7"), bad.err.constData());
    }

    // A GGUF alone in its directory (no tokenizer.json): eval, tokenize and info use the tokenizer
    // it embeds; an F32 GGUF evaluates to the original's perplexity.
    void cliEvalGgufWithEmbeddedTokenizer()
    {
        QTemporaryDir dir;
        const QString gguf = dir.filePath(QStringLiteral("f32.gguf"));
        const qbtest::CliRun c = qbtest::runCli({"convert", qbtest::demo(), "--out", gguf, "--gguf-type", "f32"});
        QVERIFY2(c.code == 0, c.err.constData());
        QVERIFY(!QFile::exists(dir.filePath(QStringLiteral("tokenizer.json"))));
        auto eval = [](const QString& model) {
            const qbtest::CliRun r =
                qbtest::runCli({"eval", model, "--text", qbtest::demo("/eval.txt"), "--ctx", "128", "--json"});
            if (r.code != 0) qWarning("%s", r.err.constData());
            return QJsonDocument::fromJson(r.out).object();
        };
        const QJsonObject g = eval(gguf), o = eval(qbtest::demo());
        QVERIFY(g.value("perplexity").toDouble() > 0);
        QVERIFY(std::abs(g.value("perplexity").toDouble() / o.value("perplexity").toDouble() - 1) < 1e-5);
        QCOMPARE(g.value("tokens_scored").toInteger(), o.value("tokens_scored").toInteger());
        const qbtest::CliRun tg = qbtest::runCli({"tokenize", gguf, "--text", qbtest::demo("/eval.txt"), "--json"});
        const qbtest::CliRun to =
            qbtest::runCli({"tokenize", qbtest::demo(), "--text", qbtest::demo("/eval.txt"), "--json"});
        QVERIFY2(tg.code == 0, tg.err.constData());
        QCOMPARE(tg.out, to.out);
        const qbtest::CliRun info = qbtest::runCli({"info", gguf});
        QVERIFY2(info.code == 0 && info.out.contains("embedded in the GGUF (gpt2)"), info.out.constData());
    }

    // An export scored against its original: the Q8_0 GGUF's KL is small but not zero; the model
    // against itself gives zero and full top-token agreement.
    void cliEvalAgainstAReference()
    {
        QTemporaryDir dir;
        const QString gguf = dir.filePath(QStringLiteral("q8.gguf"));
        const qbtest::CliRun c = qbtest::runCli({"convert", qbtest::demo(), "--out", gguf, "--gguf-type", "q8_0"});
        QVERIFY2(c.code == 0, c.err.constData());
        const qbtest::CliRun r = qbtest::runCli({"eval", gguf, "--text", qbtest::demo("/eval.txt"), "--ctx", "128",
                                                 "--reference", qbtest::demo(), "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject kl = QJsonDocument::fromJson(r.out).object().value("kl").toObject();
        QVERIFY2(kl.value("mean").toDouble() > 0 && kl.value("mean").toDouble() < 0.01, r.out.constData());
        QVERIFY(kl.value("top1_agreement").toDouble() > 0.95);
        QVERIFY(kl.value("tokens").toDouble() > 1000);
        const qbtest::CliRun self = qbtest::runCli({"eval", qbtest::demo(), "--text", qbtest::demo("/eval.txt"),
                                                    "--ctx", "128", "--reference", qbtest::demo()});
        QVERIFY2(self.code == 0, self.err.constData());
        QVERIFY2(self.out.contains("KL divergence from the reference") && self.out.contains("same top token 100.000"),
                 self.out.constData());
        const qbtest::CliRun missing = qbtest::runCli(
            {"eval", qbtest::demo(), "--text", qbtest::demo("/eval.txt"), "--reference", "/nonexistent"});
        QCOMPARE(missing.code, 1);
        QVERIFY(missing.err.contains("reference"));
    }

    // bench --quantize with two methods: minima per stage, in the order given, and the second's
    // total over the first's within each repeat.
    void cliBenchQuantizePairs()
    {
        const qbtest::CliRun r =
            qbtest::runCli({"bench", qbtest::demo(), "--quantize", "--methods", "rtn,gptq", "--nsamples", "2",
                            "--seqlen", "32", "--threads", "1", "--repeat", "3", "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(r.out).object();
        const QJsonArray methods = o.value("methods").toArray();
        QCOMPARE(methods.size(), 2);
        QCOMPARE(methods.at(0).toObject().value("method").toString(), QStringLiteral("rtn"));
        QCOMPARE(methods.at(1).toObject().value("method").toString(), QStringLiteral("gptq"));
        const QJsonObject pairs = o.value("pairs").toObject();
        QCOMPARE(pairs.value("of").toString(), QStringLiteral("gptq/rtn"));
        QCOMPARE(pairs.value("repeats").toInt(), 3);
        const double lo = pairs.value("min").toDouble(), mid = pairs.value("median").toDouble(),
                     hi = pairs.value("max").toDouble();
        QVERIFY2(lo > 0 && lo <= mid && mid <= hi, r.out.constData());
        const int noSlower = pairs.value("no_slower").toInt(-1);
        QVERIFY(noSlower >= 0 && noSlower <= 3);
        QCOMPARE(noSlower == 3, hi <= 1.0);
        QCOMPARE(noSlower == 0, lo > 1.0);
        // The order-balanced ratio: the geometric mean of the first two repeats (gptq second, then
        // first), the third left out.
        const QJsonArray ratios = pairs.value("ratios").toArray();
        QCOMPARE(ratios.size(), 3);
        QCOMPARE(pairs.value("balanced_repeats").toInt(), 2);
        const double balanced = std::sqrt(ratios.at(0).toDouble() * ratios.at(1).toDouble());
        QVERIFY2(std::abs(pairs.value("balanced").toDouble() - balanced) <= 1e-4 * balanced, r.out.constData());
        QVERIFY(lo - 1e-4 <= balanced && balanced <= hi + 1e-4); // lo and hi printed to 4 places
        QVERIFY(methods.at(0).toObject().value("total").toDouble() > 0);
        QVERIFY(methods.at(1).toObject().value("total").toDouble() > 0);
        // One method: no pairs.
        const qbtest::CliRun one = qbtest::runCli({"bench", qbtest::demo(), "--quantize", "--methods", "rtn",
                                                   "--nsamples", "2", "--seqlen", "32", "--threads", "1", "--json"});
        QVERIFY2(one.code == 0, one.err.constData());
        QVERIFY(!QJsonDocument::fromJson(one.out).object().contains("pairs"));
    }

    // bench --quantize --reference: ours and the PyTorch reference pipeline on the same token ids
    // (kept with --save-ids), both wall times and the ratio; needs Debian's python3-torch.
    void cliBenchQuantizeAgainstTheReference()
    {
        const qbtest::CliRun usage =
            qbtest::runCli({"bench", qbtest::demo(), "--quantize", "--reference", "--methods", "rtn"});
        QCOMPARE(usage.code, 2);
        QProcess torch;
        torch.start(QStringLiteral("/usr/bin/python3"), {QStringLiteral("-c"), QStringLiteral("import torch")});
        if (!torch.waitForFinished(60000) || torch.exitStatus() != QProcess::NormalExit || torch.exitCode() != 0)
            QSKIP("/usr/bin/python3 has no torch (apt-get install python3-torch)");
        QTemporaryDir dir;
        const QString ids = dir.filePath(QStringLiteral("ids.i32"));
        const qbtest::CliRun r = qbtest::runCli({"bench", qbtest::demo(), "--quantize", "--reference", "--nsamples",
                                                 "2", "--seqlen", "32", "--threads", "1", "--save-ids", ids, "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(r.out).object();
        const QJsonObject ref = o.value("reference").toObject();
        QVERIFY2(ref.value("total").toDouble() > 0 && ref.value("forward").toDouble() > 0, r.out.constData());
        QVERIFY(o.value("methods").toArray().at(0).toObject().value("total").toDouble() > 0);
        QVERIFY(o.value("ratio").toDouble() > 0);
        QCOMPARE(QFileInfo(ids).size(), qint64(2 * 32 * sizeof(std::int32_t)));
    }
};

QTEST_GUILESS_MAIN(TestCliEval)
#include "tst_cli_eval.moc"
