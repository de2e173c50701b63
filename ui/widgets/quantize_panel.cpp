#include "widgets/quantize_panel.h"

#include "charts/quant_charts.h"
#include "io/json_value.h"
#include "models/plan_table_model.h"
#include "models/quant_run_model.h"
#include "pipeline/importance.h"
#include "pipeline/project.h"
#include "pipeline/quantize_checkpoint.h"
#include "pipeline/workflows.h"
#include "tasks/job_runner.h"
#include "widgets/activations_panel.h"
#include "widgets/budget_planner.h"
#include "widgets/calibration_settings.h"
#include "widgets/distill_panel.h"
#include "widgets/job_status.h"
#include "widgets/plan_editor.h"
#include "widgets/quantize_resume.h"
#include "widgets/run_compare_view.h"
#include "widgets/run_header.h"
#include "widgets/tensor_error_view.h"

#include <QFutureWatcher>
#include <QtConcurrent/QtConcurrentRun>
#include <QCheckBox>
#include <QComboBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTabWidget>
#include <QTableView>
#include <QTimer>
#include <QVBoxLayout>

#include <chrono>

namespace qb::ui {

namespace {

constexpr int kEvalCtx = 128;

} // namespace

QuantizePanel::QuantizePanel(JobRunner* runner, JobStatus* status, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_status(status), m_plan(new PlanEditor), m_runs(new QuantRunModel(this)),
      m_reports(new TensorReportModel(this)), m_reportTable(new QTableView),
      m_layerChart(new LayerErrorChart(tr("Per-layer error"))), m_header(new RunHeader(m_runs)),
      m_tensorView(new TensorErrorView(runner)), m_compare(new RunCompareView(m_runs)),
      m_distill(new DistillPanel(runner, status, m_runs)), m_budget(new BudgetPlanner(runner, m_plan->model())),
      m_views(new QTabWidget), m_calibText(new QLineEdit), m_imatrix(new QLineEdit), m_calibPreset(new QComboBox),
      m_windows(new QSpinBox), m_length(new QSpinBox), m_evalPpl(new QCheckBox(tr("Perplexity and KL after run"))),
      m_run(new QPushButton(tr("Quantize"))), m_totals(new QLabel), m_estimateTimer(new QTimer(this))
{
    setObjectName(QStringLiteral("quantizePanel"));
    m_calibText->setObjectName(QStringLiteral("quantCalibText"));
    m_calibPreset->setObjectName(QStringLiteral("quantCalibPreset"));
    m_windows->setObjectName(QStringLiteral("quantWindows"));
    m_length->setObjectName(QStringLiteral("quantLength"));
    m_evalPpl->setObjectName(QStringLiteral("quantPerplexity"));
    m_run->setObjectName(QStringLiteral("quantizeButton"));
    m_reportTable->setObjectName(QStringLiteral("reportTable"));
    m_layerChart->setObjectName(QStringLiteral("layerErrorChart"));
    m_views->setObjectName(QStringLiteral("quantViews"));
    m_totals->setObjectName(QStringLiteral("quantTotals"));
    m_windows->setRange(1, 4096);
    m_windows->setValue(128);
    m_windows->setSuffix(tr(" windows"));
    m_length->setRange(8, 8192);
    m_length->setValue(512);
    m_length->setSuffix(tr(" tokens"));
    m_evalPpl->setChecked(true);
    m_evalPpl->setToolTip(tr("After quantizing, the perplexity of the result on the model's eval.txt and, on the same "
                             "windows, its KL divergence from the original model and how often both predict the "
                             "same top token"));
    m_calibText->setPlaceholderText(tr("calibration text file (UTF-8)"));
    m_imatrix->setObjectName(QStringLiteral("quantImatrix"));
    m_imatrix->setPlaceholderText(tr("importance matrix (optional)"));
    m_imatrix->setToolTip(tr("A llama.cpp importance matrix (imatrix .gguf or legacy .dat, e.g. exported from the "
                             "Activations tab): its mean x² per input column weights RTN's scale search and every "
                             "storage-container fit instead of the Hessian diagonal. Every quantized tensor needs "
                             "an entry of its width."));
    auto* imatrixBrowse = new QPushButton(tr("..."));
    imatrixBrowse->setToolTip(tr("Choose an importance matrix"));
    imatrixBrowse->setMaximumWidth(imatrixBrowse->fontMetrics().horizontalAdvance(QStringLiteral("...")) + 20);
    m_imatrix->setMaximumWidth(160);
    connect(imatrixBrowse, &QPushButton::clicked, this, [this] {
        auto* dialog = new QFileDialog(this, tr("Importance matrix"), QFileInfo(m_imatrix->text()).absolutePath(),
                                       tr("Importance matrices (*.gguf *.dat);;All files (*)"));
        dialog->setAttribute(Qt::WA_DeleteOnClose);
        dialog->setFileMode(QFileDialog::ExistingFile);
        connect(dialog, &QFileDialog::fileSelected, m_imatrix, &QLineEdit::setText);
        dialog->open();
    });
    m_run->setEnabled(false);

    m_reportTable->setModel(m_reports);
    m_reportTable->setTabKeyNavigation(false); // Tab leaves the table
    m_reportTable->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_reportTable->setSelectionMode(QAbstractItemView::SingleSelection);
    m_reportTable->verticalHeader()->hide();
    m_reportTable->verticalHeader()->setDefaultSectionSize(22);
    m_reportTable->setColumnWidth(TensorReportModel::Tensor, 210);
    for (int c :
         {TensorReportModel::Method, TensorReportModel::Bits, TensorReportModel::Bpw, TensorReportModel::RelError})
        m_reportTable->setColumnWidth(c, std::max(72, m_reportTable->horizontalHeader()->sectionSizeHint(c)));
    m_reportTable->horizontalHeader()->setStretchLastSection(true);
    auto* results = new QSplitter(Qt::Horizontal);
    results->setObjectName(QStringLiteral("quantResultsSplit")); // MainWindow remembers its state
    results->addWidget(m_reportTable);
    results->addWidget(m_layerChart);
    results->setStretchFactor(0, 3);
    results->setStretchFactor(1, 2);
    auto* resultsPage = new QWidget; // the run's name and figures above its results
    auto* resultsLayout = new QVBoxLayout(resultsPage);
    resultsLayout->setContentsMargins(0, 0, 0, 0);
    resultsLayout->addWidget(m_header);
    resultsLayout->addWidget(results, 1);
    m_tensorView->setPlanModel(m_plan->model());

    m_views->addTab(m_plan, tr("Plan"));
    m_views->addTab(m_budget, tr("Budget"));
    m_views->addTab(resultsPage, tr("Results"));
    m_views->addTab(m_tensorView, tr("Tensor error && what-if"));
    m_views->addTab(m_compare, tr("Runs && compare"));
    m_views->addTab(m_distill, tr("Distill"));
    m_distill->setEvalContext(kEvalCtx);
    m_distill->setRunSink([this](std::shared_ptr<QuantRun> run, std::shared_ptr<const QuantRun> source) {
        addDistilledRun(std::move(run), std::move(source));
    });
    connect(m_distill, &DistillPanel::distillFinished, this, &QuantizePanel::distillFinished);

    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Calibration:")));
    controls->addWidget(m_calibText, 1);
    controls->addWidget(m_calibPreset);
    controls->addWidget(m_windows);
    controls->addWidget(new QLabel(tr("×")));
    controls->addWidget(m_length);
    controls->addWidget(m_imatrix);
    controls->addWidget(imatrixBrowse);
    controls->addWidget(m_evalPpl);
    controls->addWidget(m_run);
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(controls);
    layout->addWidget(m_totals);
    layout->addWidget(m_views, 1);

    connect(m_run, &QPushButton::clicked, this, &QuantizePanel::startQuantize);
    m_budget->setRequestSource(
        [this] {
            pipeline::CalibrationSource c;
            c.textPath = m_calibText->text().toStdString();
            c.options.nsamples = m_windows->value();
            c.options.seqlen = m_length->value();
            return c;
        },
        [this] { return defaultTextFile(m_checkpoint.get(), QStringLiteral("eval.txt")); });
    connect(m_budget, &BudgetPlanner::tensorActivated, this, [this](const QString& name) {
        showTensor(name);
        m_views->setCurrentWidget(m_tensorView);
    });
    // Runs with a measured KL appear beside the predicted path.
    auto runPoints = [this] {
        std::vector<BudgetPlanner::RunPoint> pts;
        for (int r = 0; r < m_runs->rowCount(); ++r) {
            const auto run = m_runs->run(r);
            if (run && run->result && run->kl) pts.push_back({run->result->bitsPerWeight, run->kl->mean, run->label()});
        }
        m_budget->setRunPoints(pts);
    };
    connect(m_runs, &QAbstractItemModel::rowsInserted, this, runPoints);
    connect(m_runs, &QAbstractItemModel::modelReset, this, runPoints);
    connect(m_runs, &QAbstractItemModel::dataChanged, this, runPoints);
    // A reopened run rebuilt for inspection replaces its snapshot (compare and what-if use it too).
    connect(m_tensorView, &TensorErrorView::runRebuilt, this, [this](std::shared_ptr<const QuantRun> run) {
        m_runs->replaceRun(run);
        if (m_current && m_current->id == run->id) m_current = run;
    });
    // A renamed run: its new snapshot replaces the one shown.
    connect(m_runs, &QuantRunModel::runRenamed, this, [this](int id) {
        const auto run = m_runs->run(m_runs->rowOfId(id));
        m_tensorView->updateRun(run);
        if (m_current && m_current->id == id) {
            m_current = run;
            refreshLayerChart();
        }
    });
    m_totals->setWordWrap(true);
    m_estimateTimer->setSingleShot(true);
    m_estimateTimer->setInterval(300);
    connect(m_estimateTimer, &QTimer::timeout, this, &QuantizePanel::refreshEstimate);
    connect(m_plan, &PlanEditor::planChanged, this, [this] {
        updateTotals();
        m_estimateTimer->start();
    });
    for (QSpinBox* spin : {m_windows, m_length})
        connect(spin, &QSpinBox::valueChanged, m_estimateTimer, qOverload<>(&QTimer::start));
    connect(m_evalPpl, &QCheckBox::toggled, m_estimateTimer, qOverload<>(&QTimer::start));
    connect(m_calibText, &QLineEdit::editingFinished, m_estimateTimer, qOverload<>(&QTimer::start));
    updateTotals();
    connect(m_reportTable->selectionModel(), &QItemSelectionModel::currentRowChanged, this,
            [this](const QModelIndex& cur) {
                if (cur.isValid()) m_tensorView->showTensor(QString::fromStdString(m_reports->report(cur.row()).name));
            });
    connect(m_reportTable, &QTableView::doubleClicked, this, [this] { m_views->setCurrentWidget(m_tensorView); });
    connect(m_compare, &RunCompareView::exportRequested, this, &QuantizePanel::exportRequested);
}

void QuantizePanel::setCalibrationSettings(CalibrationSettings* settings)
{
    settings->bind(m_calibText, m_windows, m_length, m_calibPreset);
}

void QuantizePanel::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
    m_base.reset();
    m_calibText->setText(defaultTextFile(m_checkpoint.get(), QStringLiteral("calib.txt")));
    m_plan->setConfig(m_checkpoint ? std::optional<ModelConfig>(m_checkpoint->config) : std::nullopt);
    m_budget->setCheckpoint(m_checkpoint);
    m_distill->setCheckpoint(m_checkpoint);
    m_tensorView->setCheckpoint(m_checkpoint);
    m_run->setEnabled(m_checkpoint != nullptr);
    m_plan->model()->setGgufOverheadBytes(0);
    m_estimate.clear();
    updateTotals();
    if (m_checkpoint) m_estimateTimer->start();
    if (m_checkpoint) {
        // The GGUF header and tokenizer size, off the GUI thread (the tokenizer is parsed).
        auto* watcher = new QFutureWatcher<std::uint64_t>(this);
        connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, ck = m_checkpoint] {
            watcher->deleteLater();
            if (ck == m_checkpoint) m_plan->model()->setGgufOverheadBytes(watcher->result());
        });
        watcher->setFuture(QtConcurrent::run([ck = m_checkpoint]() -> std::uint64_t {
            auto r = pipeline::ggufOverheadBytes(*ck);
            return r ? *r : 0;
        }));
    }
}

