// The quantization pipeline and the exporters on every architecture (issue 18): the small
// transformers-made models of tests/model/transformers are quantized (GPTQ 4-bit, true-sequential,
// layer by layer) and exported as GGUF and GPTQ safetensors, both verified; the exports reopen
// (Phi-3's fused qkv_proj/gate_up_proj and Gemma's (1 + w) norms round-trip) and run to the same
// logits as the fake-quantized safetensors export of the same grids.

#include "io/checkpoint.h"
#include "model/forward.h"
#include "pipeline/model_loader.h"
#include "pipeline/project.h"
#include "pipeline/quant_plan.h"
#include "pipeline/workflows.h"

#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <cstring>

using namespace qb;

namespace {

std::string fixture(const QString& name, const char* file)
{
    return std::string(QB_TESTS_DIR) + "/model/transformers/" + name.toStdString() + "/" + file;
}

// logits of the model in `path` for one window of the demo evaluation tokens.
Result<model::RowMatrix> logitsOf(const std::string& path, const std::vector<std::int32_t>& ids)
{
    QB_TRY(ck, io::openCheckpoint(path));
    QB_TRY(m, pipeline::loadModel(*ck));
    model::Workspace ws;
    return model::forwardLogits(**m, ids, int(ids.size()), ws);
}

} // namespace

