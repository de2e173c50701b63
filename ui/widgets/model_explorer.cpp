#include "widgets/model_explorer.h"

#include "widgets/column_chooser.h"
#include "models/tensor_tree_model.h"
#include "widgets/message_label.h"
#include "pipeline/quant_plan.h"

#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QMenu>
#include <QSettings>
#include <QSortFilterProxyModel>
#include <QTreeView>
#include <QVBoxLayout>

namespace qb::ui {

namespace {

// Filters tensors by full HF name: plain text matches anywhere (case-insensitive); text with a
// glob character ('*', '?', '[') is a plan pattern (pipeline/quant_plan.h) matched anywhere in
// the name, so "layers.*.mlp" finds every MLP tensor. Layers stay when a tensor of theirs matches.
class TensorFilterProxy : public QSortFilterProxyModel {
public:
    using QSortFilterProxyModel::QSortFilterProxyModel;
    void setPattern(const QString& text)
    {
        m_text = text.trimmed().toLower().toStdString();
        m_glob = m_text.find_first_of("*?[") != std::string::npos;
        if (m_glob) m_text = "*" + m_text + "*";
        invalidateFilter();
    }

protected:
    bool filterAcceptsRow(int row, const QModelIndex& parent) const override
    {
        if (m_text.empty()) return true;
        const QModelIndex i = sourceModel()->index(row, TensorTreeModel::NameColumn, parent);
        const std::string name = i.data(TensorTreeModel::TensorNameRole).toString().toLower().toStdString();
        if (name.empty()) return false; // a layer node: kept when a child matches (recursive filtering)
        return m_glob ? pipeline::globMatch(m_text, name) : name.find(m_text) != std::string::npos;
    }

private:
    std::string m_text;
    bool m_glob = false;
};

} // namespace

ModelExplorer::ModelExplorer(QWidget* parent)
    : QWidget(parent), m_model(new TensorTreeModel(this)), m_proxy(new TensorFilterProxy(this)),
      m_view(new QTreeView(this)), m_filter(new QLineEdit(this)), m_noMatch(new QLabel(this))
{
    m_filter->setPlaceholderText(tr("Filter tensors: down_proj, layers.3, or a plan glob like layers.*.mlp"));
    m_noMatch->setObjectName(QStringLiteral("explorerNoMatch"));
    makeMessageLabel(m_noMatch); // a long filter wraps instead of widening the dock
    m_noMatch->hide();
    m_filter->setClearButtonEnabled(true);
    m_filter->setObjectName(QStringLiteral("explorerFilter"));
    m_proxy->setSourceModel(m_model);
    m_proxy->setRecursiveFilteringEnabled(true);
    m_proxy->setSortRole(TensorTreeModel::SortRole);
    m_view->setModel(m_proxy);
    m_view->setObjectName(QStringLiteral("explorerTree"));
    m_view->setSortingEnabled(true);
    m_view->sortByColumn(TensorTreeModel::NameColumn, Qt::AscendingOrder);
    m_view->setUniformRowHeights(true);
    m_view->setAlternatingRowColors(true);
    m_view->header()->setStretchLastSection(false);
    m_view->header()->setSectionResizeMode(TensorTreeModel::NameColumn, QHeaderView::Stretch);
    for (int c = 1; c < TensorTreeModel::ColumnCount; ++c)
        m_view->header()->setSectionResizeMode(c, QHeaderView::ResizeToContents);
    // Names differ at their end (q_proj.weight, k_proj.weight) and the layer is the parent row.
    m_view->setTextElideMode(Qt::ElideLeft);
    m_view->setAccessibleName(tr("Model tensors"));
    m_filter->setAccessibleName(tr("Filter tensors"));
    installColumnChooser(m_view->header(), QStringLiteral("explorer/hiddenColumns"),
                         {QStringLiteral("Params"), QStringLiteral("Bytes")}, QStringLiteral("explorerColumnsMenu"));

    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_filter);
    layout->addWidget(m_noMatch);
    layout->addWidget(m_view);

    connect(m_filter, &QLineEdit::textChanged, this, [this](const QString& text) {
        static_cast<TensorFilterProxy*>(m_proxy)->setPattern(text);
        if (!text.isEmpty()) m_view->expandAll();
        const bool none = !text.trimmed().isEmpty() && m_proxy->rowCount() == 0 && m_model->rowCount() > 0;
        m_noMatch->setText(breakableText(tr("No tensor matches \u201c%1\u201d.").arg(text.trimmed())));
        m_noMatch->setVisible(none);
    });
    connect(m_view->selectionModel(), &QItemSelectionModel::currentChanged, this, [this](const QModelIndex& current) {
        const QString name = current.data(TensorTreeModel::TensorNameRole).toString();
        if (!name.isEmpty()) Q_EMIT tensorSelected(name);
    });
}

void ModelExplorer::setColumnShown(int column, bool shown)
{
    setChooserColumnShown(m_view->header(), QStringLiteral("explorer/hiddenColumns"), column, shown);
}

void ModelExplorer::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_model->setCheckpoint(std::move(checkpoint));
    if (m_proxy->rowCount() > 1) m_view->expand(m_proxy->index(1, 0));
}

QString ModelExplorer::selectedTensor() const
{
    return m_view->currentIndex().data(TensorTreeModel::TensorNameRole).toString();
}

bool ModelExplorer::selectTensor(const QString& name)
{
    const QModelIndex src = m_model->indexForTensor(name);
    const QModelIndex idx = m_proxy->mapFromSource(src);
    if (!idx.isValid()) return false;
    m_view->scrollTo(idx);
    m_view->setCurrentIndex(idx);
    return true;
}

} // namespace qb::ui
