#include "models/plan_table_model.h"

#include "quant/container_grid.h"

#include <QColor>
#include <QUndoCommand>
#include <QUndoStack>

#include <algorithm>
#include <cmath>
#include <map>

namespace qb::ui {

namespace {

class PlanCommand : public QUndoCommand {
public:
    PlanCommand(PlanTableModel* model, pipeline::QuantPlan before, pipeline::QuantPlan after, const QString& text)
        : QUndoCommand(text), m_model(model), m_before(std::move(before)), m_after(std::move(after))
    {}
    void redo() override { m_model->setPlanDirect(m_after); }
    void undo() override { m_model->setPlanDirect(m_before); }

private:
    PlanTableModel* m_model;
    pipeline::QuantPlan m_before, m_after;
};

std::optional<quant::Method> methodFromVariant(const QVariant& v)
{
    const std::string s = v.toString().trimmed().toLower().toStdString();
    if (auto m = quant::methodFromId(s)) return m;
    for (const auto& t : quant::allMethodTraits()) {
        std::string n(t.name);
        std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return char(std::tolower(c)); });
        if (n == s) return t.method;
    }
    return std::nullopt;
}

std::optional<bool> boolFromVariant(const QVariant& v)
{
    if (v.typeId() == QMetaType::Bool) return v.toBool();
    if (v.typeId() == QMetaType::Int) return v.toInt() == Qt::Checked;
    const QString s = v.toString().trimmed().toLower();
    if (s == QLatin1String("true") || s == QLatin1String("yes") || s == QLatin1String("1") || s == QLatin1String("on"))
        return true;
    if (s == QLatin1String("false") || s == QLatin1String("no") || s == QLatin1String("0") || s == QLatin1String("off"))
        return false;
    return std::nullopt;
}

// The container of `target`'s family with `bits`-bit codes (K-quants first for a K-quant, the
// legacy types keeping their min for a legacy one), empty when there is none.
std::string sameFamilyTarget(const std::string& target, int bits)
{
    const quant::ContainerSpec* cur = quant::findContainerSpec(target);
    if (!cur) return {};
    const quant::ContainerSpec* best = nullptr;
    auto score = [cur](const quant::ContainerSpec& c) {
        return (c.isKQuant() == cur->isKQuant() ? 2 : 0) + (c.hasMin == cur->hasMin ? 1 : 0);
    };
    for (const quant::ContainerSpec& c : quant::containerSpecs())
        if (c.bits == bits && (!best || score(c) > score(*best))) best = &c;
    return best ? best->name : std::string();
}

} // namespace

QStringList planTargetChoices()
{
    QStringList l{QStringLiteral("none")};
    for (const quant::ContainerSpec& c : quant::containerSpecs())
        l << QString::fromLatin1(c.name);
    l << QStringLiteral("F16") << QStringLiteral("BF16") << QStringLiteral("F32");
    return l;
}

pipeline::QuantPlan defaultGuiPlan() { return pipeline::uniformQuantPlan(quant::Method::Gptq, 4, 128, false); }

PlanTableModel::PlanTableModel(QUndoStack* undo, QObject* parent)
    : QAbstractTableModel(parent), m_undo(undo), m_plan(defaultGuiPlan())
{}

void PlanTableModel::setConfig(const std::optional<ModelConfig>& config)
{
    beginResetModel();
    m_config = config;
    m_resolved = {};
    if (m_config) {
        auto r = pipeline::resolveQuantPlan(m_plan, *m_config);
        if (!r.ok()) { // a plan from another model: start over
            m_plan = defaultGuiPlan();
            r = pipeline::resolveQuantPlan(m_plan, *m_config);
        }
        if (r.ok()) m_resolved = std::move(r).value();
    }
    endResetModel();
    m_undo->clear();
    Q_EMIT planChanged();
}

void PlanTableModel::setPlanDirect(const pipeline::QuantPlan& plan)
{
    m_plan = plan;
    if (!m_config) {
        Q_EMIT planChanged();
        return;
    }
    auto r = pipeline::resolveQuantPlan(m_plan, *m_config);
    if (!r.ok()) return; // applyPlan validated it
    const bool sameRows = r->tensors.size() == m_resolved.tensors.size();
    if (!sameRows) beginResetModel();
    m_resolved = std::move(r).value();
    if (!sameRows) endResetModel();
    else if (rowCount() > 0) Q_EMIT dataChanged(index(0, 0), index(rowCount() - 1, ColumnCount - 1));
    Q_EMIT planChanged();
}

