// A minimal parallel-for over [0, n) for the CPU kernels: fixed contiguous chunks on a persistent worker pool.
//
// The split of [0, n) into chunks depends only on n, grain and the core count, never on timing, and every chunk
// is one fn(begin, end) call; which thread runs a chunk does not change any result. The pool (cores - 1 threads;
// the calling thread works too) is created on first use and waits on a condition variable between calls; chunks
// are claimed from a shared counter, so a worker that wakes late costs nothing: the caller runs the chunks it has
// not claimed. One call uses the pool at a time; a call that finds it busy (another thread's kernel) or that is
// made from inside a chunk runs its chunks inline, in order. Worker threads are detached and the pool is never
// destroyed: at process exit they are idle in a wait and end with the process. After fork() the child starts
// without the parent's pool (its threads do not exist there) and makes a fresh one on first use.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
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

// One parallel_for call: `chunks` chunks of `chunk` elements over [0, n), claimed through `next`.
struct ParallelJob {
  void (*call)(const void* fn, int64_t begin, int64_t end);
  const void* fn;
  int64_t n, chunk, chunks;
  std::atomic<int64_t> next{0};
  int active = 0;  // pool workers inside run_chunks; guarded by the pool's mutex
  std::vector<std::exception_ptr> errors;

  void run_chunks() {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      try {
        call(fn, c * chunk, std::min(n, (c + 1) * chunk));
      } catch (...) {
        errors[c] = std::current_exception();
      }
    }
  }
};

// True on pool workers and on a caller while it runs its chunks: parallel_for there runs inline.
inline thread_local bool in_parallel_region = false;

class WorkerPool {
 public:
  explicit WorkerPool(int64_t threads) {
    for (int64_t t = 0; t < threads; ++t) std::thread([this] { work(); }).detach();
  }

  // Runs the job's chunks on the calling thread and the workers and returns true once all are done; returns
  // false at once, having run nothing, when another call holds the pool.
  bool try_run(ParallelJob& job) {
    std::unique_lock<std::mutex> submit(submit_mu_, std::try_to_lock);
    if (!submit.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &job;
      ++generation_;
    }
    wake_.notify_all();
    in_parallel_region = true;
    job.run_chunks();
    in_parallel_region = false;
    std::unique_lock<std::mutex> lock(mu_);
    job_ = nullptr;  // workers that wake from now on find nothing to join
    done_.wait(lock, [&] { return job.active == 0; });
    return true;
  }

 private:
  void work() {
    in_parallel_region = true;
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return job_ != nullptr && generation_ != seen; });
      seen = generation_;
      ParallelJob& job = *job_;
      ++job.active;
      lock.unlock();
      job.run_chunks();
      lock.lock();
      if (--job.active == 0) done_.notify_all();
    }
  }

  std::mutex submit_mu_;  // held by the call that uses the pool
  std::mutex mu_;         // guards job_, generation_ and the job's `active`
  std::condition_variable wake_, done_;
  ParallelJob* job_ = nullptr;
  uint64_t generation_ = 0;
};

inline std::mutex pool_create_mu;
inline std::atomic<WorkerPool*> pool{nullptr};

// The process's pool, created on first use. A fork() handler keeps pool_create_mu consistent in the child and
// drops the parent's pool there (leaked: its threads and possibly held locks belong to the parent).
inline WorkerPool* worker_pool(int64_t threads) {
  WorkerPool* p = pool.load(std::memory_order_acquire);
  if (p) return p;
  std::lock_guard<std::mutex> lock(pool_create_mu);
  p = pool.load(std::memory_order_relaxed);
  if (!p) {
#if defined(__unix__) || defined(__APPLE__)
    static const bool fork_handlers = [] {
      pthread_atfork([] { pool_create_mu.lock(); }, [] { pool_create_mu.unlock(); },
                     [] {
                       pool.store(nullptr, std::memory_order_relaxed);
                       pool_create_mu.unlock();
                     });
      return true;
    }();
    (void)fork_handlers;
#endif
    p = new WorkerPool(threads);
    pool.store(p, std::memory_order_release);
  }
  return p;
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
  detail::ParallelJob job;
  job.call = [](const void* f, int64_t begin, int64_t end) { (*static_cast<const Fn*>(f))(begin, end); };
  job.fn = &fn;
  job.n = n;
  job.chunk = (n + workers - 1) / workers;
  job.chunks = (n + job.chunk - 1) / job.chunk;
  job.errors.resize(job.chunks);
  if (detail::in_parallel_region || !detail::worker_pool(hw - 1)->try_run(job)) job.run_chunks();
  for (auto& e : job.errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace ganfast
