#include "models/lab_summary_model.h"

namespace qb::ui {

void LabSummaryModel::setResult(std::shared_ptr<const pipeline::LabResult> result)
{
    beginResetModel();
    m_result = std::move(result);
    endResetModel();
}

int LabSummaryModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() || !m_result ? 0 : int(m_result->stages.size());
}

int LabSummaryModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant LabSummaryModel::data(const QModelIndex& index, int role) const
{
    if (!m_result || !index.isValid() || index.row() >= rowCount()) return {};
    const pipeline::LabStageResult& s = m_result->stages[std::size_t(index.row())];
    if (role == Qt::TextAlignmentRole)
        return index.column() == Stage || index.column() == Transform ? QVariant(Qt::AlignLeft | Qt::AlignVCenter)
                                                                      : QVariant(Qt::AlignRight | Qt::AlignVCenter);
    if (role == Qt::ToolTipRole && index.column() == Transform) // the column may be too narrow for it
        return QString::fromStdString(s.transform);
    if (role == Qt::ToolTipRole && index.column() == Stage)
        return s.rotated ? tr("Per-channel charts of this stage are over the coordinates of the rotated basis")
                         : tr("Per-channel charts of this stage are over the model's input channels");
    if (role != Qt::DisplayRole && role != Qt::EditRole) return {};
    const bool display = role == Qt::DisplayRole;
    auto num = [&](double v, int digits) -> QVariant {
        return display ? QVariant(QString::number(v, 'f', digits)) : v;
    };
    switch (index.column()) {
    case Stage: return QString::fromStdString(s.label);
    case ChannelRatio: return num(s.channelRatio, 2);
    case Kurtosis: return num(s.moments.kurtosis, 2);
    case TokenKurtosis: return num(s.tokens.kurtosisMean, 2);
    case TokenMax: return num(s.tokens.maxAbsMedian, 3);
    case QuantError: return display ? QVariant(QString::number(s.quantError, 'g', 3)) : QVariant(s.quantError);
    case OutputError: return num(s.outputError, 4);
    case CellRatio:
        if (s.cells.empty()) return display ? QVariant(QStringLiteral("-")) : QVariant();
        return num(s.cells.mseRatio, 4);
    case Transform: return QString::fromStdString(s.transform.empty() ? std::string("-") : s.transform);
    default: return {};
    }
}

QVariant LabSummaryModel::headerData(int section, Qt::Orientation o, int role) const
{
    if (o != Qt::Horizontal) return {};
    if (role == Qt::ToolTipRole) {
        switch (section) {
        case ChannelRatio: return tr("Largest over median per-channel max |x|: how far outlier channels stick out");
        case Kurtosis: return tr("Excess kurtosis of all values (0 for a Gaussian)");
        case TokenKurtosis: return tr("Mean excess kurtosis of each token's values: what a per-token quantizer sees");
        case TokenMax: return tr("Median over tokens of the token's max |x|: the range a per-token grid must cover");
        case QuantError: return tr("Relative MSE of the fake-quantized activations, ||Q(X) - X||² / ||X||²");
        case OutputError:
            return tr("||X·Wᵀ − Q(X_t)·W_tᵀ|| / ||X·Wᵀ|| over the group's weights (transformed to match)");
        case CellRatio:
            return tr("Within-cell, all channels: MSE of reconstructing at the cells' midpoints (the uniform "
                      "quantizer) over the MSE at the centroids of the data in each level (Lloyd–Max); 1 when the "
                      "values are uniform inside their cells");
        default: return {};
        }
    }
    if (role != Qt::DisplayRole) return {};
    switch (section) {
    case Stage: return tr("Stage");
    // Two-line headers: the numbers are narrow, and one line of header each needed more than the
    // tab's width at 1280x800.
    case ChannelRatio: return tr("Max/median\nchannel");
    case Kurtosis: return tr("Kurtosis");
    case TokenKurtosis: return tr("Token\nkurtosis");
    case TokenMax: return tr("Token\nmax |x|");
    case QuantError: return tr("Act. quant\nrel. MSE");
    case OutputError: return tr("Output\nerror");
    case CellRatio: return tr("Cell MSE\nratio");
    case Transform: return tr("Transform");
    default: return {};
    }
}

} // namespace qb::ui
