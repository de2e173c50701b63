// Sensitivity atlas (pipeline/sensitivity.h): candidate parsing, one calibration pass against an
// independent per-layer recomputation (what-if's Hessians + preview), the cache file, and the
// measured effect of one tensor.

#include "eval/perplexity.h"
#include "io/checkpoint.h"
#include "pipeline/sensitivity.h"
#include "pipeline/whatif.h"
#include "quant_test_models.h"

#include <QTemporaryDir>
#include <QtTest>

#include <fstream>

using namespace qb;
using namespace qb::pipeline;

class TestSensitivity : public QObject {
    Q_OBJECT

private:
    static std::vector<SensitivityCandidate> candidates(const char* list)
    {
        auto c = parseSensitivityCandidates(list);
        if (!c) qFatal("%s", c.error().toString().c_str());
        return std::move(*c);
    }

    static eval::TokenWindows windows()
    {
        std::vector<std::int32_t> tokens(8 * 32);
        for (std::size_t i = 0; i < tokens.size(); ++i)
            tokens[i] = std::int32_t((i * 7 + i / 5) % 64);
        return eval::makeWindows(tokens, 32).value();
    }

private Q_SLOTS:
    void parsesCandidates()
    {
        auto g = parseSensitivityCandidate("gptq:3:64");
        QVERIFY(g.ok());
        QCOMPARE(g->label, std::string("gptq:3:64"));
        QCOMPARE(*g->settings.bits, 3);
        QCOMPARE(*g->settings.groupSize, 64);
        QCOMPARE(*g->settings.sym, false);
        // A group left out takes the method's default, written into the settings (a plan rule made
        // from it must not inherit another rule's group).
        auto d = parseSensitivityCandidate("rtn:4");
        QVERIFY(d.ok());
        QVERIFY(d->settings.groupSize.has_value());
        auto sym = parseSensitivityCandidate("rtn:4:128:sym");
        QVERIFY(sym.ok() && *sym->settings.sym);
        auto k = parseSensitivityCandidate("Q4_K");
        QVERIFY(k.ok());
        QCOMPARE(k->label, std::string("gptq:Q4_K"));
        QCOMPARE(*k->settings.target, std::string("Q4_K"));
        auto f = parseSensitivityCandidate("f16");
        QVERIFY(f.ok() && f->settings.skip.value_or(false));
        auto storable = parseSensitivityCandidate("gptq:4:128:gptq");
        QVERIFY(storable.ok());
        QCOMPARE(*storable->settings.target, std::string("gptq"));
        for (const char* bad : {"", "gptq", "foo:4", "gptq:9", "gptq:1", "gptq:4:0", "neuqi:4:128:sym",
                                "gptq:4:128:odd", "gptq:Q9_Z", "none"}) {
            auto r = parseSensitivityCandidate(bad);
            QVERIFY2(!r.ok(), bad);
            QVERIFY(r.error().message.find("candidate") != std::string::npos);
        }
        auto list = parseSensitivityCandidates("gptq:2:64, gptq:2:64,F16");
        QVERIFY(list.ok());
        QCOMPARE(list->size(), std::size_t(2)); // duplicates removed
        for (const char* target : {"none", "gguf", "gptq"})
            QVERIFY(defaultSensitivityCandidates(target).ok());
        QVERIFY(!defaultSensitivityCandidates("exl2").ok());
    }

