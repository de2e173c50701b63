#include "widgets/job_status.h"

#include <QFutureWatcher>
#include <QHBoxLayout>
#include <QLabel>
#include <QProgressBar>
#include <QPushButton>

namespace qb::ui {

JobStatus::JobStatus(QWidget* parent)
    : QWidget(parent), m_label(new QLabel(this)), m_bar(new QProgressBar(this)),
      m_cancel(new QPushButton(tr("Cancel"), this))
{
    setObjectName(QStringLiteral("jobStatus"));
    m_cancel->setObjectName(QStringLiteral("jobCancel"));
    m_bar->setMaximumWidth(220);
    m_bar->setTextVisible(true);
    auto* layout = new QHBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_label);
    layout->addWidget(m_bar);
    layout->addWidget(m_cancel);
    hide();
}

void JobStatus::watch(QFutureWatcherBase* watcher, const QString& title)
{
    m_watcher = watcher;
    m_title = title;
    m_clock.start();
    m_label->setText(title);
    m_bar->setRange(0, 0);
    m_bar->setFormat(QStringLiteral("%p%"));
    m_cancel->setEnabled(true);
    show();
    connect(watcher, &QFutureWatcherBase::progressRangeChanged, m_bar, &QProgressBar::setRange);
    connect(watcher, &QFutureWatcherBase::progressValueChanged, this, [this](int v) {
        m_bar->setValue(v);
        updateEta();
    });
    connect(watcher, &QFutureWatcherBase::progressTextChanged, this,
            [this](const QString& t) { m_label->setText(m_title + QStringLiteral(" - ") + t); });
    connect(m_cancel, &QPushButton::clicked, watcher, [this, watcher] {
        m_cancel->setEnabled(false);
        m_label->setText(m_title + tr(" - cancelling..."));
        watcher->cancel();
    });
    connect(watcher, &QFutureWatcherBase::finished, this, [this] {
        disconnect(m_cancel, nullptr, nullptr, nullptr);
        hide();
    });
}

bool JobStatus::isBusy() const { return m_watcher && m_watcher->isRunning(); }

QString JobStatus::text() const { return m_label->text(); }

void JobStatus::updateEta()
{
    const int max = m_bar->maximum();
    const int v = m_bar->value();
    if (max <= 0 || v <= 0) return;
    const double elapsed = double(m_clock.elapsed()) / 1000.0;
    const double eta = elapsed * double(max - v) / double(v);
    m_bar->setFormat(QStringLiteral("%p% (%1 s left)").arg(eta, 0, 'f', eta < 10 ? 1 : 0));
}

} // namespace qb::ui
