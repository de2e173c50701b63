#include "charts/quant_charts.h"

#include <QBarCategoryAxis>
#include <QBarSeries>
#include <QBarSet>
#include <QLegend>
#include <QLegendMarker>
#include <QLineSeries>
#include <QMouseEvent>
#include <QScatterSeries>
#include <QValueAxis>

#include <algorithm>
#include <numeric>

namespace qb::ui {

namespace {
QList<QPointF> stepOutline(const eval::Histogram& h, double& maxCount)
{
    QList<QPointF> pts;
    pts.reserve(qsizetype(h.counts.size() * 2));
    for (std::size_t i = 0; i < h.counts.size(); ++i) {
        const double x0 = h.lo + double(i) * h.binWidth();
        const double y = double(h.counts[i]);
        maxCount = std::max(maxCount, y);
        pts.append({x0, y});
        pts.append({x0 + h.binWidth(), y});
    }
    return pts;
}
} // namespace

LayerErrorChart::LayerErrorChart(const QString& title, QWidget* parent)
    : QChartView(parent), m_title(title), m_series(new QBarSeries), m_x(new QBarCategoryAxis), m_y(new QValueAxis)
{
    setRenderHint(QPainter::Antialiasing);
    auto* c = chart();
    c->setTitle(title);
    setAccessibleName(title);
    c->addSeries(m_series);
    m_x->setTitleText(tr("decoder layer"));
    m_y->setTitleText(tr("rel. error"));
    m_y->setLabelFormat(QStringLiteral("%.3f"));
    c->addAxis(m_x, Qt::AlignBottom);
    c->addAxis(m_y, Qt::AlignLeft);
    m_series->attachAxis(m_x);
    m_series->attachAxis(m_y);
    c->legend()->setAlignment(Qt::AlignTop);
    setMinimumHeight(200);
}

void LayerErrorChart::setRuns(const QStringList& names, const std::vector<std::vector<double>>& values, bool weighted)
{
    m_weighting = weighted ? tr("param-weighted") : tr("plain");
    setToolTip(weighted ? tr("Each layer's relative output error: its tensors' errors weighted by their parameter "
                             "counts, so large tensors (the MLP) count as much as they hold")
                        : tr("Each layer's relative output error: the plain mean over its tensors (the tensor "
                             "shapes are not known without the model)"));
    m_series->clear();
    std::size_t layers = 0;
    double maxV = 0;
    int worst = -1;
    for (const auto& v : values)
        layers = std::max(layers, v.size());
    for (std::size_t r = 0; r < values.size(); ++r) {
        auto* set = new QBarSet(r < std::size_t(names.size()) ? names[qsizetype(r)] : QString());
        QList<qreal> list;
        list.reserve(qsizetype(layers));
        for (std::size_t l = 0; l < layers; ++l) {
            const double v = l < values[r].size() ? values[r][l] : 0.0;
            list.append(v);
            if (v > maxV) {
                maxV = v;
                worst = int(l);
            }
        }
        set->append(list); // one call per set
        m_series->append(set);
    }
    QStringList cats;
    for (std::size_t l = 0; l < layers; ++l)
        cats << QString::number(l);
    m_x->setCategories(cats);
    // The legend of a bar series refilled in place does not always lay out again (Qt 6.4), so
    // the run names and their colours go into the title.
    QStringList keys;
    const auto sets = m_series->barSets();
    for (qsizetype i = 0; i < sets.size(); ++i)
        keys << QStringLiteral("<span style='color:%1'>&#9632;</span> %2")
                    .arg(sets[i]->color().name(), sets[i]->label().toHtmlEscaped());
    chart()->legend()->hide();
    m_y->setRange(0, maxV > 0 ? maxV * 1.1 : 1.0);
    // Short lines: the results view gives this chart a narrow column (about 225 px at
    // 1280x800), and a title line too long for it is elided whole.
    QString title = m_title;
    if (worst >= 0) title += QStringLiteral("<br>") + tr("worst: layer %1").arg(worst);
    title += QStringLiteral("<br>") + tr("%1 mean").arg(m_weighting);
    if (!keys.isEmpty()) title += QStringLiteral("<br>") + keys.join(QStringLiteral("&nbsp;&nbsp;"));
    chart()->setTitle(title);
}

std::vector<double> LayerErrorChart::plotted(int set) const
{
    std::vector<double> out;
    const auto sets = m_series->barSets();
    if (set < 0 || set >= sets.size()) return out;
    for (qsizetype i = 0; i < sets[set]->count(); ++i)
        out.push_back(sets[set]->at(i));
    return out;
}

QuantHistogramChart::QuantHistogramChart(QWidget* parent)
    : QChartView(parent), m_before(new QLineSeries), m_after(new QLineSeries), m_grid(new QLineSeries),
      m_x(new QValueAxis), m_y(new QValueAxis)
{
    setRenderHint(QPainter::Antialiasing);
    auto* c = chart();
    c->setTitle(tr("Weights before / after, grid of row 0 group 0"));
    setAccessibleName(tr("Weights before and after quantization"));
    m_before->setName(tr("original"));
    m_after->setName(tr("quantized"));
    m_grid->setName(tr("grid levels"));
    QPen gridPen(QColor(120, 120, 120, 140));
    gridPen.setWidthF(1.0);
    gridPen.setStyle(Qt::DashLine);
    m_grid->setPen(gridPen);
    QPen afterPen(QColor(220, 80, 40));
    afterPen.setWidthF(1.5);
    m_after->setPen(afterPen);
    for (auto* s : {m_grid, m_before, m_after})
        c->addSeries(s);
    m_x->setTitleText(tr("weight value"));
    m_y->setTitleText(tr("count"));
    m_y->setLabelFormat(QStringLiteral("%d"));
    c->addAxis(m_x, Qt::AlignBottom);
    c->addAxis(m_y, Qt::AlignLeft);
    for (auto* s : {m_grid, m_before, m_after}) {
        s->attachAxis(m_x);
        s->attachAxis(m_y);
    }
    c->legend()->setAlignment(Qt::AlignTop);
    setMinimumHeight(200);
}

void QuantHistogramChart::setData(const eval::Histogram& before, const eval::Histogram& after,
                                  const std::vector<double>& gridLevels)
{
    double maxCount = 1;
    m_before->replace(stepOutline(before, maxCount));
    m_after->replace(stepOutline(after, maxCount));
    const double top = maxCount * 1.05;
    // A comb: up and down at every level, joined along the baseline.
    QList<QPointF> comb;
    comb.reserve(qsizetype(gridLevels.size() * 3));
    for (double g : gridLevels)
        comb << QPointF(g, 0) << QPointF(g, top) << QPointF(g, 0);
    m_grid->replace(comb);
    double lo = std::min(before.lo, after.lo), hi = std::max(before.hi, after.hi);
    for (double g : gridLevels) {
        lo = std::min(lo, g);
        hi = std::max(hi, g);
    }
    if (hi > lo) m_x->setRange(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo));
    m_y->setRange(0, top);
}