    // Every cell equals an independent recomputation: the what-if pass's Hessians of the same layer
    // (full-precision layers before it) and previewTensor's quantization with the same settings.
    void matchesPerLayerRecomputation()
    {
        auto model = qbtest::syntheticModel(2);
        const CalibrationSet calib = qbtest::syntheticCalibration(4, 16);
        const io::Checkpoint ck; // the layers are loaded: the checkpoint only names the files
        const auto cands = candidates("rtn:2:16,rtn:4:16,gptq:3:-1,gptq:8:16,F16");
        SensitivityOptions opt;
        opt.batch = 3;
        auto atlas = computeSensitivity(*model, ck, calib, cands, opt);
        QVERIFY2(atlas.ok(), atlas.ok() ? "" : atlas.error().toString().c_str());
        QCOMPARE(atlas->tensors.size(), std::size_t(14));
        QCOMPARE(atlas->cells.size(), std::size_t(14));
        const PreviewSettings settings[] = {{quant::Method::Rtn, 2, 16, false},
                                            {quant::Method::Rtn, 4, 16, false},
                                            {quant::Method::Gptq, 3, -1, false},
                                            {quant::Method::Gptq, 8, 16, false}};
        for (int layer = 0; layer < 2; ++layer) {
            auto h = layerInputHessians(*model, nullptr, calib, layer, 2);
            QVERIFY(h.ok());
            for (model::Linear lin : model::kAllLinears) {
                const auto t = atlas->findTensor(model::tensorName(layer, lin));
                QVERIFY(t.has_value());
                const auto& w = model->layer(layer)->weight(lin);
                for (std::size_t c = 0; c < 4; ++c) {
                    auto p = previewTensor(w, h->forLinear(lin), settings[c]);
                    QVERIFY(p.ok());
                    const SensitivityCell& cell = atlas->cells[*t][c];
                    // Same math in another batch order: equal up to float summation order.
                    QVERIFY2(std::abs(cell.relativeError - p->relativeError) <= 1e-4 * p->relativeError + 1e-7,
                             (model::tensorName(layer, lin) + " " + cands[c].label).c_str());
                    QVERIFY(std::abs(cell.bitsPerWeight - p->bitsPerWeight) < 1e-12);
                    QVERIFY(cell.proxyLoss > 0);
                }
                // More bits, less error; F16 costs 16 bits and has none.
                QVERIFY(atlas->cells[*t][0].relativeError > atlas->cells[*t][1].relativeError);
                QVERIFY(atlas->cells[*t][1].relativeError > atlas->cells[*t][3].relativeError);
                QCOMPARE(atlas->cells[*t][4].relativeError, 0.0);
                QCOMPARE(atlas->cells[*t][4].bitsPerWeight, 16.0);
            }
        }
        // Without measurements the damage is the proxy loss.
        QCOMPARE(atlas->damage(3, 1), atlas->cells[3][1].proxyLoss);
        QVERIFY(!atlas->rankCorrelation().has_value());
    }

    void cacheRoundTripAndFingerprint()
    {
        auto model = qbtest::syntheticModel(1);
        const CalibrationSet calib = qbtest::syntheticCalibration(2, 16);
        const io::Checkpoint ck;
        const auto cands = candidates("rtn:3:16,gptq:4:16:gptq,F16");
        auto atlas = computeSensitivity(*model, ck, calib, cands);
        QVERIFY2(atlas.ok(), atlas.ok() ? "" : atlas.error().toString().c_str());
        QVERIFY(atlas->embedType.empty()); // no GGUF candidates: no GGUF file-size accounting
        QVERIFY(atlas->otherBytes > 0);
        atlas->measured.push_back({2, 0, 0.125, 0.9, 10.5, 10.0});
        atlas->measuredOn = measurementKey(windows());
        QTemporaryDir dir;
        const std::string path = sensitivityCachePath(dir.path().toStdString(), atlas->fingerprint);
        QVERIFY(saveSensitivityAtlas(*atlas, path).ok());
        auto back = loadSensitivityAtlas(path);
        QVERIFY2(back.ok(), back.ok() ? "" : back.error().toString().c_str());
        QCOMPARE(back->fingerprint, atlas->fingerprint);
        QVERIFY(back->candidates == atlas->candidates);
        QCOMPARE(back->tensors.size(), atlas->tensors.size());
        for (std::size_t t = 0; t < atlas->tensors.size(); ++t)
            for (std::size_t c = 0; c < cands.size(); ++c) {
                QCOMPARE(back->cells[t][c].relativeError, atlas->cells[t][c].relativeError);
                QCOMPARE(back->cells[t][c].proxyLoss, atlas->cells[t][c].proxyLoss);
                QCOMPARE(back->cells[t][c].bytes, atlas->cells[t][c].bytes);
            }
        QCOMPARE(back->measured.size(), std::size_t(1));
        QCOMPARE(back->measured[0].klMean, 0.125);
        QCOMPARE(back->measuredOn, atlas->measuredOn);
        QCOMPARE(back->otherBytes, atlas->otherBytes);
        // The damage is calibrated by the measurement: that tensor's reads in KL.
        QVERIFY(std::abs(back->damage(2, 0) - 0.125) < 1e-12);

        // Another calibration or candidate list is another atlas.
        const std::string fp = sensitivityFingerprint(ck, calib, cands);
        QCOMPARE(fp, atlas->fingerprint);
        QVERIFY(sensitivityFingerprint(ck, qbtest::syntheticCalibration(2, 16, 9), cands) != fp);
        QVERIFY(sensitivityFingerprint(ck, calib, candidates("rtn:3:16,F16")) != fp);

        // A damaged file is a clear error.
        {
            std::ofstream out(path, std::ios::trunc);
            out << "{\"format\": \"quantbench-sensitivity\", \"version\": 1}";
        }
        auto bad = loadSensitivityAtlas(path);
        QVERIFY(!bad.ok());
        QVERIFY(bad.error().toString().find("sensitivity atlas") != std::string::npos);
    }

