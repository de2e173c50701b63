// safetensors writer (FORMATS.md §1.5: ordering, padded header, __metadata__) and the
// fake-quantized HF export: dtype choice (F16 only when exact), weights identical after our
// reader, perplexity equal to the fake-quantized model's, atomic replacement and the CLI.

#include "export/atomic_file.h"
#include "export/hf_directory.h"
#include "export/safetensors_export.h"
#include "model/forward.h"
#include "quant_test_util.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;

class TestSafetensorsExport : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(1); }
    void workedExampleBytes();
    void referenceOrdering();
    void fakeQuantRoundTripPerplexity();
    void f16WhenExact();
    void cancelAndWriteErrorLeaveTargetUntouched();
};

// FORMATS.md §1.1: one F16 [2,3] tensor -> 88-byte header, file size 108.
void TestSafetensorsExport::workedExampleBytes()
{
    std::vector<std::uint8_t> data(12);
    for (int i = 0; i < 6; ++i) {
        const std::uint16_t h = f32ToF16(float(i));
        data[std::size_t(2 * i)] = std::uint8_t(h & 0xff);
        data[std::size_t(2 * i + 1)] = std::uint8_t(h >> 8);
    }
    auto bytes = exporting::safetensorsToBytes({exporting::safetensorsTensorFromBytes("w", DType::F16, {2, 3}, data)});
    QVERIFY(bytes.ok());
    QCOMPARE(bytes->size(), std::size_t(108));
    QCOMPARE(int((*bytes)[0]), 88);
    const std::string header(bytes->begin() + 8, bytes->begin() + 96);
    QCOMPARE(
        header,
        std::string(R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}})"));
    QTemporaryDir dir;
    const std::string path = dir.filePath("w.safetensors").toStdString();
    QVERIFY(
        exporting::writeSafetensorsFile(path, {exporting::safetensorsTensorFromBytes("w", DType::F16, {2, 3}, data)})
            .ok());
    auto back = io::readSafetensorsFile(path);
    QVERIFY(back.ok());
    QCOMPARE(back->front().shape, (std::vector<std::int64_t>{2, 3}));
}

// Widest dtype first, then by name; header padded with spaces to a multiple of 8.
void TestSafetensorsExport::referenceOrdering()
{
    std::vector<exporting::SafetensorsTensor> ts;
    ts.push_back(exporting::safetensorsTensorFromBytes("b", DType::F16, {1}, std::vector<std::uint8_t>(2)));
    ts.push_back(exporting::safetensorsTensorFromBytes("a", DType::F16, {1}, std::vector<std::uint8_t>(2)));
    ts.push_back(exporting::safetensorsTensorFromBytes("z", DType::F32, {1}, std::vector<std::uint8_t>(4)));
    ts.push_back(exporting::safetensorsTensorFromBytes("q", DType::I32, {1}, std::vector<std::uint8_t>(4)));
    ts.push_back(exporting::safetensorsTensorFromBytes("c", DType::U8, {3}, std::vector<std::uint8_t>(3)));
    const auto order = exporting::safetensorsOrder(ts);
    std::string names;
    for (auto i : order)
        names += ts[i].name;
    QCOMPARE(names, std::string("zqabc"));
    auto bytes = exporting::safetensorsToBytes(ts);
    QVERIFY(bytes.ok());
    std::uint64_t n = 0;
    for (int i = 0; i < 8; ++i)
        n |= std::uint64_t((*bytes)[std::size_t(i)]) << (8 * i);
    QCOMPARE(n % 8, std::uint64_t(0));
    QCOMPARE(bytes->size(), std::size_t(8 + n + 4 + 4 + 2 + 2 + 3));
}

