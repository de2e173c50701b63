#include "widgets/perplexity_panel.h"

#include "models/run_history_model.h"
#include "pipeline/workflows.h"
#include "tasks/job_runner.h"
#include "widgets/activations_panel.h"
#include "widgets/job_status.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QTableView>
#include <QVBoxLayout>

namespace qb::ui {

PerplexityPanel::PerplexityPanel(JobRunner* runner, JobStatus* status, QWidget* parent)
    : QWidget(parent), m_runner(runner), m_status(status), m_history(new RunHistoryModel(this)),
      m_table(new QTableView), m_text(new QLineEdit), m_ctx(new QSpinBox), m_mode(new QComboBox),
      m_int8(new QCheckBox(tr("8-bit activations"))), m_run(new QPushButton(tr("Evaluate perplexity")))
{
    setObjectName(QStringLiteral("perplexityPanel"));
    m_text->setObjectName(QStringLiteral("pplText"));
    m_ctx->setObjectName(QStringLiteral("pplCtx"));
    m_mode->setObjectName(QStringLiteral("pplMode"));
    m_int8->setObjectName(QStringLiteral("pplInt8"));
    m_int8->setToolTip(tr("GGUF Q4_0/Q8_0 weights multiply as llama.cpp does: the activations quantized to 8 bits per "
                          "block of 32, integer dot products (faster; the numbers follow llama.cpp's). Off: F32 "
                          "activations, so a quantized model's error is its weights' alone. Other weights are "
                          "unaffected."));
    m_run->setObjectName(QStringLiteral("pplRun"));
    m_table->setObjectName(QStringLiteral("historyTable"));
    m_ctx->setRange(8, 32768);
    m_ctx->setValue(128);
    m_ctx->setSuffix(tr(" tokens"));
    m_mode->addItem(tr("all tokens"), QStringLiteral("all"));
    m_mode->addItem(tr("second half (llama.cpp)"), QStringLiteral("second-half"));
    m_text->setPlaceholderText(tr("evaluation text file (UTF-8)"));
    m_table->setModel(m_history);
    m_table->setTabKeyNavigation(false); // Tab leaves the table
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->verticalHeader()->hide();

    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Text:")));
    controls->addWidget(m_text, 1);
    controls->addWidget(new QLabel(tr("Context:")));
    controls->addWidget(m_ctx);
    controls->addWidget(new QLabel(tr("Scoring:")));
    controls->addWidget(m_mode);
    controls->addWidget(m_int8);
    controls->addWidget(m_run);
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(controls);
    layout->addWidget(m_table, 1);
    m_run->setEnabled(false);
    connect(m_run, &QPushButton::clicked, this, &PerplexityPanel::startEvaluation);
}

void PerplexityPanel::setCheckpoint(std::shared_ptr<const io::Checkpoint> checkpoint)
{
    m_checkpoint = std::move(checkpoint);
    m_text->setText(defaultTextFile(m_checkpoint.get(), QStringLiteral("eval.txt")));
    m_run->setEnabled(m_checkpoint != nullptr);
}

void PerplexityPanel::startEvaluation()
{
    if (!m_checkpoint) return;
    if (m_status->isBusy()) {
        Q_EMIT evaluationFinished(false, tr("another job is running"));
        return;
    }
    auto checkpoint = m_checkpoint;
    const QString textPath = m_text->text();
    pipeline::PerplexityJobOptions opt;
    opt.ctx = m_ctx->value();
    opt.mode = *eval::parseScoreMode(m_mode->currentData().toString().toStdString());
    opt.int8Products = m_int8->isChecked();
    pipeline::EvaluateRequest req;
    req.checkpoint = checkpoint;
    req.textPath = textPath.toStdString();
    req.options = opt;
    m_runner->start<pipeline::EvaluateOutcome>(
        this, tr("Evaluating perplexity"), [req](RunContext& ctx) { return pipeline::evaluateModel(req, &ctx); },
        [this, textPath, checkpoint](const JobOutcome<pipeline::EvaluateOutcome>& outcome) {
            m_run->setEnabled(true);
            if (!outcome.ok()) {
                Q_EMIT evaluationFinished(false, outcome.error->code == ErrorCode::Cancelled
                                                     ? tr("cancelled")
                                                     : QString::fromStdString(outcome.error->toString()));
                return;
            }
            const auto& r = outcome.value->perplexity;
            RunRecord rec;
            rec.when = QDateTime::currentDateTime();
            rec.model = QFileInfo(QString::fromStdString(checkpoint->path)).fileName();
            rec.variant = r.int8Weights > 0 ? tr("original, int8 (%1 linears)").arg(r.int8Weights) : tr("original");
            rec.text = QFileInfo(textPath).fileName();
            rec.ctx = r.ctx;
            rec.mode = QString::fromLatin1(eval::scoreModeName(r.mode));
            rec.perplexity = r.perplexity;
            rec.tokens = r.tokensScored;
            rec.seconds = r.seconds;
            rec.tokensPerSecond = r.tokensPerSecond;
            m_history->append(rec);
            m_table->scrollToBottom();
            Q_EMIT evaluationFinished(true, QString::number(r.perplexity, 'f', 4));
        });
    m_run->setEnabled(false);
}

} // namespace qb::ui
