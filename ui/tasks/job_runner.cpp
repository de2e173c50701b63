#include "tasks/job_runner.h"

#include <QMutexLocker>

#ifdef Q_OS_LINUX
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace qb::ui {

ProgressThrottle::ProgressThrottle(int intervalMs) : m_intervalMs(intervalMs) { m_clock.start(); }

std::optional<ProgressThrottle::Update> ProgressThrottle::update(const Progress& p)
{
    QMutexLocker lock(&m_mutex);
    const qint64 now = m_clock.elapsed();
    const bool last = p.overall >= 1.0;
    const bool newStage = p.stage != m_lastStage;
    if (!last && !newStage && m_lastMs >= 0 && now - m_lastMs < m_intervalMs) return std::nullopt;
    m_lastMs = now;
    m_lastStage = p.stage;
    // The bar shows the workflow's overall fraction (RunContext computes it from phases, parts
    // and stage units); a job with nothing countable yet shows a busy indicator.
    const bool known = p.overall > 0 || p.total > 0 || p.parts > 0;
    Update u;
    u.range = known ? 1000 : 0;
    u.value = known ? int(std::min(1000.0, 1000.0 * p.overall)) : 0;
    u.text = QString::fromStdString(p.stage);
    if (!p.detail.empty()) u.text += QStringLiteral(": ") + QString::fromStdString(p.detail);
    return u;
}

void lowerWorkerPriority()
{
    thread_local bool done = false;
    if (done) return;
    done = true;
#ifdef Q_OS_LINUX
    // Linux nice values are per thread and inherited by threads created afterwards.
    const auto tid = id_t(::syscall(SYS_gettid));
    const int current = ::getpriority(PRIO_PROCESS, tid);
    if (current < 5) ::setpriority(PRIO_PROCESS, tid, 5);
#endif
}

JobRunner::JobRunner(QObject* parent) : QObject(parent)
{
    // Numeric jobs parallelise internally (OpenMP); a few concurrent jobs are plenty.
    m_pool.setMaxThreadCount(2);
}

JobRunner::~JobRunner() { cancelAllAndWait(); }

void JobRunner::cancelAllAndWait()
{
    for (auto& [id, cancel] : m_running)
        cancel();
    m_pool.waitForDone();
    m_running.clear(); // their watchers report later (queued) and find nothing to erase
}

} // namespace qb::ui
