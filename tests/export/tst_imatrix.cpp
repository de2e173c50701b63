// Importance matrix interop (llama.cpp imatrix): our calibration statistics written as GGUF and
// legacy .dat and read back equal; a legacy .dat built byte by byte here parses to the values a
// loader divides out; truncated, garbage and inconsistent files are refused naming the file and
// entry; llama.cpp's own Python reader (gguf-py) reads our GGUF when QB_GGUF_PYTHON is set; and
// `quantize --imatrix` changes an RTN run (free grid and a Q4_K target on the widened demo model)
// while its perplexity stays finite; an entry missing or of the wrong width fails before quantizing.

#include "export/gguf_writer.h"
#include "export/imatrix_writer.h"
#include "export_test_util.h"
#include "io/imatrix.h"
#include "model/forward.h"
#include "pipeline/importance.h"
#include "pipeline/workflows.h"

#include <QFile>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <cstring>
#include <limits>

using namespace qb;

namespace {

void putI32(std::vector<std::uint8_t>& b, std::int32_t v)
{
    std::uint8_t x[4];
    std::memcpy(x, &v, 4);
    b.insert(b.end(), x, x + 4);
}
void putF32(std::vector<std::uint8_t>& b, float v)
{
    std::uint8_t x[4];
    std::memcpy(x, &v, 4);
    b.insert(b.end(), x, x + 4);
}
void putStr(std::vector<std::uint8_t>& b, const std::string& s)
{
    putI32(b, std::int32_t(s.size()));
    b.insert(b.end(), s.begin(), s.end());
}

// Two entries as llama-imatrix writes them: values = mean x² · ncall.
std::vector<std::uint8_t> legacyFixture(float poison = 0.0f)
{
    std::vector<std::uint8_t> b;
    putI32(b, 2);
    putStr(b, "blk.0.attn_q.weight");
    putI32(b, 4);                      // ncall
    putI32(b, 3);                      // nval
    for (float v : {4.0f, 8.0f, 2.0f}) // means 1, 2, 0.5
        putF32(b, v + poison);
    putStr(b, "blk.1.ffn_down.weight");
    putI32(b, 2);
    putI32(b, 2);
    putF32(b, 6.0f); // means 3, 0.25
    putF32(b, 0.5f);
    putI32(b, 7); // last chunk
    putStr(b, "wiki.train.raw");
    return b;
}

bool writeBytes(const QString& path, const std::vector<std::uint8_t>& b)
{
    QFile f(path);
    return f.open(QIODevice::WriteOnly) &&
           f.write(reinterpret_cast<const char*>(b.data()), qint64(b.size())) == qint64(b.size());
}

pipeline::CalibrationSource smallCalibration()
{
    pipeline::CalibrationSource c;
    c.textPath = qbtest::demoDir() + "/calib.txt";
    c.options.nsamples = 8;
    c.options.seqlen = 64;
    return c;
}

} // namespace

class TestImatrix : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase();
    void roundTrip_data();
    void roundTrip();
    void legacyFixtureParses();
    void badFiles_data();
    void badFiles();
    void planChecks();
    void readByGgufPy();
    void quantizeWithImatrix();
    void kquantTargetAcceptsImatrix();

private:
    Result<pipeline::QuantizeOutcome> quantize(const std::string& model, const std::string& plan,
                                               std::shared_ptr<const io::ImportanceMatrix> im);

    std::unique_ptr<QTemporaryDir> m_dir;
    std::shared_ptr<const pipeline::ActivationReport> m_report;
    io::ImportanceMatrix m_ours;
};

