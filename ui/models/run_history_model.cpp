#include "models/run_history_model.h"

namespace qb::ui {

void RunHistoryModel::append(const RunRecord& r)
{
    const int row = int(m_rows.size());
    beginInsertRows({}, row, row);
    m_rows.push_back(r);
    endInsertRows();
}

int RunHistoryModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : int(m_rows.size()); }

int RunHistoryModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant RunHistoryModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= int(m_rows.size())) return {};
    const RunRecord& r = m_rows[std::size_t(index.row())];
    if (role == Qt::TextAlignmentRole && index.column() >= Ctx && index.column() != Mode)
        return QVariant(Qt::AlignRight | Qt::AlignVCenter);
    if (role != Qt::DisplayRole && role != Qt::EditRole) return {};
    const bool edit = role == Qt::EditRole; // raw numbers, for sorting and tests
    switch (index.column()) {
    case When: return r.when.toString(QStringLiteral("HH:mm:ss"));
    case Model: return r.model;
    case Variant: return r.variant;
    case Text: return r.text;
    case Ctx: return r.ctx;
    case Mode: return r.mode;
    case Perplexity: return edit ? QVariant(r.perplexity) : QVariant(QString::number(r.perplexity, 'f', 4));
    case Tokens: return r.tokens;
    case Seconds: return edit ? QVariant(r.seconds) : QVariant(QString::number(r.seconds, 'f', 2));
    case TokensPerSecond:
        return edit ? QVariant(r.tokensPerSecond) : QVariant(QString::number(r.tokensPerSecond, 'f', 0));
    default: return {};
    }
}

QVariant RunHistoryModel::headerData(int section, Qt::Orientation o, int role) const
{
    if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
    static const char* names[] = {"Time",    "Model",      "Variant",       "Text",    "Ctx",
                                  "Scoring", "Perplexity", "Tokens scored", "Seconds", "Tokens/s"};
    return section >= 0 && section < ColumnCount ? tr(names[section]) : QVariant();
}

} // namespace qb::ui
