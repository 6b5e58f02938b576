// The scheduler of the CUDA execution model (cuda_emu.h) and the few runtime API calls the launchers make.
//
// A block's threads are ucontext fibers on one OS thread. The scheduler resumes every ready thread in the configured
// order; a thread runs until it reaches __syncthreads (it waits for the block), a shuffle (it waits for the lanes of
// its mask) or its end. When no thread is ready, complete warp exchanges are released first (every lane's result is
// computed from the values all lanes posted, as one warp-synchronous step), then a barrier that every live thread
// waits at. Anything else is a deadlock on a GPU and an error here, naming the lines and threads involved.
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#else
#define CUDA_EMU_ASAN 0
// without AddressSanitizer the fiber-switch annotations do nothing
#define __sanitizer_start_switch_fiber(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define __sanitizer_finish_switch_fiber(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

namespace cuda_emu {
namespace {

// ---- configuration (set from Python through cuda_emu_configure) -------------------------------------------------
enum Order : int { kAscending = 0, kDescending = 1, kRandom = 2 };
struct Config {
  int order = kAscending;
  uint64_t seed = 0;
  int multiprocessors = 132;  // an H100 SXM
  int max_grid_z = 65535;
};
Config config;

struct Stats {
  uint64_t launches = 0, blocks = 0, threads = 0, barriers = 0, shuffles = 0;
};
Stats stats;

constexpr size_t kSharedDefault = 48 * 1024;    // per block without cudaFuncSetAttribute
constexpr size_t kSharedOptIn = 227 * 1024;     // H100/H200 opt-in limit
constexpr size_t kGuard = 64;                   // guard bytes on each side of a shared variable
constexpr unsigned char kGuardByte = 0xA5, kPoisonByte = 0xFF;
constexpr size_t kStackBytes = 64 * 1024;  // ASan clears a stack's shadow at every switch: keep it small

cudaError_t last_error = cudaSuccess;
int current_device = 0;
std::map<const void*, int> max_dynamic_shared;  // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel

// ---- a block's shared memory --------------------------------------------------------------------------------------
struct SharedRegion {
  std::string name;  // "name (file:line)"
  size_t bytes = 0;
  unsigned char* base = nullptr;  // kGuard bytes, the variable, kGuard bytes
  unsigned char* data() const { return base + kGuard; }
};

SharedRegion make_region(std::string name, size_t bytes) {
  SharedRegion r{std::move(name), bytes, static_cast<unsigned char*>(std::aligned_alloc(64, (bytes + 2 * kGuard + 63) / 64 * 64))};
  std::memset(r.base, kGuardByte, kGuard);
  std::memset(r.data(), kPoisonByte, bytes);
  std::memset(r.data() + bytes, kGuardByte, kGuard);
#if CUDA_EMU_ASAN
  ASAN_POISON_MEMORY_REGION(r.base, kGuard);
  ASAN_POISON_MEMORY_REGION(r.data() + bytes, kGuard);
#endif
  return r;
}

void free_region(SharedRegion& r) {
#if CUDA_EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(r.base, r.bytes + 2 * kGuard);
#endif
  std::free(r.base);
  r.base = nullptr;
}

// Whether a guard byte changed, and the offset of the first one from the variable's start (under ASan the guards
// are poisoned instead: an access faults at once).
bool changed_guard(const SharedRegion& r, long& offset) {
  if (CUDA_EMU_ASAN) return false;
  for (size_t i = 0; i < kGuard; ++i) {
    if (r.base[i] != kGuardByte) return offset = long(i) - long(kGuard), true;
    if (r.data()[r.bytes + i] != kGuardByte) return offset = long(r.bytes + i), true;
  }
  return false;
}

// ---- threads as fibers --------------------------------------------------------------------------------------------
enum State : int { kReady, kAtBarrier, kAtWarp, kDone };

struct Thread {
  ucontext_t context;
  char* stack = nullptr;
  uint3 idx;
  int linear = 0;
  State state = kReady;
  const char* file = "";
  int line = 0;
  // the posted warp exchange
  int kind = 0, lane_arg = 0, width = 32;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
};

bool same_site(const Thread& a, const Thread& b) { return a.line == b.line && std::strcmp(a.file, b.file) == 0; }

struct Fault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string where(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

struct Launch;
Launch* running = nullptr;  // the launch whose block is executing

struct Launch {
  const char* name;
  std::string site;  // file:line of the launch
  LaunchConfig cfg;
  const std::function<void()>* body;
  std::vector<Thread> threads;
  std::vector<char*> stacks;
  int current = -1;
  ucontext_t scheduler;
  void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
  std::string fault;  // set by a thread: the block stops and the launch throws it
  std::map<const void*, SharedRegion> shared;
  SharedRegion dynamic;  // cfg.shared_bytes, possibly 0: any access then hits its guards
  size_t static_bytes = 0, shared_limit = kSharedDefault;
  std::mt19937_64 rng;

  Launch(const char* kernel_name, std::string launch_site, const LaunchConfig& c, const std::function<void()>* fn)
      : name(kernel_name), site(std::move(launch_site)), cfg(c), body(fn) {}

  std::string block_text() const {
    std::ostringstream s;
    s << "kernel " << name << " (launched at " << site << "), block (" << blockIdx.x << ", " << blockIdx.y << ", "
      << blockIdx.z << ")";
    return s.str();
  }

  std::string thread_text(const Thread& t) const {
    std::ostringstream s;
    s << "(" << t.idx.x << ", " << t.idx.y << ", " << t.idx.z << ")";
    return s.str();
  }

  std::string threads_text(const std::vector<int>& ids) const {
    std::ostringstream s;
    for (size_t i = 0; i < ids.size() && i < 8; ++i) s << (i ? ", " : "") << thread_text(threads[ids[i]]);
    if (ids.size() > 8) s << " and " << ids.size() - 8 << " more";
    return s.str();
  }

  [[noreturn]] void fail(const std::string& what) const { throw Fault(block_text() + ": " + what); }

  void check_guards() const {
    auto check = [&](const SharedRegion& r) {
      long at = 0;
      if (changed_guard(r, at))
        fail("shared-memory write out of bounds: byte " + std::to_string(at) + " of " + r.name + " (" +
             std::to_string(r.bytes) + " bytes)");
    };
    for (const auto& entry : shared) check(entry.second);
    if (dynamic.base) check(dynamic);
  }

  std::vector<int> order(int count) {
    std::vector<int> ids(count);
    std::iota(ids.begin(), ids.end(), 0);
    if (config.order == kDescending) std::reverse(ids.begin(), ids.end());
    if (config.order == kRandom) std::shuffle(ids.begin(), ids.end(), rng);
    return ids;
  }

  // ---- switching ----
  void resume(int id) {
    Thread& t = threads[id];
    current = id;
    threadIdx = t.idx;
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, t.stack, kStackBytes);
    swapcontext(&scheduler, &t.context);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
    current = -1;
  }

  // From the running thread back to the scheduler; returns when the scheduler resumes it.
  void yield(bool finished) {
    Thread& t = threads[current];
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(finished ? nullptr : &fake, scheduler_stack_bottom, scheduler_stack_size);
    swapcontext(&t.context, &scheduler);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
  }

  static void entry() {
    Launch& l = *running;
    __sanitizer_finish_switch_fiber(nullptr, const_cast<const void**>(&l.scheduler_stack_bottom),
                                    &l.scheduler_stack_size);
    try {
      (*l.body)();
    } catch (const Fault& f) {
      if (l.fault.empty()) l.fault = f.what();
    } catch (const std::exception& e) {
      if (l.fault.empty()) l.fault = l.block_text() + ", thread " + l.thread_text(l.threads[l.current]) + ": " + e.what();
    }
    l.threads[l.current].state = kDone;
    l.yield(true);
    std::abort();  // a finished thread is never resumed
  }

  // ---- a block ----
  void run_block() {
    const int count = int(cfg.block.x * cfg.block.y * cfg.block.z);
    for (auto& entry : shared) free_region(entry.second);
    shared.clear();
    static_bytes = 0;
    if (dynamic.base) free_region(dynamic);
    dynamic = make_region("extern __shared__ memory", cfg.shared_bytes);
    for (int i = 0; i < count; ++i) {
      Thread& t = threads[i];
      t = Thread{};
      t.stack = stacks[i];
      t.linear = i;
      t.idx = uint3{unsigned(i % cfg.block.x), unsigned(i / cfg.block.x % cfg.block.y),
                    unsigned(i / (cfg.block.x * cfg.block.y))};
      getcontext(&t.context);
      t.context.uc_stack.ss_sp = t.stack;
      t.context.uc_stack.ss_size = kStackBytes;
      t.context.uc_link = nullptr;
      makecontext(&t.context, &Launch::entry, 0);
    }
    for (;;) {
      bool progressed = false;
      for (int id : order(count)) {
        if (threads[id].state != kReady) continue;
        resume(id);
        progressed = true;
        if (!fault.empty()) throw Fault(fault);
      }
      if (progressed) continue;
      if (std::all_of(threads.begin(), threads.begin() + count, [](const Thread& t) { return t.state == kDone; }))
        break;
      if (release_warps(count)) continue;
      release_barrier(count);
    }
    check_guards();
    ++stats.blocks;
    stats.threads += count;
  }

  // Completes every warp exchange whose lanes all posted; false when none could complete.
  bool release_warps(int count) {
    bool released = false;
    for (int base = 0; base < count; base += 32) {
      const int lanes = std::min(32, count - base);
      std::vector<int> waiting;
      for (int l = 0; l < lanes; ++l)
        if (threads[base + l].state == kAtWarp) waiting.push_back(l);
      if (waiting.empty()) continue;
      bool complete = true;
      for (int l : waiting) {
        const Thread& t = threads[base + l];
        for (int m = 0; m < 32; ++m) {
          if (!(t.mask >> m & 1u)) continue;
          if (m >= lanes)
            fail("thread " + thread_text(t) + " at " + where(t.file, t.line) + ": the shuffle mask 0x" +
                 hex(t.mask) + " names lane " + std::to_string(m) + ", which this block does not have");
          const Thread& o = threads[base + m];
          if (o.state == kDone)
            fail("thread " + thread_text(t) + " at " + where(t.file, t.line) + ": lane " + std::to_string(m) +
                 " of mask 0x" + hex(t.mask) + " exited without joining the shuffle");
          if (o.state != kAtWarp) complete = false;
          else if (!same_site(o, t))
            fail("lanes of one warp in shuffles at different lines: " + where(t.file, t.line) + " and " +
                 where(o.file, o.line));
        }
      }
      if (!complete) continue;
      for (int l : waiting) {
        Thread& t = threads[base + l];
        const int w = t.width, seg = l & ~(w - 1);
        int src = l;
        switch (t.kind) {
          case kIdx: src = seg + ((t.lane_arg % w) + w) % w; break;
          case kUp: src = l - t.lane_arg >= seg ? l - t.lane_arg : l; break;
          case kDown: src = l + t.lane_arg < seg + w ? l + t.lane_arg : l; break;
          default: src = (l ^ t.lane_arg) < seg + w ? l ^ t.lane_arg : l; break;
        }
        if (src >= lanes || threads[base + src].state != kAtWarp || !(t.mask >> src & 1u))
          fail("thread " + thread_text(t) + " at " + where(t.file, t.line) + " reads lane " + std::to_string(src) +
               ", which is not in the shuffle (mask 0x" + hex(t.mask) + ")");
        t.result = threads[base + src].value;
      }
      for (int l : waiting) threads[base + l].state = kReady;
      ++stats.shuffles;
      released = true;
    }
    return released;
  }

  // Releases the barrier every live thread waits at, or fails with what blocks the block.
  void release_barrier(int count) {
    std::vector<int> at_barrier, at_warp, done;
    for (int i = 0; i < count; ++i) {
      if (threads[i].state == kAtBarrier) at_barrier.push_back(i);
      else if (threads[i].state == kAtWarp) at_warp.push_back(i);
      else done.push_back(i);
    }
    if (!at_warp.empty()) {
      const Thread& t = threads[at_warp[0]];
      fail("deadlock: threads " + threads_text(at_warp) + " wait in a shuffle at " + where(t.file, t.line) +
           " for lanes that never join it" +
           (at_barrier.empty() ? std::string() : ", threads " + threads_text(at_barrier) + " wait at a barrier"));
    }
    const Thread& first = threads[at_barrier[0]];
    for (int i : at_barrier)
      if (!same_site(threads[i], first))
        fail("threads wait at different __syncthreads: " + where(first.file, first.line) + " (thread " +
             thread_text(first) + ") and " + where(threads[i].file, threads[i].line) + " (thread " +
             thread_text(threads[i]) + ")");
    if (!done.empty())
      fail("__syncthreads at " + where(first.file, first.line) + " is never reached by threads " +
           threads_text(done) + " (they exited); " + std::to_string(at_barrier.size()) + " threads wait there");
    check_guards();
    for (int i : at_barrier) threads[i].state = kReady;
    ++stats.barriers;
  }

  static std::string hex(unsigned v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", v);
    return buf;
  }
};

// Fiber stacks, reused by every launch (mapped lazily: untouched pages cost nothing).
std::vector<char*>& stack_pool(size_t count) {
  static std::vector<char*> pool;
  while (pool.size() < count) {
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("cuda emulation: cannot map a fiber stack");
    pool.push_back(static_cast<char*>(p));
  }
  return pool;
}

Launch& active(const char* what) {
  if (!running || running->current < 0)
    throw std::logic_error(std::string("cuda emulation: ") + what + " outside a kernel");
  return *running;
}

cudaError_t set_error(cudaError_t e) {
  last_error = e;
  return e;
}

}  // namespace

void syncthreads(const char* file, int line) {
  Launch& l = active("__syncthreads");
  Thread& t = l.threads[l.current];
  t.state = kAtBarrier, t.file = file, t.line = line;
  l.yield(false);
}

uint64_t shuffle_bits(int kind, unsigned mask, uint64_t bits, int lane_arg, int width, const char* file, int line) {
  Launch& l = active("a warp shuffle");
  Thread& t = l.threads[l.current];
  if (width < 1 || width > 32 || (width & (width - 1)))
    l.fail("thread " + l.thread_text(t) + " at " + where(file, line) + ": shuffle width " + std::to_string(width) +
           " is not a power of two in [1, 32]");
  if (!(mask >> (t.linear % 32) & 1u))
    l.fail("thread " + l.thread_text(t) + " at " + where(file, line) + " calls a shuffle whose mask 0x" +
           Launch::hex(mask) + " does not include its own lane");
  t.state = kAtWarp, t.file = file, t.line = line;
  t.kind = kind, t.mask = mask, t.value = bits, t.lane_arg = lane_arg, t.width = width;
  l.yield(false);
  return t.result;
}

void* shared_variable(const void* key, size_t bytes, const char* name, const char* file, int line) {
  Launch& l = active("a __shared__ variable");
  auto found = l.shared.find(key);
  if (found == l.shared.end()) {
    found = l.shared.emplace(key, make_region(std::string(name) + " (" + where(file, line) + ")", bytes)).first;
    l.static_bytes += bytes;
    if (l.static_bytes > kSharedDefault || l.static_bytes + l.cfg.shared_bytes > l.shared_limit)
      l.fail("static shared memory (" + std::to_string(l.static_bytes) + " bytes) plus dynamic (" +
             std::to_string(l.cfg.shared_bytes) + ") exceeds the block's limit of " + std::to_string(l.shared_limit));
  }
  return found->second.data();
}

void* dynamic_shared() { return active("extern __shared__").dynamic.data(); }

void check_launch_bounds(long long max_threads, const char* file, int line) {
  Launch& l = active("__launch_bounds__");
  const long long block = (long long)blockDim.x * blockDim.y * blockDim.z;
  if (block > max_threads)
    l.fail("launched with " + std::to_string(block) + " threads per block, more than __launch_bounds__(" +
           std::to_string(max_threads) + ") at " + where(file, line));
}

void run_grid(const LaunchConfig& c, const void* kernel, const char* name, const char* file, int line,
              const std::function<void()>& body) {
  const unsigned long long threads = (unsigned long long)c.block.x * c.block.y * c.block.z;
  const bool bad_grid = c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 0x7fffffffu ||
                        c.grid.y > 65535 || c.grid.z > unsigned(config.max_grid_z);
  const bool bad_block = threads == 0 || threads > 1024 || c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64;
  if (bad_grid || bad_block) {
    set_error(cudaErrorInvalidConfiguration);
    return;
  }
  const auto opt_in = max_dynamic_shared.find(kernel);
  const size_t dynamic_limit = opt_in == max_dynamic_shared.end() ? kSharedDefault : size_t(opt_in->second);
  if (c.shared_bytes > dynamic_limit) {
    set_error(cudaErrorInvalidValue);
    return;
  }
  if (running) throw std::logic_error("cuda emulation: a kernel launched from inside a kernel");
  Launch l(name, where(file, line), c, &body);
  l.rng.seed(config.seed * 0x9e3779b97f4a7c15ull + stats.launches);
  l.shared_limit = std::max(kSharedDefault, dynamic_limit);
  l.threads.resize(threads);
  l.stacks = stack_pool(threads);
  running = &l;
  gridDim = c.grid;
  blockDim = c.block;
  const unsigned long long blocks = (unsigned long long)c.grid.x * c.grid.y * c.grid.z;
  std::vector<unsigned long long> block_order(blocks);
  std::iota(block_order.begin(), block_order.end(), 0ull);
  if (config.order == kDescending) std::reverse(block_order.begin(), block_order.end());
  if (config.order == kRandom) std::shuffle(block_order.begin(), block_order.end(), l.rng);
  try {
    for (unsigned long long b : block_order) {
      blockIdx = uint3{unsigned(b % c.grid.x), unsigned(b / c.grid.x % c.grid.y), unsigned(b / (c.grid.x * c.grid.y))};
      l.run_block();
    }
  } catch (...) {
    running = nullptr;
    for (auto& entry : l.shared) free_region(entry.second);
    if (l.dynamic.base) free_region(l.dynamic);
    throw;
  }
  running = nullptr;
  for (auto& entry : l.shared) free_region(entry.second);
  if (l.dynamic.base) free_region(l.dynamic);
  ++stats.launches;
}

}  // namespace cuda_emu

