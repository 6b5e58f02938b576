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

// Hot loops marked GANFAST_CPU_CLONES are also compiled for AVX2 + FMA, picked at load time on CPUs that have
// them (the build targets baseline x86-64, whose SSE2 is half as wide).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define GANFAST_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GANFAST_CPU_CLONES
#endif

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
