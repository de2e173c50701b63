#include "widgets/main_window.h"

#include "models/tensor_tree_model.h"
#include "pipeline/workflows.h"
#include "tasks/job_runner.h"
#include "models/quant_run_model.h"
#include "models/run_history_model.h"
#include "pipeline/project.h"
#include "widgets/activations_panel.h"
#include "widgets/calibration_settings.h"
#include "widgets/export_dialog.h"
#include "widgets/plan_editor.h"
#include "models/plan_table_model.h"
#include "widgets/job_status.h"
#include "widgets/perplexity_panel.h"
#include "widgets/transform_lab.h"
#include "widgets/quantize_panel.h"
#include "widgets/model_explorer.h"
#include "widgets/weights_panel.h"

#include <Eigen/Core>
#include <QApplication>
#include <QCloseEvent>
#include <QDir>
#include <QDockWidget>
#include <QFileDialog>
#include <QFileInfo>
#include <QFutureWatcher>
#include <QGridLayout>
#include <QIcon>
#include <QLabel>
#include <QLineEdit>
#include <QLocale>
#include <QSpinBox>
#include <QMenuBar>
#include <QMessageBox>
#include <QUndoStack>
#include <QPushButton>
#include <QMimeData>
#include <QSettings>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>

namespace qb::ui {

namespace {
constexpr int kMaxRecent = 8;
const QString kRecentKey = QStringLiteral("recentModels");
// Bump when the docks or toolbars change so that an old saved layout is not applied to them.
constexpr int kLayoutVersion = 1;
const QString kGeometryKey = QStringLiteral("window/geometry");
const QString kStateKey = QStringLiteral("window/state");
const QString kSplitterGroup = QStringLiteral("window/splitters");
} // namespace

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent), m_runner(new JobRunner(this))
{
    setWindowTitle(QStringLiteral("Quantbench"));
    setObjectName(QStringLiteral("MainWindow"));
    setWindowIcon(QIcon(QStringLiteral(":/quantbench/icon.png")));
    setAcceptDrops(true);
    resize(1280, 800);
    m_jobStatus = new JobStatus(this);
    m_runner->setStatusHook([this](QFutureWatcherBase* w, const QString& title) { m_jobStatus->watch(w, title); });
    createPanels();
    createMenus();
    statusBar()->addPermanentWidget(m_jobStatus);
    m_statusModel = new QLabel(tr("No model loaded"), this);
    m_statusModel->setObjectName(QStringLiteral("statusModel"));
    statusBar()->addPermanentWidget(m_statusModel);
    statusBar()->showMessage(tr("Ready"));
    restoreLayoutSettings();
}

void MainWindow::saveLayoutSettings() const
{
    QSettings settings;
    settings.setValue(kGeometryKey, saveGeometry());
    settings.setValue(kStateKey, saveState(kLayoutVersion));
    settings.beginGroup(kSplitterGroup);
    // Only this window's own splitters (not those of an open file dialog, a child window).
    for (const QSplitter* s : findChildren<QSplitter*>())
        if (s->window() == this && !s->objectName().isEmpty()) settings.setValue(s->objectName(), s->saveState());
    settings.endGroup();
}

bool MainWindow::restoreLayoutSettings()
{
    QSettings settings;
    const QByteArray geometry = settings.value(kGeometryKey).toByteArray();
    const bool restored = !geometry.isEmpty() && restoreGeometry(geometry);
    const QByteArray state = settings.value(kStateKey).toByteArray();
    if (!state.isEmpty()) restoreState(state, kLayoutVersion);
    settings.beginGroup(kSplitterGroup);
    for (QSplitter* s : findChildren<QSplitter*>()) {
        if (s->window() != this || s->objectName().isEmpty()) continue;
        const QByteArray splitter = settings.value(s->objectName()).toByteArray();
        if (!splitter.isEmpty()) s->restoreState(splitter);
    }
    settings.endGroup();
    return restored;
}

QString MainWindow::versionText()
{
    return QStringLiteral("Quantbench %1\nQt %2 (built with %3)\nEigen %4.%5.%6")
        .arg(QStringLiteral(QB_VERSION), QString::fromLatin1(qVersion()), QStringLiteral(QT_VERSION_STR))
        .arg(EIGEN_WORLD_VERSION)
        .arg(EIGEN_MAJOR_VERSION)
        .arg(EIGEN_MINOR_VERSION);
}

