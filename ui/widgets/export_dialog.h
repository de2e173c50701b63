#pragma once
// ExportDialog: exports one quantization run (live or restored from a .qbproj) as GGUF, a GPTQ
// directory, a fake-quantized safetensors directory or a .qbproj project. Format, output path
// (typed or chosen), GGUF grid type (auto = smallest exact type per grid, or forced), GPTQ
// "round real-valued zero-points". The export runs through JobRunner (pipeline::exportModel, the
// implementation quantbench-cli uses) with a progress bar and Cancel; then the exactness report
// (per tensor: type, exact, max abs diff) and the verification result are shown.
// GUI thread only; the run and checkpoint are immutable snapshots shared with the worker.

#include "io/checkpoint.h"
#include "pipeline/project.h"

#include <QDialog>

#include <memory>

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QTableWidget;
class QFutureWatcherBase;

namespace qb::ui {

class JobRunner;
struct QuantRun;

class ExportDialog : public QDialog {
    Q_OBJECT
public:
    ExportDialog(JobRunner* runner, std::shared_ptr<const io::Checkpoint> checkpoint,
                 std::shared_ptr<const QuantRun> run, QWidget* parent = nullptr);

    QComboBox* formatCombo() const { return m_format; }
    QLineEdit* pathEdit() const { return m_path; }
    QPushButton* browseButton() const { return m_browse; }
    QComboBox* ggufTypeCombo() const { return m_ggufType; }
    QCheckBox* roundZerosCheck() const { return m_round; }
    QPushButton* exportButton() const { return m_export; }
    QPushButton* cancelButton() const { return m_cancel; }
    QProgressBar* progressBar() const { return m_bar; }
    QTableWidget* reportTable() const { return m_report; }
    QLabel* verifyLabel() const { return m_verify; }
    QLabel* statusLabel() const { return m_status; }
    bool isRunning() const { return m_watcher != nullptr; }
    pipeline::ExportFormat format() const;

    void startExport();

Q_SIGNALS:
    void exportFinished(bool ok, const QString& message);

protected:
    void reject() override; // Close while running cancels first

private:
    void updateControls();
    void showOutcome(const pipeline::ModelExportOutcome& outcome);
    void chooseOutput();

    JobRunner* m_runner;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    std::shared_ptr<const QuantRun> m_run;
    QComboBox* m_format;
    QLineEdit* m_path;
    QPushButton* m_browse;
    QComboBox* m_ggufType;
    QCheckBox* m_round;
    QPushButton* m_export;
    QPushButton* m_cancel;
    QPushButton* m_close;
    QProgressBar* m_bar;
    QTableWidget* m_report;
    QLabel* m_verify;
    QLabel* m_status;
    QFutureWatcherBase* m_watcher = nullptr;
    bool m_overwriteConfirmed = false; // set while an export the user allowed to replace starts
};

} // namespace qb::ui