void QuantizePanel::showTensor(const QString& name)
{
    m_plan->selectTensor(name);
    m_tensorView->showTensor(name);
}

void QuantizePanel::refreshLayerChart()
{
    std::vector<pipeline::TensorReport> all;
    for (int r = 0; r < m_reports->rowCount(); ++r)
        all.push_back(m_reports->report(r));
    const QString name = m_current ? m_current->label() : tr("running");
    const LayerErrors errors = layerErrorsOf(all, tensorParamCounts(all, m_checkpoint.get()));
    m_layerChart->setRuns({name}, {errors.values}, errors.weighted);
}

void QuantizePanel::onLayerDone(int serial, int layer, const std::vector<pipeline::TensorReport>& reports)
{
    if (serial != m_serial) return; // a late report of an older run
    m_reports->addLayer(layer, reports);
    refreshLayerChart();
    Q_EMIT layerFinished(layer);
}

pipeline::QuantizeRequest QuantizePanel::buildRequest(int serial)
{
    pipeline::QuantizeRequest req;
    req.checkpoint = m_checkpoint;
    req.plan = m_plan->model()->plan();
    req.calibration.textPath = m_calibText->text().toStdString();
    req.calibration.options.nsamples = m_windows->value();
    req.calibration.options.seqlen = m_length->value();
    if (const QString evalPath = defaultTextFile(m_checkpoint.get(), QStringLiteral("eval.txt"));
        m_evalPpl->isChecked() && !evalPath.isEmpty())
        req.evalTextPath = evalPath.toStdString();
    req.evalOptions.ctx = kEvalCtx;
    req.base = m_base;         // the original model of an earlier run, reused
    req.keepBaseLayers = true; // the what-if analysis needs the original layers
    // The reports cross to the GUI thread by a queued call (this panel outlives the job: the
    // runner, created before it, cancels and waits first).
    req.options.onLayerDone = [this, serial](int layer, const std::vector<pipeline::TensorReport>& reports) {
        QMetaObject::invokeMethod(
            this, [this, serial, layer, reports] { onLayerDone(serial, layer, reports); }, Qt::QueuedConnection);
    };
    return req;
}

