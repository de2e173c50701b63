#pragma once
// PlanTableModel: the editable quantization plan as a table, one row per quantizable tensor (the
// seven linear weights of every decoder layer, plan order) with the resolved method, storage
// target (a GGUF type the tensor is solved in, "none" for a free grid), bits, group size,
// symmetric flag, skip and bits per weight. A target implies bits, group and symmetry: editing
// the bits of such a row moves it to the same family's type with those bits (Q4_K -> Q6_K), and
// its group and symmetry are not editable.
//
// A thin adapter over pipeline::QuantPlan: the plan (default + ordered glob rules) is the state;
// rows show resolveQuantPlan()'s result. Editing a cell never changes a row directly: it becomes an
// explicit per-tensor rule ({"match": "<tensor>", <field>: value}, moved to the end so it wins)
// and the whole plan is re-resolved. Every change goes through the QUndoStack as a whole-plan
// snapshot command, so undo/redo and the JSON text view stay consistent. A change that does not
// validate (e.g. "sym" with NeUQI) is rejected and reported through editRejected().
// Threading: GUI thread only.

#include "base/model_config.h"
#include "pipeline/quant_plan.h"

#include <QAbstractTableModel>

#include <optional>

class QUndoStack;

namespace qb::ui {

class PlanTableModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { Tensor, Method, Target, Bits, Group, Sym, Skip, ActOrder, Damping, Bpw, ColumnCount };

    PlanTableModel(QUndoStack* undo, QObject* parent = nullptr);

    // The model whose tensors the plan covers; rows appear once a config is set.
    void setConfig(const std::optional<ModelConfig>& config);
    const pipeline::QuantPlan& plan() const { return m_plan; }
    const pipeline::ResolvedPlan& resolved() const { return m_resolved; }
    QUndoStack* undoStack() const { return m_undo; }

    // Validates `plan` against the model and pushes it as one undoable step. Returns the error
    // message, empty on success (no step is pushed for an equal plan).
    QString applyPlan(const pipeline::QuantPlan& plan, const QString& undoText);
    // Sets `column` (Method, Target, Bits, Group, Sym, Skip, ActOrder or Damping) of the given rows to
    // `value`, as one step. ActOrder and Damping apply to the methods that use a Hessian (GPTQ, NeUQI).
    QString setField(const QList<int>& rows, int column, const QVariant& value);
    // Sets method, bits, group size and symmetry of one tensor (full name, with or without
    // ".weight") as one undoable step (its per-tensor rule, moved to the end so it wins): what the
    // what-if view's "Apply to plan" does. The tensor is no longer skipped, and a tensor stored in
    // a GGUF type or as F16 gets the free grid (target none), which is what the what-if solved.
    QString setTensorSettings(const QString& tensor, quant::Method method, int bits, int groupSize, bool sym);
    // Replaces the plan without an undo step (used by the undo commands).
    void setPlanDirect(const pipeline::QuantPlan& plan);

    // Tensor name without ".weight", the rule match of a row.
    QString ruleName(int row) const;
    // "4.25 bits/weight · 1.23 MB · 27.1 % of F16"; with GGUF targets the whole file, once the
    // export's overhead (header, tokenizer, alignment) is known.
    QString totalsText() const;
    void setGgufOverheadBytes(std::uint64_t bytes);
    // Whole GGUF file the plan gives (tensor data + overhead); 0 without GGUF targets.
    std::uint64_t plannedGgufBytes() const;
    double f16Fraction() const;

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    bool setData(const QModelIndex& index, const QVariant& value, int role = Qt::EditRole) override;
    Qt::ItemFlags flags(const QModelIndex& index) const override;
    QVariant headerData(int section, Qt::Orientation o, int role = Qt::DisplayRole) const override;

Q_SIGNALS:
    void planChanged();
    void editRejected(const QString& message);

private:
    QUndoStack* m_undo;
    std::optional<ModelConfig> m_config;
    pipeline::QuantPlan m_plan;
    pipeline::ResolvedPlan m_resolved;
    std::uint64_t m_ggufOverhead = 0;
};

// The storage targets a Target cell offers: none, the GGUF block types, F16, BF16, F32.
QStringList planTargetChoices();

// The GUI's starting plan: GPTQ, 4 bits, groups of 128, asymmetric.
pipeline::QuantPlan defaultGuiPlan();

} // namespace qb::ui
