#pragma once
// ModelExplorer: the tree of decoder layers and tensors with a search box. Sorting and
// filtering go through a QSortFilterProxyModel (recursive: a matching tensor keeps its layer);
// the box takes plain text or a plan glob ("layers.*.mlp") and says when nothing matches.

#include "io/checkpoint.h"

#include <QWidget>

#include <memory>

class QLabel;
class QLineEdit;
class QSortFilterProxyModel;
class QTreeView;

namespace qb::ui {

class TensorTreeModel;

class ModelExplorer : public QWidget {
    Q_OBJECT
public:
    explicit ModelExplorer(QWidget* parent = nullptr);

    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    TensorTreeModel* sourceModel() const { return m_model; }
    QSortFilterProxyModel* proxyModel() const { return m_proxy; }
    QTreeView* view() const { return m_view; }
    QLineEdit* filterEdit() const { return m_filter; }
    QLabel* noMatchLabel() const { return m_noMatch; }
    QString selectedTensor() const;
    bool selectTensor(const QString& name);
    // Column chooser (right-click the header): Params and Bytes are hidden by default so that the
    // shown columns fit the dock at 1280x800; the choice is remembered ("explorer/hiddenColumns").
    void setColumnShown(int column, bool shown);

Q_SIGNALS:
    void tensorSelected(const QString& name);

private:
    TensorTreeModel* m_model;
    QSortFilterProxyModel* m_proxy;
    QTreeView* m_view;
    QLineEdit* m_filter;
    QLabel* m_noMatch;
};

} // namespace qb::ui
