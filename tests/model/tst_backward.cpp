// Backward pass (model/backward.h) against central finite differences in double precision, on tiny
// random decoders: activations (a layer's input), per-group scales, zeros and offsets of
// fake-quantized linears with frozen codes (quant/fake_quant_grad.h), RMSNorm gains (layers and
// final norm), under the KL and the hidden-state MSE losses; configs with GQA (4 heads, 2 kv
// heads), bias-free Llama, Qwen2-style q/k/v biases and a sliding window. Also: the templated
// F32 layer forward agrees with model::runLayer, the F32 gradients with the F64 ones, and the
// checker itself rejects a gradient with a flipped sign or a missing term.

#include "model/backward.h"
#include "model/forward.h"
#include "quant/fake_quant_grad.h"

#include <QTest>

#include <cmath>
#include <random>

using namespace qb;
using namespace qb::model;

namespace {

using MatD = MatrixRT<double>;
using VecD = VectorRT<double>;

// Central differences with h = 1e-5 on O(1) functions are good to ~1e-9; a real error is O(|g|).
constexpr double kFdStep = 1e-5;
constexpr double kFdAbs = 1e-7;
constexpr double kFdRel = 1e-5;
// F32 training path vs F64: relative Frobenius difference of a whole gradient.
constexpr double kFloatRel = 2e-3;

bool gradClose(double analytic, double numeric)
{
    return std::abs(analytic - numeric) <= kFdAbs + kFdRel * std::max(std::abs(analytic), std::abs(numeric));
}

struct Variant {
    bool gqa = true;
    bool bias = false;
    bool sliding = false;
};

ModelConfig tinyConfig(const Variant& v)
{
    ModelConfig c;
    c.modelType = v.bias ? "qwen2" : "llama";
    c.vocabSize = 29;
    c.hiddenSize = 16;
    c.intermediateSize = 24;
    c.numHiddenLayers = 2;
    c.numAttentionHeads = 4;
    c.numKeyValueHeads = v.gqa ? 2 : 4;
    c.headDim = 6; // heads·d = 24 != hidden: o_proj is not square
    c.maxPositionEmbeddings = 64;
    c.rmsNormEps = 1e-5;
    c.ropeTheta = 100.0; // fast rotation, so positions differ visibly in 7 tokens
    c.attentionBias = v.bias;
    if (v.sliding) {
        c.slidingWindow = 3;
        c.slidingLayers = {true, false};
    }
    return c;
}

struct QuantLinear {
    quant::MatrixU8R codes;
    quant::MatrixXdR scales, zeros, offsets;
    std::vector<int> groupIndex;
};

constexpr int kBits = 2, kGroup = 8;

// A student whose seven linears per layer are fake-quantized with random codes and parameters.
struct Tiny {
    ModelConfig cfg;
    MatD embedding, head;
    VecD finalNorm;
    std::vector<LayerParams<double>> layers; // norms and biases; weights rebuilt from q
    std::vector<std::array<QuantLinear, 7>> q;
    std::vector<std::int32_t> ids;
    int T = 7;
    MatD teacherNormed;

