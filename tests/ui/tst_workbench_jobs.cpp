// Worker-thread jobs driven from the window with real clicks, offscreen: calibration fills the
// activations view, cancel returns to idle, perplexity lands in the run history, and the event
// loop is never blocked for more than 50 ms while a job runs (a timer probe measures it).

#include "charts/histogram_chart.h"
#include "event_loop_probe.h"
#include "eval/perplexity.h"
#include "export/gguf_export.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"
#include "models/run_history_model.h"
#include "models/tensor_tree_model.h"
#include "widgets/activations_panel.h"
#include "widgets/job_status.h"
#include "widgets/main_window.h"
#include "widgets/model_explorer.h"
#include "widgets/perplexity_panel.h"
#include "widgets/quantize_panel.h"
#include "io/imatrix.h"
#include "widgets/weights_panel.h"

#include <QDir>
#include <QMessageBox>
#include <QTemporaryDir>
#include <QTabWidget>

#include <QAbstractItemModelTester>
#include <QElapsedTimer>
#include <QJsonDocument>
#include <QCheckBox>
#include <QComboBox>
#include <QFile>
#include <QLineEdit>
#include <QJsonObject>
#include <QLineSeries>
#include <QProgressBar>
#include <QPushButton>
#include <QSignalSpy>
#include <QAbstractAxis>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTest>
#include <QTimer>

#include <ctime>

using namespace qb::ui;
using qbtest::EventLoopProbe;

namespace {

// Saves a grab of the window for the README (packaging/screenshots.sh sets QB_SCREENSHOT_DIR).
void saveScreenshot(QWidget& w, const QString& name)
{
    QString dir = qEnvironmentVariable("QB_SCREENSHOT_DIR");
    if (dir.isEmpty()) dir = QStringLiteral(QB_BINARY_DIR "/screenshots");
    QDir().mkpath(dir);
    QVERIFY(w.grab().save(dir + QLatin1Char('/') + name));
}

bool openDemo(MainWindow& w)
{
    QSignalSpy loaded(&w, &MainWindow::modelLoaded);
    w.openModel(QStringLiteral(QB_DEMO_DIR));
    return loaded.wait(20000);
}
} // namespace

