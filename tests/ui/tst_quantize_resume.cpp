// The window's crash-safe quantize runs (widgets/quantize_resume.h): a finished run leaves no
// checkpoint; a checkpoint left by an interrupted run of the same model, plan and calibration
// makes the Quantize button ask, offscreen with real clicks: Resume gives the uninterrupted run's
// result bit for bit, Start over runs from the first layer, Cancel starts nothing and keeps it.

#include "io/checkpoint.h"
#include "models/quant_run_model.h"
#include "pipeline/quantize_checkpoint.h"
#include "pipeline/workflows.h"
#include "widgets/main_window.h"
#include "widgets/plan_editor.h"
#include "models/plan_table_model.h"
#include "widgets/quantize_panel.h"
#include "widgets/quantize_resume.h"

#include <QDir>
#include <QFileInfo>
#include <QLineEdit>
#include <QCheckBox>
#include <QMessageBox>
#include <QPushButton>
#include <QSignalSpy>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTabBar>
#include <QTabWidget>
#include <QTest>

#include <cstring>

using namespace qb;
using namespace qb::ui;

namespace {

struct Fixture {
    MainWindow w;
    QuantizePanel* panel = nullptr;
    bool open()
    {
        w.resize(1500, 950);
        w.show();
        if (!QTest::qWaitForWindowExposed(&w)) return false;
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(QStringLiteral(QB_DEMO_DIR));
        if (!loaded.wait(20000)) return false;
        panel = w.findChild<QuantizePanel*>();
        if (!panel) return false;
        QTabBar* bar = w.viewTabs()->tabBar();
        QTest::mouseClick(bar, Qt::LeftButton, {}, bar->tabRect(w.viewTabs()->indexOf(panel)).center());
        panel->windowsSpin()->setValue(8); // tiny calibration: 8 windows x 64 tokens
        panel->lengthSpin()->setValue(64);
        panel->perplexityCheck()->setChecked(false); // the quantization is what is compared
        return true;
    }
    // The request the panel builds, as far as its checkpoint depends on it.
    pipeline::QuantizeRequest request(std::shared_ptr<const io::Checkpoint> ck) const
    {
        pipeline::QuantizeRequest r;
        r.checkpoint = std::move(ck);
        r.plan = panel->planEditor()->model()->plan();
        r.calibration.textPath = panel->calibText()->text().toStdString();
        r.calibration.options.nsamples = panel->windowsSpin()->value();
        r.calibration.options.seqlen = panel->lengthSpin()->value();
        return r;
    }
};

bool sameWeights(const model::RowMatrix& a, const model::RowMatrix& b)
{
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           (a.size() == 0 || std::memcmp(a.data(), b.data(), std::size_t(a.size()) * sizeof(float)) == 0);
}

// Reports (timings aside), codes and the fake-quantized model's linears, bit for bit.
bool sameResult(const pipeline::QuantizeResult& a, const pipeline::QuantizeResult& b)
{
    if (a.tensors.size() != b.tensors.size() || !a.model || !b.model) return false;
    for (std::size_t i = 0; i < a.tensors.size(); ++i) {
        const auto &x = a.tensors[i], &y = b.tensors[i];
        if (x.name != y.name || std::memcmp(&x.relativeError, &y.relativeError, sizeof(double)) != 0 ||
            std::memcmp(&x.proxyLoss, &y.proxyLoss, sizeof(double)) != 0)
            return false;
    }
    for (int l = 0; l < a.model->numLayers(); ++l) {
        // The runs' models hold their linears as codes (model.h): compare the decoded values, and
        // that both hold them the same way.
        const auto la = a.model->layer(l), lb = b.model->layer(l);
        const auto fa = model::unpackedLayer(la), fb = model::unpackedLayer(lb);
        for (model::Linear lin : model::kAllLinears)
            if (!sameWeights(fa->weight(lin), fb->weight(lin)) ||
                bool(la->packedWeight(lin)) != bool(lb->packedWeight(lin)))
                return false;
    }
    return true;
}

QMessageBox* resumeBox(QWidget* w) { return w->findChild<QMessageBox*>(QStringLiteral("resumeQuantizeBox")); }

QPushButton* button(QMessageBox* box, const QString& text)
{
    for (QAbstractButton* b : box->buttons())
        if (b->text() == text) return qobject_cast<QPushButton*>(b);
    return nullptr;
}

} // namespace

