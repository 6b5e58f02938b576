// grad_penalty on CUDA: the per-sample reduction (one block per sample, warp shuffles, then the penalty term
// in the same kernel) and its backward (a per-sample scale over a 2-D grid). Math shared with the CPU kernel
// through csrc/grad_penalty.h; the half types convert to float through their own conversion operators.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "cuda_check.cuh"
#include "grad_penalty.h"

namespace ganfast {
namespace {

constexpr int kReduceThreads = 512;
constexpr int kScaleThreads = 256;

template <typename S>
using AccOf = std::conditional_t<std::is_same<S, double>::value, double, float>;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sums of squares in double whatever the dtype: a thread adds up to per_sample / 512 terms, which float would
// round visibly for megapixel samples; the kernel is bandwidth-bound, so the wider adds cost nothing.
template <typename S>
__global__ void __launch_bounds__(kReduceThreads) grad_penalty_fwd_kernel(GradPenaltyArgs a) {
  using T = AccOf<S>;
  __shared__ double warp_sums[kReduceThreads / 32];
  const int64_t b = blockIdx.x;
  const S* row = static_cast<const S*>(a.g) + b * a.per_sample;
  double acc = 0;
  for (int64_t i = threadIdx.x; i < a.per_sample; i += kReduceThreads) {
    const double v = static_cast<double>(static_cast<T>(row[i]));
    acc += v * v;
  }
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    acc = threadIdx.x < kReduceThreads / 32 ? warp_sums[threadIdx.x] : 0.0;
    acc = warp_sum(acc);
    if (threadIdx.x == 0) {
      const double norm = sqrt(acc);
      static_cast<T*>(a.norm)[b] = static_cast<T>(norm);
      static_cast<T*>(a.term)[b] = static_cast<T>(penalty_term<double>(acc, norm, a.center));
    }
  }
}

// Grid (x: slices of a sample, y: samples, striding over both): the coefficient is computed once per thread
// and sample, with no per-element division.
template <typename S>
__global__ void __launch_bounds__(kScaleThreads) grad_penalty_bwd_kernel(GradPenaltyArgs a) {
  using T = AccOf<S>;
  const T* dterm = static_cast<const T*>(a.dterm);
  const T* dnorm = static_cast<const T*>(a.dnorm);
  const T* norm = static_cast<const T*>(a.norm_in);
  const int64_t step = int64_t(gridDim.x) * kScaleThreads;
  for (int64_t b = blockIdx.y; b < a.batch; b += gridDim.y) {
    const T coef = penalty_coef<T>(dterm[b], dnorm[b], norm[b], T(a.center));
    const S* g = static_cast<const S*>(a.g) + b * a.per_sample;
    S* out = static_cast<S*>(a.out) + b * a.per_sample;
    for (int64_t i = int64_t(blockIdx.x) * kScaleThreads + threadIdx.x; i < a.per_sample; i += step)
      out[i] = S(static_cast<T>(g[i]) * coef);
  }
}

}  // namespace

void grad_penalty_fwd_cuda(const GradPenaltyArgs& a, int device, uintptr_t stream) {
  check_grad_penalty_args(a, false);
  if (a.batch == 0) return;
  if (a.batch > 0x7fffffff) fail("grad_penalty: batch too large for one grid");
  DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_dtype<__half, __nv_bfloat16>("grad_penalty", a.dtype, [&](auto tag) {
    grad_penalty_fwd_kernel<typename decltype(tag)::type><<<unsigned(a.batch), kReduceThreads, 0, s>>>(a);
  });
  GANFAST_CUDA_CHECK_LAUNCH("grad_penalty_fwd_kernel");
}

void grad_penalty_bwd_cuda(const GradPenaltyArgs& a, int device, uintptr_t stream) {
  check_grad_penalty_args(a, true);
  if (a.batch * a.per_sample == 0) return;
  DeviceGuard guard(device);
  int sms = 0;
  GANFAST_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // about 32 blocks per SM in all, at most one thread per element of a sample
  const int64_t samples = std::min<int64_t>(a.batch, 65535);
  const int64_t slices = std::max<int64_t>(
      1, std::min<int64_t>((a.per_sample + kScaleThreads - 1) / kScaleThreads, (int64_t(sms) * 32 + samples - 1) / samples));
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_dtype<__half, __nv_bfloat16>("grad_penalty", a.dtype, [&](auto tag) {
    grad_penalty_bwd_kernel<typename decltype(tag)::type><<<dim3(unsigned(slices), unsigned(samples)), kScaleThreads, 0, s>>>(a);
  });
  GANFAST_CUDA_CHECK_LAUNCH("grad_penalty_bwd_kernel");
}

}  // namespace ganfast