QString MainWindow::bundledDemoPath()
{
    QStringList candidates;
    const QString env = qEnvironmentVariable("QB_DEMO_DIR");
    if (!env.isEmpty()) candidates << env;
    const QString appDir = QCoreApplication::applicationDirPath();
    candidates << appDir + QStringLiteral("/../share/quantbench/demo")
               << QStringLiteral(QB_SOURCE_DIR "/resources/demo");
    for (const QString& c : candidates)
        if (QFileInfo::exists(c + QStringLiteral("/config.json"))) return QDir(c).canonicalPath();
    return {};
}

void MainWindow::createPanels()
{
    m_tabs = new QTabWidget(this);
    m_tabs->setObjectName(QStringLiteral("viewTabs"));
    m_weights = new WeightsPanel(m_runner, m_tabs);
    m_tabs->addTab(m_weights, tr("Weights"));
    m_activations = new ActivationsPanel(m_runner, m_jobStatus, m_tabs);
    m_tabs->addTab(m_activations, tr("Activations"));
    m_lab = new TransformLab(m_runner, m_jobStatus, m_tabs);
    m_tabs->addTab(m_lab, tr("Transform lab"));
    connect(m_lab, &TransformLab::labFinished, this, [this](bool ok, const QString& msg) {
        statusBar()->showMessage(tr("Transform lab: %1").arg(msg), 8000);
        if (!ok && msg != tr("cancelled")) jobError(tr("Transform lab failed"), msg);
    });
    connect(m_weights, &WeightsPanel::statsReady, m_activations, [this](const QString& tensor) {
        if (auto snap = m_weights->snapshot()) m_activations->setWeightChannelMax(tensor, snap->stats.colMaxAbs);
    });
    connect(m_activations, &ActivationsPanel::calibrationFinished, this, [this](bool ok, const QString& msg) {
        statusBar()->showMessage(ok ? tr("Calibration done: %1").arg(msg) : tr("Calibration: %1").arg(msg), 8000);
        if (!ok) jobError(tr("Calibration failed"), msg);
    });
    connect(m_activations, &ActivationsPanel::importanceMatrixExported, this, [this](bool ok, const QString& msg) {
        statusBar()->showMessage(
            ok ? tr("Importance matrix written: %1").arg(msg) : tr("Importance matrix: %1").arg(msg), 8000);
        if (!ok) jobError(tr("Importance matrix export failed"), msg);
    });
    auto* quantize = new QuantizePanel(m_runner, m_jobStatus, m_tabs);
    m_quantize = quantize;
    // One calibration setting for the Activations and Quantization tabs (and what a project saves).
    m_calibration = new CalibrationSettings(this);
    m_activations->setCalibrationSettings(m_calibration);
    m_lab->setCalibrationSettings(m_calibration);
    quantize->setCalibrationSettings(m_calibration);
    connect(quantize, &QuantizePanel::exportRequested, this,
            [this](std::shared_ptr<const QuantRun> run) { openExportDialog(std::move(run)); });
    m_tabs->addTab(quantize, tr("Quantization"));
    connect(this, &MainWindow::modelLoaded, quantize, [this, quantize] { quantize->setCheckpoint(m_checkpoint); });
    connect(quantize, &QuantizePanel::quantizeFinished, this, [this](bool ok, const QString& msg) {
        if (ok) ++m_unsavedRuns;
        statusBar()->showMessage(ok ? tr("Quantized: %1").arg(msg) : tr("Quantization: %1").arg(msg), 8000);
        if (!ok) jobError(tr("Quantization failed"), msg);
    });
    connect(quantize, &QuantizePanel::distillFinished, this, [this](bool ok, const QString& msg) {
        if (ok) ++m_unsavedRuns;
        statusBar()->showMessage(ok ? tr("Distilled: %1").arg(msg) : tr("Distillation: %1").arg(msg), 8000);
        if (!ok && !msg.startsWith(tr("cancelled"))) jobError(tr("Distillation failed"), msg);
    });
    setCentralWidget(m_tabs);

    m_explorerDock = new QDockWidget(tr("Model explorer"), this);
    m_explorerDock->setObjectName(QStringLiteral("explorerDock"));
    m_explorer = new ModelExplorer(m_explorerDock);
    m_explorerDock->setWidget(m_explorer);
    connect(m_explorer, &ModelExplorer::tensorSelected, m_weights, &WeightsPanel::showTensor);
    connect(m_explorer, &ModelExplorer::tensorSelected, m_activations, &ActivationsPanel::showTensor);
    connect(m_explorer, &ModelExplorer::tensorSelected, m_lab, &TransformLab::showTensor);
    connect(m_explorer, &ModelExplorer::tensorSelected, quantize, &QuantizePanel::showTensor);
    addDockWidget(Qt::LeftDockWidgetArea, m_explorerDock);

    m_historyDock = new QDockWidget(tr("Run history"), this);
    m_historyDock->setObjectName(QStringLiteral("historyDock"));
    m_perplexity = new PerplexityPanel(m_runner, m_jobStatus, m_historyDock);
    m_historyDock->setWidget(m_perplexity);
    connect(m_perplexity, &PerplexityPanel::evaluationFinished, this, [this](bool ok, const QString& msg) {
        statusBar()->showMessage(ok ? tr("Perplexity: %1").arg(msg) : tr("Evaluation: %1").arg(msg), 8000);
        if (!ok) jobError(tr("Evaluation failed"), msg);
    });
    // Every quantized run joins the history with its perplexity and KL; its row follows renames.
    connect(quantize->runs(), &QAbstractItemModel::rowsInserted, this, [this](const QModelIndex&, int first, int last) {
        const QString model =
            m_checkpoint ? QFileInfo(QString::fromStdString(m_checkpoint->path)).fileName() : QString();
        for (int r = first; r <= last; ++r)
            m_perplexity->history()->append(recordFromQuantRun(*m_quantize->runs()->run(r), model));
    });
    connect(quantize->runs(), &QuantRunModel::runRenamed, m_perplexity->history(), &RunHistoryModel::renameRun);
    connect(quantize->runs(), &QuantRunModel::runRenamed, this, [this] { ++m_unsavedRenames; });
    addDockWidget(Qt::BottomDockWidgetArea, m_historyDock);
    // Room for the explorer's shown columns (Tensor, Shape, Type); the tabs keep the rest.
    resizeDocks({m_explorerDock}, {360}, Qt::Horizontal);
    // A strip for the history (its table scrolls): at 1280x800 the charts keep the height.
    resizeDocks({m_historyDock}, {150}, Qt::Vertical);
}

