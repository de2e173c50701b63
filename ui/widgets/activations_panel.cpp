#include "widgets/activations_panel.h"

#include "pipeline/importance.h"

#include "charts/histogram_chart.h"
#include "pipeline/workflows.h"
#include "tasks/job_runner.h"
#include "widgets/calibration_settings.h"
#include "widgets/job_status.h"
#include "widgets/main_window.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QVBoxLayout>

namespace qb::ui {

QString defaultTextFile(const io::Checkpoint* checkpoint, const QString& fileName)
{
    if (checkpoint) {
        QFileInfo model(QString::fromStdString(checkpoint->path));
        const QString dir = model.isDir() ? model.absoluteFilePath() : model.absolutePath();
        if (QFileInfo::exists(dir + QLatin1Char('/') + fileName)) return dir + QLatin1Char('/') + fileName;
    }
    const QString demo = MainWindow::bundledDemoPath();
    if (!demo.isEmpty() && QFileInfo::exists(demo + QLatin1Char('/') + fileName))
        return demo + QLatin1Char('/') + fileName;
    return {};
}

ActivationsPanel::ActivationsPanel(JobRunner* runner, JobStatus* status, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_status(status), m_text(new QLineEdit), m_preset(new QComboBox),
      m_windows(new QSpinBox), m_length(new QSpinBox), m_run(new QPushButton(tr("Run calibration"))),
      m_exportImatrix(new QPushButton(tr("Export importance matrix..."))),
      m_title(new QLabel(tr("Run calibration, then select a linear layer's weight."))), m_stats(new QLabel),
      m_hist(new HistogramChart(tr("Activation histogram (input of the selected layer)"), tr("activation value"))),
      m_maxAbs(new ChannelChart(tr("Max |x| per input channel"), tr("input channel"), tr("max |x|"))),
      m_meanSq(new ChannelChart(tr("Mean x² per input channel"), tr("input channel"), tr("mean x²"))),
      m_weightMax(new ChannelChart(tr("Max |w| per input channel (weights)"), tr("input channel"), tr("max |w|")))
{
    setObjectName(QStringLiteral("activationsPanel"));
    m_text->setObjectName(QStringLiteral("calibText"));
    m_preset->setObjectName(QStringLiteral("calibPreset"));
    m_windows->setObjectName(QStringLiteral("calibWindows"));
    m_length->setObjectName(QStringLiteral("calibLength"));
    m_run->setObjectName(QStringLiteral("calibRun"));
    m_windows->setRange(1, 4096);
    m_windows->setValue(128);
    m_length->setRange(8, 8192);
    m_length->setValue(512);
    m_length->setSuffix(tr(" tokens"));
    m_text->setPlaceholderText(tr("calibration text file (UTF-8)"));
    m_stats->setWordWrap(true);
    m_stats->setTextInteractionFlags(Qt::TextSelectableByMouse);
    QFont f = m_title->font();
    f.setBold(true);
    m_title->setFont(f);

    auto* browseButton = new QPushButton(tr("Browse..."));
    browseButton->setObjectName(QStringLiteral("calibBrowse"));
    auto* logCounts = new QCheckBox(tr("Log counts"));
    logCounts->setObjectName(QStringLiteral("activationsLog"));
    logCounts->setChecked(true); // activations are heavy-tailed: the tails matter
    m_hist->setLogCounts(true);
    connect(logCounts, &QCheckBox::toggled, m_hist, &HistogramChart::setLogCounts);
    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Text:")));
    controls->addWidget(m_text, 1);
    controls->addWidget(browseButton);
    controls->addWidget(m_preset);
    controls->addWidget(new QLabel(tr("Windows:")));
    controls->addWidget(m_windows);
    controls->addWidget(new QLabel(tr("Length:")));
    controls->addWidget(m_length);
    // The actions on a row of their own: one row of everything needed 1013 px, which left the
    // model explorer too narrow for its columns at 1280x800.
    auto* actions = new QHBoxLayout;
    actions->addWidget(m_run);
    actions->addWidget(m_exportImatrix);
    actions->addStretch(1);
    actions->addWidget(logCounts);

    auto* grid = new QGridLayout;
    grid->addWidget(m_hist, 0, 0);
    grid->addWidget(m_maxAbs, 0, 1);
    grid->addWidget(m_meanSq, 1, 0);
    grid->addWidget(m_weightMax, 1, 1);

    auto* layout = new QVBoxLayout(this);
    layout->addLayout(controls);
    layout->addLayout(actions);
    layout->addWidget(m_title);
    layout->addWidget(m_stats);
    layout->addLayout(grid, 1);

    connect(browseButton, &QPushButton::clicked, this, &ActivationsPanel::browse);
    connect(m_run, &QPushButton::clicked, this, &ActivationsPanel::startCalibration);
    m_exportImatrix->setObjectName(QStringLiteral("exportImatrix"));
    m_exportImatrix->setToolTip(tr("Write these statistics (mean x² per input column of every decoder linear) as a "
                                   "llama.cpp importance matrix for llama-quantize --imatrix: GGUF, or the legacy "
                                   ".dat format when the name ends in .dat"));
    m_exportImatrix->setEnabled(false);
    connect(m_exportImatrix, &QPushButton::clicked, this, &ActivationsPanel::chooseImatrixPath);
}

void ActivationsPanel::chooseImatrixPath()
{
    auto* dialog = new QFileDialog(this, tr("Export importance matrix"),
                                   QFileInfo(m_text->text()).absolutePath() + QStringLiteral("/imatrix.gguf"),
                                   tr("GGUF importance matrix (*.gguf);;Legacy llama.cpp imatrix (*.dat)"));
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->setAcceptMode(QFileDialog::AcceptSave);
    dialog->setDefaultSuffix(QStringLiteral("gguf"));
    connect(dialog, &QFileDialog::fileSelected, this, &ActivationsPanel::exportImportanceMatrix);
    dialog->open();
}

void ActivationsPanel::exportImportanceMatrix(const QString& path)
{
    if (!m_report || path.isEmpty()) return;
    if (m_status->isBusy()) {
        Q_EMIT importanceMatrixExported(false, tr("another job is running"));
        return;
    }
    pipeline::ImportanceExportRequest req;
    req.report = m_report;
    req.calibrate.calibration.textPath = m_reportText;
    req.out = path.toStdString();
    req.format = path.endsWith(QStringLiteral(".dat"), Qt::CaseInsensitive) ? io::ImportanceFormat::Dat
                                                                            : io::ImportanceFormat::Gguf;
    m_runner->start<pipeline::ImportanceExportOutcome>(
        this, tr("Exporting importance matrix"),
        [req](RunContext& ctx) { return pipeline::exportImportanceMatrix(req, &ctx); },
        [this](const JobOutcome<pipeline::ImportanceExportOutcome>& outcome) {
            m_exportImatrix->setEnabled(m_report != nullptr);
            if (!outcome.ok()) {
                Q_EMIT importanceMatrixExported(false, outcome.error->code == ErrorCode::Cancelled
                                                           ? tr("cancelled")
                                                           : QString::fromStdString(outcome.error->toString()));
                return;
            }
            Q_EMIT importanceMatrixExported(true, tr("%1: %2 entries, %3 bytes")
                                                      .arg(QString::fromStdString(outcome.value->path))
                                                      .arg(outcome.value->entries)
                                                      .arg(qulonglong(outcome.value->bytes)));
        });
    m_exportImatrix->setEnabled(false);
}

void ActivationsPanel::browse()
{
    auto* dialog = new QFileDialog(this, tr("Calibration text"), QFileInfo(m_text->text()).absolutePath(),
                                   tr("Text files (*.txt);;All files (*)"));
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->setFileMode(QFileDialog::ExistingFile);
    connect(dialog, &QFileDialog::fileSelected, m_text, &QLineEdit::setText);
    dialog->open();
}

void ActivationsPanel::setCalibrationSettings(CalibrationSettings* settings)
{
    settings->bind(m_text, m_windows, m_length, m_preset);
}

void ActivationsPanel::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
    m_report.reset();
    m_exportImatrix->setEnabled(false);
    m_tensor.clear();
    m_text->setText(defaultTextFile(m_checkpoint.get(), QStringLiteral("calib.txt")));
    m_stats->clear();
    m_hist->setHistogram({});
    m_maxAbs->setValues({});
    m_meanSq->setValues({});
    m_weightMax->setValues({});
    m_run->setEnabled(m_checkpoint != nullptr);
}

void ActivationsPanel::showTensor(const QString& name)
{
    m_tensor = name;
    display();
}

QString ActivationsPanel::statsText() const { return m_stats->text(); }

void ActivationsPanel::startCalibration()
{
    if (!m_checkpoint) return;
    if (m_status->isBusy()) {
        Q_EMIT calibrationFinished(false, tr("another job is running"));
        return;
    }
    auto checkpoint = m_checkpoint;
    const std::string textPath = m_text->text().toStdString();
    pipeline::CalibrateRequest req;
    req.checkpoint = checkpoint;
    req.calibration.textPath = textPath;
    req.calibration.options.nsamples = m_windows->value();
    req.calibration.options.seqlen = m_length->value();
    m_runner->start<pipeline::ActivationReport>(
        this, tr("Calibrating"), [req](RunContext& ctx) { return pipeline::calibrateActivations(req, &ctx); },
        [this, textPath](const JobOutcome<pipeline::ActivationReport>& outcome) {
            m_run->setEnabled(true);
            if (!outcome.ok() && outcome.error->code == ErrorCode::Cancelled) {
                Q_EMIT calibrationFinished(false, tr("cancelled"));
                return;
            }
            if (!outcome.ok()) {
                const QString msg = QString::fromStdString(outcome.error->toString());
                m_title->setText(tr("Calibration failed: %1").arg(msg));
                Q_EMIT calibrationFinished(false, msg);
                return;
            }
            m_report = outcome.value;
            m_reportText = textPath;
            m_exportImatrix->setEnabled(true);
            display();
            Q_EMIT calibrationFinished(true, tr("%1 windows of %2 tokens in %3 s")
                                                 .arg(m_report->windows)
                                                 .arg(m_report->seqlen)
                                                 .arg(m_report->seconds, 0, 'f', 2));
        });
    m_run->setEnabled(false);
}

void ActivationsPanel::display()
{
    if (!m_report) return;
    const auto* stats = m_report->forTensor(m_tensor.toStdString());
    if (!stats) {
        m_title->setText(m_tensor.isEmpty()
                             ? tr("Calibrated on %1 windows of %2 tokens. Select a linear layer's weight.")
                                   .arg(m_report->windows)
                                   .arg(m_report->seqlen)
                             : tr("%1 is not a linear layer weight: no activation statistics.").arg(m_tensor));
        // Nothing of the previous tensor stays on screen.
        m_stats->clear();
        m_hist->setHistogram({});
        m_maxAbs->setValues({});
        m_meanSq->setValues({});
        m_weightMax->setValues({});
        if (!m_tensor.isEmpty())
            for (PlaceholderChartView* c :
                 {static_cast<PlaceholderChartView*>(m_hist), static_cast<PlaceholderChartView*>(m_maxAbs),
                  static_cast<PlaceholderChartView*>(m_meanSq), static_cast<PlaceholderChartView*>(m_weightMax)})
                c->setPlaceholder(tr("No activation statistics: not a linear layer's weight"));
        return;
    }
    m_title->setText(
        tr("Input of %1  (%2 tokens, %3 channels)").arg(m_tensor).arg(stats->tokens()).arg(stats->channels()));
    const auto m = stats->moments();
    const auto maxAbs = stats->channelMaxAbs();
    QStringList top;
    for (int i : eval::topIndices(maxAbs, 5))
        top << QStringLiteral("%1 (%2)").arg(i).arg(double(maxAbs[std::size_t(i)]), 0, 'g', 4);
    m_stats->setText(tr("min %1   max %2   mean %3   std %4   kurtosis %5<br>top channels by max |x|: %6")
                         .arg(m.min, 0, 'g', 5)
                         .arg(m.max, 0, 'g', 5)
                         .arg(m.mean, 0, 'g', 5)
                         .arg(m.std, 0, 'g', 5)
                         .arg(m.kurtosis, 0, 'f', 2)
                         .arg(top.join(QStringLiteral(", "))));
    m_hist->setHistogram(stats->histogram());
    m_maxAbs->setValues(maxAbs);
    m_meanSq->setValues(stats->channelMeanSquare());
    if (m_weightTensor == m_tensor) m_weightMax->setValues(m_weightColMax);
}

void ActivationsPanel::setWeightChannelMax(const QString& tensor, const std::vector<float>& colMax)
{
    m_weightTensor = tensor;
    m_weightColMax = colMax;
    if (tensor == m_tensor) m_weightMax->setValues(colMax);
}

} // namespace qb::ui