class TestQuantizeResume : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase()
    {
        QStandardPaths::setTestModeEnabled(true);
        // Checkpoint directories are per process in test mode: those of killed earlier runs go.
        QDir cache(QStandardPaths::writableLocation(QStandardPaths::CacheLocation));
        for (const QString& d : cache.entryList({"test-pid-*"}, QDir::Dirs))
            QDir(cache.filePath(d)).removeRecursively();
    }

    // Nothing is left in the cache once every run finished (no empty directories either).
    void cleanupTestCase()
    {
        QDir cache(QStandardPaths::writableLocation(QStandardPaths::CacheLocation));
        QCOMPARE(cache.entryList({"test-pid-*"}, QDir::Dirs), QStringList());
    }

    void resumeStartOverCancel()
    {
        Fixture f;
        QVERIFY(f.open());
        QSignalSpy done(f.panel, &QuantizePanel::quantizeFinished);
        QTest::mouseClick(f.panel->quantizeButton(), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        const auto reference = f.panel->currentRun()->result;
        QCOMPARE(reference->resumedLayers, 0);

        auto ck = io::openCheckpoint(QB_DEMO_DIR);
        QVERIFY(ck.ok());
        auto shared = std::make_shared<const io::Checkpoint>(std::move(*ck));
        pipeline::QuantizeRequest req = f.request(shared);
        const QString dir = quantizeCheckpointDir(*shared, req, QString());
        QVERIFY(!QFileInfo::exists(dir)); // the finished run removed its checkpoint

        // An interrupted run: the same request, stopped after layer 1 as a kill would leave it.
        auto interrupt = [&] {
            pipeline::QuantizeRequest r = req;
            r.options.checkpoint.dir = dir.toStdString();
            r.options.checkpoint.overwrite = true;
            RunContext ctx;
            r.options.onLayerDone = [&](int layer, const std::vector<pipeline::TensorReport>&) {
                if (layer == 1) ctx.requestCancel();
            };
            auto stopped = pipeline::quantizeModel(r, &ctx);
            return !stopped.ok() && stopped.error().code == ErrorCode::Cancelled &&
                   interruptedQuantizeRun(dir) == std::pair(2, 4);
        };
        QVERIFY(interrupt());

        // Cancel: nothing starts, the checkpoint stays.
        const int runs = f.panel->runs()->rowCount();
        QTest::mouseClick(f.panel->quantizeButton(), Qt::LeftButton);
        QTRY_VERIFY(resumeBox(&f.w) && resumeBox(&f.w)->isVisible());
        QVERIFY2(resumeBox(&f.w)->text().contains("2 of 4 layers"), qPrintable(resumeBox(&f.w)->text()));
        QVERIFY(!f.panel->quantizeButton()->isEnabled());
        QTest::mouseClick(resumeBox(&f.w)->button(QMessageBox::Cancel), Qt::LeftButton);
        QTRY_VERIFY(!resumeBox(&f.w));
        QVERIFY(f.panel->quantizeButton()->isEnabled());
        QCOMPARE(f.panel->runs()->rowCount(), runs);
        QVERIFY(interruptedQuantizeRun(dir).has_value());

        // Resume: layers 0 and 1 from the checkpoint, the uninterrupted run's result.
        QTest::mouseClick(f.panel->quantizeButton(), Qt::LeftButton);
        QTRY_VERIFY(resumeBox(&f.w) && resumeBox(&f.w)->isVisible());
        QTest::mouseClick(button(resumeBox(&f.w), "Resume"), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        QCOMPARE(f.panel->currentRun()->result->resumedLayers, 2);
        QVERIFY(sameResult(*reference, *f.panel->currentRun()->result));
        QVERIFY(!QFileInfo::exists(dir));

        // Start over: from the first layer, the checkpoint replaced and removed at the end.
        QVERIFY(interrupt());
        QTest::mouseClick(f.panel->quantizeButton(), Qt::LeftButton);
        QTRY_VERIFY(resumeBox(&f.w) && resumeBox(&f.w)->isVisible());
        QTest::mouseClick(button(resumeBox(&f.w), "Start over"), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        QCOMPARE(f.panel->currentRun()->result->resumedLayers, 0);
        QVERIFY(sameResult(*reference, *f.panel->currentRun()->result));
        QVERIFY(!QFileInfo::exists(dir));
    }
};

QTEST_MAIN(TestQuantizeResume)
#include "tst_quantize_resume.moc"
