// Runs the built quantbench-cli `lab` subcommand end to end on the demo model: the JSON matches the
// library's runTransformLab for the same request (the flags are bound as documented), the table
// and per-channel arrays, RUQuant's stages and the within-cell statistics, and usage/input errors.

#include "cli_runner.h"
#include "model/forward.h"
#include "pipeline/transform_lab.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTest>

#include <cmath>

using namespace qb;

class TestCliLab : public QObject {
    Q_OBJECT

    using Run = qbtest::CliRun;
    static Run run(const QStringList& args) { return qbtest::runCli(args, 120000); }

    static bool near(double a, double b) { return std::abs(a - b) <= 1e-4 * (std::abs(b) + 1e-3); }

private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }

    void jsonMatchesTheLibrary()
    {
        const Run r = run({"lab",        qbtest::demo(),
                           "--calib",    qbtest::demo("/calib.txt"),
                           "--layer",    "2",
                           "--input",    "down",
                           "--smooth",   "0.5",
                           "--abits",    "6",
                           "--wbits",    "4",
                           "--clip",     "0.9",
                           "--nsamples", "8",
                           "--seqlen",   "64",
                           "--tokens",   "300",
                           "--threads",  "2",
                           "--json"});
        QVERIFY2(r.code == 0, r.err.constData());
        QJsonParseError err;
        const QJsonObject o = QJsonDocument::fromJson(r.out, &err).object();
        QVERIFY2(!o.isEmpty(), qPrintable(err.errorString()));
        QCOMPARE(o.value("layer").toInt(), 2);
        QCOMPARE(o.value("input").toString(), QString("down"));
        QCOMPARE(o.value("channels").toInt(), 352);
        QCOMPARE(o.value("sampled_tokens").toInt(), 300);
        QCOMPARE(o.value("total_tokens").toInt(), 8 * 64);
        QCOMPARE(o.value("abits").toInt(), 6);
        QCOMPARE(o.value("wbits").toInt(), 4);

        auto ck = io::openCheckpoint(qbtest::demo().toStdString());
        QVERIFY(ck.ok());
        pipeline::TransformLabRequest req;
        req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
        req.calibrationText = qbtest::demo("/calib.txt").toStdString();
        req.calibration = {8, 64, 0};
        req.layer = 2;
        req.kind = model::LinearKind::Down;
        req.smoothAlpha = 0.5;
        req.options.maxTokens = 300;
        req.options.quant.bits = 6;
        req.options.quant.clip = 0.9f;
        req.options.weightBits = 4;
        auto lib = pipeline::runTransformLab(req);
        QVERIFY(lib.ok());
        const QJsonArray stages = o.value("stages").toArray();
        QCOMPARE(stages.size(), qsizetype(lib->stages.size()));
        QVERIFY(stages.size() >= 2);
        QCOMPARE(stages.at(1).toObject().value("label").toString(), QString::fromUtf8("smoothed (α 0.5)"));
        for (qsizetype i = 0; i < stages.size(); ++i) {
            const QJsonObject s = stages.at(i).toObject();
            const auto& l = lib->stages[std::size_t(i)];
            QCOMPARE(s.value("label").toString().toStdString(), l.label);
            QVERIFY(near(s.value("output_error").toDouble(), l.outputError));
            QVERIFY(near(s.value("quant_rel_mse").toDouble(), l.quantError));
            QVERIFY(near(s.value("channel_ratio").toDouble(), l.channelRatio));
            QVERIFY(near(s.value("kurtosis").toDouble(), l.moments.kurtosis));
            QVERIFY(s.value("output_error").toDouble() > 0);
            QCOMPARE(s.value("top_channels").toArray().size(), qsizetype(5));
            QVERIFY(!s.contains("channel_max_abs"));
        }
    }

    void tableAndChannels()
    {
        const Run t = run({"lab", qbtest::demo(), "--calib", qbtest::demo("/calib.txt"), "--nsamples", "4", "--seqlen",
                           "64", "--input", "qkv", "--threads", "2"});
        QVERIFY2(t.code == 0, t.err.constData());
        QVERIFY(t.out.contains(
            "layer 0 qkv input: 128 channels, 256 of 256 calibration tokens; A4 asym per token; weights unquantized"));
        QVERIFY(t.out.contains("out error"));
        QVERIFY(t.out.contains("\noriginal "));
        QVERIFY(t.out.contains(QString::fromUtf8("\nsmoothed (α 0.6) ").toUtf8()));
        const Run j = run({"lab", qbtest::demo(), "--calib", qbtest::demo("/calib.txt"), "--nsamples", "4", "--seqlen",
                           "64", "--input", "o", "--layer", "3", "--abits", "0", "--json", "--channels"});
        QVERIFY2(j.code == 0, j.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(j.out).object();
        QCOMPARE(o.value("abits").toInt(), 0);
        for (const auto& v : o.value("stages").toArray()) {
            const QJsonObject s = v.toObject();
            QCOMPARE(s.value("channel_max_abs").toArray().size(), qsizetype(128));
            QCOMPARE(s.value("channel_quant_error").toArray().size(), qsizetype(128));
            QCOMPARE(s.value("histogram").toArray().size(), qsizetype(128));
            QVERIFY(s.value("output_error").toDouble() < 1e-5); // unquantized: the function is kept
        }
    }

    void ruquantStagesAndWithinCell()
    {
        const QStringList common = {"lab",        qbtest::demo(),
                                    "--calib",    qbtest::demo("/calib.txt"),
                                    "--nsamples", "4",
                                    "--seqlen",   "64",
                                    "--input",    "qkv",
                                    "--threads",  "2",
                                    "--ruquant",  "--ruquant-block",
                                    "64",         "--cell-channel",
                                    "7",          "--seed",
                                    "3"};
        const Run j = run(common + QStringList{"--json", "--cell-bins", "8"});
        QVERIFY2(j.code == 0, j.err.constData());
        const QJsonObject o = QJsonDocument::fromJson(j.out).object();
        QCOMPARE(o.value("cell_channel").toInt(), 7);
        const QJsonArray stages = o.value("stages").toArray();
        QVERIFY(stages.size() >= 6);
        const QStringList want = {"RUQuant stage 1", "RUQuant zig-zag", "RUQuant stage 1 again",
                                  "RUQuant global Householder"};
        for (qsizetype i = 0; i < 4; ++i)
            QCOMPARE(stages.at(stages.size() - 4 + i).toObject().value("label").toString(), want.at(i));
        QVERIFY(stages.last().toObject().value("transform").toString().contains("global Householder (128)"));

        // The same request through the library: same stages, same within-cell numbers.
        auto ck = io::openCheckpoint(qbtest::demo().toStdString());
        QVERIFY(ck.ok());
        pipeline::TransformLabRequest req;
        req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
        req.calibrationText = qbtest::demo("/calib.txt").toStdString();
        req.calibration = {4, 64, 3};
        req.seed = 3;
        req.ruquant = true;
        req.ruquantOptions.blockSize = 64;
        req.ruquantOptions.seed = 3;
        req.options.cellChannel = 7;
        req.options.cellBins = 8;
        auto lib = pipeline::runTransformLab(req);
        QVERIFY(lib.ok());
        QCOMPARE(stages.size(), qsizetype(lib->stages.size()));
        for (qsizetype i = 0; i < stages.size(); ++i) {
            const QJsonObject s = stages.at(i).toObject();
            const auto& l = lib->stages[std::size_t(i)];
            QVERIFY(near(s.value("output_error").toDouble(), l.outputError));
            const QJsonObject all = s.value("cells").toObject(), one = s.value("channel_cells").toObject();
            QVERIFY(near(all.value("mse_ratio").toDouble(), l.cells.mseRatio));
            QVERIFY(all.value("mse_ratio").toDouble() >= 1.0);
            QCOMPARE(one.value("channel").toInt(), 7);
            QVERIFY(near(one.value("mean_abs_offset").toDouble(), l.channelCells.meanAbsOffset));
            QCOMPARE(one.value("positions").toArray().size(), qsizetype(8));
            QCOMPARE(one.value("centroid_offsets").toArray().size(), qsizetype(16));
            qint64 total = 0;
            for (const auto& c : one.value("positions").toArray())
                total += c.toInteger();
            QCOMPARE(total, qint64(one.value("values").toInteger()));
            QCOMPARE(total + one.value("clipped").toInteger() + one.value("exact").toInteger(), qint64(256));
        }

        const Run t = run(common);
        QVERIFY2(t.code == 0, t.err.constData());
        QVERIFY(t.out.contains("\nRUQuant stage 1 "));
        QVERIFY(t.out.contains("\nRUQuant global Householder "));
        QVERIFY(t.out.contains("within-cell"));
        QVERIFY(t.out.contains("channel 7"));
    }

    void errors_data()
    {
        QTest::addColumn<QStringList>("args");
        QTest::addColumn<int>("code");
        QTest::addColumn<QString>("needle");
        const QString m = qbtest::demo(), c = qbtest::demo("/calib.txt");
        QTest::newRow("no calib") << QStringList{"lab", m} << 2 << "--calib";
        QTest::newRow("bad input") << QStringList{"lab", m, "--calib", c, "--input", "mlp"} << 2 << "--input";
        QTest::newRow("abits 9") << QStringList{"lab", m, "--calib", c, "--abits", "9"} << 2 << "abits";
        QTest::newRow("wbits 1") << QStringList{"lab", m, "--calib", c, "--wbits", "1"} << 2 << "--wbits";
        QTest::newRow("smooth 2") << QStringList{"lab", m, "--calib", c, "--smooth", "2"} << 2 << "--smooth";
        QTest::newRow("unknown flag") << QStringList{"lab", m, "--calib", c, "--bogus"} << 2 << "bogus";
        QTest::newRow("layer 9") << QStringList{"lab", m, "--calib", c, "--layer", "9", "--nsamples", "2"} << 1
                                 << "layer 9";
        QTest::newRow("block without ruquant")
            << QStringList{"lab", m, "--calib", c, "--ruquant-block", "64"} << 2 << "--ruquant";
        QTest::newRow("cell channel, abits 0")
            << QStringList{"lab", m, "--calib", c, "--cell-channel", "3", "--abits", "0"} << 2 << "--cell-channel";
        QTest::newRow("cell channel 128")
            << QStringList{"lab", m, "--calib", c, "--cell-channel", "128", "--nsamples", "2"} << 1 << "channel 128";
        QTest::newRow("ruquant block 1") << QStringList{"lab", m, "--calib", c, "--ruquant", "--ruquant-block", "1"}
                                         << 2 << "ruquant-block";
        QTest::newRow("no text") << QStringList{"lab", m, "--calib", "/nonexistent/calib.txt"} << 1 << "nonexistent";
    }

    void errors()
    {
        QFETCH(QStringList, args);
        QFETCH(int, code);
        QFETCH(QString, needle);
        const Run r = run(args);
        QCOMPARE(r.code, code);
        QVERIFY(r.out.isEmpty());
        QVERIFY2(r.err.contains(needle.toUtf8()), r.err.constData());
    }
};

QTEST_GUILESS_MAIN(TestCliLab)
#include "tst_cli_lab.moc"
