#include "widgets/run_header.h"

#include "models/quant_run_model.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>

namespace qb::ui {

RunHeader::RunHeader(QuantRunModel* runs, QWidget* parent)
    : QWidget(parent), m_runs(runs), m_run(new QLabel), m_name(new QLineEdit), m_details(new QLabel)
{
    setObjectName(QStringLiteral("runHeader"));
    m_run->setObjectName(QStringLiteral("runHeaderId"));
    m_name->setObjectName(QStringLiteral("runName"));
    m_details->setObjectName(QStringLiteral("runHeaderDetails"));
    m_name->setAccessibleName(tr("Run name"));
    m_name->setToolTip(tr("The run's name in the run list, the compare view, the charts and the run history; "
                          "saved with the project. Empty: the default name from the plan."));
    m_name->setMinimumWidth(160);
    m_name->setMaximumWidth(280);
    m_details->setWordWrap(true);
    m_details->setTextInteractionFlags(Qt::TextSelectableByMouse);
    auto* layout = new QHBoxLayout(this);
    layout->setContentsMargins(2, 2, 2, 2);
    layout->addWidget(m_run);
    layout->addWidget(m_name);
    layout->addWidget(m_details, 1);
    connect(m_name, &QLineEdit::editingFinished, this, [this] {
        const int row = m_runs->rowOfId(m_id);
        if (row >= 0) m_runs->rename(row, m_name->text());
        refresh(); // an empty name comes back as the default
    });
    connect(m_runs, &QAbstractItemModel::dataChanged, this, &RunHeader::refresh);
    showRun(0);
}

void RunHeader::showRun(int id)
{
    m_id = id;
    refresh();
}

void RunHeader::showRunning(const QString& summary)
{
    m_id = 0;
    m_run->setText(tr("Running:"));
    m_name->clear();
    m_name->setEnabled(false);
    m_name->setPlaceholderText(QString());
    m_details->setText(summary);
}

void RunHeader::refresh()
{
    const int row = m_runs->rowOfId(m_id);
    m_name->setEnabled(row >= 0);
    if (row < 0) {
        m_run->setText(tr("No run"));
        m_name->clear();
        m_name->setPlaceholderText(tr("run name"));
        m_details->setText(tr("Press Quantize to run the plan; its per-tensor results appear here layer by layer."));
        return;
    }
    const auto run = m_runs->run(row);
    m_run->setText(tr("Run #%1").arg(run->id));
    if (!m_name->hasFocus() || m_name->text().isEmpty()) m_name->setText(run->name);
    QStringList parts;
    parts << run->summary;
    if (run->result)
        parts << tr("%1 bits/weight").arg(run->result->bitsPerWeight, 0, 'f', 3)
              << tr("%1 MB").arg(double(run->result->sizeBytes) / 1e6, 0, 'f', 2);
    if (run->perplexity) {
        QString ppl = tr("perplexity %1").arg(*run->perplexity, 0, 'f', 3);
        if (run->kl && run->kl->referencePerplexity > 0)
            ppl += tr(" (original %1)").arg(run->kl->referencePerplexity, 0, 'f', 3);
        parts << ppl;
    }
    if (run->kl) parts << tr("KL %1").arg(run->kl->mean, 0, 'f', 4);
    if (run->seconds > 0) parts << tr("%1 s").arg(run->seconds, 0, 'f', 1);
    m_details->setText(parts.join(QStringLiteral(" · ")));
}

} // namespace qb::ui
