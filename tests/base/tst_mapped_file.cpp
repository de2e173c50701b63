#include "base/mapped_file.h"

#include <QTemporaryDir>
#include <QTest>

#include <fstream>

using namespace qb;

class TestMappedFile : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;

    std::string writeFile(const char* name, const std::string& bytes)
    {
        const std::string path = m_dir.filePath(name).toStdString();
        std::ofstream(path, std::ios::binary) << bytes;
        return path;
    }

private Q_SLOTS:
    void mapsAndReads()
    {
        std::string bytes = "GGUF";
        bytes += std::string("\x03\x00\x00\x00", 4);
        const auto path = writeFile("a.bin", bytes);
        auto f = MappedFile::open(path);
        QVERIFY2(f.ok(), f.ok() ? "" : f.error().toString().c_str());
        ByteRange all(*f);
        QCOMPARE(all.size(), std::uint64_t(8));
        QCOMPARE(all.read<std::uint32_t>(0).value(), 0x46554747u);
        QCOMPARE(all.read<std::uint32_t>(4).value(), 3u);
        auto sub = all.slice(4, 4);
        QVERIFY(sub.ok());
        QCOMPARE(sub->fileOffset(), std::uint64_t(4));
        QCOMPARE(sub->read<std::uint8_t>(0).value(), std::uint8_t(3));
    }
    void readPastEndIsAnError()
    {
        const auto path = writeFile("short.bin", "abc");
        ByteRange all(*MappedFile::open(path));
        auto r = all.read<std::uint32_t>(0);
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::OutOfRange));
        QVERIFY(r.error().context == path);
        QVERIFY(r.error().message.find("offset 0") != std::string::npos);
        QVERIFY(!all.slice(2, 2).ok());
        QVERIFY(!all.slice(4, 0).ok());
        QVERIFY(all.slice(3, 0).ok());
        // Offsets near 2^64 must not wrap around the bounds check.
        QVERIFY(!all.slice(1, ~std::uint64_t(0)).ok());
        QVERIFY(!all.read<std::uint8_t>(~std::uint64_t(0)).ok());
        auto sub = all.slice(1, 2);
        QVERIFY(!sub->read<std::uint32_t>(0).ok());
        QVERIFY(sub->outOfRange(0, 4).message.find("offset 1") != std::string::npos);
    }
    void cursor()
    {
        std::string bytes("\x05\x00\x00\x00\x00\x00\x00\x00hello", 13);
        ByteCursor c(ByteRange(*MappedFile::open(writeFile("c.bin", bytes))));
        auto n = c.read<std::uint64_t>();
        QCOMPARE(*n, std::uint64_t(5));
        QCOMPARE(*c.readString(*n), std::string("hello"));
        QCOMPARE(c.remaining(), std::uint64_t(0));
        QVERIFY(!c.read<std::uint8_t>().ok());
        QCOMPARE(c.pos(), std::uint64_t(13));
    }
    void emptyFile()
    {
        auto f = MappedFile::open(writeFile("empty.bin", ""));
        QVERIFY(f.ok());
        ByteRange all(*f);
        QCOMPARE(all.size(), std::uint64_t(0));
        QVERIFY(!all.read<std::uint8_t>(0).ok());
    }
    void missingFileAndDirectory()
    {
        auto f = MappedFile::open(m_dir.filePath("nope").toStdString());
        QVERIFY(!f.ok());
        QCOMPARE(int(f.error().code), int(ErrorCode::Io));
        QVERIFY(!MappedFile::open(m_dir.path().toStdString()).ok());
    }
    void viewOutlivesFileHandle()
    {
        ByteRange sub;
        {
            auto f = MappedFile::open(writeFile("keep.bin", "0123456789"));
            sub = *ByteRange(*f).slice(5, 5);
        }
        QCOMPARE(std::string(sub.view()), std::string("56789"));
    }
};

QTEST_GUILESS_MAIN(TestMappedFile)
#include "tst_mapped_file.moc"
