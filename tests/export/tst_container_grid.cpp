// Target-aware quantization: grids solved inside GGUF block types (quant/container_grid.h) and
// their exact construction in the file (export/ggml_quantize.h). Every container x {Min-Max,
// NeUQI} x {RTN, GPTQ} must decode bit for bit to the solver's dequantized weights; NeUQI must not
// lose to Min-Max on its own proxy, GPTQ must beat RTN on the output error, and the table must
// agree with the codec's traits.

#include "../quant/quant_test_util.h"
#include "export/ggml_quantize.h"
#include "io/ggml_codec.h"
#include "quant/container_grid.h"
#include "quant/error_metrics.h"
#include "quant/gptq.h"

#include <QTest>

#include <cmath>

using namespace qb;
using namespace qb::quant;

namespace {

// Heavy-tailed weights (a few outliers per row, as real linears have) so that clipping matters.
MatrixXfR testWeights(int rows, int cols, std::uint32_t seed)
{
    MatrixXfR w = test::randomWeights(rows, cols, seed);
    std::mt19937 rng(seed + 1);
    std::uniform_int_distribution<int> col(0, cols - 1);
    for (int r = 0; r < rows; ++r)
        for (int k = 0; k < 3; ++k)
            w(r, col(rng)) *= 6.0f;
    w(0, 5) = 0.0f; // a block with zeros, and a whole zero block below
    w.row(1).segment(0, 32).setZero();
    return w;
}

void checkExact(const QuantizedRows& q, const char* what)
{
    const auto type = io::parseGgmlType(q.container);
    QVERIFY2(type, what);
    QuantizedRows withDeq = q;
    withDeq.dequantized = dequantizeRowsUniform(q);
    auto e = exporting::encodeGridGgml(*type, withDeq);
    QVERIFY2(e.ok(), what);
    QVERIFY2(e->fromGrid, qPrintable(QString("%1: no exact construction").arg(what)));
    QVERIFY2(e->exact, qPrintable(QString("%1: max abs diff %2").arg(what).arg(e->maxAbsDiff)));
    QCOMPARE(e->maxAbsDiff, 0.0);
    QCOMPARE(e->bytes.size(), std::size_t(q.codes.rows()) * io::ggmlRowBytes(*type, q.codes.cols()));
}

double weightedMse(const MatrixXfR& w, const MatrixXfR& q, const Eigen::VectorXd& h)
{
    double s = 0;
    for (Eigen::Index r = 0; r < w.rows(); ++r)
        for (Eigen::Index c = 0; c < w.cols(); ++c) {
            const double e = double(w(r, c)) - double(q(r, c));
            s += h(c) * e * e;
        }
    return s;
}

} // namespace

