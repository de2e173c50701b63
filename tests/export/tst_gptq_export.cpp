// GPTQ checkpoint export (FORMATS.md §5): packing for 2/3/4/8 bits checked with an independent
// unpacker, grids the format cannot hold (real zeros) refused or rounded, mixed bits as per-module
// `dynamic` overrides, the
// quantization config, atomic directory replacement (cancel, write error, disk space) and the CLI.

#include "export/atomic_file.h"
#include "export/gptq_export.h"
#include "export/hf_directory.h"
#include "model/forward.h"
#include "quant_test_util.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;

namespace {

std::map<std::string, const TensorInfo*> byName(const std::vector<TensorInfo>& ts)
{
    std::map<std::string, const TensorInfo*> m;
    for (const auto& t : ts)
        m[t.name] = &t;
    return m;
}

io::JsonValue readJson(const QString& path)
{
    auto j = io::parseJson(qbtest::slurpFile(path), path.toStdString());
    if (!j) qFatal("json %s", qPrintable(path));
    return *j;
}

} // namespace

class TestGptqExport : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(1); }
    void packingRoundTrip_data();
    void packingRoundTrip();
    void symmetricZerosArePacked();
    void realZeroRefusedOrRounded();
    void mixedBitsWrittenAsDynamicOverrides();
    void quantizeJobGridsRecovered();
    void cancelHalfwayLeavesTargetUntouched();
    void writeErrorLeavesTargetUntouched();
    void diskSpaceCheck();
};

void TestGptqExport::packingRoundTrip_data()
{
    QTest::addColumn<int>("bits");
    QTest::newRow("2-bit") << 2;
    QTest::newRow("3-bit") << 3;
    QTest::newRow("4-bit") << 4;
    QTest::newRow("8-bit") << 8;
}

