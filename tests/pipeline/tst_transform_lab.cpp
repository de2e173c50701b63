// The transform lab (pipeline/transform_lab.h) on the demo model with planted outlier channels
// (three RMSNorm gain entries of layer 0 x 30, the matching q/k/v columns / 30: the same function):
// the original stage shows the outliers, smoothing and a Hadamard rotation flatten them and cut the
// 4-bit output error; an identity stage reproduces the original exactly; every stage preserves the
// function with quantization off; the capture agrees with the activation job; builders, errors,
// cancel and the workflow. RUQuant's stages (ruquant_lab.h) in order, fitted as documented,
// preserving the function; the within-cell statistics on synthetic data whose answer is known.

#include "model/forward.h"
#include "model/runtime.h"
#include "model_test_util.h"
#include "pipeline/activation_job.h"
#include "pipeline/ruquant_lab.h"
#include "pipeline/smoothing.h"
#include "pipeline/transform_lab.h"

#include <QTest>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

using namespace qb;
using namespace qb::pipeline;
using model::LinearKind;
using model::RowMatrix;

namespace {

constexpr float kOutlierScale = 30.f;
const Eigen::Index kOutliers[] = {5, 40, 77};

std::shared_ptr<model::Model> outlierDemo()
{
    std::string err;
    auto m = qbtest::loadModelDir(qbtest::demoDir(), &err);
    if (!m) return nullptr;
    auto w = std::make_shared<model::DecoderLayerWeights>(*m->layer(0));
    for (Eigen::Index j : kOutliers) {
        w->inputNorm[j] *= kOutlierScale;
        for (RowMatrix* x : {&w->q, &w->k, &w->v})
            x->col(j) /= kOutlierScale;
    }
    m->setLayer(0, w);
    return m;
}

CalibrationSet demoCalibration() { return sampleCalibrationWindows(qbtest::goldenTokens(), {8, 64, 0}).value(); }

// diag(±1)·H_n/√n, Sylvester, n a power of two (model/hadamard.h builds every size; this is the
// independent dense reference).
std::shared_ptr<const model::RowTransform> sylvester(Eigen::Index n, unsigned seed)
{
    RowMatrix h(n, n);
    std::mt19937 rng(seed);
    for (Eigen::Index i = 0; i < n; ++i) {
        const float sign = (rng() & 1) ? -1.f : 1.f;
        for (Eigen::Index j = 0; j < n; ++j)
            h(i, j) = sign * ((__builtin_popcountll(std::uint64_t(i & j)) & 1) ? -1.f : 1.f) / std::sqrt(float(n));
    }
    return std::make_shared<model::DenseRowTransform>(std::move(h), "Sylvester Hadamard " + std::to_string(n));
}

std::shared_ptr<const model::RowTransform> identity(Eigen::Index n)
{
    return std::make_shared<model::DenseRowTransform>(RowMatrix::Identity(n, n), "identity");
}

void print(const LabResult& r)
{
    qInfo("layer %d %s, %lld of %lld tokens, A%d; histogram range [%.3g, %.3g]", r.layer, model::linearKindName(r.kind),
          (long long)r.sampledTokens, (long long)r.totalTokens, r.quant.bits, r.histLo, r.histHi);
    for (const auto& s : r.stages)
        qInfo("  %-28s max/median channel %7.2f  kurtosis %8.2f  token kurtosis %8.2f  token max|x| median %7.3f"
              "  quant rel MSE %.4g  output error %.4f",
              s.label.c_str(), s.channelRatio, s.moments.kurtosis, s.tokens.kurtosisMean, s.tokens.maxAbsMedian,
              s.quantError, s.outputError);
}

} // namespace

