#pragma once
// TensorTreeModel: a read-only tree over a checkpoint snapshot for the model explorer.
//
// Top-level rows are groups in model order: "Embedding", "Layer 0" ... "Layer N-1", "Head"
// (final norm and lm_head); their children are the tensors with shape, dtype, parameter count
// and bytes. Group rows show the sums of their children. The snapshot is immutable and shared
// (std::shared_ptr<const io::Checkpoint>), so the model never copies weights. GUI thread only.

#include "io/checkpoint.h"

#include <QAbstractItemModel>

#include <memory>
#include <vector>

namespace qb::ui {

class TensorTreeModel : public QAbstractItemModel {
    Q_OBJECT
public:
    enum Column { NameColumn, ShapeColumn, DTypeColumn, ParamsColumn, BytesColumn, ColumnCount };
    enum Role { TensorNameRole = Qt::UserRole + 1, SortRole };

    explicit TensorTreeModel(QObject* parent = nullptr);

    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    std::shared_ptr<const io::Checkpoint> checkpoint() const { return m_checkpoint; }
    // Index of the tensor row with this HF name, or an invalid index.
    QModelIndex indexForTensor(const QString& name) const;

    QModelIndex index(int row, int column, const QModelIndex& parent = {}) const override;
    QModelIndex parent(const QModelIndex& child) const override;
    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation o, int role = Qt::DisplayRole) const override;

private:
    struct Group {
        QString title;
        std::vector<int> tensors; // indices into checkpoint->tensors
        qint64 params = 0;
        qint64 bytes = 0;
    };
    static constexpr quintptr kGroupId = ~quintptr(0);

    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    std::vector<Group> m_groups;
};

// Human-readable byte and count formatting shared by the panels ("12.3 MB", "1.2 M").
QString formatBytes(qint64 bytes);
QString formatCount(qint64 n);

} // namespace qb::ui