void QuantizePanel::updateTotals()
{
    QString text = tr("Plan: %1").arg(m_plan->model()->totalsText());
    if (!m_estimate.isEmpty()) text += tr(" · Estimate: %1").arg(m_estimate);
    m_totals->setText(text);
}

void QuantizePanel::refreshEstimate()
{
    if (!m_checkpoint || m_plan->model()->resolved().tensors.empty()) return;
    pipeline::QuantizeRequest req = buildRequest(0);
    req.options.onLayerDone = nullptr;
    const int serial = ++m_estimateSerial;
    auto* watcher = new QFutureWatcher<QString>(this);
    connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, serial] {
        watcher->deleteLater();
        if (serial != m_estimateSerial) return; // settings changed meanwhile
        m_estimate = watcher->result();
        updateTotals();
    });
    watcher->setFuture(QtConcurrent::run([req]() -> QString {
        auto e = pipeline::preflightQuantizeRequest(req);
        if (!e) return QString();
        QString s = QString::fromStdString(e->summary());
        if (!e->fits()) s += QObject::tr(" — too large: %1").arg(QString::fromStdString(e->refusal()));
        return s;
    }));
}

void QuantizePanel::startQuantize()
{
    if (!m_checkpoint) return;
    if (m_status->isBusy()) {
        Q_EMIT quantizeFinished(false, tr("another job is running"));
        return;
    }
    if (m_plan->model()->resolved().tensors.empty()) {
        Q_EMIT quantizeFinished(false, tr("the plan does not resolve for this model"));
        return;
    }
    // A checkpoint of this very run (model, plan, calibration) left by a crash: ask first.
    const QString dir = quantizeCheckpointDir(*m_checkpoint, buildRequest(0), m_imatrix->text().trimmed());
    if (const auto interrupted = interruptedQuantizeRun(dir)) {
        m_run->setEnabled(false);
        askResumeQuantize(this, interrupted->first, interrupted->second, [this, dir](ResumeAnswer a) {
            m_run->setEnabled(m_checkpoint != nullptr);
            if (a != ResumeAnswer::Cancel) launchQuantize(dir, a == ResumeAnswer::Resume);
        });
        return;
    }
    launchQuantize(dir, false);
}

