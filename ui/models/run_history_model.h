#pragma once
// RunHistoryModel: the table of evaluation (and later quantization) runs of this session.
// Rows are immutable records appended as runs finish; GUI thread only.

#include <QAbstractTableModel>
#include <QDateTime>

#include <vector>

namespace qb::ui {

struct RunRecord {
    QDateTime when;
    QString model;   // file or directory name
    QString variant; // "F32", later the plan name
    QString text;    // evaluation text file name
    int ctx = 0;
    QString mode; // "all" / "second-half"
    double perplexity = 0;
    qint64 tokens = 0;
    double seconds = 0;
    double tokensPerSecond = 0;
};

class RunHistoryModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { When, Model, Variant, Text, Ctx, Mode, Perplexity, Tokens, Seconds, TokensPerSecond, ColumnCount };
    using QAbstractTableModel::QAbstractTableModel;

    void append(const RunRecord& r);
    const RunRecord& record(int row) const { return m_rows.at(std::size_t(row)); }

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation o, int role = Qt::DisplayRole) const override;

private:
    std::vector<RunRecord> m_rows;
};

} // namespace qb::ui