QString PlanTableModel::applyPlan(const pipeline::QuantPlan& plan, const QString& undoText)
{
    if (m_config) {
        auto r = pipeline::resolveQuantPlan(plan, *m_config);
        if (!r.ok()) {
            const QString msg = QString::fromStdString(r.error().toString());
            Q_EMIT editRejected(msg);
            return msg;
        }
    }
    if (plan == m_plan) return {};
    m_undo->push(new PlanCommand(this, m_plan, plan, undoText));
    return {};
}

QString PlanTableModel::setField(const QList<int>& rows, int column, const QVariant& value)
{
    if (rows.isEmpty()) return tr("no rows selected");
    pipeline::PlanSettings delta;
    switch (column) {
    case Method: {
        const auto m = methodFromVariant(value);
        if (!m) return tr("unknown method '%1'").arg(value.toString());
        delta.method = *m;
        break;
    }
    case Bits: {
        // Whole bits, or a fractional average for methods that allocate bits per channel (cmpq;
        // the plan's resolution refuses it for the others, with the reason).
        bool ok = false;
        const double v = value.toString().trimmed().toDouble(&ok);
        if (!ok || !std::isfinite(v)) return tr("'%1' is not a number of bits").arg(value.toString());
        if (v == std::round(v) && std::abs(v) < 1e6) delta.bits = int(v);
        else delta.avgBits = v;
        break;
    }
    case Group: {
        bool ok = false;
        const int v = value.toString().trimmed().toInt(&ok);
        if (!ok) return tr("'%1' is not an integer").arg(value.toString());
        delta.groupSize = v;
        break;
    }
    case Target: {
        auto t = pipeline::parsePlanTarget(value.toString().trimmed().toStdString());
        if (!t) return QString::fromStdString(t.error().message);
        delta.target = *t;
        break;
    }
    case Sym:
    case Skip:
    case ActOrder: {
        const auto b = boolFromVariant(value);
        if (!b) return tr("'%1' is not a boolean").arg(value.toString());
        (column == Sym ? delta.sym : column == Skip ? delta.skip : delta.actOrder) = *b;
        break;
    }
    case Damping: {
        bool ok = false;
        const double v = value.toString().trimmed().toDouble(&ok);
        if (!ok || !(v >= 0.0 && v <= 1.0))
            return tr("damping must be a number in [0, 1] (a fraction of the mean Hessian diagonal), got '%1'")
                .arg(value.toString());
        delta.damping = v;
        break;
    }
    default: return tr("column %1 is not editable").arg(column);
    }
    // Bits of rows stored in a GGUF type: the same family's type with those bits.
    std::map<int, std::string> retarget;
    if (delta.bits)
        for (int row : rows)
            if (row >= 0 && row < rowCount() && m_resolved.tensors[std::size_t(row)].inContainer()) {
                const std::string& cur = m_resolved.tensors[std::size_t(row)].target;
                const std::string t = sameFamilyTarget(cur, *delta.bits);
                if (t.empty())
                    return tr("no GGUF type stores %1-bit codes (%2 is stored as %3; set its target to none for a "
                              "free grid)")
                        .arg(*delta.bits)
                        .arg(ruleName(row), QString::fromStdString(cur));
                retarget[row] = t;
            }
    pipeline::QuantPlan next = m_plan;
    if (rows.size() == rowCount() && retarget.empty()) {
        // Every tensor: change the default and drop the field from the rules, so the plan stays
        // short (a rule left with no field is removed).
        auto clear = [&](pipeline::PlanSettings& s) {
            if (delta.method) s.method.reset();
            if (delta.bits || delta.avgBits) s.bits.reset(), s.avgBits.reset();
            if (delta.groupSize) s.groupSize.reset();
            if (delta.sym) s.sym.reset();
            if (delta.skip) s.skip.reset();
            if (delta.target) s.target.reset();
            if (delta.actOrder) s.actOrder.reset();
            if (delta.damping) s.damping.reset();
        };
        for (auto& r : next.rules)
            clear(r.settings);
        std::erase_if(next.rules, [](const pipeline::PlanRule& r) { return r.settings == pipeline::PlanSettings{}; });
        auto& d = next.defaults;
        if (delta.method) d.method = delta.method;
        if (delta.bits) d.bits = delta.bits, d.avgBits.reset();
        if (delta.avgBits) d.avgBits = delta.avgBits, d.bits.reset();
        if (delta.groupSize) d.groupSize = delta.groupSize;
        if (delta.sym) d.sym = delta.sym;
        if (delta.skip) d.skip = delta.skip;
        if (delta.target) d.target = delta.target;
        if (delta.actOrder) d.actOrder = delta.actOrder;
        if (delta.damping) d.damping = delta.damping;
        return applyPlan(
            next,
            tr("Set %1 of every tensor to %2").arg(headerData(column, Qt::Horizontal).toString(), value.toString()));
    }
    for (int row : rows) {
        if (row < 0 || row >= rowCount()) continue;
        const std::string match = ruleName(row).toStdString();
        pipeline::PlanSettings s;
        auto it = std::find_if(next.rules.begin(), next.rules.end(),
                               [&](const pipeline::PlanRule& r) { return r.match == match; });
        if (it != next.rules.end()) {
            s = it->settings;
            next.rules.erase(it);
        }
        if (delta.method) s.method = delta.method;
        if (delta.bits) s.bits = delta.bits, s.avgBits.reset();
        if (delta.avgBits) s.avgBits = delta.avgBits, s.bits.reset();
        if (delta.groupSize) s.groupSize = delta.groupSize;
        if (delta.sym) s.sym = delta.sym;
        if (delta.skip) s.skip = delta.skip;
        if (delta.target) s.target = delta.target;
        if (delta.actOrder) s.actOrder = delta.actOrder;
        if (delta.damping) s.damping = delta.damping;
        if (auto it2 = retarget.find(row); it2 != retarget.end()) {
            s.target = it2->second; // the target implies the bits
            s.bits.reset();
        }
        next.rules.push_back({match, s});
    }
    const QString what = headerData(column, Qt::Horizontal).toString();
    const QString text =
        rows.size() == 1 ? tr("Set %1 of %2 to %3").arg(what, ruleName(rows.first()), value.toString())
                         : tr("Set %1 of %n tensor(s) to %2", nullptr, int(rows.size())).arg(what, value.toString());
    return applyPlan(next, text);
}

