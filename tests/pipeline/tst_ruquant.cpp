// RUQuant's transforms (METHODS.md §4, unit tests §6.2 items 14–20): Householder and Givens
// steps, the composed block rotation's orthogonality, the zig-zag permutation, FP equivalence of
// the whole T_total on weights and activations, statistical effects on planted outliers,
// determinism; and ruquantModel: the transformed model computes the same logits with quantization
// off, bad input is refused.

#include "model/forward.h"
#include "model/ortho_ops.h"
#include "pipeline/quant_plan.h"
#include "pipeline/rotation.h"
#include "pipeline/ruquant.h"
#include "pipeline/ruquant_finetune.h"
#include "pipeline/activation_setup.h"
#include "quant/gptq.h"
#include "quant_test_models.h"

#include <QTest>

#include <algorithm>
#include <cmath>
#include <random>

using namespace qb;
using namespace qb::pipeline;
using model::RowMatrix;

namespace {

constexpr double kDoubleTol = 1e-12;
constexpr double kFloatOrthoTol = 1e-5;
constexpr double kLogitRelTolerance = 1e-4;

// Activations with planted outlier channels: N(0, 1) everywhere, `outliers` channels scaled by 30.
RowMatrix outlierActivations(Eigen::Index rows, Eigen::Index cols, int outliers, unsigned seed)
{
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.f, 1.f);
    RowMatrix x(rows, cols);
    for (Eigen::Index i = 0; i < x.size(); ++i)
        x.data()[i] = n(rng);
    std::uniform_int_distribution<Eigen::Index> pick(0, cols - 1);
    for (int k = 0; k < outliers; ++k)
        x.col(pick(rng)) *= 30.f;
    return x;
}

double perTokenQuantMse(RowMatrix x, int bits)
{
    const RowMatrix ref = x;
    model::fakeQuantizeActivations(x, model::ActQuantSpec(bits, false, 1.0f));
    return (x - ref).squaredNorm() / ref.squaredNorm();
}

double meanTokenMax(const RowMatrix& x) { return x.cwiseAbs().rowwise().maxCoeff().mean(); }

model::RowMatrix logitsOf(const model::Model& m, const CalibrationSet& calib)
{
    model::Workspace ws;
    auto r = model::forwardLogits(m, calib.ids, calib.seqlen, ws);
    return r.ok() ? *r : model::RowMatrix();
}

// The fine-tuning tests' setting: W3, A4 with clip 0.9, KV and q A4, blocks of 16.
RuquantOptions finetuneTestOptions()
{
    RuquantOptions o;
    o.blockSize = 16;
    o.weightBits = 3;
    o.act.fill(model::ActQuantSpec(4, false, 0.9f));
    o.k = o.v = o.q = model::ActQuantSpec(4, false, 1.0f);
    return o;
}

} // namespace

