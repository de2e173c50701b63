#include "charts/loss_chart.h"

#include <QLineSeries>
#include <QPen>
#include <QValueAxis>

#include <algorithm>
#include <cmath>
#include <limits>

namespace qb::ui {

LossCurveChart::LossCurveChart(QWidget* parent)
    : QChartView(parent), m_loss(new QLineSeries), m_lr(new QLineSeries), m_baseline(new QLineSeries),
      m_x(new QValueAxis), m_y(new QValueAxis), m_yLr(new QValueAxis),
      m_before(std::numeric_limits<double>::quiet_NaN())
{
    setRenderHint(QPainter::Antialiasing);
    auto* c = chart();
    c->setTitle(tr("Training loss per step"));
    setAccessibleName(tr("Distillation loss per step"));
    m_loss->setName(tr("loss (batch)"));
    m_lr->setName(tr("learning rate"));
    m_baseline->setName(tr("loss before (all windows)"));
    QPen lossPen(QColor(0x1f, 0x77, 0xb4));
    lossPen.setWidthF(2.0);
    m_loss->setPen(lossPen);
    QPen lrPen(QColor(0xff, 0x7f, 0x0e));
    lrPen.setStyle(Qt::DashLine);
    lrPen.setWidthF(1.2);
    m_lr->setPen(lrPen);
    QPen basePen(QColor(0x7f, 0x7f, 0x7f));
    basePen.setStyle(Qt::DotLine);
    basePen.setWidthF(1.5);
    m_baseline->setPen(basePen);
    c->addSeries(m_loss);
    c->addSeries(m_baseline);
    c->addSeries(m_lr);
    m_x->setTitleText(tr("step"));
    m_x->setLabelFormat(QStringLiteral("%d"));
    m_y->setTitleText(tr("loss"));
    m_y->setLabelFormat(QStringLiteral("%.3g"));
    m_y->setMinorTickCount(1);
    m_yLr->setTitleText(tr("learning rate"));
    m_yLr->setLabelFormat(QStringLiteral("%.1e"));
    c->addAxis(m_x, Qt::AlignBottom);
    c->addAxis(m_y, Qt::AlignLeft);
    c->addAxis(m_yLr, Qt::AlignRight);
    for (QLineSeries* s : {m_loss, m_baseline}) {
        s->attachAxis(m_x);
        s->attachAxis(m_y);
    }
    m_lr->attachAxis(m_x);
    m_lr->attachAxis(m_yLr);
    c->legend()->setAlignment(Qt::AlignTop);
    setMinimumHeight(220);
    updateRanges();
}

void LossCurveChart::clear()
{
    m_loss->clear();
    m_lr->clear();
    m_baseline->clear();
    m_before = std::numeric_limits<double>::quiet_NaN();
    m_steps = 1;
    updateRanges();
}

void LossCurveChart::setCurve(const QList<double>& loss, const QList<double>& lr, int steps, const QString& what)
{
    m_steps = std::max(1, steps);
    chart()->setTitle(tr("Training loss per step (%1)").arg(what));
    QList<QPointF> lp, rp;
    lp.reserve(loss.size());
    rp.reserve(lr.size());
    for (qsizetype i = 0; i < loss.size(); ++i)
        lp.append({double(i + 1), loss[i]});
    for (qsizetype i = 0; i < lr.size(); ++i)
        rp.append({double(i + 1), lr[i]});
    m_loss->replace(lp);
    m_lr->replace(rp);
    setBaseline(m_before);
}

void LossCurveChart::setBaseline(double lossBefore)
{
    m_before = lossBefore;
    if (std::isfinite(lossBefore)) m_baseline->replace({QPointF(0, lossBefore), QPointF(m_steps, lossBefore)});
    else m_baseline->clear();
    updateRanges();
}

void LossCurveChart::updateRanges()
{
    // The step axis grows with the curve (a long run stays readable from its first steps) up to
    // the planned steps; whole steps, a 1-2-5 interval with at most 10 intervals, anchored at 0
    // (the interval first: a wide range with the old, small one would lay out one tick per step).
    const int span = std::max(1, std::min(m_steps, std::max(10, int(std::ceil(1.25 * double(m_loss->count()))))));
    double interval = 1;
    for (double decade = 1;; decade *= 10) {
        const double pick[] = {1 * decade, 2 * decade, 5 * decade};
        const auto it = std::find_if(std::begin(pick), std::end(pick), [&](double v) { return span / v <= 10; });
        if (it != std::end(pick)) {
            interval = *it;
            break;
        }
    }
    m_x->setTickType(QValueAxis::TicksDynamic);
    m_x->setTickAnchor(0);
    m_x->setTickInterval(interval);
    m_x->setRange(0, span);
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const QPointF& p : m_loss->points()) {
        lo = std::min(lo, p.y());
        hi = std::max(hi, p.y());
    }
    if (std::isfinite(m_before)) {
        lo = std::min(lo, m_before);
        hi = std::max(hi, m_before);
    }
    if (!(hi >= lo)) lo = 0, hi = 1;
    const double pad = std::max(1e-6, 0.08 * (hi - lo));
    m_y->setRange(std::max(0.0, lo - pad), hi + pad);
    m_y->applyNiceNumbers();
    double lrMax = 0;
    for (const QPointF& p : m_lr->points())
        lrMax = std::max(lrMax, p.y());
    m_yLr->setRange(0, lrMax > 0 ? lrMax * 1.1 : 1e-3);
}

} // namespace qb::ui
