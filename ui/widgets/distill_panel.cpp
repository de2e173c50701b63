#include "widgets/distill_panel.h"

#include "charts/loss_chart.h"
#include "models/quant_run_model.h"
#include "pipeline/workflows.h"
#include "tasks/job_runner.h"
#include "widgets/activations_panel.h"
#include "widgets/job_status.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFutureWatcher>
#include <QtConcurrent/QtConcurrentRun>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QScrollArea>
#include <QScrollBar>
#include <QSpinBox>
#include <QTimer>
#include <QVBoxLayout>

#include <cmath>
#include <limits>

namespace qb::ui {

namespace {

bool sameOptions(const pipeline::DistillOptions& a, const pipeline::DistillOptions& b)
{
    return a.steps == b.steps && a.batch == b.batch && a.lr == b.lr && a.loss == b.loss && a.normGains == b.normGains &&
           a.warmup == b.warmup && a.clipNorm == b.clipNorm;
}

QString runLabel(const QuantRun& r)
{
    QString s = r.label();
    if (r.summary != r.name) s += QObject::tr(" (%1)").arg(r.summary);
    if (r.perplexity) s += QObject::tr(" · ppl %1").arg(*r.perplexity, 0, 'f', 2);
    return s;
}

} // namespace

DistillPanel::DistillPanel(JobRunner* runner, JobStatus* status, QuantRunModel* runs, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_status(status), m_runs(runs), m_curveTimer(new QTimer(this)),
      m_runCombo(new QComboBox), m_steps(new QSpinBox), m_lr(new QDoubleSpinBox), m_batch(new QSpinBox),
      m_loss(new QComboBox), m_warmup(new QSpinBox), m_clip(new QDoubleSpinBox),
      m_gains(new QCheckBox(tr("Also train the RMSNorm gains"))),
      m_evalPpl(new QCheckBox(tr("Perplexity and KL after distilling"))), m_run(new QPushButton(tr("Distill"))),
      m_scope(new QLabel), m_reason(new QLabel), m_estimate(new QLabel), m_result(new QLabel),
      m_chart(new LossCurveChart), m_estimateTimer(new QTimer(this))
{
    setObjectName(QStringLiteral("distillPanel"));
    m_runCombo->setObjectName(QStringLiteral("distillRun"));
    m_steps->setObjectName(QStringLiteral("distillSteps"));
    m_lr->setObjectName(QStringLiteral("distillLr"));
    m_batch->setObjectName(QStringLiteral("distillBatch"));
    m_loss->setObjectName(QStringLiteral("distillLoss"));
    m_warmup->setObjectName(QStringLiteral("distillWarmup"));
    m_clip->setObjectName(QStringLiteral("distillClip"));
    m_gains->setObjectName(QStringLiteral("distillGains"));
    m_evalPpl->setObjectName(QStringLiteral("distillPerplexity"));
    m_run->setObjectName(QStringLiteral("distillButton"));
    m_scope->setObjectName(QStringLiteral("distillScope"));
    m_reason->setObjectName(QStringLiteral("distillRefusal"));
    m_result->setObjectName(QStringLiteral("distillResult"));
    m_estimate->setObjectName(QStringLiteral("distillEstimate"));
    m_estimate->setWordWrap(true);
    m_chart->setObjectName(QStringLiteral("distillLossChart"));

    const pipeline::DistillOptions defaults;
    m_runCombo->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    m_runCombo->setMinimumContentsLength(24);
    m_steps->setRange(0, 1 << 20);
    m_steps->setValue(defaults.steps);
    m_steps->setSpecialValueText(tr("one pass over the windows"));
    m_steps->setToolTip(tr("Optimizer steps (AdamW). 0: one pass over the run's calibration windows"));
    m_lr->setDecimals(6);
    m_lr->setRange(1e-6, 0.1);
    m_lr->setSingleStep(1e-4);
    m_lr->setValue(defaults.lr);
    m_lr->setToolTip(tr("Peak learning rate of the cosine schedule (NeUQI: 3e-4; 2-bit grids take larger steps)"));
    m_batch->setRange(1, 4096);
    m_batch->setValue(defaults.batch);
    m_batch->setToolTip(tr("Calibration windows per step, taken in order and cycling"));
    m_loss->addItem(tr("KL of next-token distributions"), int(model::DistillLoss::Kl));
    m_loss->addItem(tr("MSE of final hidden states"), int(model::DistillLoss::HiddenMse));
    m_loss->setToolTip(tr("KL(teacher ‖ student) at every position (default), or NeUQI's MSE of the final normed "
                          "hidden states"));
    m_warmup->setRange(0, 100);
    m_warmup->setSuffix(tr(" %"));
    m_warmup->setValue(int(std::lround(defaults.warmup * 100)));
    m_warmup->setToolTip(tr("Share of the steps with a linear warm-up; cosine decay to 0 after it"));
    m_clip->setDecimals(2);
    m_clip->setRange(0, 1000);
    m_clip->setValue(defaults.clipNorm);
    m_clip->setSpecialValueText(tr("off"));
    m_clip->setToolTip(tr("Global gradient norm clipping (0: off)"));
    m_gains->setChecked(defaults.normGains);
    m_gains->setToolTip(tr("Besides the per-group scales and zero-points, train every RMSNorm gain (layers and the "
                           "final norm). The integer codes stay frozen either way."));
    m_evalPpl->setChecked(true);
    m_evalPpl->setToolTip(tr("After distilling, the perplexity of the distilled model on the model's eval.txt and its "
                             "KL divergence from the original (the source run's figures beside it)"));
    m_scope->setWordWrap(true);
    m_reason->setWordWrap(true);
    m_reason->setStyleSheet(QStringLiteral("color: #b00020;"));
    m_result->setWordWrap(true);
    m_result->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_run->setEnabled(false);

    auto* form = new QFormLayout;
    form->setFieldGrowthPolicy(QFormLayout::AllNonFixedFieldsGrow);
    form->addRow(tr("Run:"), m_runCombo);
    form->addRow(tr("Steps:"), m_steps);
    form->addRow(tr("Learning rate:"), m_lr);
    form->addRow(tr("Windows per step:"), m_batch);
    form->addRow(tr("Loss:"), m_loss);
    form->addRow(tr("Warm-up:"), m_warmup);
    form->addRow(tr("Gradient clip:"), m_clip);
    auto* settings = new QWidget;
    settings->setObjectName(QStringLiteral("distillSettings"));
    settings->setFixedWidth(360);
    auto* left = new QVBoxLayout(settings);
    left->setContentsMargins(0, 0, 0, 0);
    left->addLayout(form);
    left->addWidget(m_gains);
    left->addWidget(m_evalPpl);
    left->addWidget(m_scope);
    left->addWidget(m_reason);
    left->addWidget(m_estimate);
    left->addWidget(m_run);
    left->addStretch(1);
    auto* layout = new QHBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    // The settings scroll when the window is short (a long list of frozen tensors, a refusal).
    auto* scroll = new QScrollArea;
    scroll->setObjectName(QStringLiteral("distillSettingsScroll"));
    scroll->setWidget(settings);
    scroll->setWidgetResizable(true);
    scroll->setFrameShape(QFrame::NoFrame);
    scroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    scroll->setFixedWidth(settings->width() + scroll->verticalScrollBar()->sizeHint().width());
    layout->addWidget(scroll);
    auto* right = new QVBoxLayout;
    right->addWidget(m_chart, 1);
    right->addWidget(m_result);
    layout->addLayout(right, 1);

    m_curveTimer->setSingleShot(true);
    m_curveTimer->setInterval(100); // about 10 chart refreshes a second, however fast the steps
    connect(m_curveTimer, &QTimer::timeout, this, &DistillPanel::flushCurve);
    connect(m_run, &QPushButton::clicked, this, &DistillPanel::startDistill);
    m_estimateTimer->setSingleShot(true);
    m_estimateTimer->setInterval(300); // debounces settings changes
    connect(m_estimateTimer, &QTimer::timeout, this, &DistillPanel::refreshEstimate);
    connect(m_runCombo, &QComboBox::currentIndexChanged, this, &DistillPanel::updateState);
    for (QSpinBox* s : {m_steps, m_batch, m_warmup})
        connect(s, &QSpinBox::valueChanged, this, &DistillPanel::updateState);
    for (QDoubleSpinBox* s : {m_lr, m_clip})
        connect(s, &QDoubleSpinBox::valueChanged, this, &DistillPanel::updateState);
    connect(m_loss, &QComboBox::currentIndexChanged, this, &DistillPanel::updateState);
    connect(m_gains, &QCheckBox::toggled, this, &DistillPanel::updateState);
    connect(m_runs, &QAbstractItemModel::rowsInserted, this, [this](const QModelIndex&, int, int last) {
        refreshRuns();
        selectRun(last); // the newest run is the usual one to distill
    });
    connect(m_runs, &QAbstractItemModel::modelReset, this, &DistillPanel::refreshRuns);
    connect(m_runs, &QAbstractItemModel::dataChanged, this, &DistillPanel::refreshRuns);
    refreshRuns();
}

void DistillPanel::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
    updateState();
}

void DistillPanel::refreshRuns()
{
    const auto chosen = chosenRun();
    const int keep = chosen ? chosen->id : -1; // by id: a rename replaces the row's snapshot
    const QSignalBlocker block(m_runCombo);
    m_runCombo->clear();
    int current = -1;
    for (int r = 0; r < m_runs->rowCount(); ++r) {
        const auto run = m_runs->run(r);
        m_runCombo->addItem(runLabel(*run), r);
        if (run->id == keep) current = r;
    }
    m_runCombo->setCurrentIndex(current >= 0 ? current : m_runCombo->count() - 1);
    updateState();
}

void DistillPanel::selectRun(int row)
{
    if (row >= 0 && row < m_runCombo->count()) m_runCombo->setCurrentIndex(row);
    updateState();
}

std::shared_ptr<const QuantRun> DistillPanel::chosenRun() const
{
    const int row = m_runCombo->currentIndex();
    return row >= 0 && row < m_runs->rowCount() ? m_runs->run(row) : nullptr;
}

pipeline::DistillOptions DistillPanel::options() const
{
    pipeline::DistillOptions o;
    o.steps = m_steps->value();
    o.lr = m_lr->value();
    o.batch = m_batch->value();
    o.loss = model::DistillLoss(m_loss->currentData().toInt());
    o.warmup = m_warmup->value() / 100.0;
    o.clipNorm = m_clip->value();
    o.normGains = m_gains->isChecked();
    return o;
}

QString DistillPanel::lossName() const
{
    return options().loss == model::DistillLoss::Kl ? tr("KL") : tr("hidden-state MSE");
}

void DistillPanel::updateState()
{
    const auto run = chosenRun();
    m_refusal.clear();
    if (!run) m_refusal = tr("Quantize a run first: distillation trains a finished run's scales and zero-points.");
    else if (!run->result) m_refusal = tr("run %1 has no result").arg(run->id);
    else if (Status s = pipeline::checkDistillable(*run->result); !s.ok())
        m_refusal = tr("run %1 cannot be distilled: %2").arg(run->id).arg(QString::fromStdString(s.error().toString()));
    else if (!run->calib)
        m_refusal = tr("run %1 was restored from a project and has no calibration windows: quantize it again to "
                       "distill it")
                        .arg(run->id);
    else if (!m_checkpoint && !run->base) m_refusal = tr("no model is open");

    QString scope = m_gains->isChecked()
                        ? tr("Trains: per-group scales and zero-points and the RMSNorm gains; integer codes frozen.")
                        : tr("Trains: per-group scales and zero-points only; integer codes and RMSNorm gains frozen.");
    if (run && run->result && m_refusal.isEmpty()) {
        const pipeline::DistillScope sc = pipeline::distillScope(*run->result);
        scope +=
            QLatin1Char(' ') + (sc.trained == 1 ? tr("1 tensor trained") : tr("%1 tensors trained").arg(sc.trained));
        if (!sc.frozen.empty()) {
            QStringList names;
            for (std::size_t i = 0; i < sc.frozen.size() && i < 3; ++i)
                names << QString::fromStdString(sc.frozen[i]);
            if (sc.frozen.size() > 3) names << tr("…");
            scope += tr(", %1 left as they are: %2").arg(sc.frozen.size()).arg(names.join(QStringLiteral("; ")));
        }
        scope += QLatin1Char('.');
    }
    m_scope->setText(scope);
    m_runCombo->setToolTip((run ? runLabel(*run) + QLatin1Char('\n') : QString()) +
                           tr("The finished run whose scales and zero-points are trained; it stays as it is and the "
                              "distilled model becomes a new run"));
    m_reason->setText(m_refusal);
    m_reason->setVisible(!m_refusal.isEmpty());

    const pipeline::DistillOptions o = options();
    const bool resume = m_resume && run && m_resume->result == run->result && sameOptions(m_resume->options, o);
    if (m_resume && !resume && !m_busy) m_resume.reset(); // settings or run changed: start afresh next time
    m_run->setText(
        resume ? tr("Resume distillation (step %1 of %2)").arg(m_resume->state->step).arg(m_resume->state->steps)
               : tr("Distill"));
    m_run->setEnabled(!m_busy && m_refusal.isEmpty());
    if (!m_busy) m_estimateTimer->start();
    m_run->setToolTip(!m_refusal.isEmpty() ? m_refusal
                      : m_busy             ? tr("a distillation is running")
                                           : tr("Distil run %1 with these settings into a new run").arg(run->id));
}

pipeline::DistillRunRequest DistillPanel::buildRequest(const QuantRun& source) const
{
    pipeline::DistillRunRequest req;
    req.checkpoint = m_checkpoint;
    req.run = source.result;
    req.calibration = source.calib;
    req.base = source.base;
    req.options = options();
    if (const QString evalPath = defaultTextFile(m_checkpoint.get(), QStringLiteral("eval.txt"));
        m_evalPpl->isChecked() && !evalPath.isEmpty()) {
        req.evalTextPath = evalPath.toStdString();
        req.evaluateBefore = !source.perplexity;
    }
    req.evalOptions.ctx = m_evalCtx;
    return req;
}

void DistillPanel::refreshEstimate()
{
    const auto run = chosenRun();
    const int serial = ++m_estimateSerial;
    if (!run || !m_refusal.isEmpty()) {
        m_estimate->clear();
        return;
    }
    auto* watcher = new QFutureWatcher<QString>(this);
    connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, serial] {
        watcher->deleteLater();
        if (serial == m_estimateSerial) m_estimate->setText(watcher->result()); // else: settings changed meanwhile
    });
    // The pre-flight reads the evaluation text and measures the machine once: off the GUI thread.
    watcher->setFuture(QtConcurrent::run([req = buildRequest(*run)]() -> QString {
        auto e = pipeline::preflightDistillRequest(req);
        if (!e) return QString();
        QString s = QObject::tr("Estimate: %1").arg(QString::fromStdString(e->summary()));
        if (!e->fits()) s += QObject::tr(" — too large: %1").arg(QString::fromStdString(e->refusal()));
        return s;
    }));
}

