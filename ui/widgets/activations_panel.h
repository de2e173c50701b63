#pragma once
// ActivationsPanel: calibration controls (text file, number of windows, window length) and, for
// the selected tensor, the statistics of the activations entering it: histogram, per-input-
// channel max |x| and mean x², moments and kurtosis, next to the tensor's own per-input-channel
// max |w| so outlier channels in activations and weights can be compared. Calibration runs in a
// worker thread through JobRunner (stage "calibrate", progress and cancel in the status bar).

#include "io/checkpoint.h"
#include "pipeline/activation_job.h"

#include <QWidget>

#include <memory>

class QComboBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QSpinBox;

namespace qb::ui {

class CalibrationSettings;

class ChannelChart;
class HistogramChart;
class JobRunner;
class JobStatus;

class ActivationsPanel : public QWidget {
    Q_OBJECT
public:
    ActivationsPanel(JobRunner* runner, JobStatus* status, QWidget* parent = nullptr);

    void setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint);
    // Binds the calibration widgets to the workbench's one calibration setting.
    void setCalibrationSettings(CalibrationSettings* settings);
    void showTensor(const QString& name);
    // The selected tensor's per-input-channel max |w|, computed by the weights view's job.
    void setWeightChannelMax(const QString& tensor, const std::vector<float>& colMax);
    // Starts calibration with the current settings (the Run button does the same).
    void startCalibration();
    // Writes the collected statistics as a llama.cpp importance matrix (GGUF; legacy .dat when the
    // path ends in .dat) through JobRunner; the "Export importance matrix..." button asks for the path.
    void exportImportanceMatrix(const QString& path);

    QLineEdit* textEdit() const { return m_text; }
    QComboBox* calibrationPreset() const { return m_preset; }
    QSpinBox* windowsSpin() const { return m_windows; }
    QSpinBox* lengthSpin() const { return m_length; }
    QPushButton* runButton() const { return m_run; }
    QPushButton* exportImatrixButton() const { return m_exportImatrix; }
    HistogramChart* histogram() const { return m_hist; }
    ChannelChart* maxAbsChart() const { return m_maxAbs; }
    ChannelChart* meanSquareChart() const { return m_meanSq; }
    ChannelChart* weightChart() const { return m_weightMax; }
    QString statsText() const;
    std::shared_ptr<const pipeline::ActivationReport> report() const { return m_report; }

Q_SIGNALS:
    void calibrationFinished(bool ok, const QString& message);
    void importanceMatrixExported(bool ok, const QString& message);

private:
    void display();
    void browse();
    void chooseImatrixPath();

    JobRunner* m_runner;
    JobStatus* m_status;
    std::shared_ptr<const io::Checkpoint> m_checkpoint;
    std::shared_ptr<const pipeline::ActivationReport> m_report;
    QString m_tensor;
    QLineEdit* m_text;
    QComboBox* m_preset;
    QSpinBox* m_windows;
    QSpinBox* m_length;
    QPushButton* m_run;
    QPushButton* m_exportImatrix;
    std::string m_reportText; // the calibration text the report was collected on
    QLabel* m_title;
    QLabel* m_stats;
    HistogramChart* m_hist;
    ChannelChart* m_maxAbs;
    ChannelChart* m_meanSq;
    ChannelChart* m_weightMax;
    QString m_weightTensor;
    std::vector<float> m_weightColMax;
};

// A text file beside the model (calib.txt / eval.txt) or, failing that, the bundled demo's.
QString defaultTextFile(const io::Checkpoint* checkpoint, const QString& fileName);

} // namespace qb::ui
