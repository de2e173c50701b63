#pragma once
// Quantization runs of this session and the per-tensor results of one run, as item models.
//
// QuantRun is an immutable snapshot made by the quantize job (result, calibration set, plan text,
// perplexity, KL divergence from the original, time) plus its name. QuantRunModel lists runs
// (name, plan summary, bits per weight, size, perplexity, mean KL, top-1 agreement, time); the
// name is editable there, and a rename replaces the run's snapshot by a renamed copy (so holders
// of the old one never see it change under them; they pick the new one up from dataChanged).
// TensorReportModel lists the TensorReports of one run, growing as layers finish.
// Per-layer errors weight each tensor by its parameter count (rows × cols of the checkpoint's
// tensor), so a layer's figure follows where its weights are; without the shapes (no model) they
// are a plain mean, and say so.
// Threading: GUI thread only; snapshots are shared_ptr<const>.

#include "eval/perplexity.h"
#include "io/checkpoint.h"
#include "io/json_value.h"
#include "model/model.h"
#include "pipeline/calibration.h"
#include "pipeline/quantize_job.h"
#include "pipeline/workflows.h"

#include <QAbstractTableModel>

#include <memory>
#include <optional>
#include <vector>

namespace qb::ui {

// Per-layer relative errors of a list of reports, and whether they are parameter-weighted.
struct LayerErrors {
    std::vector<double> values; // one per layer (max layer + 1); 0 when every tensor is skipped
    bool weighted = false;      // false: a plain mean over the layer's tensors
};

struct QuantRun {
    int id = 0;
    QString name;       // the user's name, by default pipeline::defaultRunName ("GPTQ 4b g128")
    QString summary;    // e.g. "GPTQ 4b g128 (+3 rules)"
    io::JsonValue plan; // the run's plan (pipeline/quant_plan.h JSON, as quantbench-cli saves it)
    std::shared_ptr<const pipeline::QuantizeResult> result;
    std::shared_ptr<const pipeline::CalibrationSet> calib;
    std::shared_ptr<const model::Model> base; // the original model the run started from
    std::optional<double> perplexity;
    std::optional<eval::KlStats> kl;                  // against the original model, same windows as perplexity
    double seconds = 0;                               // quantization + evaluation
    io::JsonValue calibration;                        // the calibration settings (pipeline::CalibrationSource::toJson)
    std::optional<eval::PerplexityResult> evaluation; // the perplexity pass of a live run (ctx, tokens)
    QString evalText;                                 // its text file; "" when restored
    std::vector<std::int64_t> tensorParams;           // rows × cols per result->tensors entry; 0 unknown
    // "#3 GPTQ 4b g128": the id keeps two runs of the same name apart.
    QString label() const;
    // Relative output error of the quantized tensors of each layer, weighted by parameter count
    // when tensorParams are known (layerErrorsWeighted()), else their plain mean.
    std::vector<double> layerErrors() const;
    bool layerErrorsWeighted() const;
    // The part a project stores, and a run rebuilt from it (no base model, no calibration).
    pipeline::ProjectRun toProjectRun() const;
    static QuantRun fromProjectRun(const pipeline::ProjectRun& run);
};

class QuantRunModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { Id, Name, Plan, Bpw, Size, Perplexity, Kl, Top1, Seconds, ColumnCount };
    using QAbstractTableModel::QAbstractTableModel;

    void append(std::shared_ptr<const QuantRun> run);
    std::shared_ptr<const QuantRun> run(int row) const { return m_runs.at(std::size_t(row)); }
    const std::vector<std::shared_ptr<const QuantRun>>& runs() const { return m_runs; }
    int rowOfId(int id) const; // -1 when absent
    // Renames a run (an empty name: its default); the row's snapshot is replaced. False when the
    // row is out of range.
    bool rename(int row, const QString& name);
    // Replaces the run with the same id by `run` (e.g. a reopened run rebuilt for inspection: the
    // same figures, with its models). False when no run has that id.
    bool replaceRun(std::shared_ptr<const QuantRun> run);

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    bool setData(const QModelIndex& index, const QVariant& value, int role = Qt::EditRole) override;
    Qt::ItemFlags flags(const QModelIndex& index) const override;
    QVariant headerData(int section, Qt::Orientation o, int role = Qt::DisplayRole) const override;

Q_SIGNALS:
    void runRenamed(int id, const QString& name);

private:
    std::vector<std::shared_ptr<const QuantRun>> m_runs;
};

class TensorReportModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { Tensor, Method, Bits, Bpw, RelError, Seconds, ColumnCount };
    using QAbstractTableModel::QAbstractTableModel;

    void clear();
    // Appends (or, for a layer already shown, replaces) the reports of one layer.
    void addLayer(int layer, const std::vector<pipeline::TensorReport>& reports);
    void setReports(const std::vector<pipeline::TensorReport>& reports);
    const pipeline::TensorReport& report(int row) const { return m_rows.at(std::size_t(row)); }
    int rowOf(const QString& tensorName) const;

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation o, int role = Qt::DisplayRole) const override;

private:
    std::vector<pipeline::TensorReport> m_rows;
};

// Per-layer relative error of a list of reports (layers = max layer + 1): each quantized tensor
// weighted by params[i] (aligned with reports) when every one is known (> 0), else a plain mean.
LayerErrors layerErrorsOf(const std::vector<pipeline::TensorReport>& reports, const std::vector<std::int64_t>& params);
// rows × cols of each report's tensor in the checkpoint (0 when absent or without a checkpoint).
std::vector<std::int64_t> tensorParamCounts(const std::vector<pipeline::TensorReport>& reports,
                                            const io::Checkpoint* checkpoint);

} // namespace qb::ui
