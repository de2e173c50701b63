#include "models/quant_run_model.h"

#include "io/json_value.h"
#include "pipeline/project.h"

#include <QColor>

namespace qb::ui {

pipeline::ProjectRun QuantRun::toProjectRun() const
{
    pipeline::ProjectRun r;
    r.name = name.toStdString();
    r.summary = summary.toStdString();
    r.plan = plan;
    r.result = result;
    r.perplexity = perplexity;
    r.kl = kl;
    r.seconds = seconds;
    r.calibration = calibration;
    return r;
}

QuantRun QuantRun::fromProjectRun(const pipeline::ProjectRun& r)
{
    QuantRun run;
    run.name = QString::fromStdString(!r.name.empty() || !r.result ? r.name : pipeline::defaultRunName(*r.result));
    run.summary = QString::fromStdString(r.summary);
    run.plan = r.plan;
    run.result = r.result;
    run.perplexity = r.perplexity;
    run.kl = r.kl;
    run.seconds = r.seconds;
    run.calibration = r.calibration;
    return run;
}

LayerErrors layerErrorsOf(const std::vector<pipeline::TensorReport>& reports, const std::vector<std::int64_t>& params)
{
    LayerErrors out;
    int layers = 0;
    out.weighted = params.size() == reports.size();
    for (std::size_t i = 0; i < reports.size(); ++i) {
        layers = std::max(layers, reports[i].layer + 1);
        if (out.weighted && !reports[i].skipped && params[i] <= 0) out.weighted = false;
    }
    std::vector<double> sum(std::size_t(layers), 0.0), weight(std::size_t(layers), 0.0);
    for (std::size_t i = 0; i < reports.size(); ++i) {
        const auto& r = reports[i];
        if (r.skipped) continue;
        const double w = out.weighted ? double(params[i]) : 1.0;
        sum[std::size_t(r.layer)] += w * r.relativeError;
        weight[std::size_t(r.layer)] += w;
    }
    out.values.resize(sum.size());
    for (std::size_t i = 0; i < sum.size(); ++i)
        out.values[i] = weight[i] > 0 ? sum[i] / weight[i] : 0.0;
    return out;
}

std::vector<std::int64_t> tensorParamCounts(const std::vector<pipeline::TensorReport>& reports,
                                            const io::Checkpoint* checkpoint)
{
    std::vector<std::int64_t> out(reports.size(), 0);
    if (!checkpoint) return out;
    for (std::size_t i = 0; i < reports.size(); ++i) {
        const TensorInfo* t = checkpoint->find(reports[i].name);
        if (!t) t = checkpoint->find(reports[i].name + ".weight");
        if (!t || t->shape.empty()) continue;
        std::int64_t n = 1;
        for (std::int64_t d : t->shape)
            n *= d;
        out[i] = n;
    }
    return out;
}

QString QuantRun::label() const { return QStringLiteral("#%1 %2").arg(id).arg(name); }

std::vector<double> QuantRun::layerErrors() const
{
    return result ? layerErrorsOf(result->tensors, tensorParams).values : std::vector<double>{};
}

bool QuantRun::layerErrorsWeighted() const { return result && layerErrorsOf(result->tensors, tensorParams).weighted; }

void QuantRunModel::append(std::shared_ptr<const QuantRun> run)
{
    const int row = rowCount();
    beginInsertRows({}, row, row);
    m_runs.push_back(std::move(run));
    endInsertRows();
}

int QuantRunModel::rowOfId(int id) const
{
    for (std::size_t i = 0; i < m_runs.size(); ++i)
        if (m_runs[i]->id == id) return int(i);
    return -1;
}

bool QuantRunModel::replaceRun(std::shared_ptr<const QuantRun> run)
{
    const int row = run ? rowOfId(run->id) : -1;
    if (row < 0) return false;
    m_runs[std::size_t(row)] = std::move(run);
    Q_EMIT dataChanged(index(row, 0), index(row, ColumnCount - 1));
    return true;
}

bool QuantRunModel::rename(int row, const QString& name)
{
    if (row < 0 || row >= rowCount()) return false;
    auto copy = std::make_shared<QuantRun>(*m_runs[std::size_t(row)]);
    QString n = name.simplified();
    if (n.isEmpty() && copy->result) n = QString::fromStdString(pipeline::defaultRunName(*copy->result));
    if (n == copy->name) return true;
    copy->name = n;
    m_runs[std::size_t(row)] = std::move(copy);
    Q_EMIT dataChanged(index(row, Name), index(row, Name));
    Q_EMIT runRenamed(m_runs[std::size_t(row)]->id, n);
    return true;
}

bool QuantRunModel::setData(const QModelIndex& index, const QVariant& value, int role)
{
    if (role != Qt::EditRole ||
        !checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid) ||
        index.column() != Name)
        return false;
    return rename(index.row(), value.toString());
}

