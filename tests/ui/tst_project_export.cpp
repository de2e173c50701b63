// Export and projects from the window, offscreen with real clicks: quantize the demo model through
// the Quantization tab (8 x 64 calibration), export the run to GGUF through the Export dialog (path
// typed into the line edit, Export clicked; the file verifies and the exactness table is filled),
// save a .qbproj, open it in a fresh MainWindow (plan and run metrics equal, nothing recomputed),
// export the restored run to safetensors (it verifies), and refuse a newer major version with a
// dialog naming the file. With two runs, the Save Project dialog says it stores both runs' grids,
// and the reopened run that is not the selected one exports byte for byte as before saving.

#include "export/model_verify.h"
#include "export/project_bundle.h"
#include "export/safetensors_export.h"
#include "models/plan_table_model.h"
#include "models/quant_run_model.h"
#include "models/run_history_model.h"
#include "pipeline/workflows.h"
#include "widgets/export_dialog.h"
#include "widgets/main_window.h"
#include "widgets/model_explorer.h"
#include "widgets/plan_editor.h"
#include "widgets/quantize_panel.h"
#include "widgets/perplexity_panel.h"
#include "widgets/run_compare_view.h"
#include "widgets/run_header.h"
#include "widgets/tensor_error_view.h"

#include <QAction>
#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QPushButton>
#include <QSignalSpy>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTabBar>
#include <QTabWidget>
#include <QTableView>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace qb;
using namespace qb::ui;

namespace {

void clickTab(QTabBar* bar, int index) { QTest::mouseClick(bar, Qt::LeftButton, {}, bar->tabRect(index).center()); }

bool showWindow(MainWindow& w)
{
    w.resize(1400, 900);
    w.show();
    return QTest::qWaitForWindowExposed(&w);
}

QuantizePanel* openDemo(MainWindow& w)
{
    if (!showWindow(w)) return nullptr;
    QSignalSpy loaded(&w, &MainWindow::modelLoaded);
    w.openModel(QStringLiteral(QB_DEMO_DIR));
    if (!loaded.wait(20000)) return nullptr;
    auto* panel = w.quantizePanel();
    clickTab(w.viewTabs()->tabBar(), w.viewTabs()->indexOf(panel));
    return panel;
}

// Opens the export dialog of the selected run with a click on "Export run...".
ExportDialog* clickExport(MainWindow& w)
{
    QuantizePanel* panel = w.quantizePanel();
    clickTab(panel->views()->tabBar(), panel->views()->indexOf(panel->compareView()));
    QPushButton* b = panel->compareView()->exportButton();
    if (!b->isEnabled()) return nullptr;
    QTest::mouseClick(b, Qt::LeftButton);
    ExportDialog* d = nullptr;
    const bool shown =
        QTest::qWaitFor([&] { return (d = w.findChild<ExportDialog*>()) != nullptr && d->isVisible(); }, 5000);
    return shown ? d : nullptr;
}

QByteArray readBytes(const QString& path)
{
    QFile f(path);
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
}

// Selects one row of the run table with a click (the compare tab shown first).
void clickRun(QuantizePanel* panel, int row)
{
    clickTab(panel->views()->tabBar(), panel->views()->indexOf(panel->compareView()));
    QTableView* table = panel->compareView()->table();
    const QRect cell = table->visualRect(table->model()->index(row, 1));
    QTest::mouseClick(table->viewport(), Qt::LeftButton, {}, cell.center());
}

// Chooses the format, types the output path, clicks Export, waits for the result.
bool runExport(ExportDialog* d, pipeline::ExportFormat format, const QString& out, QString* message)
{
    const int idx = d->formatCombo()->findData(int(format));
    if (idx < 0) return false;
    d->formatCombo()->setCurrentIndex(idx);
    QLineEdit* path = d->pathEdit();
    QTest::mouseClick(path, Qt::LeftButton);
    QTest::keyClick(path, Qt::Key_A, Qt::ControlModifier);
    QTest::keyClick(path, Qt::Key_Delete);
    QTest::keyClicks(path, out);
    if (path->text() != out) return false;
    QSignalSpy done(d, &ExportDialog::exportFinished);
    QTest::mouseClick(d->exportButton(), Qt::LeftButton);
    if (!done.wait(60000)) return false;
    *message = done.first().at(1).toString();
    return done.first().at(0).toBool();
}

} // namespace

