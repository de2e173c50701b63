#include "io/torch_bin.h"

#include "io/checkpoint.h"
#include "io/pickle.h"
#include "io_test_util.h"

#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;

namespace {

const std::string kFixtures = QB_TESTS_DIR "/io/fixtures/";

QJsonObject expected()
{
    QFile f(QString::fromStdString(kFixtures + "expected.json"));
    if (!f.open(QIODevice::ReadOnly)) qFatal("cannot read expected.json");
    return QJsonDocument::fromJson(f.readAll()).object();
}

bool close(double a, double b) { return std::abs(a - b) <= 1e-12 * std::max(1.0, std::abs(b)); }

// Compares one tensor with its torch-recorded description; returns "" or what differs.
std::string check(const TensorInfo& t, const QJsonObject& e)
{
    std::vector<std::int64_t> shape;
    for (const auto& d : e.value("shape").toArray())
        shape.push_back(d.toInteger());
    if (t.shape != shape) return t.name + ": shape " + t.shapeString();
    if (dtypeName(t.dtype) != e.value("dtype").toString().toStdString())
        return t.name + ": dtype " + dtypeName(t.dtype);
    std::vector<float> v(std::size_t(t.numel()));
    auto st = io::readTensorF32(t, v.data());
    if (!st.ok()) return st.error().toString();
    double sum = 0, wsum = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
        sum += double(v[i]);
        wsum += double(i + 1) * double(v[i]);
    }
    if (!close(sum, e.value("sum").toDouble())) return t.name + ": sum " + std::to_string(sum);
    if (!close(wsum, e.value("wsum").toDouble())) return t.name + ": wsum " + std::to_string(wsum);
    const QJsonArray values = e.contains("values") ? e.value("values").toArray() : e.value("first").toArray();
    for (qsizetype i = 0; i < values.size(); ++i)
        if (v[std::size_t(i)] != float(values[i].toDouble()))
            return t.name + ": element " + std::to_string(i) + " is " + std::to_string(v[std::size_t(i)]);
    return {};
}

// A pickle stream shaped like torch 1.13's for `n` scalar views of one FloatStorage,
// batched into SETITEMS runs of at most 1000 as pickle does.
template <std::size_t N>
std::string lit(const char (&s)[N])
{
    return std::string(s, N - 1);
}

std::string manyItemsPickle(int n)
{
    std::string p = "\x80\x02";
    p += lit("ccollections\nOrderedDict\nq\x00)R"); // memo 0 = OrderedDict
    auto u32 = [](std::uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
    auto str = [&](const std::string& s) {
        std::string out = "X";
        out += u32(std::uint32_t(s.size()));
        out += s;
        return out;
    };
    for (int i = 0; i < n; ++i) {
        if (i % 1000 == 0) p += "(";
        p += str("m." + std::to_string(i));
        p += i == 0 ? lit("ctorch._utils\n_rebuild_tensor_v2\nq\x01") : std::string("h\x01", 2);
        p += "((" + str("storage");
        p += i == 0 ? lit("ctorch\nFloatStorage\nq\x02") : std::string("h\x02", 2);
        p += str("0");
        p += str("cpu");
        p += lit("M\xf4\x01tQ"); // numel 500
        p += 'J';
        p += u32(std::uint32_t(i % 500)); // storage offset
        p += lit("))\x89h\x00)RtR");      // size (), stride (), False, OrderedDict(), build
        if (i % 1000 == 999 || i == n - 1) p += "u";
    }
    return p + ".";
}

} // namespace

class TestTorchBin : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;
    QJsonObject m_expected = expected();

    void compareFile(const std::vector<TensorInfo>& tensors, const QString& key, bool allNamed = true)
    {
        const QJsonObject e = m_expected.value(key).toObject();
        QVERIFY2(!e.isEmpty(), qPrintable(key));
        std::size_t seen = 0;
        for (const TensorInfo& t : tensors) {
            const QJsonObject d = e.value(QString::fromStdString(t.name)).toObject();
            QVERIFY2(!d.isEmpty(), t.name.c_str());
            const std::string diff = check(t, d);
            QVERIFY2(diff.empty(), diff.c_str());
            ++seen;
        }
        if (allNamed) QCOMPARE(qsizetype(seen), e.size());
    }

