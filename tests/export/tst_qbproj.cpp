// .qbproj project files: write -> read restores everything (plan, calibration, metrics, extras,
// grids bit for bit, the further runs' grids in runs/<index>.safetensors), unknown keys ignored,
// newer major version refused, atomic writes, and the CLI round trip quantize --format qbproj ->
// export --format gguf|gptq|safetensors.

#include "export/atomic_file.h"
#include "export/hf_directory.h"
#include "export/project_bundle.h"
#include "io/zip_bundle.h"
#include "model/forward.h"
#include "quant_test_util.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include "quant/cmpq.h"

#include <QTemporaryDir>

#include <QTest>

#include <random>

using namespace qb;

namespace {

exporting::ProjectBundle makeSampleBundle()
{
    auto run = qbtest::quickQuantize(quant::Method::Neuqi, 3, 32); // real-valued zeros
    exporting::ProjectBundle b;
    b.model.path = qbtest::demoDir();
    b.model.format = "safetensors";
    b.model.files = {{qbtest::demoDir() + "/model.safetensors", 123456789}};
    b.model.bytes = 123456789;
    b.plan = pipeline::quantPlanToJson(run->plan);
    b.calibration.set("nsamples", 8);
    b.calibration.set("seqlen", 64);
    b.metrics.set("bits_per_weight", run->result->bitsPerWeight);
    b.metrics.set("perplexity", 41.25);
    io::JsonValue h;
    h.set("edges", io::JsonArray{io::JsonValue(-0.1), io::JsonValue(0.0), io::JsonValue(0.1)});
    h.set("counts", io::JsonArray{io::JsonValue(3), io::JsonValue(5)});
    b.extras.emplace_back("histograms", h);
    for (std::size_t i = 0; i < run->result->tensors.size(); ++i)
        if (run->result->codes[i]) {
            exporting::BundleTensor t;
            t.name = run->result->tensors[i].name;
            t.grid = run->result->codes[i]->unpack();
            b.tensors.push_back(std::move(t));
        }
    return b;
}

const exporting::ProjectBundle& sampleBundle()
{
    static const exporting::ProjectBundle b = makeSampleBundle(); // one NeUQI run for all tests
    return b;
}

std::vector<std::uint8_t> bytesOf(const std::string& s) { return std::vector<std::uint8_t>(s.begin(), s.end()); }

io::JsonValue& member(io::JsonValue& object, const std::string& key)
{
    for (auto& m : object.asObject())
        if (m.key == key) return m.value;
    throw std::runtime_error("test bug: no member " + key);
}
io::JsonValue& firstTensor(io::JsonValue& man) { return member(man, "tensors").asArray()[0]; }
std::string firstName(io::JsonValue& man) { return firstTensor(man).find("name")->asString(); }

} // namespace

class TestQbproj : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(1); }
    void writeReadEqual();
    void cmpqGridsWriteReadExact();
    void runGridsWriteReadEqual();
    void badRunGridsAreRefused();
    void unknownKeysIgnoredNewerMajorRefused();
    void cancelWriteErrorDiskSpace();
    void malformedProjectsAreRefused_data();
    void malformedProjectsAreRefused();
    void manifestWithManyKeys();
};

void TestQbproj::writeReadEqual()
{
    const auto b = sampleBundle();
    QVERIFY(!b.tensors.empty());
    QTemporaryDir dir;
    const std::string path = dir.filePath("run.qbproj").toStdString();
    QVERIFY(exporting::writeProjectBundle(path, b).ok());
    auto r = exporting::readProjectBundle(path);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QCOMPARE(r->version, std::string("1.1")); // kQbprojMinorVersion 1: run_grids
    QVERIFY(r->runGrids.empty());
    QVERIFY(r->model == b.model);
    QVERIFY(r->plan == b.plan);
    QVERIFY(r->calibration == b.calibration);
    QVERIFY(r->metrics == b.metrics);
    QCOMPARE(r->extras.size(), b.extras.size());
    QVERIFY(r->extras[0].first == "histograms" && r->extras[0].second == b.extras[0].second);
    QCOMPARE(r->tensors.size(), b.tensors.size());
    for (std::size_t i = 0; i < b.tensors.size(); ++i) {
        QCOMPARE(r->tensors[i].name, b.tensors[i].name);
        QVERIFY2(exporting::sameGrid(r->tensors[i].grid, b.tensors[i].grid), b.tensors[i].name.c_str());
    }
    auto plan = pipeline::quantPlanFromJson(r->plan);
    QVERIFY(plan.ok());
}

