#include "widgets/lab_cell_view.h"

#include "charts/histogram_chart.h"
#include "tasks/job_runner.h"
#include "widgets/job_status.h"

#include <QAbstractAxis>
#include <QChart>
#include <QComboBox>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLogValueAxis>
#include <QSpinBox>
#include <QTimer>
#include <QLineSeries>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>
#include <cmath>

namespace qb::ui {

void setLabVerticalRange(QChartView* view, double lo, double hi)
{
    for (QAbstractAxis* a : view->chart()->axes(Qt::Vertical)) {
        if (auto* log = qobject_cast<QLogValueAxis*>(a)) {
            log->setBase(100); // a label every two decades: small charts keep their labels
            log->setRange(0.5, std::max(hi, 1.0));
        } else {
            a->setRange(lo, hi);
        }
    }
}

void compactLabChart(QChartView* view)
{
    QChart* c = view->chart();
    c->setMargins(QMargins(2, 2, 2, 2));
    c->setBackgroundRoundness(0);
    QFont title = c->titleFont();
    title.setPointSizeF(title.pointSizeF() * 0.9);
    c->setTitleFont(title);
    for (QAbstractAxis* a : c->axes()) {
        a->setTitleVisible(false);
        QFont f = a->labelsFont();
        f.setPointSizeF(f.pointSizeF() * 0.8);
        a->setLabelsFont(f);
    }
}

LabCellView::LabCellView(JobRunner* runner, JobStatus* status, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_status(status), m_channel(new QSpinBox), m_show(new QComboBox),
      m_summary(new QLabel), m_grid(new QGridLayout), m_debounce(new QTimer(this))
{
    setObjectName(QStringLiteral("labCellView"));
    m_channel->setObjectName(QStringLiteral("labCellChannel"));
    m_show->setObjectName(QStringLiteral("labCellShow"));
    m_channel->setRange(0, 0);
    m_channel->setToolTip(tr("Channel (a coordinate of the rotated basis in rotated stages) whose values are placed "
                             "in the cells of the per-token activation quantizer"));
    m_show->addItem(tr("position in the cell"), int(Show::Positions));
    m_show->addItem(tr("centroid − midpoint per level"), int(Show::Offsets));
    m_show->setToolTip(tr("Where the channel's values sit inside their quantization cells (½: the midpoint a uniform "
                          "quantizer reconstructs at), or per level how far the data's centroid (Lloyd–Max's level) "
                          "is from the midpoint, in cell units"));
    m_summary->setWordWrap(true);
    m_summary->setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Minimum);
    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Within-cell, channel:")));
    controls->addWidget(m_channel);
    controls->addWidget(new QLabel(tr("Show:")));
    controls->addWidget(m_show);
    controls->addWidget(m_summary, 1);
    m_grid->setContentsMargins(0, 0, 0, 0);
    m_grid->setSpacing(2);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(controls);
    layout->addLayout(m_grid, 1);
    m_debounce->setSingleShot(true);
    m_debounce->setInterval(250);
    connect(m_debounce, &QTimer::timeout, this, &LabCellView::refresh);
    connect(m_channel, &QSpinBox::valueChanged, this, [this] {
        if (m_result && m_result->capture) m_debounce->start();
    });
    connect(m_show, &QComboBox::currentIndexChanged, this, &LabCellView::display);
    setResult(nullptr);
}

int LabCellView::channel() const { return m_channel->value(); }

QString LabCellView::summaryText() const { return m_summary->text(); }

void LabCellView::setResult(std::shared_ptr<const pipeline::LabResult> result)
{
    m_result = std::move(result);
    m_stats.clear();
    if (m_result) {
        const QSignalBlocker block(m_channel); // the result already holds this channel's numbers
        m_channel->setRange(0, std::max<int>(0, int(m_result->channels) - 1));
        if (m_result->cellChannel >= 0) m_channel->setValue(m_result->cellChannel);
        if (m_result->quant.enabled() && m_result->cellChannel >= 0)
            for (const auto& s : m_result->stages)
                m_stats.push_back(s.channelCells);
    }
    display();
}

void LabCellView::refresh()
{
    if (!m_result || !m_result->capture || !m_result->quant.enabled()) return;
    if (m_running) return; // the finishing job looks at the spin box again
    if (m_status->isBusy()) {
        m_summary->setText(
            tr("Another job is running: the within-cell view is redone when the channel changes again."));
        Q_EMIT cellsUpdated(false, tr("another job is running"));
        return;
    }
    const int channel = m_channel->value();
    auto result = m_result;
    m_running = true;
    // The summary keeps its height until the result is in: "Computing channel 40 …" may take one
    // line fewer than the result, and a change of the row's height resized and repainted every
    // chart of the lab on the GUI thread, twice per channel switch (15-65 ms).
    m_summary->setMinimumHeight(m_summary->height());
    m_summary->setText(tr("Computing channel %1 …").arg(channel));
    m_runner->start<std::vector<pipeline::WithinCellStats>>(
        this, tr("Within-cell, channel %1").arg(channel),
        [result, channel](RunContext& ctx) { return pipeline::labWithinCell(*result, channel, &ctx); },
        [this, result, channel](const JobOutcome<std::vector<pipeline::WithinCellStats>>& outcome) {
            m_running = false;
            m_summary->setMinimumHeight(0);
            if (result != m_result) return; // a new lab run replaced the result meanwhile
            if (!outcome.ok()) {
                const bool cancelled = outcome.error->code == ErrorCode::Cancelled;
                const QString msg = cancelled ? tr("cancelled") : QString::fromStdString(outcome.error->toString());
                m_summary->setText(tr("Within-cell view: %1").arg(msg));
                Q_EMIT cellsUpdated(false, msg);
                return;
            }
            m_stats = *outcome.value;
            display();
            Q_EMIT cellsUpdated(true, tr("channel %1").arg(channel));
            if (m_channel->value() != channel) m_debounce->start(); // changed while running
        });
}

void LabCellView::clearCharts()
{
    for (auto* h : m_positions)
        delete h;
    for (auto* c : m_offsets)
        delete c;
    for (int col = 0; col < m_grid->columnCount(); ++col)
        m_grid->setColumnStretch(col, 0);
    m_positions.clear();
    m_offsets.clear();
}

void LabCellView::display()
{
    const bool positions = Show(m_show->currentData().toInt()) == Show::Positions;
    // The same columns of the same kind (another channel): the charts are refilled, not rebuilt
    // (building chart views is the costly part of a redraw on the GUI thread).
    const std::size_t have = positions ? m_positions.size() : m_offsets.size();
    const bool reuse = m_result && have == m_result->stages.size() && have == m_stats.size() &&
                       (positions ? m_offsets.empty() : m_positions.empty());
    if (!reuse) clearCharts();
    if (!m_result) {
        m_summary->setText(tr("Run the lab to see where a channel's values sit inside the quantization cells."));
        return;
    }
    if (!m_result->quant.enabled()) {
        m_summary->setText(tr("Activations unquantized: no cells to look into."));
        return;
    }
    if (m_stats.size() != m_result->stages.size()) {
        m_summary->setText(tr("Pick a channel."));
        return;
    }
    const int channel = m_stats.front().channel;
    m_summary->setText(tr("Channel %1 in the A%2 per-token cells. r: MSE at the midpoints / MSE at the centroids (1: "
                          "uniform inside the cells); Δ: mean |centroid − midpoint|, in cells.")
                           .arg(channel)
                           .arg(m_result->quant.bits));
    std::int64_t maxCount = 1;
    for (const auto& st : m_stats)
        for (auto c : st.positions)
            maxCount = std::max(maxCount, c);
    for (std::size_t i = 0; i < m_stats.size(); ++i) {
        const auto& st = m_stats[i];
        const QString title = st.empty()
                                  ? tr("no values in cells")
                                  : tr("r %1 · Δ %2").arg(st.mseRatio, 0, 'f', 3).arg(st.meanAbsOffset, 0, 'f', 3);
        const QString tip = tr("%1: %2 values in cells, %3 clipped; MSE midpoint %4, centroid %5 (cell units²)")
                                .arg(QString::fromStdString(m_result->stages[i].label))
                                .arg(st.values)
                                .arg(st.clipped)
                                .arg(st.mseMidpoint, 0, 'g', 4)
                                .arg(st.mseCentroid, 0, 'g', 4);
        QChartView* view = nullptr;
        if (positions) { // only the charts on show are built: fewer views, a shorter GUI-thread step
            auto* h = reuse ? m_positions[i] : new HistogramChart(title, tr("position in the cell"));
            eval::Histogram hist;
            hist.lo = 0;
            hist.hi = 1;
            hist.counts = st.positions;
            if (!reuse) compactLabChart(h);
            h->chart()->setTitle(title);
            h->setHistogram(hist);
            setLabVerticalRange(h, 0, double(maxCount) * 1.1);
            for (QAbstractAxis* a : h->chart()->axes(Qt::Horizontal))
                if (auto* x = qobject_cast<QValueAxis*>(a)) { // 0, ½, 1: labels that fit a small chart
                    x->setTickCount(3);
                    x->setLabelFormat(QStringLiteral("%.1f"));
                }
            if (!reuse) m_positions.push_back(h);
            view = h;
        } else {
            std::vector<float> offsets(st.centroidOffset.begin(), st.centroidOffset.end());
            auto* c = reuse ? m_offsets[i] : new ChannelChart(title, tr("level"), QString());
            if (!reuse) compactLabChart(c);
            c->chart()->setTitle(title);
            c->setValues(offsets);
            QList<QPointF> occupied; // empty levels have no centroid: left out, not drawn at 0
            for (std::size_t k = 0; k < offsets.size(); ++k)
                if (st.cellCount[k] > 0) occupied.append({double(k), double(offsets[k])});
            c->series()->replace(occupied);
            for (QAbstractAxis* a : c->chart()->axes(Qt::Horizontal))
                if (auto* x = qobject_cast<QValueAxis*>(a)) x->setTickCount(3); // first, middle, last level
            setLabVerticalRange(c, -0.5, 0.5);
            if (!reuse) m_offsets.push_back(c);
            view = c;
        }
        view->setToolTip(tip);
        if (reuse) continue;
        view->setMinimumHeight(110);
        m_grid->setColumnStretch(int(i), 1);
        m_grid->addWidget(view, 0, int(i));
        view->show();
    }
}

} // namespace qb::ui
