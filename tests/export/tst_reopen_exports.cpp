// Every export reopens in the workbench: the demo model quantized (tiny calibration), exported as
// GGUF, GPTQ or fake-quantized safetensors through the workflow every front end uses
// (pipeline::exportModel), reopened with openCheckpoint alone (a GGUF with no tokenizer.json beside
// it, a GPTQ directory dequantized on load) and evaluated with evaluateModel: the perplexity equals
// the run's. GPTQ: 4-bit g32 asym, 3-bit, 8-bit sym, act-order and a mixed plan (per-module bits
// as `dynamic` overrides); the reopened GPTQ weights equal the export's own decoded values bit for
// bit. Broken GPTQ directories (truncated file, qweight shape against bits, bits 5, missing scales)
// are refused with errors naming the module.

#include "export/gptq_export.h"
#include "export/hf_directory.h"
#include "io/gptq.h"
#include "model/forward.h"
#include "pipeline/project.h"
#include "pipeline/workflows.h"
#include "quant_test_util.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;

namespace {

double evaluate(std::shared_ptr<const io::Checkpoint> ck, std::shared_ptr<const model::Model> m = nullptr)
{
    pipeline::EvaluateRequest req;
    req.checkpoint = std::move(ck);
    req.model = std::move(m);
    req.textPath = qbtest::demoEvalText();
    req.options.ctx = qbtest::kEvalCtx;
    auto r = pipeline::evaluateModel(req);
    if (!r) qFatal("evaluate: %s", r.error().toString().c_str());
    return r->perplexity.perplexity;
}

double runPerplexity(const qbtest::QuickRun& run)
{
    return evaluate(std::make_shared<io::Checkpoint>(run.ck), run.result->model);
}

Result<double> reopenedPerplexity(const std::string& path)
{
    QB_TRY(ck, io::openCheckpoint(path));
    return evaluate(std::make_shared<io::Checkpoint>(std::move(*ck)));
}

pipeline::QuantPlan planFor(QString name)
{
    using quant::Method;
    if (name.endsWith(QLatin1String(" target gptq"))) { // solved inside the GPTQ grid (issue 11 item 1)
        name.chop(12);
        pipeline::QuantPlan p = planFor(name);
        p.defaults.target = "gptq";
        return p;
    }
    if (name == "gptq-4bit-g32-asym") return pipeline::uniformQuantPlan(Method::Gptq, 4, 32);
    if (name == "gptq-3bit-g32") return pipeline::uniformQuantPlan(Method::Gptq, 3, 32);
    if (name == "gptq-8bit-g32-sym") return pipeline::uniformQuantPlan(Method::Gptq, 8, 32, true);
    if (name == "gptq-4bit-g32-act-order") return pipeline::uniformQuantPlan(Method::Gptq, 4, 32, std::nullopt, true);
    if (name == "rtn-4bit-g32") return pipeline::uniformQuantPlan(Method::Rtn, 4, 32);
    if (name == "gguf target") { // solved in GGUF types, embedding and head quantized too
        auto p = pipeline::quantPlanFromText("{\"default\": {\"method\": \"neuqi\", \"target\": \"Q4_1\"},"
                                             " \"rules\": [{\"match\": \"*.mlp.down_proj\", \"target\": \"Q8_0\"}],"
                                             " \"embed_type\": \"Q5_0\", \"head_type\": \"Q8_0\"}");
        if (!p) qFatal("plan: %s", p.error().toString().c_str());
        return *p;
    }
    // mixed: down_proj 8 bits, attention 3 bits, the rest 4 bits
    auto p = pipeline::quantPlanFromText("{\"default\": {\"method\": \"gptq\", \"bits\": 4, \"group_size\": 32},"
                                         " \"rules\": [{\"match\": \"model.layers.*.mlp.down_proj\", \"bits\": 8},"
                                         " {\"match\": \"model.layers.*.self_attn.*\", \"bits\": 3}]}");
    if (!p) qFatal("plan: %s", p.error().toString().c_str());
    return *p;
}

std::string exportRun(const qbtest::QuickRun& run, pipeline::ExportFormat format, const std::string& out,
                      bool round = true)
{
    pipeline::ModelExportRequest req;
    req.out = out;
    req.format = format;
    req.roundGrids = round;                     // min-max zeros of 0 are not storable in GPTQ v1 (reported, bounded)
    req.embedType = run.result->plan.embedType; // as exportRun does: the types the run evaluated
    req.headType = run.result->plan.headType;
    auto r = pipeline::exportModel(run.ck, run.lookup(), req);
    if (!r) qFatal("export: %s", r.error().toString().c_str());
    return out;
}

// Rewrites dir/model.safetensors through `edit` (which may drop or replace tensors).
void rewriteSafetensors(const QString& dir,
                        const std::function<bool(const TensorInfo&, std::vector<exporting::SafetensorsTensor>&)>& edit)
{
    const std::string path = (dir + "/model.safetensors").toStdString();
    std::vector<exporting::SafetensorsTensor> out;
    {
        auto ts = io::readSafetensorsFile(path);
        if (!ts) qFatal("read");
        for (const TensorInfo& t : *ts)
            if (!edit(t, out))
                out.push_back(exporting::safetensorsTensorFromBytes(
                    t.name, t.dtype, t.shape,
                    std::vector<std::uint8_t>(t.bytes.data(), t.bytes.data() + t.bytes.size())));
    }
    if (!exporting::writeSafetensorsFile(path, out)) qFatal("write");
}

void editQuantizationConfig(const QString& dir, const std::function<void(io::JsonValue&)>& edit)
{
    const std::string path = (dir + "/config.json").toStdString();
    auto cfg = io::parseJson(qbtest::slurpFile(dir + "/config.json"), path);
    if (!cfg) qFatal("config");
    edit(*cfg->find("quantization_config"));
    if (!exporting::writeSmallFile(path, io::toJsonText(*cfg, 2)).ok()) qFatal("write config");
    QFile::remove(dir + "/quantize_config.json");
}

} // namespace