CmpqChannelMapChart::CmpqChannelMapChart(QWidget* parent)
    : QChartView(parent), m_bitsLine(new QLineSeries), m_scoreLine(new QLineSeries), m_outlierDots(new QScatterSeries),
      m_chosenLine(new QLineSeries), m_x(new QValueAxis), m_yBits(new QValueAxis), m_yScore(new QValueAxis)
{
    setRenderHint(QPainter::Antialiasing);
    setAccessibleName(tr("CMPQ channel map"));
    auto* c = chart();
    m_bitsLine->setName(tr("bits"));
    m_scoreLine->setName(tr("score"));
    m_outlierDots->setName(tr("sparse outliers"));
    m_chosenLine->setName(tr("shown channel"));
    m_bitsLine->setPen(QPen(QColor(31, 119, 180), 1.5));
    m_scoreLine->setPen(QPen(QColor(255, 127, 14), 1.0));
    m_outlierDots->setColor(QColor(214, 39, 40));
    m_outlierDots->setBorderColor(QColor(214, 39, 40));
    m_outlierDots->setMarkerSize(5);
    QPen chosen(QColor(44, 160, 44));
    chosen.setStyle(Qt::DashLine);
    chosen.setWidthF(1.5);
    m_chosenLine->setPen(chosen);
    m_x->setLabelFormat(QStringLiteral("%d"));
    m_yBits->setTitleText(tr("bits"));
    m_yScore->setTitleText(tr("score"));
    m_yBits->setLabelFormat(QStringLiteral("%d"));
    c->addAxis(m_x, Qt::AlignBottom);
    c->addAxis(m_yBits, Qt::AlignLeft);
    c->addAxis(m_yScore, Qt::AlignRight);
    for (QXYSeries* s : {static_cast<QXYSeries*>(m_bitsLine), static_cast<QXYSeries*>(m_outlierDots),
                         static_cast<QXYSeries*>(m_chosenLine)}) {
        c->addSeries(s);
        s->attachAxis(m_x);
        s->attachAxis(m_yBits);
    }
    c->addSeries(m_scoreLine);
    m_scoreLine->attachAxis(m_x);
    m_scoreLine->attachAxis(m_yScore);
    c->legend()->hide(); // the keys are in the title: the map keeps its height
    setMinimumHeight(150);
    setToolTip(tr("Click a channel to show its weights and codebook"));
}

