#pragma once
// A parallel-for supplied by the caller (the kernels stay single-threaded; pipeline/parallel_for.h
// has the OpenMP one): run(count, body) calls body(item, worker) exactly once for every item in
// [0, count), worker in [0, workers), and returns when all are done. Items are independent and
// each worker owns its scratch, so results do not depend on the schedule or the worker count.

#include <cstdint>
#include <functional>

namespace qb::quant {

struct ParallelFor {
    int workers = 1;
    std::function<void(std::int64_t count, const std::function<void(std::int64_t item, int worker)>& body)> run;
};

// body(i) for i in [0, count): on par's workers when it has more than one (and there is more than
// one piece), else in order on the calling thread. For pieces that compute the same whoever runs
// them (par may be null).
template <class Body>
void forPieces(const ParallelFor* par, std::int64_t count, const Body& body)
{
    if (par && par->run && par->workers > 1 && count > 1) {
        par->run(count, [&](std::int64_t i, int) { body(i); });
    } else {
        for (std::int64_t i = 0; i < count; ++i)
            body(i);
    }
}

} // namespace qb::quant
