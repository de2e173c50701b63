#pragma once
// TensorErrorView: after a quantization run, the damage done to one tensor and a what-if preview.
//
// Per output and per input channel relative error (formulas in pipeline/whatif.h), the weight
// histogram before and after quantization with the grid of row 0 / group 0, and a what-if box:
// pick another method, bits, group or sym for this tensor and see its relative output error on the
// calibration activations at once. The preview is drawn into the two error charts beside the run's
// own per-channel errors (before / after, with a legend), and "Apply to plan" writes its settings
// into the plan as this tensor's rule (one undo step; the Undo button beside it, or Ctrl+Z in the
// plan editor, takes it back). The layer's input Hessian is computed once per (run, layer) by a
// short pass over the run's calibration windows and cached; analysis and previews (with their
// per-channel errors) run through JobRunner, off the GUI thread (a preview on the demo model takes
// milliseconds). A CMPQ tensor adds its channel map (bits per input channel beside the activation
// score, in place or sorted, outlier channels marked) and a channel picker: the histogram then shows
// the picked channel's weights with its codebook.

#include "eval/tensor_stats.h"
#include "pipeline/whatif.h"
#include "pipeline/workflows.h"

#include <QWidget>

#include <memory>
#include <optional>

class QCheckBox;
class QComboBox;
class QTabWidget;
class QLabel;
class QPushButton;
class QSpinBox;
class QToolButton;

namespace qb::io {
struct Checkpoint;
}

namespace qb::ui {

class ChannelChart;
class CmpqChannelMapChart;
class JobRunner;
class PlanTableModel;
class QuantHistogramChart;
struct QuantRun;

// pipeline::analyzeTensor's result, tagged with the run and tensor it belongs to.
struct TensorAnalysis : pipeline::TensorAnalysis {
    int runId = 0;
    QString tensor;
};

class TensorErrorView : public QWidget {
    Q_OBJECT
public:
    TensorErrorView(JobRunner* runner, QWidget* parent = nullptr);

    void setRun(std::shared_ptr<const QuantRun> run);
    // The model the runs belong to: a run reopened from a project (grids only) is rebuilt from it
    // for inspection (pipeline::rebuildRunForInspection, in a worker) when a tensor is shown.
    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    // A new snapshot of the run shown (a rename): swapped in without analysing again.
    void updateRun(std::shared_ptr<const QuantRun> run);
    // The plan "Apply to plan" edits (and whose undo stack the Undo button uses).
    void setPlanModel(PlanTableModel* plan);
    void showTensor(const QString& name);
    void startPreview();
    // Writes the last successful preview's settings into the plan; the error message, empty on success.
    QString applyToPlan();

    std::shared_ptr<const TensorAnalysis> analysis() const { return m_analysis; }
    ChannelChart* outChannelChart() const { return m_outChart; }
    ChannelChart* inChannelChart() const { return m_inChart; }
    QuantHistogramChart* histogramChart() const { return m_hist; }
    QComboBox* methodCombo() const { return m_method; }
    QSpinBox* bitsSpin() const { return m_bits; }
    QSpinBox* groupSpin() const { return m_group; }
    QCheckBox* symCheck() const { return m_sym; }
    QPushButton* previewButton() const { return m_preview; }
    QPushButton* applyButton() const { return m_apply; }
    QToolButton* undoButton() const { return m_undo; }
    // The settings of the last successful preview (what Apply writes), when there is one.
    std::optional<pipeline::PreviewSettings> previewSettings() const { return m_lastPreview; }
    QLabel* previewLabel() const { return m_previewText; }
    // CMPQ tensors: the channel map, the channel shown in the histogram, and the sort switch.
    CmpqChannelMapChart* channelMapChart() const { return m_channelMap; }
    QSpinBox* channelSpin() const { return m_channel; }
    QCheckBox* sortedCheck() const { return m_sorted; }
    QWidget* channelMapBox() const { return m_mapBox; }
    QLabel* titleLabel() const { return m_title; }

Q_SIGNALS:
    void analysisReady(const QString& tensor);
    // A reopened run rebuilt for inspection (the same run with its models and windows).
    void runRebuilt(std::shared_ptr<const QuantRun> run);
    void previewFinished(bool ok, double relativeError, double seconds);

private:
    void startAnalysis();
    void display();
    void refreshTitle();

    void startRebuild();

    JobRunner* m_runner;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    std::shared_ptr<const QuantRun> m_run;
    int m_rebuildingRun = -1; // the run id a rebuild job is running for
    std::shared_ptr<const TensorAnalysis> m_analysis;
    std::shared_ptr<const pipeline::LayerHessians> m_hessCache; // of (m_hessRun, layer)
    int m_hessRun = -1;
    QString m_tensor;
    int m_requestedChannel = -1; // CMPQ: the input channel to show (-1: the top-scored one)
    bool m_previewBusy = false, m_previewPending = false;
    std::optional<pipeline::PreviewSettings> m_lastPreview;
    PlanTableModel* m_planModel = nullptr;
    QLabel* m_title;
    ChannelChart* m_outChart;
    ChannelChart* m_inChart;
    QuantHistogramChart* m_hist;
    QComboBox* m_method;
    QSpinBox* m_bits;
    QSpinBox* m_group;
    QCheckBox* m_sym;
    QPushButton* m_preview;
    QPushButton* m_apply;
    QToolButton* m_undo;
    QLabel* m_previewText;
    QWidget* m_mapBox;
    QTabWidget* m_inTabs; // the input-channel error chart, and for CMPQ tensors the channel map
    CmpqChannelMapChart* m_channelMap;
    QSpinBox* m_channel;
    QCheckBox* m_sorted;
};

} // namespace qb::ui
