#include "tasks/job_runner.h"

#include <QMutexLocker>

namespace qb::ui {

ProgressThrottle::ProgressThrottle(int intervalMs) : m_intervalMs(intervalMs)
{
    m_clock.start();
}

std::optional<ProgressThrottle::Update> ProgressThrottle::update(const Progress& p)
{
    QMutexLocker lock(&m_mutex);
    const qint64 now = m_clock.elapsed();
    const bool last = p.total > 0 && p.done >= p.total;
    const bool newStage = p.stage != m_lastStage;
    if (!last && !newStage && m_lastMs >= 0 && now - m_lastMs < m_intervalMs) return std::nullopt;
    m_lastMs = now;
    m_lastStage = p.stage;
    Update u;
    u.range = p.total > 0 ? 1000 : 0;
    u.value = p.total > 0 ? int(std::min(1000.0, 1000.0 * double(p.done) / double(p.total))) : 0;
    u.text = QString::fromStdString(p.stage);
    if (!p.detail.empty()) u.text += QStringLiteral(": ") + QString::fromStdString(p.detail);
    return u;
}

JobRunner::JobRunner(QObject* parent) : QObject(parent)
{
    // Numeric jobs parallelise internally (OpenMP); a few concurrent jobs are plenty.
    m_pool.setMaxThreadCount(2);
}

JobRunner::~JobRunner()
{
    cancelAllAndWait();
}

void JobRunner::cancelAllAndWait()
{
    for (auto& c : m_cancellers) c();
    m_cancellers.clear();
    m_pool.waitForDone();
}

} // namespace qb::ui
