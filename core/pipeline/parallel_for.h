#pragma once
// The pipeline's parallel-for for the quantization kernels (ARCHITECTURE.md rule 5: kernels stay
// single-threaded and deterministic; the pipeline runs them over rows/groups in parallel).
//
// What: an OpenMP quant::ParallelFor over the current OpenMP team size (model::setNumThreads /
// OMP_NUM_THREADS), dynamic schedule; workers = omp_get_max_threads() at the time of the call.
// threads > 0 caps the worker count. Each item is run by exactly one worker; the kernel keeps one
// scratch per worker, so results are bit-identical for any worker count.
// Threading: call from one thread; the returned object may be reused, not run concurrently.

#include "quant/gptq.h"

namespace qb::pipeline {

quant::ParallelFor openmpParallelFor(int threads = 0);

} // namespace qb::pipeline
