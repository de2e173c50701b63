#pragma once
// HistogramChart: a Qt Charts view of an eval::Histogram, drawn as a filled step outline with
// one QXYSeries::replace() call per refresh. Linear or logarithmic count axis; axis titles
// carry the quantity and unit.

#include "eval/tensor_stats.h"

#include <QChartView>

class QGraphicsSimpleTextItem;
class QLineSeries;
class QValueAxis;
class QLogValueAxis;

namespace qb::ui {

// A chart view that can stand empty with a sentence instead of bare axes ("1 0 0 0 0"): while a
// placeholder is shown the axes are hidden and the text sits in the middle of the plot.
class PlaceholderChartView : public QChartView {
    Q_OBJECT
public:
    explicit PlaceholderChartView(QWidget* parent = nullptr);
    // Non-empty: hide the axes and show `text`; empty: show the axes again.
    void setPlaceholder(const QString& text);
    QString placeholder() const { return m_placeholderText; }

protected:
    void resizeEvent(QResizeEvent* e) override;

private:
    void placeText();
    QGraphicsSimpleTextItem* m_placeholder;
    QString m_placeholderText;
};

class HistogramChart : public PlaceholderChartView {
    Q_OBJECT
public:
    explicit HistogramChart(const QString& title, const QString& xTitle, QWidget* parent = nullptr);

    // An empty histogram shows the placeholder "Select a tensor" (or what setPlaceholder set).
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

// ChannelChart: one value per channel (e.g. max |w| per output channel) as a line, optionally
// with a second line over the same channels (a what-if beside the run: before / after), both
// named with their colours in the title (one line, where a legend would take another).
class ChannelChart : public PlaceholderChartView {
    Q_OBJECT
public:
    ChannelChart(const QString& title, const QString& xTitle, const QString& yTitle, QWidget* parent = nullptr);
    // Empty values show the placeholder "Select a tensor"; values replace any placeholder.
    void setValues(const std::vector<float>& values);
    // The second line (`name`) with the first renamed `baseName`; empty values remove it.
    void setCompareValues(const std::vector<float>& values, const QString& baseName, const QString& name);
    QLineSeries* series() const { return m_series; }
    QLineSeries* compareSeries() const { return m_compare; }

private:
    void updateRange();

    QString m_title;
    QLineSeries* m_series;
    QLineSeries* m_compare;
    QValueAxis* m_x;
    QValueAxis* m_y;
    double m_maxBase = 0, m_maxCompare = 0;
    std::size_t m_count = 0;
};

} // namespace qb::ui