// ---- the runtime API calls of the launchers ---------------------------------------------------------------------------
extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = cuda_emu::last_error;
  cuda_emu::last_error = cudaSuccess;
  return e;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaError (emulated)";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "emulated CUDA error";
  }
}

cudaError_t cudaGetDevice(int* device) {
  *device = cuda_emu::current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device != 0) return cuda_emu::set_error(cudaErrorInvalidDevice);
  cuda_emu::current_device = device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device != 0) return cuda_emu::set_error(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = cuda_emu::config.multiprocessors; return cudaSuccess;
    case cudaDevAttrMaxGridDimZ: *value = cuda_emu::config.max_grid_z; return cudaSuccess;
    default: return cuda_emu::set_error(cudaErrorInvalidValue);  // an attribute the model does not know
  }
}

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || size_t(value) > cuda_emu::kSharedOptIn)
    return cuda_emu::set_error(cudaErrorInvalidValue);
  cuda_emu::max_dynamic_shared[func] = value;
  return cudaSuccess;
}

// Python's handle (ctypes): the thread order (0 ascending, 1 descending, 2 random with `seed`), the device's SM
// count and axis-z grid limit; and the counters since the module was loaded.
__attribute__((visibility("default"))) void cuda_emu_configure(int order, unsigned long long seed, int multiprocessors,
                                                               int max_grid_z) {
  cuda_emu::config = {order, seed, multiprocessors, max_grid_z};
}

__attribute__((visibility("default"))) void cuda_emu_stats(unsigned long long* out) {
  const auto& s = cuda_emu::stats;
  out[0] = s.launches, out[1] = s.blocks, out[2] = s.threads, out[3] = s.barriers, out[4] = s.shuffles;
}

}  // extern "C"