class TestArchitecturePipeline : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }

    // Phi-3 stores q/k/v as one tensor: parts quantized differently cannot be exported as one.
    void fusedPartsMustAgree()
    {
        QTemporaryDir src;
        for (const char* f : {"config.json", "model.safetensors"})
            QVERIFY(QFile::copy(QString::fromStdString(fixture("phi3", f)), src.filePath(QString::fromLatin1(f))));
        QVERIFY(QFile::copy(QStringLiteral(QB_DEMO_DIR "/tokenizer.json"), src.filePath("tokenizer.json")));
        auto opened = io::openCheckpoint(src.path().toStdString());
        QVERIFY(opened.ok());
        auto ck = std::make_shared<const io::Checkpoint>(std::move(*opened));
        pipeline::QuantizeRequest req;
        req.checkpoint = ck;
        req.plan = pipeline::uniformQuantPlan(quant::Method::Rtn, 4, 16);
        pipeline::PlanSettings eight;
        eight.bits = 8;
        req.plan.rules.push_back({"*.v_proj.weight", eight});
        req.calibration.textPath = QB_DEMO_DIR "/calib.txt";
        req.calibration.options.nsamples = 2;
        req.calibration.options.seqlen = 32;
        auto run = pipeline::quantizeModel(req);
        QVERIFY2(run.ok(), run.ok() ? "" : run.error().toString().c_str());
        QTemporaryDir out;
        pipeline::ExportRequest ex;
        ex.checkpoint = ck;
        ex.run = {"mixed",      pipeline::quantPlanToJson(req.plan),
                  run->result,  std::nullopt,
                  run->seconds, req.calibration.toJson(),
                  std::nullopt, {}};
        for (auto format : {pipeline::ExportFormat::Gguf, pipeline::ExportFormat::Gptq}) {
            ex.target.out = out.filePath(format == pipeline::ExportFormat::Gguf ? "m.gguf" : "gptq").toStdString();
            ex.target.format = format;
            auto r = pipeline::exportRun(ex);
            QVERIFY(!r.ok());
            const std::string msg = r.error().toString();
            QVERIFY2(msg.find("model.layers.0.self_attn.qkv_proj.weight") != std::string::npos, msg.c_str());
            QVERIFY2(msg.find("quantized differently") != std::string::npos, msg.c_str());
        }
    }

    void quantizeAndExport_data()
    {
        QTest::addColumn<QString>("name");
        QTest::newRow("Qwen3") << "qwen3";
        QTest::newRow("Gemma 2") << "gemma2";
        QTest::newRow("Gemma 3") << "gemma3";
        QTest::newRow("Phi-3 (fused tensors)") << "phi3";
        QTest::newRow("Mistral (sliding window)") << "mistral";
    }
    void quantizeAndExport()
    {
        QFETCH(QString, name);
        // The model directory with the demo tokenizer beside it (for the calibration text).
        QTemporaryDir src;
        for (const char* f : {"config.json", "model.safetensors"})
            QVERIFY(QFile::copy(QString::fromStdString(fixture(name, f)), src.filePath(QString::fromLatin1(f))));
        QVERIFY(QFile::copy(QStringLiteral(QB_DEMO_DIR "/tokenizer.json"), src.filePath("tokenizer.json")));
        auto opened = io::openCheckpoint(src.path().toStdString());
        QVERIFY2(opened.ok(), opened.ok() ? "" : opened.error().toString().c_str());
        auto ck = std::make_shared<const io::Checkpoint>(std::move(*opened));

        pipeline::QuantizeRequest req;
        req.checkpoint = ck;
        req.plan = pipeline::uniformQuantPlan(quant::Method::Gptq, 4, 16);
        req.calibration.textPath = QB_DEMO_DIR "/calib.txt";
        req.calibration.options.nsamples = 4;
        req.calibration.options.seqlen = 32;
        req.options.batch = 4;
        auto run = pipeline::quantizeModel(req);
        QVERIFY2(run.ok(), run.ok() ? "" : run.error().toString().c_str());
        QCOMPARE(run->result->tensors.size(), std::size_t(ck->config.numHiddenLayers) * 7);

        QTemporaryDir out;
        pipeline::ExportRequest ex;
        ex.checkpoint = ck;
        ex.run = {"GPTQ 4b g16", pipeline::quantPlanToJson(req.plan),
                  run->result,   std::nullopt,
                  run->seconds,  req.calibration.toJson(),
                  std::nullopt,  {}};
        const std::vector<std::pair<pipeline::ExportFormat, std::string>> formats = {
            {pipeline::ExportFormat::Safetensors, out.filePath("fake").toStdString()},
            {pipeline::ExportFormat::Gguf, out.filePath("m.gguf").toStdString()},
            {pipeline::ExportFormat::Gptq, out.filePath("gptq").toStdString()}};
        for (const auto& [format, path] : formats) {
            ex.target.out = path;
            ex.target.format = format;
            auto r = pipeline::exportRun(ex);
            QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
            QVERIFY2(r->verified, r->verifySummary.c_str());
        }

        std::vector<std::int32_t> ids;
        {
            QFile f(QStringLiteral(QB_DEMO_DIR "/golden/eval_tokens.i32"));
            QVERIFY(f.open(QIODevice::ReadOnly));
            const QByteArray b = f.read(24 * 4);
            ids.resize(24);
            std::memcpy(ids.data(), b.constData(), 24 * 4);
        }
        auto fake = logitsOf(formats[0].second, ids);
        QVERIFY2(fake.ok(), fake.ok() ? "" : fake.error().toString().c_str());
        auto base = logitsOf(src.path().toStdString(), ids);
        QVERIFY(base.ok());
        const double scale = fake->cwiseAbs().maxCoeff();
        const double quantEffect = (*fake - *base).cwiseAbs().maxCoeff();
        for (std::size_t i = 1; i < formats.size(); ++i) {
            auto l = logitsOf(formats[i].second, ids);
            QVERIFY2(l.ok(), l.ok() ? "" : l.error().toString().c_str());
            const double diff = (*l - *fake).cwiseAbs().maxCoeff();
            qInfo("%s %s: max |logit - fake-quantized| = %.3g (logits up to %.3g; quantization moved them %.3g)",
                  qPrintable(name), i == 1 ? "GGUF" : "GPTQ", diff, scale, quantEffect);
            // The exports store the same grids: far closer to the fake-quantized model than
            // quantization moved it from the original (F16 scales are the only rounding).
            QVERIFY2(diff < 0.02 * quantEffect + 1e-4, qPrintable(QString::number(diff)));
        }
    }
};

QTEST_GUILESS_MAIN(TestArchitecturePipeline)
#include "tst_architecture_pipeline.moc"