class TestWorkbenchJobs : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { QStandardPaths::setTestModeEnabled(true); }

    void calibrationFillsActivationsViewWithoutBlocking()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(openDemo(w));
        auto* panel = w.activationsPanel();
        QVERIFY(panel->textEdit()->text().endsWith(QStringLiteral("calib.txt")));
        panel->windowsSpin()->setValue(96);
        panel->lengthSpin()->setValue(128);
        const QString name = QStringLiteral("model.layers.2.mlp.down_proj.weight");
        QVERIFY(w.explorer()->selectTensor(name));
        QSignalSpy done(panel, &ActivationsPanel::calibrationFinished);
        EventLoopProbe probe;
        QTest::mouseClick(panel->runButton(), Qt::LeftButton);
        QVERIFY(w.jobStatus()->isBusy());
        QVERIFY(done.wait(180000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        qInfo("calibration: event loop blocked at most %.1f ms (longest wall-clock gap %.1f ms)", probe.maxBusyMs(),
              probe.maxGapMs());
        QVERIFY2(probe.maxBusyMs() < 50.0, qPrintable(QString::number(probe.maxBusyMs())));

        const auto report = panel->report();
        QVERIFY(report);
        const auto* stats = report->forTensor(name.toStdString());
        QVERIFY(stats);
        QCOMPARE(stats->tokens(), qint64(96 * 128));
        // The charts show exactly the report's numbers (on the default log axis an empty bin
        // sits at the axis floor of 0.5).
        const auto h = stats->histogram();
        QVERIFY(panel->histogram()->logCounts());
        const auto plotted = panel->histogram()->plottedCounts();
        QCOMPARE(plotted.size(), h.counts.size());
        for (std::size_t i = 0; i < plotted.size(); ++i)
            QCOMPARE(plotted[i], std::max(0.5, double(h.counts[i])));
        QCOMPARE(panel->maxAbsChart()->series()->count(), stats->channels());
        QCOMPARE(panel->meanSquareChart()->series()->count(), stats->channels());
        QTRY_COMPARE(panel->weightChart()->series()->count(), stats->channels()); // weights side
        QVERIFY(panel->statsText().contains(QStringLiteral("kurtosis")));
        QVERIFY(panel->histogram()->placeholder().isEmpty()); // data: axes, no placeholder
        QTRY_VERIFY(!w.jobStatus()->isVisible());
        w.viewTabs()->setCurrentWidget(panel);
        saveScreenshot(w, QStringLiteral("activations.png"));

        // Issue 19 item 2: a norm (1-D) clears the previous tensor's statistics and says why; in
        // the Weights tab its per-channel charts say they do not apply.
        QSignalSpy ready(w.weightsPanel(), &WeightsPanel::statsReady);
        QVERIFY(w.explorer()->selectTensor(QStringLiteral("model.layers.2.post_attention_layernorm.weight")));
        QVERIFY(panel->statsText().isEmpty());
        QCOMPARE(panel->maxAbsChart()->series()->count(), 0);
        QVERIFY(panel->histogram()->placeholder().contains(QStringLiteral("not a linear layer")));
        QVERIFY(ready.wait(20000));
        QVERIFY2(w.weightsPanel()->findChildren<ChannelChart*>().size() >= 2, "weights panel charts");
        int notApplicable = 0;
        for (ChannelChart* c : w.weightsPanel()->findChildren<ChannelChart*>())
            notApplicable += c->placeholder().contains(QStringLiteral("do not apply to a 1-D tensor"));
        QCOMPARE(notApplicable, 2);
    }

    // Before any tensor is selected the charts say so instead of showing bare axes.
    void emptyChartsSaySelectATensor()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(openDemo(w));
        for (ChannelChart* c : w.weightsPanel()->findChildren<ChannelChart*>()) {
            QCOMPARE(c->placeholder(), QStringLiteral("Select a tensor"));
            for (QAbstractAxis* a : c->chart()->axes())
                QVERIFY(!a->isVisible());
        }
        QCOMPARE(w.activationsPanel()->histogram()->placeholder(), QStringLiteral("Select a tensor"));
        w.viewTabs()->setCurrentWidget(w.weightsPanel());
        saveScreenshot(w, QStringLiteral("weights_empty.png")); // not in the README; for a look
    }

    // Calibration statistics exported as a llama.cpp importance matrix through the runner, then
    // chosen in the Quantization tab; a garbage file there fails naming it.
    void importanceMatrixExportAndUse()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(openDemo(w));
        auto* panel = w.activationsPanel();
        QVERIFY(!panel->exportImatrixButton()->isEnabled()); // nothing collected yet
        panel->windowsSpin()->setValue(8);
        panel->lengthSpin()->setValue(64);
        QSignalSpy done(panel, &ActivationsPanel::calibrationFinished);
        QTest::mouseClick(panel->runButton(), Qt::LeftButton);
        QVERIFY(done.wait(120000));
        QVERIFY(panel->exportImatrixButton()->isEnabled());
        QTemporaryDir dir;
        const QString path = dir.filePath(QStringLiteral("imatrix.gguf"));
        QSignalSpy exported(panel, &ActivationsPanel::importanceMatrixExported);
        panel->exportImportanceMatrix(path);
        QVERIFY(exported.wait(60000));
        QVERIFY2(exported.last().at(0).toBool(), qPrintable(exported.last().at(1).toString()));
        auto m = qb::io::readImportanceMatrix(path.toStdString());
        QVERIFY(m.ok());
        QCOMPARE(m->entries.size(), std::size_t(28));
        QCOMPARE(m->chunkCount, 8u);

        auto* quant = w.quantizePanel();
        QVERIFY(quant);
        const QString garbage = dir.filePath(QStringLiteral("garbage.dat"));
        QFile g(garbage);
        QVERIFY(g.open(QIODevice::WriteOnly) && g.write("not an imatrix") > 0);
        g.close();
        quant->imatrixEdit()->setText(garbage);
        QSignalSpy finished(quant, &QuantizePanel::quantizeFinished);
        QTRY_VERIFY(quant->quantizeButton()->isEnabled());
        QTest::mouseClick(quant->quantizeButton(), Qt::LeftButton);
        QVERIFY(finished.wait(120000));
        QVERIFY(!finished.last().at(0).toBool());
        QVERIFY2(finished.last().at(1).toString().contains(garbage), qPrintable(finished.last().at(1).toString()));
        quant->imatrixEdit()->setText(path);
        quant->windowsSpin()->setValue(8);
        quant->lengthSpin()->setValue(64);
        quant->perplexityCheck()->setChecked(false);
        QTRY_VERIFY(quant->quantizeButton()->isEnabled());
        QTest::mouseClick(quant->quantizeButton(), Qt::LeftButton);
        QVERIFY(finished.wait(240000));
        QVERIFY2(finished.last().at(0).toBool(), qPrintable(finished.last().at(1).toString()));
    }

    void cancelCalibrationReturnsToIdle()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(openDemo(w));
        auto* panel = w.activationsPanel();
        panel->windowsSpin()->setValue(512); // long enough to cancel in the middle
        panel->lengthSpin()->setValue(256);
        QSignalSpy done(panel, &ActivationsPanel::calibrationFinished);
        QTest::mouseClick(panel->runButton(), Qt::LeftButton);
        QTRY_VERIFY_WITH_TIMEOUT(w.jobStatus()->progressBar()->value() > 0, 60000);
        QTest::mouseClick(w.jobStatus()->cancelButton(), Qt::LeftButton);
        QVERIFY(done.wait(30000));
        QCOMPARE(done.last().at(0).toBool(), false);
        QVERIFY(!panel->report());
        QTRY_VERIFY(!w.jobStatus()->isBusy());
        QVERIFY(panel->runButton()->isEnabled());
        // Idle again: a new, small calibration runs to completion.
        panel->windowsSpin()->setValue(4);
        QTest::mouseClick(panel->runButton(), Qt::LeftButton);
        QVERIFY(done.wait(30000));
        QVERIFY(done.last().at(0).toBool());
    }

    // A failed job (here: a model without tokenizer.json) is shown in a dialog, not only in the
    // status bar, and the window stays usable (non-modal).
    void failedJobShowsDialog()
    {
        QTemporaryDir dir;
        const QDir demo(QStringLiteral(QB_DEMO_DIR));
        for (const char* f : {"config.json", "model.safetensors"})
            QVERIFY(QFile::copy(demo.filePath(QString::fromLatin1(f)), dir.filePath(QString::fromLatin1(f))));
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(dir.path());
        QVERIFY(loaded.wait(20000));
        auto* panel = w.perplexityPanel();
        QSignalSpy done(panel, &PerplexityPanel::evaluationFinished);
        QTest::mouseClick(panel->runButton(), Qt::LeftButton);
        QVERIFY(done.wait(60000));
        QVERIFY(!done.last().at(0).toBool());
        QMessageBox* box = nullptr;
        QTRY_VERIFY((box = w.findChild<QMessageBox*>(QStringLiteral("jobErrorBox"))) != nullptr);
        QVERIFY2(box->text().contains(QStringLiteral("no tokenizer.json")), qPrintable(box->text()));
        QCOMPARE(box->windowModality(), Qt::NonModal);
        box->close();
    }
    void perplexityAddsHistoryRow()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(openDemo(w));
        auto* panel = w.perplexityPanel();
        QAbstractItemModelTester tester(panel->history(), QAbstractItemModelTester::FailureReportingMode::QtTest);
        QSignalSpy done(panel, &PerplexityPanel::evaluationFinished);
        EventLoopProbe probe;
        QTest::mouseClick(panel->runButton(), Qt::LeftButton);
        QVERIFY(done.wait(180000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        qInfo("perplexity: event loop blocked at most %.1f ms (longest wall-clock gap %.1f ms)", probe.maxBusyMs(),
              probe.maxGapMs());
        QVERIFY2(probe.maxBusyMs() < 50.0, qPrintable(QString::number(probe.maxBusyMs())));
        QCOMPARE(panel->history()->rowCount(), 1);
        const auto& rec = panel->history()->record(0);
        // The same number as the golden file of the demo model (ctx 128, all tokens).
        QFile golden(QStringLiteral(QB_DEMO_DIR "/golden/golden.json"));
        QVERIFY(golden.open(QIODevice::ReadOnly));
        const double want = QJsonDocument::fromJson(golden.readAll())
                                .object()[QStringLiteral("perplexity")]
                                .toObject()[QStringLiteral("all")]
                                .toObject()[QStringLiteral("value")]
                                .toDouble();
        QVERIFY(rec.perplexity);
        QVERIFY2(std::abs(*rec.perplexity - want) / want < 5e-4, qPrintable(QString::number(*rec.perplexity)));
        QCOMPARE(rec.ctx, 128);
        QCOMPARE(rec.tokens, qint64(25400));
        // A second run with the other scoring mode appends, it does not replace.
        panel->modeCombo()->setCurrentIndex(1);
        QTest::mouseClick(panel->runButton(), Qt::LeftButton);
        QVERIFY(done.wait(180000));
        QCOMPARE(panel->history()->rowCount(), 2);
        QCOMPARE(panel->history()->record(1).mode, QStringLiteral("second-half"));
        QVERIFY(w.explorer()->selectTensor(QStringLiteral("model.layers.1.mlp.down_proj.weight")));
        QSignalSpy ready(w.weightsPanel(), &WeightsPanel::statsReady);
        QVERIFY(ready.wait(20000));
        saveScreenshot(w, QStringLiteral("weights.png"));
    }

    // The Perplexity panel's "8-bit activations": a Q8_0 GGUF of the demo evaluates with integer
    // products (the history row says so and how many linears took them), a different number from
    // the F32-activation run, within a fraction of a percent of it.
    void perplexityWithIntegerKernels()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath(QStringLiteral("demo-q8_0.gguf")).toStdString();
        auto ck = qb::io::openCheckpoint(QB_DEMO_DIR);
        QVERIFY(ck.ok());
        auto tok = qb::io::Tokenizer::fromFile(QB_DEMO_DIR "/tokenizer.json");
        QVERIFY(tok.ok());
        qb::exporting::GgufExportOptions o;
        o.weightType = qb::io::GgmlType::Q8_0;
        auto r = qb::exporting::exportGguf(*ck, *tok, path, o);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(QString::fromStdString(path));
        QVERIFY(loaded.wait(20000));
        // The explorer names the GGUF block type as llama.cpp does.
        const auto* tree = w.explorer()->sourceModel();
        QStringList types;
        for (int g = 0; g < tree->rowCount(); ++g)
            for (int r = 0; r < tree->rowCount(tree->index(g, 0)); ++r)
                types << tree->index(r, TensorTreeModel::DTypeColumn, tree->index(g, 0)).data().toString();
        QVERIFY2(types.contains(QStringLiteral("Q8_0")) && types.contains(QStringLiteral("F32")),
                 qPrintable(types.join(QLatin1Char(' '))));
        auto* panel = w.perplexityPanel();
        panel->textEdit()->setText(QStringLiteral(QB_DEMO_DIR "/eval.txt"));
        QSignalSpy done(panel, &PerplexityPanel::evaluationFinished);
        for (bool int8 : {false, true}) {
            panel->int8Check()->setChecked(int8);
            QTest::mouseClick(panel->runButton(), Qt::LeftButton);
            QVERIFY(done.wait(180000));
            QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
        }
        QCOMPARE(panel->history()->rowCount(), 2);
        const auto& f32 = panel->history()->record(0);
        const auto& i8 = panel->history()->record(1);
        QCOMPARE(f32.variant, QStringLiteral("original"));
        QCOMPARE(i8.variant, QStringLiteral("original, int8 (29 linears)"));
        QVERIFY(f32.perplexity && i8.perplexity);
        qInfo("Q8_0 GGUF: F32 activations %.4f, 8-bit activations %.4f", *f32.perplexity, *i8.perplexity);
        QVERIFY(*i8.perplexity != *f32.perplexity);
        QVERIFY(std::abs(*i8.perplexity / *f32.perplexity - 1) < 2e-3);
        w.resize(1280, 800);
        saveScreenshot(w, QStringLiteral("perplexity_int8.png"));
    }
};

QTEST_MAIN(TestWorkbenchJobs)
#include "tst_workbench_jobs.moc"
