#pragma once
// PerplexityPanel: evaluate the loaded model on a text file (context length, scoring mode, and
// optionally llama.cpp's 8-bit-activation arithmetic for GGUF Q4_0/Q8_0 weights) in a worker
// thread with progress, ETA and cancel; every finished run is appended to the run history table,
// which lives as long as the window.

#include "io/checkpoint.h"

#include <QWidget>

#include <memory>

class QCheckBox;
class QComboBox;
class QLineEdit;
class QPushButton;
class QSpinBox;
class QTableView;

namespace qb::ui {

class JobRunner;
class JobStatus;
class RunHistoryModel;

class PerplexityPanel : public QWidget {
    Q_OBJECT
public:
    PerplexityPanel(JobRunner* runner, JobStatus* status, QWidget* parent = nullptr);

    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    void startEvaluation();

    RunHistoryModel* history() const { return m_history; }
    QTableView* table() const { return m_table; }
    QLineEdit* textEdit() const { return m_text; }
    QSpinBox* ctxSpin() const { return m_ctx; }
    QComboBox* modeCombo() const { return m_mode; }
    QCheckBox* int8Check() const { return m_int8; }
    QPushButton* runButton() const { return m_run; }

Q_SIGNALS:
    void evaluationFinished(bool ok, const QString& message);

private:
    JobRunner* m_runner;
    JobStatus* m_status;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    RunHistoryModel* m_history;
    QTableView* m_table;
    QLineEdit* m_text;
    QSpinBox* m_ctx;
    QComboBox* m_mode;
    QCheckBox* m_int8;
    QPushButton* m_run;
};

} // namespace qb::ui