void QuantizePanel::launchQuantize(const QString& checkpointDir, bool resume)
{
    if (!m_checkpoint) return;
    if (m_status->isBusy()) { // started while the resume question was open
        Q_EMIT quantizeFinished(false, tr("another job is running"));
        return;
    }
    const auto& resolved = m_plan->model()->resolved();
    const int serial = ++m_serial;
    // The live table fills layer by layer; the last good run comes back if this one fails.
    std::shared_ptr<const QuantRun> lastGood = m_current;
    m_reports->clear();
    m_current.reset();
    m_layerChart->setRuns({}, {});
    m_header->showRunning(QString::fromStdString(pipeline::describeQuantPlan(m_plan->model()->plan())));
    const pipeline::QuantPlan plan = m_plan->model()->plan();
    pipeline::QuantizeRequest req = buildRequest(serial);
    // Checkpoints after every layer; the user was asked about an existing one (overwrite).
    req.options.checkpoint = {checkpointDir.toStdString(), resume, true};
    auto run = std::make_shared<QuantRun>();
    run->summary = QString::fromStdString(pipeline::describeQuantPlan(plan));
    run->plan = pipeline::quantPlanToJson(plan);
    run->calibration = req.calibration.toJson();

    m_runner->start<QuantRun>(
        this, tr("Quantizing (%1)").arg(run->summary),
        [req, run, resolved,
         imatrixPath = m_imatrix->text().trimmed().toStdString()](RunContext& ctx) -> Result<QuantRun> {
            pipeline::QuantizeRequest r = req;
            if (!imatrixPath.empty()) { // read and checked against the plan before anything runs
                QB_TRY(m, io::readImportanceMatrix(imatrixPath));
                QB_TRY_STATUS(pipeline::checkImportanceMatrix(*m, resolved, imatrixPath));
                r.options.importance = std::make_shared<const io::ImportanceMatrix>(std::move(*m));
            }
            Result<pipeline::QuantizeOutcome> outcome = pipeline::quantizeModel(r, &ctx);
            // Cancel is the user's choice: its checkpoint goes; a failure keeps it for a resume.
            if (!outcome.ok() && outcome.error().code == ErrorCode::Cancelled)
                (void)pipeline::removeQuantizeCheckpoint(r.options.checkpoint.dir);
            pruneQuantizeCheckpointDirs(QString::fromStdString(r.options.checkpoint.dir));
            if (!outcome.ok()) return outcome.error();
            QuantRun out = *run;
            out.result = outcome->result;
            out.calib = outcome->calibration;
            out.base = outcome->base;
            if (outcome->perplexity) out.perplexity = outcome->perplexity->perplexity;
            out.evaluation = outcome->perplexity;
            if (r.evalTextPath) out.evalText = QString::fromStdString(*r.evalTextPath);
            out.kl = outcome->kl;
            out.name = QString::fromStdString(pipeline::defaultRunName(*out.result));
            out.seconds = outcome->seconds;
            return out;
        },
        [this, serial, lastGood](const JobOutcome<QuantRun>& outcome) {
            m_run->setEnabled(m_checkpoint != nullptr);
            if (!outcome.ok()) {
                if (serial == m_serial && lastGood) { // never leave the last good results wiped
                    m_current = lastGood;
                    m_reports->setReports(lastGood->result->tensors);
                    refreshLayerChart();
                }
                if (serial == m_serial) m_header->showRun(lastGood ? lastGood->id : 0);
                Q_EMIT quantizeFinished(false, outcome.error->code == ErrorCode::Cancelled
                                                   ? tr("cancelled")
                                                   : QString::fromStdString(outcome.error->toString()));
                return;
            }
            auto run = std::make_shared<QuantRun>(*outcome.value);
            run->id = m_nextId++;
            run->tensorParams = tensorParamCounts(run->result->tensors, m_checkpoint.get());
            if (serial == m_serial && run->base) m_base = run->base;
            m_current = run;
            m_reports->setReports(run->result->tensors);
            refreshLayerChart();
            m_runs->append(run);
            m_header->showRun(run->id);
            m_tensorView->setRun(run);
            Q_EMIT quantizeFinished(
                true, tr("%1: %2 bits/weight%3%4")
                          .arg(run->label())
                          .arg(run->result->bitsPerWeight, 0, 'f', 3)
                          .arg(run->perplexity ? tr(", perplexity %1").arg(*run->perplexity, 0, 'f', 3) : QString())
                          .arg(run->kl ? tr(", KL %1, top-1 %2 %")
                                             .arg(run->kl->mean, 0, 'f', 4)
                                             .arg(100 * run->kl->top1Agreement, 0, 'f', 1)
                                       : QString()));
        });
    m_run->setEnabled(false);
    m_views->setCurrentWidget(m_header->parentWidget()); // the results, filling layer by layer
}

} // namespace qb::ui

