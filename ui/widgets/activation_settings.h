#pragma once
// ActivationSettings: one row of the plan editor for weight-and-activation quantization - the
// activation bits of every linear input (off, 8, 6, 4) with the clip ratio and static ranges, the
// K/V bits, SmoothQuant smoothing (on/off and α) and the rotation (none, residual, hadamard,
// RUQuant with its fine-tuning epochs), and RUQuant presets (W4A4, W4A4 + fine-tune, W6A6: the
// whole plan as pipeline::ruquantPresetPlan sets it).
// The row edits the plan's "activations"/"kv"/"transform" objects (pipeline/activation_plan.h):
// every change is one undoable plan step through PlanTableModel::applyPlan, and the row follows
// the plan when it changes elsewhere (JSON editor, undo, a loaded file). Per-group settings are
// set in the JSON; the row then shows the default and says that groups differ.
// GUI thread only; no job (editing a plan is cheap).

#include <QWidget>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QSpinBox;
class QToolButton;

namespace qb::ui {

class PlanTableModel;

class ActivationSettings : public QWidget {
    Q_OBJECT
public:
    explicit ActivationSettings(PlanTableModel* plan, QWidget* parent = nullptr);

    QComboBox* activationBits() const { return m_abits; }
    QDoubleSpinBox* clip() const { return m_clip; }
    QCheckBox* staticRanges() const { return m_static; }
    QComboBox* kvBits() const { return m_kvbits; }
    QCheckBox* smooth() const { return m_smooth; }
    QDoubleSpinBox* alpha() const { return m_alpha; }
    QComboBox* rotation() const { return m_rotate; }
    QSpinBox* finetuneEpochs() const { return m_epochs; }
    QToolButton* presets() const { return m_presets; }
    QLabel* note() const { return m_note; }

private:
    void syncFromPlan();
    void applyToPlan(const QString& what);

    PlanTableModel* m_plan;
    QComboBox* m_abits;
    QDoubleSpinBox* m_clip;
    QCheckBox* m_static;
    QComboBox* m_kvbits;
    QCheckBox* m_smooth;
    QDoubleSpinBox* m_alpha;
    QComboBox* m_rotate;
    QSpinBox* m_epochs;
    QToolButton* m_presets;
    QLabel* m_note;
    bool m_syncing = false;
};

} // namespace qb::ui
