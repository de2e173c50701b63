// Compact models (issue 12 item 1): weights stay in their stored encoding and the forward pass
// decodes them per tile. Packed views decode exactly what readTensorF32 gives (BF16/F16
// safetensors, GGUF F16/Q8_0/Q4_0/Q4_K with permuted q/k rows); a packed model's logits match its
// F32 copy within a rounding tolerance; a quantize job's compact output model holds its linears
// as codes that decode bit for bit to the solved values and evaluates like the F32 output;
// damaged bytes are an error naming the tensor.

#include "export/gguf_export.h"
#include "export/safetensors_export.h"
#include "model/forward.h"
#include "model_test_util.h"
#include "pipeline/calibration.h"
#include "pipeline/quantize_job.h"
#include "pipeline/ruquant.h"
#include "pipeline/workflows.h"
#include "quant/uniform_grid.h"

#include <QDir>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <cstring>

using namespace qb;

namespace {

constexpr int kWindows = 4, kCtx = 64;

std::shared_ptr<model::Model> load(const io::Checkpoint& ck, bool compact)
{
    pipeline::LoadOptions o;
    o.compact = compact;
    auto m = pipeline::loadModel(ck, nullptr, nullptr, o);
    if (!m.ok()) qFatal("%s", m.error().toString().c_str());
    return *m;
}

// The demo's tensors re-encoded as `dtype` in a safetensors directory beside its config and
// tokenizer.
std::string writeDemoAs(DType dtype, const QString& dir)
{
    auto ck = io::openCheckpoint(qbtest::demoDir());
    if (!ck.ok()) return {};
    std::vector<exporting::SafetensorsTensor> tensors;
    for (const TensorInfo& t : ck->tensors) {
        std::vector<float> f(std::size_t(t.numel()));
        if (!io::readTensorF32(t, f.data()).ok()) return {};
        std::vector<std::uint8_t> bytes(f.size() * dtypeSize(dtype));
        if (!convertFromF32(dtype, f.data(), bytes.data(), f.size()).ok()) return {};
        tensors.push_back(exporting::safetensorsTensorFromBytes(t.name, dtype, t.shape, std::move(bytes)));
    }
    const QString out = dir + "/" + dtypeName(dtype);
    QDir().mkpath(out);
    for (const char* f : {"config.json", "tokenizer.json"})
        QFile::copy(QString::fromStdString(qbtest::demoDir()) + "/" + f, out + "/" + f);
    if (!exporting::writeSafetensorsFile((out + "/model.safetensors").toStdString(), tensors).ok()) return {};
    return out.toStdString();
}

std::string writeDemoGguf(io::GgmlType type, const QString& dir)
{
    auto ck = io::openCheckpoint(qbtest::demoDir());
    auto tok = io::loadCheckpointTokenizer(*ck);
    if (!ck.ok() || !tok.ok()) return {};
    exporting::GgufExportOptions o;
    o.weightType = type;
    const std::string path = (dir + "/demo-" + io::ggmlTypeName(int(type)) + ".gguf").toStdString();
    if (!exporting::exportGguf(*ck, *tok, path, o).ok()) return {};
    return path;
}

std::vector<std::int32_t> someTokens(const model::Model& m)
{
    std::vector<std::int32_t> ids(std::size_t(kWindows * kCtx));
    for (std::size_t i = 0; i < ids.size(); ++i)
        ids[i] = std::int32_t((i * 7919 + 13) % std::size_t(m.config().vocabSize));
    return ids;
}

// Largest |a - b| relative to the largest |b|.
double relativeMaxDiff(const model::RowMatrix& a, const model::RowMatrix& b)
{
    return double((a - b).cwiseAbs().maxCoeff()) / std::max(1e-30, double(b.cwiseAbs().maxCoeff()));
}

bool bitwiseEqual(const model::RowMatrix& a, const model::RowMatrix& b)
{
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           std::memcmp(a.data(), b.data(), std::size_t(a.size()) * sizeof(float)) == 0;
}

} // namespace

