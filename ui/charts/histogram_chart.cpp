#include "charts/histogram_chart.h"

#include <QGraphicsSimpleTextItem>
#include <QAbstractAxis>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QValueAxis>

#include <algorithm>

namespace qb::ui {

namespace {
const char* const kSelectTensor = QT_TRANSLATE_NOOP("qb::ui::PlaceholderChartView", "Select a tensor");
}

PlaceholderChartView::PlaceholderChartView(QWidget* parent)
    : QChartView(parent), m_placeholder(new QGraphicsSimpleTextItem(chart()))
{
    m_placeholder->setBrush(palette().color(QPalette::PlaceholderText));
    m_placeholder->hide();
}

void PlaceholderChartView::setPlaceholder(const QString& text)
{
    m_placeholderText = text;
    for (QAbstractAxis* a : chart()->axes())
        a->setVisible(text.isEmpty());
    m_placeholder->setText(text);
    m_placeholder->setVisible(!text.isEmpty());
    placeText();
}

void PlaceholderChartView::resizeEvent(QResizeEvent* e)
{
    QChartView::resizeEvent(e);
    placeText();
}

void PlaceholderChartView::placeText()
{
    if (m_placeholderText.isEmpty()) return;
    const QRectF area = chart()->plotArea().isEmpty() ? chart()->rect() : chart()->plotArea();
    const QRectF box = m_placeholder->boundingRect();
    m_placeholder->setPos(area.center() - QPointF(box.width() / 2, box.height() / 2));
}

HistogramChart::HistogramChart(const QString& title, const QString& xTitle, QWidget* parent)
    : PlaceholderChartView(parent), m_series(new QLineSeries), m_x(new QValueAxis), m_yLinear(new QValueAxis),
      m_yLog(new QLogValueAxis(this)) // owned by the view while it is not in the chart
{
    setRenderHint(QPainter::Antialiasing);
    auto* c = chart();
    c->setTitle(title);
    // Screen readers name the view by its title (titles change; the first one says what it shows).
    setAccessibleName(title.isEmpty() ? tr("Histogram of %1").arg(xTitle) : title);
    c->legend()->hide();
    c->addSeries(m_series);
    m_x->setTitleText(xTitle);
    m_yLinear->setTitleText(tr("count"));
    m_yLog->setTitleText(tr("count (log)"));
    m_yLog->setBase(10);
    m_yLog->setLabelFormat(QStringLiteral("%g"));
    m_yLinear->setLabelFormat(QStringLiteral("%d"));
    c->addAxis(m_x, Qt::AlignBottom);
    c->addAxis(m_yLinear, Qt::AlignLeft);
    m_series->attachAxis(m_x);
    m_series->attachAxis(m_yLinear);
    setMinimumHeight(220);
    setPlaceholder(tr(kSelectTensor));
}

void HistogramChart::setHistogram(const eval::Histogram& h)
{
    m_hist = h;
    rebuild();
    setPlaceholder(h.counts.empty() ? tr(kSelectTensor) : QString());
}

void HistogramChart::setLogCounts(bool on)
{
    if (on == m_log) return;
    m_log = on;
    auto* c = chart();
    QAbstractAxis* from = on ? static_cast<QAbstractAxis*>(m_yLinear) : m_yLog;
    QAbstractAxis* to = on ? static_cast<QAbstractAxis*>(m_yLog) : m_yLinear;
    m_series->detachAxis(from);
    c->removeAxis(from);
    from->setParent(this); // removeAxis releases ownership; addAxis takes it again
    c->addAxis(to, Qt::AlignLeft);
    m_series->attachAxis(to);
    rebuild();
}

std::vector<double> HistogramChart::plottedCounts() const
{
    // Two points per bin (left and right edge at the bin's height).
    std::vector<double> out;
    const auto pts = m_series->points();
    for (qsizetype i = 0; i + 1 < pts.size(); i += 2)
        out.push_back(pts[i].y());
    return out;
}

void HistogramChart::rebuild()
{
    QList<QPointF> pts;
    pts.reserve(qsizetype(m_hist.counts.size() * 2));
    const double floorLog = 0.5; // zero counts cannot sit on a log axis
    double maxCount = 1;
    for (std::size_t i = 0; i < m_hist.counts.size(); ++i) {
        const double x0 = m_hist.lo + double(i) * m_hist.binWidth();
        const double x1 = x0 + m_hist.binWidth();
        double y = double(m_hist.counts[i]);
        if (m_log) y = std::max(y, floorLog);
        maxCount = std::max(maxCount, y);
        pts.append({x0, y});
        pts.append({x1, y});
    }
    m_series->replace(pts); // one call, never point by point
    if (!m_hist.counts.empty()) m_x->setRange(m_hist.lo, m_hist.hi);
    if (m_log) m_yLog->setRange(floorLog, maxCount * 1.5);
    else m_yLinear->setRange(0, maxCount * 1.05);
}

ChannelChart::ChannelChart(const QString& title, const QString& xTitle, const QString& yTitle, QWidget* parent)
    : PlaceholderChartView(parent), m_title(title), m_series(new QLineSeries), m_compare(new QLineSeries),
      m_x(new QValueAxis), m_y(new QValueAxis)
{
    setRenderHint(QPainter::Antialiasing);
    auto* c = chart();
    c->setTitle(title);
    setAccessibleName(title.isEmpty() ? tr("%1 per %2").arg(yTitle.isEmpty() ? tr("value") : yTitle, xTitle) : title);
    c->legend()->hide();
    c->addSeries(m_series);
    QPen comparePen(QColor(220, 80, 40));
    comparePen.setWidthF(1.2);
    m_compare->setPen(comparePen);
    c->addSeries(m_compare);
    m_x->setTitleText(xTitle);
    m_x->setLabelFormat(QStringLiteral("%d"));
    m_y->setTitleText(yTitle);
    c->addAxis(m_x, Qt::AlignBottom);
    c->addAxis(m_y, Qt::AlignLeft);
    for (QLineSeries* s : {m_series, m_compare}) {
        s->attachAxis(m_x);
        s->attachAxis(m_y);
    }
    setMinimumHeight(180);
    setPlaceholder(tr(kSelectTensor));
}

namespace {
QList<QPointF> channelPoints(const std::vector<float>& values, double& maxV)
{
    QList<QPointF> pts;
    pts.reserve(qsizetype(values.size()));
    maxV = 0;
    for (std::size_t i = 0; i < values.size(); ++i) {
        pts.append({double(i), double(values[i])});
        maxV = std::max(maxV, double(values[i]));
    }
    return pts;
}
} // namespace

void ChannelChart::setValues(const std::vector<float>& values)
{
    m_series->replace(channelPoints(values, m_maxBase));
    m_count = values.size();
    updateRange();
    setPlaceholder(values.empty() ? tr(kSelectTensor) : QString());
}

void ChannelChart::setCompareValues(const std::vector<float>& values, const QString& baseName, const QString& name)
{
    m_compare->replace(channelPoints(values, m_maxCompare));
    m_series->setName(baseName);
    m_compare->setName(name);
    QString title = m_title;
    if (!values.empty()) {
        auto key = [](const QColor& c, const QString& text) {
            return QStringLiteral("<span style='color:%1'>&#9632;</span> %2").arg(c.name(), text.toHtmlEscaped());
        };
        // On a line of their own: beside the title they were elided at 1280x800, where the
        // what-if's two charts share the width.
        title += QStringLiteral("<br>") + key(m_series->color(), baseName) + QStringLiteral(" ") +
                 key(m_compare->color(), name);
    }
    chart()->setTitle(title);
    updateRange();
}

void ChannelChart::updateRange()
{
    const std::size_t n = std::max<std::size_t>(m_count, std::size_t(m_compare->count()));
    m_x->setRange(0, std::max<double>(1, double(n) - 1));
    const double maxV = std::max(m_maxBase, m_compare->count() ? m_maxCompare : 0.0);
    m_y->setRange(0, maxV > 0 ? maxV * 1.05 : 1.0);
}

} // namespace qb::ui
