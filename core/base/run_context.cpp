#include "base/run_context.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace qb {

std::optional<double> Progress::etaSeconds() const
{
    if (overall < 0.01 || elapsedSeconds < 1.0) return std::nullopt;
    if (overall >= 1.0) return 0.0;
    return elapsedSeconds * (1.0 - overall) / overall;
}

std::string formatDuration(double seconds)
{
    const long s = std::lround(std::max(0.0, seconds));
    char buf[48];
    if (s < 60) std::snprintf(buf, sizeof buf, "%ld s", s);
    else if (s < 3600) std::snprintf(buf, sizeof buf, "%ld min %02ld s", s / 60, s % 60);
    else std::snprintf(buf, sizeof buf, "%ld h %02ld min", s / 3600, (s / 60) % 60);
    return buf;
}

void RunContext::setPhases(std::vector<PhaseWeight> phases)
{
    {
        std::lock_guard lock(m_mutex);
        m_phases = std::move(phases);
        m_phase = -1;
        m_overall = 0;
        m_parts = m_steps = 0;
    }
    notify();
}

void RunContext::beginPhase(const std::string& phase)
{
    {
        std::lock_guard lock(m_mutex);
        for (std::size_t i = 0; i < m_phases.size(); ++i)
            if (m_phases[i].name == phase) m_phase = int(i);
        m_partName.clear();
        m_part = m_parts = m_step = m_steps = 0;
        m_total.store(0, std::memory_order_relaxed);
        m_done.store(0, std::memory_order_relaxed);
    }
    notify();
}

void RunContext::setPart(std::string name, std::int64_t part, std::int64_t parts, std::int64_t steps)
{
    {
        std::lock_guard lock(m_mutex);
        m_partName = std::move(name);
        m_part = part;
        m_parts = parts;
        m_steps = steps;
        m_step = 0;
    }
    notify();
}

void RunContext::setStep(std::int64_t step)
{
    {
        std::lock_guard lock(m_mutex);
        m_step = step;
    }
    notify();
}

double RunContext::overallLocked(std::int64_t done, std::int64_t total) const
{
    const double stage = total > 0 ? std::clamp(double(done) / double(total), 0.0, 1.0) : 0.0;
    double inPart = stage;
    if (m_steps > 0) inPart = (double(std::clamp<std::int64_t>(m_step, 0, m_steps - 1)) + stage) / double(m_steps);
    double inPhase = inPart;
    if (m_parts > 0) inPhase = (double(std::clamp<std::int64_t>(m_part, 0, m_parts - 1)) + inPart) / double(m_parts);
    double start = 0, weight = 1;
    if (!m_phases.empty()) {
        double sum = 0;
        for (const auto& p : m_phases)
            sum += std::max(0.0, p.weight);
        if (sum <= 0) sum = 1;
        weight = 0;
        for (int i = 0; i <= m_phase && i < int(m_phases.size()); ++i) {
            if (i < m_phase) start += std::max(0.0, m_phases[std::size_t(i)].weight) / sum;
            else weight = std::max(0.0, m_phases[std::size_t(i)].weight) / sum;
        }
    }
    m_overall = std::clamp(std::max(m_overall, start + weight * inPhase), 0.0, 1.0);
    return m_overall;
}

void RunContext::setSink(Sink sink)
{
    std::lock_guard lock(m_mutex);
    m_sink = std::move(sink);
}

void RunContext::beginStage(std::string stage, std::int64_t total, std::string detail)
{
    {
        std::lock_guard lock(m_mutex);
        m_stage = std::move(stage);
        m_detail = std::move(detail);
        m_total.store(total, std::memory_order_relaxed);
        m_done.store(0, std::memory_order_relaxed);
    }
    notify();
}

void RunContext::setDetail(std::string detail)
{
    {
        std::lock_guard lock(m_mutex);
        m_detail = std::move(detail);
    }
    notify();
}

void RunContext::advance(std::int64_t n)
{
    m_done.fetch_add(n, std::memory_order_relaxed);
    notify();
}

void RunContext::setDone(std::int64_t done)
{
    m_done.store(done, std::memory_order_relaxed);
    notify();
}

Progress RunContext::progress() const
{
    std::lock_guard lock(m_mutex);
    Progress p;
    p.stage = m_stage;
    p.detail = m_detail;
    p.done = m_done.load(std::memory_order_relaxed);
    p.total = m_total.load(std::memory_order_relaxed);
    if (m_phase >= 0) {
        p.phase = m_phases[std::size_t(m_phase)].name;
        p.phaseIndex = m_phase;
    }
    p.phaseCount = int(m_phases.size());
    p.partName = m_partName;
    p.part = m_part;
    p.parts = m_parts;
    p.step = m_step;
    p.steps = m_steps;
    p.overall = overallLocked(p.done, p.total);
    p.elapsedSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - m_start).count();
    return p;
}

bool RunContext::isCancelled() const
{
    if (m_cancel.load(std::memory_order_relaxed)) return true;
    if (m_cancelSource && m_cancelSource()) {
        m_cancel.store(true, std::memory_order_relaxed);
        return true;
    }
    return false;
}

void RunContext::setCancelSource(std::function<bool()> source) { m_cancelSource = std::move(source); }

Error RunContext::cancelledError(const std::string& where)
{
    return makeError(ErrorCode::Cancelled, "cancelled", where);
}

void RunContext::notify()
{
    Sink sink;
    {
        std::lock_guard lock(m_mutex);
        sink = m_sink;
    }
    if (sink) sink(progress());
}

} // namespace qb