private Q_SLOTS:
    void llamaDirectoryF32()
    {
        auto ck = io::openCheckpoint(kFixtures + "llama_f32");
        QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
        QCOMPARE(int(ck->format), int(io::CheckpointFormat::PytorchBin));
        QCOMPARE(ck->config.numHiddenLayers, std::int64_t(2));
        QCOMPARE(ck->tensors.size(), std::size_t(21));
        QCOMPARE(ck->warnings.size(), std::size_t(1));
        QVERIFY(ck->warnings[0].find("inv_freq") != std::string::npos);
        compareFile(ck->tensors, "llama_f32/pytorch_model.bin", false);
        QVERIFY(ck->tensors[0].bytes.path().find("pytorch_model.bin") != std::string::npos); // a view of the file
    }
    void llamaHalfTypes_data()
    {
        QTest::addColumn<QString>("file");
        QTest::newRow("F16") << "llama_f16.bin";
        QTest::newRow("BF16") << "llama_bf16.bin";
    }
    void llamaHalfTypes()
    {
        QFETCH(QString, file);
        auto r = io::readTorchBinFile(kFixtures + file.toStdString());
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QCOMPARE(r->tensors.size(), std::size_t(21));
        QVERIFY(r->warnings.empty());
        compareFile(r->tensors, file);
    }
    void sharded()
    {
        auto ck = io::openCheckpoint(kFixtures + "llama_sharded/pytorch_model.bin.index.json");
        QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
        QCOMPARE(ck->files.size(), std::size_t(2));
        QCOMPARE(ck->tensors.size(), std::size_t(21));
        compareFile(ck->tensors, "llama_sharded");
        auto dir = io::openCheckpoint(kFixtures + "llama_sharded");
        QVERIFY(dir.ok());
        QCOMPARE(int(dir->format), int(io::CheckpointFormat::PytorchBin));
    }
    void edgeCases()
    {
        auto r = io::readTorchBinFile(kFixtures + "edge_cases.bin");
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        compareFile(r->tensors, "edge_cases.bin");
        auto find = [&](const std::string& n) {
            return *std::find_if(r->tensors.begin(), r->tensors.end(), [&](auto& t) { return t.name == n; });
        };
        // Contiguous views stay inside the mapping; strided ones were copied once.
        QCOMPARE(find("shared_a").bytes.file(), find("shared_row").bytes.file());
        QCOMPARE(find("shared_row").bytes.fileOffset(), find("shared_a").bytes.fileOffset() + 12);
        QVERIFY(find("transposed").bytes.file() != find("shared_a").bytes.file());
        QCOMPARE(r->warnings.size(),
                 std::size_t(3)); // transposed, half_strided, bf16_offset_t copied
    }
    void moreThanThousandItems()
    {
        const std::string p = manyItemsPickle(1500);
        const auto path = m_dir.filePath("many.pkl").toStdString();
        qbtest::writeFile(path, p);
        auto r = io::detail::unpickleTorch(ByteRange(*MappedFile::open(path)), "many.pkl");
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        const auto& dict = (*r)->dict;
        QCOMPARE(dict.size(), std::size_t(1500));
        QCOMPARE(dict[1234].first->s, std::string("m.1234"));
        QCOMPARE(dict[1234].second->storageOffset, std::int64_t(234));
        QCOMPARE(dict[1234].second->storage->storageKey, std::string("0")); // one archive member
        QCOMPARE(dict[7].second->storage->storageNumel, std::int64_t(500));
    }
    void disallowedGlobal()
    {
        auto r = io::readTorchBinFile(kFixtures + "evil.bin");
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::Unsupported));
        QVERIFY2(r.error().toString().find("disallowed pickle global \"__builtin__.print\"") != std::string::npos,
                 r.error().toString().c_str());
        auto ck = io::openCheckpoint(kFixtures + "evil.bin");
        QVERIFY(!ck.ok());
    }
    void truncated()
    {
        QFile f(QString::fromStdString(kFixtures + "llama_f16.bin"));
        QVERIFY(f.open(QIODevice::ReadOnly));
        const QByteArray all = f.readAll();
        for (const qsizetype keep : {all.size() / 2, all.size() - 30, qsizetype(10)}) {
            const auto path = m_dir.filePath(QString("trunc%1.bin").arg(keep)).toStdString();
            qbtest::writeFile(path, all.left(keep).toStdString());
            auto r = io::readTorchBinFile(path);
            QVERIFY2(!r.ok(), std::to_string(keep).c_str());
            QVERIFY(r.error().toString().find(path) != std::string::npos);
        }
        // Not a zip at all.
        const auto junk = m_dir.filePath("junk.bin").toStdString();
        qbtest::writeFile(junk, std::string(64, 'x'));
        auto j = io::readTorchBinFile(junk);
        QVERIFY(!j.ok());
        QVERIFY(j.error().toString().find("not a zip") != std::string::npos);
    }
    void compressedMemberRefused()
    {
        QFile f(QString::fromStdString(kFixtures + "llama_f16.bin"));
        QVERIFY(f.open(QIODevice::ReadOnly));
        QByteArray all = f.readAll();
        const qsizetype cd = all.indexOf(QByteArray("PK\x01\x02", 4)); // first central entry: data.pkl
        QVERIFY(cd > 0);
        all[cd + 10] = 8; // method: deflate
        const auto path = m_dir.filePath("deflated.bin").toStdString();
        qbtest::writeFile(path, all.toStdString());
        auto r = io::readTorchBinFile(path);
        QVERIFY(!r.ok());
        QCOMPARE(int(r.error().code), int(ErrorCode::Unsupported));
        QVERIFY2(r.error().toString().find("is compressed") != std::string::npos, r.error().toString().c_str());
    }
    void corruptPickleFailsCrcCheck()
    {
        QFile f(QString::fromStdString(kFixtures + "llama_f16.bin"));
        QVERIFY(f.open(QIODevice::ReadOnly));
        QByteArray all = f.readAll();
        // The pickle's first bytes after PROTO 2 ("\x80\x02"): flip one inside the member data.
        const qsizetype at = all.indexOf(QByteArray("\x80\x02", 2));
        QVERIFY(at > 0);
        all[at + 5] = char(all[at + 5] ^ 0x01);
        const auto path = m_dir.filePath("crc.bin").toStdString();
        qbtest::writeFile(path, all.toStdString());
        auto r = io::readTorchBinFile(path);
        QVERIFY(!r.ok());
        QVERIFY2(r.error().toString().find("corrupt") != std::string::npos, r.error().toString().c_str());
    }
    void badPickle()
    {
        const auto path = m_dir.filePath("bad.pkl").toStdString();
        qbtest::writeFile(path, std::string("\x80\x02(cos\nsystem\n", 14));
        auto r = io::detail::unpickleTorch(ByteRange(*MappedFile::open(path)), "bad.pkl");
        QVERIFY(!r.ok());
        QVERIFY(r.error().toString().find("os.system") != std::string::npos);
        qbtest::writeFile(path, "\x80\x02}(X");
        QVERIFY(!io::detail::unpickleTorch(ByteRange(*MappedFile::open(path)), "bad.pkl").ok());
        qbtest::writeFile(path, "\x80\x02\xff");
        auto op = io::detail::unpickleTorch(ByteRange(*MappedFile::open(path)), "bad.pkl");
        QVERIFY(!op.ok());
        QVERIFY(op.error().toString().find("opcode 0xff") != std::string::npos);
    }
};

QTEST_GUILESS_MAIN(TestTorchBin)
#include "tst_torch_bin.moc"