void MainWindow::createMenus()
{
    QMenu* file = menuBar()->addMenu(tr("&File"));
    file->setObjectName(QStringLiteral("menuFile"));
    m_openAction = file->addAction(tr("&Open Model..."));
    m_openAction->setShortcut(QKeySequence::Open);
    m_openAction->setObjectName(QStringLiteral("actionOpen"));
    connect(m_openAction, &QAction::triggered, this, &MainWindow::openModelDialog);
    QAction* openFolder = file->addAction(tr("Open Model &Folder..."));
    openFolder->setObjectName(QStringLiteral("actionOpenFolder"));
    openFolder->setShortcut(QKeySequence(Qt::CTRL | Qt::ALT | Qt::Key_O));
    connect(openFolder, &QAction::triggered, this, &MainWindow::openModelFolderDialog);
    QAction* openDemo = file->addAction(tr("Open &Demo Model"));
    openDemo->setObjectName(QStringLiteral("actionOpenDemo"));
    connect(openDemo, &QAction::triggered, this, [this] {
        const QString demo = bundledDemoPath();
        if (demo.isEmpty()) QMessageBox::warning(this, tr("Demo model"), tr("The bundled demo model was not found."));
        else openModel(demo);
    });
    file->addSeparator();
    m_openProjectAction = file->addAction(tr("Open &Project..."));
    m_openProjectAction->setObjectName(QStringLiteral("actionOpenProject"));
    m_openProjectAction->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_O));
    connect(m_openProjectAction, &QAction::triggered, this, &MainWindow::openProjectDialog);
    m_saveProjectAction = file->addAction(tr("&Save Project..."));
    m_saveProjectAction->setObjectName(QStringLiteral("actionSaveProject"));
    m_saveProjectAction->setShortcut(QKeySequence::Save);
    connect(m_saveProjectAction, &QAction::triggered, this, &MainWindow::saveProjectDialog);
    QAction* exportRun = file->addAction(tr("&Export Run..."));
    m_exportAction = exportRun;
    exportRun->setObjectName(QStringLiteral("actionExportRun"));
    exportRun->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_E));
    connect(exportRun, &QAction::triggered, this, [this] {
        if (auto run = m_quantize->selectedRun()) openExportDialog(run);
        else statusBar()->showMessage(tr("No run to export: quantize first"), 5000);
    });
    file->addSeparator();
    m_recentMenu = file->addMenu(tr("Open &Recent"));
    m_recentMenu->setObjectName(QStringLiteral("menuRecent"));
    rebuildRecentMenu();
    file->addSeparator();
    QAction* quit = file->addAction(tr("&Quit"));
    quit->setShortcut(QKeySequence::Quit);
    quit->setObjectName(QStringLiteral("actionQuit"));
    connect(quit, &QAction::triggered, this, &QWidget::close);

    QMenu* view = menuBar()->addMenu(tr("&View"));
    view->setObjectName(QStringLiteral("menuView"));
    // Ctrl+1..N shows a tab from anywhere in the window (Ctrl+Tab cycles while a tab has focus).
    static const char* const tabTexts[] = {QT_TR_NOOP("&Weights"), QT_TR_NOOP("&Activations"),
                                           QT_TR_NOOP("&Transform Lab"), QT_TR_NOOP("&Quantization")};
    for (int i = 0; i < m_tabs->count(); ++i) {
        const QString text = i < int(std::size(tabTexts)) ? tr(tabTexts[i]) : m_tabs->tabText(i);
        QAction* show = view->addAction(text);
        show->setObjectName(QStringLiteral("actionShowTab%1").arg(i + 1));
        if (i < 9) show->setShortcut(QKeySequence(Qt::CTRL | Qt::Key(Qt::Key_1 + i)));
        connect(show, &QAction::triggered, this, [this, i] {
            m_tabs->setCurrentIndex(i);
            m_tabs->currentWidget()->setFocus(Qt::ShortcutFocusReason);
        });
    }
    view->addSeparator();
    // The docks' toggle actions are named after their titles; give them a mnemonic of their own.
    m_explorerDock->toggleViewAction()->setText(tr("Model &Explorer"));
    m_explorerDock->toggleViewAction()->setObjectName(QStringLiteral("actionToggleExplorer"));
    m_historyDock->toggleViewAction()->setText(tr("Run &History"));
    m_historyDock->toggleViewAction()->setObjectName(QStringLiteral("actionToggleHistory"));
    view->addAction(m_explorerDock->toggleViewAction());
    view->addAction(m_historyDock->toggleViewAction());

    QMenu* tools = menuBar()->addMenu(tr("&Tools"));
    tools->setObjectName(QStringLiteral("menuTools"));
    QAction* calibrate = tools->addAction(tr("Run &Calibration"));
    calibrate->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_K));
    calibrate->setObjectName(QStringLiteral("actionCalibrate"));
    connect(calibrate, &QAction::triggered, this, [this] {
        m_tabs->setCurrentWidget(m_activations);
        if (!m_checkpoint) {
            statusBar()->showMessage(tr("Run Calibration: open a model first (File > Open Model)"), 8000);
            return;
        }
        m_activations->startCalibration();
    });
    QAction* evaluate = tools->addAction(tr("&Evaluate Perplexity"));
    evaluate->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_E));
    evaluate->setObjectName(QStringLiteral("actionEvaluate"));
    connect(evaluate, &QAction::triggered, this, [this] {
        m_historyDock->show();
        if (!m_checkpoint) {
            statusBar()->showMessage(tr("Evaluate Perplexity: open a model first (File > Open Model)"), 8000);
            return;
        }
        m_perplexity->startEvaluation();
    });

    m_quantizeAction = tools->addAction(tr("&Quantize"));
    m_quantizeAction->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_R));
    m_quantizeAction->setObjectName(QStringLiteral("actionQuantize"));
    connect(m_quantizeAction, &QAction::triggered, this, [this] {
        m_tabs->setCurrentWidget(m_quantize);
        if (!m_checkpoint) {
            statusBar()->showMessage(tr("Quantize: open a model first (File > Open Model)"), 8000);
            return;
        }
        m_quantize->startQuantize();
    });
    tools->addSeparator();
    m_cancelAction = tools->addAction(tr("Ca&ncel Job"));
    // Ctrl+. rather than Esc: Esc already closes popups and cancels edits in the tables.
    m_cancelAction->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Period));
    m_cancelAction->setObjectName(QStringLiteral("actionCancelJob"));
    connect(m_cancelAction, &QAction::triggered, this, [this] {
        if (!m_jobStatus->isBusy()) {
            statusBar()->showMessage(tr("No job is running"), 3000);
            return;
        }
        m_jobStatus->cancelButton()->click();
    });

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    help->setObjectName(QStringLiteral("menuHelp"));
    m_aboutAction = help->addAction(tr("&About Quantbench"));
    m_aboutAction->setObjectName(QStringLiteral("actionAbout"));
    connect(m_aboutAction, &QAction::triggered, this, &MainWindow::showAbout);
}

