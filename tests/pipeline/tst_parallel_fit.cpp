// The pipeline's parallel NeUQI search (pipeline/parallel_for.h around quantizeRowsGptq) is
// bit-identical to the serial kernel for any worker count, bit widths 2..8, ragged last groups.

#include "pipeline/parallel_for.h"
#include "quant/gptq.h"

#include <QTest>

#include <omp.h>

#include <random>

using namespace qb;

class TstParallelFit : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void identicalToSerial_data()
    {
        QTest::addColumn<int>("rows");
        QTest::addColumn<int>("cols");
        QTest::addColumn<int>("bits");
        QTest::addColumn<int>("group");
        QTest::newRow("64x128 3b g32") << 64 << 128 << 3 << 32;
        QTest::newRow("37x200 2b g64 ragged") << 37 << 200 << 2 << 64;
        QTest::newRow("20x96 4b per-channel") << 20 << 96 << 4 << -1;
        QTest::newRow("9x64 8b g16 (sorted path)") << 9 << 64 << 8 << 16;
    }
    void identicalToSerial()
    {
        QFETCH(int, rows);
        QFETCH(int, cols);
        QFETCH(int, bits);
        QFETCH(int, group);
        std::mt19937_64 rng(std::uint64_t(rows * 1000 + cols + bits));
        std::normal_distribution<float> nd;
        quant::MatrixXfR w(rows, cols);
        for (Eigen::Index i = 0; i < w.size(); ++i)
            w.data()[i] = 0.05f * nd(rng) * (i % 17 == 0 ? 6.f : 1.f);
        Eigen::MatrixXd x(2 * cols, cols);
        for (Eigen::Index i = 0; i < x.size(); ++i)
            x.data()[i] = nd(rng) * (1.0 + (i % cols) % 5);
        const Eigen::MatrixXd h = x.transpose() * x / double(x.rows());
        quant::GptqOptions o;
        o.grid.bits = bits;
        o.grid.groupSize = group;
        o.init = quant::GridInit::Neuqi;
        o.groups = quant::GroupMode::Static;
        o.actOrder = true;
        auto serial = quant::quantizeRowsGptq(w, h, o);
        QVERIFY(serial.ok());
        omp_set_num_threads(4);
        for (int t : {2, 3, 4}) {
            const quant::ParallelFor par = pipeline::openmpParallelFor(t);
            QCOMPARE(par.workers, t);
            auto p = quant::quantizeRowsGptq(w, h, o, nullptr, &par);
            QVERIFY(p.ok());
            QVERIFY(p->scales == serial->scales); // exact, not approximate
            QVERIFY(p->zeros == serial->zeros);
            QVERIFY(p->codes == serial->codes);
            QVERIFY(p->dequantized == serial->dequantized);
            QCOMPARE(p->proxyLoss, serial->proxyLoss);
        }
    }
};

QTEST_GUILESS_MAIN(TstParallelFit)
#include "tst_parallel_fit.moc"