QString PlanTableModel::setTensorSettings(const QString& tensor, quant::Method method, int bits, int groupSize,
                                          bool sym)
{
    QString match = tensor;
    if (match.endsWith(QLatin1String(".weight"))) match.chop(7);
    int row = -1;
    for (int r = 0; r < rowCount() && row < 0; ++r)
        if (ruleName(r) == match) row = r;
    if (row < 0) return tr("%1 is not a tensor of the plan").arg(tensor);
    if (bits < quant::kMinBits || bits > quant::kMaxBits)
        return tr("%1 bits is outside %2..%3").arg(bits).arg(quant::kMinBits).arg(quant::kMaxBits);
    if (groupSize == 0 || groupSize < -1) return tr("group size %1 must be positive (or per channel)").arg(groupSize);
    const pipeline::TensorPlan& cur = m_resolved.tensors[std::size_t(row)];
    pipeline::QuantPlan next = m_plan;
    pipeline::PlanSettings s;
    auto it = std::find_if(next.rules.begin(), next.rules.end(),
                           [&](const pipeline::PlanRule& r) { return r.match == match.toStdString(); });
    if (it != next.rules.end()) {
        s = it->settings;
        next.rules.erase(it);
    }
    const quant::MethodTraits& traits = quant::methodTraits(method);
    s.method = method;
    s.bits = bits;
    s.avgBits.reset();
    s.groupSize = groupSize;
    s.sym = sym && traits.supportsSym;
    s.skip = false;
    if (!cur.target.empty() && cur.target != "gptq" && cur.target != "none") s.target = std::string("none");
    next.rules.push_back({match.toStdString(), s});
    const QString name = QString::fromLatin1(traits.name.data(), qsizetype(traits.name.size()));
    return applyPlan(next, tr("Apply what-if to %1: %2 %3 bits, group %4").arg(match, name).arg(bits).arg(groupSize));
}

