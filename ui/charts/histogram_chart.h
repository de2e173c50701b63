#pragma once
// HistogramChart: a Qt Charts view of an eval::Histogram, drawn as a filled step outline with
// one QXYSeries::replace() call per refresh. Linear or logarithmic count axis; axis titles
// carry the quantity and unit.

#include "eval/tensor_stats.h"

#include <QChartView>

class QLineSeries;
class QValueAxis;
class QLogValueAxis;

namespace qb::ui {

class HistogramChart : public QChartView {
    Q_OBJECT
public:
    explicit HistogramChart(const QString& title, const QString& xTitle, QWidget* parent = nullptr);

    void setHistogram(const eval::Histogram& h);
    void setLogCounts(bool on);
    bool logCounts() const { return m_log; }
    QLineSeries* series() const { return m_series; }
    // Counts per bin as currently plotted (read back from the series), for tests.
    std::vector<double> plottedCounts() const;

private:
    void rebuild();

    QLineSeries* m_series;
    QValueAxis* m_x;
    QValueAxis* m_yLinear;
    QLogValueAxis* m_yLog;
    eval::Histogram m_hist;
    bool m_log = false;
};

// ChannelChart: one value per channel (e.g. max |w| per output channel) as a line.
class ChannelChart : public QChartView {
    Q_OBJECT
public:
    ChannelChart(const QString& title, const QString& xTitle, const QString& yTitle, QWidget* parent = nullptr);
    void setValues(const std::vector<float>& values);
    QLineSeries* series() const { return m_series; }

private:
    QLineSeries* m_series;
    QValueAxis* m_x;
    QValueAxis* m_y;
};

} // namespace qb::ui
