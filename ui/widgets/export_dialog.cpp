#include "widgets/export_dialog.h"

#include "io/ggml_codec.h"
#include "models/quant_run_model.h"
#include "tasks/job_runner.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QMessageBox>
#include <QFutureWatcher>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QTableWidget>
#include <QVBoxLayout>

#include <map>

namespace qb::ui {

namespace {

using Outcome = pipeline::ModelExportOutcome;

QString defaultOutput(const io::Checkpoint* ck, int runId, pipeline::ExportFormat f)
{
    QString base = QDir::homePath();
    QString name = QStringLiteral("model");
    if (ck) {
        const QFileInfo fi(QString::fromStdString(ck->path));
        base = fi.isDir() ? fi.absoluteFilePath() + QStringLiteral("/..") : fi.absolutePath();
        name = fi.isDir() ? fi.fileName() : fi.completeBaseName();
    }
    name += QStringLiteral("-run%1").arg(runId);
    switch (f) {
    case pipeline::ExportFormat::Gguf: name += QStringLiteral(".gguf"); break;
    case pipeline::ExportFormat::Gptq: name += QStringLiteral("-gptq"); break;
    case pipeline::ExportFormat::Safetensors: name += QStringLiteral("-fakequant"); break;
    case pipeline::ExportFormat::Qbproj: name += QStringLiteral(".qbproj"); break;
    }
    return QDir::cleanPath(base + QLatin1Char('/') + name);
}

QTableWidgetItem* cell(const QString& text)
{
    auto* i = new QTableWidgetItem(text);
    i->setFlags(Qt::ItemIsEnabled | Qt::ItemIsSelectable);
    return i;
}

} // namespace

ExportDialog::ExportDialog(JobRunner* runner, std::shared_ptr<const io::Checkpoint> checkpoint,
                           std::shared_ptr<const QuantRun> run, QWidget* parent)
    : QDialog(parent), m_runner(runner), m_checkpoint(std::move(checkpoint)), m_run(std::move(run)),
      m_format(new QComboBox), m_path(new QLineEdit), m_browse(new QPushButton(tr("Browse..."))),
      m_ggufType(new QComboBox), m_round(new QCheckBox(tr("Round real-valued zero-points (GPTQ)"))),
      m_export(new QPushButton(tr("Export"))), m_cancel(new QPushButton(tr("Cancel"))),
      m_close(new QPushButton(tr("Close"))), m_bar(new QProgressBar), m_report(new QTableWidget(0, 6)),
      m_verify(new QLabel), m_status(new QLabel)
{
    setObjectName(QStringLiteral("exportDialog"));
    setWindowTitle(m_run ? tr("Export run %1 \"%2\" — %3").arg(m_run->id).arg(m_run->name, m_run->summary)
                         : tr("Export run"));
    m_format->setObjectName(QStringLiteral("exportFormat"));
    m_path->setObjectName(QStringLiteral("exportPath"));
    m_browse->setObjectName(QStringLiteral("exportBrowse"));
    m_ggufType->setObjectName(QStringLiteral("exportGgufType"));
    m_round->setObjectName(QStringLiteral("exportRoundZeros"));
    m_export->setObjectName(QStringLiteral("exportStart"));
    m_cancel->setObjectName(QStringLiteral("exportCancel"));
    m_close->setObjectName(QStringLiteral("exportClose"));
    m_bar->setObjectName(QStringLiteral("exportProgress"));
    m_report->setObjectName(QStringLiteral("exportReport"));
    m_verify->setObjectName(QStringLiteral("exportVerify"));
    m_status->setObjectName(QStringLiteral("exportStatus"));

    m_format->addItem(tr("GGUF (llama.cpp)"), int(pipeline::ExportFormat::Gguf));
    m_format->addItem(tr("GPTQ directory"), int(pipeline::ExportFormat::Gptq));
    m_format->addItem(tr("Fake-quantized safetensors directory"), int(pipeline::ExportFormat::Safetensors));
    m_format->addItem(tr("Quantbench project (.qbproj)"), int(pipeline::ExportFormat::Qbproj));
    for (const auto& t : pipeline::ggufExportTypeNames())
        m_ggufType->addItem(t == "auto" ? tr("auto (smallest exact type per tensor)") : QString::fromStdString(t),
                            QString::fromStdString(t));
    m_ggufType->setToolTip(tr("Type of grids quantized without a storage target; auto stores every grid exactly. "
                              "Tensors quantized into a GGUF target always keep that type (exact)."));
    m_round->setToolTip(tr("GPTQ stores integer zero-points: round what the format cannot hold instead of "
                           "refusing (the max abs change is reported)"));
    m_path->setText(defaultOutput(m_checkpoint.get(), m_run ? m_run->id : 0, format()));
    m_bar->setRange(0, 1000);
    m_bar->setValue(0);
    m_bar->setTextVisible(true);
    m_cancel->setEnabled(false);
    m_report->setHorizontalHeaderLabels(
        {tr("Tensor"), tr("Planned"), tr("Written"), tr("Exact"), tr("Bytes"), tr("Max abs diff")});
    m_report->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
    m_report->verticalHeader()->hide();
    m_report->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_verify->setWordWrap(true);
    m_verify->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_status->setWordWrap(true);

    auto* pathRow = new QHBoxLayout;
    pathRow->addWidget(m_path, 1);
    pathRow->addWidget(m_browse);
    auto* form = new QFormLayout;
    form->addRow(tr("Format:"), m_format);
    form->addRow(tr("Output:"), pathRow);
    form->addRow(tr("GGUF type:"), m_ggufType);
    form->addRow(QString(), m_round);
    auto* buttons = new QHBoxLayout;
    buttons->addWidget(m_bar, 1);
    buttons->addWidget(m_export);
    buttons->addWidget(m_cancel);
    buttons->addWidget(m_close);
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(form);
    layout->addLayout(buttons);
    layout->addWidget(m_status);
    layout->addWidget(new QLabel(tr("Exactness report:")));
    layout->addWidget(m_report, 1);
    layout->addWidget(m_verify);
    resize(760, 560);

    connect(m_format, &QComboBox::currentIndexChanged, this, [this] {
        // Keep a typed path's folder, switch the default name's suffix.
        m_path->setText(defaultOutput(m_checkpoint.get(), m_run ? m_run->id : 0, format()));
        updateControls();
    });
    connect(m_browse, &QPushButton::clicked, this, &ExportDialog::chooseOutput);
    connect(m_export, &QPushButton::clicked, this, &ExportDialog::startExport);
    connect(m_cancel, &QPushButton::clicked, this, [this] {
        if (m_watcher) {
            m_watcher->cancel();
            m_status->setText(tr("Cancelling..."));
        }
    });
    connect(m_close, &QPushButton::clicked, this, &ExportDialog::reject);
    connect(m_path, &QLineEdit::textChanged, this, &ExportDialog::updateControls);
    updateControls();
}

pipeline::ExportFormat ExportDialog::format() const { return pipeline::ExportFormat(m_format->currentData().toInt()); }

void ExportDialog::updateControls()
{
    const bool running = isRunning();
    const auto f = format();
    m_format->setEnabled(!running);
    m_path->setEnabled(!running);
    m_browse->setEnabled(!running);
    m_ggufType->setEnabled(!running && f == pipeline::ExportFormat::Gguf);
    m_round->setEnabled(!running && f == pipeline::ExportFormat::Gptq);
    const bool exportable = m_run && m_run->result && m_checkpoint;
    m_export->setEnabled(!running && exportable && !m_path->text().trimmed().isEmpty());
    m_cancel->setEnabled(running);
    if (!exportable) m_status->setText(tr("Open the run's model first: the export rebuilds it from the model."));
}

void ExportDialog::chooseOutput()
{
    const bool dir = format() == pipeline::ExportFormat::Gptq || format() == pipeline::ExportFormat::Safetensors;
    auto* dialog = new QFileDialog(this, tr("Export to"), m_path->text());
    dialog->setObjectName(QStringLiteral("exportPathDialog"));
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    if (dir) {
        dialog->setFileMode(QFileDialog::Directory);
        dialog->setOption(QFileDialog::ShowDirsOnly);
    } else {
        dialog->setAcceptMode(QFileDialog::AcceptSave);
        dialog->setNameFilter(format() == pipeline::ExportFormat::Gguf ? tr("GGUF (*.gguf)")
                                                                       : tr("Quantbench project (*.qbproj)"));
    }
    connect(dialog, &QFileDialog::fileSelected, m_path, &QLineEdit::setText);
    dialog->open();
}

void ExportDialog::startExport()
{
    if (isRunning() || !m_run || !m_run->result || !m_checkpoint) return;
    const QString target = QDir::cleanPath(m_path->text().trimmed());
    if (QFileInfo::exists(target) && !m_overwriteConfirmed) {
        // Asked, never assumed; the write itself is atomic, so "No" leaves the file as it is.
        auto* box = new QMessageBox(QMessageBox::Question, tr("Replace %1?").arg(QFileInfo(target).fileName()),
                                    tr("%1 already exists. Replace it with this export?").arg(target),
                                    QMessageBox::Yes | QMessageBox::No, this);
        box->setObjectName(QStringLiteral("overwriteBox"));
        box->setDefaultButton(QMessageBox::No);
        box->setAttribute(Qt::WA_DeleteOnClose);
        connect(box, &QMessageBox::finished, this, [this](int result) {
            if (result != QMessageBox::Yes) {
                m_status->setText(tr("Export not started: the existing file is kept."));
                return;
            }
            m_overwriteConfirmed = true;
            startExport();
            m_overwriteConfirmed = false;
        });
        box->open();
        return;
    }
    pipeline::ModelExportRequest req;
    req.out = target.toStdString();
    req.format = format();
    req.ggufType = m_ggufType->currentData().toString().toStdString();
    req.roundGrids = m_round->isChecked();
    auto checkpoint = m_checkpoint;
    auto run = m_run;
    m_report->setRowCount(0);
    m_verify->clear();
    m_bar->setValue(0);
    m_status->setText(tr("Exporting to %1...").arg(QString::fromStdString(req.out)));

    pipeline::ExportRequest ex;
    ex.checkpoint = checkpoint;
    ex.run = run->toProjectRun();
    ex.target = req;
    auto* watcher = m_runner->start<Outcome>(
        this, QString(), [ex](RunContext& ctx) -> Result<Outcome> { return pipeline::exportRun(ex, &ctx); },
        [this](const JobOutcome<Outcome>& outcome) {
            m_watcher = nullptr;
            m_bar->setRange(0, 1000);
            updateControls();
            if (!outcome.ok()) {
                m_bar->setValue(0);
                if (outcome.error->code == ErrorCode::Cancelled) {
                    m_status->setText(tr("Export cancelled (nothing was replaced)."));
                    Q_EMIT exportFinished(false, tr("cancelled"));
                    return;
                }
                QString msg = QString::fromStdString(outcome.error->toString());
                if (outcome.error->code == ErrorCode::Unsupported && format() == pipeline::ExportFormat::Gptq &&
                    !m_round->isChecked())
                    msg += tr("\nTick \"Round real-valued zero-points\" to round what GPTQ cannot hold.");
                m_status->setText(tr("Export failed: %1").arg(msg));
                Q_EMIT exportFinished(false, msg);
                return;
            }
            m_bar->setValue(1000);
            showOutcome(*outcome.value);
            Q_EMIT exportFinished(true, QString::fromStdString(outcome.value->path));
        });
    m_watcher = watcher;
    connect(watcher, &QFutureWatcherBase::progressRangeChanged, m_bar,
            [this](int lo, int hi) { m_bar->setRange(lo, hi); });
    connect(watcher, &QFutureWatcherBase::progressValueChanged, m_bar, &QProgressBar::setValue);
    connect(watcher, &QFutureWatcherBase::progressTextChanged, m_status, &QLabel::setText);
    updateControls();
}

void ExportDialog::showOutcome(const Outcome& o)
{
    int rows = 0;
    auto addRow = [&](const std::string& name, const QString& planned, const QString& type, const QString& exact,
                      std::uint64_t bytes, double diff) {
        m_report->insertRow(rows);
        m_report->setItem(rows, 0, cell(QString::fromStdString(name)));
        m_report->setItem(rows, 1, cell(planned));
        m_report->setItem(rows, 2, cell(type));
        m_report->setItem(rows, 3, cell(exact));
        m_report->setItem(rows, 4, cell(bytes ? QString::number(qulonglong(bytes)) : QString()));
        m_report->setItem(rows, 5, cell(QString::number(diff, 'g', 6)));
        ++rows;
    };
    const QString yes = tr("yes"), no = tr("no");
    m_report->setRowCount(0);
    if (o.gguf) {
        for (const auto& t : o.gguf->tensors)
            addRow(t.name, QString::fromStdString(t.planned), QString::fromLatin1(io::ggmlTypeName(int(t.type))),
                   t.source == "quantized" ? tr("quantized") : (t.exact ? yes : no), t.bytes, t.maxAbsDiff);
    } else if (o.gptq) {
        std::map<std::string, double> change;
        for (const auto& i : o.gptq->analysis.issues)
            change[i.tensor] = std::max(change[i.tensor], i.maxAbsChange);
        for (const auto& n : o.gptq->analysis.quantized) {
            const double d = change.count(n) ? change[n] : 0.0;
            const QString type = tr("GPTQ int%1").arg(o.gptq->analysis.bits);
            addRow(n, type, type, d == 0.0 ? yes : no, 0, d);
        }
        for (const auto& n : o.gptq->analysis.unquantized)
            addRow(n, QString(), tr("unquantized"), yes, 0, 0.0);
    } else if (o.safetensors) {
        const QString type = QString::fromLatin1(dtypeName(o.safetensors->gridDtype));
        for (const auto& r : m_run->result->tensors)
            if (!r.skipped) addRow(r.name, QString(), type, yes, 0, 0.0); // F16 only when it holds every value
    } else if (o.format == pipeline::ExportFormat::Qbproj) {
        for (std::size_t i = 0; i < m_run->result->tensors.size(); ++i)
            if (i < m_run->result->codes.size() && m_run->result->codes[i]) {
                const auto& r = m_run->result->tensors[i];
                const QString grid =
                    r.target.empty() ? tr("grid %1-bit").arg(r.bits) : QString::fromStdString(r.target);
                addRow(r.name, grid, grid, yes, 0, 0.0);
            }
    }
    QString v = o.verified ? tr("Verification passed.") : tr("Verification FAILED.");
    if (!o.verifySummary.empty()) v += QLatin1Char('\n') + QString::fromStdString(o.verifySummary).trimmed();
    for (const auto& w : o.warnings)
        v += QLatin1Char('\n') + tr("warning: %1").arg(QString::fromStdString(w));
    m_verify->setText(v);
    if (o.plannedBytes)
        m_status->setText(tr("Wrote %1: %2 bytes (planned %3 bytes, %4 %)")
                              .arg(QString::fromStdString(o.path))
                              .arg(qulonglong(o.bytes))
                              .arg(qulonglong(o.plannedBytes))
                              .arg(100.0 * (double(o.bytes) / double(o.plannedBytes) - 1.0), 0, 'f', 2));
    else m_status->setText(tr("Wrote %1 (%2 bytes)").arg(QString::fromStdString(o.path)).arg(qulonglong(o.bytes)));
}

void ExportDialog::reject()
{
    if (m_watcher) {
        m_watcher->cancel(); // the finished handler runs later; the job polls cancel between tensors
        m_watcher->waitForFinished();
    }
    QDialog::reject();
}

} // namespace qb::ui
