#pragma once
// Event-loop probe shared by the GUI tests.

#include <QElapsedTimer>
#include <QObject>
#include <QTimer>

#include <algorithm>
#include <ctime>

namespace qbtest {

// Measures how long the event loop went without serving a 5 ms timer. Two figures: the wall-
// clock gap between ticks, and the GUI thread's own CPU time within that gap. The CPU figure is
// the time the event loop was blocked executing code; the wall figure also contains time the
// thread was runnable but not scheduled, which depends on everything else the machine runs.
class EventLoopProbe : public QObject {
public:
    EventLoopProbe()
    {
        m_timer.setInterval(5);
        m_timer.setTimerType(Qt::PreciseTimer);
        QObject::connect(&m_timer, &QTimer::timeout, this, [this] {
            const qint64 now = m_clock.nsecsElapsed();
            const qint64 cpu = threadCpuNs();
            if (m_last >= 0) {
                m_maxGapNs = std::max(m_maxGapNs, now - m_last);
                m_maxBusyNs = std::max(m_maxBusyNs, cpu - m_lastCpu);
            }
            m_last = now;
            m_lastCpu = cpu;
        });
        m_clock.start();
        m_timer.start();
    }
    double maxGapMs() const { return double(m_maxGapNs) / 1e6; }
    double maxBusyMs() const { return double(m_maxBusyNs) / 1e6; }

private:
    static qint64 threadCpuNs()
    {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return qint64(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    }
    QTimer m_timer;
    QElapsedTimer m_clock;
    qint64 m_last = -1, m_lastCpu = 0;
    qint64 m_maxGapNs = 0, m_maxBusyNs = 0;
};

} // namespace qbtest