namespace qb::ui {

std::shared_ptr<const QuantRun> QuantizePanel::selectedRun() const
{
    const auto rows = m_compare->comparedRows();
    if (!rows.isEmpty()) return m_runs->run(rows.last());
    return m_current;
}

void QuantizePanel::addDistilledRun(std::shared_ptr<QuantRun> run, std::shared_ptr<const QuantRun> source)
{
    run->id = m_nextId++;
    m_current = run;
    m_reports->setReports(run->result->tensors);
    refreshLayerChart();
    m_runs->append(run);
    m_header->showRun(run->id);
    m_tensorView->setRun(run);
    // Compare the distilled run with the run it came from (perplexity and KL before and after).
    const auto& all = m_runs->runs();
    const auto it = std::find(all.begin(), all.end(), source);
    if (it != all.end()) {
        const int from = int(it - all.begin()), to = m_runs->rowCount() - 1;
        QItemSelection sel(m_runs->index(from, 0), m_runs->index(from, QuantRunModel::ColumnCount - 1));
        sel.select(m_runs->index(to, 0), m_runs->index(to, QuantRunModel::ColumnCount - 1));
        m_compare->table()->selectionModel()->select(sel, QItemSelectionModel::ClearAndSelect);
    }
}

void QuantizePanel::restoreRuns(const std::vector<std::shared_ptr<QuantRun>>& runs)
{
    for (const auto& run : runs) {
        run->id = m_nextId++;
        if (run->tensorParams.empty() && run->result)
            run->tensorParams = tensorParamCounts(run->result->tensors, m_checkpoint.get());
        m_runs->append(run);
        m_current = run;
    }
    if (m_current) {
        m_reports->setReports(m_current->result->tensors);
        refreshLayerChart();
        m_header->showRun(m_current->id);
        m_tensorView->setRun(m_current); // its tensors are rebuilt for inspection when one is shown
    }
}

} // namespace qb::ui
