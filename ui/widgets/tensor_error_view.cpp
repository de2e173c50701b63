#include "widgets/tensor_error_view.h"

#include "charts/histogram_chart.h"
#include "charts/quant_charts.h"
#include "models/plan_table_model.h"
#include "models/quant_run_model.h"
#include "tasks/job_runner.h"

#include <QCheckBox>
#include <QComboBox>
#include <QGraphicsLayout>
#include <QGridLayout>
#include <QGroupBox>
#include <QAbstractAxis>
#include <QLabel>
#include <QLineSeries>
#include <QPushButton>
#include <QAction>
#include <QHBoxLayout>
#include <QSpinBox>
#include <QTabBar>
#include <QTabWidget>
#include <QToolButton>
#include <QUndoStack>
#include <QVBoxLayout>

namespace qb::ui {

namespace {
constexpr int kHistBins = 80;

std::optional<std::size_t> planIndex(const pipeline::QuantizeResult& r, const QString& name)
{
    const std::string n = name.toStdString();
    for (std::size_t i = 0; i < r.tensors.size(); ++i)
        if (r.tensors[i].name == n || r.tensors[i].name == n + ".weight") return i;
    return std::nullopt;
}

QString methodName(quant::Method m)
{
    const auto& t = quant::methodTraits(m);
    return QString::fromLatin1(t.name.data(), qsizetype(t.name.size()));
}

// A preview with its per-channel errors (computed on the worker, beside the quantization).
struct WhatIf {
    pipeline::PreviewResult preview;
    pipeline::ChannelErrors channels;
};
} // namespace

TensorErrorView::TensorErrorView(JobRunner* runner, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_title(new QLabel),
      m_outChart(new ChannelChart(tr("Error per output channel"), tr("output channel"), tr("rel. error"))),
      m_inChart(new ChannelChart(tr("Error share per input channel"), tr("input channel"), tr("share"))),
      m_hist(new QuantHistogramChart), m_method(new QComboBox), m_bits(new QSpinBox), m_group(new QSpinBox),
      m_sym(new QCheckBox(tr("symmetric"))), m_preview(new QPushButton(tr("Preview"))),
      m_apply(new QPushButton(tr("Apply to plan"))), m_undo(new QToolButton), m_previewText(new QLabel),
      m_mapBox(new QWidget(this)), m_inTabs(new QTabWidget), m_channelMap(new CmpqChannelMapChart),
      m_channel(new QSpinBox), m_sorted(new QCheckBox(tr("Sorted by score")))
{
    setObjectName(QStringLiteral("tensorErrorView"));
    m_title->setObjectName(QStringLiteral("tensorTitle"));
    m_method->setObjectName(QStringLiteral("whatIfMethod"));
    m_bits->setObjectName(QStringLiteral("whatIfBits"));
    m_group->setObjectName(QStringLiteral("whatIfGroup"));
    m_sym->setObjectName(QStringLiteral("whatIfSym"));
    m_preview->setObjectName(QStringLiteral("whatIfPreview"));
    m_previewText->setObjectName(QStringLiteral("whatIfResult"));
    m_apply->setObjectName(QStringLiteral("whatIfApply"));
    m_undo->setObjectName(QStringLiteral("whatIfUndo"));
    m_apply->setToolTip(tr("Set this tensor's method, bits, group size and symmetry in the plan to the previewed "
                           "ones (one undo step)"));
    m_apply->setEnabled(false);
    m_undo->setToolButtonStyle(Qt::ToolButtonTextOnly);
    m_undo->setEnabled(false);
    m_undo->setText(tr("Undo"));
    m_outChart->setObjectName(QStringLiteral("outChannelChart"));
    m_inChart->setObjectName(QStringLiteral("inChannelChart"));
    m_hist->setObjectName(QStringLiteral("quantHistogram"));
    for (const auto& t : quant::allMethodTraits())
        m_method->addItem(QString::fromLatin1(t.name.data(), qsizetype(t.name.size())), int(t.method));
    m_bits->setRange(quant::kMinBits, quant::kMaxBits);
    m_bits->setValue(4);
    m_group->setRange(-1, 65536);
    m_group->setValue(128);
    m_group->setSpecialValueText(tr("per channel"));
    m_previewText->setWordWrap(true);
    m_previewText->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_title->setText(tr("Run a quantization, then select a tensor (explorer or results table)."));

    // Compact, so that the error charts above keep their height at 1280x800.
    auto* box = new QGroupBox(tr("What-if for this tensor"));
    auto* form = new QGridLayout(box);
    form->setVerticalSpacing(4);
    form->addWidget(new QLabel(tr("Method:")), 0, 0);
    form->addWidget(m_method, 0, 1, 1, 3);
    form->addWidget(new QLabel(tr("Bits:")), 1, 0);
    form->addWidget(m_bits, 1, 1);
    form->addWidget(new QLabel(tr("Group:")), 1, 2);
    form->addWidget(m_group, 1, 3);
    auto* buttons = new QHBoxLayout;
    buttons->addWidget(m_sym);
    buttons->addStretch(1);
    buttons->addWidget(m_preview);
    buttons->addWidget(m_apply);
    buttons->addWidget(m_undo);
    form->addLayout(buttons, 2, 0, 1, 4);
    form->addWidget(m_previewText, 3, 0, 1, 4);
    form->setRowStretch(4, 1);
    form->setColumnStretch(1, 1);
    form->setColumnStretch(3, 1);
    box->setMinimumWidth(300);
    for (QChartView* v : {static_cast<QChartView*>(m_outChart), static_cast<QChartView*>(m_inChart),
                          static_cast<QChartView*>(m_hist)}) {
        v->chart()->layout()->setContentsMargins(0, 0, 0, 0);
        v->chart()->setBackgroundRoundness(0);
        v->setMinimumHeight(150);
    }
    m_hist->chart()->legend()->hide(); // its keys are in the title (display())

    // CMPQ: the channel map with its picker, shown for CMPQ tensors only.
    m_mapBox->setObjectName(QStringLiteral("cmpqChannelMapBox"));
    m_channelMap->setObjectName(QStringLiteral("cmpqChannelMap"));
    m_channel->setObjectName(QStringLiteral("cmpqChannel"));
    m_sorted->setObjectName(QStringLiteral("cmpqSorted"));
    m_channelMap->chart()->layout()->setContentsMargins(0, 0, 0, 0);
    m_channelMap->chart()->setBackgroundRoundness(0);
    m_channel->setAccessibleName(tr("Input channel shown in the histogram"));
    m_channel->setToolTip(tr("The input channel whose weights and codebook the histogram shows (or click the map)"));
    auto* channelLabel = new QLabel(tr("&Channel:"));
    channelLabel->setBuddy(m_channel);
    auto* mapControls = new QVBoxLayout;
    mapControls->addWidget(channelLabel);
    mapControls->addWidget(m_channel);
    mapControls->addWidget(m_sorted);
    mapControls->addStretch(1);
    auto* mapLayout = new QHBoxLayout(m_mapBox);
    mapLayout->setContentsMargins(0, 0, 0, 0);
    mapLayout->addWidget(m_channelMap, 1);
    mapLayout->addLayout(mapControls);
    m_mapBox->hide();

    auto* grid = new QGridLayout;
    grid->addWidget(m_outChart, 0, 0);
    // One tab (no tab bar) for most tensors; a CMPQ tensor adds its channel map beside it.
    m_inTabs->setObjectName(QStringLiteral("inChannelTabs"));
    m_inTabs->setTabBarAutoHide(true);
    m_inTabs->setDocumentMode(true);
    // Tab moves between the charts and controls, not onto the (usually hidden) tab bar; the tabs
    // switch by click or Ctrl+Tab inside them.
    m_inTabs->setFocusPolicy(Qt::NoFocus);
    m_inTabs->tabBar()->setFocusPolicy(Qt::NoFocus);
    m_inTabs->addTab(m_inChart, tr("Error per input channel"));
    grid->addWidget(m_inTabs, 0, 1);
    grid->addWidget(m_hist, 1, 0);
    grid->addWidget(box, 1, 1);
    grid->setRowStretch(0, 1);
    grid->setRowStretch(1, 1);
    auto* layout = new QVBoxLayout(this);
    layout->addWidget(m_title);
    layout->addLayout(grid, 1);

    m_preview->setEnabled(false);
    connect(m_preview, &QPushButton::clicked, this, &TensorErrorView::startPreview);
    // Changing a setting previews at once.
    connect(m_method, &QComboBox::currentIndexChanged, this, &TensorErrorView::startPreview);
    connect(m_bits, &QSpinBox::valueChanged, this, &TensorErrorView::startPreview);
    connect(m_group, &QSpinBox::valueChanged, this, &TensorErrorView::startPreview);
    connect(m_sym, &QCheckBox::toggled, this, &TensorErrorView::startPreview);
    connect(m_channel, &QSpinBox::valueChanged, this, [this](int j) {
        if (!m_analysis || !m_analysis->cmpq || m_analysis->cmpq->channel == j) return;
        m_requestedChannel = j;
        startAnalysis();
    });
    connect(m_channelMap, &CmpqChannelMapChart::channelPicked, m_channel, &QSpinBox::setValue);
    connect(m_sorted, &QCheckBox::toggled, m_channelMap, &CmpqChannelMapChart::setSorted);
    connect(m_apply, &QPushButton::clicked, this, [this] {
        const QString err = applyToPlan();
        if (!err.isEmpty()) m_previewText->setText(tr("Not applied: %1").arg(err.toHtmlEscaped()));
    });
}

void TensorErrorView::setPlanModel(PlanTableModel* plan)
{
    m_planModel = plan;
    // The plan's own undo (its text says what it undoes), next to Apply.
    QAction* undo = plan->undoStack()->createUndoAction(this, tr("Undo"));
    undo->setObjectName(QStringLiteral("whatIfUndoAction"));
    m_undo->setDefaultAction(undo);
}

QString TensorErrorView::applyToPlan()
{
    if (!m_planModel) return tr("no plan");
    if (!m_lastPreview || !m_analysis || !m_run) return tr("no preview to apply");
    const pipeline::TensorReport& rep = m_run->result->tensors[m_analysis->index];
    const pipeline::PreviewSettings s = *m_lastPreview;
    const QString err =
        m_planModel->setTensorSettings(QString::fromStdString(rep.name), s.method, s.bits, s.groupSize, s.sym);
    if (err.isEmpty())
        m_previewText->setText(m_previewText->text() +
                               tr("<br><i>Applied to the plan: %1 %2 bits, group %3 (Undo takes it back).</i>")
                                   .arg(methodName(s.method))
                                   .arg(s.bits)
                                   .arg(s.groupSize));
    return err;
}

void TensorErrorView::updateRun(std::shared_ptr<const QuantRun> run)
{
    if (!m_run || !run || run->id != m_run->id) return;
    m_run = std::move(run);
    if (m_analysis) refreshTitle();
}

void TensorErrorView::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
}

void TensorErrorView::startRebuild()
{
    if (!m_checkpoint) {
        m_title->setText(tr("This run was reopened from a project; open its model to inspect its tensors."));
        return;
    }
    if (m_rebuildingRun == m_run->id) return;
    m_rebuildingRun = m_run->id;
    m_title->setText(tr("%1: rebuilding the reopened run from its grids (the original model and the calibration "
                        "windows are loaded again)...")
                         .arg(m_run->label().toHtmlEscaped()));
    auto run = m_run;
    auto ck = m_checkpoint;
    m_runner->start<pipeline::InspectableRun>(
        this, tr("Rebuild run"),
        [run, ck](RunContext& ctx) {
            return pipeline::rebuildRunForInspection(*ck, *run->result, run->plan, run->calibration, run->base, &ctx);
        },
        [this, run](const JobOutcome<pipeline::InspectableRun>& out) {
            m_rebuildingRun = -1;
            if (!m_run || m_run->id != run->id) return; // another run is shown now
            if (!out.ok()) {
                if (out.error->code != ErrorCode::Cancelled)
                    m_title->setText(tr("%1: its tensors cannot be inspected: %2")
                                         .arg(run->label().toHtmlEscaped(),
                                              QString::fromStdString(out.error->message).toHtmlEscaped()));
                return;
            }
            auto rebuilt = std::make_shared<QuantRun>(*run);
            rebuilt->base = out.value->base;
            rebuilt->result = out.value->result;
            rebuilt->calib = out.value->calibration;
            m_run = rebuilt;
            Q_EMIT runRebuilt(rebuilt);
            if (!m_tensor.isEmpty()) startAnalysis();
        });
}

void TensorErrorView::setRun(std::shared_ptr<const QuantRun> run)
{
    m_run = std::move(run);
    m_analysis.reset();
    m_requestedChannel = -1;
    if (!m_tensor.isEmpty()) startAnalysis();
}

void TensorErrorView::showTensor(const QString& name)
{
    if (name != m_tensor) m_requestedChannel = -1;
    m_tensor = name;
    startAnalysis();
}

void TensorErrorView::startAnalysis()
{
    m_preview->setEnabled(false);
    m_apply->setEnabled(false);
    m_lastPreview.reset();
    if (!m_run || !m_run->result) return;
    if (!m_run->result->model || !m_run->base || !m_run->calib) { // reopened from a project: grids only
        startRebuild();
        return;
    }
    const auto idx = planIndex(*m_run->result, m_tensor);
    if (!idx) {
        m_title->setText(tr("%1 is not a quantizable tensor").arg(m_tensor));
        return;
    }
    const pipeline::TensorReport& rep = m_run->result->tensors[*idx];
    m_title->setText(tr("%1 — %2: analysing...").arg(QString::fromStdString(rep.name), m_run->label().toHtmlEscaped()));
    auto run = m_run;
    auto cached = (m_hessRun == run->id && m_hessCache && m_hessCache->layer == rep.layer) ? m_hessCache : nullptr;
    const QString tensor = m_tensor;
    pipeline::TensorAnalysisRequest req;
    req.base = run->base;
    req.run = run->result;
    req.calibration = run->calib;
    req.tensor = rep.name;
    req.cached = cached;
    req.histogramBins = kHistBins;
    req.channel = m_requestedChannel;
    m_runner->start<TensorAnalysis>(
        this, QString(),
        [req, runId = run->id, tensor](RunContext& ctx) -> Result<TensorAnalysis> {
            QB_TRY(a, pipeline::analyzeTensor(req, &ctx));
            TensorAnalysis out;
            static_cast<pipeline::TensorAnalysis&>(out) = std::move(*a);
            out.runId = runId;
            out.tensor = tensor;
            return out;
        },
        [this, tensor](const JobOutcome<TensorAnalysis>& out) {
            if (!out.ok() && out.error->code == ErrorCode::Cancelled) return;
            if (tensor != m_tensor || !m_run || !out.ok() || out.value->runId != m_run->id) {
                if (!out.ok()) m_title->setText(QString::fromStdString(out.error->toString()));
                return;
            }
            m_analysis = out.value;
            m_hessCache = m_analysis->hessians;
            m_hessRun = m_analysis->runId;
            display();
            Q_EMIT analysisReady(tensor);
        });
}

void TensorErrorView::refreshTitle()
{
    const auto& a = *m_analysis;
    const pipeline::TensorReport& rep = m_run->result->tensors[a.index];
    // CMPQ: its average bits per weight (everything counted) instead of the top level.
    const QString bits = a.cmpq ? tr("%1 bits/weight").arg(rep.bitsPerWeight, 0, 'f', 3) : tr("%1 bits").arg(rep.bits);
    QString title = tr("<b>%1</b> — %2: %3 %4, group %5 · relative output error %6 (job: %7)")
                        .arg(QString::fromStdString(rep.name), m_run->label().toHtmlEscaped())
                        .arg(rep.skipped ? tr("skipped") : methodName(rep.method))
                        .arg(bits)
                        .arg(rep.groupSize)
                        .arg(a.errors.relativeError, 0, 'f', 4)
                        .arg(rep.relativeError, 0, 'f', 4);
    if (a.cmpq) {
        const auto& c = *a.cmpq;
        int counts[17] = {};
        for (int b : c.channelBits)
            ++counts[std::min(b, 16)];
        QString map;
        for (int b = 1; b <= 16; ++b)
            if (counts[b]) map += b == 16 ? tr(" %1×F16").arg(counts[b]) : tr(" %1×%2b").arg(counts[b]).arg(b);
        title += tr("<br>CMPQ channels:%1 · %2 sparse outliers").arg(map).arg(c.outliers.size());
    }
    m_title->setText(title);
}

void TensorErrorView::display()
{
    const auto& a = *m_analysis;
    const pipeline::TensorReport& rep = m_run->result->tensors[a.index];
    refreshTitle();
    m_outChart->setValues(a.errors.outChannel);
    m_inChart->setValues(a.errors.inChannel);
    m_outChart->setCompareValues({}, QString(), QString());
    m_inChart->setCompareValues({}, QString(), QString());
    m_hist->setData(a.before, a.after, a.gridLevels);
    // The series' colours in the title (one line; a legend would take another).
    auto key = [](const QColor& c, const QString& text) {
        return QStringLiteral("<span style='color:%1'>&#9632;</span> %2").arg(c.name(), text);
    };
    const QString keys = key(m_hist->beforeSeries()->color(), tr("before")) + QStringLiteral(" ") +
                         key(m_hist->afterSeries()->color(), tr("after"));
    if (a.cmpq) { // CMPQ: the histogram is one input channel's, its levels that channel's codebook
        const auto& c = *a.cmpq;
        const std::size_t j = std::size_t(c.channel);
        const int cols = int(c.channelBits.size());
        std::vector<int> perChannel(c.channelBits.size(), 0);
        for (std::int64_t flat : c.outliers)
            ++perChannel[std::size_t(flat % cols)];
        m_channelMap->setData(c.channelBits, c.channelScore, perChannel, c.channel);
        {
            const QSignalBlocker block(m_channel);
            m_channel->setRange(0, cols - 1);
            m_channel->setValue(c.channel);
        }
        if (m_inTabs->indexOf(m_mapBox) < 0) {
            m_inTabs->addTab(m_mapBox, tr("CMPQ channel map"));
            m_inTabs->setCurrentWidget(m_mapBox);
        }
        m_hist->chart()->setTitle(tr("Channel %1 (score %2, %3 b): %4, codebook")
                                      .arg(c.channel)
                                      .arg(double(c.channelScore[j]), 0, 'g', 3)
                                      .arg(c.channelBits[j])
                                      .arg(keys));
    } else {
        if (const int i = m_inTabs->indexOf(m_mapBox); i >= 0) m_inTabs->removeTab(i);
        m_hist->chart()->setTitle(tr("Weights %1, grid of row 0 group 0").arg(keys));
    }
    // Start the what-if from the tensor's own settings.
    const QSignalBlocker b1(m_method), b2(m_bits), b3(m_group), b4(m_sym);
    m_method->setCurrentIndex(m_method->findData(int(rep.method)));
    m_bits->setValue(rep.skipped ? 4 : rep.bits);
    m_group->setValue(rep.groupSize);
    m_sym->setChecked(rep.sym);
    m_preview->setEnabled(true);
    startPreview();
}

void TensorErrorView::startPreview()
{
    if (!m_analysis || !m_run) return;
    if (m_previewBusy) {
        m_previewPending = true;
        return;
    }
    const pipeline::TensorReport& rep = m_run->result->tensors[m_analysis->index];
    pipeline::PreviewSettings s;
    s.method = quant::Method(m_method->currentData().toInt());
    s.bits = m_bits->value();
    s.groupSize = m_group->value();
    s.sym = m_sym->isChecked();
    auto run = m_run;
    auto analysis = m_analysis;
    m_previewBusy = true;
    m_previewPending = false;
    m_apply->setEnabled(false);
    m_runner->start<WhatIf>(
        this, QString(),
        [run, analysis, s](RunContext& ctx) -> Result<WhatIf> {
            const pipeline::TensorReport& rep = run->result->tensors[analysis->index];
            const auto layer = model::unpackedLayer(run->base->layer(rep.layer));
            const model::RowMatrix& w = layer->weight(rep.linear);
            const Eigen::MatrixXd& h = analysis->hessians->forLinear(rep.linear);
            QB_TRY(p, pipeline::previewTensor(w, h, s, &ctx));
            WhatIf out;
            out.channels = pipeline::channelErrors(w, p->rows->dequantized, h);
            out.preview = std::move(*p);
            return out;
        },
        [this, s, analysis, jobErr = rep.relativeError](const JobOutcome<WhatIf>& out) {
            m_previewBusy = false;
            if (!out.ok() && out.error->code == ErrorCode::Cancelled) return;
            const auto& t = quant::methodTraits(s.method);
            if (!out.ok()) {
                m_lastPreview.reset();
                m_previewText->setText(tr("What-if failed: %1").arg(QString::fromStdString(out.error->toString())));
                m_outChart->setCompareValues({}, QString(), QString());
                m_inChart->setCompareValues({}, QString(), QString());
                Q_EMIT previewFinished(false, 0, 0);
            } else if (analysis == m_analysis) { // still the tensor shown
                const auto& r = out.value->preview;
                const auto& ch = out.value->channels;
                // Before / after in the error charts: the run's per-channel errors and the what-if's.
                const QString before = tr("run %1").arg(analysis->errors.relativeError, 0, 'f', 4);
                const QString after = tr("what-if %1 %2b %3")
                                          .arg(QString::fromLatin1(t.name.data(), qsizetype(t.name.size())))
                                          .arg(s.bits)
                                          .arg(r.relativeError, 0, 'f', 4);
                m_outChart->setCompareValues(ch.outChannel, before, after);
                m_inChart->setCompareValues(ch.inChannel, before, after);
                m_lastPreview = s;
                m_apply->setEnabled(m_planModel != nullptr);
                m_previewText->setText(
                    tr("<b>%1 %2 bits, group %3%4</b><br>relative error %5 (run: %6)<br>%7 bits/weight · %8 ms")
                        .arg(QString::fromLatin1(t.name.data(), qsizetype(t.name.size())))
                        .arg(s.bits)
                        .arg(s.groupSize)
                        .arg(s.sym && t.supportsSym ? tr(", sym") : QString())
                        .arg(r.relativeError, 0, 'f', 4)
                        .arg(jobErr, 0, 'f', 4)
                        .arg(r.bitsPerWeight, 0, 'f', 3)
                        .arg(r.seconds * 1000.0, 0, 'f', 1));
                Q_EMIT previewFinished(true, r.relativeError, r.seconds);
            }
            if (m_previewPending) startPreview();
        });
}

} // namespace qb::ui