    explicit Tiny(const Variant& v, unsigned seed = 11) : cfg(tinyConfig(v))
    {
        std::mt19937 rng(seed);
        std::normal_distribution<double> n(0.0, 1.0);
        auto fill = [&](auto& m, double scale, double offset = 0.0) {
            for (Eigen::Index i = 0; i < m.size(); ++i)
                m.data()[i] = offset + scale * n(rng);
        };
        embedding.resize(cfg.vocabSize, cfg.hiddenSize);
        fill(embedding, 1.0);
        head.resize(cfg.vocabSize, cfg.hiddenSize);
        fill(head, 0.5);
        finalNorm.resize(cfg.hiddenSize);
        fill(finalNorm, 0.1, 1.0);
        DecoderLayerWeights shapes;
        shapes.allocate(cfg);
        for (int l = 0; l < int(cfg.numHiddenLayers); ++l) {
            LayerParams<double> p;
            p.inputNorm.resize(cfg.hiddenSize);
            p.postNorm.resize(cfg.hiddenSize);
            fill(p.inputNorm, 0.1, 1.0);
            fill(p.postNorm, 0.1, 1.0);
            std::array<QuantLinear, 7> lq;
            for (Linear lin : kAllLinears) {
                const auto& w = shapes.weight(lin);
                QuantLinear& ql = lq[std::size_t(lin)];
                const int cols = int(w.cols()), groups = quant::groupCount(kGroup, cols);
                ql.groupIndex = quant::groupIndexContiguous(kGroup, cols);
                ql.codes.resize(w.rows(), cols);
                for (Eigen::Index i = 0; i < ql.codes.size(); ++i)
                    ql.codes.data()[i] = std::uint8_t(rng() % (1u << kBits));
                ql.scales.resize(w.rows(), groups);
                ql.zeros.resize(w.rows(), groups);
                for (Eigen::Index i = 0; i < ql.scales.size(); ++i) {
                    ql.scales.data()[i] = 0.25 * (1.0 + 0.3 * std::abs(n(rng)));
                    ql.zeros.data()[i] = -1.5 + 0.4 * n(rng);
                }
                if (lin == Linear::Up) { // a container-style min on one tensor
                    ql.offsets.resize(w.rows(), groups);
                    fill(ql.offsets, 0.1);
                }
                p.bias[std::size_t(lin)].resize(shapes.bias(lin).size());
                fill(p.bias[std::size_t(lin)], 0.1);
            }
            layers.push_back(std::move(p));
            q.push_back(std::move(lq));
        }
        for (int i = 0; i < 2 * T; ++i)
            ids.push_back(std::int32_t(rng() % std::uint32_t(cfg.vocabSize)));
        // Teacher: the same decoder with every weight perturbed (the "FP" model).
        DecoderParams<double> teacher = params();
        for (auto& lp : teacher.layers)
            for (auto& w : lp.weight) {
                MatD noise(w.rows(), w.cols());
                fill(noise, 0.05);
                w += noise;
            }
        teacherNormed = finalNormed(teacher);
    }

    DecoderParams<double> params() const
    {
        DecoderParams<double> p;
        p.config = &cfg;
        p.layers = layers;
        for (std::size_t l = 0; l < layers.size(); ++l)
            for (Linear lin : kAllLinears) {
                const QuantLinear& ql = q[l][std::size_t(lin)];
                quant::dequantizeRowsUniformAs<double>(ql.codes, ql.scales, ql.zeros, ql.offsets, ql.groupIndex,
                                                       p.layers[l].w(lin));
            }
        p.finalNorm = finalNorm;
        p.embedding = &embedding;
        p.lmHead = &head;
        return p;
    }

    MatD finalNormed(const DecoderParams<double>& p) const
    {
        MatD h(Eigen::Index(ids.size()), cfg.hiddenSize), out;
        for (std::size_t i = 0; i < ids.size(); ++i)
            h.row(Eigen::Index(i)) = embedding.row(ids[i]);
        LayerCache<double> cache;
        for (int l = 0; l < int(p.layers.size()); ++l) {
            layerForward<double>(cfg, p.layers[std::size_t(l)], l, h, T, out, cache);
            h = out;
        }
        std::vector<double> r;
        rmsNormForward<double>(h, p.finalNorm, cfg.rmsNormEps, out, r);
        return out;
    }

