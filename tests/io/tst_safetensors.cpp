#include "io/safetensors.h"

#include "io/checkpoint.h"
#include "io_test_util.h"

#include <QTemporaryDir>
#include <QTest>

using namespace qb;
using namespace qbtest;

class TestSafetensors : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;

    std::string path(const std::string& name) { return m_dir.filePath(QString::fromStdString(name)).toStdString(); }
    std::string write(const std::string& name, const std::string& bytes)
    {
        const auto p = path(name);
        writeFile(p, bytes);
        return p;
    }
    // Reads a file expected to fail; returns the error's full text.
    std::string failure(const std::string& name, const std::string& bytes, ErrorCode code)
    {
        auto r = io::readSafetensorsFile(write(name, bytes));
        if (r.ok()) {
            QTest::qFail("reader accepted a bad file", __FILE__, __LINE__);
            return {};
        }
        const std::string text = r.error().toString();
        if (r.error().code != code) qWarning("unexpected code for: %s", text.c_str());
        [&] { QCOMPARE(int(r.error().code), int(code)); }();
        return text;
    }
    static bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

private Q_SLOTS:
    void valuesBitExact_data()
    {
        QTest::addColumn<int>("dtype");
        QTest::newRow("F32") << int(DType::F32);
        QTest::newRow("F16") << int(DType::F16);
        QTest::newRow("BF16") << int(DType::BF16);
    }
    void valuesBitExact()
    {
        QFETCH(int, dtype);
        const auto t = DType(dtype);
        std::vector<float> v = values(24, 7);
        v[0] = 0.0f;
        v[1] = -0.0f;
        v[2] = 65504.0f;
        v[3] = 1e-7f; // subnormal in F16
        const std::string bytes = encode(v, t);
        const auto p =
            write(std::string("v_") + dtypeName(t) + ".safetensors",
                  safetensorsBytes({{"a", "I32", {2}, std::string(8, '\x01')}, {"w", dtypeName(t), {4, 6}, bytes}}));
        auto r = io::readSafetensorsFile(p);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QCOMPARE(r->size(), std::size_t(2));
        const TensorInfo& w = (*r)[1];
        QCOMPARE(w.name, std::string("w"));
        QCOMPARE(w.shape, (std::vector<std::int64_t>{4, 6}));
        QCOMPARE(int(w.dtype), dtype);
        QCOMPARE(std::string(w.bytes.view()), bytes); // a view of the file, not a copy
        std::vector<float> got(24), expect(24);
        QVERIFY(io::readTensorF32(w, got.data()).ok());
        QVERIFY(convertToF32(t, bytes.data(), expect.data(), 24).ok());
        QCOMPARE(std::memcmp(got.data(), expect.data(), 24 * 4), 0);
        if (t == DType::F32) QCOMPARE(std::memcmp(got.data(), v.data(), 24 * 4), 0);
    }
    void emptyAndScalarTensors()
    {
        std::string h = R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},)"
                        R"("s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
        auto r = io::readSafetensorsFile(write("es.safetensors", safetensorsRaw(h, std::string(4, '\0'))));
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QCOMPARE(r->size(), std::size_t(2));
    }
    void sharded()
    {
        auto all = tinyLlamaTensors(DType::BF16);
        std::vector<RawTensor> a(all.begin(), all.begin() + 5), b(all.begin() + 5, all.end());
        QDir().mkpath(m_dir.filePath("sharded"));
        write("sharded/model-00001-of-00002.safetensors", safetensorsBytes(a));
        write("sharded/model-00002-of-00002.safetensors", safetensorsBytes(b));
        std::string map;
        for (const auto& t : a) {
            if (!map.empty()) map += ',';
            map += "\"" + t.name + "\":\"model-00001-of-00002.safetensors\"";
        }
        for (const auto& t : b)
            map += ",\"" + t.name + "\":\"model-00002-of-00002.safetensors\"";
        const auto idx = write("sharded/model.safetensors.index.json",
                               "{\"metadata\":{\"total_size\":1},\"weight_map\":{" + map + "}}");
        auto r = io::readSafetensorsIndex(idx);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        QCOMPARE(r->tensors.size(), all.size());
        QCOMPARE(r->files.size(), std::size_t(2));
        for (const auto& t : all) {
            auto it = std::find_if(r->tensors.begin(), r->tensors.end(),
                                   [&](const TensorInfo& x) { return x.name == t.name; });
            QVERIFY(it != r->tensors.end());
            QCOMPARE(std::string(it->bytes.view()), t.bytes);
        }
        // The index names a tensor no shard holds.
        write("sharded/bad.index.json", "{\"weight_map\":{\"nope\":\"model-00001-of-00002.safetensors\"}}");
        auto bad = io::readSafetensorsIndex(path("sharded/bad.index.json"));
        QVERIFY(!bad.ok());
        QVERIFY(has(bad.error().toString(), "nope"));
    }
    void unsupportedDtype()
    {
        const std::string h = R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})";
        const auto e = failure("f8.safetensors", safetensorsRaw(h, std::string(4, '\0')), ErrorCode::Unsupported);
        QVERIFY(has(e, "F8_E4M3"));
        QVERIFY(has(e, "tensor w"));
    }
    void truncated()
    {
        const std::string full = safetensorsBytes({{"w", "F32", {4}, std::string(16, '\x02')}});
        const auto e = failure("trunc.safetensors", full.substr(0, full.size() - 3), ErrorCode::OutOfRange);
        QVERIFY(has(e, "tensor w"));
        QVERIFY(has(e, "truncated"));
    }
    void headerLengthPastEnd()
    {
        const std::string h = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
        std::string bytes = u64le(4000) + h + std::string(4, '\0');
        const auto e = failure("hlen.safetensors", bytes, ErrorCode::Format);
        QVERIFY(has(e, "header length 4000"));
        QVERIFY(has(e, "past the end"));
        failure("short.safetensors", "abc", ErrorCode::Format);
    }
    void headerTooLarge()
    {
        const auto e = failure("huge.safetensors", u64le(100'000'001) + "{}", ErrorCode::Format);
        QVERIFY(has(e, "100000000"));
    }
    void malformedJson()
    {
        const auto e = failure("json.safetensors", safetensorsRaw(R"({"w":{"dtype":)", ""), ErrorCode::Format);
        QVERIFY(has(e, "not valid JSON"));
    }
    void overlappingOffsets()
    {
        const std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
        const auto e = failure("overlap.safetensors", safetensorsRaw(h, std::string(12, '\0')), ErrorCode::Format);
        QVERIFY(has(e, "overlaps tensor a"));
        QVERIFY(has(e, "tensor b, buffer offset 4"));
    }
    void gapBetweenTensors()
    {
        const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
        const auto e = failure("gap.safetensors", safetensorsRaw(h, std::string(12, '\0')), ErrorCode::Format);
        QVERIFY(has(e, "gap of 4 bytes"));
        QVERIFY(has(e, "tensor b"));
    }
    void firstTensorNotAtZero()
    {
        const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
        const auto e = failure("start.safetensors", safetensorsRaw(h, std::string(8, '\0')), ErrorCode::Format);
        QVERIFY(has(e, "gap of 4 bytes"));
    }
    void trailingBytes()
    {
        const std::string bytes = safetensorsBytes({{"w", "F32", {1}, std::string(4, '\0')}}) + "junk";
        const auto e = failure("trail.safetensors", bytes, ErrorCode::Format);
        QVERIFY(has(e, "4 trailing bytes"));
        QVERIFY(has(e, "(w)"));
    }
    void sizeMismatch()
    {
        const std::string h = R"({"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,8]}})";
        const auto e = failure("size.safetensors", safetensorsRaw(h, std::string(8, '\0')), ErrorCode::Shape);
        QVERIFY(has(e, "needs 12 bytes"));
        QVERIFY(has(e, "tensor w"));
    }
    void badFields()
    {
        failure("neg.safetensors", safetensorsRaw(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", ""),
                ErrorCode::Format);
        failure("offs.safetensors", safetensorsRaw(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}})", "1234"),
                ErrorCode::Format);
        failure("meta.safetensors", safetensorsRaw(R"({"__metadata__":{"format":1}})", ""), ErrorCode::Format);
        failure("array.safetensors", safetensorsRaw(R"([1,2])", ""), ErrorCode::Format);
    }
};

QTEST_GUILESS_MAIN(TestSafetensors)
#include "tst_safetensors.moc"