void TestImatrix::initTestCase()
{
    model::setNumThreads(1);
    m_dir = std::make_unique<QTemporaryDir>();
    pipeline::CalibrateRequest req;
    req.checkpoint = std::make_shared<const io::Checkpoint>(qbtest::demoCheckpoint());
    req.calibration = smallCalibration();
    auto r = pipeline::calibrateActivations(req);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    m_report = std::make_shared<const pipeline::ActivationReport>(std::move(*r));
    m_ours = pipeline::importanceFromActivations(*m_report, {"calib.txt"});
    // Every decoder linear, q/k/v sharing their input's statistics.
    QCOMPARE(m_ours.entries.size(), std::size_t(4 * 7));
    const io::ImportanceEntry* q = m_ours.find("model.layers.1.self_attn.q_proj.weight");
    const io::ImportanceEntry* v = m_ours.find("model.layers.1.self_attn.v_proj.weight");
    QVERIFY(q && v);
    QCOMPARE(q->meanSquare, v->meanSquare);
    QCOMPARE(q->count, double(8 * 64));
    QCOMPARE(q->meanSquare, m_report->taps.at({1, model::LinearKind::Qkv}).channelMeanSquare());
    QCOMPARE(m_ours.find("model.layers.2.mlp.down_proj.weight")->columns(), std::int64_t(352));
}

void TestImatrix::roundTrip_data()
{
    QTest::addColumn<QString>("format");
    QTest::newRow("gguf") << QString("gguf");
    QTest::newRow("legacy dat") << QString("dat");
}

void TestImatrix::roundTrip()
{
    QFETCH(QString, format);
    const auto f = io::parseImportanceFormat(format.toStdString());
    QVERIFY(f);
    const std::string path = m_dir->filePath("ours." + format).toStdString();
    Status st = exporting::writeImportanceMatrix(m_ours, path, *f);
    QVERIFY2(st.ok(), st.ok() ? "" : st.error().toString().c_str());
    auto back = io::readImportanceMatrix(path);
    QVERIFY2(back.ok(), back.ok() ? "" : back.error().toString().c_str());
    QCOMPARE(int(back->format), int(*f));
    QCOMPARE(back->datasets, m_ours.datasets);
    QCOMPARE(back->chunkCount, m_ours.chunkCount);
    QCOMPARE(back->chunkSize, *f == io::ImportanceFormat::Gguf ? m_ours.chunkSize : 0u); // .dat has none
    QCOMPARE(back->entries.size(), m_ours.entries.size());
    for (const auto& [name, e] : m_ours.entries) {
        const io::ImportanceEntry* b = back->find(name);
        QVERIFY2(b, name.c_str());
        // .dat counts calls: ceil(tokens / chunk size) = the windows.
        QCOMPARE(b->count, *f == io::ImportanceFormat::Gguf ? e.count : double(m_ours.chunkCount));
        QCOMPARE(b->columns(), e.columns());
        for (std::size_t i = 0; i < e.meanSquare.size(); ++i) // one rounding of sum and quotient each
            QVERIFY2(std::abs(b->meanSquare[i] - e.meanSquare[i]) <=
                         4 * std::numeric_limits<float>::epsilon() * e.meanSquare[i],
                     (name + " column " + std::to_string(i)).c_str());
    }
    // The GGUF as llama.cpp lays it out: general.type, the three keys, <gguf name>.in_sum2 [ncols, 1].
    if (*f == io::ImportanceFormat::Gguf) {
        auto g = io::readGgufFile(path);
        QVERIFY(g.ok());
        QCOMPARE(*g->find("general.type")->toString(), std::string("imatrix"));
        QCOMPARE(int(g->find("imatrix.chunk_count")->type), int(io::GgufValueType::UInt32));
        QCOMPARE(int(g->find("imatrix.chunk_size")->type), int(io::GgufValueType::UInt32));
        bool found = false;
        for (const TensorInfo& t : g->tensors)
            if (t.name == "blk.0.ffn_down.weight.in_sum2") {
                found = true;
                QCOMPARE(t.shape, (std::vector<std::int64_t>{1, 352}));
            }
        QVERIFY(found);
    }
    // The workflow writes the same and reads it back.
    pipeline::ImportanceExportRequest req;
    req.report = m_report;
    req.calibrate.calibration = smallCalibration();
    req.out = m_dir->filePath("workflow." + format).toStdString();
    req.format = *f;
    auto out = pipeline::exportImportanceMatrix(req);
    QVERIFY2(out.ok(), out.ok() ? "" : out.error().toString().c_str());
    QCOMPARE(out->entries, 28);
    QVERIFY(out->bytes > 0);
}

