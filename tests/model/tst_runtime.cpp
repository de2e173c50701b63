// Activation runtime (model/runtime.h): the fake quantizers against a plain reference written from
// METHODS.md §0 / QuaRot's ActQuantizer, and the forward pass with online transforms: an
// orthogonal rotation or a smoothing divisor with the matching weight fold leaves the demo
// model's logits unchanged; activation and K/V quantization perturb them by an amount that shrinks
// with the bits; validate() refuses a runtime of the wrong width.

#include "model/forward.h"
#include "model/runtime.h"
#include "model_test_util.h"

#include <Eigen/QR>
#include <QTest>

#include <cmath>
#include <random>

using namespace qb;
using namespace qb::model;

namespace {

RowMatrix randomRows(Eigen::Index n, Eigen::Index k, unsigned seed, float outlierScale = 1)
{
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    RowMatrix x(n, k);
    for (Eigen::Index i = 0; i < x.size(); ++i)
        x.data()[i] = nd(rng);
    if (outlierScale != 1) x.col(k / 3) *= outlierScale;
    return x;
}

// Random orthogonal matrix (QR of a Gaussian one, double).
RowMatrix randomOrthogonal(Eigen::Index n, unsigned seed)
{
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd(0, 1);
    Eigen::MatrixXd a(n, n);
    for (Eigen::Index i = 0; i < a.size(); ++i)
        a.data()[i] = nd(rng);
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
    const Eigen::MatrixXd q = qr.householderQ();
    return q.cast<float>();
}

// The quantizer written the plain way: divide, round half to even, clamp, dequantize.
void referenceQuantizeRow(float* x, Eigen::Index n, const ActQuantSpec& spec)
{
    float lo = 0, hi = 0;
    for (Eigen::Index j = 0; j < n; ++j) {
        lo = std::min(lo, x[j]);
        hi = std::max(hi, x[j]);
    }
    lo *= spec.clip;
    hi *= spec.clip;
    if (spec.sym) {
        const double qmax = (1 << (spec.bits - 1)) - 1;
        const double s = std::max(-lo, hi) / qmax;
        if (s == 0) return;
        for (Eigen::Index j = 0; j < n; ++j)
            x[j] = float(s * std::clamp(std::nearbyint(x[j] / s), -qmax - 1, qmax));
        return;
    }
    const double qmax = (1 << spec.bits) - 1;
    const double s = (double(hi) - double(lo)) / qmax;
    if (s == 0) return;
    const double z = std::nearbyint(-lo / s);
    for (Eigen::Index j = 0; j < n; ++j)
        x[j] = float(s * (std::clamp(std::nearbyint(x[j] / s) + z, 0.0, qmax) - z));
}

std::shared_ptr<Model> demo()
{
    std::string err;
    auto m = qbtest::loadModelDir(qbtest::demoDir(), &err);
    if (!m) qWarning("%s", err.c_str());
    return m;
}

RowMatrix demoLogits(const Model& m, int windows = 2, int T = 64)
{
    const auto tokens = qbtest::goldenTokens();
    Workspace ws;
    auto r = forwardLogits(m, std::span(tokens.data(), std::size_t(windows * T)), T, ws);
    return r.ok() ? *r : RowMatrix();
}

double relDiff(const RowMatrix& a, const RowMatrix& b) { return (a - b).norm() / b.norm(); }

// A copy of layer l of m whose runtime is `rt` (weights copied so they can be folded).
std::shared_ptr<DecoderLayerWeights> layerCopy(const Model& m, int l)
{
    return std::make_shared<DecoderLayerWeights>(*m.layer(l));
}

} // namespace

