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

} // namespace qb::quant
