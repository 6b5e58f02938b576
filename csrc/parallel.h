// A minimal parallel-for over [0, n) for the CPU kernels: fixed contiguous chunks run on OpenMP threads.
//
// The split of [0, n) into chunks depends only on n, grain and the core count, never on timing or on the thread
// count, and every chunk is one fn(begin, end) call; which thread runs a chunk does not change any result. The
// chunks run on the calling thread's OpenMP team: the extension links the OpenMP runtime that torch has already
// loaded (libgomp.so.1), so a call from torch's thread reuses torch's thread team, whose threads keep spinning for
// a while between back-to-back calls, and no second pool competes with torch's for the cores. The team has at most
// omp_get_max_threads() threads (torch.set_num_threads sets it for the calling thread). Chunks run inline, in
// order, on the calling thread: with one thread, in a call made from inside a chunk or an OpenMP region, while
// another thread's call holds the team (no two teams of ganfast's compete for the cores), and in a child made by
// fork() (the parent's OpenMP threads do not exist there and GNU OpenMP would wait for them).
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "simd.h"  // GANFAST_CPU_CLONES for the kernels' hot loops

namespace ganfast {

// Cores this process may run on (the affinity mask, not the host's count: containers often get a few).
inline int64_t usable_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max<int64_t>(1, std::thread::hardware_concurrency());
}

namespace detail {

// True on a team's threads while they run chunks: parallel_for there runs inline.
inline thread_local bool in_parallel_region = false;
inline std::atomic<bool> team_busy{false};   // held by the call whose chunks run on an OpenMP team
inline std::atomic<bool> forked_child{false};  // this process was made by fork(): everything runs inline

#if defined(__unix__) || defined(__APPLE__)
inline const bool fork_handler_registered =
    pthread_atfork(nullptr, nullptr, [] { forked_child.store(true, std::memory_order_relaxed); }) == 0;
#endif

// Threads for a call of `chunks` chunks; 1 runs them inline. A result above 1 holds team_busy for the caller.
inline int team_threads(int64_t chunks) {
  if (in_parallel_region || forked_child.load(std::memory_order_relaxed) || omp_in_parallel()) return 1;
  const int threads = static_cast<int>(std::min<int64_t>(chunks, omp_get_max_threads()));
  if (threads <= 1 || team_busy.exchange(true, std::memory_order_acquire)) return 1;
  return threads;
}

}  // namespace detail

// Calls fn(begin, end) on disjoint chunks covering [0, n); chunks of at least `grain` elements, one per core at
// most. Rethrows the first chunk's exception (by chunk order) after all chunks have run.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, const Fn& fn) {
  static const int64_t hw = usable_cores();
  const int64_t workers = std::min<int64_t>(hw, std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  if (workers <= 1) {
    if (n > 0) fn(int64_t(0), n);
    return;
  }
  const int64_t chunk = (n + workers - 1) / workers;
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<std::exception_ptr> errors(chunks);
  const auto run_chunk = [&](int64_t c) {
    try {
      fn(c * chunk, std::min(n, (c + 1) * chunk));
    } catch (...) {
      errors[c] = std::current_exception();
    }
  };
  const int threads = detail::team_threads(chunks);
  if (threads <= 1) {
    const bool outer = detail::in_parallel_region;
    detail::in_parallel_region = true;
    for (int64_t c = 0; c < chunks; ++c) run_chunk(c);
    detail::in_parallel_region = outer;
  } else {
#pragma omp parallel num_threads(threads)
    {
      detail::in_parallel_region = true;
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < chunks; ++c) run_chunk(c);
      detail::in_parallel_region = false;
    }
    detail::team_busy.store(false, std::memory_order_release);
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace ganfast
