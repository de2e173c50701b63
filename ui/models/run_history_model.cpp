#include "models/run_history_model.h"

#include "models/quant_run_model.h"

#include <QFileInfo>

namespace qb::ui {

void RunHistoryModel::append(const RunRecord& r)
{
    const int row = int(m_rows.size());
    beginInsertRows({}, row, row);
    m_rows.push_back(r);
    endInsertRows();
}

void RunHistoryModel::renameRun(int runId, const QString& name)
{
    const int row = rowOfRun(runId);
    if (row < 0) return;
    m_rows[std::size_t(row)].variant = name;
    Q_EMIT dataChanged(index(row, Variant), index(row, Variant));
}

int RunHistoryModel::rowOfRun(int runId) const
{
    if (runId <= 0) return -1;
    for (std::size_t i = 0; i < m_rows.size(); ++i)
        if (m_rows[i].runId == runId) return int(i);
    return -1;
}

RunRecord recordFromQuantRun(const QuantRun& run, const QString& model)
{
    RunRecord rec;
    rec.when = QDateTime::currentDateTime();
    rec.model = model;
    rec.variant = run.name;
    rec.runId = run.id;
    rec.perplexity = run.perplexity;
    if (run.kl) rec.kl = run.kl->mean;
    rec.text = run.evalText.isEmpty() ? QString() : QFileInfo(run.evalText).fileName();
    rec.seconds = run.seconds;
    if (run.evaluation) {
        rec.ctx = run.evaluation->ctx;
        rec.mode = QString::fromLatin1(eval::scoreModeName(run.evaluation->mode));
        rec.tokens = run.evaluation->tokensScored;
        rec.tokensPerSecond = run.evaluation->tokensPerSecond;
        rec.seconds = run.evaluation->seconds; // like an evaluation's row: the perplexity pass
    } else if (run.kl) {
        rec.tokens = run.kl->tokens;
    }
    return rec;
}

int RunHistoryModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : int(m_rows.size()); }

int RunHistoryModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant RunHistoryModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= int(m_rows.size())) return {};
    const RunRecord& r = m_rows[std::size_t(index.row())];
    if (role == Qt::TextAlignmentRole && index.column() >= Ctx && index.column() != Mode)
        return QVariant(Qt::AlignRight | Qt::AlignVCenter);
    if (role == Qt::ToolTipRole && index.column() == Kl)
        return tr("Mean KL divergence of the quantized model's next-token distribution from the original's (nats)");
    if (role != Qt::DisplayRole && role != Qt::EditRole) return {};
    const bool edit = role == Qt::EditRole; // raw numbers, for sorting and tests
    const QString none = QStringLiteral("—");
    if (!edit && r.runId > 0 && r.ctx == 0 && (index.column() == Ctx || index.column() == TokensPerSecond))
        return none; // a restored run: not known
    switch (index.column()) {
    case When: return r.when.toString(QStringLiteral("HH:mm:ss"));
    case Model: return r.model;
    case Variant: return r.variant;
    case Text: return r.text;
    case Ctx: return r.ctx;
    case Mode: return r.mode;
    case Perplexity:
        if (!r.perplexity) return edit ? QVariant() : QVariant(none);
        return edit ? QVariant(*r.perplexity) : QVariant(QString::number(*r.perplexity, 'f', 4));
    case Kl:
        if (!r.kl) return edit ? QVariant() : QVariant(none);
        return edit ? QVariant(*r.kl) : QVariant(QString::number(*r.kl, 'f', 4));
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
    static const char* names[] = {"Time",       "Model", "Variant",       "Text",    "Ctx",     "Scoring",
                                  "Perplexity", "KL",    "Tokens scored", "Seconds", "Tokens/s"};
    return section >= 0 && section < ColumnCount ? tr(names[section]) : QVariant();
}

} // namespace qb::ui
