#pragma once
// LabCellView: the transform lab's within-cell view (pipeline/transform_lab.h, withinCellStats).
// For one chosen channel (a coordinate of the rotated basis in rotated stages) and every stage of
// the lab's result, one small chart per stage: where the channel's values sit inside the cells of
// the per-token activation quantizer (histogram of the position u in [0, 1); ½ is the midpoint the
// uniform quantizer reconstructs at), or per quantization level the offset of the data's centroid
// from the midpoint (in cell units; Lloyd–Max would reconstruct at the centroid). Each chart's title
// carries the MSE ratio midpoint / centroid (1: uniform inside the cells) and the mean
// |centroid − midpoint|. The lab's run computes the channel set in the spin box; changing it
// afterwards recomputes every stage from the kept capture through JobRunner (labWithinCell; stage
// progress and cancel in the status strip), never on the GUI thread.

#include "pipeline/transform_lab.h"

#include <QWidget>

#include <memory>
#include <vector>

class QChartView;
class QComboBox;
class QGridLayout;
class QLabel;
class QSpinBox;
class QTimer;

namespace qb::ui {

class ChannelChart;
class HistogramChart;
class JobRunner;
class JobStatus;

// The lab's small multiples (shared by TransformLab and LabCellView): thin margins, no axis titles,
// small labels; and one vertical range for every chart of a row (a log axis floors at 0.5).
void compactLabChart(QChartView* view);
void setLabVerticalRange(QChartView* view, double lo, double hi);

class LabCellView : public QWidget {
    Q_OBJECT
public:
    enum class Show { Positions, Offsets };

    LabCellView(JobRunner* runner, JobStatus* status, QWidget* parent = nullptr);

    // A new lab result: its channelCells per stage (the spin box's channel when the lab ran), or a
    // sentence saying why there is nothing to show.
    void setResult(std::shared_ptr<const pipeline::LabResult> result);
    int channel() const;
    // Recompute for the spin box's channel (what a change of the spin box does after a short pause).
    void refresh();

    QSpinBox* channelSpin() const { return m_channel; }
    QComboBox* showCombo() const { return m_show; }
    // The charts on show (one kind at a time, per the Show box; empty for the other).
    const std::vector<HistogramChart*>& positionCharts() const { return m_positions; }
    const std::vector<ChannelChart*>& offsetCharts() const { return m_offsets; }
    const std::vector<pipeline::WithinCellStats>& stats() const { return m_stats; }
    QString summaryText() const;

Q_SIGNALS:
    // After every recompute (ok false with the reason, "cancelled" when cancelled).
    void cellsUpdated(bool ok, const QString& message);

private:
    void display();
    void clearCharts();

    JobRunner* m_runner;
    JobStatus* m_status;
    std::shared_ptr<const pipeline::LabResult> m_result;
    std::vector<pipeline::WithinCellStats> m_stats;
    QSpinBox* m_channel;
    QComboBox* m_show;
    QLabel* m_summary;
    QGridLayout* m_grid;
    QTimer* m_debounce;
    std::vector<HistogramChart*> m_positions;
    std::vector<ChannelChart*> m_offsets;
    bool m_running = false;
};

} // namespace qb::ui
