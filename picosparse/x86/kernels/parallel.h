// Run tasks [0, total) on `threads` threads (<= 0: the calling TBB arena's concurrency), each
// thread getting one contiguous range, so per-thread state (a packed tile, padded planes)
// carries over between neighbouring tasks.
#pragma once
#include <cstdint>

#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

namespace picosparse {

inline int resolve_threads(int threads) {
    return threads > 0 ? threads : tbb::this_task_arena::max_concurrency();
}

template <class Fn>  // fn(int64_t begin, int64_t end)
void parallel_ranges(int64_t total, int threads, const Fn& fn) {
    if (total <= 0) return;
    if (resolve_threads(threads) <= 1 || total == 1) return fn(int64_t(0), total);
    auto body = [&] {
        tbb::parallel_for(
            tbb::blocked_range<int64_t>(0, total),
            [&](const tbb::blocked_range<int64_t>& rg) { fn(rg.begin(), rg.end()); },
            tbb::static_partitioner());
    };
    // inside the OpenVINO CPU plugin the default arena has one slot per core, not the
    // INFERENCE_NUM_THREADS the user asked for: an explicit count gets its own arena
    if (threads > 0 && threads != tbb::this_task_arena::max_concurrency()) {
        tbb::task_arena arena(threads);
        arena.execute(body);
    } else {
        body();
    }
}

}  // namespace picosparse