// Unpacked independently, every quantized linear equals the grid's dequantized values bit for bit;
// unquantized tensors are copied unchanged; the config says what a runtime needs.
void TestGptqExport::packingRoundTrip()
{
    QFETCH(int, bits);
    const auto ck = qbtest::demoCheckpoint();
    const auto grids = qbtest::makeGrids(ck, [bits](const std::string&) { return bits; }, false);
    QTemporaryDir dir;
    const QString out = dir.filePath("gptq");
    exporting::GptqExportOptions o;
    o.gridFor = grids.lookup();
    auto r = exporting::exportGptq(ck, out.toStdString(), o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QCOMPARE(r->analysis.bits, bits);
    QCOMPARE(r->analysis.groupSize, 32);
    QVERIFY(!r->analysis.needsRounding());
    QVERIFY(r->verify.ok);
    auto ts = io::readSafetensorsFile((out + "/model.safetensors").toStdString());
    QVERIFY(ts.ok());
    const auto by = byName(*ts);
    for (const auto& [name, g] : grids.grids) {
        const std::string prefix = name.substr(0, name.size() - 7);
        QVERIFY2(by.count(prefix + ".qweight") && !by.count(name), name.c_str());
        QCOMPARE(by.at(prefix + ".qweight")->shape,
                 (std::vector<std::int64_t>{g->codes.cols() * bits / 32, g->codes.rows()}));
        QCOMPARE(by.at(prefix + ".qzeros")->shape,
                 (std::vector<std::int64_t>{g->codes.cols() / 32, g->codes.rows() * bits / 32}));
        QCOMPARE(by.at(prefix + ".scales")->dtype, DType::F16);
        const auto u = qbtest::unpackGptq(by, prefix, bits);
        const quant::MatrixXfR expect = quant::dequantizeRowsUniform(*g);
        QVERIFY2(u.w == expect, name.c_str());
    }
    // Norms are copied unchanged (F32); token embeddings and lm_head are written as F16.
    const TensorInfo* norm = ck.find("model.norm.weight");
    QCOMPARE(by.at("model.norm.weight")->dtype, DType::F32);
    QVERIFY(std::equal(norm->bytes.data(), norm->bytes.data() + norm->bytes.size(),
                       by.at("model.norm.weight")->bytes.data()));
    for (const char* plain : {"model.embed_tokens.weight", "lm_head.weight"}) {
        QVERIFY(by.count(plain));
        QCOMPARE(by.at(plain)->dtype, DType::F16);
        std::vector<float> src(std::size_t(ck.find(plain)->numel())), got(src.size());
        QVERIFY(io::readTensorF32(*ck.find(plain), src.data()).ok());
        QVERIFY(io::readTensorF32(*by.at(plain), got.data()).ok());
        for (std::size_t i = 0; i < src.size(); ++i)
            QCOMPARE(got[i], f16ToF32(f32ToF16(src[i])));
    }
    const auto cfg = readJson(out + "/config.json");
    const io::JsonValue* qc = cfg.find("quantization_config");
    QVERIFY(qc);
    QCOMPARE(qc->find("quant_method")->asString(), std::string("gptq"));
    QCOMPARE(int(qc->find("bits")->asInteger()), bits);
    QCOMPARE(int(qc->find("group_size")->asInteger()), 32);
    QCOMPARE(qc->find("desc_act")->asBool(), false);
    QCOMPARE(qc->find("checkpoint_format")->asString(), std::string("gptq"));
    QCOMPARE(readJson(out + "/quantize_config.json").find("bits")->asInteger(), std::int64_t(bits));
    QVERIFY(QFile::exists(out + "/tokenizer.json"));
    auto v = exporting::verifyGptqDirectory(out.toStdString());
    QVERIFY(v.ok() && v->ok);
}

// Symmetric 4-bit: every qzeros word is 0x77777777 (Z = 8 stored as 7) and sym = true.
void TestGptqExport::symmetricZerosArePacked()
{
    const auto ck = qbtest::demoCheckpoint();
    const auto grids = qbtest::makeGrids(ck, [](const std::string&) { return 4; }, true);
    QTemporaryDir dir;
    exporting::GptqExportOptions o;
    o.gridFor = grids.lookup();
    auto r = exporting::exportGptq(ck, dir.filePath("s").toStdString(), o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QVERIFY(r->analysis.sym);
    auto ts = io::readSafetensorsFile(dir.filePath("s/model.safetensors").toStdString());
    const auto by = byName(*ts);
    const TensorInfo& qz = *by.at("model.layers.0.mlp.down_proj.qzeros");
    for (std::int64_t i = 0; i < qz.numel(); ++i)
        QCOMPARE(qbtest::wordAt(qz, std::size_t(i)), 0x77777777u);
}

// NeUQI-style real zero-points: refused by default with a clear message; rounded on request,
// with the reported max abs change bounding the actual change.
void TestGptqExport::realZeroRefusedOrRounded()
{
    const auto ck = qbtest::demoCheckpoint();
    const auto grids = qbtest::makeGrids(ck, [](const std::string&) { return 4; }, false, -0.37);
    QTemporaryDir dir;
    const QString out = dir.filePath("rz");
    exporting::GptqExportOptions o;
    o.gridFor = grids.lookup();
    auto refused = exporting::exportGptq(ck, out.toStdString(), o);
    QVERIFY(!refused.ok());
    QVERIFY2(refused.error().message.find("cannot hold") != std::string::npos, refused.error().message.c_str());
    QVERIFY(!QFileInfo::exists(out));
    QVERIFY(qbtest::leftoversIn(dir.path()).isEmpty());
    auto an = exporting::analyzeGptqGrids(ck, o.gridFor);
    QVERIFY(an.ok() && an->needsRounding());
    QVERIFY(an->summary().find("real-zero") != std::string::npos);
    o.policy = exporting::GptqGridPolicy::Round;
    auto r = exporting::exportGptq(ck, out.toStdString(), o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QVERIFY(r->analysis.maxAbsChange > 0);
    auto ts = io::readSafetensorsFile((out + "/model.safetensors").toStdString());
    const auto by = byName(*ts);
    double worst = 0;
    for (const auto& [name, g] : grids.grids) {
        const auto u = qbtest::unpackGptq(by, name.substr(0, name.size() - 7), 4);
        worst = std::max(worst, double((u.w - quant::dequantizeRowsUniform(*g)).cwiseAbs().maxCoeff()));
    }
    qInfo("real zeros rounded: reported max abs change %.6g, measured %.6g", r->analysis.maxAbsChange, worst);
    QVERIFY(worst > 0);
    QVERIFY(worst <= r->analysis.maxAbsChange * (1 + 1e-6) + 1e-12);
}

// Mixed bits across tensors: every module keeps its own width; the most common one (4 bits: 4 of
// 7 linears per layer) is the config's, the MLP's 2 bits are per-module `dynamic` overrides with
// exact names; unpacked at its own width every module equals its grid.
void TestGptqExport::mixedBitsWrittenAsDynamicOverrides()
{
    const auto ck = qbtest::demoCheckpoint();
    const auto grids =
        qbtest::makeGrids(ck, [](const std::string& n) { return n.find("mlp") != std::string::npos ? 2 : 4; }, false);
    QTemporaryDir dir;
    exporting::GptqExportOptions o;
    o.gridFor = grids.lookup();
    auto r = exporting::exportGptq(ck, dir.filePath("m").toStdString(), o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QCOMPARE(r->analysis.bits, 4);
    QCOMPARE(r->analysis.maxAbsChange, 0.0);
    QCOMPARE(r->analysis.overrides(), std::size_t(3 * ck.config.numHiddenLayers));
    QVERIFY(r->verify.ok);
    const auto cfg = readJson(dir.filePath("m/config.json"));
    const io::JsonValue* dyn = cfg.find("quantization_config")->find("dynamic");
    QVERIFY(dyn && dyn->isObject());
    QCOMPARE(dyn->asObject().size(), std::size_t(3 * ck.config.numHiddenLayers));
    const io::JsonValue* down = dyn->find("+:^model\\.layers\\.1\\.mlp\\.down_proj$");
    QVERIFY(down);
    QCOMPARE(down->find("bits")->asInteger(), std::int64_t(2));
    QVERIFY(!down->find("group_size")); // only what differs from the base
    auto ts = io::readSafetensorsFile(dir.filePath("m/model.safetensors").toStdString());
    const auto by = byName(*ts);
    for (const auto& [name, g] : grids.grids) {
        const int bits = name.find("mlp") != std::string::npos ? 2 : 4;
        QVERIFY2(qbtest::unpackGptq(by, name.substr(0, name.size() - 7), bits).w == quant::dequantizeRowsUniform(*g),
                 name.c_str());
    }
}

// A real GPTQ run (asymmetric 4-bit, group 32): the unpacked weights equal the fake-quantized
// model's up to the F16 rounding of the scales, which the report bounds.
void TestGptqExport::quantizeJobGridsRecovered()
{
    auto run = qbtest::quickQuantize(quant::Method::Gptq, 4, 32);
    QTemporaryDir dir;
    exporting::GptqExportOptions o;
    o.gridFor = run->lookup();
    o.policy = exporting::GptqGridPolicy::Round; // min-max zeros may hit 0 (not storable in v1)
    auto r = exporting::exportGptq(run->ck, dir.filePath("q").toStdString(), o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    auto ts = io::readSafetensorsFile(dir.filePath("q/model.safetensors").toStdString());
    const auto by = byName(*ts);
    double worst = 0;
    for (int l = 0; l < run->result->model->numLayers(); ++l)
        for (auto lin : model::kAllLinears) {
            const std::string name = model::tensorName(l, lin);
            const auto u = qbtest::unpackGptq(by, name.substr(0, name.size() - 7), 4);
            const auto& fake = run->result->model->layer(l)->weight(lin);
            worst = std::max(worst, double((u.w - fake).cwiseAbs().maxCoeff()));
        }
    qInfo("GPTQ 4-bit g32 export vs fake-quant: max abs diff %.3g (reported bound %.3g)", worst,
          r->analysis.maxAbsChange);
    QVERIFY(worst <= r->analysis.maxAbsChange * (1 + 1e-6) + 1e-7);
    QVERIFY(worst < 1e-2);
}

void TestGptqExport::cancelHalfwayLeavesTargetUntouched()
{
    const auto ck = qbtest::demoCheckpoint();
    const auto grids = qbtest::makeGrids(ck, [](const std::string&) { return 4; }, false);
    QTemporaryDir dir;
    const QString out = dir.filePath("c");
    QVERIFY(QDir().mkpath(out));
    QVERIFY(exporting::writeSmallFile((out + "/old.txt").toStdString(), "old contents").ok());
    RunContext ctx([&ctx](const Progress& p) {
        if (p.stage == "write" && p.total > 0 && p.done * 2 >= p.total) ctx.requestCancel();
    });
    exporting::GptqExportOptions o;
    o.gridFor = grids.lookup();
    auto r = exporting::exportGptq(ck, out.toStdString(), o, &ctx);
    QVERIFY(!r.ok());
    QCOMPARE(r.error().code, ErrorCode::Cancelled);
    QCOMPARE(qbtest::slurpFile(out + "/old.txt"), std::string("old contents"));
    QCOMPARE(QDir(out).entryList(QDir::Files).size(), 1);
    QVERIFY2(qbtest::leftoversIn(dir.path()).isEmpty(), qPrintable(qbtest::leftoversIn(dir.path()).join(',')));
    // Success replaces the old directory as a whole.
    QVERIFY(exporting::exportGptq(ck, out.toStdString(), o).ok());
    QVERIFY(!QFile::exists(out + "/old.txt"));
    QVERIFY(QFile::exists(out + "/model.safetensors"));
    QVERIFY(qbtest::leftoversIn(dir.path()).isEmpty());
}

void TestGptqExport::writeErrorLeavesTargetUntouched()
{
    const auto ck = qbtest::demoCheckpoint();
    const auto grids = qbtest::makeGrids(ck, [](const std::string&) { return 4; }, false);
    QTemporaryDir dir;
    const QString out = dir.filePath("w");
    QVERIFY(QDir().mkpath(out));
    QVERIFY(exporting::writeSmallFile((out + "/old.txt").toStdString(), "old contents").ok());
    exporting::GptqExportOptions o;
    o.gridFor = grids.lookup();
    o.failAfterBytesForTesting = 1'000'000; // ~2.5 MB file: fails in the middle
    auto r = exporting::exportGptq(ck, out.toStdString(), o);
    QVERIFY(!r.ok());
    QCOMPARE(r.error().code, ErrorCode::Io);
    QVERIFY2(r.error().toString().find("write failed") != std::string::npos, r.error().toString().c_str());
    QCOMPARE(qbtest::slurpFile(out + "/old.txt"), std::string("old contents"));
    QVERIFY(qbtest::leftoversIn(dir.path()).isEmpty());
}

void TestGptqExport::diskSpaceCheck()
{
    QTemporaryDir dir;
    auto s = exporting::StagingDirectory::create(dir.filePath("x").toStdString(), std::uint64_t(1) << 60);
    QVERIFY(!s.ok());
    QVERIFY2(s.error().message.find("not enough free disk space") != std::string::npos, s.error().message.c_str());
    QVERIFY(qbtest::leftoversIn(dir.path()).isEmpty());
}

QTEST_GUILESS_MAIN(TestGptqExport)
#include "tst_gptq_export.moc"