class TestContainerGrid : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void tableAgreesWithTheCodec()
    {
        QCOMPARE(int(containerSpecs().size()), 10);
        for (const ContainerSpec& s : containerSpecs()) {
            const auto t = io::parseGgmlType(s.name);
            QVERIFY2(t, s.name);
            const auto* tr = io::ggmlTypeTraits(int(*t));
            QCOMPARE(tr->blockSize, s.blockSize);
            QCOMPARE(tr->typeSize, s.blockBytes);
            QCOMPARE(s.blockSize % s.subBlock, 0);
            QVERIFY(findContainerSpec(io::ggmlTypeLowerName(*t)) == &s);
        }
        QVERIFY(!findContainerSpec("Q4_2"));
        QVERIFY(!findContainerSpec("F16"));
        QCOMPARE(findContainerSpec("q4_k")->bitsPerWeight(), 4.5);
        QCOMPARE(findContainerSpec("Q6_K")->bitsPerWeight(), 6.5625);
    }

    void rtnIsExactInEveryContainer_data()
    {
        QTest::addColumn<QString>("type");
        QTest::addColumn<bool>("neuqi");
        for (const ContainerSpec& s : containerSpecs())
            for (bool neuqi : {false, true})
                QTest::newRow(qPrintable(QString("%1 %2").arg(s.name, neuqi ? "neuqi" : "minmax")))
                    << QString(s.name) << neuqi;
    }
    void rtnIsExactInEveryContainer()
    {
        QFETCH(QString, type);
        QFETCH(bool, neuqi);
        const ContainerSpec* spec = findContainerSpec(type.toStdString());
        QVERIFY(spec);
        const MatrixXfR w = testWeights(6, 512, 11);
        Eigen::VectorXd h = Eigen::VectorXd::LinSpaced(512, 0.5, 2.0);
        auto q = quantizeRowsContainer(*spec, w, &h, neuqi ? GridInit::Neuqi : GridInit::MinMax);
        QVERIFY2(q.ok(), q.ok() ? "" : q.error().toString().c_str());
        QCOMPARE(q->container, std::string(spec->name));
        QCOMPARE(q->bits, spec->bits);
        checkExact(*q, qPrintable(type));
        // Nearest rounding: every weight is within half a step of its decoded value unless clipped.
        QVERIFY(q->dequantized.allFinite());
        const double rel = (w - q->dequantized).norm() / w.norm();
        QVERIFY2(rel < 1.6 * std::pow(2.0, -spec->bits + 1), qPrintable(QString::number(rel)));
    }

    void neuqiNeverLosesToMinMax_data()
    {
        QTest::addColumn<QString>("type");
        for (const ContainerSpec& s : containerSpecs())
            QTest::newRow(s.name) << QString(s.name);
    }
    void neuqiNeverLosesToMinMax()
    {
        QFETCH(QString, type);
        const ContainerSpec* spec = findContainerSpec(type.toStdString());
        const MatrixXfR w = testWeights(8, 256, 5);
        Eigen::VectorXd h = Eigen::VectorXd::LinSpaced(256, 0.1, 3.0);
        auto mm = quantizeRowsContainer(*spec, w, &h, GridInit::MinMax);
        auto ne = quantizeRowsContainer(*spec, w, &h, GridInit::Neuqi);
        QVERIFY(mm.ok() && ne.ok());
        const double lm = weightedMse(w, mm->dequantized, h), ln = weightedMse(w, ne->dequantized, h);
        QVERIFY2(ln <= lm * (1 + 1e-12), qPrintable(QString("neuqi %1 minmax %2").arg(ln).arg(lm)));
    }

    // Against ggml's own reference quantizer of the same type (plain MSE, uniform weights): our
    // NeUQI fit inside the container is at least as good over a matrix.
    void neuqiMatchesOrBeatsGgmlReference_data() { neuqiNeverLosesToMinMax_data(); }
    void neuqiMatchesOrBeatsGgmlReference()
    {
        QFETCH(QString, type);
        const ContainerSpec* spec = findContainerSpec(type.toStdString());
        const auto t = io::parseGgmlType(spec->name);
        const MatrixXfR w = testWeights(16, 512, 9);
        auto ne = quantizeRowsContainer(*spec, w, nullptr, GridInit::Neuqi);
        QVERIFY(ne.ok());
        auto ref = exporting::encodeMatrixGgml(*t, w.data(), w.rows(), w.cols());
        QVERIFY(ref.ok());
        MatrixXfR dec(w.rows(), w.cols());
        const std::size_t rb = io::ggmlRowBytes(*t, w.cols());
        for (Eigen::Index r = 0; r < w.rows(); ++r)
            QVERIFY(
                io::dequantizeGgml(int(*t), ref->bytes.data() + std::size_t(r) * rb, dec.row(r).data(), w.cols()).ok());
        const double ours = (w - ne->dequantized).squaredNorm(), ggml = (w - dec).squaredNorm();
        qInfo("%s: NeUQI-in-container MSE / ggml reference MSE = %.4f", spec->name, ours / ggml);
        QVERIFY2(ours <= ggml * 1.0001, qPrintable(QString("ours %1 ggml %2").arg(ours).arg(ggml)));
    }

    void gptqInsideTheContainerIsExactAndBeatsRtn_data()
    {
        QTest::addColumn<QString>("type");
        QTest::addColumn<bool>("actOrder");
        for (const char* n : {"Q4_0", "Q4_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"})
            for (bool ao : {false, true})
                QTest::newRow(qPrintable(QString("%1%2").arg(n, ao ? " act-order" : ""))) << QString(n) << ao;
    }
    void gptqInsideTheContainerIsExactAndBeatsRtn()
    {
        QFETCH(QString, type);
        QFETCH(bool, actOrder);
        const ContainerSpec* spec = findContainerSpec(type.toStdString());
        const int cols = 256;
        const MatrixXfR w = testWeights(12, cols, 3);
        const Eigen::MatrixXd h = test::hessianOf(test::correlatedInputs(1024, cols, 4));
        const Eigen::VectorXd hd = h.diagonal();
        auto fit = fitContainerGrid(*spec, w, &hd, GridInit::Neuqi);
        QVERIFY(fit.ok());
        GptqOptions base;
        base.actOrder = actOrder;
        const GptqOptions o = containerGptqOptions(*spec, base, *fit);
        auto g = quantizeRowsGptq(w, h, o);
        QVERIFY2(g.ok(), g.ok() ? "" : g.error().toString().c_str());
        QCOMPARE(g->container, std::string(spec->name));
        QVERIFY(g->scales == fit->scales);
        checkExact(*g, qPrintable(type));
        // The dequantized values the solver reports are what the codes decode to.
        QVERIFY(dequantizeRowsUniform(*g) == g->dequantized);
        auto r = quantizeRowsContainer(*spec, w, &hd, GridInit::Neuqi);
        QVERIFY(r.ok());
        const double eg = hessianErrorTrace(w, g->dequantized, h), er = hessianErrorTrace(w, r->dequantized, h);
        QVERIFY2(eg < er, qPrintable(QString("gptq %1 rtn %2").arg(eg).arg(er)));
    }

    // With a diagonal H there is no error to feed back, so GPTQ inside a container must round every
    // weight as RTN inside it does: the vectorised per-column rounding against the scalar one, on
    // grids with an offset (Q4_1, the K-quants) and without, in every container.
    void diagonalHessianEqualsRtnInEveryContainer_data()
    {
        QTest::addColumn<QString>("type");
        QTest::addColumn<bool>("actOrder");
        for (const ContainerSpec& spec : containerSpecs())
            for (bool ao : {false, true})
                QTest::newRow(qPrintable(QString("%1%2").arg(spec.name, ao ? " act-order" : "")))
                    << QString(spec.name) << ao;
    }
    void diagonalHessianEqualsRtnInEveryContainer()
    {
        QFETCH(QString, type);
        QFETCH(bool, actOrder);
        const ContainerSpec* spec = findContainerSpec(type.toStdString());
        QVERIFY(spec);
        const int cols = 256;
        const MatrixXfR w = testWeights(12, cols, 5);
        const Eigen::VectorXd hd = test::logNormalDiagonal(cols, 23u);
        const Eigen::MatrixXd h = hd.asDiagonal();
        auto fit = fitContainerGrid(*spec, w, &hd, GridInit::Neuqi);
        QVERIFY(fit.ok());
        GptqOptions base;
        base.actOrder = actOrder;
        base.blockSize = 32;
        auto g = quantizeRowsGptq(w, h, containerGptqOptions(*spec, base, *fit));
        QVERIFY2(g.ok(), g.ok() ? "" : g.error().toString().c_str());
        auto r = quantizeRowsContainer(*spec, w, &hd, GridInit::Neuqi);
        QVERIFY(r.ok());
        QVERIFY(g->scales == r->scales);
        QVERIFY(g->zeros == r->zeros);
        QVERIFY(g->offsets == r->offsets);
        QVERIFY(g->codes == r->codes);
        QVERIFY(g->dequantized == r->dequantized);
    }

    void badInputIsAnError()
    {
        const ContainerSpec* q4k = findContainerSpec("Q4_K");
        auto narrow = fitContainerGrid(*q4k, test::randomWeights(4, 288, 1), nullptr, GridInit::MinMax);
        QVERIFY(!narrow.ok());
        QVERIFY(QString::fromStdString(narrow.error().message).contains("not a multiple of the Q4_K block size 256"));
        MatrixXfR w = test::randomWeights(4, 256, 1);
        w(2, 7) = std::numeric_limits<float>::quiet_NaN();
        auto nan = fitContainerGrid(*q4k, w, nullptr, GridInit::Neuqi);
        QVERIFY(!nan.ok());
        QCOMPARE(nan.error().code, ErrorCode::NumericalError);
        Eigen::VectorXd shortH(10);
        QVERIFY(!fitContainerGrid(*q4k, test::randomWeights(4, 256, 1), &shortH, GridInit::Neuqi).ok());
        // GPTQ refuses a fixed grid of another shape.
        auto fit = fitContainerGrid(*q4k, test::randomWeights(4, 256, 1), nullptr, GridInit::MinMax);
        QVERIFY(fit.ok());
        const GptqOptions o = containerGptqOptions(*q4k, {}, *fit);
        const MatrixXfR other = test::randomWeights(5, 256, 2);
        QVERIFY(!quantizeRowsGptq(other, Eigen::MatrixXd::Identity(256, 256), o).ok());
    }
};

QTEST_GUILESS_MAIN(TestContainerGrid)
#include "tst_container_grid.moc"
