#include "widgets/quantize_resume.h"

#include "io/json_value.h"
#include "pipeline/quant_plan.h"
#include "pipeline/quantize_checkpoint.h"

#include <QCoreApplication>
#include <QCryptographicHash>
#include <QDir>
#include <QFileInfo>
#include <QMessageBox>
#include <QPushButton>
#include <QStandardPaths>

namespace qb::ui {

namespace {

QString shortHash(const QByteArray& bytes)
{
    return QString::fromLatin1(QCryptographicHash::hash(bytes, QCryptographicHash::Sha1).toHex().left(16));
}

} // namespace

QString quantizeCheckpointDir(const io::Checkpoint& model, const pipeline::QuantizeRequest& request,
                              const QString& imatrixPath)
{
    const QString modelPath = QFileInfo(QString::fromStdString(model.path)).absoluteFilePath();
    QByteArray key = QByteArray::fromStdString(io::toJsonText(pipeline::quantPlanToJson(request.plan), -1));
    key += '\n' + QByteArray::fromStdString(io::toJsonText(request.calibration.toJson(), -1));
    key += '\n' + imatrixPath.toUtf8();
    QString base = QStandardPaths::writableLocation(QStandardPaths::CacheLocation);
    // Under QStandardPaths' test mode (the GUI tests) one directory per process: a test killed in
    // the middle of a run (a timeout) must not leave a checkpoint that makes its next run ask.
    if (QStandardPaths::isTestModeEnabled())
        base += QStringLiteral("/test-pid-%1").arg(QCoreApplication::applicationPid());
    return QDir(base).filePath(
        QStringLiteral("quantize-checkpoints/%1-%2/%3")
            .arg(QFileInfo(modelPath).fileName(), shortHash(modelPath.toUtf8()), shortHash(key)));
}

void pruneQuantizeCheckpointDirs(const QString& dir)
{
    const QString root = QDir::cleanPath(QStandardPaths::writableLocation(QStandardPaths::CacheLocation));
    QString d = QDir::cleanPath(dir);
    while (d.startsWith(root + QLatin1Char('/')) && !QFileInfo::exists(d)) // removed with its checkpoint
        d = QFileInfo(d).path();
    while (d.startsWith(root + QLatin1Char('/')) &&
           QDir(d).isEmpty(QDir::AllEntries | QDir::NoDotAndDotDot | QDir::Hidden)) {
        if (!QDir().rmdir(d)) break;
        d = QFileInfo(d).path();
    }
}

std::optional<std::pair<int, int>> interruptedQuantizeRun(const QString& dir)
{
    if (!QFileInfo::exists(QDir(dir).filePath(QStringLiteral("manifest.json")))) return std::nullopt;
    auto m = pipeline::readQuantizeCheckpointManifest(dir.toStdString());
    if (!m.ok()) return std::pair(0, 0);
    if (!*m) return std::nullopt;
    return std::pair((*m)->done, (*m)->layers);
}

void askResumeQuantize(QWidget* parent, int done, int layers, std::function<void(ResumeAnswer)> answer)
{
    auto* box = new QMessageBox(QMessageBox::Question, QObject::tr("Resume quantization?"),
                                layers > 0 ? QObject::tr("An interrupted run of this model, plan and calibration has "
                                                         "%1 of %2 layers checkpointed.")
                                                 .arg(done)
                                                 .arg(layers)
                                           : QObject::tr("An interrupted run of this model, plan and calibration "
                                                         "left a checkpoint."),
                                QMessageBox::NoButton, parent);
    box->setObjectName(QStringLiteral("resumeQuantizeBox"));
    box->setInformativeText(QObject::tr("Resume continues after the last finished layer, with the same result "
                                        "as an uninterrupted run. Start over discards the checkpoint."));
    QPushButton* resume = box->addButton(QObject::tr("Resume"), QMessageBox::AcceptRole);
    QPushButton* over = box->addButton(QObject::tr("Start over"), QMessageBox::DestructiveRole);
    box->addButton(QMessageBox::Cancel);
    box->setDefaultButton(resume);
    box->setAttribute(Qt::WA_DeleteOnClose);
    box->setWindowModality(Qt::WindowModal);
    QObject::connect(box, &QMessageBox::finished, box, [box, resume, over, answer = std::move(answer)](int) {
        QAbstractButton* b = box->clickedButton();
        answer(b == resume ? ResumeAnswer::Resume : b == over ? ResumeAnswer::StartOver : ResumeAnswer::Cancel);
    });
    box->open();
}

} // namespace qb::ui
