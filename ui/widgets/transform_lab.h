#pragma once
// TransformLab: the transform lab view (pipeline/transform_lab.h). The user picks a linear input
// (decoder layer and group: qkv, o, gate_up, down), the smoothing exponent α, the activation
// quantizer (bits, clip) and whether to include the Hadamard stages; the lab captures that input
// over the workbench's calibration setting and shows, one column per stage (original, smoothed,
// Hadamard, smoothed + Hadamard, and any later stage such as RUQuant's), the activation histogram
// (every histogram on the same value axis and count axis) and a per-channel chart of the chosen
// metric (max |x|, excess kurtosis, or the quantization error; one y range for all stages), with a
// summary table (LabSummaryModel) below, and next to it, on a second tab, the within-cell view of
// one channel (LabCellView). Computation runs through JobRunner (stage progress and
// cancel in the status strip); the window never waits for it.

#include "io/checkpoint.h"
#include "pipeline/transform_lab.h"

#include <QWidget>

#include <memory>
#include <vector>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QGridLayout;
class QLabel;
class QPushButton;
class QSpinBox;
class QTableView;
class QTabWidget;

namespace qb::ui {

class CalibrationSettings;
class ChannelChart;
class HistogramChart;
class JobRunner;
class JobStatus;
class LabCellView;
class LabSummaryModel;

class TransformLab : public QWidget {
    Q_OBJECT
public:
    enum class Metric { MaxAbs, Kurtosis, QuantError };

    TransformLab(JobRunner* runner, JobStatus* status, QWidget* parent = nullptr);

    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    // The calibration text and windows come from the workbench's one setting (Activations tab).
    void setCalibrationSettings(CalibrationSettings* settings);
    // Selecting a linear weight in the explorer points the lab at its input (no run).
    void showTensor(const QString& name);
    void startLab();

    QSpinBox* layerSpin() const { return m_layer; }
    QComboBox* inputCombo() const { return m_input; }
    QDoubleSpinBox* alphaSpin() const { return m_alpha; }
    QComboBox* bitsCombo() const { return m_bits; }
    QComboBox* weightBitsCombo() const { return m_wbits; }
    QDoubleSpinBox* clipSpin() const { return m_clip; }
    QCheckBox* hadamardCheck() const { return m_hadamard; }
    QCheckBox* ruquantCheck() const { return m_ruquant; }
    LabCellView* cellView() const { return m_cells; }
    QTabWidget* bottomTabs() const { return m_bottom; }
    QComboBox* metricCombo() const { return m_metric; }
    QPushButton* runButton() const { return m_run; }
    QTableView* summaryTable() const { return m_table; }
    LabSummaryModel* summaryModel() const { return m_summary; }
    const std::vector<HistogramChart*>& histograms() const { return m_histograms; }
    const std::vector<ChannelChart*>& channelCharts() const { return m_channels; }
    QString titleText() const;
    std::shared_ptr<const pipeline::LabResult> result() const { return m_result; }

Q_SIGNALS:
    void labFinished(bool ok, const QString& message);

private:
    void display();
    void showMetric();
    void clearColumns();
    // The bottom tabs as tall as the summary table (the within-cell tab: at least one chart row).
    void fitBottom();

    JobRunner* m_runner;
    JobStatus* m_status;
    CalibrationSettings* m_settings = nullptr;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    std::shared_ptr<const pipeline::LabResult> m_result;
    QSpinBox* m_layer;
    QComboBox* m_input;
    QDoubleSpinBox* m_alpha;
    QComboBox* m_bits;
    QComboBox* m_wbits;
    QDoubleSpinBox* m_clip;
    QCheckBox* m_hadamard;
    QCheckBox* m_ruquant;
    QComboBox* m_metric;
    QPushButton* m_run;
    QLabel* m_title;
    QGridLayout* m_grid;
    std::vector<HistogramChart*> m_histograms;
    std::vector<ChannelChart*> m_channels;
    LabSummaryModel* m_summary;
    QTableView* m_table;
    LabCellView* m_cells;
    QTabWidget* m_bottom;
    int m_tableHeight = 0;
};

} // namespace qb::ui
