// Loads and stores of a storage type S as its arithmetic type (float for __half and __nv_bfloat16).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace ganfast {

template <typename S> struct CudaElement {
  using Compute = S;
  static __device__ __forceinline__ S load(const S* p, int64_t i) { return p[i]; }
  static __device__ __forceinline__ void store(S* p, int64_t i, S v) { p[i] = v; }
};
template <> struct CudaElement<__half> {
  using Compute = float;
  static __device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
  static __device__ __forceinline__ void store(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
};
template <> struct CudaElement<__nv_bfloat16> {
  using Compute = float;
  static __device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
};

}  // namespace ganfast