class TestReopenExports : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }
    void reopenedPerplexityEqualsRun_data();
    void reopenedPerplexityEqualsRun();
    void storableGridsReopenExactly_data();
    void storableGridsReopenExactly();
    void gptqWeightsDecodeExactly();
    void brokenGptqRefused_data();
    void brokenGptqRefused();
};

void TestReopenExports::reopenedPerplexityEqualsRun_data()
{
    QTest::addColumn<QString>("plan");
    QTest::addColumn<int>("format");
    QTest::addColumn<double>("tolerance"); // relative
    using F = pipeline::ExportFormat;
    // GGUF ("auto": the smallest type that holds each grid exactly) and the fake-quantized
    // safetensors hold the run's weights exactly.
    QTest::newRow("gguf") << QStringLiteral("gptq-4bit-g32-asym") << int(F::Gguf) << 1e-5;
    QTest::newRow("safetensors") << QStringLiteral("gptq-4bit-g32-asym") << int(F::Safetensors) << 1e-5;
    // A run with GGUF storage targets: its quantized embedding and head are what the file stores.
    QTest::newRow("gguf target") << QStringLiteral("gguf target") << int(F::Gguf) << 1e-5;
    // The GPTQ container rounds what a run's grids hold (F64 scales to F16, min-max zeros of 0 to
    // 1 with the codes re-derived) and stores embeddings and lm_head as F16; the measured
    // differences are 0.5-3e-5. Until the quantizer solves inside the GPTQ grid (issue 11 item 1),
    // 1e-4 here; storableGridsReopenExactly shows the reader itself adds nothing.
    // With the gptq storage target the run solves inside the GPTQ grid and evaluates its embedding
    // and head in F16: the export rounds nothing (it is refused if it had to) and 1e-5 holds.
    for (const char* p :
         {"gptq-4bit-g32-asym", "gptq-3bit-g32", "gptq-8bit-g32-sym", "gptq-4bit-g32-act-order", "gptq-mixed"}) {
        QTest::newRow(p) << QString::fromLatin1(p) << int(F::Gptq) << 1e-4;
        const QString t = QString::fromLatin1(p) + QStringLiteral(" target gptq");
        QTest::newRow(qPrintable(t)) << t << int(F::Gptq) << 1e-5;
    }
}

