// bias_act on CUDA: a grid-stride elementwise pass, ELEMS_PER_THREAD elements per thread in flight,
// 32-bit index arithmetic whenever the tensor allows it. Math shared with the CPU kernel (bias_act.h).
#include <algorithm>

#include "bias_act.h"
#include "cuda_check.cuh"
#include "cuda_element.cuh"

namespace ganfast {
namespace {

constexpr int kThreads = 256;
constexpr int kElemsPerThread = 4;

template <typename S, int ACT, int ORDER, typename Index>
__global__ void __launch_bounds__(kThreads) bias_act_kernel(BiasActArgs a) {
  using E = CudaElement<S>;
  using T = typename E::Compute;
  const TypedBiasActArgs<S, T> p(a);
  const bool masked = ORDER >= 1 && a.clamp >= 0;
  const Index n = Index(a.n), channels = Index(a.channels), stride_c = Index(a.stride_c);
  const Index step = Index(gridDim.x) * kThreads * kElemsPerThread;

  for (Index base = Index(blockIdx.x) * kThreads * kElemsPerThread + threadIdx.x; base < n; base += step) {
#pragma unroll
    for (int k = 0; k < kElemsPerThread; ++k) {
      const Index i = base + Index(k) * kThreads;  // coalesced: consecutive threads, consecutive elements
      if (i >= n) break;
      const T bias = p.b ? E::load(p.b, (i / stride_c) % channels) : T(-0.0);  // -0 keeps x's sign of zero
      const T gi = ORDER >= 1 ? E::load(p.g, i) : T(0);
      const T hi = ORDER == 2 ? E::load(p.h, i) : T(0);
      const T yi = masked ? E::load(p.yref, i) : T(0);
      E::store(p.out, i, bias_act_element<ACT, ORDER, T>(E::load(p.x, i), bias, gi, hi, yi, p.alpha, p.gain, p.clamp));
    }
  }
}

}  // namespace

void bias_act_cuda(const BiasActArgs& a, int device, uintptr_t stream) {
  check_bias_act_args(a);
  if (a.n == 0) return;
  DeviceGuard guard(device);
  int sms = 0;
  GANFAST_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t per_block = int64_t(kThreads) * kElemsPerThread;
  const int64_t blocks = std::min<int64_t>((a.n + per_block - 1) / per_block, int64_t(sms) * 32);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const bool small = a.n < (int64_t(1) << 31) - per_block * 2;
  dispatch_bias_act<__half, __nv_bfloat16>(a, [&](auto type, auto order, auto act) {
    using S = typename decltype(type)::type;
    constexpr int kAct = decltype(act)::value, kOrder = decltype(order)::value;
    if (small)
      bias_act_kernel<S, kAct, kOrder, uint32_t><<<unsigned(blocks), kThreads, 0, s>>>(a);
    else
      bias_act_kernel<S, kAct, kOrder, int64_t><<<unsigned(blocks), kThreads, 0, s>>>(a);
  });
  GANFAST_CUDA_CHECK_LAUNCH("bias_act_kernel");
}

}  // namespace ganfast
