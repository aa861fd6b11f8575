// A small fixed thread pool for CPU ops. Ops call parallel_for from the runtime's worker
// thread; the calling thread takes a share of the work, so a 1-thread pool degrades to a loop.
#pragma once
#include <cstdint>
#include <functional>

namespace kiln {

// Number of threads an op may use (KILN_NUM_THREADS, else the hardware concurrency).
int num_threads();

// Splits [begin, end) into at most num_threads() contiguous chunks of at least `grain` items
// and runs body(chunk_begin, chunk_end) on each; returns when all are done. Exceptions thrown
// by a chunk are rethrown on the caller. Not reentrant: nested calls run serially.
void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

}  // namespace kiln
