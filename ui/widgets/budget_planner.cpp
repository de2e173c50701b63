#include "widgets/budget_planner.h"

#include "models/plan_table_model.h"
#include "tasks/job_runner.h"

#include <QChart>
#include <QChartView>
#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineSeries>
#include <QPushButton>
#include <QScatterSeries>
#include <QSlider>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardPaths>
#include <QTableWidget>
#include <QUndoStack>
#include <QVBoxLayout>
#include <QLogValueAxis>
#include <QValueAxis>

#include <algorithm>
#include <numeric>
#include <cmath>

namespace qb::ui {

namespace {

constexpr int kSliderSteps = 1000;

const char* kKindLabels[] = {"q", "k", "v", "o", "gate", "up", "down"};

// Light yellow (small) to dark red (large), on a log scale between lo and hi.
QColor heatColour(double v, double lo, double hi)
{
    if (!(v > 0) || !(hi > lo)) return QColor(245, 245, 245);
    const double t = std::clamp((std::log(v) - std::log(lo)) / (std::log(hi) - std::log(lo)), 0.0, 1.0);
    return QColor::fromHsvF(0.16 * (1.0 - t), 0.15 + 0.8 * t, 1.0 - 0.35 * t);
}

} // namespace

BudgetPlanner::BudgetPlanner(JobRunner* runner, PlanTableModel* plan, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_plan(plan), m_target(new QComboBox),
      m_analyze(new QPushButton(tr("Analyze sensitivity"))), m_measureCount(new QSpinBox),
      m_measure(new QPushButton(tr("Measure KL"))), m_status(new QLabel), m_heatCandidate(new QComboBox),
      m_heat(new QTableWidget), m_measuredTable(new QTableWidget), m_chart(new QChartView), m_path(new QLineSeries),
      m_point(new QScatterSeries), m_runs(new QScatterSeries), m_x(new QValueAxis), m_y(new QLogValueAxis),
      m_slider(new QSlider(Qt::Horizontal)), m_budget(new QDoubleSpinBox),
      m_tieQkv(new QCheckBox(tr("Same setting for q/k/v"))), m_keepEdits(new QCheckBox(tr("Keep hand edits"))),
      m_rangeKind(new QComboBox), m_minBits(new QSpinBox), m_maxBits(new QSpinBox),
      m_releaseEdits(new QPushButton(tr("Release"))), m_allocLabel(new QLabel)
{
    setObjectName(QStringLiteral("budgetPlanner"));
    m_target->setObjectName(QStringLiteral("budgetTarget"));
    m_analyze->setObjectName(QStringLiteral("budgetAnalyze"));
    m_measure->setObjectName(QStringLiteral("budgetMeasure"));
    m_measureCount->setObjectName(QStringLiteral("budgetMeasureCount"));
    m_heat->setObjectName(QStringLiteral("budgetHeatMap"));
    m_heat->setTabKeyNavigation(false); // Tab leaves the table
    m_slider->setObjectName(QStringLiteral("budgetSlider"));
    m_budget->setObjectName(QStringLiteral("budgetValue"));
    m_target->addItem(tr("Free grids (GPTQ 2–8 bits)"), QStringLiteral("none"));
    m_target->addItem(tr("GGUF types (Q2_K–Q8_0)"), QStringLiteral("gguf"));
    m_target->addItem(tr("GPTQ checkpoint (2/3/4/8 bits)"), QStringLiteral("gptq"));
    m_target->setToolTip(tr("The candidate settings each tensor may get, for the file you will export"));
    m_analyze->setToolTip(tr("One calibration pass: every decoder linear quantized with every candidate, its Hessian-"
                             "weighted output error recorded (cached: reopening the same model and calibration "
                             "is instant)"));
    m_measureCount->setRange(1, 100000);
    m_measureCount->setValue(8);
    m_measureCount->setSuffix(tr(" tensors"));
    m_measure->setToolTip(tr("The true effect: the model with only that tensor quantized (at the smallest candidate) "
                             "against the original, KL divergence of the next-token distributions on the "
                             "evaluation text. Calibrates the predicted damage in nats."));
    m_measure->setEnabled(false);
    m_status->setWordWrap(true);
    m_status->setText(tr("Analyze to see how much each tensor suffers under each setting."));

    m_heat->setColumnCount(7);
    QStringList kinds;
    for (const char* k : kKindLabels)
        kinds << QString::fromLatin1(k);
    m_heat->setHorizontalHeaderLabels(kinds);
    m_heat->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_heat->setSelectionMode(QAbstractItemView::SingleSelection);
    m_heat->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    m_heat->verticalHeader()->setDefaultSectionSize(20);
    m_heat->setToolTip(tr("Predicted damage per tensor at the chosen candidate; click a cell to see the tensor"));
    m_heatCandidate->setToolTip(tr("The candidate whose damage the heat map shows, or the measured KL"));
    connect(m_heat, &QTableWidget::cellClicked, this, [this](int row, int col) {
        if (!m_atlas) return;
        for (const auto& t : m_atlas->tensors)
            if (t.layer == row && int(t.linear) == col) Q_EMIT tensorActivated(QString::fromStdString(t.name));
    });
    connect(m_heatCandidate, &QComboBox::currentIndexChanged, this, [this] { refreshHeatMap(); });

    auto* chart = new QChart;
    chart->setTitle(tr("Predicted damage against size"));
    chart->legend()->setAlignment(Qt::AlignBottom);
    m_path->setName(tr("allocator path"));
    m_point->setName(tr("current plan"));
    m_point->setMarkerSize(11);
    m_runs->setName(tr("runs (measured KL)"));
    m_runs->setMarkerSize(9);
    m_runs->setMarkerShape(QScatterSeries::MarkerShapeRectangle);
    for (QAbstractSeries* s : std::initializer_list<QAbstractSeries*>{m_path, m_point, m_runs})
        chart->addSeries(s);
    m_x->setTitleText(tr("bits per weight"));
    m_y->setTitleText(tr("predicted damage"));
    m_x->setLabelFormat(QStringLiteral("%.2f"));
    m_y->setLabelFormat(QStringLiteral("%.0e"));
    m_y->setMinorTickCount(0);
    m_y->setBase(10);
    chart->addAxis(m_x, Qt::AlignBottom);
    chart->addAxis(m_y, Qt::AlignLeft);
    for (QAbstractSeries* s : std::initializer_list<QAbstractSeries*>{m_path, m_point, m_runs}) {
        s->attachAxis(m_x);
        s->attachAxis(m_y);
    }
    m_chart->setChart(chart);
    m_chart->setObjectName(QStringLiteral("budgetChart"));
    m_chart->setAccessibleName(chart->title());
    m_chart->setRenderHint(QPainter::Antialiasing);
    m_chart->setMinimumWidth(260);

    m_slider->setRange(0, kSliderSteps);
    m_slider->setEnabled(false);
    m_budget->setEnabled(false);
    m_budget->setDecimals(3);
    m_budget->setSingleStep(0.05);
    m_budget->setKeyboardTracking(false);
    m_allocLabel->setWordWrap(true);
    m_allocLabel->setObjectName(QStringLiteral("budgetAllocation"));
    connect(m_slider, &QSlider::valueChanged, this, &BudgetPlanner::onSlider);
    // One drag is one undo step.
    connect(m_slider, &QSlider::sliderPressed, this, [this] { m_plan->undoStack()->beginMacro(tr("Budget")); });
    connect(m_slider, &QSlider::sliderReleased, this, [this] { m_plan->undoStack()->endMacro(); });
    connect(m_budget, &QDoubleSpinBox::valueChanged, this, [this](double v) {
        if (m_slider->isSliderDown()) return;
        allocate(bytesBudget() ? v * 1e6 : v);
    });
    connect(m_tieQkv, &QCheckBox::toggled, this, [this] {
        refreshPareto();
        if (m_allocation) allocate(m_allocation->budgetValue);
    });
    // Constraints of the allocation: hand edits kept, a bits range for every tensor.
    m_keepEdits->setObjectName(QStringLiteral("budgetKeepEdits"));
    m_keepEdits->setChecked(true);
    m_keepEdits->setToolTip(tr("Tensors you edit in the plan table after an allocation keep that setting when the "
                               "budget moves (when it is one of the candidates)"));
    m_releaseEdits->setObjectName(QStringLiteral("budgetReleaseEdits"));
    m_releaseEdits->setToolTip(tr("Let the allocator choose the hand-edited tensors again"));
    m_minBits->setObjectName(QStringLiteral("budgetMinBits"));
    m_maxBits->setObjectName(QStringLiteral("budgetMaxBits"));
    for (QSpinBox* b : {m_minBits, m_maxBits}) {
        b->setRange(1, 16);
        b->setKeyboardTracking(false);
    }
    m_minBits->setValue(1);
    m_maxBits->setValue(16);
    m_ranges.fill({1, 16});
    m_rangeKind->setObjectName(QStringLiteral("budgetRangeKind"));
    m_rangeKind->setAccessibleName(tr("Tensor kind the bits range applies to"));
    m_rangeKind->addItem(tr("every kind"), -1);
    for (model::Linear l : model::kAllLinears) {
        QString n = QString::fromLatin1(model::linearName(l));
        n = n.mid(n.indexOf(QLatin1Char('.')) + 1).remove(QStringLiteral("_proj"));
        m_rangeKind->addItem(n, int(l));
    }
    // The spin boxes show the chosen kind's range (every kind: the first kind's).
    connect(m_rangeKind, &QComboBox::currentIndexChanged, this, [this] {
        const int k = std::max(0, m_rangeKind->currentData().toInt());
        const QSignalBlocker b1(m_minBits), b2(m_maxBits);
        m_minBits->setValue(m_ranges[std::size_t(k)].first);
        m_maxBits->setValue(m_ranges[std::size_t(k)].second);
    });
    auto storeRange = [this] {
        const int k = m_rangeKind->currentData().toInt();
        for (int i = 0; i < int(m_ranges.size()); ++i)
            if (k < 0 || k == i) m_ranges[std::size_t(i)] = {m_minBits->value(), m_maxBits->value()};
    };
    connect(m_minBits, &QSpinBox::valueChanged, this, storeRange);
    connect(m_maxBits, &QSpinBox::valueChanged, this, storeRange);
    m_minBits->setAccessibleName(tr("Fewest bits any tensor may get"));
    m_maxBits->setAccessibleName(tr("Most bits any tensor may get (16: kept in F16 allowed)"));
    m_minBits->setToolTip(m_minBits->accessibleName());
    m_maxBits->setToolTip(m_maxBits->accessibleName());
    auto reallocate = [this] {
        refreshPareto();
        if (m_allocation) allocate(m_allocation->budgetValue);
    };
    connect(m_minBits, &QSpinBox::valueChanged, this, reallocate);
    connect(m_maxBits, &QSpinBox::valueChanged, this, reallocate);
    connect(m_keepEdits, &QCheckBox::toggled, this, reallocate);
    connect(m_releaseEdits, &QPushButton::clicked, this, [this, reallocate] {
        m_kept.clear();
        m_unmatched.clear();
        reallocate();
    });
    connect(m_analyze, &QPushButton::clicked, this, &BudgetPlanner::analyze);
    connect(m_measure, &QPushButton::clicked, this, &BudgetPlanner::measure);

    auto* top = new QHBoxLayout;
    top->addWidget(new QLabel(tr("Candidates:")));
    top->addWidget(m_target);
    top->addWidget(m_analyze);
    top->addSpacing(12);
    top->addWidget(m_measureCount);
    top->addWidget(m_measure);
    top->addStretch(1);
    auto* left = new QWidget;
    auto* leftLayout = new QVBoxLayout(left);
    leftLayout->setContentsMargins(0, 0, 0, 0);
    auto* show = new QHBoxLayout;
    show->addWidget(new QLabel(tr("Heat map of:")));
    show->addWidget(m_heatCandidate, 1);
    leftLayout->addLayout(show);
    leftLayout->addWidget(m_heat, 1);
    // Proxy and measured KL side by side for the measured tensors (hidden until there are some).
    m_measuredTable->setObjectName(QStringLiteral("budgetMeasuredTable"));
    m_measuredTable->setColumnCount(5);
    m_measuredTable->setHorizontalHeaderLabels(
        {tr("Measured tensor"), tr("At"), tr("Proxy"), tr("KL (nats)"), tr("Rank proxy / KL")});
    m_measuredTable->verticalHeader()->hide();
    m_measuredTable->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_measuredTable->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    m_measuredTable->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
    m_measuredTable->setMaximumHeight(140);
    m_measuredTable->setAccessibleName(tr("Proxy and measured KL of the measured tensors"));
    m_measuredTable->hide();
    leftLayout->addWidget(m_measuredTable);
    auto* split = new QSplitter(Qt::Horizontal);
    split->setObjectName(QStringLiteral("budgetSplit")); // MainWindow remembers its state
    split->addWidget(left);
    split->addWidget(m_chart);
    split->setStretchFactor(0, 1);
    split->setStretchFactor(1, 1);
    left->setMinimumWidth(7 * 52 + 30); // seven kinds, two significant digits each, unelided
    auto* bottom = new QHBoxLayout;
    bottom->addWidget(new QLabel(tr("Budget:")));
    bottom->addWidget(m_slider, 1);
    bottom->addWidget(m_budget);
    bottom->addWidget(m_tieQkv);
    auto* bitsLabel = new QLabel(tr("Bits of"));
    bitsLabel->setBuddy(m_rangeKind);
    bottom->addWidget(bitsLabel);
    bottom->addWidget(m_rangeKind);
    bottom->addWidget(new QLabel(tr("from")));
    bottom->addWidget(m_minBits);
    bottom->addWidget(new QLabel(tr("to")));
    bottom->addWidget(m_maxBits);
    bottom->addWidget(m_keepEdits);
    bottom->addWidget(m_releaseEdits);
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(top);
    layout->addWidget(m_status);
    layout->addWidget(split, 1);
    layout->addLayout(bottom);
    layout->addWidget(m_allocLabel);
}

void BudgetPlanner::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
    m_atlas.reset();
    m_allocation.reset();
    m_written.clear();
    m_kept.clear();
    m_unmatched.clear();
    m_front.clear();
    m_analyze->setEnabled(m_checkpoint != nullptr);
    m_measure->setEnabled(false);
    refreshHeatMap();
    refreshPareto();
    refreshStatus();
}

void BudgetPlanner::setRequestSource(std::function<pipeline::CalibrationSource()> calibration,
                                     std::function<QString()> evalText)
{
    m_calibration = std::move(calibration);
    m_evalText = std::move(evalText);
}

void BudgetPlanner::setRunPoints(const std::vector<RunPoint>& points)
{
    m_runPoints = points;
    refreshPareto();
}

bool BudgetPlanner::bytesBudget() const { return m_atlas && !m_atlas->embedType.empty(); }

namespace {

// The fields of a resolved tensor that a candidate decides, as one comparable string.
std::string settingKey(const pipeline::TensorPlan& t)
{
    if (t.skip) return "skip:" + t.target;
    return std::to_string(int(t.method)) + ":" + std::to_string(t.options.grid.bits) + ":" +
           std::to_string(t.options.grid.groupSize) + ":" + (t.options.grid.sym ? "s" : "a") + ":" + t.target;
}

// Whether the tensor as resolved is what candidate settings `c` give (the fields they set).
bool matchesCandidate(const pipeline::PlanSettings& c, const pipeline::TensorPlan& t)
{
    if (c.skip.value_or(false)) return t.skip && (!c.target || c.target->empty() || *c.target == t.target);
    if (t.skip) return false;
    if (c.method && *c.method != t.method) return false;
    if (c.target) {
        const std::string want = *c.target == "none" ? std::string() : *c.target;
        if (want != t.target) return false;
    }
    if (c.bits && *c.bits != t.options.grid.bits) return false;
    if (c.groupSize && *c.groupSize != t.options.grid.groupSize) return false;
    if (c.sym && *c.sym != t.options.grid.sym) return false;
    return true;
}

} // namespace

void BudgetPlanner::collectEdits()
{
    if (!m_atlas || m_written.empty()) return;
    const bool gguf = !m_atlas->embedType.empty();
    for (const pipeline::TensorPlan& t : m_plan->resolved().tensors) {
        const auto w = m_written.find(t.name);
        if (w == m_written.end() || w->second == settingKey(t) || m_kept.count(t.name)) continue;
        m_unmatched.erase(t.name);
        bool found = false;
        for (const pipeline::SensitivityCandidate& c : m_atlas->candidates)
            if (matchesCandidate(pipeline::candidatePlanSettings(c, gguf), t)) {
                m_kept[t.name] = c.label;
                found = true;
                break;
            }
        if (!found) m_unmatched.insert(t.name);
    }
}

pipeline::AllocationConstraints BudgetPlanner::constraints()
{
    pipeline::AllocationConstraints k;
    k.tieQkv = m_tieQkv->isChecked();
    if (m_keepEdits->isChecked()) {
        collectEdits();
        k.pinned = m_kept;
    }
    // Bits ranges per kind; the defaults (1..16) constrain nothing.
    for (model::Linear l : model::kAllLinears) {
        const auto [lo, hi] = m_ranges[std::size_t(l)];
        if (lo > 1) k.minBits[l] = lo;
        if (hi < 16) k.maxBits[l] = hi;
    }
    return k;
}

void BudgetPlanner::analyze()
{
    if (!m_checkpoint || m_busy || !m_calibration) return;
    pipeline::SensitivityRequest req;
    req.checkpoint = m_checkpoint;
    req.calibration = m_calibration();
    auto cands = pipeline::defaultSensitivityCandidates(m_target->currentData().toString().toStdString());
    if (!cands.ok()) return;
    req.candidates = *cands;
    req.cacheDir = QStandardPaths::writableLocation(QStandardPaths::CacheLocation).toStdString();
    m_busy = true;
    m_analyze->setEnabled(false);
    m_status->setText(tr("Analyzing…"));
    m_runner->start<pipeline::SensitivityOutcome>(
        this, tr("Sensitivity atlas"), [req](RunContext& ctx) { return pipeline::sensitivityAnalysis(req, &ctx); },
        [this](const JobOutcome<pipeline::SensitivityOutcome>& outcome) {
            m_busy = false;
            m_analyze->setEnabled(m_checkpoint != nullptr);
            if (!outcome.ok()) {
                m_status->setText(
                    outcome.error->code == ErrorCode::Cancelled
                        ? tr("Analysis cancelled.")
                        : tr("Analysis failed: %1").arg(QString::fromStdString(outcome.error->toString())));
                refreshStatus();
                return;
            }
            m_fromCache = outcome.value->fromCache;
            setAtlas(outcome.value->atlas);
        });
}

void BudgetPlanner::measure()
{
    if (!m_checkpoint || !m_atlas || m_busy || !m_calibration) return;
    const QString eval = m_evalText ? m_evalText() : QString();
    if (eval.isEmpty()) {
        m_status->setText(tr("Measuring needs the model's eval.txt beside it."));
        return;
    }
    pipeline::SensitivityRequest req;
    req.checkpoint = m_checkpoint;
    req.calibration = m_calibration();
    req.candidates = m_atlas->candidates;
    req.cacheDir = QStandardPaths::writableLocation(QStandardPaths::CacheLocation).toStdString();
    req.evalTextPath = eval.toStdString();
    req.evalOptions.ctx = 128;
    req.measureCount = m_measureCount->value();
    m_busy = true;
    m_measure->setEnabled(false);
    m_status->setText(tr("Measuring…"));
    m_runner->start<pipeline::SensitivityOutcome>(
        this, tr("Measuring KL per tensor"),
        [req](RunContext& ctx) { return pipeline::sensitivityAnalysis(req, &ctx); },
        [this](const JobOutcome<pipeline::SensitivityOutcome>& outcome) {
            m_busy = false;
            m_measure->setEnabled(m_atlas.has_value());
            if (!outcome.ok()) {
                m_status->setText(
                    outcome.error->code == ErrorCode::Cancelled
                        ? tr("Measurement cancelled.")
                        : tr("Measurement failed: %1").arg(QString::fromStdString(outcome.error->toString())));
                return;
            }
            m_fromCache = outcome.value->fromCache;
            setAtlas(outcome.value->atlas);
        });
}

void BudgetPlanner::setAtlas(const pipeline::SensitivityAtlas& atlas)
{
    m_atlas = atlas;
    // Hand edits stay kept while their candidate is still offered.
    std::erase_if(m_kept, [&](const auto& kv) {
        return std::none_of(atlas.candidates.begin(), atlas.candidates.end(),
                            [&](const pipeline::SensitivityCandidate& c) { return c.label == kv.second; });
    });
    m_measure->setEnabled(true);
    {
        const QSignalBlocker block(m_heatCandidate);
        m_heatCandidate->clear();
        for (const auto& c : m_atlas->candidates)
            m_heatCandidate->addItem(QString::fromStdString(c.label));
        m_heatCandidate->addItem(tr("measured KL"));
        m_heatCandidate->setCurrentIndex(0);
    }
    refreshHeatMap();
    refreshPareto();
    refreshStatus();
    // Start at the plan's current size, so opening the planner changes nothing by itself.
    if (!m_front.empty()) {
        const double now = bytesBudget() ? double(m_front.front().totalBytes) : m_plan->resolved().bitsPerWeight;
        const double lo = bytesBudget() ? double(m_front.front().totalBytes) : m_front.front().bitsPerWeight;
        const double hi = bytesBudget() ? double(m_front.back().totalBytes) : m_front.back().bitsPerWeight;
        const double v = std::clamp(now, lo, hi);
        const QSignalBlocker b1(m_slider), b2(m_budget);
        m_slider->setValue(hi > lo ? int(std::lround((v - lo) / (hi - lo) * kSliderSteps)) : 0);
        m_budget->setValue(bytesBudget() ? v / 1e6 : v);
    }
    Q_EMIT atlasChanged();
}

void BudgetPlanner::refreshStatus()
{
    if (!m_atlas) {
        m_slider->setEnabled(false);
        m_budget->setEnabled(false);
        return;
    }
    QString s = tr("%1 tensors × %2 candidates on %3 windows of %4 tokens%5.")
                    .arg(m_atlas->tensors.size())
                    .arg(m_atlas->candidates.size())
                    .arg(m_atlas->calibrationWindows)
                    .arg(m_atlas->calibrationSeqlen)
                    .arg(m_fromCache ? tr(" (from the cache)") : tr(", %1 s").arg(m_atlas->seconds, 0, 'f', 1));
    if (!m_atlas->measured.empty()) {
        s += tr(" Measured KL of %n tensor(s): the damage reads in nats.", nullptr, int(m_atlas->measured.size()));
        if (auto rho = m_atlas->rankCorrelation())
            s += tr(" Rank correlation of the proxy with the measured KL: %1.").arg(*rho, 0, 'f', 2);
    } else {
        s += tr(" Damage = Hessian-weighted output error ½·tr(ΔW H ΔWᵀ); measure a few tensors to calibrate it.");
    }
    m_status->setText(s);
    m_slider->setEnabled(!m_front.empty());
    m_budget->setEnabled(!m_front.empty());
}

void BudgetPlanner::refreshHeatMap()
{
    m_heat->clearContents();
    m_measuredTable->setRowCount(0);
    m_measuredTable->setVisible(m_atlas && !m_atlas->measured.empty());
    if (!m_atlas) {
        m_heat->setRowCount(0);
        return;
    }
    {
        // Ranks (1 = most damaging) of the proxy and of the measured KL among the measured tensors.
        const auto& ms = m_atlas->measured;
        const std::size_t n = ms.size();
        auto ranks = [&](auto value) {
            std::vector<std::size_t> order(n), rank(n);
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(),
                             [&](std::size_t a, std::size_t b) { return value(a) > value(b); });
            for (std::size_t i = 0; i < n; ++i)
                rank[order[i]] = i + 1;
            return rank;
        };
        auto proxyOf = [&](std::size_t i) { return m_atlas->cells[ms[i].tensor][ms[i].candidate].proxyLoss; };
        const auto rp = ranks(proxyOf), rk = ranks([&](std::size_t i) { return ms[i].klMean; });
        m_measuredTable->setRowCount(int(n));
        for (std::size_t i = 0; i < n; ++i) {
            QString name = QString::fromStdString(m_atlas->tensors[ms[i].tensor].name);
            if (name.startsWith(QLatin1String("model."))) name.remove(0, 6);
            const QStringList cells = {name, QString::fromStdString(m_atlas->candidates[ms[i].candidate].label),
                                       QString::number(proxyOf(i), 'g', 3), QString::number(ms[i].klMean, 'g', 3),
                                       QStringLiteral("%1 / %2").arg(rp[i]).arg(rk[i])};
            for (int c = 0; c < cells.size(); ++c)
                m_measuredTable->setItem(int(i), c, new QTableWidgetItem(cells[c]));
        }
    }
    int layers = 0;
    for (const auto& t : m_atlas->tensors)
        layers = std::max(layers, t.layer + 1);
    m_heat->setRowCount(layers);
    QStringList rows;
    for (int l = 0; l < layers; ++l)
        rows << QString::number(l);
    m_heat->setVerticalHeaderLabels(rows);
    const int sel = m_heatCandidate->currentIndex();
    const bool measured = sel == int(m_atlas->candidates.size());
    const std::vector<std::vector<double>> damage = m_atlas->damageTable();
    std::vector<std::optional<double>> value(m_atlas->tensors.size());
    for (std::size_t t = 0; t < m_atlas->tensors.size(); ++t) {
        if (measured) {
            for (const auto& m : m_atlas->measured)
                if (m.tensor == t) value[t] = m.klMean;
        } else if (sel >= 0) {
            value[t] = damage[t][std::size_t(sel)];
        }
    }
    double lo = 0, hi = 0;
    for (const auto& v : value)
        if (v && *v > 0) {
            lo = lo > 0 ? std::min(lo, *v) : *v;
            hi = std::max(hi, *v);
        }
    for (std::size_t t = 0; t < m_atlas->tensors.size(); ++t) {
        const auto& tensor = m_atlas->tensors[t];
        auto* item = new QTableWidgetItem(value[t] ? QString::number(*value[t], 'g', 2) : QStringLiteral("–"));
        item->setTextAlignment(Qt::AlignCenter);
        if (value[t]) item->setBackground(heatColour(*value[t], lo, hi));
        QString tip = QString::fromStdString(tensor.name);
        if (sel >= 0 && !measured) {
            const auto& cell = m_atlas->cells[t][std::size_t(sel)];
            tip += tr("\nrelative output error %1\nproxy ½·tr(ΔW H ΔWᵀ) %2\n%3 bits/weight")
                       .arg(cell.relativeError, 0, 'g', 4)
                       .arg(cell.proxyLoss, 0, 'g', 4)
                       .arg(cell.bitsPerWeight, 0, 'f', 3);
        }
        for (const auto& m : m_atlas->measured)
            if (m.tensor == t)
                tip += tr("\nmeasured at %1: KL %2 nats, perplexity %3 (original %4)")
                           .arg(QString::fromStdString(m_atlas->candidates[m.candidate].label))
                           .arg(m.klMean, 0, 'g', 4)
                           .arg(m.perplexity, 0, 'f', 3)
                           .arg(m.referencePerplexity, 0, 'f', 3);
        item->setToolTip(tip);
        m_heat->setItem(tensor.layer, int(tensor.linear), item);
    }
}

