#pragma once
// RunHeader: the line above the Results tab: which run the table and chart show ("Run #3"), its
// name in an editor (Enter or leaving the field renames it in the run list; empty restores the
// default name), and its figures: plan, bits per weight, size, perplexity against the original
// model's, mean KL, time. While a run is in flight it says so and the name cannot be edited.
// GUI thread only; it reads the run list (QuantRunModel) and follows its renames.

#include <QWidget>

class QLabel;
class QLineEdit;

namespace qb::ui {

class QuantRunModel;

class RunHeader : public QWidget {
    Q_OBJECT
public:
    explicit RunHeader(QuantRunModel* runs, QWidget* parent = nullptr);

    // The run of this id in the run list (0 or an unknown id: none).
    void showRun(int id);
    // A run in flight, described by its plan summary.
    void showRunning(const QString& summary);
    int runId() const { return m_id; }

    QLabel* runLabel() const { return m_run; }
    QLineEdit* nameEdit() const { return m_name; }
    QLabel* details() const { return m_details; }

private:
    void refresh();

    QuantRunModel* m_runs;
    int m_id = 0;
    QLabel* m_run;
    QLineEdit* m_name;
    QLabel* m_details;
};

} // namespace qb::ui
