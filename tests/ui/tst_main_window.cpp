// GUI smoke test: the main window opens offscreen, every menu opens on a real click, the About
// dialog appears and closes, and the panels exist.

#include "models/tensor_tree_model.h"
#include "widgets/main_window.h"
#include "charts/histogram_chart.h"
#include "widgets/model_explorer.h"
#include "widgets/activations_panel.h"
#include "widgets/quantize_panel.h"
#include "widgets/weights_panel.h"

#include <QCheckBox>
#include <QComboBox>
#include <QLineSeries>
#include <QSpinBox>
#include <QTreeView>

#include <QAbstractItemModelTester>
#include <QAction>
#include <QApplication>
#include <QMenu>
#include <QMimeData>
#include <QUrl>
#include <QFileInfo>
#include <QLineEdit>
#include <QSignalSpy>
#include <QSortFilterProxyModel>

#include <QDockWidget>
#include <QMenuBar>
#include <QMessageBox>
#include <QAbstractButton>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTabWidget>
#include <QLabel>
#include <QTest>
#include <QTemporaryDir>
#include <QDir>
#include <QFile>
#include <QFileDialog>
#include <QSet>

#include "../common/process_memory.h"

using qb::ui::MainWindow;

class TestMainWindow : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase() { QStandardPaths::setTestModeEnabled(true); }

    void opensWithPanels()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(w.menuBar()->isVisible());
        QVERIFY(w.statusBar()->isVisible());
        QCOMPARE(w.viewTabs()->count(), 4); // Weights, Activations, Transform lab, Quantization
        QCOMPARE(w.viewTabs()->tabText(2), QStringLiteral("Transform lab"));
        QVERIFY(w.explorerDock()->isVisible());
        QVERIFY(w.historyDock()->isVisible());
        QVERIFY(w.width() >= 1024);
    }

    void clickThroughMenus()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        const auto menuActions = w.menuBar()->actions();
        QVERIFY(menuActions.size() >= 3);
        for (QAction* a : menuActions) {
            QMenu* menu = a->menu();
            QVERIFY(menu);
            const QRect r = w.menuBar()->actionGeometry(a);
            QTest::mouseClick(w.menuBar(), Qt::LeftButton, {}, r.center());
            QTRY_VERIFY2(menu->isVisible(), qPrintable(a->text()));
            QVERIFY(!menu->actions().isEmpty());
            QTest::keyClick(menu, Qt::Key_Escape);
            QTRY_VERIFY(!menu->isVisible());
        }
    }

    void viewMenuTogglesDocks()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QAction* toggle = w.explorerDock()->toggleViewAction();
        toggle->trigger();
        QTRY_VERIFY(!w.explorerDock()->isVisible());
        toggle->trigger();
        QTRY_VERIFY(w.explorerDock()->isVisible());
    }

    void oneCalibrationSettingForBothTabs()
    {
        MainWindow w;
        auto* act = w.activationsPanel();
        auto* quant = w.quantizePanel();
        // Typing in one tab shows in the other (real key presses).
        act->windowsSpin()->setFocus();
        act->windowsSpin()->selectAll();
        QTest::keyClicks(act->windowsSpin(), QStringLiteral("48"));
        QCOMPARE(act->windowsSpin()->value(), 48);
        QCOMPARE(quant->windowsSpin()->value(), 48);
        QCOMPARE(quant->calibrationPreset()->currentText(), QStringLiteral("Custom"));
        quant->calibText()->setText(QStringLiteral("/tmp/other.txt"));
        QCOMPARE(act->textEdit()->text(), QStringLiteral("/tmp/other.txt"));
        // A preset sets windows and length everywhere.
        const int standard = quant->calibrationPreset()->findText(QStringLiteral("Standard"), Qt::MatchStartsWith);
        QVERIFY(standard >= 0);
        quant->calibrationPreset()->setFocus();
        quant->calibrationPreset()->setCurrentIndex(standard);
        Q_EMIT quant->calibrationPreset()->activated(standard);
        QCOMPARE(act->windowsSpin()->value(), 128);
        QCOMPARE(act->lengthSpin()->value(), 512);
        QCOMPARE(quant->lengthSpin()->value(), 512);
        // The literature's 2048 tokens, clamped to the model's context once a model is open.
        const int literature = quant->calibrationPreset()->findText(QStringLiteral("Literature"), Qt::MatchStartsWith);
        QVERIFY(literature >= 0);
        quant->calibrationPreset()->setCurrentIndex(literature);
        Q_EMIT quant->calibrationPreset()->activated(literature);
        QCOMPARE(quant->lengthSpin()->value(), 2048);
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(QStringLiteral(QB_DEMO_DIR)); // context 512
        QVERIFY(loaded.wait(20000));
        QCOMPARE(quant->lengthSpin()->value(), 512);
        QCOMPARE(act->lengthSpin()->maximum(), 512);
        // Standard and Literature coincide at a 512-token context: a preset, not "Custom".
        QVERIFY(quant->calibrationPreset()->currentIndex() < quant->calibrationPreset()->count() - 1);
        QCOMPARE(act->calibrationPreset()->currentIndex(), standard);
    }

    void toolsWithoutAModelSayWhy()
    {
        MainWindow w;
        auto* calibrate = w.findChild<QAction*>(QStringLiteral("actionCalibrate"));
        auto* evaluate = w.findChild<QAction*>(QStringLiteral("actionEvaluate"));
        QVERIFY(calibrate && evaluate);
        calibrate->trigger();
        QVERIFY2(w.statusBar()->currentMessage().contains(QStringLiteral("open a model first")),
                 qPrintable(w.statusBar()->currentMessage()));
        w.statusBar()->clearMessage();
        evaluate->trigger();
        QVERIFY(w.statusBar()->currentMessage().contains(QStringLiteral("open a model first")));
        // Nothing to lose: closing does not ask.
        QVERIFY(w.unsavedWork().isEmpty());
        // A Hugging Face folder can be picked directly.
        auto* folder = w.findChild<QAction*>(QStringLiteral("actionOpenFolder"));
        QVERIFY(folder);
        folder->trigger();
        auto* dialog = w.findChild<QFileDialog*>(QStringLiteral("openFolderDialog"));
        QVERIFY(dialog);
        QCOMPARE(dialog->fileMode(), QFileDialog::Directory);
        dialog->reject();
    }

    void aboutDialogShowsVersions()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        w.aboutAction()->trigger();
        QMessageBox* box = nullptr;
        QTRY_VERIFY((box = w.findChild<QMessageBox*>(QStringLiteral("aboutBox"))) != nullptr);
        QTRY_VERIFY(box->isVisible());
        QVERIFY(box->text().contains(QStringLiteral(QB_VERSION)));
        QVERIFY(box->text().contains(QStringLiteral("Eigen")));
        QTest::mouseClick(box->button(QMessageBox::Ok), Qt::LeftButton);
        QTRY_VERIFY(w.findChild<QMessageBox*>(QStringLiteral("aboutBox")) == nullptr);
    }

    void openErrorNamesFileAndProblem()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QSignalSpy failed(&w, &MainWindow::modelLoadFailed);
        const QString missing = QStringLiteral("/nonexistent/model-dir");
        w.openModel(missing);
        QVERIFY(failed.wait(10000));
        QMessageBox* box = nullptr;
        QTRY_VERIFY((box = w.findChild<QMessageBox*>(QStringLiteral("openErrorBox"))) != nullptr);
        QVERIFY(box->text().contains(missing));
        QVERIFY(box->text().length() > missing.length() + 20); // says what is wrong, too
        QCOMPARE(w.statusSummary(), QStringLiteral("No model loaded"));
        QTest::mouseClick(box->button(QMessageBox::Ok), Qt::LeftButton);
    }

    void opensDemoModelAndFillsExplorer()
    {
        const QString demo = QStringLiteral(QB_DEMO_DIR);
        QVERIFY2(QFileInfo::exists(demo + QStringLiteral("/config.json")), "demo model missing");
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(demo);
        QVERIFY(loaded.wait(20000));
        QVERIFY(w.checkpoint());
        const QString summary = w.statusSummary();
        QVERIFY2(summary.contains(QStringLiteral("LlamaForCausalLM")), qPrintable(summary));
        QVERIFY(summary.contains(QStringLiteral("params")));
        auto* model = w.explorer()->sourceModel();
        const int layers = int(w.checkpoint()->config.numHiddenLayers);
        QCOMPARE(model->rowCount(), layers + 2);
        QCOMPARE(model->rowCount(model->index(1, 0)), 9); // 7 linears + 2 norms
        QAbstractItemModelTester tester(w.explorer()->proxyModel(),
                                        QAbstractItemModelTester::FailureReportingMode::QtTest);
        // Filter with real key presses: only down_proj tensors remain, one per layer.
        QTest::keyClicks(w.explorer()->filterEdit(), QStringLiteral("down_proj"));
        auto* proxy = w.explorer()->proxyModel();
        QCOMPARE(proxy->rowCount(), layers);
        QCOMPARE(proxy->rowCount(proxy->index(0, 0)), 1);
        QVERIFY(w.explorer()->noMatchLabel()->isHidden());
        // A plan glob: every MLP tensor (gate, up, down) of every layer.
        w.explorer()->filterEdit()->clear();
        QTest::keyClicks(w.explorer()->filterEdit(), QStringLiteral("layers.*.MLP"));
        QCOMPARE(proxy->rowCount(), layers);
        QCOMPARE(proxy->rowCount(proxy->index(0, 0)), 3);
        // Nothing matches: the explorer says so.
        w.explorer()->filterEdit()->clear();
        QTest::keyClicks(w.explorer()->filterEdit(), QStringLiteral("layers.*.conv"));
        QCOMPARE(proxy->rowCount(), 0);
        QVERIFY(!w.explorer()->noMatchLabel()->isHidden());
        QVERIFY(w.explorer()->noMatchLabel()->text().contains(QStringLiteral("layers.*.conv")));
        w.explorer()->filterEdit()->setText(QStringLiteral("down_proj"));
        QVERIFY(w.explorer()->noMatchLabel()->isHidden());
        QSignalSpy selected(w.explorer(), &qb::ui::ModelExplorer::tensorSelected);
        QVERIFY(w.explorer()->selectTensor(QStringLiteral("model.layers.0.mlp.down_proj.weight")));
        QCOMPARE(selected.count(), 1);
        QCOMPARE(selected.at(0).at(0).toString(), QStringLiteral("model.layers.0.mlp.down_proj.weight"));
    }

    // Regression: the job runner kept every finished job's future, and with it every checkpoint
    // opened before (its file mappings and converted tensors), until the window closed.
    void openingTenModelsReleasesTheOldOnes()
    {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const QDir demo(QStringLiteral(QB_DEMO_DIR));
        QStringList copies;
        for (int i = 0; i < 10; ++i) {
            const QString d = dir.filePath(QStringLiteral("model%1").arg(i));
            QVERIFY(QDir().mkpath(d));
            for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
                QVERIFY(
                    QFile::copy(demo.filePath(QString::fromLatin1(f)), d + QLatin1Char('/') + QString::fromLatin1(f)));
            copies << d;
        }
        // Files of ours that this process still maps, from /proc/self/maps.
        auto mappedCopies = [&dir] {
            QFile maps(QStringLiteral("/proc/self/maps"));
            if (!maps.open(QIODevice::ReadOnly)) return -1;
            QSet<QString> files;
            for (const QByteArray& line : maps.readAll().split('\n')) {
                const int at = line.indexOf(dir.path().toUtf8());
                if (at >= 0) files.insert(QString::fromUtf8(line.mid(at)));
            }
            return int(files.size());
        };
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        qint64 rssAfterFirst = 0;
        for (int i = 0; i < copies.size(); ++i) {
            QSignalSpy loaded(&w, &MainWindow::modelLoaded);
            QSignalSpy stats(w.weightsPanel(), &qb::ui::WeightsPanel::statsReady);
            w.openModel(copies[i]);
            QVERIFY(loaded.wait(20000));
            // Touch the weights as a user does: the embedding's statistics read all of it.
            QVERIFY(w.explorer()->selectTensor(QStringLiteral("model.embed_tokens.weight")));
            QVERIFY(stats.wait(20000));
            QTRY_VERIFY2(
                mappedCopies() <= 1,
                qPrintable(QStringLiteral("after model %1: %2 model files mapped").arg(i).arg(mappedCopies())));
            if (i == 0) rssAfterFirst = qbtest::residentBytes();
        }
        const qint64 growth = qbtest::residentBytes() - rssAfterFirst;
        qInfo("resident memory after model 1: %.1f MiB, growth over 9 more models: %.1f MiB (each maps %.1f MiB)",
              double(rssAfterFirst) / 1048576.0, double(growth) / 1048576.0,
              double(QFileInfo(copies[0] + QStringLiteral("/model.safetensors")).size()) / 1048576.0);
        // Nine retained models would add at least 9 x 5 MiB of touched weights and tensors.
        // (AddressSanitizer keeps freed memory in quarantine, so resident size says nothing there.)
#if !defined(__SANITIZE_ADDRESS__)
        QVERIFY2(growth < 24 * 1048576, qPrintable(QString::number(double(growth) / 1048576.0)));
#endif
    }

    void weightsViewMatchesCoreHistogram()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        w.openModel(QStringLiteral(QB_DEMO_DIR));
        QVERIFY(loaded.wait(20000));
        auto* panel = w.weightsPanel();
        QSignalSpy ready(panel, &qb::ui::WeightsPanel::statsReady);
        const QString name = QStringLiteral("model.layers.1.self_attn.q_proj.weight");
        // A real click on the tensor row in the explorer tree.
        auto* view = w.explorer()->view();
        const QModelIndex idx =
            w.explorer()->proxyModel()->mapFromSource(w.explorer()->sourceModel()->indexForTensor(name));
        QVERIFY(idx.isValid());
        view->expand(idx.parent());
        view->scrollTo(idx);
        QTest::mouseClick(view->viewport(), Qt::LeftButton, {}, view->visualRect(idx).center());
        QVERIFY(ready.wait(20000));
        QCOMPARE(ready.last().at(0).toString(), name);

        // Independent computation through the core.
        const qb::TensorInfo* info = w.checkpoint()->find(name.toStdString());
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(info->rows(), info->cols());
        QVERIFY(qb::io::readTensorF32(*info, m.data()).ok());
        const auto stats = qb::eval::computeTensorStats(m, panel->binsSpin()->value());
        const auto plotted = panel->histogram()->plottedCounts();
        QCOMPARE(plotted.size(), stats.histogram.counts.size());
        QVERIFY(!plotted.empty());
        for (std::size_t i = 0; i < plotted.size(); ++i)
            QCOMPARE(plotted[i], double(stats.histogram.counts[i]));
        QCOMPARE(panel->outChannels()->series()->count(), int(info->rows()));
        QCOMPARE(panel->inChannels()->series()->count(), int(info->cols()));
        QVERIFY(panel->statsText().contains(QStringLiteral("kurtosis")));

        // Fewer bins, by typing into the spin box; then log counts.
        panel->binsSpin()->selectAll();
        QTest::keyClicks(panel->binsSpin(), QStringLiteral("16"));
        QTRY_COMPARE(panel->histogram()->plottedCounts().size(), std::size_t(16));
        QTest::mouseClick(panel->logCheck(), Qt::LeftButton);
        QVERIFY(panel->histogram()->logCounts());
    }

    void dropAndRecentFiles()
    {
        MainWindow w;
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QSignalSpy loaded(&w, &MainWindow::modelLoaded);
        // Drop the demo's config.json on the window: its folder opens.
        QMimeData mime;
        mime.setUrls({QUrl::fromLocalFile(QStringLiteral(QB_DEMO_DIR "/config.json"))});
        QDragEnterEvent enter(QPoint(100, 100), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(&w, &enter);
        QVERIFY(enter.isAccepted());
        QDropEvent drop(QPointF(100, 100), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(&w, &drop);
        QVERIFY(loaded.wait(20000));
        QCOMPARE(QFileInfo(loaded.last().at(0).toString()).canonicalFilePath(),
                 QFileInfo(QStringLiteral(QB_DEMO_DIR)).canonicalFilePath());
        // It is now first in File > Open Recent, in a new window too.
        MainWindow w2;
        auto* recent = w2.findChild<QMenu*>(QStringLiteral("menuRecent"));
        QVERIFY(recent);
        QVERIFY(!recent->actions().isEmpty());
        QCOMPARE(QFileInfo(recent->actions().first()->text()).canonicalFilePath(),
                 QFileInfo(QStringLiteral(QB_DEMO_DIR)).canonicalFilePath());
        QSignalSpy loaded2(&w2, &MainWindow::modelLoaded);
        recent->actions().first()->trigger();
        QVERIFY(loaded2.wait(20000));
    }

    void tensorTreeModelPassesTester()
    {
        qb::ui::TensorTreeModel model;
        QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
        auto r = qb::io::openCheckpoint(QB_DEMO_DIR);
        QVERIFY2(r.ok(), r.ok() ? "" : r.error().toString().c_str());
        model.setCheckpoint(std::make_shared<const qb::io::Checkpoint>(std::move(r).value()));
        QVERIFY(model.rowCount() > 2);
        model.setCheckpoint(nullptr);
        QCOMPARE(model.rowCount(), 0);
    }
};

QTEST_MAIN(TestMainWindow)
#include "tst_main_window.moc"
