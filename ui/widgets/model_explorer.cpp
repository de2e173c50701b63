#include "widgets/model_explorer.h"

#include "models/tensor_tree_model.h"

#include <QHeaderView>
#include <QLineEdit>
#include <QSortFilterProxyModel>
#include <QTreeView>
#include <QVBoxLayout>

namespace qb::ui {

ModelExplorer::ModelExplorer(QWidget* parent)
    : QWidget(parent), m_model(new TensorTreeModel(this)), m_proxy(new QSortFilterProxyModel(this)),
      m_view(new QTreeView(this)), m_filter(new QLineEdit(this))
{
    m_filter->setPlaceholderText(tr("Filter tensors (e.g. down_proj, layers.3)"));
    m_filter->setClearButtonEnabled(true);
    m_filter->setObjectName(QStringLiteral("explorerFilter"));
    m_proxy->setSourceModel(m_model);
    m_proxy->setRecursiveFilteringEnabled(true);
    m_proxy->setFilterCaseSensitivity(Qt::CaseInsensitive);
    m_proxy->setFilterKeyColumn(TensorTreeModel::NameColumn);
    m_proxy->setFilterRole(TensorTreeModel::TensorNameRole); // match full HF names
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

    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_filter);
    layout->addWidget(m_view);

    connect(m_filter, &QLineEdit::textChanged, this, [this](const QString& text) {
        m_proxy->setFilterFixedString(text);
        if (!text.isEmpty()) m_view->expandAll();
    });
    connect(m_view->selectionModel(), &QItemSelectionModel::currentChanged, this, [this](const QModelIndex& current) {
        const QString name = current.data(TensorTreeModel::TensorNameRole).toString();
        if (!name.isEmpty()) Q_EMIT tensorSelected(name);
    });
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