void CmpqChannelMapChart::setData(const std::vector<int>& bits, const std::vector<float>& scores,
                                  const std::vector<int>& outliers, int chosen)
{
    m_bits = bits;
    m_scores = scores;
    m_outliers = outliers;
    m_scores.resize(m_bits.size(), 0.0f);
    m_outliers.resize(m_bits.size(), 0);
    m_chosen = chosen;
    m_order.resize(m_bits.size());
    std::iota(m_order.begin(), m_order.end(), 0);
    std::stable_sort(m_order.begin(), m_order.end(),
                     [&](int a, int b) { return m_scores[std::size_t(a)] > m_scores[std::size_t(b)]; });
    redraw();
}

void CmpqChannelMapChart::setSorted(bool sorted)
{
    if (sorted == m_sorted) return;
    m_sorted = sorted;
    redraw();
}

int CmpqChannelMapChart::channelAt(double x) const
{
    if (m_bits.empty()) return -1;
    const int i = std::clamp(int(std::lround(x)), 0, int(m_bits.size()) - 1);
    return m_sorted ? m_order[std::size_t(i)] : i;
}

void CmpqChannelMapChart::redraw()
{
    const int n = int(m_bits.size());
    int top = 1, kept = 0, outlierChannels = 0, outlierCount = 0;
    for (int b : m_bits)
        if (b < 16) top = std::max(top, b);
        else ++kept;
    const int keptRow = top + 1; // F16-kept channels are drawn one row above the highest level
    QList<QPointF> bitsPts, scorePts, dots;
    bitsPts.reserve(2 * n);
    scorePts.reserve(n);
    float scoreMax = 0;
    int chosenX = -1;
    for (int i = 0; i < n; ++i) {
        const int ch = m_sorted ? m_order[std::size_t(i)] : i;
        const int b = m_bits[std::size_t(ch)];
        const double y = b >= 16 ? keptRow : b;
        bitsPts.append(QPointF(i - 0.5, y)); // a step per channel
        bitsPts.append(QPointF(i + 0.5, y));
        scorePts.append(QPointF(i, m_scores[std::size_t(ch)]));
        scoreMax = std::max(scoreMax, m_scores[std::size_t(ch)]);
        if (const int o = m_outliers[std::size_t(ch)]; o > 0) {
            dots.append(QPointF(i, 0.3));
            ++outlierChannels;
            outlierCount += o;
        }
        if (ch == m_chosen) chosenX = i;
    }
    m_bitsLine->replace(bitsPts);
    m_scoreLine->replace(scorePts);
    m_outlierDots->replace(dots);
    m_chosenLine->replace(chosenX >= 0 ? QList<QPointF>{QPointF(chosenX, 0), QPointF(chosenX, keptRow + 1)}
                                       : QList<QPointF>{});
    m_x->setRange(-0.5, std::max(0.5, n - 0.5));
    m_x->setTitleText(m_sorted ? tr("input channels by descending score") : tr("input channel"));
    // Few ticks (the map is short): whole bits, at most four labels.
    const int steps = keptRow + 1 <= 3 ? keptRow + 1 : 3, per = (keptRow + 1 + steps - 1) / steps;
    m_yBits->setRange(0, steps * per);
    m_yBits->setTickCount(steps + 1);
    m_yScore->setRange(0, scoreMax > 0 ? double(scoreMax) * 1.05 : 1.0);
    auto key = [](const QColor& c, const QString& text) {
        return QStringLiteral("<span style='color:%1'>&#9632;</span> %2").arg(c.name(), text);
    };
    // Short: the tensor view's title holds the counts; the tooltip the details.
    QString title = key(m_bitsLine->pen().color(), tr("bits")) + QStringLiteral(" ") +
                    key(m_scoreLine->pen().color(), tr("score")) + QStringLiteral(" ") +
                    key(m_outlierDots->color(), tr("outliers"));
    if (kept) title += tr(" · F16: top row");
    chart()->setTitle(title);
    QString tip = tr("Bits per input channel (%1) beside the activation score; red: the %n channel(s) holding", nullptr,
                     outlierChannels)
                      .arg(m_sorted ? tr("sorted by score") : tr("in place"));
    tip += tr(" %n sparse outlier(s)", nullptr, outlierCount);
    if (kept) tip += tr("; %1 channel(s) kept in F16 on the top row").arg(kept);
    setToolTip(tip + tr(". Click a channel to show its weights and codebook."));
}

