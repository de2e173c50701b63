#pragma once
// PlanEditor: the per-tensor quantization plan of the Quantization tab. A table of every
// quantizable tensor (method from the traits table, bits, group size, sym, skip) edited in place
// or in bulk over the selected rows; the plan JSON (default + glob rules, the quantbench-cli
// format) in a text editor with validation errors; undo/redo (Ctrl+Z / Ctrl+Shift+Z inside the
// editor); load/save of plan files; live totals (bits per weight, MB, fraction of F16); the
// weight-and-activation row (activation/KV bits, smoothing, rotation: ActivationSettings).
// GUI thread only; resolving a plan is cheap (no job).

#include "base/model_config.h"

#include <QWidget>

#include <optional>

class QAction;
class QComboBox;
class QLabel;
class QLineEdit;
class QPlainTextEdit;
class QPushButton;
class QTableView;
class QUndoStack;

namespace qb::ui {

class ActivationSettings;
class PlanTableModel;

class PlanEditor : public QWidget {
    Q_OBJECT
public:
    explicit PlanEditor(QWidget* parent = nullptr);

    // Shows or hides a plan table column (the header's column chooser); remembered in QSettings.
    void setColumnShown(int column, bool shown);
    void setConfig(const std::optional<ModelConfig>& config);
    // Load/save the plan JSON; return the error message, empty on success.
    QString loadPlanFile(const QString& path);
    QString savePlanFile(const QString& path);
    // Selects the row of a tensor (full name, with or without ".weight"); false when absent.
    bool selectTensor(const QString& name);

    PlanTableModel* model() const { return m_model; }
    ActivationSettings* activationSettings() const { return m_activation; }
    QUndoStack* undoStack() const { return m_undo; }
    QTableView* table() const { return m_table; }
    QComboBox* bulkField() const { return m_bulkField; }
    QLineEdit* bulkValue() const { return m_bulkValue; }
    QPushButton* bulkApply() const { return m_bulkApply; }
    QPlainTextEdit* jsonEdit() const { return m_json; }
    QPushButton* jsonApply() const { return m_jsonApply; }
    QLabel* messageLabel() const { return m_message; }
    QLabel* totalsLabel() const { return m_totals; }
    QAction* undoAction() const { return m_undoAction; }
    QAction* redoAction() const { return m_redoAction; }

Q_SIGNALS:
    void planChanged();

private:
    void applyBulk();
    void applyJson();
    void refreshJson();
    void showMessage(const QString& text, bool error);
    void openDialog(bool save);

    QUndoStack* m_undo;
    PlanTableModel* m_model;
    QTableView* m_table;
    QComboBox* m_bulkField;
    QLineEdit* m_bulkValue;
    QPushButton* m_bulkApply;
    QPlainTextEdit* m_json;
    QPushButton* m_jsonApply;
    QLabel* m_message;
    QLabel* m_totals;
    QAction* m_undoAction;
    QAction* m_redoAction;
    ActivationSettings* m_activation = nullptr;
};

} // namespace qb::ui