// CMPQ tensors (codes, per-channel bits and codebooks, kept channels, sparse outliers, scores)
// survive bit for bit, reconstruct the same weights, and a manifest that disagrees is refused.
void TestQbproj::cmpqGridsWriteReadExact()
{
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.f, 0.02f);
    quant::MatrixXfR w(96, 64);
    for (Eigen::Index i = 0; i < w.size(); ++i)
        w.data()[i] = nd(rng);
    Eigen::VectorXd scores(64);
    for (int j = 0; j < 64; ++j)
        scores[j] = 1.0 + std::fabs(double(nd(rng))) * 100;
    quant::CmpqOptions o;
    o.bits = 4.0;
    o.actOutliers = 0.03;
    o.quantOutliers = 0.01;
    o.errorFeedback = false;
    auto q = quant::quantizeRowsCmpq(w, Eigen::MatrixXd(), scores, o);
    QVERIFY(q.ok());
    QVERIFY(!q->cmpq->keptChannels.empty() && !q->cmpq->outlierIndex.empty());
    exporting::ProjectBundle b = sampleBundle();
    b.tensors.resize(1);
    b.tensors[0].grid = *q;
    b.tensors[0].grid.dequantized.resize(0, 0);
    QTemporaryDir dir;
    const std::string path = dir.filePath("cmpq.qbproj").toStdString();
    QVERIFY(exporting::writeProjectBundle(path, b).ok());
    auto r = exporting::readProjectBundle(path);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QCOMPARE(r->tensors.size(), std::size_t(1));
    const quant::QuantizedRows& g = r->tensors[0].grid;
    QVERIFY(g.cmpq);
    QVERIFY(exporting::sameGrid(g, b.tensors[0].grid));
    QCOMPARE(g.cmpq->bits.total(), q->cmpq->bits.total());
    QVERIFY(quant::dequantizeRowsUniform(g) == q->dequantized);
    // A manifest whose codebook size disagrees with the stored tensors is refused.
    auto entries = io::readZipEntries(path);
    QVERIFY(entries.ok());
    auto man = io::parseJson(std::string((*entries)["manifest.json"].begin(), (*entries)["manifest.json"].end()));
    QVERIFY(man.ok());
    firstTensor(*man).set("codebook", std::int64_t(3));
    std::vector<io::ZipEntry> z;
    for (const auto& [n, bytes] : *entries)
        z.push_back({n, n == "manifest.json" ? bytesOf(io::toJsonText(*man)) : bytes, true});
    const std::string bad = dir.filePath("bad.qbproj").toStdString();
    QVERIFY(io::writeZipEntries(bad, z).ok());
    QVERIFY(!exporting::readProjectBundle(bad).ok());
}

// The grids of further runs: each in runs/<run>.safetensors, listed in the manifest's run_grids,
// read back bit for bit (a subset of the tensors, with a gap in the run indices).
void TestQbproj::runGridsWriteReadEqual()
{
    exporting::ProjectBundle b = sampleBundle();
    exporting::BundleRunGrids r0, r3;
    r0.run = 0;
    r0.tensors.assign(b.tensors.begin(), b.tensors.begin() + 2);
    r0.tensors[0].grid.codes.setZero(); // differs from the main grids
    r3.run = 3;
    r3.tensors = b.tensors;
    b.runGrids = {r0, r3};
    QTemporaryDir dir;
    const std::string path = dir.filePath("runs.qbproj").toStdString();
    QVERIFY(exporting::writeProjectBundle(path, b).ok());
    auto entries = io::readZipEntries(path);
    QVERIFY(entries.ok());
    QVERIFY(entries->count("runs/0.safetensors") && entries->count("runs/3.safetensors"));
    auto r = exporting::readProjectBundle(path);
    QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
    QVERIFY(exporting::sameGrids(r->tensors, b.tensors));
    QCOMPARE(r->runGrids.size(), std::size_t(2));
    QCOMPARE(r->runGrids[0].run, 0);
    QCOMPARE(r->runGrids[1].run, 3);
    QVERIFY(exporting::sameGrids(r->runGrids[0].tensors, r0.tensors));
    QVERIFY(exporting::sameGrids(r->runGrids[1].tensors, r3.tensors));
    QVERIFY(!exporting::sameGrids(r->runGrids[0].tensors, r3.tensors));
    std::uint64_t bytes = 0;
    for (const auto& t : r0.tensors)
        bytes += exporting::gridStorageBytes(t.grid);
    const std::uint64_t stored = (*entries)["runs/0.safetensors"].size();
    QVERIFY(stored >= bytes && stored - bytes < 4096); // the grids plus the safetensors header

    b.runGrids = {r0, r0}; // one run twice
    QVERIFY(!exporting::writeProjectBundle(dir.filePath("twice.qbproj").toStdString(), b).ok());
}