void TestImatrix::legacyFixtureParses()
{
    const QString path = m_dir->filePath("fixture.dat");
    QVERIFY(writeBytes(path, legacyFixture()));
    auto m = io::readImportanceMatrix(path.toStdString());
    QVERIFY2(m.ok(), m.ok() ? "" : m.error().toString().c_str());
    QCOMPARE(int(m->format), int(io::ImportanceFormat::Dat));
    QCOMPARE(m->entries.size(), std::size_t(2));
    const io::ImportanceEntry* q = m->find("model.layers.0.self_attn.q_proj.weight");
    const io::ImportanceEntry* d = m->find("model.layers.1.mlp.down_proj.weight");
    QVERIFY(q && d);
    QCOMPARE(q->meanSquare, (std::vector<float>{1.0f, 2.0f, 0.5f}));
    QCOMPARE(q->count, 4.0);
    QCOMPARE(d->meanSquare, (std::vector<float>{3.0f, 0.25f}));
    QCOMPARE(m->chunkCount, 7u);
    QCOMPARE(m->datasets, std::vector<std::string>{"wiki.train.raw"});
    // Old files end after the entries.
    std::vector<std::uint8_t> noTrailer = legacyFixture();
    noTrailer.resize(noTrailer.size() - 4 - 4 - 14);
    auto old = io::parseImportanceMatrixDat(noTrailer, "old.dat");
    QVERIFY2(old.ok(), old.ok() ? "" : old.error().toString().c_str());
    QCOMPARE(old->chunkCount, 0u);
}

void TestImatrix::badFiles_data()
{
    QTest::addColumn<QString>("kind");
    QTest::addColumn<int>("cut"); // bytes kept of the fixture (truncation rows)
    QTest::addColumn<QString>("expect");
    QTest::newRow("cut after the entry count") << QString("dat") << 10 << QString("entry count 2 does not fit");
    QTest::newRow("truncated in values") << QString("dat") << 40 << QString("blk.0.attn_q.weight values");
    QTest::newRow("truncated in the dataset")
        << QString("dat") << int(legacyFixture().size()) - 3 << QString("dataset");
    QTest::newRow("empty file") << QString("dat") << 0 << QString("truncated");
    QTest::newRow("text") << QString("text") << 0 << QString("not an importance matrix");
    QTest::newRow("NaN value") << QString("nan") << 0 << QString("NaN");
    QTest::newRow("model GGUF") << QString("model-gguf") << 0 << QString("general.type");
    QTest::newRow("GGUF without counts") << QString("no-counts") << 0 << QString("blk.0.attn_q.weight");
}

void TestImatrix::badFiles()
{
    QFETCH(QString, kind);
    QFETCH(int, cut);
    QFETCH(QString, expect);
    const QString path = m_dir->filePath(QString("bad-%1-%2").arg(kind).arg(cut));
    if (kind == "dat") {
        std::vector<std::uint8_t> b = legacyFixture();
        b.resize(std::size_t(cut));
        QVERIFY(writeBytes(path, b));
    } else if (kind == "text") {
        const std::string t = "this is not an importance matrix, just some text\n";
        QVERIFY(writeBytes(path, std::vector<std::uint8_t>(t.begin(), t.end())));
    } else if (kind == "nan") {
        QVERIFY(writeBytes(path, legacyFixture(std::numeric_limits<float>::quiet_NaN())));
    } else {
        exporting::GgufWriter w;
        w.setString("general.type", kind == "model-gguf" ? "model" : "imatrix");
        w.setU32("imatrix.chunk_count", 1);
        QVERIFY(w.addTensor("blk.0.attn_q.weight.in_sum2", {1, 4}, io::GgmlType::F32, [] {
                     return Result<std::vector<std::uint8_t>>(std::vector<std::uint8_t>(16, 0));
                 }).ok());
        QVERIFY(w.write(path.toStdString()).ok());
    }
    auto m = io::readImportanceMatrix(path.toStdString());
    QVERIFY(!m.ok());
    const std::string msg = m.error().toString();
    QVERIFY2(msg.find(path.toStdString()) != std::string::npos, msg.c_str()); // names the file
    QVERIFY2(msg.find(expect.toStdString()) != std::string::npos, msg.c_str());
}

