#include "pipeline/parallel_for.h"

#include <omp.h>

#include <algorithm>

namespace qb::pipeline {

quant::ParallelFor openmpParallelFor(int threads)
{
    quant::ParallelFor p;
    p.workers = std::max(1, threads > 0 ? std::min(threads, omp_get_max_threads()) : omp_get_max_threads());
    const int workers = p.workers;
    p.run = [workers](std::int64_t count, const std::function<void(std::int64_t, int)>& body) {
        if (workers <= 1 || count <= 1) {
            for (std::int64_t i = 0; i < count; ++i)
                body(i, 0);
            return;
        }
        // Chunks of 8 items, fewer where there are under 8 per worker (a GPTQ block's row pieces).
        const std::int64_t chunk = std::clamp<std::int64_t>(count / (std::int64_t(workers) * 8), 1, 8);
#pragma omp parallel for num_threads(workers) schedule(dynamic, chunk)
        for (std::int64_t i = 0; i < count; ++i)
            body(i, omp_get_thread_num());
    };
    return p;
}

} // namespace qb::pipeline
