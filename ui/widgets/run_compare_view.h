#pragma once
// RunCompareView: the quantization runs of this session (name, editable; plan, bits per weight,
// size, perplexity, mean KL and top-1 agreement against the original, time); select two rows to
// see their per-layer errors side by side and their KL figures (mean, median, p99, top-1) in one
// line; a bits-per-weight vs perplexity scatter of every run, labelled, with the original model's
// perplexity (from the runs' KL pass, same windows) as the baseline. GUI thread only (runs are immutable
// snapshots).

#include <QWidget>

#include <memory>

class QLabel;
class QPushButton;
class QTableView;

namespace qb::ui {

class BpwPerplexityChart;
class LayerErrorChart;
class QuantRunModel;
struct QuantRun;

class RunCompareView : public QWidget {
    Q_OBJECT
public:
    explicit RunCompareView(QuantRunModel* runs, QWidget* parent = nullptr);

    QTableView* table() const { return m_table; }
    LayerErrorChart* layerChart() const { return m_layers; }
    BpwPerplexityChart* scatter() const { return m_scatter; }
    QPushButton* exportButton() const { return m_export; }
    QLabel* klSummary() const { return m_kl; }
    // Runs currently compared (0, 1 or 2).
    QList<int> comparedRows() const;

Q_SIGNALS:
    // Export is implemented by the export feature (issue 7 item 6); this view only asks for it.
    void exportRequested(std::shared_ptr<const QuantRun> run);

private:
    void refresh();

    QuantRunModel* m_runs;
    QTableView* m_table;
    LayerErrorChart* m_layers;
    BpwPerplexityChart* m_scatter;
    QPushButton* m_export;
    QLabel* m_kl;
};

} // namespace qb::ui
