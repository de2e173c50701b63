#pragma once
// WeightsPanel: distribution of the selected tensor's weights: histogram (adjustable bins,
// linear or log counts), min/max/mean/std/kurtosis, and per-output / per-input channel max |w|
// with the top channels listed. The tensor is read and its statistics computed in a worker
// thread (JobRunner); the panel only displays the snapshot that comes back.

#include "eval/tensor_stats.h"
#include "io/checkpoint.h"

#include <QWidget>

#include <memory>

class QCheckBox;
class QLabel;
class QSpinBox;

namespace qb::ui {

class ChannelChart;
class HistogramChart;
class JobRunner;

struct WeightStatsSnapshot {
    QString tensor;
    std::vector<std::int64_t> shape;
    eval::TensorStats stats;
};

class WeightsPanel : public QWidget {
    Q_OBJECT
public:
    WeightsPanel(JobRunner* runner, QWidget* parent = nullptr);

    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    void showTensor(const QString& name);

    HistogramChart* histogram() const { return m_hist; }
    ChannelChart* outChannels() const { return m_outChannels; }
    ChannelChart* inChannels() const { return m_inChannels; }
    QSpinBox* binsSpin() const { return m_bins; }
    QCheckBox* logCheck() const { return m_log; }
    QString statsText() const;
    std::shared_ptr<const WeightStatsSnapshot> snapshot() const { return m_snapshot; }

Q_SIGNALS:
    void statsReady(const QString& tensor);

private:
    void recompute();
    void display();

    JobRunner* m_runner;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    std::shared_ptr<const WeightStatsSnapshot> m_snapshot;
    QString m_tensor;
    QLabel* m_title;
    QLabel* m_stats;
    QSpinBox* m_bins;
    QCheckBox* m_log;
    HistogramChart* m_hist;
    ChannelChart* m_outChannels;
    ChannelChart* m_inChannels;
    int m_generation = 0; // drops results of superseded requests
};

} // namespace qb::ui