void MainWindow::showAbout()
{
    auto* box = new QMessageBox(QMessageBox::Information, tr("About Quantbench"),
                                tr("Post-training quantization workbench for LLaMA-family "
                                   "models.\n\n") +
                                    versionText(),
                                QMessageBox::Ok, this);
    box->setObjectName(QStringLiteral("aboutBox"));
    box->setAttribute(Qt::WA_DeleteOnClose);
    box->open(); // window-modal, never blocks the event loop
}

void MainWindow::openModelDialog()
{
    auto* dialog = new QFileDialog(this, tr("Open Model"), QString(),
                                   tr("Models (*.safetensors *.gguf *.bin *.json config.json);;"
                                      "All files (*)"));
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->setFileMode(QFileDialog::ExistingFile);
    dialog->setObjectName(QStringLiteral("openDialog"));
    connect(dialog, &QFileDialog::fileSelected, this, [this](const QString& file) {
        // config.json stands for its directory (a Hugging Face model folder).
        const QFileInfo fi(file);
        openModel(fi.fileName() == QLatin1String("config.json") ? fi.absolutePath() : file);
    });
    dialog->open();
}

void MainWindow::openModelFolderDialog()
{
    // A Hugging Face model is a folder (config.json + safetensors shards + tokenizer.json).
    auto* dialog = new QFileDialog(this, tr("Open Model Folder"));
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->setFileMode(QFileDialog::Directory);
    dialog->setOption(QFileDialog::ShowDirsOnly);
    dialog->setObjectName(QStringLiteral("openFolderDialog"));
    connect(dialog, &QFileDialog::fileSelected, this, &MainWindow::openModel);
    dialog->open();
}

