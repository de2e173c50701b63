#pragma once
// BudgetPlanner: the "Budget" view of the Quantization tab (issue 16 items 2 and 4).
//
// - Analyze: the sensitivity atlas (pipeline::sensitivityAnalysis: one calibration pass, every
//   decoder linear under every candidate of the chosen export target; cached on disk by model +
//   calibration + candidates, so reopening is instant) in a worker with progress and cancel.
//   Measure: the true KL of N tensors quantized alone (spread over the predicted ranking); the
//   predicted damage then reads in nats of KL (SensitivityAtlas::damage), and the rank correlation
//   of proxy and measured KL is shown.
// - Heat map: layers x tensor kinds (q k v o gate up down), colour = predicted damage at the
//   candidate chosen above it (log scale), or the measured KL where it exists; a click shows the
//   tensor (tensorActivated).
// - Budget: a slider over the allocator's whole range (bits per weight, or MB of the file for GGUF
//   candidates) with the Pareto path (predicted damage against size) beside it; moving it
//   allocates (pipeline::allocateToBudget, milliseconds) and applies the plan to the plan table as
//   one undoable step (consecutive moves of one drag merge into a single step). Runs already made
//   appear as measured points (their KL against their bits per weight) next to the path.
// Threading: GUI thread; the analysis runs through the JobRunner.

#include "pipeline/allocator.h"
#include "pipeline/sensitivity.h"
#include "pipeline/workflows.h"

#include <QWidget>

#include <array>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <memory>
#include <optional>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QPushButton;
class QScatterSeries;
class QLineSeries;
class QSlider;
class QSpinBox;
class QTableWidget;
class QChartView;
class QLogValueAxis;
class QValueAxis;

namespace qb::io {
struct Checkpoint;
}

namespace qb::ui {

class JobRunner;
class PlanTableModel;

class BudgetPlanner : public QWidget {
    Q_OBJECT
public:
    BudgetPlanner(JobRunner* runner, PlanTableModel* plan, QWidget* parent = nullptr);

    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    // Supplies the calibration (the workbench's one setting) and the evaluation text at Analyze time.
    void setRequestSource(std::function<pipeline::CalibrationSource()> calibration, std::function<QString()> evalText);
    // Measured runs: (bits per weight, mean KL in nats, label).
    struct RunPoint {
        double bitsPerWeight = 0;
        double kl = 0;
        QString label;
    };
    void setRunPoints(const std::vector<RunPoint>& points);

    void analyze(); // starts the atlas job
    void measure(); // starts the measurement job (after analyze)
    // Allocates to `bitsPerWeight` (or bytes with GGUF candidates) and applies the plan.
    QString allocate(double budgetValue);
    // Replaces the atlas (e.g. one loaded by a test) and refreshes every view.
    void setAtlas(const pipeline::SensitivityAtlas& atlas);

    const std::optional<pipeline::SensitivityAtlas>& atlas() const { return m_atlas; }
    const std::optional<pipeline::Allocation>& allocation() const { return m_allocation; }
    QComboBox* targetBox() const { return m_target; }
    QPushButton* analyzeButton() const { return m_analyze; }
    QPushButton* measureButton() const { return m_measure; }
    QTableWidget* heatMap() const { return m_heat; }
    // The measured tensors: proxy and measured KL side by side, with their ranks.
    QTableWidget* measuredTable() const { return m_measuredTable; }
    QComboBox* heatCandidate() const { return m_heatCandidate; }
    QSlider* budgetSlider() const { return m_slider; }
    QDoubleSpinBox* budgetSpin() const { return m_budget; }
    QCheckBox* tieQkvCheck() const { return m_tieQkv; }
    QCheckBox* keepEditsCheck() const { return m_keepEdits; }
    // The bits range edits every kind ("every kind") or the kind chosen here.
    QComboBox* rangeKindCombo() const { return m_rangeKind; }
    QSpinBox* minBitsSpin() const { return m_minBits; }
    QSpinBox* maxBitsSpin() const { return m_maxBits; }
    QPushButton* releaseEditsButton() const { return m_releaseEdits; }
    // Tensors edited by hand since an allocation, kept at that setting by the next ones
    // (tensor -> candidate label); edits that match no candidate are listed apart.
    const std::map<std::string, std::string>& keptEdits() const { return m_kept; }
    const std::set<std::string>& unmatchedEdits() const { return m_unmatched; }
    QLabel* statusLabel() const { return m_status; }
    QLabel* allocationLabel() const { return m_allocLabel; }
    QLineSeries* paretoSeries() const { return m_path; }
    QScatterSeries* runSeries() const { return m_runs; }

Q_SIGNALS:
    void tensorActivated(const QString& name);
    void atlasChanged();

private:
    void refreshHeatMap();
    void refreshPareto();
    void refreshStatus();
    void onSlider(int position);
    bool bytesBudget() const; // GGUF candidates: the budget is the file size in MB
    pipeline::AllocationConstraints constraints();
    // Compares the plan with what the last allocation wrote: hand edits join m_kept.
    void collectEdits();

    JobRunner* m_runner;
    PlanTableModel* m_plan;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    std::function<pipeline::CalibrationSource()> m_calibration;
    std::function<QString()> m_evalText;
    std::optional<pipeline::SensitivityAtlas> m_atlas;
    std::optional<pipeline::Allocation> m_allocation;
    std::vector<pipeline::ParetoPoint> m_front;
    std::vector<RunPoint> m_runPoints;
    // Per tensor, the settings the last allocation resolved to (its key fields).
    std::map<std::string, std::string> m_written;
    std::map<std::string, std::string> m_kept;
    std::set<std::string> m_unmatched;
    bool m_fromCache = false;
    bool m_busy = false;

    QComboBox* m_target;
    QPushButton* m_analyze;
    QSpinBox* m_measureCount;
    QPushButton* m_measure;
    QLabel* m_status;
    QComboBox* m_heatCandidate;
    QTableWidget* m_heat;
    QTableWidget* m_measuredTable;
    QChartView* m_chart;
    QLineSeries* m_path;
    QScatterSeries* m_point;
    QScatterSeries* m_runs;
    QValueAxis* m_x;
    QLogValueAxis* m_y;
    QSlider* m_slider;
    QDoubleSpinBox* m_budget;
    QCheckBox* m_tieQkv;
    QCheckBox* m_keepEdits;
    QComboBox* m_rangeKind;
    std::array<std::pair<int, int>, 7> m_ranges; // per model::Linear: min, max bits
    QSpinBox* m_minBits;
    QSpinBox* m_maxBits;
    QPushButton* m_releaseEdits;
    QLabel* m_allocLabel;
};

} // namespace qb::ui