QString PlanTableModel::ruleName(int row) const
{
    QString n = QString::fromStdString(m_resolved.tensors.at(std::size_t(row)).name);
    if (n.endsWith(QLatin1String(".weight"))) n.chop(7);
    return n;
}

double PlanTableModel::f16Fraction() const
{
    const double other = double(m_resolved.sizeBytes) - double(m_resolved.linearBytes);
    const double f16 = double(m_resolved.linearParams) * 2.0 + other;
    return f16 > 0 ? double(m_resolved.sizeBytes) / f16 : 0.0;
}

QString PlanTableModel::totalsText() const
{
    if (m_resolved.tensors.empty()) return tr("No model");
    const QString s = tr("%1 bits/weight · %2 MB · %3 % of F16")
                          .arg(m_resolved.bitsPerWeight, 0, 'f', 3)
                          .arg(double(m_resolved.sizeBytes) / 1e6, 0, 'f', 3)
                          .arg(100.0 * f16Fraction(), 0, 'f', 1);
    if (!m_resolved.ggufTargets) return s;
    const QString types =
        tr("embedding %1, head %2")
            .arg(QString::fromStdString(m_resolved.embedType), QString::fromStdString(m_resolved.headType));
    if (m_ggufOverhead == 0) return s + tr(" · GGUF %1").arg(types);
    return s + tr(" · GGUF file %1 MB (%2)").arg(double(plannedGgufBytes()) / 1e6, 0, 'f', 3).arg(types);
}

void PlanTableModel::setGgufOverheadBytes(std::uint64_t bytes)
{
    m_ggufOverhead = bytes;
    Q_EMIT planChanged();
}

std::uint64_t PlanTableModel::plannedGgufBytes() const
{
    return m_resolved.ggufTargets ? m_resolved.sizeBytes + m_ggufOverhead : 0;
}

int PlanTableModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : int(m_resolved.tensors.size());
}

int PlanTableModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant PlanTableModel::data(const QModelIndex& index, int role) const
{
    if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
    const pipeline::TensorPlan& t = m_resolved.tensors[std::size_t(index.row())];
    const auto& grid = t.options.grid;
    const int col = index.column();
    const bool hessian = quant::methodTraits(t.method).needsHessian;
    if (role == Qt::CheckStateRole) {
        if (col == Sym) return grid.sym ? Qt::Checked : Qt::Unchecked;
        if (col == Skip) return t.skip ? Qt::Checked : Qt::Unchecked;
        if (col == ActOrder) return hessian && t.options.actOrder ? Qt::Checked : Qt::Unchecked;
        return {};
    }
    if (role == Qt::ToolTipRole && (col == ActOrder || col == Damping) && !hessian)
        return tr("%1 uses no Hessian: act-order and damping do not apply")
            .arg(QString::fromLatin1(quant::methodTraits(t.method).name.data(),
                                     qsizetype(quant::methodTraits(t.method).name.size())));
    if (role == Qt::ForegroundRole && t.skip && col != Tensor && col != Skip) return QColor(Qt::gray);
    if (role == Qt::TextAlignmentRole && (col == Bits || col == Group || col == Damping || col == Bpw))
        return int(Qt::AlignRight | Qt::AlignVCenter);
    if (role == Qt::ToolTipRole && col == Tensor)
        return tr("%1: %2 × %3").arg(QString::fromStdString(t.name)).arg(t.rows).arg(t.cols);
    if (role == Qt::ToolTipRole && col == Target)
        return t.targetNote.empty()
                   ? (t.target.empty()
                          ? tr("free grid: bits, group and symmetry as set; exported "
                               "exactly to .qbproj and fake-quantized safetensors")
                          : tr("solved inside GGUF %1: the export is exact").arg(QString::fromStdString(t.target)))
                   : QString::fromStdString(t.targetNote);
    if (role == Qt::ToolTipRole && (col == Group || col == Sym || col == Bits) && t.inContainer())
        return tr("implied by the %1 storage target").arg(QString::fromStdString(t.target));
    if (role == Qt::ForegroundRole && (col == Group || col == Sym) && t.inContainer()) return QColor(Qt::darkGray);
    if (role != Qt::DisplayRole && role != Qt::EditRole) return {};
    switch (col) {
    case Tensor: {
        QString n = ruleName(index.row());
        if (role == Qt::DisplayRole && n.startsWith(QLatin1String("model."))) n.remove(0, 6);
        return n;
    }
    case Method:
        return role == Qt::EditRole ? QString::fromLatin1(quant::methodTraits(t.method).id.data(),
                                                          qsizetype(quant::methodTraits(t.method).id.size()))
                                    : QString::fromLatin1(quant::methodTraits(t.method).name.data(),
                                                          qsizetype(quant::methodTraits(t.method).name.size()));
    case Target: return t.target.empty() ? QStringLiteral("none") : QString::fromStdString(t.target);
    case Bits:
        if (t.method == quant::Method::Cmpq && !t.skip) // its fractional average (everything counted)
            return role == Qt::EditRole ? QVariant(t.cmpq.bits) : QVariant(QString::number(t.cmpq.bits, 'g', 4));
        return grid.bits;
    case Group: return grid.groupSize;
    case Damping:
        if (!hessian) return role == Qt::EditRole ? QVariant() : QVariant(QStringLiteral("—"));
        return role == Qt::EditRole ? QVariant(t.options.damping) : QVariant(QString::number(t.options.damping));
    case Bpw:
        return role == Qt::EditRole ? QVariant(t.bitsPerWeight) : QVariant(QString::number(t.bitsPerWeight, 'f', 3));
    default: return {};
    }
}

