// Runs the built quantbench-cli `info` subcommand end to end.

#include "cli_runner.h"
#include "io_test_util.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>
#include <QTest>

class TestCliInfo : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;

    using Run = qbtest::CliRun;
    static Run run(const QStringList& args) { return qbtest::runCli(args, 60000); }

private Q_SLOTS:
    void jsonOnTorchFixture()
    {
        const Run r = run({"info", QB_TESTS_DIR "/io/fixtures/llama_f32", "--json"});
        QCOMPARE(r.code, 0);
        QJsonParseError err;
        const QJsonDocument doc = QJsonDocument::fromJson(r.out, &err);
        QVERIFY2(doc.isObject(), qPrintable(err.errorString()));
        const QJsonObject o = doc.object();
        QCOMPARE(o.value("parameter_count").toInteger(), qint64(1448));
        QCOMPARE(o.value("format").toString(), QString("pytorch-bin"));
        QCOMPARE(o.value("architecture").toString(), QString("LlamaForCausalLM"));
        QCOMPARE(o.value("num_key_value_heads").toInteger(), qint64(1));
        QCOMPARE(o.value("head_dim").toInteger(), qint64(4));
        QCOMPARE(o.value("dtypes").toObject().value("F32").toInt(), 21);
        QCOMPARE(o.value("tensors").toArray().size(), qsizetype(21));
        const QJsonObject t0 = o.value("tensors").toArray().first().toObject();
        QCOMPARE(t0.value("name").toString(), QString("model.embed_tokens.weight"));
        QCOMPARE(t0.value("bytes").toInteger(), qint64(512));
        QCOMPARE(o.value("warnings").toArray().size(), qsizetype(1));
    }
    void textOnSafetensors()
    {
        const QString d = m_dir.filePath("m");
        QDir().mkpath(d);
        qbtest::writeFile((d + "/config.json").toStdString(), qbtest::tinyConfigJson());
        qbtest::writeFile((d + "/model.safetensors").toStdString(),
                          qbtest::safetensorsBytes(qbtest::tinyLlamaTensors(qb::DType::BF16)));
        const Run r = run({"info", d});
        QCOMPARE(r.code, 0);
        QVERIFY(r.out.contains("parameters:      1448"));
        QVERIFY(r.out.contains("BF16 x21"));
        QVERIFY(r.out.contains("model.layers.1.mlp.down_proj.weight"));
        const Run j = run({"info", d + "/model.safetensors", "--json"});
        QCOMPARE(j.code, 0);
        QCOMPARE(QJsonDocument::fromJson(j.out).object().value("parameter_count").toInteger(), qint64(1448));
    }
    void badFileIsOneLineAndExit1()
    {
        const auto bad = m_dir.filePath("bad.gguf");
        qbtest::writeFile(bad.toStdString(), std::string(64, 'x'));
        const Run r = run({"info", bad, "--json"});
        QCOMPARE(r.code, 1);
        QVERIFY(r.out.isEmpty());
        QCOMPARE(r.err.count('\n'), qsizetype(1));
        QVERIFY(r.err.endsWith('\n'));
        QVERIFY(r.err.contains("bad magic"));
        QVERIFY(r.err.contains("bad.gguf"));
    }
    void usageErrors()
    {
        QCOMPARE(run({"info"}).code, 2);
        QCOMPARE(run({"info", "a", "b"}).code, 2);
        QCOMPARE(run({"info", "x", "--bogus"}).code, 2);
    }
};

QTEST_GUILESS_MAIN(TestCliInfo)
#include "tst_cli_info.moc"
