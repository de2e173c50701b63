#pragma once
// Charts of the Quantization tab:
//  - LayerErrorChart: per-layer relative error as grouped bars, one bar set per run (one run for
//    the results view, two side by side for compare); the worst layer is named in the title, and
//    the title says whether a layer's figure weights its tensors by parameter count or is a plain
//    mean.
//  - QuantHistogramChart: a weight histogram before and after quantization as step outlines, with
//    the grid levels of one row/group drawn as vertical lines (one comb series).
//  - CmpqChannelMapChart: a CMPQ tensor's bits per input channel next to the activation score
//    that caused them, in place or sorted by score, with the channels holding sparse outliers
//    marked and the chosen channel drawn as a vertical line; a click picks a channel.
//  - BpwPerplexityChart: bits per weight vs perplexity, one labelled point (series) per run, the
//    original model's perplexity as a dashed horizontal line, and a legend naming both.
// Every refresh is one QXYSeries::replace() (or one QBarSet::append(list) per set).

#include "eval/tensor_stats.h"

#include <QChartView>

#include <optional>
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
    // One entry per run: its name and one value per layer; `weighted`: the values weight each
    // tensor by its parameter count (else they are a plain mean, and the title says so).
    void setRuns(const QStringList& names, const std::vector<std::vector<double>>& values, bool weighted = true);
    QString weighting() const { return m_weighting; } // "param-weighted" or "plain"
    QBarSeries* series() const { return m_series; }
    // Values of bar set `set` as plotted, for tests.
    std::vector<double> plotted(int set) const;

private:
    QString m_title;
    QString m_weighting = tr("param-weighted");
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

class CmpqChannelMapChart : public QChartView {
    Q_OBJECT
public:
    explicit CmpqChannelMapChart(QWidget* parent = nullptr);
    // bits per input channel (16: kept in F16, drawn one row above the highest level), the score of
    // each, the number of sparse outliers in each and the chosen channel.
    void setData(const std::vector<int>& bits, const std::vector<float>& scores, const std::vector<int>& outliers,
                 int chosen);
    void setSorted(bool sorted);
    bool sorted() const { return m_sorted; }
    // The input channel drawn at x (in place: x itself; sorted: the channel of that rank).
    int channelAt(double x) const;
    QLineSeries* bitsSeries() const { return m_bitsLine; }
    QLineSeries* scoreSeries() const { return m_scoreLine; }
    QScatterSeries* outlierSeries() const { return m_outlierDots; }
    QLineSeries* chosenSeries() const { return m_chosenLine; }

Q_SIGNALS:
    void channelPicked(int channel);

protected:
    void mousePressEvent(QMouseEvent* event) override;

private:
    void redraw();

    std::vector<int> m_bits, m_outliers, m_order; // m_order: channels by descending score
    std::vector<float> m_scores;
    int m_chosen = -1;
    bool m_sorted = false;
    QLineSeries* m_bitsLine;
    QLineSeries* m_scoreLine;
    QScatterSeries* m_outlierDots;
    QLineSeries* m_chosenLine;
    QValueAxis* m_x;
    QValueAxis* m_yBits;
    QValueAxis* m_yScore;
};

class BpwPerplexityChart : public QChartView {
    Q_OBJECT
public:
    struct RunPoint {
        double bitsPerWeight = 0;
        double perplexity = 0;
        QString label;  // next to the point ("#2")
        QString legend; // in the legend ("#2 GPTQ 3b g128")
    };
    explicit BpwPerplexityChart(QWidget* parent = nullptr);
    // One series per run; the original model's perplexity (when known) as a horizontal line.
    void setRuns(const QList<RunPoint>& runs, std::optional<double> baseline);
    QList<QScatterSeries*> runSeries() const { return m_runs; }
    QLineSeries* baselineSeries() const { return m_baseline; }

private:
    QList<QScatterSeries*> m_runs;
    QLineSeries* m_baseline;
    QValueAxis* m_x;
    QValueAxis* m_y;
};

} // namespace qb::ui