class TestRuquant : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { model::setNumThreads(2); }

    // §6.2 item 14.
    void householderMapsVToT()
    {
        RuquantRng rng(3);
        for (int trial = 0; trial < 20; ++trial) {
            const Eigen::Index n = 8 + trial;
            Eigen::VectorXd v(n), t(n);
            for (Eigen::Index i = 0; i < n; ++i) {
                v[i] = rng.uniform() * 2 - 1;
                t[i] = rng.uniform();
            }
            t *= v.norm() / t.norm();
            model::OrthoOpList list(n);
            list.push(model::OrthoOp::householder(v - t));
            const Eigen::MatrixXd p = list.matrix();
            QVERIFY((p - p.transpose()).cwiseAbs().maxCoeff() < kDoubleTol);
            QVERIFY((p * p - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() < kDoubleTol);
            Eigen::VectorXd y = v;
            list.apply(y.data());
            QVERIFY((y - t).cwiseAbs().maxCoeff() < kDoubleTol);
        }
    }

    // §6.2 item 15, and the public code's mirrored variant (§4(f)).
    void givensMapsPairsOntoTargets()
    {
        RuquantRng rng(5);
        const Eigen::Index n = 16;
        Eigen::VectorXd v(n), t(n);
        for (Eigen::Index i = 0; i < n; ++i)
            v[i] = rng.uniform() * 2 - 1;
        for (Eigen::Index i = 0; i < n; i += 2) {
            const double a = rng.uniform() * 1.5, r = std::hypot(v[i], v[i + 1]);
            t[i] = r * std::cos(a);
            t[i + 1] = r * std::sin(a);
        }
        Eigen::VectorXd y = v;
        model::OrthoOpList list(n);
        list.push(givensTowards(v, t, false));
        list.apply(y.data());
        QVERIFY((y - t).cwiseAbs().maxCoeff() < kDoubleTol);
        const Eigen::MatrixXd g = list.matrix();
        QVERIFY((g.transpose() * g - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() < kDoubleTol);

        Eigen::VectorXd src(2), dst(2);
        src << 1, 0;
        dst << 0, 1;
        model::OrthoOpList repo(2);
        repo.push(givensTowards(src, dst, true));
        repo.apply(src.data());
        QVERIFY(std::abs(src[0]) < kDoubleTol && std::abs(src[1] + 1) < kDoubleTol); // (1, 0) -> (0, -1)
    }

    // The greedy build (each operation applied in the pass that finds the next largest vector, a
    // permutation merged into the Givens layer after it) is METHODS §4(a) item 1 step by step:
    // every op applied on its own, the largest vector searched again after each. Small and large
    // signals (the parallel pass).
    void greedyRotationFollowsTheStepByStepDefinition()
    {
        for (const Eigen::Index rows : {Eigen::Index(40), Eigen::Index(9000)}) {
            const RowMatrix x = outlierActivations(rows, 128, 5, 3);
            MatrixXdRow fast = x.cast<double>(), slow = fast;
            RuquantOptions o;
            o.householderSteps = 5;
            RuquantRng rngFast(17), rngSlow(17);
            const model::OrthoOpList built = buildGreedyBlockRotation(fast, o, rngFast);

            const Eigen::Index b = slow.cols();
            auto largest = [&] {
                Eigen::Index best = 0;
                double m = -1;
                for (Eigen::Index r = 0; r < slow.rows(); ++r)
                    if (const double v = slow.row(r).cwiseAbs().maxCoeff(); v > m) m = v, best = r;
                return best;
            };
            auto apply = [&](const model::OrthoOp& op) {
                model::OrthoOpList one(b);
                one.push(op);
                one.applyMany(slow.data(), slow.rows());
            };
            model::OrthoOpList ref(b);
            for (int k = 0; k < o.householderSteps; ++k) {
                const Eigen::VectorXd v = slow.row(largest()).transpose();
                Eigen::VectorXd t(b);
                for (Eigen::Index i = 0; i < b; ++i)
                    t[i] = rngSlow.uniform();
                t *= v.norm() / t.norm();
                if ((v - t).squaredNorm() >= 1e-10) {
                    const model::OrthoOp h = model::OrthoOp::householder(v - t);
                    apply(h);
                    ref.push(h);
                }
                for (int r = 0; r < o.givensRounds; ++r) {
                    const model::OrthoOp perm = model::OrthoOp::permutation(rngSlow.permutation(int(b)));
                    apply(perm);
                    ref.push(perm);
                    const Eigen::VectorXd w = slow.row(largest()).transpose();
                    Eigen::VectorXd g(b);
                    for (Eigen::Index i = 0; i + 1 < b; i += 2) {
                        double p = rngSlow.uniform(), q = rngSlow.uniform();
                        const double n = std::hypot(p, q);
                        p /= n, q /= n;
                        const double r2 = std::hypot(w[i], w[i + 1]);
                        g[i] = r2 * p;
                        g[i + 1] = r2 * q;
                    }
                    const model::OrthoOp giv = givensTowards(w, g, false);
                    apply(giv);
                    ref.push(giv);
                }
            }
            QCOMPARE(built.ops().size(), ref.ops().size());
            QVERIFY((built.matrix() - ref.matrix()).cwiseAbs().maxCoeff() < 1e-9);
            QVERIFY((fast - slow).cwiseAbs().maxCoeff() < 1e-9 * slow.cwiseAbs().maxCoeff());
        }
    }

    // §6.2 items 16 and 20: 112 factors stay orthogonal; same seed, same R; op list = dense.
    void greedyRotationIsOrthogonalAndDeterministic()
    {
        const RowMatrix x = outlierActivations(64, 256, 6, 11);
        RuquantOptions o;
        o.blockSize = 32;
        auto a = fitRuquantTransform(x, o, 42);
        auto b = fitRuquantTransform(x, o, 42);
        auto c = fitRuquantTransform(x, o, 43);
        QVERIFY2(a.ok(), a.ok() ? "" : a.error().message.c_str());
        QCOMPARE(a->blockSize, Eigen::Index(32));
        QCOMPARE(a->parts.size(), std::size_t(4)); // R1, zig-zag, R2, global Householder
        const auto* r1 = dynamic_cast<const model::BlockOpTransform*>(a->parts[0].get());
        QVERIFY(r1);
        QCOMPARE(r1->ops().ops().size(), std::size_t(16 * (1 + 2 * 3)));
        const Eigen::MatrixXd r = r1->ops().matrix();
        QVERIFY((r.transpose() * r - Eigen::MatrixXd::Identity(32, 32)).cwiseAbs().maxCoeff() < kDoubleTol);
        const Eigen::MatrixXf rf = r.cast<float>();
        QVERIFY((rf.transpose() * rf - Eigen::MatrixXf::Identity(32, 32)).cwiseAbs().maxCoeff() < kFloatOrthoTol);
        const auto* r1b = dynamic_cast<const model::BlockOpTransform*>(b->parts[0].get());
        const auto* r1c = dynamic_cast<const model::BlockOpTransform*>(c->parts[0].get());
        QVERIFY((r1b->ops().matrix() - r).cwiseAbs().maxCoeff() == 0);
        QVERIFY((r1c->ops().matrix() - r).cwiseAbs().maxCoeff() > 1e-3);
        // Op-list application in double against the dense R, on random vectors.
        RuquantRng rng(9);
        for (int k = 0; k < 10; ++k) {
            Eigen::VectorXd v(32);
            for (Eigen::Index i = 0; i < 32; ++i)
                v[i] = rng.uniform() - 0.5;
            const Eigen::VectorXd dense = r * v;
            r1->ops().apply(v.data());
            QVERIFY((dense - v).cwiseAbs().maxCoeff() < 1e-10);
        }
        // The whole T_total is orthogonal (float) and every part is the size of the width.
        const RowMatrix t = a->total()->dense();
        QVERIFY((t.transpose() * t - RowMatrix::Identity(256, 256)).cwiseAbs().maxCoeff() < 1e-4);
    }

    // Block application on a strided view (the runtime's per-segment calls) equals blockdiag(Rᵀ).
    void blockTransformMatchesDense()
    {
        RowMatrix x = outlierActivations(10, 96, 3, 2);
        RuquantOptions o;
        o.blockSize = 16;
        o.householderSteps = 4;
        auto fit = fitRuquantTransform(x, o, 1);
        QVERIFY(fit.ok());
        const auto& r1 = *fit->parts[0];
        RowMatrix wide = RowMatrix::Zero(10, 96 + 8);
        wide.middleCols(4, 96) = x;
        r1.apply(wide.middleCols(4, 96)); // outer stride 104: the per-row path
        const RowMatrix dense = x * r1.dense();
        QVERIFY((wide.middleCols(4, 96) - dense).cwiseAbs().maxCoeff() < 1e-4);
        QVERIFY(wide.leftCols(4).isZero() && wide.rightCols(4).isZero());
        // Both application modes agree (a rounding apart).
        const auto* blk = dynamic_cast<const model::BlockOpTransform*>(fit->parts[0].get());
        QVERIFY(blk && blk->mode() == model::BlockOpTransform::Apply::Dense);
        const model::BlockOpTransform walk(96, std::make_shared<model::OrthoOpList>(blk->ops()), "walk",
                                           model::BlockOpTransform::Apply::OpList);
        RowMatrix a = x, b = x;
        blk->apply(a);
        walk.apply(b);
        QVERIFY((a - b).cwiseAbs().maxCoeff() < 1e-4);
        // applyTranspose (gradients, undoing) is x·Tᵀ for every part and for the whole chain.
        const auto total = fit->total();
        for (const model::RowTransform* t : {fit->parts[0].get(), fit->parts[1].get(), fit->parts.back().get(),
                                             static_cast<const model::RowTransform*>(total.get())}) {
            RowMatrix c = x;
            t->applyTranspose(c);
            QVERIFY((c - x * t->dense().transpose()).cwiseAbs().maxCoeff() < 1e-4);
            t->apply(c);
            QVERIFY((c - x).cwiseAbs().maxCoeff() < 1e-4);
        }
    }

    // §6.2 item 17: (X·T)(W·T)ᵀ = X·Wᵀ.
    void totalTransformPreservesProducts()
    {
        const RowMatrix x = outlierActivations(48, 128, 4, 21);
        std::mt19937 rng(4);
        std::normal_distribution<float> n(0.f, 1.f);
        RowMatrix w(40, 128);
        for (Eigen::Index i = 0; i < w.size(); ++i)
            w.data()[i] = n(rng);
        RuquantOptions o;
        o.blockSize = 32;
        auto fit = fitRuquantTransform(x, o, 7);
        QVERIFY(fit.ok());
        const auto t = fit->total();
        RowMatrix xt = x, wt = w;
        t->apply(xt);
        t->apply(wt);
        const RowMatrix ref = x * w.transpose();
        QVERIFY((xt * wt.transpose() - ref).norm() / ref.norm() < 1e-5);
    }

    // §6.2 item 16 (bijection) and 18 (balance, statistically).
    void zigzagBalancesBlocks()
    {
        int better = 0;
        const int trials = 40;
        for (int s = 0; s < trials; ++s) {
            std::mt19937 rng(100 + s);
            std::exponential_distribution<double> e(1.0);
            const Eigen::Index c = 128, b = 16;
            std::vector<double> m(static_cast<std::size_t>(c));
            for (double& v : m)
                v = e(rng);
            for (int k = 0; k < 5; ++k)
                m[std::size_t(rng() % c)] *= 40;
            const std::vector<int> p = zigzagPermutation(m, b);
            std::vector<int> sorted = p;
            std::sort(sorted.begin(), sorted.end());
            for (int i = 0; i < int(c); ++i)
                QCOMPARE(sorted[std::size_t(i)], i);
            auto spread = [&](auto at) {
                double lo = 1e300, hi = 0;
                for (Eigen::Index blk = 0; blk < c / b; ++blk) {
                    double sum = 0;
                    for (Eigen::Index j = 0; j < b; ++j)
                        sum += m[std::size_t(at(blk * b + j))];
                    lo = std::min(lo, sum);
                    hi = std::max(hi, sum);
                }
                return hi - lo;
            };
            if (spread([&](Eigen::Index i) { return p[std::size_t(i)]; }) < spread([](Eigen::Index i) { return i; }))
                ++better;
        }
        QVERIFY2(better >= trials * 9 / 10, qPrintable(QString::number(better)));
    }

    // §6.2 item 19: lower per-token maxima and 4-bit error after the transforms, over seeds.
    void transformsReduceOutliers()
    {
        int maxBetter = 0, mseBetter = 0;
        const int trials = 12;
        for (int s = 0; s < trials; ++s) {
            const RowMatrix x = outlierActivations(64, 128, 4, 300 + s);
            RuquantOptions o;
            o.blockSize = 32;
            auto fit = fitRuquantTransform(x, o, std::uint64_t(s));
            QVERIFY(fit.ok());
            RowMatrix y = x;
            fit->parts[0]->apply(y); // stage 1 alone
            if (meanTokenMax(y) < meanTokenMax(x)) ++maxBetter;
            RowMatrix z = x;
            fit->total()->apply(z);
            if (perTokenQuantMse(z, 4) < perTokenQuantMse(x, 4)) ++mseBetter;
        }
        QVERIFY2(maxBetter >= trials * 3 / 4, qPrintable(QString::number(maxBetter)));
        QVERIFY2(mseBetter >= trials * 3 / 4, qPrintable(QString::number(mseBetter)));
    }

    // The parallel weight fake-quantizer is quantizeRowsRtn's per-channel Min-Max grid.
    void weightRowsMatchRtn()
    {
        RowMatrix w = outlierActivations(37, 70, 3, 8);
        for (double clip : {1.0, 0.8}) {
            quant::GridSpec spec;
            spec.bits = 4;
            spec.clip = clip;
            auto ref = quant::quantizeRowsRtn(w, spec, quant::GridInit::MinMax);
            QVERIFY(ref.ok());
            RowMatrix got = w;
            QVERIFY(fakeQuantizeWeightRows(got, 4, clip).ok());
            // The same kernels in two translation units: -march=native may contract them
            // differently, so a rounding tie may flip one code (one grid step) - rarely.
            const RowMatrix diff = (got - ref->dequantized).cwiseAbs();
            const double step = (w.cwiseAbs().maxCoeff() * 2) / 15;
            QVERIFY(diff.maxCoeff() <= step * 1.001);
            QVERIFY((diff.array() > 1e-5f).count() <= diff.size() / 100);
        }
        RowMatrix same = w;
        QVERIFY(fakeQuantizeWeightRows(same, 0, 1.0).ok() && same == w);
        QVERIFY(!fakeQuantizeWeightRows(same, 4, 1.5).ok());
        // The quantized path's codes (weightRowCodes) decode to the fake-quantized values exactly.
        for (int bits : {4, 6}) {
            RowMatrix fq = w;
            QVERIFY(fakeQuantizeWeightRows(fq, bits, 0.8).ok());
            auto codes = weightRowCodes(w, bits, 0.8);
            QVERIFY(codes.ok());
            QCOMPARE((*codes)->rows(), std::int64_t(w.rows()));
            RowMatrix decoded(w.rows(), w.cols());
            (*codes)->decodeRows(0, w.rows(), decoded.data());
            QVERIFY(decoded == fq);
        }
        QVERIFY(!weightRowCodes(w, 9, 1.0).ok() && !weightRowCodes(w, 4, 1.5).ok());
    }

    void badSignalsAreRefused()
    {
        RowMatrix odd = RowMatrix::Ones(4, 33);
        auto r = fitRuquantTransform(odd, RuquantOptions{}, 0);
        QVERIFY(!r.ok());
        QVERIFY(r.error().message.find("even block size") != std::string::npos);
        RowMatrix bad = RowMatrix::Ones(4, 32);
        bad(1, 2) = std::nanf("");
        QVERIFY(!fitRuquantTransform(bad, RuquantOptions{}, 0).ok());
        QCOMPARE(ruquantBlockSize(352, 128), Eigen::Index(88));
        QCOMPARE(ruquantBlockSize(4096, 128), Eigen::Index(128));
        QCOMPARE(ruquantBlockSize(33, 128), Eigen::Index(0));
    }

    // Item 4 of the issue: with quantization off the transformed model computes the same logits
    // (the signal's quantizers only steer the construction), for GQA and with biases.
    void modelKeepsFunction_data()
    {
        QTest::addColumn<bool>("biases");
        QTest::addColumn<bool>("quantizedSignal");
        QTest::newRow("llama, FP signal") << false << false;
        QTest::newRow("llama, W4A4 signal") << false << true;
        QTest::newRow("qwen2 biases, W4A4 signal") << true << true;
    }
    void modelKeepsFunction()
    {
        QFETCH(bool, biases);
        QFETCH(bool, quantizedSignal);
        ModelConfig cfg = qbtest::syntheticConfig(2);
        if (biases) {
            cfg.modelType = "qwen2";
            cfg.architecture = Architecture::Qwen2;
        }
        auto m = qbtest::syntheticModelFor(cfg, 5);
        const CalibrationSet calib = qbtest::syntheticCalibration(4, 16);
        RuquantOptions o;
        o.blockSize = 16;
        o.weightBits = quantizedSignal ? 4 : 0;
        if (quantizedSignal) {
            o.act.fill(model::ActQuantSpec(4, false, 0.9f));
            o.k = o.v = o.q = model::ActQuantSpec(4, false, 1.0f);
        }
        auto r = ruquantModel(*m, calib, o, 2);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().message.c_str());
        QCOMPARE(r->groups.size(), std::size_t(2 * 4));
        const RowMatrix ref = logitsOf(*m, calib), got = logitsOf(*r->model, calib);
        const double d = (got - ref).norm() / ref.norm();
        QVERIFY2(d < kLogitRelTolerance, qPrintable(QString::number(d)));
        const auto& rt = r->model->layer(0)->runtime;
        QVERIFY(rt && rt->kv.qkRotate && rt->input(model::LinearKind::Down).rotate);
        QVERIFY(!rt->input(model::LinearKind::Qkv).quant.enabled()); // the plan installs quantizers later
        QVERIFY(rt->onlineTransforms().find("RUQuant 32 (B 16: stage 1, zig-zag, stage 1 again") != std::string::npos);
        // Deterministic: the same options give the same weights.
        auto again = ruquantModel(*m, calib, o, 2);
        QVERIFY(again.ok());
        QVERIFY(again->model->layer(1)->down == r->model->layer(1)->down);
    }

    // Item 3: ∂L/∂ω of every group through the layer's backward pass against central finite
    // differences of the loss, quantization off. Reflected on both sides the layer does not depend
    // on ω (gradient 0); on one side it does, smoothly: each side's gradient is checked so.
    void reflectionGradientsMatchFiniteDifferences_data()
    {
        QTest::addColumn<int>("sides");
        QTest::newRow("inputs") << int(ReflectionSetup::Sides::InputsOnly);
        QTest::newRow("weights") << int(ReflectionSetup::Sides::WeightsOnly);
        QTest::newRow("both") << int(ReflectionSetup::Sides::Both);
    }
    void reflectionGradientsMatchFiniteDifferences()
    {
        QFETCH(int, sides);
        ModelConfig cfg = qbtest::syntheticConfig(1);
        auto m = qbtest::syntheticModelFor(cfg, 12);
        const auto& layer = *m->layer(0);
        RuquantRng rng(77);
        ReflectionSetup setup;
        for (model::LinearKind k :
             {model::LinearKind::Qkv, model::LinearKind::O, model::LinearKind::GateUp, model::LinearKind::Down}) {
            ReflectionGroup g;
            const Eigen::Index c = k == model::LinearKind::Down ? cfg.intermediateSize
                                   : k == model::LinearKind::O  ? cfg.numAttentionHeads * cfg.headDim
                                                                : cfg.hiddenSize;
            RowMatrix sig = outlierActivations(16, c, 2, unsigned(c));
            RuquantOptions o;
            o.blockSize = 8;
            o.householderSteps = 2;
            auto fit = fitRuquantTransform(sig, o, 3);
            QVERIFY(fit.ok());
            g.fixed = std::make_shared<model::ChainTransform>(
                std::vector<std::shared_ptr<const model::RowTransform>>(fit->parts.begin(), fit->parts.end() - 1));
            g.omega.resize(c);
            for (Eigen::Index i = 0; i < c; ++i)
                g.omega[i] = rng.uniform() - 0.3;
            if (k == model::LinearKind::O) g.smoothDivisor = model::RowVector::Constant(c, 1.5f);
            for (model::Linear lin : model::kAllLinears)
                if (model::linearKind(lin) == k) {
                    g.linears.push_back(lin);
                    g.base.push_back(layer.weight(lin));
                }
            setup.groups[std::size_t(k)] = std::move(g);
        }
        setup.sides = ReflectionSetup::Sides(sides);
        const CalibrationSet calib = qbtest::syntheticCalibration(1, 8);
        RowMatrix in;
        QVERIFY(model::embed(*m, calib.ids, in).ok());
        RowMatrix target = in;
        model::Workspace ws;
        QVERIFY(model::runLayer(*m, 0, target, 8, ws).ok());
        target.array() += 0.05f; // a non-zero residual at the start
        std::array<Eigen::VectorXd, 4> grads;
        auto loss = reflectionLossAndGrad(cfg, layer, 0, setup, in, target, 8, &grads);
        QVERIFY2(loss.ok(), loss.ok() ? "" : loss.error().message.c_str());
        for (std::size_t k = 0; k < 4; ++k) {
            QVERIFY(grads[k].size() == setup.groups[k]->omega.size());
            if (setup.sides == ReflectionSetup::Sides::Both) {
                QVERIFY2(grads[k].norm() < 1e-5, qPrintable(QString::number(grads[k].norm())));
                continue;
            }
            for (int trial = 0; trial < 3; ++trial) {
                Eigen::VectorXd d(grads[k].size());
                for (Eigen::Index i = 0; i < d.size(); ++i)
                    d[i] = rng.uniform() - 0.5;
                const double h = 1e-3 * setup.groups[k]->omega.norm() / d.norm();
                ReflectionSetup plus = setup, minus = setup;
                plus.groups[k]->omega += h * d;
                minus.groups[k]->omega -= h * d;
                const double lp = *reflectionLossAndGrad(cfg, layer, 0, plus, in, target, 8, nullptr);
                const double lm = *reflectionLossAndGrad(cfg, layer, 0, minus, in, target, 8, nullptr);
                const double fd = (lp - lm) / (2 * h), an = grads[k].dot(d);
                QVERIFY2(std::abs(fd - an) <= 2e-2 * std::max(std::abs(fd), 1e-3 * grads[k].norm() * d.norm()),
                         qPrintable(QString("group %1: fd %2 analytic %3").arg(k).arg(fd).arg(an)));
            }
        }
        // Training never ends above its starting loss: with steps far too large for this loss, the
        // trained ω's are either better or replaced by the initial ones, exactly.
        for (double lr : {1e-2, 1e3}) {
            ReflectionSetup trained = setup;
            auto t = trainReflections(cfg, layer, 0, trained, in, target, 8, 2, lr);
            QVERIFY2(t.ok(), t.ok() ? "" : t.error().message.c_str());
            QVERIFY(t->lossAfter <= t->lossBefore);
            qInfo("lr %g: loss %.6g -> %.6g%s", lr, t->lossBefore, t->lossAfter, t->kept ? " (initial kept)" : "");
            for (std::size_t k = 0; k < 4; ++k)
                if (t->kept) QVERIFY(trained.groups[k]->omega == setup.groups[k]->omega);
            if (setup.sides != ReflectionSetup::Sides::Both) { // the loss depends on ω
                if (lr < 1) QVERIFY(!t->kept && t->lossAfter < t->lossBefore);
                else QVERIFY(t->kept);
            }
        }
    }

    // Item 3: fine-tuning lowers the layer-output loss it trains on or keeps a layer's initial
    // reflections, never ends higher, and the fine-tuned model still computes the FP function with
    // quantization off (the transforms are orthogonal). Whether a given layer of this
    // tiny model gains depends on rounding (the straight-through gradient does not follow the
    // quantized loss closely: kept at the last epoch, 20 of 32 layers of 16 such models gained at
    // these settings; at the best epoch 31 of 32), so four models are trained and half of their
    // layers must gain.
    void finetuneLowersLossAndKeepsFunction()
    {
        int lowered = 0, layers = 0;
        for (unsigned seed = 21; seed < 25; ++seed) {
            ModelConfig cfg = qbtest::syntheticConfig(2);
            auto m = qbtest::syntheticModelFor(cfg, seed);
            const CalibrationSet calib = qbtest::syntheticCalibration(4, 16);
            RuquantOptions o = finetuneTestOptions();
            o.finetuneEpochs = 8;
            o.finetuneLr = 1e-2;
            auto r = ruquantModel(*m, calib, o, 2);
            QVERIFY2(r.ok(), r.ok() ? "" : r.error().message.c_str());
            QVERIFY(r->finetuneSeconds > 0);
            for (const RuquantGroupReport& g : r->groups) {
                QVERIFY(g.finetuneLossBefore > 0);
                QVERIFY2(g.finetuneLossAfter <= g.finetuneLossBefore,
                         qPrintable(QString("%1 -> %2").arg(g.finetuneLossBefore).arg(g.finetuneLossAfter)));
                QCOMPARE(g.finetuneReverted, g.finetuneBestEpoch == 0);
                QVERIFY(g.finetuneBestEpoch >= 0 && g.finetuneBestEpoch <= o.finetuneEpochs);
                if (g.kind != model::LinearKind::Qkv) continue; // one training per layer, reported per group
                ++layers;
                if (g.finetuneLossAfter < g.finetuneLossBefore) ++lowered;
            }
            const RowMatrix ref = logitsOf(*m, calib), got = logitsOf(*r->model, calib);
            QVERIFY((got - ref).norm() / ref.norm() < kLogitRelTolerance);
            // Layer 0's transforms say what happened to it (its training kept, or reverted).
            const bool reverted0 = std::any_of(r->groups.begin(), r->groups.end(), [](const RuquantGroupReport& g) {
                return g.layer == 0 && g.finetuneReverted;
            });
            QVERIFY(r->model->layer(0)->runtime->onlineTransforms().find(
                        reverted0 ? "fine-tuning reverted" : "fine-tuned") != std::string::npos);
        }
        qInfo("%d of %d layers lowered their loss", lowered, layers);
        QVERIFY2(2 * lowered >= layers, qPrintable(QString("%1 of %2").arg(lowered).arg(layers)));
    }

    // The reflections kept are those of the epoch with the lowest loss, not the last epoch's:
    // training is deterministic, so a run of exactly that many epochs ends with the same loss and
    // the same best epoch, and a run one epoch shorter ends higher (the best epoch is the first
    // with that loss). Checked on layer 0 (its inputs do not depend on the epochs) of the first
    // models whose best epoch is past the first.
    void finetuneKeepsTheBestEpoch()
    {
        auto layer0 = [](const RuquantResult& r) {
            return *std::find_if(r.groups.begin(), r.groups.end(), [](const RuquantGroupReport& g) {
                return g.layer == 0 && g.kind == model::LinearKind::Qkv;
            });
        };
        int checked = 0, earlier = 0;
        for (unsigned seed = 21; seed < 33 && checked < 2; ++seed) {
            ModelConfig cfg = qbtest::syntheticConfig(2);
            auto m = qbtest::syntheticModelFor(cfg, seed);
            const CalibrationSet calib = qbtest::syntheticCalibration(4, 16);
            RuquantOptions o = finetuneTestOptions();
            o.finetuneLr = 1e-2;
            o.finetuneEpochs = 8;
            auto full = ruquantModel(*m, calib, o, 2);
            QVERIFY2(full.ok(), full.ok() ? "" : full.error().message.c_str());
            const RuquantGroupReport best = layer0(*full);
            if (best.finetuneBestEpoch < 2) continue;
            ++checked;
            if (best.finetuneBestEpoch < o.finetuneEpochs) ++earlier;
            o.finetuneEpochs = best.finetuneBestEpoch;
            auto exact = ruquantModel(*m, calib, o, 2);
            QVERIFY(exact.ok());
            QCOMPARE(layer0(*exact).finetuneBestEpoch, best.finetuneBestEpoch);
            QCOMPARE(layer0(*exact).finetuneLossAfter, best.finetuneLossAfter);
            QCOMPARE(layer0(*exact).finetuneLossBefore, best.finetuneLossBefore);
            o.finetuneEpochs = best.finetuneBestEpoch - 1;
            auto shorter = ruquantModel(*m, calib, o, 2);
            QVERIFY(shorter.ok());
            QVERIFY(layer0(*shorter).finetuneLossAfter > best.finetuneLossAfter);
        }
        qInfo("%d models checked, %d with the best epoch before the last", checked, earlier);
        QCOMPARE(checked, 2);
    }

    // Fine-tuning that raises a layer's loss (a learning rate far too large) keeps the layer's
    // initial reflections, and says so: the report flags the layer, its loss stays as it was, and
    // its transforms read "fine-tuning reverted", not "fine-tuned"; a layer kept trained reads
    // "fine-tuned". Where a too-large step lands depends on the CPU's rounding (at rate 10 every
    // layer reverted on one machine and none on the portable build), so several rates are tried
    // and at least one layer must revert; where all do, the model computes what the same
    // construction without fine-tuning computes.
    void revertedFinetuneIsReported()
    {
        ModelConfig cfg = qbtest::syntheticConfig(2);
        auto m = qbtest::syntheticModelFor(cfg, 21);
        const CalibrationSet calib = qbtest::syntheticCalibration(4, 16);
        RuquantOptions o = finetuneTestOptions();
        auto plain = ruquantModel(*m, calib, o, 2);
        QVERIFY2(plain.ok(), plain.ok() ? "" : plain.error().message.c_str());
        o.finetuneEpochs = 2;
        int revertedTotal = 0;
        for (double lr : {10.0, 1000.0, 100.0, 1e5}) {
            o.finetuneLr = lr;
            auto r = ruquantModel(*m, calib, o, 2);
            QVERIFY2(r.ok(), r.ok() ? "" : r.error().message.c_str());
            int reverted = 0;
            for (const RuquantGroupReport& g : r->groups) {
                const std::string transforms = r->model->layer(g.layer)->runtime->onlineTransforms();
                if (g.finetuneReverted) {
                    ++reverted;
                    QCOMPARE(g.finetuneLossAfter, g.finetuneLossBefore);
                    QVERIFY2(transforms.find("fine-tuning reverted") != std::string::npos, transforms.c_str());
                    QVERIFY2(transforms.find("fine-tuned") == std::string::npos, transforms.c_str());
                } else {
                    QVERIFY2(transforms.find("fine-tuned") != std::string::npos, transforms.c_str());
                    QVERIFY2(transforms.find("reverted") == std::string::npos, transforms.c_str());
                }
            }
            qInfo("lr %g: %d of %zu groups reverted", lr, reverted, r->groups.size());
            revertedTotal += reverted;
            if (reverted == int(r->groups.size())) {
                const RowMatrix want = logitsOf(*plain->model, calib), got = logitsOf(*r->model, calib);
                QVERIFY2((got - want).norm() <= 1e-5 * want.norm(),
                         qPrintable(QString::number((got - want).norm() / want.norm())));
            }
        }
        QVERIFY(revertedTotal >= 4); // every group of one layer at least, at one of the rates
    }

    // The plan's "transform" object with "rotate": "ruquant" and its settings, the weight "clip" key.
    void planKeys()
    {
        const char* text =
            "{\"default\": {\"method\": \"rtn\", \"bits\": 4, \"group_size\": -1, \"clip\": 0.8},"
            " \"activations\": {\"bits\": 4, \"clip\": 0.9}, \"kv\": {\"bits\": 4, \"q_bits\": 4},"
            " \"transform\": {\"smooth\": 0.6, \"rotate\": \"ruquant\", \"seed\": 3,"
            " \"ruquant\": {\"block\": 64, \"steps\": 8, \"repo_givens\": true, \"finetune_epochs\": 5}}}";
        auto p = quantPlanFromText(text);
        QVERIFY2(p.ok(), p.ok() ? "" : p.error().toString().c_str());
        QCOMPARE(p->activation.rotate, PlanRotation::Ruquant);
        QCOMPARE(p->activation.ruquant.blockSize, 64);
        QCOMPARE(p->activation.ruquant.householderSteps, 8);
        QCOMPARE(p->activation.ruquant.givensRounds, 3);
        QVERIFY(p->activation.ruquant.repoGivens);
        QCOMPARE(p->defaults.clip.value_or(0), 0.8);
        QCOMPARE(p->activation.describe(), std::string("A4 KV4 Q4 +smooth 0.6 +ruquant ft5"));
        auto back = quantPlanFromJson(quantPlanToJson(*p));
        QVERIFY(back.ok());
        QCOMPARE(*back, *p);
        const RuquantOptions o = ruquantOptionsFromPlan(p->activation, {4, 0.8});
        QCOMPARE(o.blockSize, 64);
        QCOMPARE(o.seed, std::uint64_t(3));
        QCOMPARE(o.finetuneEpochs, 5);
        QCOMPARE(o.act[std::size_t(model::LinearKind::Down)].clip, 0.9f);
        QCOMPARE(o.q.bits, 4);
        auto r = resolveQuantPlan(*p, qbtest::syntheticConfig(1));
        QVERIFY(r.ok());
        QCOMPARE(r->tensors[0].options.grid.clip, 0.8);
        for (const char* bad :
             {"{\"default\": {\"method\": \"rtn\", \"bits\": 4}, \"transform\": {\"rotate\": \"ruquant\","
              " \"ruquant\": {\"block\": 7}}}",
              "{\"default\": {\"method\": \"rtn\", \"bits\": 4}, \"transform\": {\"ruquant\": {\"bogus\": 1}}}",
              "{\"default\": {\"method\": \"rtn\", \"bits\": 4, \"clip\": 0}}"}) {
            QVERIFY2(!quantPlanFromText(bad).ok(), bad);
        }
        for (const char* bad : {"{\"default\": {\"method\": \"neuqi\", \"bits\": 4, \"clip\": 0.8}}",
                                "{\"default\": {\"method\": \"rtn\", \"target\": \"Q4_0\", \"clip\": 0.8}}"}) {
            auto pl = quantPlanFromText(bad);
            QVERIFY(pl.ok());
            auto res = resolveQuantPlan(*pl, qbtest::syntheticConfig(1));
            QVERIFY2(!res.ok(), bad);
            QVERIFY(res.error().message.find("clip") != std::string::npos);
        }
    }

    void rotatedModelIsRefused()
    {
        auto m = qbtest::syntheticModel(1);
        RotationOptions ro;
        ro.onlineDown = true;
        auto rot = rotateModel(*m, ro);
        QVERIFY(rot.ok());
        auto r = ruquantModel(*rot->model, qbtest::syntheticCalibration(2, 8), RuquantOptions{}, 2);
        QVERIFY(!r.ok());
        QVERIFY(r.error().message.find("already rotated") != std::string::npos);
        QVERIFY(!ruquantModel(*m, CalibrationSet{}, RuquantOptions{}, 2).ok());
    }
};

QTEST_GUILESS_MAIN(TestRuquant)
#include "tst_ruquant.moc"
