#pragma once
// RunHistoryModel: the table of evaluation and quantization runs of this session: every
// perplexity evaluation of the original model, and every quantized run (its perplexity and KL
// from the original when measured, "—" when not; runs restored from a project included). Rows
// are records appended as runs finish; a quantized run's row follows its renames. GUI thread only.

#include <QAbstractTableModel>
#include <QDateTime>

#include <optional>
#include <vector>

namespace qb::ui {

struct QuantRun;

struct RunRecord {
    QDateTime when;
    QString model;   // file or directory name
    QString variant; // "original", or the quantized run's name
    QString text;    // evaluation text file name
    int ctx = 0;
    QString mode; // "all" / "second-half"
    std::optional<double> perplexity;
    std::optional<double> kl; // mean KL divergence from the original (quantized runs)
    int runId = 0;            // the quantized run's id; 0 for an evaluation
    qint64 tokens = 0;
    double seconds = 0;
    double tokensPerSecond = 0;
};

class RunHistoryModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column {
        When,
        Model,
        Variant,
        Text,
        Ctx,
        Mode,
        Perplexity,
        Kl,
        Tokens,
        Seconds,
        TokensPerSecond,
        ColumnCount
    };
    using QAbstractTableModel::QAbstractTableModel;

    void append(const RunRecord& r);
    // The variant (name) of a quantized run's row follows a rename.
    void renameRun(int runId, const QString& name);
    int rowOfRun(int runId) const; // -1 when absent
    const RunRecord& record(int row) const { return m_rows.at(std::size_t(row)); }

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation o, int role = Qt::DisplayRole) const override;

private:
    std::vector<RunRecord> m_rows;
};

// The history row of a quantized run (model: the checkpoint's file or folder name).
RunRecord recordFromQuantRun(const QuantRun& run, const QString& model);

} // namespace qb::ui
