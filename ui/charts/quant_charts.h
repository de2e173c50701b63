#pragma once
// Charts of the Quantization tab:
//  - LayerErrorChart: per-layer relative error as grouped bars, one bar set per run (one run for
//    the results view, two side by side for compare); the worst layer is named in the title.
//  - QuantHistogramChart: a weight histogram before and after quantization as step outlines, with
//    the grid levels of one row/group drawn as vertical lines (one comb series).
//  - BpwPerplexityChart: bits per weight vs perplexity, one point per run.
// Every refresh is one QXYSeries::replace() (or one QBarSet::append(list) per set).

#include "eval/tensor_stats.h"

#include <QChartView>

#include <vector>

class QBarCategoryAxis;
class QBarSeries;
class QLineSeries;
class QScatterSeries;
class QValueAxis;

namespace qb::ui {

class LayerErrorChart : public QChartView {
    Q_OBJECT
public:
    explicit LayerErrorChart(const QString& title, QWidget* parent = nullptr);
    // One entry per run: its name and one value per layer.
    void setRuns(const QStringList& names, const std::vector<std::vector<double>>& values);
    QBarSeries* series() const { return m_series; }
    // Values of bar set `set` as plotted, for tests.
    std::vector<double> plotted(int set) const;

private:
    QString m_title;
    QBarSeries* m_series;
    QBarCategoryAxis* m_x;
    QValueAxis* m_y;
};

class QuantHistogramChart : public QChartView {
    Q_OBJECT
public:
    explicit QuantHistogramChart(QWidget* parent = nullptr);
    void setData(const eval::Histogram& before, const eval::Histogram& after, const std::vector<double>& gridLevels);
    QLineSeries* beforeSeries() const { return m_before; }
    QLineSeries* afterSeries() const { return m_after; }
    QLineSeries* gridSeries() const { return m_grid; }

private:
    QLineSeries* m_before;
    QLineSeries* m_after;
    QLineSeries* m_grid;
    QValueAxis* m_x;
    QValueAxis* m_y;
};

class BpwPerplexityChart : public QChartView {
    Q_OBJECT
public:
    explicit BpwPerplexityChart(QWidget* parent = nullptr);
    void setPoints(const QList<QPointF>& bpwPpl);
    QScatterSeries* series() const { return m_series; }

private:
    QScatterSeries* m_series;
    QValueAxis* m_x;
    QValueAxis* m_y;
};

} // namespace qb::ui