class TestRuntime : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { setNumThreads(2); }

    void quantizerMatchesReference_data()
    {
        QTest::addColumn<int>("bits");
        QTest::addColumn<bool>("sym");
        QTest::addColumn<float>("clip");
        for (int bits : {4, 6, 8})
            for (bool sym : {false, true})
                for (float clip : {1.0f, 0.9f})
                    QTest::newRow(qPrintable(QString("%1b %2 clip %3").arg(bits).arg(sym ? "sym" : "asym").arg(clip)))
                        << bits << sym << clip;
    }

    void quantizerMatchesReference()
    {
        QFETCH(int, bits);
        QFETCH(bool, sym);
        QFETCH(float, clip);
        const ActQuantSpec spec{bits, sym, clip};
        const RowMatrix x = randomRows(64, 200, 7, 20.f);
        RowMatrix got = x;
        fakeQuantizeActivations(got, spec);
        RowMatrix want = x;
        for (Eigen::Index r = 0; r < want.rows(); ++r)
            referenceQuantizeRow(want.row(r).data(), want.cols(), spec);
        // x / s and x * (1/s) may round a tie the other way: allow one grid step on a few values.
        int off = 0;
        for (Eigen::Index r = 0; r < x.rows(); ++r) {
            const float step = (want.row(r).maxCoeff() - want.row(r).minCoeff()) / float((1 << bits) - 1);
            for (Eigen::Index j = 0; j < x.cols(); ++j) {
                const float d = std::abs(got(r, j) - want(r, j));
                QVERIFY2(d <= 1.01f * step + 1e-6f, qPrintable(QString("row %1 col %2: %3").arg(r).arg(j).arg(d)));
                if (d > 1e-5f * std::max(1.0f, std::abs(want(r, j)))) ++off;
            }
        }
        QVERIFY2(off <= x.size() / 1000 + 2, qPrintable(QString::number(off)));
        // Idempotent without clipping (a clip narrows the range again on every pass).
        if (clip != 1.0f) return;
        RowMatrix again = got;
        fakeQuantizeActivations(again, spec);
        QVERIFY(relDiff(again, got) < 1e-5);
    }

    void asymmetricRowExtremesAreExact()
    {
        // METHODS.md §6.2 item 2: without clipping, each row's min and max (the row straddles 0)
        // come back unchanged, codes 0 and L-1 — up to the rounding of the zero-point.
        const RowMatrix x = randomRows(32, 128, 3);
        RowMatrix q = x;
        fakeQuantizeActivations(q, {8, false, 1.0f});
        for (Eigen::Index r = 0; r < x.rows(); ++r) {
            const float step = (x.row(r).maxCoeff() - x.row(r).minCoeff()) / 255.f;
            QVERIFY(std::abs(q.row(r).maxCoeff() - x.row(r).maxCoeff()) <= 0.5f * step + 1e-6f);
            QVERIFY(std::abs(q.row(r).minCoeff() - x.row(r).minCoeff()) <= 0.5f * step + 1e-6f);
            // every value is within half a step of its original
            QVERIFY(((q.row(r) - x.row(r)).cwiseAbs().maxCoeff()) <= 0.5001f * step + 1e-6f);
        }
    }

    void perTensorAndStatic()
    {
        const RowMatrix x = randomRows(16, 64, 5);
        RowMatrix perTensor = x;
        ActQuantSpec spec{4, false, 1.0f, ActGranularity::PerTensor};
        fakeQuantizeActivations(perTensor, spec);
        // One grid for every row: at most 16 distinct values in the whole matrix.
        std::vector<float> values(perTensor.data(), perTensor.data() + perTensor.size());
        std::sort(values.begin(), values.end());
        QVERIFY(std::unique(values.begin(), values.end()) - values.begin() <= 16);
        // A static range equal to the data's gives the same result; a narrower one clips.
        spec.staticRange = std::array<float, 2>{x.minCoeff(), x.maxCoeff()};
        RowMatrix fixed = x;
        fakeQuantizeActivations(fixed, spec);
        QVERIFY(relDiff(fixed, perTensor) < 1e-6);
        spec.staticRange = std::array<float, 2>{-0.5f, 0.5f};
        fixed = x;
        fakeQuantizeActivations(fixed, spec);
        const float step = 1.0f / 15; // the integer zero-point may shift the grid by up to one step
        QVERIFY(fixed.maxCoeff() <= 0.5f + step && fixed.minCoeff() >= -0.5f - step);
        QVERIFY(x.maxCoeff() > 1.0f && x.minCoeff() < -1.0f);
    }

    void segmentsQuantizeEachHeadAlone()
    {
        RowMatrix x = randomRows(8, 64, 9);
        x.middleCols(32, 32) *= 100.f; // a loud second head must not coarsen the first
        RowMatrix seg = x;
        fakeQuantizeSegments(seg, 32, {4, false, 1.0f});
        RowMatrix first = x.leftCols(32);
        fakeQuantizeActivations(first, {4, false, 1.0f});
        QVERIFY(relDiff(seg.leftCols(32), first) < 1e-6);
        RowMatrix whole = x;
        fakeQuantizeActivations(whole, {4, false, 1.0f});
        QVERIFY(relDiff(seg.leftCols(32), x.leftCols(32)) < 0.5 * relDiff(whole.leftCols(32), x.leftCols(32)));
    }

    void rotationAndSmoothingPreserveLogits()
    {
        auto m = demo();
        QVERIFY(m);
        const ModelConfig& c = m->config();
        const RowMatrix ref = demoLogits(*m);
        QVERIFY(ref.size() > 0);
        for (int l = 0; l < m->numLayers(); ++l) {
            auto w = layerCopy(*m, l);
            auto rt = std::make_shared<LayerRuntime>();
            // o input: rotation R, W_o <- W_o R (x R (W_o R)^T = x W_o^T).
            const Eigen::Index od = c.numAttentionHeads * c.headDim;
            auto ro = std::make_shared<DenseRowTransform>(randomOrthogonal(od, 10 + l), "random");
            rt->input(LinearKind::O).rotate = ro;
            w->o = (w->o * ro->matrix()).eval();
            // down input: smoothing s then rotation R, W_down <- W_down diag(s) R.
            RowVector s = RowVector::LinSpaced(c.intermediateSize, 0.25f, 4.0f);
            auto rd = std::make_shared<DenseRowTransform>(randomOrthogonal(c.intermediateSize, 20 + l), "random");
            rt->input(LinearKind::Down).smoothDivisor = s;
            rt->input(LinearKind::Down).rotate = rd;
            w->down = ((w->down * s.asDiagonal()) * rd->matrix()).eval();
            // q/k per head: cancels in QK^T.
            rt->kv.qkRotate = std::make_shared<DenseRowTransform>(randomOrthogonal(c.headDim, 30 + l), "random");
            w->runtime = rt;
            QVERIFY(w->validate(c, l).ok());
            m->setLayer(l, w);
        }
        const double d = relDiff(demoLogits(*m), ref);
        qInfo("rotated + smoothed: relative logit difference %.3g", d);
        QVERIFY2(d < 1e-4, qPrintable(QString::number(d)));
    }

    void activationBitsOrderTheError()
    {
        auto m = demo();
        QVERIFY(m);
        const RowMatrix ref = demoLogits(*m);
        auto quantized = [&](int abits, int kvbits) {
            auto q = std::make_shared<Model>(*m);
            for (int l = 0; l < q->numLayers(); ++l) {
                auto w = layerCopy(*q, l);
                auto rt = std::make_shared<LayerRuntime>();
                for (auto& in : rt->inputs)
                    in.quant = {abits, false, 1.0f};
                rt->kv.k = rt->kv.v = {kvbits, false, 1.0f};
                w->runtime = rt;
                q->setLayer(l, w);
            }
            return relDiff(demoLogits(*q), ref);
        };
        const double a8 = quantized(8, 8), a6 = quantized(6, 6), a4 = quantized(4, 4), a4kv16 = quantized(4, 0);
        qInfo("relative logit error: A8KV8 %.3g, A6KV6 %.3g, A4KV4 %.3g, A4 only %.3g", a8, a6, a4, a4kv16);
        QVERIFY(a8 > 0 && a8 < 0.05);
        QVERIFY(a8 < a6 && a6 < a4);
        QVERIFY(a4kv16 < a4);
    }

    void tapsSeeTheTransformedInput()
    {
        auto m = demo();
        QVERIFY(m);
        auto w = layerCopy(*m, 0);
        auto rt = std::make_shared<LayerRuntime>();
        rt->input(LinearKind::GateUp).quant = {4, false, 1.0f};
        w->runtime = rt;
        const auto tokens = qbtest::goldenTokens();
        RowMatrix hidden;
        QVERIFY(embed(*m, std::span(tokens.data(), 32), hidden).ok());
        Workspace ws;
        int distinctMax = 0;
        QVERIFY(
            runLayer(m->config(), *w, 0, hidden, 32, ws, [&](int, LinearKind k, const Eigen::Ref<const RowMatrix>& x) {
                if (k != LinearKind::GateUp) return;
                for (Eigen::Index r = 0; r < x.rows(); ++r) {
                    std::vector<float> v(x.row(r).data(), x.row(r).data() + x.cols());
                    std::sort(v.begin(), v.end());
                    distinctMax = std::max(distinctMax, int(std::unique(v.begin(), v.end()) - v.begin()));
                }
            }).ok());
        QVERIFY(distinctMax > 1 && distinctMax <= 16);
    }

    void wrongWidthIsRefused()
    {
        auto m = demo();
        QVERIFY(m);
        auto w = layerCopy(*m, 0);
        auto rt = std::make_shared<LayerRuntime>();
        rt->input(LinearKind::Down).smoothDivisor = RowVector::Ones(7);
        w->runtime = rt;
        const Status st = w->validate(m->config(), 0);
        QVERIFY(!st.ok());
        QVERIFY(st.error().message.find("smoothing") != std::string::npos);
        rt->input(LinearKind::Down).smoothDivisor.resize(0);
        rt->kv.qkRotate = std::make_shared<DenseRowTransform>(RowMatrix::Identity(5, 5), "identity");
        QVERIFY(!w->validate(m->config(), 0).ok());
        QCOMPARE(rt->onlineTransforms(), std::string("q/k per head: identity"));
    }
};

QTEST_GUILESS_MAIN(TestRuntime)
#include "tst_runtime.moc"