void TestImatrix::planChecks()
{
    const io::Checkpoint ck = qbtest::demoCheckpoint();
    auto plan = pipeline::resolveQuantPlan(pipeline::uniformQuantPlan(quant::Method::Rtn, 4, 32), ck.config);
    QVERIFY(plan.ok());
    QVERIFY(pipeline::checkImportanceMatrix(m_ours, *plan, "ours.gguf").ok());
    io::ImportanceMatrix missing = m_ours;
    missing.entries.erase("model.layers.3.mlp.up_proj.weight");
    Status st = pipeline::checkImportanceMatrix(missing, *plan, "ours.gguf");
    QVERIFY(!st.ok());
    QVERIFY2(st.error().toString().find("model.layers.3.mlp.up_proj.weight") != std::string::npos,
             st.error().toString().c_str());
    io::ImportanceMatrix narrow = m_ours;
    narrow.entries["model.layers.0.mlp.down_proj.weight"].meanSquare.resize(128);
    st = pipeline::checkImportanceMatrix(narrow, *plan, "ours.gguf");
    QVERIFY(!st.ok());
    QVERIFY2(st.error().toString().find("model.layers.0.mlp.down_proj.weight") != std::string::npos &&
                 st.error().toString().find("352") != std::string::npos,
             st.error().toString().c_str());
    // The quantize workflow refuses it before quantizing.
    auto q = quantize(qbtest::demoDir(), R"({"default": {"method": "rtn", "bits": 4}})",
                      std::make_shared<const io::ImportanceMatrix>(narrow));
    QVERIFY(!q.ok());
    QVERIFY2(q.error().toString().find("down_proj") != std::string::npos, q.error().toString().c_str());
}

void TestImatrix::readByGgufPy()
{
    const QString python = qEnvironmentVariable("QB_GGUF_PYTHON");
    if (python.isEmpty())
        QSKIP("set QB_GGUF_PYTHON to a Python with llama.cpp's `gguf` package (pip install gguf numpy)");
    const QString path = m_dir->filePath("for-gguf-py.gguf");
    QVERIFY(exporting::writeImportanceMatrix(m_ours, path.toStdString(), io::ImportanceFormat::Gguf).ok());
    QProcess p;
    p.start(python, {QStringLiteral(QB_IMATRIX_PY_SCRIPT), path});
    QVERIFY(p.waitForFinished(120000));
    QVERIFY2(p.exitCode() == 0, p.readAllStandardError().constData());
    auto json = io::parseJson(p.readAllStandardOutput().toStdString(), "gguf-py");
    QVERIFY2(json.ok(), json.ok() ? "" : json.error().toString().c_str());
    QCOMPARE(json->find("type")->asString(), std::string("imatrix"));
    QCOMPARE(json->find("chunk_count")->asInteger(), std::int64_t(m_ours.chunkCount));
    QCOMPARE(json->find("chunk_size")->asInteger(), std::int64_t(m_ours.chunkSize));
    const io::JsonValue* entries = json->find("entries");
    QVERIFY(entries && entries->isObject());
    QCOMPARE(entries->asObject().size(), m_ours.entries.size());
    const io::ImportanceEntry* e = m_ours.find("model.layers.2.self_attn.o_proj.weight");
    const io::JsonValue* v = entries->find("blk.2.attn_output.weight");
    QVERIFY(e && v && v->isArray());
    QCOMPARE(std::int64_t(v->asArray().size()), e->columns());
    for (std::size_t i = 0; i < e->meanSquare.size(); ++i)
        QVERIFY(std::abs(v->asArray()[i].asNumber() - e->meanSquare[i]) <= 1e-6 * e->meanSquare[i]);
}

