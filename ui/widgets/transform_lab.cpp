#include "widgets/transform_lab.h"

#include "charts/histogram_chart.h"
#include "models/lab_summary_model.h"
#include "pipeline/activation_job.h"
#include "tasks/job_runner.h"
#include "widgets/activations_panel.h"
#include "widgets/calibration_settings.h"
#include "widgets/job_status.h"
#include "widgets/lab_cell_view.h"

#include <QAbstractAxis>
#include <QChart>
#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLogValueAxis>
#include <QPushButton>
#include <QScrollBar>
#include <QSpinBox>
#include <QTabBar>
#include <QTabWidget>
#include <QTableView>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>
#include <limits>

namespace qb::ui {

namespace {

const model::LinearKind kKinds[] = {model::LinearKind::Qkv, model::LinearKind::O, model::LinearKind::GateUp,
                                    model::LinearKind::Down};

} // namespace

TransformLab::TransformLab(JobRunner* runner, JobStatus* status, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_status(status), m_layer(new QSpinBox), m_input(new QComboBox),
      m_alpha(new QDoubleSpinBox), m_bits(new QComboBox), m_wbits(new QComboBox), m_clip(new QDoubleSpinBox),
      m_hadamard(new QCheckBox(tr("Hadamard"))), m_ruquant(new QCheckBox(tr("RUQuant"))), m_metric(new QComboBox),
      m_run(new QPushButton(tr("Run lab"))),
      m_title(new QLabel(tr("Open a model, pick a linear input and run the lab."))), m_grid(new QGridLayout),
      m_summary(new LabSummaryModel(this)), m_table(new QTableView), m_cells(new LabCellView(runner, status)),
      m_bottom(new QTabWidget)
{
    setObjectName(QStringLiteral("transformLab"));
    m_layer->setObjectName(QStringLiteral("labLayer"));
    m_input->setObjectName(QStringLiteral("labInput"));
    m_alpha->setObjectName(QStringLiteral("labAlpha"));
    m_bits->setObjectName(QStringLiteral("labBits"));
    m_wbits->setObjectName(QStringLiteral("labWeightBits"));
    m_clip->setObjectName(QStringLiteral("labClip"));
    m_hadamard->setObjectName(QStringLiteral("labHadamard"));
    m_ruquant->setObjectName(QStringLiteral("labRuquant"));
    m_bottom->setObjectName(QStringLiteral("labBottomTabs"));
    m_metric->setObjectName(QStringLiteral("labMetric"));
    m_run->setObjectName(QStringLiteral("labRun"));
    m_table->setObjectName(QStringLiteral("labSummary"));
    m_input->addItem(tr("q/k/v (attention input)"), int(model::LinearKind::Qkv));
    m_input->addItem(tr("o (attention output)"), int(model::LinearKind::O));
    m_input->addItem(tr("gate/up (MLP input)"), int(model::LinearKind::GateUp));
    m_input->addItem(tr("down (MLP inner)"), int(model::LinearKind::Down));
    m_alpha->setRange(0, 1);
    m_alpha->setSingleStep(0.05);
    m_alpha->setValue(0.6);
    m_alpha->setToolTip(tr("SmoothQuant exponent α: s_j = max|x_j|^α / max|W_j|^(1−α)"));
    for (int b : {4, 6, 8})
        m_bits->addItem(tr("A%1").arg(b), b);
    m_bits->addItem(tr("off"), 0);
    m_bits->setToolTip(tr("Activation bits: per-token asymmetric dynamic Min-Max fake quantization"));
    m_wbits->addItem(tr("FP"), 0);
    for (int b : {8, 6, 4})
        m_wbits->addItem(tr("W%1").arg(b), b);
    m_wbits->setToolTip(tr("Weights in the output error: as they are (FP), or round-to-nearest per output channel "
                           "in the stage's basis (smoothing moves outliers into the weights)"));
    m_clip->setRange(0.5, 1.0);
    m_clip->setSingleStep(0.05);
    m_clip->setValue(1.0);
    m_clip->setToolTip(tr("Clip ratio of the activation range (RUQuant's lac)"));
    m_hadamard->setChecked(true);
    m_ruquant->setToolTip(tr("RUQuant's stages (block size 128): stage 1, zig-zag, stage 1 again, global Householder, "
                             "fitted on the captured input's mean per position after smoothing with α (the lab's "
                             "capture is the FP forward pass)"));
    m_metric->addItem(tr("max |x| per channel"), int(Metric::MaxAbs));
    m_metric->addItem(tr("kurtosis per channel"), int(Metric::Kurtosis));
    m_metric->addItem(tr("quant. error per channel"), int(Metric::QuantError));
    m_title->setWordWrap(true);
    m_title->setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Minimum);
    m_table->setModel(m_summary);
    m_table->setTabKeyNavigation(false); // Tab leaves the table
    m_table->verticalHeader()->hide();
    m_table->horizontalHeader()->setStretchLastSection(true);
    // The Transform description takes the room left (elided, the whole text in its tooltip) rather
    // than pushing the columns past the view.
    m_table->horizontalHeader()->setSectionResizeMode(LabSummaryModel::Transform, QHeaderView::Stretch);
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_bottom->addTab(m_table, tr("Summary"));
    m_bottom->addTab(m_cells, tr("Within-cell"));
    m_bottom->setDocumentMode(true);
    m_bottom->hide(); // until there is a result
    m_table->setWordWrap(false);
    m_table->verticalHeader()->setDefaultSectionSize(m_table->fontMetrics().height() + 8);

    // Two rows, so that the tab never widens the window (the explorer dock keeps its width).
    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Layer:")));
    controls->addWidget(m_layer);
    controls->addWidget(new QLabel(tr("Input:")));
    controls->addWidget(m_input);
    controls->addStretch(1);
    controls->addWidget(new QLabel(tr("Show:")));
    controls->addWidget(m_metric);
    controls->addWidget(m_run);
    auto* settings = new QHBoxLayout;
    settings->addWidget(new QLabel(tr("Smoothing α:")));
    settings->addWidget(m_alpha);
    settings->addWidget(new QLabel(tr("Activations:")));
    settings->addWidget(m_bits);
    settings->addWidget(new QLabel(tr("Clip:")));
    settings->addWidget(m_clip);
    settings->addWidget(new QLabel(tr("Weights:")));
    settings->addWidget(m_wbits);
    settings->addWidget(m_hadamard);
    settings->addWidget(m_ruquant);
    settings->addStretch(1);

    auto* charts = new QWidget;
    charts->setLayout(m_grid);
    m_grid->setContentsMargins(0, 0, 0, 0);
    m_grid->setSpacing(2);
    m_grid->setRowStretch(0, 1); // histograms and channel charts share the height equally
    m_grid->setRowStretch(1, 1);
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(controls);
    layout->addLayout(settings);
    layout->addWidget(m_title);
    layout->addWidget(charts, 1);
    layout->addWidget(m_bottom);
    m_run->setEnabled(false);
    connect(m_run, &QPushButton::clicked, this, &TransformLab::startLab);
    connect(m_metric, &QComboBox::currentIndexChanged, this, &TransformLab::showMetric);
    connect(m_bottom, &QTabWidget::currentChanged, this, &TransformLab::fitBottom);
}

void TransformLab::setCalibrationSettings(CalibrationSettings* settings) { m_settings = settings; }

void TransformLab::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
    m_result.reset();
    m_summary->setResult(nullptr);
    m_cells->setResult(nullptr);
    m_bottom->hide();
    clearColumns();
    m_layer->setRange(0, m_checkpoint ? std::max<int>(0, int(m_checkpoint->config.numHiddenLayers) - 1) : 0);
    m_run->setEnabled(m_checkpoint != nullptr);
    m_title->setText(m_checkpoint ? tr("Pick a linear input and run the lab (calibration text and windows as in the "
                                       "Activations tab).")
                                  : tr("Open a model, pick a linear input and run the lab."));
}

