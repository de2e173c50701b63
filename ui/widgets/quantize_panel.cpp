#include "widgets/quantize_panel.h"

#include "charts/quant_charts.h"
#include "io/json_value.h"
#include "models/plan_table_model.h"
#include "models/quant_run_model.h"
#include "pipeline/model_loader.h"
#include "pipeline/perplexity_job.h"
#include "tasks/job_runner.h"
#include "widgets/activations_panel.h"
#include "widgets/job_status.h"
#include "widgets/plan_editor.h"
#include "widgets/run_compare_view.h"
#include "widgets/tensor_error_view.h"

#include <QCheckBox>
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
#include <QVBoxLayout>

#include <chrono>

namespace qb::ui {

namespace {

constexpr int kEvalCtx = 128;

QString planSummary(const pipeline::QuantPlan& plan)
{
    const auto& d = plan.defaults;
    const auto m = d.method.value_or(quant::Method::Rtn);
    const auto& t = quant::methodTraits(m);
    QString s = QString::fromLatin1(t.name.data(), qsizetype(t.name.size()));
    if (d.skip.value_or(false)) s = QObject::tr("skip");
    else {
        s += QStringLiteral(" %1b").arg(d.bits.value_or(4));
        const int g = d.groupSize.value_or(int(quant::methodParamDefault(m, "group_size").value_or(-1)));
        s += g > 0 ? QStringLiteral(" g%1").arg(g) : QStringLiteral(" per-ch");
        if (d.sym.value_or(false)) s += QStringLiteral(" sym");
    }
    if (!plan.rules.empty()) s += QObject::tr(" +%n rule(s)", nullptr, int(plan.rules.size()));
    return s;
}

// Maps the job's stage progress onto one bar for the whole run: 5 % preparation, 80 % layers
// (each layer: its seven tensors and the output pass), 15 % perplexity when asked for.
struct OverallProgress {
    RunContext& outer;
    int layers;
    bool ppl;
    static constexpr std::int64_t kTotal = 1000;
    double quantEnd() const { return ppl ? 0.85 : 1.0; }
    void set(double fraction, const std::string& text)
    {
        outer.setDetail(text);
        outer.setDone(std::int64_t(std::clamp(fraction, 0.0, 1.0) * double(kTotal)));
    }
    void quantize(const Progress& p)
    {
        double f = 0.0;
        if (p.stage == "calibrate") f = 0.0;
        else {
            int layer = 0;
            if (p.detail.rfind("layer ", 0) == 0) layer = std::atoi(p.detail.c_str() + 6);
            int k = 7; // the output pass
            if (p.stage != "evaluate")
                for (std::size_t i = 0; i < model::kAllLinears.size(); ++i)
                    if (p.detail.find(model::linearName(model::kAllLinears[i])) != std::string::npos) {
                        k = int(i);
                        break;
                    }
            f = (double(layer) + (double(k) + p.fraction()) / 8.0) / double(std::max(1, layers));
        }
        set(0.05 + f * (quantEnd() - 0.05), p.detail + " (" + p.stage + ")");
    }
};

} // namespace

QuantizePanel::QuantizePanel(JobRunner* runner, JobStatus* status, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_status(status), m_plan(new PlanEditor), m_runs(new QuantRunModel(this)),
      m_reports(new TensorReportModel(this)), m_reportTable(new QTableView),
      m_layerChart(new LayerErrorChart(tr("Per-layer error"))),
      m_tensorView(new TensorErrorView(runner)), m_compare(new RunCompareView(m_runs)), m_views(new QTabWidget),
      m_calibText(new QLineEdit), m_windows(new QSpinBox), m_length(new QSpinBox),
      m_evalPpl(new QCheckBox(tr("Perplexity after run"))), m_run(new QPushButton(tr("Quantize"))), m_totals(new QLabel)
{
    setObjectName(QStringLiteral("quantizePanel"));
    m_calibText->setObjectName(QStringLiteral("quantCalibText"));
    m_windows->setObjectName(QStringLiteral("quantWindows"));
    m_length->setObjectName(QStringLiteral("quantLength"));
    m_evalPpl->setObjectName(QStringLiteral("quantPerplexity"));
    m_run->setObjectName(QStringLiteral("quantizeButton"));
    m_reportTable->setObjectName(QStringLiteral("reportTable"));
    m_layerChart->setObjectName(QStringLiteral("layerErrorChart"));
    m_views->setObjectName(QStringLiteral("quantViews"));
    m_totals->setObjectName(QStringLiteral("quantTotals"));
    m_windows->setRange(1, 4096);
    m_windows->setValue(32);
    m_windows->setSuffix(tr(" windows"));
    m_length->setRange(8, 8192);
    m_length->setValue(128);
    m_length->setSuffix(tr(" tokens"));
    m_evalPpl->setChecked(true);
    m_calibText->setPlaceholderText(tr("calibration text file (UTF-8)"));
    m_run->setEnabled(false);

    m_reportTable->setModel(m_reports);
    m_reportTable->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_reportTable->setSelectionMode(QAbstractItemView::SingleSelection);
    m_reportTable->verticalHeader()->hide();
    m_reportTable->verticalHeader()->setDefaultSectionSize(22);
    m_reportTable->setColumnWidth(TensorReportModel::Tensor, 210);
    for (int c : {TensorReportModel::Method, TensorReportModel::Bits, TensorReportModel::Bpw, TensorReportModel::RelError})
        m_reportTable->setColumnWidth(c, 72);
    m_reportTable->horizontalHeader()->setStretchLastSection(true);
    auto* results = new QSplitter(Qt::Horizontal);
    results->addWidget(m_reportTable);
    results->addWidget(m_layerChart);
    results->setStretchFactor(0, 3);
    results->setStretchFactor(1, 2);

    m_views->addTab(m_plan, tr("Plan"));
    m_views->addTab(results, tr("Results"));
    m_views->addTab(m_tensorView, tr("Tensor error && what-if"));
    m_views->addTab(m_compare, tr("Runs && compare"));

    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Calibration:")));
    controls->addWidget(m_calibText, 1);
    controls->addWidget(m_windows);
    controls->addWidget(new QLabel(tr("×")));
    controls->addWidget(m_length);
    controls->addWidget(m_evalPpl);
    controls->addWidget(m_run);
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(controls);
    layout->addWidget(m_totals);
    layout->addWidget(m_views, 1);

    connect(m_run, &QPushButton::clicked, this, &QuantizePanel::startQuantize);
    connect(m_plan, &PlanEditor::planChanged, this, [this] {
        m_totals->setText(tr("Plan: %1").arg(m_plan->model()->totalsText()));
    });
    m_totals->setText(tr("Plan: %1").arg(m_plan->model()->totalsText()));
    connect(m_reportTable->selectionModel(), &QItemSelectionModel::currentRowChanged, this,
            [this](const QModelIndex& cur) {
                if (cur.isValid()) m_tensorView->showTensor(QString::fromStdString(m_reports->report(cur.row()).name));
            });
    connect(m_reportTable, &QTableView::doubleClicked, this, [this] { m_views->setCurrentWidget(m_tensorView); });
    connect(m_compare, &RunCompareView::exportRequested, this, &QuantizePanel::exportRequested);
}

void QuantizePanel::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
    m_base.reset();
    m_calibText->setText(defaultTextFile(m_checkpoint.get(), QStringLiteral("calib.txt")));
    m_plan->setConfig(m_checkpoint ? std::optional<ModelConfig>(m_checkpoint->config) : std::nullopt);
    m_run->setEnabled(m_checkpoint != nullptr);
}

void QuantizePanel::showTensor(const QString& name)
{
    m_plan->selectTensor(name);
    m_tensorView->showTensor(name);
}

void QuantizePanel::refreshLayerChart()
{
    std::vector<pipeline::TensorReport> all;
    for (int r = 0; r < m_reports->rowCount(); ++r) all.push_back(m_reports->report(r));
    const QString name = m_current ? tr("run %1").arg(m_current->id) : tr("running");
    m_layerChart->setRuns({name}, {meanErrorPerLayer(all)});
}

void QuantizePanel::onLayerDone(int serial, int layer, const std::vector<pipeline::TensorReport>& reports)
{
    if (serial != m_serial) return; // a late report of an older run
    m_reports->addLayer(layer, reports);
    refreshLayerChart();
    Q_EMIT layerFinished(layer);
}

void QuantizePanel::startQuantize()
{
    if (!m_checkpoint) return;
    if (m_status->isBusy()) {
        Q_EMIT quantizeFinished(false, tr("another job is running"));
        return;
    }
    const auto& resolved = m_plan->model()->resolved();
    if (resolved.tensors.empty()) {
        Q_EMIT quantizeFinished(false, tr("the plan does not resolve for this model"));
        return;
    }
    const int serial = ++m_serial;
    m_reports->clear();
    m_current.reset();
    m_layerChart->setRuns({}, {});
    auto checkpoint = m_checkpoint;
    auto base = m_base;
    const pipeline::QuantPlan plan = m_plan->model()->plan();
    const pipeline::ResolvedPlan rplan = resolved;
    const std::string calibPath = m_calibText->text().toStdString();
    const std::string evalPath = defaultTextFile(m_checkpoint.get(), QStringLiteral("eval.txt")).toStdString();
    pipeline::CalibrationOptions copt;
    copt.nsamples = m_windows->value();
    copt.seqlen = m_length->value();
    const bool evalPpl = m_evalPpl->isChecked();
    auto run = std::make_shared<QuantRun>();
    run->summary = planSummary(plan);
    run->planJson = QString::fromStdString(io::toJsonText(pipeline::quantPlanToJson(plan)));

    m_runner->start<QuantRun>(this, tr("Quantizing (%1)").arg(run->summary), [=, this](RunContext& ctx) -> Result<QuantRun> {
        const auto t0 = std::chrono::steady_clock::now();
        QuantRun out = *run;
        OverallProgress overall{ctx, int(checkpoint->config.numHiddenLayers), evalPpl};
        ctx.beginStage("quantize", OverallProgress::kTotal, "calibration");
        QB_TRY(tok, io::loadCheckpointTokenizer(*checkpoint));
        QB_TRY(text, pipeline::readTextFile(calibPath));
        QB_TRY(calib, pipeline::buildCalibrationSet(*tok, *text, copt, nullptr, calibPath));
        out.calib = std::make_shared<const pipeline::CalibrationSet>(std::move(*calib));
        if (ctx.isCancelled()) return RunContext::cancelledError("quantize");
        out.base = base;
        if (!out.base) {
            overall.set(0.02, "loading the model");
            QB_TRY(m, pipeline::loadModel(*checkpoint, nullptr));
            out.base = std::move(*m);
        }
        RunContext inner([&](const Progress& p) { overall.quantize(p); });
        inner.setCancelSource([&ctx] { return ctx.isCancelled(); });
        pipeline::QuantizeJobOptions opt;
        // The reports cross to the GUI thread by a queued call (this panel outlives the job: the
        // runner, created before it, cancels and waits first).
        opt.onLayerDone = [this, serial](int layer, const std::vector<pipeline::TensorReport>& reports) {
            QMetaObject::invokeMethod(
                this, [this, serial, layer, reports] { onLayerDone(serial, layer, reports); }, Qt::QueuedConnection);
        };
        QB_TRY(res, pipeline::runQuantize(*out.base, checkpoint.get(), rplan, *out.calib, opt, &inner));
        out.result = std::make_shared<const pipeline::QuantizeResult>(std::move(*res));
        if (evalPpl && !evalPath.empty()) {
            QB_TRY(etext, pipeline::readTextFile(evalPath));
            RunContext pctx([&](const Progress& p) {
                overall.set(0.85 + 0.15 * p.fraction(), "perplexity (" + p.stage + ")");
            });
            pctx.setCancelSource([&ctx] { return ctx.isCancelled(); });
            pipeline::PerplexityJobOptions popt;
            popt.ctx = kEvalCtx;
            QB_TRY(ppl, pipeline::runPerplexity(*out.result->model, *tok, *etext, popt, &pctx));
            out.perplexity = ppl->perplexity;
        }
        overall.set(1.0, "done");
        out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return out;
    }, [this, serial](const JobOutcome<QuantRun>& outcome) {
        m_run->setEnabled(m_checkpoint != nullptr);
        if (!outcome.ok()) {
            Q_EMIT quantizeFinished(false, outcome.error->code == ErrorCode::Cancelled
                                               ? tr("cancelled")
                                               : QString::fromStdString(outcome.error->toString()));
            return;
        }
        auto run = std::make_shared<QuantRun>(*outcome.value);
        run->id = m_nextId++;
        if (serial == m_serial && run->base) m_base = run->base;
        m_current = run;
        m_reports->setReports(run->result->tensors);
        refreshLayerChart();
        m_runs->append(run);
        m_tensorView->setRun(run);
        Q_EMIT quantizeFinished(true, tr("run %1: %2 bits/weight%3")
                                          .arg(run->id)
                                          .arg(run->result->bitsPerWeight, 0, 'f', 3)
                                          .arg(run->perplexity ? tr(", perplexity %1").arg(*run->perplexity, 0, 'f', 3)
                                                               : QString()));
    });
    m_run->setEnabled(false);
    m_views->setCurrentIndex(1);
}

} // namespace qb::ui

namespace qb::ui {

std::shared_ptr<const QuantRun> QuantizePanel::selectedRun() const
{
    const auto rows = m_compare->comparedRows();
    if (!rows.isEmpty()) return m_runs->run(rows.last());
    return m_current;
}

void QuantizePanel::restoreRuns(const std::vector<std::shared_ptr<QuantRun>>& runs)
{
    for (const auto& run : runs) {
        run->id = m_nextId++;
        m_runs->append(run);
        m_current = run;
    }
    if (m_current) {
        m_reports->setReports(m_current->result->tensors);
        refreshLayerChart();
    }
}

} // namespace qb::ui
