// A CUDA execution model for the tests: under this header (included first by the translated kernels/*.cu, see
// build.py) the CUDA kernels compile with the host C++ compiler and run on the CPU.
//
// Each CUDA thread of a block is a fiber (runtime.cpp) switched only at __syncthreads and at warp shuffles; blocks
// run one after another. Between two switch points the threads of a block run in the configured order (ascending,
// descending or seeded random), so a missing barrier changes the result with the order. __shared__ variables are
// per block, poisoned with 0xFF bytes (NaN for every float type) and fenced by guard bytes; a barrier that some
// threads of the block never reach, a shuffle naming a lane that is absent and a shared-memory write past a variable
// are reported as errors with their source line.
#pragma once
#include <cuda_runtime_api.h>  // the toolkit's dim3, cudaError_t, cudaDeviceAttr and runtime API declarations
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>  // the float overloads of the math functions in the global namespace, as in CUDA

#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n) alignas(n)

// The built-in variables of the running CUDA thread (set by the scheduler before it resumes a fiber).
extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;
constexpr int warpSize = 32;

namespace cuda_emu {

enum ShuffleKind : int { kIdx = 0, kUp, kDown, kXor };

void syncthreads(const char* file, int line);
uint64_t shuffle_bits(int kind, unsigned mask, uint64_t bits, int lane_arg, int width, const char* file, int line);
void* shared_variable(const void* key, size_t bytes, const char* name, const char* file, int line);
void* dynamic_shared();  // the block's extern __shared__ memory
void check_launch_bounds(long long max_threads, const char* file, int line);

template <int Kind, typename T>
T shfl(const char* file, int line, unsigned mask, T var, int lane_arg, int width = warpSize) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move types of up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = shuffle_bits(Kind, mask, bits, lane_arg, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// The __shared__ variable of one declaration site (key) in the running block.
template <typename A>
A& shared_array(const void* key, const char* name, const char* file, int line) {
  return *static_cast<A*>(shared_variable(key, sizeof(A), name, file, line));
}

// <<<grid, block, shared bytes, stream>>>
struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  LaunchConfig(dim3 g, dim3 b, size_t bytes = 0, cudaStream_t s = nullptr)
      : grid(g), block(b), shared_bytes(bytes), stream(s) {}
};

// Runs `body` (one CUDA thread of the kernel) for every thread of every block of the grid; launch-configuration
// errors become cudaGetLastError()'s value, faults inside the kernel a std::runtime_error.
void run_grid(const LaunchConfig& config, const void* kernel, const char* name, const char* file, int line,
              const std::function<void()>& body);

// kernel<<<config>>>(args...): the arguments are converted to the kernel's parameter types once, like the
// parameter buffer of a real launch, and every thread receives its own copy.
template <typename... P, typename... A>
void launch(const LaunchConfig& config, void (*kernel)(P...), const char* name, const char* file, int line,
            A&&... args) {
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  run_grid(config, reinterpret_cast<const void*>(kernel), name, file, line, [&] { std::apply(kernel, params); });
}

}  // namespace cuda_emu

// cuda_runtime.h's C++ overload (it is declared only for nvcc)
template <typename T>
cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

#define __syncthreads() ::cuda_emu::syncthreads(__FILE__, __LINE__)
#define __shfl_sync(...) ::cuda_emu::shfl<::cuda_emu::kIdx>(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::cuda_emu::shfl<::cuda_emu::kUp>(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::cuda_emu::shfl<::cuda_emu::kDown>(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::cuda_emu::shfl<::cuda_emu::kXor>(__FILE__, __LINE__, __VA_ARGS__)

// Atomics: the fibers of a launch share one OS thread and switch only at barriers and shuffles, so a
// read-modify-write is indivisible. Returns the old value, as CUDA's.
inline float atomicAdd(float* address, float value) { const float old = *address; *address = old + value; return old; }
inline double atomicAdd(double* address, double value) { const double old = *address; *address = old + value; return old; }
inline __half atomicAdd(__half* address, __half value) {
  const __half old = *address;
  *address = __float2half_rn(__half2float(old) + __half2float(value));
  return old;
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* address, __nv_bfloat16 value) {
  const __nv_bfloat16 old = *address;
  *address = __float2bfloat16_rn(__bfloat162float(old) + __bfloat162float(value));
  return old;
}

// CUDA's min/max overloads (device code calls them unqualified).
#define CUDA_EMU_MINMAX(T)                                  \
  inline T min(T a, T b) { return b < a ? b : a; }          \
  inline T max(T a, T b) { return a < b ? b : a; }
CUDA_EMU_MINMAX(int)
CUDA_EMU_MINMAX(unsigned)
CUDA_EMU_MINMAX(long)
CUDA_EMU_MINMAX(unsigned long)
CUDA_EMU_MINMAX(long long)
CUDA_EMU_MINMAX(unsigned long long)
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
#undef CUDA_EMU_MINMAX