void TransformLab::showTensor(const QString& name)
{
    const auto key = pipeline::linearInputOf(name.toStdString());
    if (!key) return;
    m_layer->setValue(key->first);
    m_input->setCurrentIndex(m_input->findData(int(key->second)));
}

QString TransformLab::titleText() const { return m_title->text(); }

void TransformLab::startLab()
{
    if (!m_checkpoint) return;
    if (m_status->isBusy()) {
        Q_EMIT labFinished(false, tr("another job is running"));
        return;
    }
    pipeline::TransformLabRequest req;
    req.checkpoint = m_checkpoint;
    req.calibrationText =
        (m_settings ? m_settings->textPath() : defaultTextFile(m_checkpoint.get(), QStringLiteral("calib.txt")))
            .toStdString();
    if (m_settings) {
        req.calibration.nsamples = m_settings->windows();
        req.calibration.seqlen = m_settings->length();
    }
    req.layer = m_layer->value();
    req.kind = model::LinearKind(m_input->currentData().toInt());
    req.smoothAlpha = m_alpha->value();
    req.hadamard = m_hadamard->isChecked();
    req.ruquant = m_ruquant->isChecked();
    req.ruquantOptions.seed = req.seed;
    req.options.quant.bits = m_bits->currentData().toInt();
    req.options.quant.clip = float(m_clip->value());
    req.options.weightBits = m_wbits->currentData().toInt();
    m_runner->start<pipeline::LabResult>(
        this, tr("Transform lab"),
        [req, channel = m_cells->channel()](RunContext& ctx) -> Result<pipeline::LabResult> {
            // The within-cell channel is clamped to the input's width, known once captured (the
            // spin box may still hold a channel of a wider input picked before).
            QB_TRY(r, pipeline::runTransformLab(req, &ctx));
            if (!r->quant.enabled()) return std::move(*r);
            const int ch = std::clamp(channel, 0, int(r->channels) - 1);
            QB_TRY(cells, pipeline::labWithinCell(*r, ch, &ctx));
            r->cellChannel = ch;
            for (std::size_t i = 0; i < r->stages.size(); ++i)
                r->stages[i].channelCells = std::move((*cells)[i]);
            return std::move(*r);
        },
        [this](const JobOutcome<pipeline::LabResult>& outcome) {
            m_run->setEnabled(m_checkpoint != nullptr);
            if (!outcome.ok()) {
                const bool cancelled = outcome.error->code == ErrorCode::Cancelled;
                const QString msg = cancelled ? tr("cancelled") : QString::fromStdString(outcome.error->toString());
                if (!cancelled) m_title->setText(tr("Transform lab failed: %1").arg(msg));
                Q_EMIT labFinished(false, msg);
                return;
            }
            m_result = outcome.value;
            display();
            Q_EMIT labFinished(true, tr("%1 stages on %2 tokens in %3 s")
                                         .arg(m_result->stages.size())
                                         .arg(m_result->sampledTokens)
                                         .arg(m_result->seconds, 0, 'f', 2));
        });
    m_run->setEnabled(false);
}

