// A small process-wide thread pool for the CPU kernels ("use both cores where it matters").
#pragma once

#include <cstdint>
#include <functional>

namespace bitserve::cpu {

// Calls fn(begin, end) over contiguous chunks that cover [0, n), on up to NumThreads() threads
// (the caller is one of them), and returns when all chunks are done. Chunks hold at least
// `min_chunk` items so that small problems stay on the calling thread. Not reentrant: fn must not
// call ParallelFor itself (nested calls run inline).
void ParallelFor(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn);

// Threads the pool uses: BITSERVE_CPU_THREADS if set, else the hardware concurrency.
int NumThreads();

}  // namespace bitserve::cpu