// A manifest whose run_grids do not match the file is a clear error, never a crash.
void TestQbproj::badRunGridsAreRefused()
{
    exporting::ProjectBundle b = sampleBundle();
    exporting::BundleRunGrids r2;
    r2.run = 2;
    r2.tensors = b.tensors;
    b.runGrids = {r2};
    QTemporaryDir dir;
    const std::string good = dir.filePath("good.qbproj").toStdString();
    QVERIFY(exporting::writeProjectBundle(good, b).ok());
    auto entries = io::readZipEntries(good);
    QVERIFY(entries.ok());
    auto man = io::parseJson(std::string((*entries)["manifest.json"].begin(), (*entries)["manifest.json"].end()));
    QVERIFY(man.ok());
    auto rewrite = [&](const io::JsonValue& m, bool dropEntry) {
        std::vector<io::ZipEntry> z;
        for (const auto& [n, bytes] : *entries)
            if (!(dropEntry && n == "runs/2.safetensors"))
                z.push_back({n, n == "manifest.json" ? bytesOf(io::toJsonText(m)) : bytes, true});
        const std::string out = dir.filePath("bad.qbproj").toStdString();
        if (!io::writeZipEntries(out, z).ok()) return std::string("cannot write");
        auto r = exporting::readProjectBundle(out);
        return r.ok() ? std::string("read") : r.error().toString();
    };
    QVERIFY(rewrite(*man, true).find("no runs/2.safetensors") != std::string::npos);
    io::JsonValue m = *man;
    member(m, "run_grids").asArray()[0].set("run", 5);
    QVERIFY(rewrite(m, false).find("no runs/5.safetensors") != std::string::npos);
    m = *man;
    member(m, "run_grids").asArray()[0].set("run", -1);
    QVERIFY(rewrite(m, false).find("without a run index") != std::string::npos);
    m = *man;
    m.set("run_grids", io::JsonObject{});
    QVERIFY(rewrite(m, false).find("\"run_grids\" is not an array") != std::string::npos);
    m = *man;
    member(m, "run_grids").asArray().push_back(member(m, "run_grids").asArray()[0]);
    QVERIFY(rewrite(m, false).find("two grid sets for run 2") != std::string::npos);
    m = *man;
    member(member(m, "run_grids").asArray()[0], "tensors").asArray()[0].set("bits", 1);
    const std::string codes = rewrite(m, false);
    QVERIFY2(codes.find("above 1 for 1 bits") != std::string::npos, codes.c_str());
    QCOMPARE(rewrite(*man, false), std::string("read"));
}

void TestQbproj::unknownKeysIgnoredNewerMajorRefused()
{
    QTemporaryDir dir;
    const std::string path = dir.filePath("p.qbproj").toStdString();
    QVERIFY(exporting::writeProjectBundle(path, sampleBundle()).ok());
    auto entries = io::readZipEntries(path);
    QVERIFY(entries.ok());
    auto man = io::parseJson(std::string((*entries)["manifest.json"].begin(), (*entries)["manifest.json"].end()));
    QVERIFY(man.ok());
    auto rewrite = [&](const io::JsonValue& m, const std::string& out) {
        std::vector<io::ZipEntry> z;
        for (const auto& [n, b] : *entries)
            z.push_back({n, n == "manifest.json" ? bytesOf(io::toJsonText(m)) : b, true});
        z.push_back({"future/thing.bin", bytesOf("xyz"), true});
        QVERIFY(io::writeZipEntries(out, z).ok());
    };
    io::JsonValue newer = *man;
    newer.set("version", "1.7");
    newer.set("future_key", io::JsonObject{});
    const std::string minor = dir.filePath("minor.qbproj").toStdString();
    rewrite(newer, minor);
    auto ok = exporting::readProjectBundle(minor);
    QVERIFY2(ok.ok(), ok.ok() ? "" : ok.error().toString().c_str());
    QCOMPARE(ok->version, std::string("1.7"));
    newer.set("version", "2.0");
    const std::string major = dir.filePath("major.qbproj").toStdString();
    rewrite(newer, major);
    auto refused = exporting::readProjectBundle(major);
    QVERIFY(!refused.ok());
    QCOMPARE(refused.error().code, ErrorCode::Unsupported);
    QVERIFY2(refused.error().message.find("version 2.0 is newer") != std::string::npos,
             refused.error().message.c_str());
    auto notAZip = exporting::readProjectBundle(qbtest::demoDir() + "/config.json");
    QVERIFY(!notAZip.ok());
}