Qt::ItemFlags QuantRunModel::flags(const QModelIndex& index) const
{
    Qt::ItemFlags f = QAbstractTableModel::flags(index);
    if (index.isValid() && index.column() == Name) f |= Qt::ItemIsEditable;
    return f;
}

int QuantRunModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : int(m_runs.size()); }
int QuantRunModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant QuantRunModel::data(const QModelIndex& index, int role) const
{
    if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
    const QuantRun& r = *m_runs[std::size_t(index.row())];
    if (role == Qt::TextAlignmentRole && index.column() != Plan && index.column() != Name)
        return int(Qt::AlignRight | Qt::AlignVCenter);
    if (role == Qt::EditRole && index.column() == Name) return r.name;
    if (role == Qt::ToolTipRole && index.column() == Name)
        return tr("Double-click to rename (empty: the default name)");
    if (role == Qt::ToolTipRole && index.column() == Plan)
        return r.plan.isNull() ? QString() : QString::fromStdString(io::toJsonText(r.plan));
    if (role == Qt::ToolTipRole && (index.column() == Kl || index.column() == Top1) && r.kl)
        return tr("KL divergence from the original model over %L1 tokens:\n"
                  "mean %2 ± %3, median %4, 99th percentile %5, max %6 nats\n"
                  "same top token %7 ± %8 %\noriginal model's perplexity %9")
            .arg(r.kl->tokens)
            .arg(r.kl->mean, 0, 'f', 5)
            .arg(r.kl->meanStderr, 0, 'f', 5)
            .arg(r.kl->median, 0, 'f', 5)
            .arg(r.kl->p99, 0, 'f', 4)
            .arg(r.kl->max, 0, 'f', 3)
            .arg(100 * r.kl->top1Agreement, 0, 'f', 2)
            .arg(100 * r.kl->top1AgreementStderr, 0, 'f', 2)
            .arg(r.kl->referencePerplexity, 0, 'f', 3);
    if (role != Qt::DisplayRole) return {};
    switch (index.column()) {
    case Id: return r.id;
    case Name: return r.name;
    case Plan: return r.summary;
    case Bpw: return QString::number(r.result->bitsPerWeight, 'f', 3);
    case Size: return QStringLiteral("%1 MB").arg(double(r.result->sizeBytes) / 1e6, 0, 'f', 3);
    case Perplexity: return r.perplexity ? QString::number(*r.perplexity, 'f', 3) : QStringLiteral("—");
    case Kl: return r.kl ? QString::number(r.kl->mean, 'f', 4) : QStringLiteral("—");
    case Top1: return r.kl ? QStringLiteral("%1 %").arg(100 * r.kl->top1Agreement, 0, 'f', 1) : QStringLiteral("—");
    case Seconds: return QStringLiteral("%1 s").arg(r.seconds, 0, 'f', 2);
    default: return {};
    }
}