void TransformLab::clearColumns()
{
    for (auto* h : m_histograms)
        delete h;
    for (auto* c : m_channels)
        delete c;
    for (int col = 0; col < m_grid->columnCount(); ++col)
        m_grid->setColumnStretch(col, 0);
    m_histograms.clear();
    m_channels.clear();
}

void TransformLab::display()
{
    clearColumns();
    m_summary->setResult(m_result);
    m_cells->setResult(m_result);
    m_bottom->setVisible(m_result != nullptr);
    if (!m_result) return;
    const auto& r = *m_result;
    QString quant = r.quant.bits > 0 ? tr("A%1 per token, clip %2").arg(r.quant.bits).arg(double(r.quant.clip))
                                     : tr("activations unquantized");
    quant += r.weightBits > 0 ? tr(", W%1 weights").arg(r.weightBits) : tr(", FP weights");
    QString title = tr("Layer %1 %2 input: %3 channels, %4 of %5 calibration tokens; %6. Every histogram spans "
                       "[%7, %8].")
                        .arg(r.layer)
                        .arg(QString::fromLatin1(model::linearKindName(r.kind)))
                        .arg(r.channels)
                        .arg(r.sampledTokens)
                        .arg(r.totalTokens)
                        .arg(quant)
                        .arg(r.histLo, 0, 'g', 4)
                        .arg(r.histHi, 0, 'g', 4);
    for (const auto& n : r.notes)
        title += QStringLiteral("  ") + QString::fromStdString(n) + QLatin1Char('.');
    m_title->setText(title);
    std::int64_t maxCount = 1;
    for (const auto& s : r.stages)
        for (auto c : s.histogram.counts)
            maxCount = std::max(maxCount, c);
    for (std::size_t i = 0; i < r.stages.size(); ++i) {
        const auto& s = r.stages[i];
        auto* h = new HistogramChart(QString::fromStdString(s.label), tr("activation value"));
        h->setLogCounts(true);
        h->setMinimumHeight(130);
        compactLabChart(h);
        h->setHistogram(s.histogram);
        setLabVerticalRange(h, 0, double(maxCount) * 1.5);
        auto* c = new ChannelChart(QString(), s.rotated ? tr("rotated coordinate") : tr("input channel"), QString());
        c->setAccessibleName(tr("%1: per-channel statistic").arg(QString::fromStdString(s.label)));
        c->setMinimumHeight(120);
        compactLabChart(c);
        m_grid->setColumnStretch(int(i), 1); // equal columns
        m_grid->addWidget(h, 0, int(i));
        m_grid->addWidget(c, 1, int(i));
        h->show(); // added after the tab was shown
        c->show();
        m_histograms.push_back(h);
        m_channels.push_back(c);
    }
    showMetric();
    m_table->resizeColumnsToContents();
    // The table shows every stage (up to eight) and leaves the rest to the charts; the within-cell
    // tab gets at least room for its controls and one row of small charts.
    const int rows = std::min(int(r.stages.size()), 8);
    m_tableHeight = m_table->horizontalHeader()->sizeHint().height() +
                    rows * m_table->verticalHeader()->defaultSectionSize() + 2 * m_table->frameWidth() + 2 +
                    m_table->horizontalScrollBar()->sizeHint().height(); // the Transform column may overflow
    fitBottom();
}

void TransformLab::fitBottom()
{
    const int page = m_bottom->currentWidget() == m_cells ? std::max(m_tableHeight, 170) : m_tableHeight;
    m_bottom->setMaximumHeight(page + m_bottom->tabBar()->sizeHint().height());
}

void TransformLab::showMetric()
{
    if (!m_result) return;
    const auto metric = Metric(m_metric->currentData().toInt());
    double lo = 0, hi = 0;
    for (std::size_t i = 0; i < m_channels.size(); ++i) {
        const auto& s = m_result->stages[i];
        const std::vector<float>& v = metric == Metric::MaxAbs     ? s.channelMaxAbs
                                      : metric == Metric::Kurtosis ? s.channelKurtosis
                                                                   : s.channelQuantError;
        m_channels[i]->setValues(v);
        m_channels[i]->chart()->setTitle(m_metric->currentText());
        for (float x : v) {
            lo = std::min(lo, double(x));
            hi = std::max(hi, double(x));
        }
    }
    // One y range for every stage, so the columns compare at a glance.
    for (ChannelChart* c : m_channels)
        setLabVerticalRange(c, lo, hi > lo ? hi * 1.05 : lo + 1);
}

} // namespace qb::ui