class TestProjectExport : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { QStandardPaths::setTestModeEnabled(true); }

    void exportSaveReopen()
    {
        QTemporaryDir tmp;
        QVERIFY(tmp.isValid());
        MainWindow w;
        QuantizePanel* panel = openDemo(w);
        QVERIFY(panel);
        QVERIFY(w.saveProjectAction());
        QCOMPARE(w.saveProjectAction()->shortcut(), QKeySequence(QKeySequence::Save));
        panel->windowsSpin()->setValue(8);
        panel->lengthSpin()->setValue(64);
        panel->perplexityCheck()->setChecked(false);
        // A plan that differs from the default: groups of 32 (one GGUF block) and a rule.
        pipeline::QuantPlan plan = panel->planEditor()->model()->plan();
        plan.defaults.groupSize = 32;
        pipeline::PlanRule rule;
        rule.match = "model.layers.1.mlp.down_proj";
        rule.settings.bits = 8;
        plan.rules.push_back(rule);
        QCOMPARE(panel->planEditor()->model()->applyPlan(plan, QStringLiteral("test")), QString());

        QSignalSpy finished(panel, &QuantizePanel::quantizeFinished);
        QTest::mouseClick(panel->quantizeButton(), Qt::LeftButton);
        QVERIFY(finished.wait(30000));
        QVERIFY2(finished.first().at(0).toBool(), qPrintable(finished.first().at(1).toString()));
        QCOMPARE(panel->runs()->rowCount(), 1);

        // GGUF through the dialog.
        ExportDialog* d = clickExport(w);
        QVERIFY(d);
        QVERIFY(d->ggufTypeCombo()->count() > 1);
        QCOMPARE(d->ggufTypeCombo()->currentData().toString(), QStringLiteral("auto"));
        const QString gguf = tmp.filePath(QStringLiteral("run1.gguf"));
        QString msg;
        QVERIFY2(runExport(d, pipeline::ExportFormat::Gguf, gguf, &msg), qPrintable(msg));
        QVERIFY(QFileInfo::exists(gguf));
        auto verified = exporting::verifyModelFile(gguf.toStdString());
        QVERIFY2(verified && verified->ok,
                 verified ? verified->summary().c_str() : verified.error().toString().c_str());
        QTableWidget* report = d->reportTable();
        QVERIFY(report->rowCount() > 0);
        bool sawGrid = false;
        for (int r = 0; r < report->rowCount(); ++r) {
            QVERIFY(!report->item(r, 2)->text().isEmpty()); // written type (planned: only for targets)
            QVERIFY(!report->item(r, 3)->text().isEmpty()); // exact
            sawGrid = sawGrid || report->item(r, 0)->text().contains(QStringLiteral("attn_q"));
        }
        QVERIFY(sawGrid);
        QVERIFY2(d->verifyLabel()->text().contains(QStringLiteral("passed")), qPrintable(d->verifyLabel()->text()));

        // Exporting onto an existing file asks first; "No" keeps the file and starts nothing.
        const QByteArray before = readBytes(gguf);
        QSignalSpy again(d, &ExportDialog::exportFinished);
        QTest::mouseClick(d->exportButton(), Qt::LeftButton);
        QMessageBox* ask = nullptr;
        QTRY_VERIFY((ask = d->findChild<QMessageBox*>(QStringLiteral("overwriteBox"))) != nullptr);
        QVERIFY(ask->text().contains(gguf));
        QTest::mouseClick(ask->button(QMessageBox::No), Qt::LeftButton);
        QTRY_VERIFY(d->findChild<QMessageBox*>(QStringLiteral("overwriteBox")) == nullptr);
        QVERIFY(!d->isRunning());
        QCOMPARE(again.count(), 0);
        QCOMPARE(readBytes(gguf), before);
        // "Yes" replaces it.
        QTest::mouseClick(d->exportButton(), Qt::LeftButton);
        QTRY_VERIFY((ask = d->findChild<QMessageBox*>(QStringLiteral("overwriteBox"))) != nullptr);
        QTest::mouseClick(ask->button(QMessageBox::Yes), Qt::LeftButton);
        QVERIFY(again.wait(60000));
        QVERIFY(again.first().at(0).toBool());
        QTest::mouseClick(d->findChild<QPushButton*>(QStringLiteral("exportClose")), Qt::LeftButton);
        QTRY_VERIFY(w.findChild<ExportDialog*>() == nullptr);

        // Quitting now would lose the run: the window asks, and Cancel keeps it open.
        QVERIFY2(w.unsavedWork().contains(QStringLiteral("1 quantization run")), qPrintable(w.unsavedWork()));
        QVERIFY(!w.close());
        QMessageBox* quit = nullptr;
        QTRY_VERIFY((quit = w.findChild<QMessageBox*>(QStringLiteral("quitConfirmBox"))) != nullptr);
        QTest::mouseClick(quit->button(QMessageBox::Cancel), Qt::LeftButton);
        QTRY_VERIFY(w.findChild<QMessageBox*>(QStringLiteral("quitConfirmBox")) == nullptr);
        QVERIFY(w.isVisible());

        // Issue 19 item 5: the run's default name says it is mixed (the down_proj rule); a name
        // given in the run list is what the project stores.
        QVERIFY2(panel->runs()->run(0)->name.startsWith(QStringLiteral("mixed ")),
                 qPrintable(panel->runs()->run(0)->name));
        QVERIFY(panel->runs()->setData(panel->runs()->index(0, QuantRunModel::Name), QStringLiteral("q4 g32, down 8")));
        QCOMPARE(panel->runs()->run(0)->name, QStringLiteral("q4 g32, down 8"));

        QVERIFY(w.unsavedWork().contains(QStringLiteral("1 quantization run")));

        // Save the project: nothing is unsaved any more.
        const QString proj = tmp.filePath(QStringLiteral("tuned.qbproj"));
        QSignalSpy saved(&w, &MainWindow::projectSaved);
        w.saveProject(proj);
        QVERIFY(saved.wait(20000));
        QVERIFY2(saved.first().at(1).toBool(), qPrintable(saved.first().at(2).toString()));
        QVERIFY2(w.unsavedWork().isEmpty(), qPrintable(w.unsavedWork()));
        const auto original = panel->runs()->run(0);

        // Open it in a fresh window.
        MainWindow w2;
        QVERIFY(showWindow(w2));
        QSignalSpy opened(&w2, &MainWindow::projectOpened);
        QSignalSpy failed(&w2, &MainWindow::projectOpenFailed);
        w2.openProject(proj);
        QTRY_VERIFY_WITH_TIMEOUT(opened.count() + failed.count() > 0, 20000);
        QVERIFY2(failed.isEmpty(), failed.isEmpty() ? "" : qPrintable(failed.first().at(1).toString()));
        QVERIFY(w2.checkpoint());
        QVERIFY2(w2.unsavedWork().isEmpty(), qPrintable(w2.unsavedWork()));
        QuantizePanel* p2 = w2.quantizePanel();
        QCOMPARE(p2->planEditor()->model()->plan(), plan);
        QCOMPARE(p2->runs()->rowCount(), 1);
        const auto restored = p2->runs()->run(0);
        QCOMPARE(restored->name, QStringLiteral("q4 g32, down 8"));
        // Not evaluated (perplexity unticked): the history says so rather than showing 0.
        QCOMPARE(w2.perplexityPanel()->history()->index(0, RunHistoryModel::Perplexity).data().toString(),
                 QStringLiteral("—"));
        QCOMPARE(p2->runHeader()->nameEdit()->text(), QStringLiteral("q4 g32, down 8"));
        // The restored run is in the new window's run history under its name.
        QCOMPARE(w2.perplexityPanel()->history()->rowCount(), 1);
        QCOMPARE(w2.perplexityPanel()->history()->record(0).variant, QStringLiteral("q4 g32, down 8"));
        QVERIFY(restored->layerErrorsWeighted()); // the shapes come from the project's model
        QCOMPARE(restored->result->bitsPerWeight, original->result->bitsPerWeight);
        QCOMPARE(restored->result->sizeBytes, original->result->sizeBytes);
        QCOMPARE(restored->perplexity.has_value(), original->perplexity.has_value());
        QCOMPARE(restored->kl.has_value(), original->kl.has_value());
        QCOMPARE(restored->result->tensors.size(), original->result->tensors.size());
        for (std::size_t i = 0; i < restored->result->tensors.size(); ++i) {
            const auto& a = restored->result->tensors[i];
            const auto& b = original->result->tensors[i];
            QCOMPARE(a.name, b.name);
            QCOMPARE(a.bits, b.bits);
            QCOMPARE(a.groupSize, b.groupSize);
            QCOMPARE(a.relativeError, b.relativeError);
            QCOMPARE(a.layer, b.layer);
            QVERIFY(a.linear == b.linear);
        }
        QCOMPARE(restored->layerErrors(), original->layerErrors());
        QVERIFY(!restored->result->model); // nothing was recomputed
        QCOMPARE(p2->runs()->data(p2->runs()->index(0, QuantRunModel::Bpw)),
                 panel->runs()->data(panel->runs()->index(0, QuantRunModel::Bpw)));

        // The restored run exports again (weights rebuilt from the stored grids + the model).
        ExportDialog* d2 = clickExport(w2);
        QVERIFY(d2);
        const QString st = tmp.filePath(QStringLiteral("run1-fakequant"));
        QVERIFY2(runExport(d2, pipeline::ExportFormat::Safetensors, st, &msg), qPrintable(msg));
        auto stOk = exporting::verifySafetensorsFile((st + QStringLiteral("/model.safetensors")).toStdString());
        QVERIFY2(stOk && stOk->ok, stOk ? stOk->summary().c_str() : stOk.error().toString().c_str());
        QVERIFY(d2->reportTable()->rowCount() > 0);
        QVERIFY(d2->verifyLabel()->text().contains(QStringLiteral("passed")));
        QTest::mouseClick(d2->findChild<QPushButton*>(QStringLiteral("exportClose")), Qt::LeftButton);
        QTRY_VERIFY(w2.findChild<ExportDialog*>() == nullptr);

        // Issue 19 item 10: the reopened run's per-channel views are recomputed on demand (the
        // original model and the calibration windows loaded again, the quantized weights rebuilt
        // from the grids): the same figures as the live run's.
        const QString tensor = QStringLiteral("model.layers.1.mlp.down_proj.weight");
        pipeline::TensorAnalysisRequest direct;
        direct.base = original->base;
        direct.run = original->result;
        direct.calibration = original->calib;
        direct.tensor = tensor.toStdString();
        auto live = pipeline::analyzeTensor(direct);
        QVERIFY2(live.ok(), live.ok() ? "" : live.error().toString().c_str());
        TensorErrorView* tv2 = p2->tensorView();
        QSignalSpy ready(tv2, &TensorErrorView::analysisReady);
        QSignalSpy rebuilt(tv2, &TensorErrorView::runRebuilt);
        QVERIFY(w2.explorer()->selectTensor(tensor));
        QVERIFY2(ready.wait(60000), qPrintable(tv2->titleLabel()->text()));
        QCOMPARE(rebuilt.count(), 1);
        const auto inspected = tv2->analysis();
        QVERIFY(inspected);
        QVERIFY2(std::abs(inspected->errors.relativeError - live->errors.relativeError) <=
                     1e-9 * live->errors.relativeError,
                 qPrintable(
                     QStringLiteral("%1 vs %2").arg(inspected->errors.relativeError).arg(live->errors.relativeError)));
        QCOMPARE(inspected->errors.inChannel.size(), live->errors.inChannel.size());
        QVERIFY(p2->runs()->run(0)->result->model != nullptr);              // the run list holds the rebuilt run
        QVERIFY2(w2.unsavedWork().isEmpty(), qPrintable(w2.unsavedWork())); // nothing to save for it
        // A rename after saving is unsaved work too.
        QVERIFY(w.unsavedWork().isEmpty());
        QVERIFY(panel->runs()->rename(0, QStringLiteral("renamed later")));
        QVERIFY2(w.unsavedWork().contains(QStringLiteral("run names changed")), qPrintable(w.unsavedWork()));
    }

    // Issue 11 item 8: every run of a saved project exports after reopening, not only the one
    // selected when saving; the save dialog says what the file stores.
    void everyReopenedRunExports()
    {
        QTemporaryDir tmp;
        QVERIFY(tmp.isValid());
        MainWindow w;
        QuantizePanel* panel = openDemo(w);
        QVERIFY(panel);
        panel->windowsSpin()->setValue(8);
        panel->lengthSpin()->setValue(64);
        panel->perplexityCheck()->setChecked(false);
        for (int bits : {4, 3}) {
            pipeline::QuantPlan plan = panel->planEditor()->model()->plan();
            plan.defaults.bits = bits;
            plan.defaults.groupSize = 32;
            QCOMPARE(panel->planEditor()->model()->applyPlan(plan, QStringLiteral("test")), QString());
            QSignalSpy finished(panel, &QuantizePanel::quantizeFinished);
            QTest::mouseClick(panel->quantizeButton(), Qt::LeftButton);
            QVERIFY(finished.wait(30000));
            QVERIFY2(finished.first().at(0).toBool(), qPrintable(finished.first().at(1).toString()));
        }
        QCOMPARE(panel->runs()->rowCount(), 2);

        // The first run (not the selected one, which goes to metrics.json) to GGUF.
        clickRun(panel, 0);
        QCOMPARE(panel->compareView()->comparedRows(), QList<int>{0});
        ExportDialog* d = clickExport(w);
        QVERIFY(d);
        QVERIFY2(d->windowTitle().contains(QStringLiteral("run 1")), qPrintable(d->windowTitle()));
        const QString before = tmp.filePath(QStringLiteral("before.gguf"));
        QString msg;
        QVERIFY2(runExport(d, pipeline::ExportFormat::Gguf, before, &msg), qPrintable(msg));
        QTest::mouseClick(d->findChild<QPushButton*>(QStringLiteral("exportClose")), Qt::LeftButton);
        QTRY_VERIFY(w.findChild<ExportDialog*>() == nullptr);
        clickRun(panel, 1); // the second run is the selected one when saving

        // File > Save Project says what the file will hold.
        w.saveProjectAction()->trigger();
        QFileDialog* save = nullptr;
        QTRY_VERIFY((save = w.findChild<QFileDialog*>(QStringLiteral("saveProjectDialog"))) != nullptr);
        auto* contents = save->findChild<QLabel*>(QStringLiteral("projectContents"));
        QVERIFY(contents);
        QTRY_VERIFY(contents->isVisible());
        const QString text = contents->text();
        QVERIFY2(text.contains(QStringLiteral("every run's metrics and the quantization grids of 2 run(s)")),
                 qPrintable(text));
        QVERIFY2(text.contains(QStringLiteral(" MB)")) || text.contains(QStringLiteral(" kB)")), qPrintable(text));
        QVERIFY2(text.contains(QStringLiteral("referenced, not copied")), qPrintable(text));
        save->reject();
        QTRY_VERIFY(w.findChild<QFileDialog*>(QStringLiteral("saveProjectDialog")) == nullptr);

        const QString proj = tmp.filePath(QStringLiteral("two.qbproj"));
        QSignalSpy saved(&w, &MainWindow::projectSaved);
        w.saveProject(proj);
        QVERIFY(saved.wait(20000));
        QVERIFY2(saved.first().at(1).toBool(), qPrintable(saved.first().at(2).toString()));

        MainWindow w2;
        QVERIFY(showWindow(w2));
        QSignalSpy opened(&w2, &MainWindow::projectOpened);
        QSignalSpy failed(&w2, &MainWindow::projectOpenFailed);
        w2.openProject(proj);
        QTRY_VERIFY_WITH_TIMEOUT(opened.count() + failed.count() > 0, 20000);
        QVERIFY2(failed.isEmpty(), failed.isEmpty() ? "" : qPrintable(failed.first().at(1).toString()));
        QuantizePanel* p2 = w2.quantizePanel();
        QCOMPARE(p2->runs()->rowCount(), 2);
        // Never renamed: each comes back with the default name of its plan.
        QCOMPARE(p2->runs()->run(0)->name, QStringLiteral("GPTQ 4b g32"));
        QCOMPARE(p2->runs()->run(1)->name, QStringLiteral("GPTQ 3b g32"));
        for (int row = 0; row < 2; ++row) {
            const auto& a = *p2->runs()->run(row)->result;
            const auto& b = *panel->runs()->run(row)->result;
            QCOMPARE(a.codes.size(), b.codes.size());
            for (std::size_t t = 0; t < a.codes.size(); ++t)
                QVERIFY(a.codes[t] && b.codes[t] && exporting::sameGrid(a.codes[t]->unpack(), b.codes[t]->unpack()));
        }

        // The reopened first run exports through the dialog, the same bytes as before saving.
        clickRun(p2, 0);
        ExportDialog* d2 = clickExport(w2);
        QVERIFY(d2);
        QVERIFY2(d2->windowTitle().contains(QStringLiteral("run 1")), qPrintable(d2->windowTitle()));
        const QString after = tmp.filePath(QStringLiteral("after.gguf"));
        QVERIFY2(runExport(d2, pipeline::ExportFormat::Gguf, after, &msg), qPrintable(msg));
        QVERIFY(d2->verifyLabel()->text().contains(QStringLiteral("passed")));
        const QByteArray bytes = readBytes(after);
        QVERIFY(!bytes.isEmpty());
        QVERIFY(bytes == readBytes(before));
    }

    void newerMajorVersionRefused()
    {
        QTemporaryDir tmp;
        exporting::ProjectBundle b;
        b.version = std::to_string(exporting::kQbprojMajorVersion + 1) + ".0";
        b.model.path = QB_DEMO_DIR;
        const QString path = tmp.filePath(QStringLiteral("future.qbproj"));
        QVERIFY(exporting::writeProjectBundle(path.toStdString(), b).ok());
        MainWindow w;
        QVERIFY(showWindow(w));
        QSignalSpy failed(&w, &MainWindow::projectOpenFailed);
        w.openProject(path);
        QVERIFY(failed.wait(10000));
        QMessageBox* box = nullptr;
        QTRY_VERIFY((box = w.findChild<QMessageBox*>(QStringLiteral("projectErrorBox"))) != nullptr);
        QVERIFY2(box->text().contains(path), qPrintable(box->text()));
        QVERIFY(!w.checkpoint());
        box->close();
    }
};

QTEST_MAIN(TestProjectExport)
#include "tst_project_export.moc"