void DistillPanel::onStep(int serial, const pipeline::DistillStepReport& report)
{
    if (serial != m_serial) return; // a late report of an older job
    m_curveLoss.append(report.loss);
    m_curveLr.append(report.lr);
    m_curveSteps = report.steps;
    if (!m_curveTimer->isActive()) m_curveTimer->start();
}

void DistillPanel::flushCurve() { m_chart->setCurve(m_curveLoss, m_curveLr, m_curveSteps, m_curveTitle); }

void DistillPanel::startDistill()
{
    updateState();
    const auto source = chosenRun();
    if (!source || !m_refusal.isEmpty()) {
        Q_EMIT distillFinished(false, m_refusal.isEmpty() ? tr("no run to distill") : m_refusal);
        return;
    }
    if (m_status->isBusy()) {
        Q_EMIT distillFinished(false, tr("another job is running"));
        return;
    }
    const int serial = ++m_serial;
    const pipeline::DistillOptions o = options();
    // Resume a cancelled distillation of this run with these settings, else start afresh.
    if (!(m_resume && m_resume->result == source->result && sameOptions(m_resume->options, o)))
        m_resume = Resume{source->result, o, std::make_shared<pipeline::DistillState>()};
    const std::shared_ptr<pipeline::DistillState> state = m_resume->state;
    m_curveLoss.clear();
    m_curveLr.clear();
    m_curveSteps = state->steps;
    m_curveTitle = tr("%1, run %2").arg(lossName()).arg(source->id);
    for (int i = 0; i < int(state->losses.size()); ++i) {
        m_curveLoss.append(state->losses[std::size_t(i)]);
        m_curveLr.append(pipeline::distillLearningRate(o, i, state->steps));
    }
    m_chart->clear();
    flushCurve();
    m_result->clear();

    pipeline::DistillRunRequest req = buildRequest(*source);
    // Each step's loss crosses to the GUI thread by a queued call (this panel outlives the job:
    // the runner, created before it, cancels and waits first).
    req.options.onStep = [this, serial](const pipeline::DistillStepReport& r) {
        QMetaObject::invokeMethod(this, [this, serial, r] { onStep(serial, r); }, Qt::QueuedConnection);
    };

    m_busy = true;
    updateState();
    m_runner->start<pipeline::DistillRunOutcome>(
        this, tr("Distilling run %1").arg(source->id),
        [req, state](RunContext& ctx) -> Result<pipeline::DistillRunOutcome> {
            pipeline::DistillRunRequest r = req;
            r.state = state.get(); // only this job touches it until it finishes
            return pipeline::distillRun(r, &ctx);
        },
        [this, serial, source, o, evalText = QString::fromStdString(req.evalTextPath.value_or(std::string()))](
            const JobOutcome<pipeline::DistillRunOutcome>& outcome) {
            m_busy = false;
            if (serial == m_serial) {
                m_curveTimer->stop();
                flushCurve();
            }
            if (!outcome.ok()) {
                const bool cancelled = outcome.error->code == ErrorCode::Cancelled;
                if (!cancelled || !m_resume || m_resume->state->step == 0) m_resume.reset();
                updateState();
                const QString msg =
                    cancelled
                        ? (m_resume
                               ? tr("cancelled at step %1 of %2").arg(m_resume->state->step).arg(m_resume->state->steps)
                               : tr("cancelled"))
                        : QString::fromStdString(outcome.error->toString());
                m_result->setText(cancelled
                                      ? tr("Distillation of run %1 %2; the run is unchanged.").arg(source->id).arg(msg)
                                      : tr("Distillation of run %1 failed: %2").arg(source->id).arg(msg));
                Q_EMIT distillFinished(false, msg);
                return;
            }
            m_resume.reset();
            const pipeline::DistillRunOutcome& d = *outcome.value;
            auto run = std::make_shared<QuantRun>(*source);
            run->id = 0;
            run->summary =
                tr("%1 + distill %2 steps (run %3)").arg(source->summary).arg(d.distill.steps).arg(source->id);
            run->result = d.result;
            run->perplexity = d.perplexity ? std::optional(d.perplexity->perplexity) : std::nullopt;
            run->kl = d.kl;
            run->seconds = d.seconds;
            run->name = tr("%1 + distill %2").arg(source->name).arg(d.distill.steps);
            run->evaluation = d.perplexity;
            run->evalText = d.perplexity ? evalText : QString();
            const std::optional<double> pplBefore = source->perplexity   ? source->perplexity
                                                    : d.perplexityBefore ? std::optional(d.perplexityBefore->perplexity)
                                                                         : std::nullopt;
            const std::optional<eval::KlStats> klBefore = source->kl ? source->kl : d.klBefore;
            if (m_sink) m_sink(run, source);

            // The whole curve as the job recorded it, and the loss before over every window.
            m_curveLoss.clear();
            m_curveLr.clear();
            for (std::size_t i = 0; i < d.distill.stepLoss.size(); ++i) {
                m_curveLoss.append(d.distill.stepLoss[i]);
                m_curveLr.append(pipeline::distillLearningRate(o, int(i), d.distill.steps));
            }
            m_curveSteps = d.distill.steps;
            flushCurve();
            m_chart->setBaseline(d.distill.lossBefore);

            QStringList parts;
            parts << tr("%1 loss over all windows %2 → %3")
                         .arg(lossName())
                         .arg(d.distill.lossBefore, 0, 'g', 4)
                         .arg(d.distill.lossAfter, 0, 'g', 4);
            if (run->perplexity)
                parts << tr("perplexity %1 → %2")
                             .arg(pplBefore ? QString::number(*pplBefore, 'f', 3) : QStringLiteral("—"))
                             .arg(*run->perplexity, 0, 'f', 3);
            if (run->kl)
                parts << tr("KL from the original %1 → %2")
                             .arg(klBefore ? QString::number(klBefore->mean, 'f', 4) : QStringLiteral("—"))
                             .arg(run->kl->mean, 0, 'f', 4);
            parts << tr("%1 steps, %2 tensors trained%3 in %4 s (%5 s with the evaluation)")
                         .arg(d.distill.steps)
                         .arg(d.distill.trainedTensors)
                         .arg(d.distill.normGains ? tr(" + norm gains") : QString())
                         .arg(d.distill.seconds, 0, 'f', 2)
                         .arg(d.seconds, 0, 'f', 2);
            const QString msg = tr("run %1 from run %2: %3").arg(run->id).arg(source->id).arg(parts.join(tr(" · ")));
            const QString timing = parts.takeLast();
            m_result->setText(tr("Run %1 (from run %2): ").arg(run->id).arg(source->id) + parts.join(tr(" · ")) +
                              QLatin1Char('\n') + timing);
            updateState();
            Q_EMIT distillFinished(true, msg);
        });
}

} // namespace qb::ui