// Regressions from a hostile review of the project reader: it had its own second safetensors
// parser (a negative data offset read 1 KB before its buffer), unchecked variant access (a wrong
// JSON type aborted) and no check of bits or codes. Every case is now a clear error.
using Entries = std::map<std::string, std::vector<std::uint8_t>>;
using Mutation = std::function<void(io::JsonValue& manifest, io::JsonValue& header, Entries& entries)>;
Q_DECLARE_METATYPE(Mutation)

void TestQbproj::malformedProjectsAreRefused_data()
{
    QTest::addColumn<Mutation>("mutate");
    QTest::addColumn<QString>("expected");
    auto setField = [](const char* k, double v) {
        return Mutation([k, v](io::JsonValue& m, io::JsonValue&, Entries&) { firstTensor(m).set(k, v); });
    };
    QTest::newRow("bits 0") << setField("bits", 0) << "bits 0 outside 1..8";
    QTest::newRow("bits 64") << setField("bits", 64) << "bits 64 outside 1..8";
    QTest::newRow("bits 2^31") << setField("bits", 2147483648.0) << "bits 2147483648 outside 1..8";
    QTest::newRow("codes above 2^bits-1") << setField("bits", 1) << "above 1 for 1 bits";
    QTest::newRow("rows x cols overflows") << Mutation([](io::JsonValue& m, io::JsonValue&, Entries&) {
        firstTensor(m).set("rows", 4294967296.0);
        firstTensor(m).set("cols", 4294967296.0);
        firstTensor(m).set("groups", 1);
    }) << "the manifest says U8 [4294967296, 4294967296]";
    QTest::newRow("groups > cols") << setField("groups", 1e9) << "1000000000 groups for";
    QTest::newRow("negative data offset") << Mutation([](io::JsonValue& m, io::JsonValue& h, Entries&) {
        member(h, firstName(m) + ".codes").set("data_offsets", io::JsonArray{io::JsonValue(-1024), io::JsonValue(0)});
    }) << "data_offsets";
    QTest::newRow("tensors is an object")
        << Mutation([](io::JsonValue& m, io::JsonValue&, Entries&) { m.set("tensors", io::JsonObject{}); })
        << "\"tensors\" is not an array";
    QTest::newRow("tensor entry is a number") << Mutation([](io::JsonValue& m, io::JsonValue&, Entries&) {
        member(m, "tensors").asArray()[0] = io::JsonValue(7);
    }) << "entry is not an object";
    QTest::newRow("bits is a string") << Mutation([](io::JsonValue& m, io::JsonValue&, Entries&) {
        firstTensor(m).set("bits", "four");
    }) << "\"bits\"";
    QTest::newRow("NaN scale") << Mutation([](io::JsonValue& m, io::JsonValue& h, Entries& e) {
        const io::JsonValue* off = h.find(firstName(m) + ".scales")->find("data_offsets");
        const auto at = std::size_t(off->asArray()[0].asInteger());
        auto& bytes = e["tensors.safetensors"];
        std::uint64_t n = 0;
        std::memcpy(&n, bytes.data(), 8);
        const double nan = std::nan("");
        std::memcpy(bytes.data() + 8 + n + at, &nan, 8);
    }) << "non-finite scale";
}