    double loss(DistillLoss kind) const
    {
        DecoderGradsT<double> none;
        DecoderGradOptions o;
        o.loss = kind;
        o.computeGrads = false;
        const auto r = decoderLossAndGrad<double>(params(), ids, T, teacherNormed, o, none);
        return r.ok() ? *r : std::nan("");
    }
};

// Parameter gradients of the Tiny student: per layer and linear dScale, dZero, dOffset; gains.
struct TinyGrads {
    std::vector<std::array<quant::MatrixXdR, 7>> dScale, dZero, dOffset;
    std::vector<VecD> dInputNorm, dPostNorm;
    VecD dFinalNorm;
    DecoderGradsT<double> dense;
    double loss = 0;
};

TinyGrads tinyGrads(const Tiny& t, DistillLoss kind)
{
    TinyGrads g;
    DecoderParams<double> p = t.params();
    g.dense.layers.resize(p.layers.size());
    for (std::size_t l = 0; l < p.layers.size(); ++l)
        zeroGrads<double>(p.layers[l], true, g.dense.layers[l]);
    DecoderGradOptions o;
    o.loss = kind;
    o.normGains = true;
    o.logitsChunk = 5; // several chunks, the last one short
    const auto r = decoderLossAndGrad<double>(p, t.ids, t.T, t.teacherNormed, o, g.dense);
    if (!r.ok()) qFatal("%s", r.error().toString().c_str());
    g.loss = *r;
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
        std::array<quant::MatrixXdR, 7> ds, dz, db;
        for (Linear lin : kAllLinears) {
            const QuantLinear& ql = t.q[l][std::size_t(lin)];
            const std::size_t i = std::size_t(lin);
            ds[i].setZero(ql.scales.rows(), ql.scales.cols());
            dz[i].setZero(ql.scales.rows(), ql.scales.cols());
            db[i].setZero(ql.scales.rows(), ql.scales.cols());
            quant::fakeQuantGradsUniform(ql.codes, ql.scales, ql.zeros, ql.groupIndex, g.dense.layers[l].weight[i],
                                         ds[i], dz[i], ql.offsets.size() ? &db[i] : nullptr);
        }
        g.dScale.push_back(ds);
        g.dZero.push_back(dz);
        g.dOffset.push_back(db);
        g.dInputNorm.push_back(g.dense.layers[l].inputNorm);
        g.dPostNorm.push_back(g.dense.layers[l].postNorm);
    }
    g.dFinalNorm = g.dense.finalNorm;
    return g;
}

// Central difference of t.loss() in the parameter `x` points to (restored afterwards).
double numericGrad(Tiny& t, double& x, DistillLoss kind)
{
    const double keep = x;
    x = keep + kFdStep;
    const double up = t.loss(kind);
    x = keep - kFdStep;
    const double down = t.loss(kind);
    x = keep;
    return (up - down) / (2 * kFdStep);
}

// Compares every sampled parameter; returns "" or the first mismatch. `flip` negates the analytic
// gradient and `drop` zeroes the z-term of dScale (tests that the checker can fail).
std::string checkTiny(Tiny& t, DistillLoss kind, bool flip = false, bool drop = false, int* checked = nullptr,
                      double* largest = nullptr)
{
    const TinyGrads g = tinyGrads(t, kind);
    const double sign = flip ? -1.0 : 1.0;
    std::mt19937 rng(5);
    int n = 0;
    double big = 0;
    auto check = [&](const std::string& what, double analytic, double& param) -> std::string {
        const double numeric = numericGrad(t, param, kind);
        ++n;
        big = std::max(big, std::abs(numeric));
        if (!gradClose(sign * analytic, numeric))
            return what + ": analytic " + std::to_string(sign * analytic) + " numeric " + std::to_string(numeric);
        return {};
    };
    for (std::size_t l = 0; l < t.layers.size(); ++l) {
        for (Linear lin : kAllLinears) {
            QuantLinear& ql = t.q[l][std::size_t(lin)];
            const std::size_t i = std::size_t(lin);
            for (int s = 0; s < 3; ++s) {
                const Eigen::Index r = Eigen::Index(rng() % std::uint32_t(ql.scales.rows()));
                const Eigen::Index c = Eigen::Index(rng() % std::uint32_t(ql.scales.cols()));
                const std::string where = "layer " + std::to_string(l) + " " + linearName(lin) + " (" +
                                          std::to_string(r) + ", " + std::to_string(c) + ")";
                double ds = g.dScale[l][i](r, c);
                if (drop) ds -= g.dZero[l][i](r, c) / ql.scales(r, c) * ql.zeros(r, c); // remove Σ dW·z
                if (auto e = check("scale " + where, ds, ql.scales(r, c)); !e.empty()) return e;
                if (auto e = check("zero " + where, g.dZero[l][i](r, c), ql.zeros(r, c)); !e.empty()) return e;
                if (ql.offsets.size())
                    if (auto e = check("offset " + where, g.dOffset[l][i](r, c), ql.offsets(r, c)); !e.empty())
                        return e;
            }
        }
        for (int s = 0; s < 3; ++s) {
            const Eigen::Index j = Eigen::Index(rng() % std::uint32_t(t.cfg.hiddenSize));
            const std::string where = "layer " + std::to_string(l) + " [" + std::to_string(j) + "]";
            if (auto e = check("input_layernorm " + where, g.dInputNorm[l][j], t.layers[l].inputNorm[j]); !e.empty())
                return e;
            if (auto e = check("post_attention_layernorm " + where, g.dPostNorm[l][j], t.layers[l].postNorm[j]);
                !e.empty())
                return e;
        }
    }
    for (Eigen::Index j = 0; j < t.cfg.hiddenSize; j += 5)
        if (auto e = check("final norm [" + std::to_string(j) + "]", g.dFinalNorm[j], t.finalNorm[j]); !e.empty())
            return e;
    if (checked) *checked = n;
    if (largest) *largest = big;
    return {};
}

} // namespace

