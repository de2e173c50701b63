#pragma once
// DistillPanel: the "Distill" step of the Quantization tab. Picks a finished run, edits the
// distillation settings (steps, learning rate, windows per step, loss, warm-up, gradient clipping,
// RMSNorm gains; pipeline::DistillOptions) and says what trains (scales and zero-points with the
// codes frozen, optionally the norm gains, and which tensors stay frozen). The Distill button is
// disabled, with the core's reason as tooltip and text, for runs that cannot be distilled
// (pipeline::checkDistillable: weight-and-activation plans, K-quant/CMPQ-only runs, ...; runs
// restored from a project have no calibration windows).
//
// A distillation goes through JobRunner + JobStatus (progress, ETA, Cancel) as
// pipeline::distillRun on a snapshot of the run; the loss of every step comes from
// DistillOptions::onStep on the worker, crosses to the GUI thread by a queued invocation and is
// drawn at most about 10 times a second (one replace per series). When done the distilled model
// becomes a new run (handed to the run sink: the runs table, compare view) with its perplexity
// and KL next to the source run's. Cancel leaves every run as it was; the optimiser state is kept
// so that the same run with the same settings resumes from the last step taken.

#include "io/checkpoint.h"
#include "pipeline/distill.h"
#include "pipeline/workflows.h"

#include <QWidget>

#include <functional>
#include <memory>
#include <optional>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QPushButton;
class QSpinBox;
class QTimer;

namespace qb::ui {

class JobRunner;
class JobStatus;
class LossCurveChart;
class QuantRunModel;
struct QuantRun;

class DistillPanel : public QWidget {
    Q_OBJECT
public:
    DistillPanel(JobRunner* runner, JobStatus* status, QuantRunModel* runs, QWidget* parent = nullptr);

    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    // Where a distilled run goes (it gets its id there); called on the GUI thread.
    using RunSink = std::function<void(std::shared_ptr<QuantRun> run, std::shared_ptr<const QuantRun> source)>;
    void setRunSink(RunSink sink) { m_sink = std::move(sink); }
    // Evaluation context of the perplexity after distilling (the quantize panel's).
    void setEvalContext(int ctx) { m_evalCtx = ctx; }
    // Chooses the run to distill by row of the runs model.
    void selectRun(int row);
    void startDistill();

    // The settings as a DistillOptions (no onStep).
    pipeline::DistillOptions options() const;
    // Why the chosen run cannot be distilled ("" when it can).
    QString refusal() const { return m_refusal; }

    QComboBox* runCombo() const { return m_runCombo; }
    QSpinBox* stepsSpin() const { return m_steps; }
    QDoubleSpinBox* lrSpin() const { return m_lr; }
    QSpinBox* batchSpin() const { return m_batch; }
    QComboBox* lossCombo() const { return m_loss; }
    QSpinBox* warmupSpin() const { return m_warmup; }
    QDoubleSpinBox* clipSpin() const { return m_clip; }
    QCheckBox* gainsCheck() const { return m_gains; }
    QCheckBox* perplexityCheck() const { return m_evalPpl; }
    QPushButton* distillButton() const { return m_run; }
    LossCurveChart* chart() const { return m_chart; }
    QLabel* scopeLabel() const { return m_scope; }
    QLabel* resultLabel() const { return m_result; }
    QLabel* estimateLabel() const { return m_estimate; }

Q_SIGNALS:
    void distillFinished(bool ok, const QString& message);

private:
    std::shared_ptr<const QuantRun> chosenRun() const;
    void refreshRuns();
    void updateState(); // refusal, scope text, button text
    void onStep(int serial, const pipeline::DistillStepReport& report);
    // The request for `source` with the current settings (no onStep).
    pipeline::DistillRunRequest buildRequest(const QuantRun& source) const;
    void refreshEstimate(); // a background pre-flight (time, memory) of the current settings
    void flushCurve();
    QString lossName() const;

    JobRunner* m_runner;
    JobStatus* m_status;
    QuantRunModel* m_runs;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    RunSink m_sink;
    int m_evalCtx = 128;
    int m_serial = 0;
    bool m_busy = false;
    QString m_refusal;
    // A cancelled distillation's optimiser state: resumed when the same run and settings start again.
    struct Resume {
        std::shared_ptr<const pipeline::QuantizeResult> result; // the run's (a rename keeps it)
        pipeline::DistillOptions options;
        std::shared_ptr<pipeline::DistillState> state;
    };
    std::optional<Resume> m_resume;
    QList<double> m_curveLoss, m_curveLr;
    int m_curveSteps = 0;
    QString m_curveTitle;
    QTimer* m_curveTimer;

    QComboBox* m_runCombo;
    QSpinBox* m_steps;
    QDoubleSpinBox* m_lr;
    QSpinBox* m_batch;
    QComboBox* m_loss;
    QSpinBox* m_warmup;
    QDoubleSpinBox* m_clip;
    QCheckBox* m_gains;
    QCheckBox* m_evalPpl;
    QPushButton* m_run;
    QLabel* m_scope;
    QLabel* m_reason;
    QLabel* m_estimate;
    QLabel* m_result;
    LossCurveChart* m_chart;
    QTimer* m_estimateTimer;
    int m_estimateSerial = 0;
};

} // namespace qb::ui
