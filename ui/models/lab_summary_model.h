#pragma once
// LabSummaryModel: the transform lab's summary numbers, one row per stage (pipeline/transform_lab.h):
// how outlier-heavy the stage's activations are, what the activation quantizer costs on them and
// how uniform the values are inside its cells (pooled over every channel).
// A read-only adapter over an immutable LabResult snapshot; GUI thread only.

#include "pipeline/transform_lab.h"

#include <QAbstractTableModel>

#include <memory>

namespace qb::ui {

class LabSummaryModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column {
        Stage,
        ChannelRatio,
        Kurtosis,
        TokenKurtosis,
        TokenMax,
        QuantError,
        OutputError,
        CellRatio,
        Transform,
        ColumnCount
    };
    using QAbstractTableModel::QAbstractTableModel;

    void setResult(std::shared_ptr<const pipeline::LabResult> result);
    std::shared_ptr<const pipeline::LabResult> result() const { return m_result; }

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation o, int role = Qt::DisplayRole) const override;

private:
    std::shared_ptr<const pipeline::LabResult> m_result;
};

} // namespace qb::ui
