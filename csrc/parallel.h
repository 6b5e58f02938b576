// A minimal parallel-for over [0, n) for the CPU kernels: contiguous chunks on std::threads.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <sched.h>
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

// Calls fn(begin, end) on disjoint chunks covering [0, n); chunks of at least `grain` elements.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, const Fn& fn) {
  static const int64_t hw = usable_cores();
  const int64_t workers = std::min<int64_t>(hw, std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  if (workers <= 1) {
    if (n > 0) fn(int64_t(0), n);
    return;
  }
  const int64_t chunk = (n + workers - 1) / workers;
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(workers);
  threads.reserve(workers - 1);
  for (int64_t w = 1; w < workers; ++w) {
    threads.emplace_back([&, w] {
      try {
        fn(w * chunk, std::min(n, (w + 1) * chunk));
      } catch (...) {
        errors[w] = std::current_exception();
      }
    });
  }
  try {
    fn(int64_t(0), std::min(n, chunk));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace ganfast
