#pragma once
// MainWindow: composes the workbench's panels, menus and status bar. Composition only: panels
// do their own work and every numeric job runs through ui/tasks, never on the GUI thread.

#include "io/checkpoint.h"

#include <QMainWindow>

#include <memory>
#include <vector>

namespace qb::pipeline {
struct ProjectContents;
struct ProjectRun;
} // namespace qb::pipeline

class QAction;
class QDockWidget;
class QLabel;
class QMenu;
class QTabWidget;

namespace qb::ui {

class CalibrationSettings;
class JobRunner;
class JobStatus;
class ModelExplorer;
class WeightsPanel;
class ActivationsPanel;
class TransformLab;
class PerplexityPanel;
class QuantizePanel;
class ExportDialog;
struct QuantRun;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(QWidget* parent = nullptr);

    QTabWidget* viewTabs() const { return m_tabs; }
    QDockWidget* explorerDock() const { return m_explorerDock; }
    QDockWidget* historyDock() const { return m_historyDock; }
    QAction* openAction() const { return m_openAction; }
    QAction* aboutAction() const { return m_aboutAction; }
    ModelExplorer* explorer() const { return m_explorer; }
    WeightsPanel* weightsPanel() const { return m_weights; }
    ActivationsPanel* activationsPanel() const { return m_activations; }
    TransformLab* transformLab() const { return m_lab; }
    PerplexityPanel* perplexityPanel() const { return m_perplexity; }
    QuantizePanel* quantizePanel() const { return m_quantize; }
    CalibrationSettings* calibrationSettings() const { return m_calibration; }
    QAction* saveProjectAction() const { return m_saveProjectAction; }
    QAction* quantizeAction() const { return m_quantizeAction; }
    QAction* exportRunAction() const { return m_exportAction; }
    QAction* cancelJobAction() const { return m_cancelAction; }
    QAction* openProjectAction() const { return m_openProjectAction; }
    JobStatus* jobStatus() const { return m_jobStatus; }
    std::shared_ptr<const io::Checkpoint> checkpoint() const { return m_checkpoint; }
    QString statusSummary() const;
    // What quitting now would lose, one line each ("" when nothing): a running job, runs not
    // saved in a project, plan edits since the last save/open. Closing asks when it is not empty.
    QString unsavedWork() const;

    // The window's layout in QSettings (group "window"): geometry, dock and toolbar state, and the
    // state of every named QSplitter in the window ("window/splitters/<objectName>"). Saved when
    // the window closes, restored when it is built; a layout saved by another version of the
    // dock set-up (kLayoutVersion) is ignored.
    void saveLayoutSettings() const;
    bool restoreLayoutSettings();

    // The bundled demo model directory (installed share dir or source tree), or empty.
    static QString bundledDemoPath();

    // The versions shown in Help > About (also used by --version).
    static QString versionText();

public Q_SLOTS:
    void showAbout();
    // Opens a model in a worker thread; errors are shown in a dialog naming the file.
    void openModel(const QString& path);
    void openModelDialog();
    // A Hugging Face model folder (the file dialog above picks files only).
    void openModelFolderDialog();
    // .qbproj projects (pipeline/project.h): the model reference, the plan in the editor, every
    // run's metrics and grids (metrics.json: the selected, else latest, run). Both run in a
    // worker; a file that cannot be read (or a newer major version) is reported in a dialog naming
    // the file. The save dialog says what the file will hold (projectContentsText).
    void saveProject(const QString& path);
    void openProject(const QString& path);
    void saveProjectDialog();
    void openProjectDialog();
    // The export dialog for a run (non-modal, deleted on close); null when no model is open.
    ExportDialog* openExportDialog(std::shared_ptr<const QuantRun> run);

Q_SIGNALS:
    void modelLoaded(const QString& path);
    void modelLoadFailed(const QString& path, const QString& message);
    void projectSaved(const QString& path, bool ok, const QString& message);
    void projectOpened(const QString& path);
    void projectOpenFailed(const QString& path, const QString& message);

protected:
    void dragEnterEvent(QDragEnterEvent* event) override;
    void dropEvent(QDropEvent* event) override;
    void closeEvent(QCloseEvent* event) override;

private:
    void createPanels();
    void createMenus();
    void addRecent(const QString& path);
    void rebuildRecentMenu();
    void showCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    void projectError(const QString& title, const QString& path, const QString& message);
    // A failed calibration, quantization or evaluation job: a dialog with the message.
    void jobError(const QString& title, const QString& message);
    // After a project is saved or opened: no unsaved runs, the plan's undo stack is clean.
    void markSaved();
    // The session's runs as a project stores them; *gridsRun: the selected run's index (or -1).
    std::vector<pipeline::ProjectRun> projectRuns(int* gridsRun) const;
    // "Stores the plan, calibration settings, every run's metrics and the quantization grids of
    // 3 run(s) (1.2 MB); the model itself is referenced, not copied."
    static QString projectContentsText(const pipeline::ProjectContents& contents);

    QTabWidget* m_tabs = nullptr;
    QDockWidget* m_explorerDock = nullptr;
    QDockWidget* m_historyDock = nullptr;
    QLabel* m_statusModel = nullptr;
    QAction* m_openAction = nullptr;
    QAction* m_aboutAction = nullptr;
    QMenu* m_recentMenu = nullptr;
    JobRunner* m_runner = nullptr;
    JobStatus* m_jobStatus = nullptr;
    ModelExplorer* m_explorer = nullptr;
    WeightsPanel* m_weights = nullptr;
    ActivationsPanel* m_activations = nullptr;
    TransformLab* m_lab = nullptr;
    PerplexityPanel* m_perplexity = nullptr;
    QuantizePanel* m_quantize = nullptr;
    QAction* m_saveProjectAction = nullptr;
    QAction* m_openProjectAction = nullptr;
    QAction* m_quantizeAction = nullptr;
    QAction* m_exportAction = nullptr;
    QAction* m_cancelAction = nullptr;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    CalibrationSettings* m_calibration = nullptr;
    int m_unsavedRuns = 0;
    int m_unsavedRenames = 0; // run names changed since the project was saved or opened
    bool m_closeConfirmed = false;
};

} // namespace qb::ui