void TestReopenExports::reopenedPerplexityEqualsRun()
{
    QFETCH(QString, plan);
    QFETCH(int, format);
    QFETCH(double, tolerance);
    const auto f = pipeline::ExportFormat(format);
    const auto run = qbtest::quickQuantizePlan(planFor(plan));
    const double ran = runPerplexity(*run);
    QTemporaryDir dir;
    const std::string out = f == pipeline::ExportFormat::Gguf ? dir.filePath("model.gguf").toStdString()
                                                              : dir.filePath("export").toStdString();
    exportRun(*run, f, out, !plan.endsWith(QLatin1String("target gptq")));
    if (f == pipeline::ExportFormat::Gguf) QVERIFY(!QFile::exists(dir.filePath("tokenizer.json")));
    auto reopened = reopenedPerplexity(out);
    QVERIFY2(reopened.ok(), reopened.ok() ? "" : reopened.error().toString().c_str());
    const double rel = std::fabs(*reopened - ran) / ran;
    qInfo("%-28s run %.6f  reopened %.6f  rel %.2e", QTest::currentDataTag(), ran, *reopened, rel);
    QVERIFY2(rel <= tolerance, qPrintable(QStringLiteral("relative difference %1").arg(rel)));
}

void TestReopenExports::storableGridsReopenExactly_data()
{
    QTest::addColumn<bool>("mixed");
    QTest::newRow("4-bit g32") << false;
    QTest::newRow("mixed 8/3/4-bit g32") << true;
}

// Grids the GPTQ container holds as they are (F16 scales, zeros in [1, 2^b - 1]), embeddings kept
// in their dtype: the reopened directory evaluates to exactly the grids' model. What separates a
// run's perplexity from its reopened GPTQ export above is the container's rounding (F16 scales,
// storable zeros, F16 embeddings and lm_head), not the reader.
void TestReopenExports::storableGridsReopenExactly()
{
    QFETCH(bool, mixed);
    const io::Checkpoint ck = qbtest::demoCheckpoint();
    const auto grids = qbtest::makeGrids(
        ck,
        [mixed](const std::string& n) {
            if (!mixed) return 4;
            return n.find("down_proj") != std::string::npos ? 8 : n.find("self_attn") != std::string::npos ? 3 : 4;
        },
        false);
    auto base = pipeline::loadModel(ck);
    QVERIFY(base.ok());
    std::shared_ptr<model::Model> m = *base;
    for (int l = 0; l < m->numLayers(); ++l) {
        auto w = std::make_shared<model::DecoderLayerWeights>(*m->layer(l));
        for (model::Linear lin : model::kAllLinears)
            w->weight(lin) = quant::dequantizeRowsUniform(*grids.grids.at(model::tensorName(l, lin)));
        m->setLayer(l, std::move(w));
    }
    const double expected = evaluate(std::make_shared<io::Checkpoint>(ck), m);
    QTemporaryDir dir;
    exporting::GptqExportOptions o;
    o.gridFor = grids.lookup();
    o.embeddingDtype = std::nullopt;
    auto r = exporting::exportGptq(ck, dir.filePath("s").toStdString(), o);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QCOMPARE(r->analysis.maxAbsChange, 0.0);
    auto reopened = reopenedPerplexity(dir.filePath("s").toStdString());
    QVERIFY2(reopened.ok(), reopened.ok() ? "" : reopened.error().toString().c_str());
    qInfo("storable grids: model %.6f  reopened %.6f", expected, *reopened);
    QVERIFY(std::fabs(*reopened - expected) <= 1e-5 * expected);
}

// The weights a reopened GPTQ directory yields are, bit for bit, what an independent unpacker
// (quant_test_util.h) decodes from the files, for every module of a mixed plan.
void TestReopenExports::gptqWeightsDecodeExactly()
{
    const auto run = qbtest::quickQuantizePlan(planFor("gptq-mixed"));
    QTemporaryDir dir;
    const std::string out = exportRun(*run, pipeline::ExportFormat::Gptq, dir.filePath("g").toStdString());
    auto ck = io::openCheckpoint(out);
    QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().toString().c_str());
    // Attention (4 of 7 linears per layer) at 3 bits is the most common layout, so the config's.
    QVERIFY2(ck->quantization.find("gptq 3-bit") == 0, ck->quantization.c_str());
    auto ts = io::readSafetensorsFile(out + "/model.safetensors");
    QVERIFY(ts.ok());
    std::map<std::string, const TensorInfo*> by;
    for (const auto& t : *ts)
        by[t.name] = &t;
    int modules = 0;
    for (const TensorInfo& t : ck->tensors) {
        if (!t.gptq) continue;
        ++modules;
        const std::string prefix = t.name.substr(0, t.name.size() - 7);
        const int bits = t.name.find("down_proj") != std::string::npos   ? 8
                         : t.name.find("self_attn") != std::string::npos ? 3
                                                                         : 4;
        QCOMPARE(t.gptq->bits, bits);
        quant::MatrixXfR w(t.shape[0], t.shape[1]);
        QVERIFY(io::readTensorF32(t, w.data()).ok());
        QVERIFY2(w == qbtest::unpackGptq(by, prefix, bits).w, t.name.c_str());
    }
    QCOMPARE(modules, 7 * int(ck->config.numHiddenLayers));
}