bool PlanTableModel::setData(const QModelIndex& index, const QVariant& value, int role)
{
    if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return false;
    const int col = index.column();
    QVariant v = value;
    if (role == Qt::CheckStateRole && (col == Sym || col == Skip || col == ActOrder)) v = value.toInt() == Qt::Checked;
    else if (role != Qt::EditRole || col == Sym || col == Skip || col == ActOrder || col == Tensor || col == Bpw)
        return false;
    if (data(index, role) == v && role == Qt::EditRole) return false;
    const QString error = setField({index.row()}, col, v);
    if (error.isEmpty()) return true;
    Q_EMIT editRejected(error); // shown where the edit happens (the editor's message line)
    return false;
}

Qt::ItemFlags PlanTableModel::flags(const QModelIndex& index) const
{
    if (!index.isValid()) return Qt::NoItemFlags;
    Qt::ItemFlags f = Qt::ItemIsEnabled | Qt::ItemIsSelectable | Qt::ItemNeverHasChildren;
    switch (index.column()) {
    case Group:
        if (m_resolved.tensors[std::size_t(index.row())].inContainer()) return f;
        return f | Qt::ItemIsEditable;
    case Method:
    case Target:
    case Bits: return f | Qt::ItemIsEditable;
    case Sym:
        if (m_resolved.tensors[std::size_t(index.row())].inContainer()) return f;
        return f | Qt::ItemIsUserCheckable;
    case Skip: return f | Qt::ItemIsUserCheckable;
    case ActOrder:
        return quant::methodTraits(m_resolved.tensors[std::size_t(index.row())].method).needsHessian
                   ? f | Qt::ItemIsUserCheckable
                   : f;
    case Damping:
        return quant::methodTraits(m_resolved.tensors[std::size_t(index.row())].method).needsHessian
                   ? f | Qt::ItemIsEditable
                   : f;
    default: return f;
    }
}

QVariant PlanTableModel::headerData(int section, Qt::Orientation o, int role) const
{
    if (o != Qt::Horizontal || role != Qt::DisplayRole || section < 0 || section >= ColumnCount) return {};
    static const char* const names[] = {"Tensor", "Method", "Target",    "Bits",    "Group",
                                        "Sym",    "Skip",   "Act-order", "Damping", "Bits/weight"};
    return tr(names[section]);
}

} // namespace qb::ui