    void measuresTrueEffect()
    {
        auto model = qbtest::syntheticModel(2);
        const CalibrationSet calib = qbtest::syntheticCalibration(4, 16);
        const io::Checkpoint ck;
        auto atlas = computeSensitivity(*model, ck, calib, candidates("rtn:2:16,gptq:8:16,F16"));
        QVERIFY(atlas.ok());
        const eval::TokenWindows w = windows();
        const std::size_t t = *atlas->findTensor("model.layers.1.mlp.down_proj");
        auto two = measureTensorEffect(*model, *atlas, t, 0, calib, w);
        QVERIFY2(two.ok(), two.ok() ? "" : two.error().toString().c_str());
        auto eight = measureTensorEffect(*model, *atlas, t, 1, calib, w);
        QVERIFY(eight.ok());
        auto kept = measureTensorEffect(*model, *atlas, t, 2, calib, w);
        QVERIFY(kept.ok());
        QVERIFY(two->klMean > eight->klMean);
        QVERIFY(eight->klMean > 0);
        QCOMPARE(kept->klMean, 0.0); // F16 candidate: the same model
        QCOMPARE(kept->perplexity, kept->referencePerplexity);
        QCOMPARE(atlas->measured.size(), std::size_t(3));
        // Measuring again replaces, not appends.
        QVERIFY(measureTensorEffect(*model, *atlas, t, 0, calib, w).ok());
        QCOMPARE(atlas->measured.size(), std::size_t(3));
        QVERIFY(!measureTensorEffect(*model, *atlas, 99, 0, calib, w).ok());
        QCOMPARE(atlas->measuredOn, measurementKey(w));

        // Measurements belong to their windows: on another context they are dropped, not mixed.
        std::vector<std::int32_t> tokens(w.ids.begin(), w.ids.end());
        const eval::TokenWindows other = eval::makeWindows(tokens, 16).value();
        QVERIFY(measurementKey(other) != measurementKey(w));
        auto again = measureTensorEffect(*model, *atlas, t, 0, calib, other);
        QVERIFY(again.ok());
        QCOMPARE(atlas->measured.size(), std::size_t(1));
        QCOMPARE(atlas->measuredOn, measurementKey(other));
        QVERIFY(again->klMean != two->klMean); // other windows, another number
        QCOMPARE(atlas->useMeasurementWindows(measurementKey(other)), std::size_t(0));
        QCOMPARE(atlas->useMeasurementWindows(measurementKey(w)), std::size_t(1));
        QVERIFY(atlas->measured.empty());
    }
};

QTEST_GUILESS_MAIN(TestSensitivity)
#include "tst_sensitivity.moc"