class TestCompactModel : public QObject {
    Q_OBJECT
    QTemporaryDir m_dir;

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        model::setNumThreads(2);
    }

    void packedModelDecodesAndRunsLikeF32_data()
    {
        QTest::addColumn<QString>("path");
        QTest::addColumn<QString>("format");
        QTest::newRow("safetensors BF16")
            << QString::fromStdString(writeDemoAs(DType::BF16, m_dir.path())) << QString("BF16");
        QTest::newRow("safetensors F16") << QString::fromStdString(writeDemoAs(DType::F16, m_dir.path()))
                                         << QString("F16");
        QTest::newRow("demo F32") << QString::fromStdString(qbtest::demoDir()) << QString("F32");
        for (io::GgmlType t : {io::GgmlType::F16, io::GgmlType::Q8_0, io::GgmlType::Q4_0, io::GgmlType::Q4_K})
            QTest::newRow((std::string("gguf ") + io::ggmlTypeName(int(t))).c_str())
                << QString::fromStdString(writeDemoGguf(t, m_dir.path())) << QString(io::ggmlTypeName(int(t)));
    }
    void packedModelDecodesAndRunsLikeF32()
    {
        QFETCH(QString, path);
        QFETCH(QString, format);
        QVERIFY2(!path.isEmpty(), "fixture not written");
        auto ck = io::openCheckpoint(path.toStdString());
        QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
        const auto f32 = load(*ck, false);
        const auto packed = load(*ck, true);
        QVERIFY(packed->validate().ok());
        QVERIFY(packed->hasPacked());
        QVERIFY(!f32->hasPacked());
        // Every linear packed in the stored encoding (GGUF keeps some small tensors in F32/F16:
        // any row view counts), and decoding is exact.
        for (int l = 0; l < packed->numLayers(); ++l)
            for (model::Linear lin : model::kAllLinears) {
                const auto& p = packed->layer(l)->packedWeight(lin);
                QVERIFY2(p, model::tensorName(l, lin).c_str());
                QCOMPARE(packed->layer(l)->weight(lin).size(), Eigen::Index(0));
                QVERIFY2(bitwiseEqual(model::decodePacked(*p), f32->layer(l)->weight(lin)),
                         model::tensorName(l, lin).c_str());
            }
        QVERIFY(bitwiseEqual(packed->embeddingF32(), f32->embedding()));
        QVERIFY(bitwiseEqual(packed->lmHeadF32(), f32->lmHead()));
        // Held in the encoding the file stores (GGUF falls back per tensor, e.g. Q5_0 for rows
        // that are not whole K-quant super-blocks).
        const TensorInfo* gate = ck->find("model.layers.0.mlp.gate_proj.weight");
        QVERIFY(gate);
        const std::string stored = gate->ggmlType >= 0 ? io::ggmlTypeName(gate->ggmlType) : dtypeName(gate->dtype);
        QCOMPARE(packed->layer(0)->packedWeight(model::Linear::Gate)->format(), stored);
        if (format == "Q4_K") QVERIFY(stored == "Q4_K" || stored == "Q5_0"); // the export's fallback
        // Compact: about the stored size, never the F32 size (except for F32 files).
        if (format != "F32") QVERIFY2(packed->bytes() < f32->bytes() * 3 / 5, "packed model not smaller than F32");
        QVERIFY(packed->bytes() <= ck->fileBytes + ck->fileBytes / 10);

        // The forward pass over packed weights (tiles, several threads) matches the F32 pass; only
        // how the output columns are split differs, so allow rounding, not more.
        const auto ids = someTokens(*f32);
        model::Workspace ws1, ws2;
        auto a = model::forwardLogits(*packed, ids, kCtx, ws1);
        auto b = model::forwardLogits(*f32, ids, kCtx, ws2);
        QVERIFY(a.ok() && b.ok());
        const double diff = relativeMaxDiff(*a, *b);
        qInfo("%s: packed %.2f MB vs F32 %.2f MB, logits max rel diff %.3g", qPrintable(format),
              double(packed->bytes()) / 1e6, double(f32->bytes()) / 1e6, diff);
        QVERIFY2(diff < 1e-4, qPrintable(QString::number(diff)));

        // A layer asked for in F32 is the F32 layer.
        const auto un = model::unpackedLayer(packed->layer(1));
        QVERIFY(!un->isPacked());
        QVERIFY(bitwiseEqual(un->down, f32->layer(1)->down));
    }

    // RUQuant reads a compact model's layers as stored until it replaces them (its quantized path
    // copies no packed tensor): the same transforms and weights, bit for bit, as on the F32 copy.
    void ruquantOnCompactModelMatchesF32()
    {
        const std::string path = writeDemoAs(DType::BF16, m_dir.path() + "/ruquant");
        QVERIFY(!path.empty());
        auto ck = io::openCheckpoint(path);
        QVERIFY(ck.ok());
        const auto f32 = load(*ck, false);
        const auto packed = load(*ck, true);
        QVERIFY(packed->hasPacked());
        const auto ids = someTokens(*f32);
        pipeline::CalibrationSet calib;
        calib.seqlen = kCtx;
        calib.count = int(ids.size()) / kCtx;
        calib.ids.assign(ids.begin(), ids.begin() + std::ptrdiff_t(calib.count) * kCtx);
        pipeline::RuquantOptions o;
        o.blockSize = 32;
        o.weightBits = 4;
        o.act.fill(model::ActQuantSpec(4, false, 0.9f));
        auto a = pipeline::ruquantModel(*packed, calib, o, 2);
        auto b = pipeline::ruquantModel(*f32, calib, o, 2);
        QVERIFY2(a.ok() && b.ok(), a.ok() ? "" : a.error().toString().c_str());
        for (int l = 0; l < f32->numLayers(); ++l) {
            QCOMPARE(a->model->layer(l)->runtime->onlineTransforms(), b->model->layer(l)->runtime->onlineTransforms());
            for (model::Linear lin : model::kAllLinears)
                QVERIFY2(bitwiseEqual(a->model->layer(l)->weight(lin), b->model->layer(l)->weight(lin)),
                         model::tensorName(l, lin).c_str());
        }
    }

    void truncatedBytesAreAnErrorNamingTheTensor()
    {
        auto ck = io::openCheckpoint(qbtest::demoDir());
        QVERIFY(ck.ok());
        TensorInfo t = *ck->find("model.layers.0.mlp.down_proj.weight");
        auto cut = t.bytes.slice(0, t.bytes.size() - 4);
        QVERIFY(cut.ok());
        t.bytes = *cut;
        auto p = io::packTensor(t);
        QVERIFY(!p.ok());
        QVERIFY2(p.error().toString().find("down_proj") != std::string::npos, p.error().toString().c_str());
        // A slice outside the rows is refused too.
        auto q = io::packTensor(*ck->find("model.layers.0.mlp.down_proj.weight"), 1, t.rows());
        QVERIFY(!q.ok());
    }

    void compactQuantizedModelHoldsCodesAndEvaluatesLikeF32_data()
    {
        QTest::addColumn<QString>("plan");
        QTest::newRow("rtn 4-bit g32") << QString(
            "{\"default\": {\"method\": \"rtn\", \"bits\": 4, \"group_size\": 32}}");
        QTest::newRow("gptq 3-bit act-order")
            << QString("{\"default\": {\"method\": \"gptq\", \"bits\": 3, \"group_size\": 32, \"act_order\": true}}");
        QTest::newRow("cmpq 2.5") << QString("{\"default\": {\"method\": \"cmpq\", \"bits\": 2.5}}");
        QTest::newRow("gptq in Q4_K") << QString("{\"default\": {\"method\": \"gptq\", \"target\": \"Q4_K\"}}");
    }
    void compactQuantizedModelHoldsCodesAndEvaluatesLikeF32()
    {
        QFETCH(QString, plan);
        auto ck = io::openCheckpoint(qbtest::demoDir());
        auto tok = io::loadCheckpointTokenizer(*ck);
        QVERIFY(ck.ok() && tok.ok());
        auto text = pipeline::readTextFile(qbtest::demoDir() + "/calib.txt");
        QVERIFY(text.ok());
        auto calib = pipeline::buildCalibrationSet(*tok, *text, {8, 64, 0});
        QVERIFY(calib.ok());
        auto p = pipeline::quantPlanFromText(plan.toStdString());
        QVERIFY2(p.ok(), p.ok() ? "" : p.error().toString().c_str());
        auto resolved = pipeline::resolveQuantPlan(*p, ck->config);
        QVERIFY2(resolved.ok(), resolved.ok() ? "" : resolved.error().toString().c_str());
        const auto base = load(*ck, true);
        pipeline::QuantizeJobOptions o;
        o.threads = 2;
        auto full = pipeline::runQuantize(*base, &*ck, *resolved, *calib, o);
        o.compactModel = true;
        auto compact = pipeline::runQuantize(*base, &*ck, *resolved, *calib, o);
        QVERIFY2(full.ok() && compact.ok(), full.ok() ? "" : full.error().toString().c_str());
        const model::Model& fm = *full->model;
        const model::Model& cm = *compact->model;
        int packedCount = 0;
        for (std::size_t i = 0; i < compact->tensors.size(); ++i) {
            const pipeline::TensorReport& rep = compact->tensors[i];
            const auto& pw = cm.layer(rep.layer)->packedWeight(rep.linear);
            QVERIFY2(pw, rep.name.c_str()); // quantized: codes; unquantized: the base's view
            if (!rep.skipped) {
                ++packedCount;
                QVERIFY2(bitwiseEqual(model::decodePacked(*pw), fm.layer(rep.layer)->weight(rep.linear)),
                         rep.name.c_str());
                QVERIFY2(bitwiseEqual(model::decodePacked(*pw), compact->codes[i]->values()), rep.name.c_str());
                // One copy of the codes: the model's weight is the run's stored grid itself, two
                // codes a byte at 4 bits or fewer.
                QVERIFY2(pw == compact->codes[i], rep.name.c_str());
                QCOMPARE(compact->codes[i]->nibbles(),
                         compact->codes[i]->params().cmpq != nullptr || compact->codes[i]->params().bits <= 4);
                QVERIFY(full->codes[i] && full->codes[i]->codes() == compact->codes[i]->codes());
            }
        }
        QVERIFY(packedCount > 0);
        std::size_t compactLayers = 0, f32Layers = 0;
        for (int l = 0; l < cm.numLayers(); ++l) {
            compactLayers += cm.layer(l)->bytes();
            f32Layers += fm.layer(l)->bytes();
        }
        QVERIFY2(compactLayers < f32Layers / 2, "the compact quantized layers are not smaller");
        const auto ids = someTokens(fm);
        model::Workspace ws1, ws2;
        auto a = model::forwardLogits(cm, ids, kCtx, ws1);
        auto b = model::forwardLogits(fm, ids, kCtx, ws2);
        QVERIFY(a.ok() && b.ok());
        const double diff = relativeMaxDiff(*a, *b);
        qInfo("compact %.2f MB vs F32 %.2f MB, logits max rel diff %.3g", double(cm.bytes()) / 1e6,
              double(fm.bytes()) / 1e6, diff);
        QVERIFY2(diff < 1e-4, qPrintable(QString::number(diff)));
    }
};

QTEST_GUILESS_MAIN(TestCompactModel)
#include "tst_compact_model.moc"