// GPTQ-quantized demo: the directory loads in our reader with the fake-quantized weights bit for
// bit, and its perplexity equals the fake-quantized model's.
void TestSafetensorsExport::fakeQuantRoundTripPerplexity()
{
    auto run = qbtest::quickQuantize(quant::Method::Gptq, 4, 32);
    QTemporaryDir dir;
    const QString out = dir.filePath("fq");
    exporting::SafetensorsExportOptions o;
    o.gridFor = run->lookup();
    auto r = exporting::exportFakeQuantSafetensors(run->ck, out.toStdString(), o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QVERIFY(r->verify.ok);
    QCOMPARE(r->gridDtype, DType::F32); // GPTQ scales are doubles: F16 cannot hold the values
    QVERIFY(!r->dtypeReason.empty());
    QVERIFY(QFile::exists(out + "/tokenizer.json"));
    auto cfg = io::parseJson(qbtest::slurpFile(out + "/config.json"));
    QCOMPARE(cfg->find("torch_dtype")->asString(), std::string("float32"));
    auto ck = io::openCheckpoint(out.toStdString());
    QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
    auto m = pipeline::loadModel(*ck);
    QVERIFY(m.ok());
    const model::Model& fake = *run->result->model;
    for (int l = 0; l < fake.numLayers(); ++l)
        for (auto lin : model::kAllLinears)
            QVERIFY2((*m)->layer(l)->weight(lin) == fake.layer(l)->weight(lin), model::tensorName(l, lin).c_str());
    QVERIFY((*m)->embedding() == fake.embedding());
    const double pf = qbtest::modelPerplexity(fake), pe = qbtest::modelPerplexity(**m);
    qInfo("perplexity: fake-quant %.9f, safetensors export re-read %.9f", pf, pe);
    QCOMPARE(pe, pf);
}

// Grids whose values F16 holds exactly are stored as F16 (other tensors keep their dtype).
void TestSafetensorsExport::f16WhenExact()
{
    const auto ck = qbtest::demoCheckpoint();
    std::map<std::string, std::unique_ptr<quant::QuantizedRows>> grids;
    for (const TensorInfo& t : ck.tensors) {
        if (t.name.find("_proj") == std::string::npos) continue;
        quant::MatrixXfR w(t.shape[0], t.shape[1]);
        QVERIFY(io::readTensorF32(t, w.data()).ok());
        const int groups = int(w.cols()) / 32;
        quant::MatrixXdR s = quant::MatrixXdR::Constant(w.rows(), groups, 1.0 / 64),
                         z = quant::MatrixXdR::Constant(w.rows(), groups, -8);
        auto q = quant::quantizeRowsUniform(w, 4, s, z, quant::groupIndexContiguous(32, int(w.cols())));
        QVERIFY(q.ok());
        grids[t.name] = std::make_unique<quant::QuantizedRows>(std::move(*q));
    }
    exporting::SafetensorsExportOptions o;
    o.gridFor = [&](const std::string& n) -> quant::StoredGridPtr {
        auto it = grids.find(n);
        return it == grids.end() ? nullptr : quant::storeGrid(*it->second);
    };
    QTemporaryDir dir;
    auto r = exporting::exportFakeQuantSafetensors(ck, dir.filePath("h").toStdString(), o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QCOMPARE(r->gridDtype, DType::F16);
    auto ts = io::readSafetensorsFile(dir.filePath("h/model.safetensors").toStdString());
    for (const auto& t : *ts) {
        QCOMPARE(t.dtype, grids.count(t.name) ? DType::F16 : DType::F32);
        if (!grids.count(t.name)) continue;
        quant::MatrixXfR back(t.shape[0], t.shape[1]);
        QVERIFY(io::readTensorF32(t, back.data()).ok());
        QVERIFY(back == quant::dequantizeRowsUniform(*grids[t.name]));
    }
}

void TestSafetensorsExport::cancelAndWriteErrorLeaveTargetUntouched()
{
    const auto ck = qbtest::demoCheckpoint();
    QTemporaryDir dir;
    const QString out = dir.filePath("t");
    QVERIFY(QDir().mkpath(out));
    QVERIFY(exporting::writeSmallFile((out + "/old.txt").toStdString(), "old contents").ok());
    RunContext ctx([&ctx](const Progress& p) {
        if (p.stage == "write" && p.total > 0 && p.done * 2 >= p.total) ctx.requestCancel();
    });
    auto c = exporting::exportFakeQuantSafetensors(ck, out.toStdString(), {}, &ctx);
    QVERIFY(!c.ok());
    QCOMPARE(c.error().code, ErrorCode::Cancelled);
    QCOMPARE(qbtest::slurpFile(out + "/old.txt"), std::string("old contents"));
    QVERIFY(qbtest::leftoversIn(dir.path()).isEmpty());
    exporting::SafetensorsExportOptions o;
    o.failAfterBytesForTesting = 2'000'000;
    auto w = exporting::exportFakeQuantSafetensors(ck, out.toStdString(), o);
    QVERIFY(!w.ok());
    QCOMPARE(w.error().code, ErrorCode::Io);
    QVERIFY(w.error().toString().find("write failed") != std::string::npos);
    QCOMPARE(qbtest::slurpFile(out + "/old.txt"), std::string("old contents"));
    QVERIFY(qbtest::leftoversIn(dir.path()).isEmpty());
    auto s = exporting::StagingDirectory::create(out.toStdString(), std::uint64_t(1) << 60);
    QVERIFY(!s.ok());
    QVERIFY(s.error().message.find("not enough free disk space") != std::string::npos);
}

QTEST_GUILESS_MAIN(TestSafetensorsExport)
#include "tst_safetensors_export.moc"