void TestReopenExports::brokenGptqRefused_data()
{
    QTest::addColumn<QString>("breakage");
    QTest::addColumn<QString>("expected"); // in the error, each of the '|'-separated parts
    QTest::newRow("truncated file") << QStringLiteral("truncate") << QStringLiteral("model.safetensors");
    QTest::newRow("qweight shape vs bits")
        << QStringLiteral("override-bits")
        << QStringLiteral("qweight has 16 rows; 128 inputs at 8 bits need 32|module model.layers.0.mlp.up_proj");
    QTest::newRow("bits 5") << QStringLiteral("bits5") << QStringLiteral("bits 5: GPTQ stores 2, 3, 4 or 8 bits");
    QTest::newRow("missing scales") << QStringLiteral("no-scales")
                                    << QStringLiteral("scales missing|module model.layers.1.self_attn.k_proj");
    QTest::newRow("qweight rows cut") << QStringLiteral("short-qweight")
                                      << QStringLiteral("qweight has 15 rows|module model.layers.0.self_attn.q_proj");
}

void TestReopenExports::brokenGptqRefused()
{
    QFETCH(QString, breakage);
    QFETCH(QString, expected);
    static const auto run = qbtest::quickQuantize(quant::Method::Rtn, 4, 32);
    QTemporaryDir tmp;
    const QString dir = tmp.filePath("g");
    exportRun(*run, pipeline::ExportFormat::Gptq, dir.toStdString());
    QVERIFY(io::openCheckpoint(dir.toStdString()).ok());
    if (breakage == "truncate") {
        QFile f(dir + "/model.safetensors");
        QVERIFY(f.resize(f.size() - 1000));
    } else if (breakage == "override-bits") {
        editQuantizationConfig(dir, [](io::JsonValue& qc) {
            io::JsonValue o;
            o.set("bits", 8);
            io::JsonValue dyn;
            dyn.set(io::gptqModulePattern("model.layers.0.mlp.up_proj"), o);
            qc.set("dynamic", dyn);
        });
    } else if (breakage == "bits5") {
        editQuantizationConfig(dir, [](io::JsonValue& qc) { qc.set("bits", 5); });
    } else if (breakage == "no-scales") {
        rewriteSafetensors(
            dir, [](const TensorInfo& t, auto&) { return t.name == "model.layers.1.self_attn.k_proj.scales"; });
    } else if (breakage == "short-qweight") {
        rewriteSafetensors(dir, [](const TensorInfo& t, std::vector<exporting::SafetensorsTensor>& out) {
            if (t.name != "model.layers.0.self_attn.q_proj.qweight") return false;
            const std::int64_t rows = t.shape[0] - 1, bytes = rows * t.shape[1] * 4;
            out.push_back(exporting::safetensorsTensorFromBytes(
                t.name, t.dtype, {rows, t.shape[1]},
                std::vector<std::uint8_t>(t.bytes.data(), t.bytes.data() + bytes)));
            return true;
        });
    }
    auto ck = io::openCheckpoint(dir.toStdString());
    QVERIFY(!ck.ok());
    const std::string msg = ck.error().toString();
    qInfo("%s", msg.c_str());
    for (const QString& part : expected.split('|'))
        QVERIFY2(msg.find(part.toStdString()) != std::string::npos, msg.c_str());
}

QTEST_GUILESS_MAIN(TestReopenExports)
#include "tst_reopen_exports.moc"
