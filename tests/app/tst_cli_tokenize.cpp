// quantbench-cli tokenize: the ids of a directory's and of a file's tokenizer.json equal the
// library's, a missing or broken tokenizer is a clear error, usage errors exit 2.

#include "cli_runner.h"
#include "io/tokenizer.h"

#include <QFileInfo>
#include <QTemporaryDir>
#include <QTest>

#include <cstdint>
#include <vector>

class TestCliTokenize : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void cliTokenize()
    {
        QTemporaryDir dir;
        QVERIFY(QFile::copy(QStringLiteral(QB_TESTS_DIR "/io/tokenizer/llama3_style.json"),
                            dir.filePath("tokenizer.json")));
        const QByteArray text = "Hello world!\nIt's 2024.";
        QVERIFY(qbtest::writeFile(dir.filePath("text.txt"), text));
        auto loaded = qb::io::Tokenizer::fromFile(dir.filePath("tokenizer.json").toStdString());
        QVERIFY2(loaded.ok(), loaded.ok() ? "" : loaded.error().toString().c_str());
        const qb::io::Tokenizer& tok = *loaded;
        auto expectedLines = [](const std::vector<std::int32_t>& ids) {
            QByteArray out;
            for (auto id : ids)
                out += QByteArray::number(id) + "\n";
            return out;
        };
        auto run = [&](const QStringList& args, int expectedExit) {
            QProcess p;
            p.start(QStringLiteral(QB_CLI_PATH), args);
            if (!p.waitForFinished(60000)) qFatal("cli did not finish");
            if (p.exitCode() != expectedExit) qWarning("cli stderr: %s", p.readAllStandardError().constData());
            [&] { QCOMPARE(p.exitCode(), expectedExit); }();
            return std::make_pair(p.readAllStandardOutput(), p.readAllStandardError());
        };
        QVERIFY2(QFileInfo::exists(QStringLiteral(QB_CLI_PATH)), "build quantbench-cli first");
        // MODEL as a directory, and as a tokenizer.json path
        QCOMPARE(run({"tokenize", dir.path(), "--text", dir.filePath("text.txt")}, 0).first,
                 expectedLines(tok.encode(text.toStdString())));
        QCOMPARE(
            run({"tokenize", dir.filePath("tokenizer.json"), "--text", dir.filePath("text.txt"), "--no-special"}, 0)
                .first,
            expectedLines(tok.encode(text.toStdString(), false)));
        // missing tokenizer
        QTemporaryDir empty;
        const auto missing = run({"tokenize", empty.path(), "--text", dir.filePath("text.txt")}, 1);
        QVERIFY2(missing.second.contains("tokenizer.json"), missing.second.constData());
        // not JSON
        QVERIFY(qbtest::writeFile(empty.filePath("tokenizer.json"), "{ this is not json"));
        const auto bad = run({"tokenize", empty.path(), "--text", dir.filePath("text.txt")}, 1);
        QVERIFY2(bad.second.contains("not valid JSON"), bad.second.constData());
        // usage error
        run({"tokenize", dir.path()}, 2);
    }
};

QTEST_GUILESS_MAIN(TestCliTokenize)
#include "tst_cli_tokenize.moc"
