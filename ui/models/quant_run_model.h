#pragma once
// Quantization runs of this session and the per-tensor results of one run, as item models.
//
// QuantRun is an immutable snapshot made by the quantize job (result, calibration set, plan text,
// perplexity, KL divergence from the original, time). QuantRunModel lists runs (plan summary, bits
// per weight, size, perplexity, mean KL, top-1 agreement, time); TensorReportModel lists the
// TensorReports of one run, growing as layers finish.
// Threading: GUI thread only; snapshots are shared_ptr<const>.

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

struct QuantRun {
    int id = 0;
    QString summary;    // e.g. "GPTQ 4b g128 (+3 rules)"
    io::JsonValue plan; // the run's plan (pipeline/quant_plan.h JSON, as quantbench-cli saves it)
    std::shared_ptr<const pipeline::QuantizeResult> result;
    std::shared_ptr<const pipeline::CalibrationSet> calib;
    std::shared_ptr<const model::Model> base; // the original model the run started from
    std::optional<double> perplexity;
    std::optional<eval::KlStats> kl; // against the original model, same windows as perplexity
    double seconds = 0;              // quantization + evaluation
    io::JsonValue calibration;       // the calibration settings (pipeline::CalibrationSource::toJson)
    // Mean relative output error of the quantized tensors of each layer (0 when all skipped).
    std::vector<double> layerErrors() const;
    // The part a project stores, and a run rebuilt from it (no base model, no calibration).
    pipeline::ProjectRun toProjectRun() const;
    static QuantRun fromProjectRun(const pipeline::ProjectRun& run);
};

class QuantRunModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { Id, Plan, Bpw, Size, Perplexity, Kl, Top1, Seconds, ColumnCount };
    using QAbstractTableModel::QAbstractTableModel;

    void append(std::shared_ptr<const QuantRun> run);
    std::shared_ptr<const QuantRun> run(int row) const { return m_runs.at(std::size_t(row)); }
    const std::vector<std::shared_ptr<const QuantRun>>& runs() const { return m_runs; }

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation o, int role = Qt::DisplayRole) const override;

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

// Mean relative error per layer of a list of reports (layers = max layer + 1).
std::vector<double> meanErrorPerLayer(const std::vector<pipeline::TensorReport>& reports);

} // namespace qb::ui