QVariant QuantRunModel::headerData(int section, Qt::Orientation o, int role) const
{
    if (o != Qt::Horizontal || role != Qt::DisplayRole || section < 0 || section >= ColumnCount) return {};
    static const char* const names[] = {"Run",        "Name", "Plan",  "Bits/weight", "Size",
                                        "Perplexity", "KL",   "Top-1", "Time"};
    return tr(names[section]);
}

void TensorReportModel::clear()
{
    beginResetModel();
    m_rows.clear();
    endResetModel();
}

void TensorReportModel::setReports(const std::vector<pipeline::TensorReport>& reports)
{
    beginResetModel();
    m_rows = reports;
    endResetModel();
}

void TensorReportModel::addLayer(int layer, const std::vector<pipeline::TensorReport>& reports)
{
    if (reports.empty()) return;
    auto first = std::find_if(m_rows.begin(), m_rows.end(), [layer](const auto& r) { return r.layer == layer; });
    if (first != m_rows.end()) { // replace in place (same count for the same model)
        const int row0 = int(first - m_rows.begin());
        const std::size_t n = std::min(reports.size(), std::size_t(m_rows.size() - std::size_t(row0)));
        std::copy(reports.begin(), reports.begin() + std::ptrdiff_t(n), first);
        Q_EMIT dataChanged(index(row0, 0), index(row0 + int(n) - 1, ColumnCount - 1));
        return;
    }
    const int row = rowCount();
    beginInsertRows({}, row, row + int(reports.size()) - 1);
    m_rows.insert(m_rows.end(), reports.begin(), reports.end());
    endInsertRows();
}

int TensorReportModel::rowOf(const QString& tensorName) const
{
    const std::string n = tensorName.toStdString();
    for (std::size_t i = 0; i < m_rows.size(); ++i)
        if (m_rows[i].name == n || m_rows[i].name == n + ".weight") return int(i);
    return -1;
}

int TensorReportModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : int(m_rows.size()); }
int TensorReportModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant TensorReportModel::data(const QModelIndex& index, int role) const
{
    if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
    const pipeline::TensorReport& r = m_rows[std::size_t(index.row())];
    if (role == Qt::TextAlignmentRole && index.column() != Tensor && index.column() != Method)
        return int(Qt::AlignRight | Qt::AlignVCenter);
    if (role == Qt::UserRole) return r.relativeError;
    if (role == Qt::BackgroundRole && index.column() == RelError && !r.skipped) {
        // Worst tensors stand out: white -> red over relative errors 0 .. 0.3.
        const double t = std::clamp(r.relativeError / 0.3, 0.0, 1.0);
        return QColor::fromRgbF(1.0f, float(1.0 - 0.6 * t), float(1.0 - 0.6 * t));
    }
    if (role != Qt::DisplayRole) return {};
    switch (index.column()) {
    case Tensor: {
        QString n = QString::fromStdString(r.name);
        if (n.startsWith(QLatin1String("model."))) n.remove(0, 6);
        if (n.endsWith(QLatin1String(".weight"))) n.chop(7);
        return n;
    }
    case Method:
        return r.skipped ? tr("skipped")
                         : QString::fromLatin1(quant::methodTraits(r.method).name.data(),
                                               qsizetype(quant::methodTraits(r.method).name.size()));
    case Bits: return r.bits;
    case Bpw: return QString::number(r.bitsPerWeight, 'f', 3);
    case RelError: return r.skipped ? QStringLiteral("—") : QString::number(r.relativeError, 'f', 4);
    case Seconds: return QString::number(r.searchSeconds + r.solveSeconds, 'f', 3);
    default: return {};
    }
}

QVariant TensorReportModel::headerData(int section, Qt::Orientation o, int role) const
{
    if (o != Qt::Horizontal || role != Qt::DisplayRole || section < 0 || section >= ColumnCount) return {};
    static const char* const names[] = {"Tensor", "Method", "Bits", "Bits/weight", "Rel. error", "Solve s"};
    return tr(names[section]);
}

} // namespace qb::ui