void MainWindow::openModel(const QString& path)
{
    if (m_jobStatus->isBusy()) {
        statusBar()->showMessage(tr("Busy: cancel the running job first"), 5000);
        return;
    }
    const std::string p = path.toStdString();
    m_runner->start<io::Checkpoint>(
        this, tr("Opening %1").arg(QFileInfo(path).fileName()),
        [p](RunContext& ctx) -> Result<io::Checkpoint> {
            ctx.beginStage("open", 0, p);
            auto r = io::openCheckpoint(p);
            if (ctx.isCancelled()) return RunContext::cancelledError(p);
            return r;
        },
        [this, path](const JobOutcome<io::Checkpoint>& outcome) {
            if (!outcome.ok() && outcome.error->code == ErrorCode::Cancelled) {
                statusBar()->showMessage(tr("Opening %1 cancelled").arg(path), 5000);
                return;
            }
            if (!outcome.ok()) {
                const QString msg = QString::fromStdString(outcome.error->toString());
                statusBar()->showMessage(tr("Cannot open %1").arg(path), 5000);
                auto* box = new QMessageBox(QMessageBox::Critical, tr("Cannot open model"),
                                            tr("Cannot open %1:\n\n%2").arg(path, msg), QMessageBox::Ok, this);
                box->setObjectName(QStringLiteral("openErrorBox"));
                box->setAttribute(Qt::WA_DeleteOnClose);
                box->open();
                Q_EMIT modelLoadFailed(path, msg);
                return;
            }
            showCheckpoint(outcome.value);
            addRecent(path);
            Q_EMIT modelLoaded(path);
        });
    statusBar()->showMessage(tr("Opening %1...").arg(path));
}

void MainWindow::showCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
    const std::int64_t context = m_checkpoint->config.maxPositionEmbeddings;
    m_calibration->setMaxLength(context > 0 ? int(std::min<std::int64_t>(context, 1 << 20)) : 8192);
    m_weights->setCheckpoint(m_checkpoint);
    m_activations->setCheckpoint(m_checkpoint);
    m_lab->setCheckpoint(m_checkpoint);
    m_perplexity->setCheckpoint(m_checkpoint);
    m_explorer->setCheckpoint(m_checkpoint);
    m_statusModel->setText(statusSummary());
    setWindowTitle(
        QStringLiteral("Quantbench - %1").arg(QFileInfo(QString::fromStdString(m_checkpoint->path)).fileName()));
    QString msg = tr("Opened %1").arg(QString::fromStdString(m_checkpoint->path));
    if (!m_checkpoint->warnings.empty()) msg += tr(" (%n warning(s))", nullptr, int(m_checkpoint->warnings.size()));
    statusBar()->showMessage(msg, 8000);
}

