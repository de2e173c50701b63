#include "widgets/weights_panel.h"

#include "charts/histogram_chart.h"
#include "tasks/job_runner.h"

#include <QCheckBox>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QSpinBox>
#include <QSplitter>
#include <QVBoxLayout>

namespace qb::ui {

WeightsPanel::WeightsPanel(JobRunner* runner, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_title(new QLabel(tr("Select a tensor in the model explorer."))),
      m_stats(new QLabel), m_bins(new QSpinBox), m_log(new QCheckBox(tr("Log counts"))),
      m_hist(new HistogramChart(tr("Weight histogram"), tr("weight value"))),
      m_outChannels(new ChannelChart(tr("Max |w| per output channel"), tr("output channel (row)"), tr("max |w|"))),
      m_inChannels(new ChannelChart(tr("Max |w| per input channel"), tr("input channel (column)"), tr("max |w|")))
{
    setObjectName(QStringLiteral("weightsPanel"));
    m_title->setObjectName(QStringLiteral("weightsTitle"));
    QFont f = m_title->font();
    f.setBold(true);
    m_title->setFont(f);
    m_stats->setObjectName(QStringLiteral("weightsStats"));
    m_stats->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_stats->setWordWrap(true);
    m_bins->setRange(8, 1024);
    m_bins->setValue(128);
    m_bins->setSuffix(tr(" bins"));
    m_bins->setObjectName(QStringLiteral("weightsBins"));
    m_log->setObjectName(QStringLiteral("weightsLog"));

    auto* controls = new QHBoxLayout;
    controls->addWidget(m_title, 1);
    controls->addWidget(m_bins);
    controls->addWidget(m_log);

    auto* channels = new QSplitter(Qt::Horizontal);
    channels->setObjectName(QStringLiteral("weightsChannelSplit")); // MainWindow remembers its state
    channels->addWidget(m_outChannels);
    channels->addWidget(m_inChannels);
    auto* split = new QSplitter(Qt::Vertical);
    split->setObjectName(QStringLiteral("weightsSplit"));
    split->addWidget(m_hist);
    split->addWidget(channels);
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 2);

    auto* layout = new QVBoxLayout(this);
    layout->addLayout(controls);
    layout->addWidget(m_stats);
    layout->addWidget(split, 1);

    connect(m_bins, &QSpinBox::valueChanged, this, [this] { recompute(); });
    connect(m_log, &QCheckBox::toggled, m_hist, &HistogramChart::setLogCounts);
}

void WeightsPanel::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
    m_tensor.clear();
    m_snapshot.reset();
    ++m_generation;
    m_title->setText(tr("Select a tensor in the model explorer."));
    m_stats->clear();
    m_hist->setHistogram({});
    m_outChannels->setValues({});
    m_inChannels->setValues({});
}

void WeightsPanel::showTensor(const QString& name)
{
    m_tensor = name;
    recompute();
}

QString WeightsPanel::statsText() const { return m_stats->text(); }

void WeightsPanel::recompute()
{
    if (!m_checkpoint || m_tensor.isEmpty()) return;
    const TensorInfo* info = m_checkpoint->find(m_tensor.toStdString());
    if (!info) return;
    m_title->setText(tr("%1  %2").arg(m_tensor, QString::fromStdString(info->shapeString())));
    const int generation = ++m_generation;
    const int bins = m_bins->value();
    auto checkpoint = m_checkpoint; // keeps the mapping alive while the job runs
    const QString tensor = m_tensor;
    m_runner->start<WeightStatsSnapshot>(
        this, QString(), // quick: no status-strip entry

        [checkpoint, info, bins, tensor](RunContext& ctx) -> Result<WeightStatsSnapshot> {
            ctx.beginStage("statistics", 2, tensor.toStdString());
            const auto rows = info->rows();
            const auto cols = info->cols();
            eval::TensorStats stats;
            try {
                Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> w(rows, cols);
                QB_TRY_STATUS(io::readTensorF32(*info, w.data()));
                ctx.advance();
                if (ctx.isCancelled()) return RunContext::cancelledError(tensor.toStdString());
                stats = eval::computeTensorStats(w, bins);
            } catch (const std::bad_alloc&) {
                return makeError(ErrorCode::OutOfMemory, "not enough memory for tensor", info->name);
            }
            ctx.advance();
            return WeightStatsSnapshot{tensor, info->shape, std::move(stats)};
        },
        [this, generation](const JobOutcome<WeightStatsSnapshot>& outcome) {
            if (generation != m_generation) return; // a newer selection superseded this one
            if (!outcome.ok()) {
                if (outcome.error->code == ErrorCode::Cancelled) return;
                m_stats->setText(tr("Cannot read tensor: %1").arg(QString::fromStdString(outcome.error->toString())));
                return;
            }
            m_snapshot = outcome.value;
            display();
            Q_EMIT statsReady(m_snapshot->tensor);
        });
}

void WeightsPanel::display()
{
    const auto& s = m_snapshot->stats;
    const auto& m = s.moments;
    auto top = [](const std::vector<float>& v) {
        QStringList parts;
        for (int i : eval::topIndices(v, 5))
            parts << QStringLiteral("%1 (%2)").arg(i).arg(double(v[std::size_t(i)]), 0, 'g', 4);
        return parts.join(QStringLiteral(", "));
    };
    QString text = tr("min %1   max %2   mean %3   std %4   kurtosis %5")
                       .arg(m.min, 0, 'g', 5)
                       .arg(m.max, 0, 'g', 5)
                       .arg(m.mean, 0, 'g', 5)
                       .arg(m.std, 0, 'g', 5)
                       .arg(m.kurtosis, 0, 'f', 2);
    if (m.nonFinite > 0) text += tr("   <b>%1 non-finite values</b>").arg(m.nonFinite);
    text += tr("<br>top output channels by max |w|: %1<br>top input channels by max |w|: %2")
                .arg(top(s.rowMaxAbs), top(s.colMaxAbs));
    m_stats->setText(text);
    m_hist->setHistogram(s.histogram);
    m_outChannels->setValues(s.rowMaxAbs);
    m_inChannels->setValues(s.colMaxAbs);
    if (m_snapshot->shape.size() < 2) { // norm gains, biases: one value per channel, no inputs
        m_outChannels->setPlaceholder(tr("Per-output-channel maxima do not apply to a 1-D tensor"));
        m_inChannels->setPlaceholder(tr("Per-input-channel maxima do not apply to a 1-D tensor"));
    }
}

} // namespace qb::ui
