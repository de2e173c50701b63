#include "base/run_context.h"

namespace qb {

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

void RunContext::setCancelSource(std::function<bool()> source)
{
    m_cancelSource = std::move(source);
}

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