QString MainWindow::statusSummary() const
{
    if (!m_checkpoint) return tr("No model loaded");
    qint64 params = 0;
    for (const auto& t : m_checkpoint->tensors)
        params += t.numel();
    const auto& c = m_checkpoint->config;
    return tr("%1 | %2 | %3 layers | %4 params | %5 | %6")
        .arg(QFileInfo(QString::fromStdString(m_checkpoint->path)).fileName(),
             QString::fromLatin1(architectureName(c.architecture)))
        .arg(c.numHiddenLayers)
        .arg(formatCount(params), formatBytes(qint64(m_checkpoint->fileBytes)),
             QString::fromLatin1(io::checkpointFormatName(m_checkpoint->format)));
}

void MainWindow::addRecent(const QString& path)
{
    QSettings settings;
    QStringList recent = settings.value(kRecentKey).toStringList();
    const QString abs = QFileInfo(path).absoluteFilePath();
    recent.removeAll(abs);
    recent.prepend(abs);
    while (recent.size() > kMaxRecent)
        recent.removeLast();
    settings.setValue(kRecentKey, recent);
    rebuildRecentMenu();
}

void MainWindow::rebuildRecentMenu()
{
    m_recentMenu->clear();
    const QStringList recent = QSettings().value(kRecentKey).toStringList();
    for (const QString& r : recent) {
        QAction* a = m_recentMenu->addAction(r);
        connect(a, &QAction::triggered, this, [this, r] { openModel(r); });
    }
    if (recent.isEmpty()) m_recentMenu->addAction(tr("(none)"))->setEnabled(false);
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event)
{
    if (event->mimeData()->hasUrls()) event->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* event)
{
    const auto urls = event->mimeData()->urls();
    if (urls.isEmpty() || !urls.first().isLocalFile()) return;
    QFileInfo fi(urls.first().toLocalFile());
    openModel(fi.fileName() == QLatin1String("config.json") ? fi.absolutePath() : fi.absoluteFilePath());
    event->acceptProposedAction();
}

QString MainWindow::unsavedWork() const
{
    QStringList what;
    if (m_jobStatus->isBusy()) what << tr("a job is running (%1); quitting cancels it").arg(m_jobStatus->text());
    if (m_unsavedRuns > 0) what << tr("%n quantization run(s) not saved in a project", nullptr, m_unsavedRuns);
    else if (m_unsavedRenames > 0) what << tr("run names changed since the project was saved");
    if (m_checkpoint && !m_quantize->planEditor()->undoStack()->isClean()) what << tr("the plan has unsaved changes");
    return what.join(QLatin1Char('\n'));
}

void MainWindow::markSaved()
{
    m_unsavedRuns = 0;
    m_unsavedRenames = 0;
    m_quantize->planEditor()->undoStack()->setClean();
}

void MainWindow::closeEvent(QCloseEvent* event)
{
    const QString concern = m_closeConfirmed ? QString() : unsavedWork();
    if (!concern.isEmpty()) {
        // Asked window-modally (open(), never exec()): the event loop keeps running the jobs.
        event->ignore();
        if (findChild<QMessageBox*>(QStringLiteral("quitConfirmBox"))) return; // already asking
        auto* box = new QMessageBox(QMessageBox::Warning, tr("Quit Quantbench?"), concern, QMessageBox::NoButton, this);
        box->setObjectName(QStringLiteral("quitConfirmBox"));
        box->setInformativeText(tr("Quit anyway?"));
        box->setAttribute(Qt::WA_DeleteOnClose);
        QPushButton* quit = box->addButton(tr("Quit"), QMessageBox::DestructiveRole);
        box->addButton(QMessageBox::Cancel);
        box->setDefaultButton(QMessageBox::Cancel);
        connect(box, &QMessageBox::finished, this, [this, box, quit] {
            if (box->clickedButton() != quit) return;
            m_closeConfirmed = true;
            close();
        });
        box->open();
        return;
    }
    m_runner->cancelAllAndWait(); // owners cancel, then wait
    saveLayoutSettings();
    QMainWindow::closeEvent(event);
}

} // namespace qb::ui

// ---- projects and export ----------------------------------------------------------------------