void BudgetPlanner::refreshPareto()
{
    m_front.clear();
    QList<QPointF> path;
    if (m_atlas) {
        auto front = pipeline::paretoFront(*m_atlas, constraints());
        if (front.ok()) m_front = std::move(*front);
    }
    // Log scale: the damage spans orders of magnitude (the zero of all-F16 is left out).
    for (const auto& p : m_front)
        if (p.damage > 0) path << QPointF(p.bitsPerWeight, p.damage);
    m_path->replace(path);
    QList<QPointF> runs;
    for (const auto& r : m_runPoints)
        runs << QPointF(r.bitsPerWeight, r.kl);
    m_runs->replace(runs);
    m_runs->setVisible(m_atlas && !m_atlas->measured.empty() && !runs.isEmpty()); // same units only
    QList<QPointF> cur;
    if (m_allocation && m_allocation->damage > 0) cur << QPointF(m_allocation->bitsPerWeight, m_allocation->damage);
    m_point->replace(cur);
    double x0 = 2, x1 = 16, y0 = 1e-3, y1 = 1;
    if (!path.isEmpty()) {
        x0 = m_front.front().bitsPerWeight;
        x1 = m_front.back().bitsPerWeight;
        y1 = path.front().y();
        y0 = path.back().y();
    }
    for (const auto& r : m_runPoints)
        if (m_runs->isVisible() && r.kl > 0) {
            y1 = std::max(y1, r.kl);
            y0 = std::min(y0, r.kl);
        }
    m_x->setRange(std::floor(x0 * 4) / 4, std::ceil(x1 * 4) / 4);
    // At most six decades: the all-but-F16 tail below is clipped, the labels stay readable.
    const double top = std::ceil(std::log10(y1));
    m_y->setRange(std::pow(10.0, std::max(std::floor(std::log10(y0)), top - 6)), std::pow(10.0, top));
    m_y->setTitleText(m_atlas && !m_atlas->measured.empty() ? tr("predicted KL (nats)") : tr("predicted damage"));
    m_x->setTitleText(bytesBudget() ? tr("bits per weight (budget in MB of the GGUF file)") : tr("bits per weight"));
    if (!m_front.empty()) {
        const QSignalBlocker block(m_budget);
        if (bytesBudget()) {
            m_budget->setSuffix(tr(" MB"));
            m_budget->setRange(double(m_front.front().totalBytes) / 1e6, double(m_front.back().totalBytes) / 1e6);
        } else {
            m_budget->setSuffix(tr(" bpw"));
            m_budget->setRange(m_front.front().bitsPerWeight, m_front.back().bitsPerWeight);
        }
    }
    refreshStatus();
}

