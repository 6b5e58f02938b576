// affine_sample on CUDA: one thread per output pixel of one image (grid x: pixel blocks, grid z: images, grid-
// strided). The footprint (csrc/affine_sample.h) is computed once per pixel and applied to every channel. The
// sampling pass gathers its four neighbours; the transpose scatters into the input-sized output, which the
// Python layer zeroes, with atomic adds (float and double; the Python layer runs half types in float32).
// Index math shared with the CPU kernel.
#include <algorithm>
#include <type_traits>

#include "affine_sample.h"
#include "cuda_check.cuh"
#include "cuda_element.cuh"

namespace ganfast {
namespace {

constexpr int kThreads = 256;

template <typename S>
__global__ void __launch_bounds__(kThreads) affine_sample_kernel(AffineSampleArgs a) {
  using E = CudaElement<S>;
  using T = typename E::Compute;
  const int64_t pix = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (pix >= a.out_h * a.out_w) return;
  const int64_t oy = pix / a.out_w, ox = pix % a.out_w;
  const S* src = static_cast<const S*>(a.src);
  S* dst = static_cast<S*>(a.dst);
  const int64_t* ss = a.src_stride;
  const int64_t* sd = a.dst_stride;
  for (int64_t n = blockIdx.z; n < a.batch; n += gridDim.z) {
    const Footprint<T> f = footprint(static_cast<const T*>(a.matrix) + n * 6, ox, oy, a.in_w, a.in_h);
    const bool cx0 = inside(f.x0, a.in_w), cx1 = inside(f.x0 + 1, a.in_w);
    const bool cy0 = inside(f.y0, a.in_h), cy1 = inside(f.y0 + 1, a.in_h);
    const T w00 = f.wy0 * f.wx0, w01 = f.wy0 * f.wx1, w10 = f.wy1 * f.wx0, w11 = f.wy1 * f.wx1;
    if (!a.transpose) {
      const int64_t o00 = f.y0 * ss[2] + f.x0 * ss[3];
      for (int64_t c = 0; c < a.channels; ++c) {
        const S* plane = src + n * ss[0] + c * ss[1];
        T acc = T(0);
        if (cy0 && cx0) acc += w00 * E::load(plane, o00);
        if (cy0 && cx1) acc += w01 * E::load(plane, o00 + ss[3]);
        if (cy1 && cx0) acc += w10 * E::load(plane, o00 + ss[2]);
        if (cy1 && cx1) acc += w11 * E::load(plane, o00 + ss[2] + ss[3]);
        E::store(dst, n * sd[0] + c * sd[1] + oy * sd[2] + ox * sd[3], acc);
      }
    } else {
      const int64_t o00 = f.y0 * sd[2] + f.x0 * sd[3];
      for (int64_t c = 0; c < a.channels; ++c) {
        const T g = E::load(src, n * ss[0] + c * ss[1] + oy * ss[2] + ox * ss[3]);
        S* plane = dst + n * sd[0] + c * sd[1];
        if (cy0 && cx0) atomicAdd(plane + o00, static_cast<S>(w00 * g));
        if (cy0 && cx1) atomicAdd(plane + o00 + sd[3], static_cast<S>(w01 * g));
        if (cy1 && cx0) atomicAdd(plane + o00 + sd[2], static_cast<S>(w10 * g));
        if (cy1 && cx1) atomicAdd(plane + o00 + sd[2] + sd[3], static_cast<S>(w11 * g));
      }
    }
  }
}

template <typename S>
void launch_typed(const AffineSampleArgs& a, int device, cudaStream_t stream) {
  const dim3 grid = plane_grid(device, (a.out_h * a.out_w + kThreads - 1) / kThreads, a.batch, [] {
    return "affine_sample: the sampling grid has more pixels than one CUDA launch covers";
  });
  affine_sample_kernel<S><<<grid, kThreads, 0, stream>>>(a);
  GANFAST_CUDA_CHECK_LAUNCH("affine_sample_kernel");
}

}  // namespace

void affine_sample_cuda(const AffineSampleArgs& a, int device, uintptr_t stream) {
  check_affine_sample_args(a);
  if (a.batch * a.channels * a.in_h * a.in_w == 0 || a.out_h * a.out_w == 0) return;
  DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_dtype<__half, __nv_bfloat16>("affine_sample", a.dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    if constexpr (std::is_floating_point_v<S>)
      launch_typed<S>(a, device, s);
    else
      fail("affine_sample: the CUDA kernel takes float32 and float64 (half types go through float32)");
  });
}

}  // namespace ganfast