class TestBackward : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { setNumThreads(2); }

    void parameterGradients_data()
    {
        QTest::addColumn<bool>("gqa");
        QTest::addColumn<bool>("bias");
        QTest::addColumn<bool>("sliding");
        QTest::addColumn<int>("loss");
        QTest::newRow("llama GQA 4/2, bias-free, KL") << true << false << false << int(DistillLoss::Kl);
        QTest::newRow("llama GQA 4/2, bias-free, hidden MSE") << true << false << false << int(DistillLoss::HiddenMse);
        QTest::newRow("qwen2 biases, MHA 4/4, KL") << false << true << false << int(DistillLoss::Kl);
        QTest::newRow("sliding window 3 on layer 0, KL") << true << false << true << int(DistillLoss::Kl);
    }
    void parameterGradients()
    {
        QFETCH(bool, gqa);
        QFETCH(bool, bias);
        QFETCH(bool, sliding);
        QFETCH(int, loss);
        Tiny t(Variant{gqa, bias, sliding});
        int n = 0;
        double largest = 0;
        const std::string err = checkTiny(t, DistillLoss(loss), false, false, &n, &largest);
        QVERIFY2(err.empty(), err.c_str());
        QVERIFY(n > 100);
        QVERIFY2(largest > 1e-3, "gradients too small for the check to mean anything");
    }

    // The checker fails on a flipped sign and on a dropped term (the zero's share of ∂ŵ/∂s).
    void checkerCanFail()
    {
        Tiny t(Variant{});
        QVERIFY(!checkTiny(t, DistillLoss::Kl, true, false).empty());
        QVERIFY(!checkTiny(t, DistillLoss::Kl, false, true).empty());
    }

    // dIn of one layer against differences in its input, loss = Σ out ⊙ R.
    void activationGradients_data()
    {
        QTest::addColumn<bool>("gqa");
        QTest::addColumn<bool>("bias");
        QTest::addColumn<bool>("sliding");
        QTest::newRow("llama GQA 4/2, bias-free") << true << false << false;
        QTest::newRow("qwen2 biases") << false << true << false;
        QTest::newRow("sliding window") << true << false << true;
    }
    void activationGradients()
    {
        QFETCH(bool, gqa);
        QFETCH(bool, bias);
        QFETCH(bool, sliding);
        const Tiny t(Variant{gqa, bias, sliding});
        const DecoderParams<double> p = t.params();
        const int T = t.T;
        const Eigen::Index N = 2 * T, K = t.cfg.hiddenSize;
        std::mt19937 rng(9);
        std::normal_distribution<double> nd(0.0, 1.0);
        MatD in(N, K), R(N, K), out, dIn;
        for (Eigen::Index i = 0; i < in.size(); ++i) {
            in.data()[i] = nd(rng);
            R.data()[i] = nd(rng);
        }
        LayerCache<double> cache;
        LayerGrads<double> g;
        zeroGrads<double>(p.layers[0], true, g);
        const int layer = 0;
        layerBackward<double>(t.cfg, p.layers[0], layer, in, T, R, dIn, g, cache);
        auto f = [&](const MatD& x) {
            MatD o;
            LayerCache<double> c;
            layerForward<double>(t.cfg, p.layers[0], layer, x, T, o, c);
            return o.cwiseProduct(R).sum();
        };
        int bad = 0;
        double largest = 0;
        for (Eigen::Index i = 0; i < N; ++i)
            for (Eigen::Index j = 0; j < K; j += 3) {
                MatD x = in;
                x(i, j) += kFdStep;
                const double up = f(x);
                x(i, j) -= 2 * kFdStep;
                const double numeric = (up - f(x)) / (2 * kFdStep);
                largest = std::max(largest, std::abs(numeric));
                if (!gradClose(dIn(i, j), numeric)) {
                    if (++bad < 4)
                        qWarning("dIn(%d, %d): analytic %.9g numeric %.9g", int(i), int(j), dIn(i, j), numeric);
                }
            }
        QCOMPARE(bad, 0);
        QVERIFY(largest > 1e-2);
        // Dense weight gradient entries too (the scales' chain rule starts there).
        for (Linear lin : {Linear::Q, Linear::K, Linear::V, Linear::O, Linear::Down}) {
            LayerParams<double> lp = p.layers[0];
            MatD& w = lp.w(lin);
            for (int s = 0; s < 4; ++s) {
                const Eigen::Index r = Eigen::Index(rng() % std::uint32_t(w.rows()));
                const Eigen::Index c = Eigen::Index(rng() % std::uint32_t(w.cols()));
                auto fw = [&] {
                    MatD o;
                    LayerCache<double> cc;
                    layerForward<double>(t.cfg, lp, layer, in, T, o, cc);
                    return o.cwiseProduct(R).sum();
                };
                const double keep = w(r, c);
                w(r, c) = keep + kFdStep;
                const double up = fw();
                w(r, c) = keep - kFdStep;
                const double numeric = (up - fw()) / (2 * kFdStep);
                w(r, c) = keep;
                const double analytic = g.weight[std::size_t(lin)](r, c);
                QVERIFY2(gradClose(analytic, numeric), qPrintable(QString("%1 (%2, %3): %4 vs %5")
                                                                      .arg(linearName(lin))
                                                                      .arg(r)
                                                                      .arg(c)
                                                                      .arg(analytic)
                                                                      .arg(numeric)));
            }
        }
    }

    // The templated F32 layer forward is the forward pass of forward.h (up to GEMM rounding).
    void floatForwardMatchesRunLayer()
    {
        for (const Variant v : {Variant{true, false, false}, Variant{false, true, true}}) {
            const Tiny t(v);
            const DecoderParams<double> p = t.params();
            DecoderLayerWeights w;
            w.allocate(t.cfg);
            w.inputNorm = p.layers[0].inputNorm.cast<float>();
            w.postNorm = p.layers[0].postNorm.cast<float>();
            for (Linear lin : kAllLinears) {
                w.weight(lin) = p.layers[0].w(lin).cast<float>();
                w.bias(lin) = p.layers[0].b(lin).cast<float>();
            }
            QVERIFY(w.validate(t.cfg, 0).ok());
            const LayerParams<float> lp = layerParams<float>(w);
            std::mt19937 rng(2);
            std::normal_distribution<float> nd(0.f, 1.f);
            RowMatrix in(2 * t.T, t.cfg.hiddenSize);
            for (Eigen::Index i = 0; i < in.size(); ++i)
                in.data()[i] = nd(rng);
            RowMatrix ref = in, out;
            Workspace ws;
            QVERIFY(runLayer(t.cfg, w, 0, ref, t.T, ws).ok());
            LayerCache<float> cache;
            layerForward<float>(t.cfg, lp, 0, in, t.T, out, cache);
            const double diff = (out - ref).cwiseAbs().maxCoeff();
            QVERIFY2(diff < 1e-4 * std::max(1.0f, ref.cwiseAbs().maxCoeff()), qPrintable(QString::number(diff)));
        }
    }

    // The F32 path (what distillation runs) gives the F64 gradients up to F32 rounding.
    void floatGradientsMatchDouble()
    {
        const Tiny t(Variant{});
        for (DistillLoss kind : {DistillLoss::Kl, DistillLoss::HiddenMse}) {
            const TinyGrads gd = tinyGrads(t, kind);
            const DecoderParams<double> pd = t.params();
            DecoderParams<float> pf;
            pf.config = &t.cfg;
            const MatrixRT<float> ef = t.embedding.cast<float>(), hf = t.head.cast<float>();
            pf.embedding = &ef;
            pf.lmHead = &hf;
            pf.finalNorm = pd.finalNorm.cast<float>();
            DecoderGradsT<float> gf;
            for (const auto& lp : pd.layers) {
                LayerParams<float> f;
                f.inputNorm = lp.inputNorm.cast<float>();
                f.postNorm = lp.postNorm.cast<float>();
                for (std::size_t i = 0; i < 7; ++i) {
                    f.weight[i] = lp.weight[i].cast<float>();
                    f.bias[i] = lp.bias[i].cast<float>();
                }
                gf.layers.emplace_back();
                zeroGrads<float>(f, true, gf.layers.back());
                pf.layers.push_back(std::move(f));
            }
            DecoderGradOptions o;
            o.loss = kind;
            o.normGains = true;
            const MatrixRT<float> tn = t.teacherNormed.cast<float>();
            const auto r = decoderLossAndGrad<float>(pf, t.ids, t.T, tn, o, gf);
            QVERIFY(r.ok());
            QVERIFY(std::abs(*r - gd.loss) <= 1e-4 * std::max(1.0, gd.loss));
            for (std::size_t l = 0; l < pd.layers.size(); ++l)
                for (std::size_t i = 0; i < 7; ++i) {
                    const MatD& a = gd.dense.layers[l].weight[i];
                    const double rel = (gf.layers[l].weight[i].cast<double>() - a).norm() / a.norm();
                    QVERIFY2(rel < kFloatRel, qPrintable(QString("layer %1 linear %2: %3").arg(l).arg(i).arg(rel)));
                }
        }
    }

    // Keeping every layer's intermediates instead of recomputing them changes nothing but memory.
    void keptActivationsEqualRecomputed()
    {
        const Tiny t(Variant{});
        const DecoderParams<double> p = t.params();
        auto run = [&](std::int64_t keep) {
            DecoderGradsT<double> g;
            g.layers.resize(p.layers.size());
            for (std::size_t l = 0; l < p.layers.size(); ++l)
                zeroGrads<double>(p.layers[l], true, g.layers[l]);
            DecoderGradOptions o;
            o.normGains = true;
            o.keepActivationsBytes = keep;
            const auto r = decoderLossAndGrad<double>(p, t.ids, t.T, t.teacherNormed, o, g);
            if (!r.ok()) qFatal("%s", r.error().toString().c_str());
            return g;
        };
        const auto a = run(0), b = run(std::int64_t(1) << 30);
        for (std::size_t l = 0; l < a.layers.size(); ++l) {
            for (std::size_t i = 0; i < 7; ++i)
                QVERIFY(a.layers[l].weight[i] == b.layers[l].weight[i]);
            QVERIFY(a.layers[l].inputNorm == b.layers[l].inputNorm);
        }
    }

    void unsupportedConfigIsAnError()
    {
        ModelConfig c = tinyConfig(Variant{});
        c.gemmaNorms = true;
        QVERIFY(!checkBackwardConfig(c).ok());
        c = tinyConfig(Variant{});
        c.qkNorm = true;
        QVERIFY(!checkBackwardConfig(c).ok());
        QVERIFY(checkBackwardConfig(tinyConfig(Variant{})).ok());
    }
};

QTEST_GUILESS_MAIN(TestBackward)
#include "tst_backward.moc"