void BudgetPlanner::onSlider(int position)
{
    if (m_front.empty()) return;
    const double t = double(position) / kSliderSteps;
    double v = 0;
    if (bytesBudget())
        v = double(m_front.front().totalBytes) +
            t * (double(m_front.back().totalBytes) - double(m_front.front().totalBytes));
    else v = m_front.front().bitsPerWeight + t * (m_front.back().bitsPerWeight - m_front.front().bitsPerWeight);
    {
        const QSignalBlocker block(m_budget);
        m_budget->setValue(bytesBudget() ? v / 1e6 : v);
    }
    allocate(v);
}

QString BudgetPlanner::allocate(double budgetValue)
{
    if (!m_atlas) return tr("no sensitivity atlas");
    pipeline::AllocationBudget b{bytesBudget() ? pipeline::AllocationBudget::Kind::Bytes
                                               : pipeline::AllocationBudget::Kind::BitsPerWeight,
                                 budgetValue};
    auto r = pipeline::allocateToBudget(*m_atlas, b, constraints());
    if (!r.ok()) {
        m_allocLabel->setText(QString::fromStdString(r.error().message));
        return QString::fromStdString(r.error().message);
    }
    m_allocation = *r;
    const pipeline::QuantPlan plan = pipeline::allocationToPlan(*m_atlas, *r, &m_plan->plan());
    const QString err =
        m_plan->applyPlan(plan, tr("Budget %1").arg(QString::fromStdString(pipeline::describeBudget(b))));
    if (err.isEmpty()) {
        m_written.clear();
        for (const pipeline::TensorPlan& t : m_plan->resolved().tensors)
            m_written[t.name] = settingKey(t);
    }
    // Compare with the best uniform candidate within the same budget.
    const std::optional<pipeline::Allocation> uniform = pipeline::bestUniformWithin(*m_atlas, b);
    const QString uniformLabel =
        uniform ? QString::fromStdString(m_atlas->candidates[uniform->choice.front()].label) : QString();
    QString text = tr("Allocated %1 bits/weight, %2 MB, predicted damage %3")
                       .arg(r->bitsPerWeight, 0, 'f', 3)
                       .arg(double(r->totalBytes) / 1e6, 0, 'f', 3)
                       .arg(r->damage, 0, 'g', 4);
    if (uniform)
        text +=
            tr(" · best uniform within the budget: %1 (damage %2)").arg(uniformLabel).arg(uniform->damage, 0, 'g', 4);
    if (!m_kept.empty() && m_keepEdits->isChecked())
        text += tr(" · %n tensor(s) kept as edited by hand", nullptr, int(m_kept.size()));
    if (!m_unmatched.empty() && m_keepEdits->isChecked())
        text += tr(" · %n hand edit(s) match no candidate and were reallocated", nullptr, int(m_unmatched.size()));
    if (!err.isEmpty()) text += tr(" · plan not applied: %1").arg(err);
    m_allocLabel->setText(text);
    QList<QPointF> cur;
    if (r->damage > 0) cur << QPointF(r->bitsPerWeight, r->damage);
    m_point->replace(cur);
    return err;
}

} // namespace qb::ui