void TestQbproj::malformedProjectsAreRefused()
{
    QFETCH(Mutation, mutate);
    QFETCH(QString, expected);
    QTemporaryDir dir;
    const std::string good = dir.filePath("good.qbproj").toStdString();
    QVERIFY(exporting::writeProjectBundle(good, sampleBundle()).ok());
    auto entries = io::readZipEntries(good);
    QVERIFY(entries.ok());
    auto& st = (*entries)["tensors.safetensors"];
    std::uint64_t n = 0;
    std::memcpy(&n, st.data(), 8);
    auto man = io::parseJson(std::string((*entries)["manifest.json"].begin(), (*entries)["manifest.json"].end()));
    auto header = io::parseJson(std::string(st.begin() + 8, st.begin() + 8 + std::ptrdiff_t(n)));
    QVERIFY(man.ok() && header.ok());
    const std::string headerBefore = io::toJsonText(*header, -1);
    mutate(*man, *header, *entries);
    (*entries)["manifest.json"] = bytesOf(io::toJsonText(*man));
    if (io::toJsonText(*header, -1) != headerBefore) { // re-frame the safetensors with the new header
        auto& bytes = (*entries)["tensors.safetensors"];
        std::string h = io::toJsonText(*header, -1);
        std::vector<std::uint8_t> out(8);
        const std::uint64_t hn = h.size();
        std::memcpy(out.data(), &hn, 8);
        out.insert(out.end(), h.begin(), h.end());
        out.insert(out.end(), bytes.begin() + 8 + std::ptrdiff_t(n), bytes.end());
        bytes = std::move(out);
    }
    std::vector<io::ZipEntry> z;
    for (const auto& [name, b] : *entries)
        z.push_back({name, b, true});
    const std::string bad = dir.filePath("bad.qbproj").toStdString();
    QVERIFY(io::writeZipEntries(bad, z).ok());
    auto r = exporting::readProjectBundle(bad);
    QVERIFY(!r.ok());
    QVERIFY2(r.error().toString().find(expected.toStdString()) != std::string::npos, r.error().toString().c_str());
}

// A manifest with 200k keys is read in linear time (duplicate keys were found by an O(n^2) scan,
// 14 s for 100k); a duplicate at the very end is still found.
void TestQbproj::manifestWithManyKeys()
{
    std::string text = "{";
    for (int i = 0; i < 200000; ++i)
        text += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
    auto ok = io::parseJson(text + "\"last\":0}");
    QVERIFY(ok.ok());
    QCOMPARE(ok->asObject().size(), std::size_t(200001));
    auto dup = io::parseJson(text + "\"k123\":0}");
    QVERIFY(!dup.ok());
    QVERIFY2(dup.error().message.find("duplicate object key \"k123\"") != std::string::npos,
             dup.error().message.c_str());
}

void TestQbproj::cancelWriteErrorDiskSpace()
{
    const auto b = sampleBundle();
    QTemporaryDir dir;
    const QString path = dir.filePath("a.qbproj");
    QVERIFY(exporting::writeSmallFile(path.toStdString(), "old contents").ok());
    RunContext ctx([&ctx](const Progress& p) {
        if (p.stage == "write" && p.total > 0 && p.done * 2 >= p.total) ctx.requestCancel();
    });
    auto c = exporting::writeProjectBundle(path.toStdString(), b, {}, &ctx);
    QVERIFY(!c.ok());
    QCOMPARE(c.error().code, ErrorCode::Cancelled);
    QCOMPARE(qbtest::slurpFile(path), std::string("old contents"));
    QVERIFY(qbtest::leftoversIn(dir.path()).isEmpty());
    exporting::BundleWriteOptions o;
    o.failAfterBytesForTesting = 1000;
    auto w = exporting::writeProjectBundle(path.toStdString(), b, o);
    QVERIFY(!w.ok());
    QCOMPARE(w.error().code, ErrorCode::Io);
    QVERIFY(w.error().toString().find("write failed") != std::string::npos);
    QCOMPARE(qbtest::slurpFile(path), std::string("old contents"));
    QVERIFY(qbtest::leftoversIn(dir.path()).isEmpty());
    auto s = exporting::checkDiskSpace(dir.path().toStdString(), std::uint64_t(1) << 60);
    QVERIFY(!s.ok() && s.error().message.find("not enough free disk space") != std::string::npos);
}

QTEST_GUILESS_MAIN(TestQbproj)
#include "tst_qbproj.moc"