class TestTransformLab : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }

    void outliersAndWhatEachTransformBuys()
    {
        auto m = outlierDemo();
        QVERIFY(m);
        const CalibrationSet calib = demoCalibration();
        LabOptions o;
        auto cap = captureLabInput(*m, calib, 0, LinearKind::Qkv, o);
        QVERIFY2(cap.ok(), cap.ok() ? "" : cap.error().toString().c_str());
        QCOMPARE(cap->channels(), Eigen::Index(128));
        QCOMPARE(cap->weights.size(), std::size_t(3));
        const auto h = sylvester(128, 1);
        std::vector<LabStage> stages = {{"original", std::nullopt, {}},
                                        {"smoothed", 0.6, {}},
                                        {"Hadamard", std::nullopt, {h}},
                                        {"smoothed + Hadamard", 0.6, {h}},
                                        {"identity", std::nullopt, {identity(128)}}};
        auto r = analyzeLabStages(*cap, stages, {}, o);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        print(*r);
        QCOMPARE(r->stages.size(), std::size_t(5));
        const LabStageResult &orig = r->stages[0], &sm = r->stages[1], &had = r->stages[2], &both = r->stages[3],
                             &id = r->stages[4];
        // The planted channels are the loudest ones of the original.
        std::vector<int> top = eval::topIndices(orig.channelMaxAbs, 3);
        std::sort(top.begin(), top.end());
        QCOMPARE(top, (std::vector<int>{5, 40, 77}));
        QVERIFY(orig.channelRatio > 20);
        QVERIFY(orig.moments.kurtosis > 20);
        QVERIFY(orig.tokens.kurtosisMean > 10);
        QVERIFY(!orig.rotated && !sm.rotated && had.rotated);
        // Both transforms flatten the channels and the per-token distributions.
        for (const LabStageResult* s : {&sm, &had, &both}) {
            QVERIFY2(s->channelRatio < orig.channelRatio / 4, s->label.c_str());
            QVERIFY2(s->moments.kurtosis < orig.moments.kurtosis / 4, s->label.c_str());
            QVERIFY2(s->tokens.kurtosisMean < orig.tokens.kurtosisMean / 2, s->label.c_str());
            // ... and that is what 4-bit activations need: the output error drops.
            QVERIFY2(s->outputError < 0.75 * orig.outputError, s->label.c_str());
        }
        QVERIFY(both.outputError < sm.outputError);
        // The outlier channels' own error is small in the original (their range sets the grid) and
        // the ordinary channels' large; smoothing evens that out.
        const double ordinaryOrig = orig.channelQuantError[0], ordinarySm = sm.channelQuantError[0];
        QVERIFY(ordinarySm < ordinaryOrig);
        // One histogram range for all stages, every value counted.
        for (const auto& s : r->stages) {
            QCOMPARE(s.histogram.lo, r->histLo);
            QCOMPARE(s.histogram.hi, r->histHi);
            QCOMPARE(s.histogram.total(), std::int64_t(cap->x.size()));
        }
        QVERIFY(r->histLo <= orig.moments.min && r->histHi >= orig.moments.max);
        // The identity stage reproduces the original exactly.
        QVERIFY(id.histogram.counts == orig.histogram.counts);
        QVERIFY(id.channelMaxAbs == orig.channelMaxAbs);
        QVERIFY(id.channelKurtosis == orig.channelKurtosis);
        QVERIFY(id.channelQuantError == orig.channelQuantError);
        QCOMPARE(id.outputError, orig.outputError);
        QCOMPARE(id.quantError, orig.quantError);
        QCOMPARE(id.moments.kurtosis, orig.moments.kurtosis);
        QCOMPARE(id.transform, std::string("identity"));
        // applyLabStage gives the rows the statistics were taken on.
        for (std::size_t i : {std::size_t(1), std::size_t(3)}) {
            auto xt = applyLabStage(*cap, stages[i]);
            QVERIFY(xt.ok());
            for (Eigen::Index j = 0; j < xt->cols(); ++j)
                QCOMPARE(xt->col(j).cwiseAbs().maxCoeff(), r->stages[i].channelMaxAbs[std::size_t(j)]);
        }
    }

    void weightBitsShowSmoothingsCost()
    {
        // Smoothing migrates the outliers into the weights: with 4-bit weights (activations off) the
        // fully migrated α = 1 costs more than α = 0.6; W4A4 costs more than A4 alone. (The planted
        // columns / 30 of the original lose their weights to rounding: W4 alone is worst there.)
        auto m = outlierDemo();
        QVERIFY(m);
        LabOptions o;
        auto cap = captureLabInput(*m, demoCalibration(), 0, LinearKind::Qkv, o);
        QVERIFY(cap.ok());
        const std::vector<LabStage> stages = {
            {"original", std::nullopt, {}}, {"smoothed 0.6", 0.6, {}}, {"smoothed 1.0", 1.0, {}}};
        LabOptions w4 = o, w4a4 = o;
        w4.quant.bits = 0;
        w4.weightBits = 4;
        w4a4.weightBits = 4;
        auto a4 = analyzeLabStages(*cap, stages, {}, o);
        auto rw4 = analyzeLabStages(*cap, stages, {}, w4);
        auto rw4a4 = analyzeLabStages(*cap, stages, {}, w4a4);
        QVERIFY(a4.ok() && rw4.ok() && rw4a4.ok());
        QCOMPARE(rw4a4->weightBits, 4);
        for (std::size_t i = 0; i < stages.size(); ++i) {
            qInfo("%-14s output error A4 %.4f  W4 %.4f  W4A4 %.4f", stages[i].label.c_str(), a4->stages[i].outputError,
                  rw4->stages[i].outputError, rw4a4->stages[i].outputError);
            QVERIFY(rw4a4->stages[i].outputError > a4->stages[i].outputError);
        }
        QVERIFY(rw4->stages[2].outputError > rw4->stages[1].outputError);
        QVERIFY(rw4a4->stages[1].outputError < rw4a4->stages[0].outputError);
        o.weightBits = 1;
        QVERIFY(!analyzeLabStages(*cap, stages, {}, o).ok());
    }

    void standardStagesUseTheFastHadamard_data()
    {
        QTest::addColumn<int>("kind");
        QTest::newRow("qkv (128 = 2^7)") << int(LinearKind::Qkv);
        QTest::newRow("down (352 = 44 x 8, Paley)") << int(LinearKind::Down);
    }

    void standardStagesUseTheFastHadamard()
    {
        // The lab's Hadamard stages (model::HadamardTransform, fast) against the same rotation as a
        // dense matrix, on the planted outliers: same numbers, and the rotation pays off.
        QFETCH(int, kind);
        auto m = outlierDemo();
        QVERIFY(m);
        LabOptions o;
        auto cap = captureLabInput(*m, demoCalibration(), 0, LinearKind(kind), o);
        QVERIFY(cap.ok());
        std::vector<std::string> notes;
        std::vector<LabStage> stages = standardLabStages(cap->channels(), 0.6, true, 5, &notes);
        QVERIFY(notes.empty());
        QCOMPARE(stages.size(), std::size_t(4));
        QCOMPARE(stages[2].label, std::string("Hadamard"));
        QCOMPARE(stages[3].label, std::string("smoothed (α 0.6) + Hadamard"));
        const auto& h = stages[2].transforms.front();
        QCOMPARE(h->size(), cap->channels());
        stages.push_back({"dense", std::nullopt, {std::make_shared<model::DenseRowTransform>(h->dense(), "dense")}});
        auto r = analyzeLabStages(*cap, stages, {}, o);
        QVERIFY(r.ok());
        print(*r);
        const auto &orig = r->stages[0], &had = r->stages[2], &dense = r->stages[4];
        QVERIFY(had.rotated);
        QVERIFY(had.transform.find("Hadamard " + std::to_string(cap->channels())) != std::string::npos);
        QVERIFY(std::abs(had.outputError - dense.outputError) <= 1e-3 * dense.outputError);
        QVERIFY(std::abs(had.moments.kurtosis - dense.moments.kurtosis) <=
                1e-3 * (1 + std::abs(dense.moments.kurtosis)));
        QVERIFY(had.outputError <= orig.outputError);
        if (LinearKind(kind) == LinearKind::Qkv) {
            QVERIFY(had.channelRatio < orig.channelRatio / 4);
            QVERIFY(had.outputError < 0.75 * orig.outputError);
        }
    }

    void everyStagePreservesTheFunction()
    {
        auto m = outlierDemo();
        QVERIFY(m);
        LabOptions o;
        o.quant.bits = 0; // quantization off: X_t·W_tᵀ = X·Wᵀ up to float rounding
        for (LinearKind k : {LinearKind::Qkv, LinearKind::O, LinearKind::GateUp, LinearKind::Down}) {
            auto cap = captureLabInput(*m, demoCalibration(), 1, k, o);
            QVERIFY(cap.ok());
            std::vector<LabStage> stages = {{"original", std::nullopt, {}}, {"smoothed", 0.5, {}}};
            if (cap->channels() == 128) stages.push_back({"smoothed + Hadamard", 0.5, {sylvester(128, 2)}});
            auto r = analyzeLabStages(*cap, stages, {}, o);
            QVERIFY(r.ok());
            for (const auto& s : r->stages) {
                QVERIFY2(s.outputError < 1e-5,
                         qPrintable(QString::fromStdString(s.label) + " " + QString::number(s.outputError)));
                QCOMPARE(s.quantError, 0.0);
            }
        }
    }

    void captureAgreesWithTheActivationJob()
    {
        auto ck = io::openCheckpoint(qbtest::demoDir());
        QVERIFY(ck.ok());
        auto m = qbtest::loadModelDir(qbtest::demoDir());
        QVERIFY(m);
        const CalibrationSet calib = demoCalibration();
        auto stats = collectActivationStats(*m, calib, {});
        QVERIFY(stats.ok());
        LabOptions o;
        o.maxTokens = 100;
        for (auto [layer, kind] : {std::pair{0, LinearKind::Qkv}, std::pair{2, LinearKind::Down},
                                   std::pair{3, LinearKind::O}, std::pair{1, LinearKind::GateUp}}) {
            auto fromModel = captureLabInput(*m, calib, layer, kind, o);
            auto fromFile = captureLabInput(*ck, calib, layer, kind, o);
            QVERIFY(fromModel.ok() && fromFile.ok());
            QCOMPARE(fromModel->x.rows(), Eigen::Index(100));
            QCOMPARE(fromModel->rows.front(), std::int64_t(0));
            QCOMPARE(fromModel->rows.back(), std::int64_t(99 * calib.tokens() / 100));
            QVERIFY(fromModel->x == fromFile->x); // deterministic sampling, same arithmetic
            const std::vector<float> ref = stats->taps.at({layer, kind}).channelMaxAbs();
            QVERIFY(fromModel->channelMaxAbs == ref);
            // The mean sequence averages the windows position by position.
            QCOMPARE(fromModel->meanPerPosition.rows(), Eigen::Index(calib.seqlen));
            QVERIFY(fromModel->meanPerPosition.allFinite());
        }
        // Sampled row i of the full capture is token i·N/n: with n = N every token in order.
        o.maxTokens = int(calib.tokens());
        auto all = captureLabInput(*m, calib, 0, LinearKind::Qkv, o);
        QVERIFY(all.ok());
        model::RowMatrix meanPos0 = model::RowMatrix::Zero(1, all->channels());
        for (int w = 0; w < calib.count; ++w)
            meanPos0 += all->x.row(Eigen::Index(w) * calib.seqlen + 5);
        meanPos0 /= float(calib.count);
        QVERIFY((meanPos0 - all->meanPerPosition.row(5)).norm() <= 1e-5 * (1 + meanPos0.norm()));
    }

    void buildersAddFittedStages()
    {
        // A stand-in for RUQuant's data-fitted stages: a permutation sorting channels by max |x|,
        // built from the capture (as the zig-zag permutation is), then a rotation after it.
        auto m = outlierDemo();
        QVERIFY(m);
        LabOptions o;
        auto cap = captureLabInput(*m, demoCalibration(), 0, LinearKind::Qkv, o);
        QVERIFY(cap.ok());
        int calls = 0;
        LabStageBuilder sortByMax = [&](const LabCapture& c, RunContext*) -> Result<std::vector<LabStage>> {
            ++calls;
            const Eigen::Index n = c.channels();
            std::vector<int> order(static_cast<std::size_t>(n));
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
                return c.channelMaxAbs[std::size_t(a)] > c.channelMaxAbs[std::size_t(b)];
            });
            RowMatrix p = RowMatrix::Zero(n, n);
            for (Eigen::Index j = 0; j < n; ++j)
                p(order[std::size_t(j)], j) = 1; // x·P puts channel order[j] at j
            auto perm = std::make_shared<model::DenseRowTransform>(std::move(p), "sort by max |x|");
            return std::vector<LabStage>{{"sorted", std::nullopt, {perm}},
                                         {"sorted + Hadamard", std::nullopt, {perm, sylvester(n, 3)}}};
        };
        auto r = analyzeLabStages(*cap, {{"original", std::nullopt, {}}}, {sortByMax}, o);
        QVERIFY(r.ok());
        QCOMPARE(calls, 1);
        QCOMPARE(r->stages.size(), std::size_t(3));
        QCOMPARE(r->stages[1].label, std::string("sorted"));
        QCOMPARE(r->stages[2].transform, std::string("sort by max |x|; Sylvester Hadamard 128"));
        // The permutation only reorders channels: the loudest is now channel 0.
        QCOMPARE(eval::topIndices(r->stages[1].channelMaxAbs, 1).front(), 0);
        QVERIFY(r->stages[2].outputError < r->stages[0].outputError);
    }

    void errors()
    {
        auto m = outlierDemo();
        QVERIFY(m);
        LabOptions o;
        const CalibrationSet calib = demoCalibration();
        auto bad = captureLabInput(*m, calib, 4, LinearKind::Qkv, o);
        QVERIFY(!bad.ok());
        QVERIFY(bad.error().toString().find("layer 4") != std::string::npos);
        auto cap = captureLabInput(*m, calib, 0, LinearKind::Down, o);
        QVERIFY(cap.ok());
        QCOMPARE(cap->channels(), Eigen::Index(352));
        auto wrong = analyzeLabStages(*cap, {{"Hadamard 128", std::nullopt, {sylvester(128, 0)}}}, {}, o);
        QVERIFY(!wrong.ok());
        QVERIFY(wrong.error().toString().find("352") != std::string::npos);
        auto alpha = analyzeLabStages(*cap, {{"smoothed", 1.5, {}}}, {}, o);
        QVERIFY(!alpha.ok());
        QVERIFY(alpha.error().toString().find("[0, 1]") != std::string::npos);
        QVERIFY(!analyzeLabStages(*cap, {}, {}, o).ok());
        LabStageBuilder failing = [](const LabCapture&, RunContext*) -> Result<std::vector<LabStage>> {
            return makeError(ErrorCode::NumericalError, "fit failed");
        };
        auto f = analyzeLabStages(*cap, {{"original", std::nullopt, {}}}, {failing}, o);
        QVERIFY(!f.ok() && f.error().code == ErrorCode::NumericalError);
    }

    void cancelAndProgress()
    {
        auto m = outlierDemo();
        QVERIFY(m);
        RunContext ctx;
        ctx.requestCancel();
        auto c = captureLabInput(*m, demoCalibration(), 2, LinearKind::Qkv, {}, &ctx);
        QVERIFY(!c.ok());
        QCOMPARE(c.error().code, ErrorCode::Cancelled);
        RunContext ok;
        auto cap = captureLabInput(*m, demoCalibration(), 2, LinearKind::Qkv, {}, &ok);
        QVERIFY(cap.ok());
        QCOMPARE(ok.progress().stage, std::string("capture"));
        QCOMPARE(ok.progress().done, ok.progress().total);
        auto r = analyzeLabStages(*cap, {{"original", std::nullopt, {}}, {"smoothed", 0.6, {}}}, {}, {}, &ok);
        QVERIFY(r.ok());
        QCOMPARE(ok.progress().stage, std::string("transform lab"));
        QCOMPARE(ok.progress().done, std::int64_t(4));
        ok.requestCancel();
        auto rc = analyzeLabStages(*cap, {{"original", std::nullopt, {}}}, {}, {}, &ok);
        QVERIFY(!rc.ok() && rc.error().code == ErrorCode::Cancelled);
    }

    void withinCellUniformAndOffCentre()
    {
        // Every row spans [-1, 1.1] (channels 0 and 1), so every token has the same 4-bit asymmetric
        // grid: s = 2.1/15 = 0.14, zero = round(1/0.14) = 7, levels (q − 7)·s.
        const int n = 20000;
        const float s = 2.1f / 15.f;
        std::mt19937 rng(7);
        std::uniform_real_distribution<float> uni(-6.5f * s, 6.5f * s), jitter(-0.05f, 0.05f);
        std::uniform_int_distribution<int> level(-6, 6);
        std::normal_distribution<float> normal(0.f, 0.15f);
        RowMatrix x(n, 5);
        for (int t = 0; t < n; ++t) {
            x(t, 0) = -1.f;
            x(t, 1) = 1.1f;
            x(t, 2) = uni(rng);                                     // whole cells -6..6, uniform inside each
            x(t, 3) = (float(level(rng)) - 0.3f + jitter(rng)) * s; // u ≈ 0.2 in every cell
            x(t, 4) = std::clamp(normal(rng), -0.99f, 0.99f);       // peaked: density falls across cells
        }
        const model::ActQuantSpec a4 = fourBitsPerToken();
        auto uniform = withinCellStats(x, 2, a4, 10);
        auto off = withinCellStats(x, 3, a4, 10);
        auto peaked = withinCellStats(x, 4, a4, 10);
        QVERIFY(uniform.ok() && off.ok() && peaked.ok());
        qInfo("uniform: ratio %.4f |offset| %.4f mse mid %.5f; off-centre: ratio %.2f |offset| %.4f; peaked: ratio "
              "%.4f |offset| %.4f",
              uniform->mseRatio, uniform->meanAbsOffset, uniform->mseMidpoint, off->mseRatio, off->meanAbsOffset,
              peaked->mseRatio, peaked->meanAbsOffset);
        QCOMPARE(uniform->values, std::int64_t(n));
        QCOMPARE(uniform->clipped + uniform->exact, std::int64_t(0));
        QCOMPARE(uniform->cellCount.size(), std::size_t(16));
        QCOMPARE(uniform->positions.size(), std::size_t(10));
        QVERIFY(uniform->mseRatio >= 1.0 && uniform->mseRatio < 1.02);
        QVERIFY(uniform->meanAbsOffset < 0.03);
        QVERIFY(std::abs(uniform->mseMidpoint - 1.0 / 12) < 0.003);
        for (auto c : uniform->positions) // flat: 2000 per bin
            QVERIFY2(std::abs(double(c) - n / 10.0) < 0.1 * n / 10.0, qPrintable(QString::number(c)));
        // Off-centre: every value at u ≈ 0.2 of its cell (level m + 7), centroid offset −0.3.
        QVERIFY(std::abs(off->meanAbsOffset - 0.3) < 0.01);
        QVERIFY(off->mseRatio > 50);
        for (int m = -6; m <= 6; ++m) {
            QVERIFY(off->cellCount[std::size_t(m + 7)] > 0);
            QVERIFY(std::abs(off->centroidOffset[std::size_t(m + 7)] + 0.3) < 0.01);
        }
        QCOMPARE(off->cellCount[0] + off->cellCount[14] + off->cellCount[15], std::int64_t(0));
        QCOMPARE(off->positions[2] + off->positions[1], std::int64_t(n)); // u in [0.15, 0.25]
        // Peaked (normal, σ a little above a cell): the density falls across the outer cells, so
        // their centroids lean towards zero and the midpoint costs more than the centroid.
        QVERIFY(peaked->mseRatio > 1.05);
        QVERIFY(peaked->centroidOffset[7 + 2] < -0.05 && peaked->centroidOffset[7 - 2] > 0.05);
        // Midpoint reconstruction is the fake quantizer: with one grid for all rows, the midpoint
        // MSE in cell units times s² is the quantization MSE of the channel.
        RowMatrix q = x;
        model::fakeQuantizeActivations(q, a4);
        for (int j : {2, 3, 4}) {
            auto st = withinCellStats(x, j, a4, 10);
            const double mse = double((q.col(j) - x.col(j)).squaredNorm()) / n;
            QVERIFY2(std::abs(st->mseMidpoint * s * s - mse) <= 1e-3 * mse, qPrintable(QString::number(j)));
        }
        // Pooled over every channel: the two range-setting channels sit on the grid's ends.
        auto all = withinCellStats(x, -1, a4, 10);
        QVERIFY(all.ok());
        QCOMPARE(all->values, std::int64_t(5) * n);
        QCOMPARE(all->channel, -1);
    }

    void withinCellClipSymmetricAndErrors()
    {
        RowMatrix x(3, 4);
        x << 0, 0, 0, 0,        //
            -1, 1, 0.5f, 0.25f, //
            -1, 1, 0.9f, 0.1f;
        model::ActQuantSpec clip = fourBitsPerToken();
        clip.clip = 0.5f; // range [-0.5, 0.5]: 1, 0.9 and -1 are clipped
        auto c = withinCellStats(x, -1, clip, 4);
        QVERIFY(c.ok());
        QCOMPARE(c->exact, std::int64_t(4)); // the all-zero row
        QCOMPARE(c->clipped, std::int64_t(5));
        QCOMPARE(c->values, std::int64_t(3));
        model::ActQuantSpec sym(4, true, 1.0f);
        auto sy = withinCellStats(x, 2, sym, 4);
        QVERIFY(sy.ok());
        QCOMPARE(sy->cellCount.size(), std::size_t(16));
        QCOMPARE(sy->values, std::int64_t(2));
        model::ActQuantSpec off;
        QVERIFY(!withinCellStats(x, 0, off, 4).ok());
        QVERIFY(!withinCellStats(x, 4, clip, 4).ok());
        QVERIFY(!withinCellStats(x, -2, clip, 4).ok());
        QVERIFY(!withinCellStats(x, 0, clip, 1).ok());
    }

    void ruquantStagesInOrderPreserveTheFunction_data()
    {
        QTest::addColumn<int>("kind");
        QTest::addColumn<int>("block");
        QTest::newRow("qkv (128, B 64)") << int(LinearKind::Qkv) << 64;
        QTest::newRow("down (352, B 128 -> 88)") << int(LinearKind::Down) << 128;
    }

    void ruquantStagesInOrderPreserveTheFunction()
    {
        QFETCH(int, kind);
        QFETCH(int, block);
        auto m = outlierDemo();
        QVERIFY(m);
        LabOptions o;
        o.cellChannel = 5;
        auto cap = captureLabInput(*m, demoCalibration(), 0, LinearKind(kind), o);
        QVERIFY(cap.ok());
        RuquantOptions ro;
        ro.blockSize = block;
        ro.seed = 11;
        std::vector<LabStage> fixed = {{"original", std::nullopt, {}}, {"smoothed", 0.6, {}}};
        auto r = analyzeLabStages(*cap, fixed, {ruquantLabBuilder(ro, 0.6)}, o);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        print(*r);
        const std::vector<std::string> labels = {"original",
                                                 "smoothed",
                                                 "RUQuant stage 1",
                                                 "RUQuant zig-zag",
                                                 "RUQuant stage 1 again",
                                                 "RUQuant global Householder"};
        QCOMPARE(r->stages.size(), labels.size());
        QCOMPARE(r->stageList.size(), labels.size());
        for (std::size_t i = 0; i < labels.size(); ++i) {
            QCOMPARE(r->stages[i].label, labels[i]);
            QCOMPARE(r->stageList[i].transforms.size(), i < 2 ? std::size_t(0) : i - 1); // cumulative
            QVERIFY(r->stages[i].rotated == (i >= 2));
            QCOMPARE(r->stages[i].channelCells.channel, 5);
            QVERIFY(r->stages[i].cells.values > 0);
            QVERIFY(r->stages[i].cells.mseRatio >= 1.0);
            qInfo("  %-28s within-cell ratio all %.4f (|offset| %.4f), channel 5 %.4f (|offset| %.4f)",
                  r->stages[i].label.c_str(), r->stages[i].cells.mseRatio, r->stages[i].cells.meanAbsOffset,
                  r->stages[i].channelCells.mseRatio, r->stages[i].channelCells.meanAbsOffset);
        }
        QVERIFY(r->stages[3].transform.find("zig-zag permutation") != std::string::npos);
        QVERIFY(r->stages[5].transform.find("global Householder") != std::string::npos);
        // The transforms are fitRuquantTransform's on the smoothed mean-per-position signal, seeded
        // per (seed, layer, group).
        std::vector<const RowMatrix*> weights;
        for (const RowMatrix& w : cap->weights)
            weights.push_back(&w);
        const model::RowVector sf = smoothingFactors(cap->channelMaxAbs, weights, 0.6);
        const RowMatrix signal = cap->meanPerPosition * sf.cwiseInverse().asDiagonal();
        auto fit = fitRuquantTransform(signal, ro, ruquantGroupSeed(11, 0, LinearKind(kind)));
        QVERIFY(fit.ok());
        QCOMPARE(fit->parts.size(), std::size_t(4));
        QCOMPARE(model::ChainTransform(fit->parts).describe(),
                 model::ChainTransform(r->stageList.back().transforms).describe());
        RowMatrix a = cap->x.topRows(16), b = a;
        fit->total()->apply(a);
        model::ChainTransform(r->stageList.back().transforms).apply(b);
        QVERIFY((a - b).norm() <= 1e-6f * (1 + a.norm()));
        // With 4-bit activations RUQuant beats the unsmoothed original.
        QVERIFY(r->stages.back().outputError < r->stages[0].outputError);
        // Quantization off: every stage keeps X_t·W_tᵀ = X·Wᵀ within float rounding.
        LabOptions fp = o;
        fp.quant.bits = 0;
        fp.cellChannel = -1;
        auto e = analyzeLabStages(*cap, fixed, {ruquantLabBuilder(ro, 0.6)}, fp);
        QVERIFY(e.ok());
        for (const auto& s : e->stages) {
            QVERIFY2(s.outputError < 1e-5,
                     qPrintable(QString::fromStdString(s.label) + " " + QString::number(s.outputError)));
            QVERIFY(s.cells.empty());
        }
        // An odd block size has no even divisor: the error names it.
        RuquantOptions odd = ro;
        odd.blockSize = 1;
        auto bad = analyzeLabStages(*cap, fixed, {ruquantLabBuilder(odd, 0.6)}, o);
        QVERIFY(!bad.ok());
        QVERIFY(bad.error().toString().find("RUQuant") != std::string::npos);
    }

    void ruquantInTheWorkflowAndWithinCellRedo()
    {
        auto ck = io::openCheckpoint(qbtest::demoDir());
        QVERIFY(ck.ok());
        TransformLabRequest req;
        req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
        req.calibrationText = qbtest::demoDir() + "/calib.txt";
        req.calibration = {8, 64, 0};
        req.layer = 0;
        req.kind = LinearKind::Qkv;
        req.ruquant = true;
        req.ruquantOptions.blockSize = 64;
        req.options.cellChannel = 3;
        auto r = runTransformLab(req);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        print(*r);
        const std::size_t first = r->stages.size() - 4;
        QCOMPARE(r->stages[first].label, std::string("RUQuant stage 1"));
        QCOMPARE(r->stages.back().label, std::string("RUQuant global Householder"));
        QVERIFY(r->capture);
        QCOMPARE(r->stageList.size(), r->stages.size());
        // The channel switch recomputes what the analysis gave for that channel.
        RunContext ctx;
        auto again = labWithinCell(*r, 3, &ctx);
        QVERIFY(again.ok());
        QCOMPARE(again->size(), r->stages.size());
        for (std::size_t i = 0; i < again->size(); ++i) {
            QVERIFY((*again)[i].positions == r->stages[i].channelCells.positions);
            QVERIFY((*again)[i].cellCount == r->stages[i].channelCells.cellCount);
            QCOMPARE((*again)[i].mseRatio, r->stages[i].channelCells.mseRatio);
        }
        QCOMPARE(ctx.progress().stage, std::string("within-cell"));
        auto other = labWithinCell(*r, 100);
        QVERIFY(other.ok());
        QCOMPARE(other->front().channel, 100);
        QVERIFY(!labWithinCell(*r, 128).ok());
        ctx.requestCancel();
        auto c = labWithinCell(*r, 3, &ctx);
        QVERIFY(!c.ok() && c.error().code == ErrorCode::Cancelled);
        // JSON: the within-cell objects per stage.
        const io::JsonValue j = transformLabJson(*r);
        QVERIFY(j.find("cell_channel") && j.find("cell_channel")->asInteger() == 3);
        const io::JsonValue& last = j.find("stages")->asArray().back();
        QVERIFY(last.find("cells") && last.find("channel_cells"));
        QCOMPARE(last.find("channel_cells")->find("positions")->asArray().size(), std::size_t(20));
        QCOMPARE(last.find("cells")->find("mse_ratio")->asNumber(), r->stages.back().cells.mseRatio);
    }

    void workflowOnTheDemoCheckpoint()
    {
        auto ck = io::openCheckpoint(qbtest::demoDir());
        QVERIFY(ck.ok());
        TransformLabRequest req;
        req.checkpoint = std::make_shared<const io::Checkpoint>(std::move(*ck));
        req.calibrationText = qbtest::demoDir() + "/calib.txt";
        req.calibration = {8, 64, 0};
        req.layer = 1;
        req.kind = LinearKind::GateUp;
        req.options.quant.bits = 6;
        req.extraStages.push_back({"identity", std::nullopt, {identity(128)}});
        RunContext ctx;
        auto r = runTransformLab(req, &ctx);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        print(*r);
        QCOMPARE(r->quant.bits, 6);
        QCOMPARE(r->totalTokens, std::int64_t(8 * 64));
        const bool hadamard = labHadamard(128, 0).ok();
        QCOMPARE(r->stages.size(), std::size_t(hadamard ? 5 : 3));
        QCOMPARE(r->stages.front().label, std::string("original"));
        QCOMPARE(r->stages[1].label, std::string("smoothed (α 0.6)"));
        QCOMPARE(r->notes.empty(), hadamard);
        QVERIFY(r->stages.back().outputError == r->stages.front().outputError);
        QVERIFY(ctx.progress().overall > 0.99);
        req.checkpoint = nullptr;
        QVERIFY(!runTransformLab(req).ok());
    }
};

QTEST_GUILESS_MAIN(TestTransformLab)
#include "tst_transform_lab.moc"
