#include "widgets/run_compare_view.h"

#include "charts/quant_charts.h"
#include "models/quant_run_model.h"

#include <QGraphicsLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QPushButton>
#include <QSplitter>
#include <QTableView>
#include <QVBoxLayout>

#include <optional>

namespace qb::ui {

RunCompareView::RunCompareView(QuantRunModel* runs, QWidget* parent)
    : QWidget(parent), m_runs(runs), m_table(new QTableView), m_layers(new LayerErrorChart(tr("Per-layer error"))),
      m_scatter(new BpwPerplexityChart), m_export(new QPushButton(tr("Export run..."))), m_kl(new QLabel)
{
    setObjectName(QStringLiteral("runCompareView"));
    m_table->setObjectName(QStringLiteral("runTable"));
    m_layers->setObjectName(QStringLiteral("compareChart"));
    m_scatter->setObjectName(QStringLiteral("bpwPplChart"));
    m_export->setObjectName(QStringLiteral("exportRun"));
    m_kl->setObjectName(QStringLiteral("klSummary"));
    m_kl->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_table->setModel(m_runs);
    m_table->setTabKeyNavigation(false); // Tab leaves the table
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_table->verticalHeader()->hide();
    m_table->horizontalHeader()->setSectionResizeMode(QuantRunModel::Plan, QHeaderView::Stretch);
    m_table->setColumnWidth(QuantRunModel::Id, 44);
    m_table->setColumnWidth(QuantRunModel::Name, 170);
    m_table->setEditTriggers(QAbstractItemView::DoubleClicked | QAbstractItemView::EditKeyPressed);
    m_export->setEnabled(false);
    m_export->setToolTip(tr("Export of the selected run (GGUF, GPTQ safetensors, ...)"));

    auto* top = new QHBoxLayout;
    top->addWidget(new QLabel(tr("Select two runs to compare their per-layer errors (double-click a name to rename "
                                 "it):")),
                   1);
    top->addWidget(m_export);
    auto* charts = new QSplitter(Qt::Horizontal);
    charts->setObjectName(QStringLiteral("compareChartsSplit")); // MainWindow remembers its state
    charts->addWidget(m_layers);
    charts->addWidget(m_scatter);
    charts->setStretchFactor(0, 1);
    charts->setStretchFactor(1, 1);
    for (QChartView* v : {static_cast<QChartView*>(m_layers), static_cast<QChartView*>(m_scatter)}) {
        v->chart()->layout()->setContentsMargins(0, 0, 0, 0); // room for the plots at 1280x800
        v->chart()->setBackgroundRoundness(0);
    }
    m_table->setMinimumHeight(90);
    auto* split = new QSplitter(Qt::Vertical);
    split->setObjectName(QStringLiteral("compareSplit"));
    auto* tableBox = new QWidget;
    auto* tl = new QVBoxLayout(tableBox);
    tl->setContentsMargins(0, 0, 0, 0);
    tl->addLayout(top);
    tl->addWidget(m_table);
    tl->addWidget(m_kl);
    split->addWidget(tableBox);
    split->addWidget(charts);
    split->setStretchFactor(0, 1);
    split->setStretchFactor(1, 3);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addWidget(split);

    connect(m_table->selectionModel(), &QItemSelectionModel::selectionChanged, this, &RunCompareView::refresh);
    connect(m_runs, &QAbstractItemModel::dataChanged, this, &RunCompareView::refresh); // renames
    connect(m_runs, &QAbstractItemModel::rowsInserted, this, [this](const QModelIndex&, int, int last) {
        // A new run: compare it with the one before (the usual question), keep the user's choice otherwise.
        if (comparedRows().size() < 2 && last >= 1) {
            m_table->selectionModel()->select(
                QItemSelection(m_runs->index(last - 1, 0), m_runs->index(last, QuantRunModel::ColumnCount - 1)),
                QItemSelectionModel::ClearAndSelect);
        }
        refresh();
    });
    connect(m_export, &QPushButton::clicked, this, [this] {
        const auto rows = comparedRows();
        if (!rows.isEmpty()) Q_EMIT exportRequested(m_runs->run(rows.last()));
    });
}

QList<int> RunCompareView::comparedRows() const
{
    QList<int> rows;
    for (const QModelIndex& i : m_table->selectionModel()->selectedRows())
        rows << i.row();
    std::sort(rows.begin(), rows.end());
    if (rows.size() > 2) rows = rows.mid(rows.size() - 2);
    if (rows.isEmpty() && m_runs->rowCount() > 0) rows << m_runs->rowCount() - 1;
    return rows;
}

void RunCompareView::refresh()
{
    QStringList names, klLines;
    std::vector<std::vector<double>> values;
    bool weighted = true;
    for (int r : comparedRows()) {
        const auto run = m_runs->run(r);
        names << run->label();
        values.push_back(run->layerErrors());
        weighted = weighted && run->layerErrorsWeighted();
        if (run->kl)
            klLines << tr("%1: KL %2 ± %3, median %4, p99 %5; top-1 %6 %")
                           .arg(run->label())
                           .arg(run->kl->mean, 0, 'f', 4)
                           .arg(run->kl->meanStderr, 0, 'f', 4)
                           .arg(run->kl->median, 0, 'f', 4)
                           .arg(run->kl->p99, 0, 'f', 3)
                           .arg(100 * run->kl->top1Agreement, 0, 'f', 1);
    }
    m_layers->setRuns(names, values, weighted);
    m_kl->setText(klLines.join(QStringLiteral("    ")));
    m_kl->setVisible(!klLines.isEmpty());
    QList<BpwPerplexityChart::RunPoint> pts;
    std::optional<double> baseline; // the original's perplexity on the runs' evaluation windows
    for (const auto& run : m_runs->runs()) {
        if (run->kl && run->kl->referencePerplexity > 0) baseline = run->kl->referencePerplexity;
        if (run->perplexity)
            pts.push_back(
                {run->result->bitsPerWeight, *run->perplexity, QStringLiteral("#%1").arg(run->id), run->label()});
    }
    m_scatter->setRuns(pts, baseline);
    m_export->setEnabled(!comparedRows().isEmpty());
}

} // namespace qb::ui