namespace qb::ui {

void MainWindow::projectError(const QString& title, const QString& path, const QString& message)
{
    auto* box =
        new QMessageBox(QMessageBox::Critical, title, tr("%1:\n\n%2").arg(path, message), QMessageBox::Ok, this);
    box->setObjectName(QStringLiteral("projectErrorBox"));
    box->setAttribute(Qt::WA_DeleteOnClose);
    box->open();
}

void MainWindow::jobError(const QString& title, const QString& message)
{
    if (message == tr("cancelled") || message == tr("another job is running")) return; // not failures
    // Non-modal: the window stays usable; the status bar keeps the short form.
    auto* box = new QMessageBox(QMessageBox::Critical, title, message, QMessageBox::Ok, this);
    box->setObjectName(QStringLiteral("jobErrorBox"));
    box->setAttribute(Qt::WA_DeleteOnClose);
    box->setWindowModality(Qt::NonModal);
    box->show();
}

ExportDialog* MainWindow::openExportDialog(std::shared_ptr<const QuantRun> run)
{
    if (!run) return nullptr;
    if (!m_checkpoint) {
        statusBar()->showMessage(tr("Open the run's model first"), 5000);
        return nullptr;
    }
    auto* dialog = new ExportDialog(m_runner, m_checkpoint, std::move(run), this);
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    connect(dialog, &ExportDialog::exportFinished, this, [this](bool ok, const QString& msg) {
        statusBar()->showMessage(ok ? tr("Exported %1").arg(msg) : tr("Export: %1").arg(msg), 8000);
    });
    dialog->open();
    return dialog;
}

void MainWindow::saveProjectDialog()
{
    if (!m_checkpoint) {
        statusBar()->showMessage(tr("Open a model first"), 5000);
        return;
    }
    auto* dialog = new QFileDialog(this, tr("Save Project"), QString(), tr("Quantbench project (*.qbproj)"));
    dialog->setObjectName(QStringLiteral("saveProjectDialog"));
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->setAcceptMode(QFileDialog::AcceptSave);
    dialog->setDefaultSuffix(QStringLiteral("qbproj"));
    // Qt's own dialog, so that it can say what the file will hold and how large the grids are (a
    // project with many runs grows by each run's codes and scales); a native one has no room.
    dialog->setOption(QFileDialog::DontUseNativeDialog);
    int gridsRun = -1;
    auto* contents = new QLabel(projectContentsText(pipeline::projectContents(projectRuns(&gridsRun))), dialog);
    contents->setObjectName(QStringLiteral("projectContents"));
    contents->setWordWrap(true);
    if (auto* grid = qobject_cast<QGridLayout*>(dialog->layout()))
        grid->addWidget(contents, grid->rowCount(), 0, 1, grid->columnCount());
    else if (dialog->layout()) dialog->layout()->addWidget(contents);
    connect(dialog, &QFileDialog::fileSelected, this, &MainWindow::saveProject);
    dialog->open();
}

std::vector<pipeline::ProjectRun> MainWindow::projectRuns(int* gridsRun) const
{
    // Every run with its grids; the selected one also supplies metrics.json (what a reader of
    // version 1.0 sees).
    std::vector<pipeline::ProjectRun> runs;
    const auto selected = m_quantize->selectedRun();
    *gridsRun = -1;
    for (const auto& run : m_quantize->runs()->runs()) {
        if (run == selected) *gridsRun = int(runs.size());
        runs.push_back(run->toProjectRun());
    }
    return runs;
}

QString MainWindow::projectContentsText(const pipeline::ProjectContents& c)
{
    const QString model = tr("the model itself is referenced, not copied.");
    if (c.runs == 0) return tr("Stores the plan and calibration settings (no quantization run yet); %1").arg(model);
    if (c.gridRuns == 0)
        return tr("Stores the plan, calibration settings and the metrics of %n run(s) (none has quantization grids); "
                  "%1",
                  nullptr, int(c.runs))
            .arg(model);
    const QString size = QLocale().formattedDataSize(qint64(c.gridBytes), 1, QLocale::DataSizeSIFormat);
    const QString grids =
        c.gridRuns == c.runs
            ? tr("the quantization grids of %n run(s)", nullptr, int(c.runs))
            : tr("the quantization grids of %1 of %n run(s)", nullptr, int(c.runs)).arg(int(c.gridRuns));
    return tr("Stores the plan, calibration settings, every run's metrics and %1 (%2); %3").arg(grids, size, model);
}

void MainWindow::openProjectDialog()
{
    auto* dialog =
        new QFileDialog(this, tr("Open Project"), QString(), tr("Quantbench project (*.qbproj);;All files (*)"));
    dialog->setObjectName(QStringLiteral("openProjectDialog"));
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->setFileMode(QFileDialog::ExistingFile);
    connect(dialog, &QFileDialog::fileSelected, this, &MainWindow::openProject);
    dialog->open();
}

void MainWindow::saveProject(const QString& path)
{
    if (!m_checkpoint) {
        Q_EMIT projectSaved(path, false, tr("no model is open"));
        return;
    }
    if (m_jobStatus->isBusy()) {
        statusBar()->showMessage(tr("Busy: cancel the running job first"), 5000);
        Q_EMIT projectSaved(path, false, tr("another job is running"));
        return;
    }
    pipeline::SaveProjectRequest req;
    req.path = path.toStdString();
    req.checkpoint = m_checkpoint;
    req.plan = m_quantize->planEditor()->model()->plan();
    pipeline::CalibrationSource calibration;
    calibration.textPath = m_quantize->calibText()->text().toStdString();
    calibration.options.nsamples = m_quantize->windowsSpin()->value();
    calibration.options.seqlen = m_quantize->lengthSpin()->value();
    req.calibration = calibration.toJson();
    req.runs = projectRuns(&req.gridsRun);
    m_runner->start<pipeline::SavedProject>(
        this, tr("Saving %1").arg(QFileInfo(path).fileName()),
        [req](RunContext& ctx) { return pipeline::saveProject(req, &ctx); },
        [this, path](const JobOutcome<pipeline::SavedProject>& outcome) {
            if (!outcome.ok() && outcome.error->code == ErrorCode::Cancelled) {
                statusBar()->showMessage(tr("Saving %1 cancelled").arg(path), 5000);
                Q_EMIT projectSaved(path, false, tr("cancelled"));
                return;
            }
            if (!outcome.ok()) {
                const QString msg = QString::fromStdString(outcome.error->toString());
                projectError(tr("Cannot save project"), path, msg);
                Q_EMIT projectSaved(path, false, msg);
                return;
            }
            markSaved();
            statusBar()->showMessage(
                tr("Saved %1 (grids of %n run(s))", nullptr, int(outcome.value->gridRuns)).arg(path), 8000);
            Q_EMIT projectSaved(path, true, QString());
        });
}

void MainWindow::openProject(const QString& path)
{
    if (m_jobStatus->isBusy()) {
        statusBar()->showMessage(tr("Busy: cancel the running job first"), 5000);
        Q_EMIT projectOpenFailed(path, tr("another job is running"));
        return;
    }
    pipeline::OpenProjectRequest req;
    req.path = path.toStdString();
    m_runner->start<pipeline::OpenedProject>(
        this, tr("Opening project %1").arg(QFileInfo(path).fileName()),
        [req](RunContext& ctx) { return pipeline::openProject(req, &ctx); },
        [this, path](const JobOutcome<pipeline::OpenedProject>& outcome) {
            if (!outcome.ok() && outcome.error->code == ErrorCode::Cancelled) {
                statusBar()->showMessage(tr("Opening %1 cancelled").arg(path), 5000);
                Q_EMIT projectOpenFailed(path, tr("cancelled"));
                return;
            }
            if (!outcome.ok()) {
                const QString msg = QString::fromStdString(outcome.error->toString());
                projectError(tr("Cannot open project"), path, msg);
                Q_EMIT projectOpenFailed(path, msg);
                return;
            }
            const pipeline::OpenedProject& lp = *outcome.value;
            const QString modelPath =
                QString::fromStdString(lp.model.path.empty() ? lp.checkpoint->path : lp.model.path);
            showCheckpoint(lp.checkpoint);
            addRecent(modelPath);
            Q_EMIT modelLoaded(modelPath); // the panels take the model (the quantize panel first)
            QString msg = tr("Opened project %1").arg(path);
            if (lp.plan) {
                const QString err = m_quantize->planEditor()->model()->applyPlan(*lp.plan, tr("Open project"));
                if (!err.isEmpty()) msg += tr(" (plan: %1)").arg(err);
            }
            std::vector<std::shared_ptr<QuantRun>> runs;
            for (const auto& r : lp.runs)
                runs.push_back(std::make_shared<QuantRun>(QuantRun::fromProjectRun(r)));
            m_quantize->restoreRuns(runs);
            markSaved(); // what is shown is what the file holds
            for (const auto& w : lp.warnings)
                msg += QStringLiteral("; ") + QString::fromStdString(w);
            setWindowTitle(QStringLiteral("Quantbench - %1").arg(QFileInfo(path).fileName()));
            statusBar()->showMessage(msg, 8000);
            Q_EMIT projectOpened(path);
        });
}

} // namespace qb::ui