void CmpqChannelMapChart::mousePressEvent(QMouseEvent* event)
{
    const QPointF at = chart()->mapFromScene(mapToScene(event->position().toPoint()));
    if (event->button() == Qt::LeftButton && !m_bits.empty() && chart()->plotArea().contains(at)) {
        const QPointF v = chart()->mapToValue(at, m_bitsLine);
        if (const int ch = channelAt(v.x()); ch >= 0) Q_EMIT channelPicked(ch);
        event->accept();
        return;
    }
    QChartView::mousePressEvent(event);
}

BpwPerplexityChart::BpwPerplexityChart(QWidget* parent)
    : QChartView(parent), m_baseline(new QLineSeries), m_x(new QValueAxis), m_y(new QValueAxis)
{
    setRenderHint(QPainter::Antialiasing);
    auto* c = chart();
    c->setTitle(tr("Bits per weight vs perplexity"));
    setAccessibleName(c->title());
    QPen pen(QColor(90, 90, 90));
    pen.setStyle(Qt::DashLine);
    pen.setWidthF(1.5);
    m_baseline->setPen(pen);
    m_baseline->setParent(this); // owned by the view while not in the chart
    m_x->setTitleText(tr("bits per weight"));
    m_y->setTitleText(tr("perplexity"));
    c->addAxis(m_x, Qt::AlignBottom);
    c->addAxis(m_y, Qt::AlignLeft);
    c->legend()->setAlignment(Qt::AlignRight); // one entry per line: run names stay readable
    c->legend()->hide();
    setMinimumHeight(200);
}

void BpwPerplexityChart::setRuns(const QList<RunPoint>& runs, std::optional<double> baseline)
{
    auto* c = chart();
    for (QScatterSeries* s : std::as_const(m_runs)) {
        c->removeSeries(s);
        delete s;
    }
    m_runs.clear();
    for (const RunPoint& r : runs) {
        auto* s = new QScatterSeries;
        s->setName(r.legend);
        s->setMarkerSize(11);
        s->append(r.bitsPerWeight, r.perplexity);
        // The label is literal text (no @xPoint/@yPoint), so each point carries its run's name.
        QString label = r.label;
        s->setPointLabelsFormat(label.replace(QLatin1Char('@'), QStringLiteral("(at)")));
        s->setPointLabelsVisible(true);
        s->setPointLabelsClipping(false);
        c->addSeries(s);
        s->attachAxis(m_x);
        s->attachAxis(m_y);
        m_runs << s;
    }
    c->legend()->setVisible(!runs.isEmpty() || baseline.has_value());
    if (runs.isEmpty() && !baseline) {
        if (c->series().contains(m_baseline)) {
            c->removeSeries(m_baseline);
            m_baseline->setParent(this);
        }
        return;
    }
    double x0 = runs.isEmpty() ? 4.0 : runs[0].bitsPerWeight, x1 = x0;
    double y0 = baseline ? *baseline : runs[0].perplexity, y1 = y0;
    for (const RunPoint& r : runs) {
        x0 = std::min(x0, r.bitsPerWeight);
        x1 = std::max(x1, r.bitsPerWeight);
        y0 = std::min(y0, r.perplexity);
        y1 = std::max(y1, r.perplexity);
    }
    const double dx = std::max(0.25, 0.1 * (x1 - x0)), dy = std::max(0.05 * y1, 0.12 * (y1 - y0));
    m_x->setRange(x0 - dx, x1 + dx);
    m_y->setRange(std::max(0.0, y0 - dy), y1 + dy);
    if (baseline) {
        m_baseline->setName(tr("original %1").arg(*baseline, 0, 'f', 2));
        m_baseline->replace(QList<QPointF>{{x0 - dx, *baseline}, {x1 + dx, *baseline}});
    } else {
        m_baseline->clear();
    }
    // In the chart (and its legend) only when there is a baseline.
    const bool shown = c->series().contains(m_baseline);
    if (baseline && !shown) {
        c->addSeries(m_baseline);
        m_baseline->attachAxis(m_x);
        m_baseline->attachAxis(m_y);
    } else if (!baseline && shown) {
        c->removeSeries(m_baseline); // the chart gives up ownership: the view keeps it
        m_baseline->setParent(this);
    }
}

} // namespace qb::ui
