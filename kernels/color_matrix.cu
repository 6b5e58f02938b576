// color_matrix on CUDA: one thread per pixel of one image (grid x: pixel blocks, grid z: images, grid-strided);
// the image's matrix and offset are staged in shared memory, each pixel's channels read once into registers.
// Math shared with the CPU kernel (csrc/color_matrix.h).
#include <algorithm>

#include "color_matrix.h"
#include "cuda_check.cuh"
#include "cuda_element.cuh"

namespace ganfast {
namespace {

constexpr int kThreads = 256;

template <typename S, int C>
__global__ void __launch_bounds__(kThreads) color_matrix_kernel(ColorMatrixArgs a) {
  using E = CudaElement<S>;
  using T = typename E::Compute;
  __shared__ T coef[C * C + C];
  const int64_t p = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t row = p / a.width, col = p % a.width;
  const S* x = static_cast<const S*>(a.x);
  S* out = static_cast<S*>(a.out);
  for (int64_t n = blockIdx.z; n < a.batch; n += gridDim.z) {
    __syncthreads();  // the previous image's coefficients are no longer read
    if (threadIdx.x < C * C) coef[threadIdx.x] = static_cast<const T*>(a.matrix)[n * C * C + threadIdx.x];
    if (threadIdx.x < C) coef[C * C + threadIdx.x] = static_cast<const T*>(a.offset)[n * C + threadIdx.x];
    __syncthreads();
    if (p >= a.pixels) continue;
    const int64_t xi = n * a.x_stride[0] + row * a.x_stride[2] + col * a.x_stride[3];
    const int64_t oi = n * a.out_stride[0] + row * a.out_stride[2] + col * a.out_stride[3];
    T v[C];
#pragma unroll
    for (int k = 0; k < C; ++k) v[k] = E::load(x, xi + k * a.x_stride[1]);
#pragma unroll
    for (int i = 0; i < C; ++i) {
      T acc = coef[C * C + i];
#pragma unroll
      for (int k = 0; k < C; ++k) acc += coef[i * C + k] * v[k];
      E::store(out, oi + i * a.out_stride[1], acc);
    }
  }
}

template <typename S>
void launch_typed(const ColorMatrixArgs& a, int device, cudaStream_t stream) {
  const dim3 grid = plane_grid(device, (a.pixels + kThreads - 1) / kThreads, a.batch, [] {
    return "color_matrix: an image has more pixels than one CUDA launch covers";
  });
  switch (a.channels) {
    case 1: color_matrix_kernel<S, 1><<<grid, kThreads, 0, stream>>>(a); break;
    case 2: color_matrix_kernel<S, 2><<<grid, kThreads, 0, stream>>>(a); break;
    case 3: color_matrix_kernel<S, 3><<<grid, kThreads, 0, stream>>>(a); break;
    default: color_matrix_kernel<S, 4><<<grid, kThreads, 0, stream>>>(a); break;
  }
  GANFAST_CUDA_CHECK_LAUNCH("color_matrix_kernel");
}

}  // namespace

void color_matrix_cuda(const ColorMatrixArgs& a, int device, uintptr_t stream) {
  check_color_matrix_args(a);
  if (a.batch * a.pixels == 0) return;
  DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_dtype<__half, __nv_bfloat16>("color_matrix", a.dtype, [&](auto tag) {
    launch_typed<typename decltype(tag)::type>(a, device, s);
  });
}

}  // namespace ganfast
