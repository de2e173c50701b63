#pragma once
// QuantizePanel: the Quantization tab. Composes the plan editor, the run controls (calibration
// text, windows, window length, perplexity after the run), the per-tensor results of the current
// run (under a header with its editable name and figures, filled layer by layer while it runs,
// with a per-layer error chart), the per-tensor error and what-if view (whose "Apply to plan"
// edits the plan), the run comparison, and the Distill step (DistillPanel: NeUQI's lightweight
// distillation of a finished run into a new run, with a live loss curve).
//
// A run goes through JobRunner + JobStatus: tokenize and sample the calibration windows, load the
// model (cached per checkpoint), pipeline::runQuantize with the resolved plan, then optionally the
// perplexity of the fake-quantized model. The job's progress is mapped onto one bar for the whole
// run (ETA from it) with "layer N <tensor> (<stage>)" as text. Per-layer reports come from
// QuantizeJobOptions::onLayerDone on the worker and reach the GUI thread through a queued
// invocation (never blocking). Finished runs are immutable snapshots in the run list.
// Every run writes per-layer checkpoints into a cache directory (widgets/quantize_resume.h); when
// a crash left one for the same model, plan and calibration, starting the run asks whether to
// resume it. Cancel discards the run's checkpoint, a failure keeps it.

#include "io/checkpoint.h"
#include "pipeline/quantize_job.h"
#include "pipeline/workflows.h"

#include <QWidget>

#include <memory>

class QCheckBox;
class QComboBox;
class QLabel;
class QTimer;
class QLineEdit;
class QPushButton;
class QSpinBox;
class QTabWidget;
class QTableView;

namespace qb::model {
class Model;
}

namespace qb::ui {

class BudgetPlanner;
class CalibrationSettings;
class DistillPanel;
class JobRunner;
class JobStatus;
class LayerErrorChart;
class PlanEditor;
class QuantRunModel;
class RunCompareView;
class RunHeader;
class TensorErrorView;
class TensorReportModel;
struct QuantRun;

class QuantizePanel : public QWidget {
    Q_OBJECT
public:
    QuantizePanel(JobRunner* runner, JobStatus* status, QWidget* parent = nullptr);

    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    // Binds the calibration widgets to the workbench's one calibration setting.
    void setCalibrationSettings(CalibrationSettings* settings);
    // A tensor chosen in the explorer: selects its plan row and shows its errors.
    void showTensor(const QString& name);
    void startQuantize();

    PlanEditor* planEditor() const { return m_plan; }
    TensorErrorView* tensorView() const { return m_tensorView; }
    RunCompareView* compareView() const { return m_compare; }
    DistillPanel* distillPanel() const { return m_distill; }
    BudgetPlanner* budgetPlanner() const { return m_budget; }
    QuantRunModel* runs() const { return m_runs; }
    TensorReportModel* reports() const { return m_reports; }
    QTableView* reportTable() const { return m_reportTable; }
    LayerErrorChart* layerChart() const { return m_layerChart; }
    RunHeader* runHeader() const { return m_header; } // above the Results tab's table
    QTabWidget* views() const { return m_views; }
    QLineEdit* calibText() const { return m_calibText; }
    QSpinBox* windowsSpin() const { return m_windows; }
    QSpinBox* lengthSpin() const { return m_length; }
    QComboBox* calibrationPreset() const { return m_calibPreset; }
    // Optional llama.cpp importance matrix (.gguf / .dat): weights the grid fits (quantize --imatrix).
    QLineEdit* imatrixEdit() const { return m_imatrix; }
    QCheckBox* perplexityCheck() const { return m_evalPpl; }
    QPushButton* quantizeButton() const { return m_run; }
    std::shared_ptr<const QuantRun> currentRun() const { return m_current; }
    // The run last selected in the run list, else the current (latest) run; null when none.
    std::shared_ptr<const QuantRun> selectedRun() const;
    // Runs restored from a project (no model, no calibration; their grids when stored): appended
    // to the run list with fresh ids, the last one shown as the current run.
    void restoreRuns(const std::vector<std::shared_ptr<QuantRun>>& runs);

Q_SIGNALS:
    void layerFinished(int layer);
    void quantizeFinished(bool ok, const QString& message);
    // A distillation (the Distill view) ended; on success its run is in runs().
    void distillFinished(bool ok, const QString& message);
    // Export of a run (issue 7 item 6) is provided elsewhere; the panel only asks for it.
    void exportRequested(std::shared_ptr<const QuantRun> run);

private:
    // Starts the run, writing per-layer checkpoints into checkpointDir (resume: continuing there).
    void launchQuantize(const QString& checkpointDir, bool resume);
    void onLayerDone(int serial, int layer, const std::vector<pipeline::TensorReport>& reports);
    void refreshLayerChart();
    // The request the Quantize button starts (reports go to onLayerDone under `serial`).
    pipeline::QuantizeRequest buildRequest(int serial);
    void refreshEstimate(); // starts a background pre-flight; updateTotals shows it
    void updateTotals();
    // A distilled run: a new id, shown as the current run and compared with its source.
    void addDistilledRun(std::shared_ptr<QuantRun> run, std::shared_ptr<const QuantRun> source);

    JobRunner* m_runner;
    JobStatus* m_status;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    std::shared_ptr<const model::Model> m_base; // loaded once per checkpoint by the first run
    std::shared_ptr<const QuantRun> m_current;
    int m_serial = 0; // of the run in flight, to drop late layer reports of an older run
    int m_nextId = 1;
    PlanEditor* m_plan;
    QuantRunModel* m_runs;
    TensorReportModel* m_reports;
    QTableView* m_reportTable;
    LayerErrorChart* m_layerChart;
    RunHeader* m_header;
    TensorErrorView* m_tensorView;
    RunCompareView* m_compare;
    DistillPanel* m_distill;
    BudgetPlanner* m_budget;
    QTabWidget* m_views;
    QLineEdit* m_calibText;
    QLineEdit* m_imatrix;
    QComboBox* m_calibPreset;
    QSpinBox* m_windows;
    QSpinBox* m_length;
    QCheckBox* m_evalPpl;
    QPushButton* m_run;
    QLabel* m_totals;
    QString m_estimate;      // the pre-flight line (time, peak memory), refreshed off the GUI thread
    QTimer* m_estimateTimer; // debounces settings changes
    int m_estimateSerial = 0;
};

} // namespace qb::ui