Result<pipeline::QuantizeOutcome> TestImatrix::quantize(const std::string& model, const std::string& plan,
                                                        std::shared_ptr<const io::ImportanceMatrix> im)
{
    auto ck = io::openCheckpoint(model);
    if (!ck) return ck.error();
    auto p = pipeline::quantPlanFromText(plan);
    if (!p) return p.error();
    pipeline::QuantizeRequest req;
    req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
    req.plan = *p;
    req.calibration = smallCalibration();
    req.evalTextPath = qbtest::demoEvalText();
    req.evalOptions.ctx = qbtest::kEvalCtx;
    req.klDivergence = false;
    req.options.keepCodes = false;
    req.options.importance = std::move(im);
    return pipeline::quantizeModel(req);
}

void TestImatrix::quantizeWithImatrix()
{
    // From a file, as `quantize --imatrix` reads it.
    const std::string path = m_dir->filePath("quantize.gguf").toStdString();
    QVERIFY(exporting::writeImportanceMatrix(m_ours, path, io::ImportanceFormat::Gguf).ok());
    auto im = io::readImportanceMatrix(path);
    QVERIFY(im.ok());
    const std::string plan = R"({"default": {"method": "rtn", "bits": 3, "group_size": 32}})";
    auto plain = quantize(qbtest::demoDir(), plan, nullptr);
    auto weighted = quantize(qbtest::demoDir(), plan, std::make_shared<const io::ImportanceMatrix>(std::move(*im)));
    QVERIFY2(plain.ok(), plain.ok() ? "" : plain.error().toString().c_str());
    QVERIFY2(weighted.ok(), weighted.ok() ? "" : weighted.error().toString().c_str());
    QVERIFY(plain->perplexity && weighted->perplexity);
    const double a = plain->perplexity->perplexity, b = weighted->perplexity->perplexity;
    qInfo("RTN 3-bit g32 perplexity: %.4f without, %.4f with the imatrix", a, b);
    QVERIFY(std::isfinite(b) && b > 1);
    QVERIFY(a != b);
    const auto wq = model::unpackedLayer(weighted->result->model->layer(0)); // held as codes
    const auto pq = model::unpackedLayer(plain->result->model->layer(0));
    QVERIFY(wq && pq);
    QVERIFY(wq->down != pq->down);
}

void TestImatrix::kquantTargetAcceptsImatrix()
{
    const std::string dir = m_dir->filePath("widened").toStdString();
    const std::string err = qbtest::writeWidenedDemoModel(dir);
    QVERIFY2(err.empty(), err.c_str());
    pipeline::ImportanceExportRequest req;
    req.calibrate.checkpoint = std::make_shared<const io::Checkpoint>(*io::openCheckpoint(dir));
    req.calibrate.calibration = smallCalibration();
    req.out = m_dir->filePath("widened.dat").toStdString(); // the legacy file works as well
    req.format = io::ImportanceFormat::Dat;
    auto written = pipeline::exportImportanceMatrix(req);
    QVERIFY2(written.ok(), written.ok() ? "" : written.error().toString().c_str());
    auto im = io::readImportanceMatrix(req.out);
    QVERIFY(im.ok());
    const std::string plan = R"({"default": {"method": "rtn", "target": "Q4_K"}})";
    auto plain = quantize(dir, plan, nullptr);
    auto weighted = quantize(dir, plan, std::make_shared<const io::ImportanceMatrix>(std::move(*im)));
    QVERIFY2(plain.ok(), plain.ok() ? "" : plain.error().toString().c_str());
    QVERIFY2(weighted.ok(), weighted.ok() ? "" : weighted.error().toString().c_str());
    const double a = plain->perplexity->perplexity, b = weighted->perplexity->perplexity;
    qInfo("RTN in Q4_K perplexity (widened demo): %.4f without, %.4f with the imatrix", a, b);
    QVERIFY(std::isfinite(b) && b > 1);
    QVERIFY(a != b);
    for (const auto& t : weighted->result->tensors)
        QCOMPARE(t.target, std::string("Q4_K"));
}

QTEST_GUILESS_MAIN(TestImatrix)
#include "tst_imatrix.moc"
