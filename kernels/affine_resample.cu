// affine_resample on CUDA (math: csrc/affine_resample.h; the oracle: ganfast.reference.augment.geometric).
// One block per tile of kTile × kTile outputs of one (n, c) plane (grid x: tiles, grid z: planes, grid-strided).
//
// The upsampled image is never formed: along each axis the bilinear pair j0 = floor(u), j0 + 1 of upsampled pixels
// (weights w0, w1; zero outside the upsampled image) reads the K/2 + 1 padded pixels q0 + b,
// q0 = floor((j0 − K/2 + 1) / 2), with W_b = 2 (w0 f[e − 2b] + w1 f[e + 1 − 2b]), e = K − 2 + ((j0 − K/2 + 1) mod 2),
// f zero outside [0, K). A canvas pixel is Σ_{a, b} W_a^y W_b^x x[reflect(q0y + a − pad_y0), reflect(q0x + b − pad_x0)].
//
// forward: the block's canvas tile (2 kTile + K − 2 pixels per axis, from canvas pixel 2 o0 + 1) in shared memory,
//   each pixel gathered from the input through its (K/2 + 1)² weights; then the 2× down filter along x, then y,
//   from shared memory, one output per thread. Any float dtype (half types computed in float).
// transpose: the canvas gradient of the canvas pixels the block owns (2 kTile per axis from 2 o0 + 1; the last tile
//   of an axis owns the rest), from the dy of every output whose window meets them (o0 − (K/2 − 1) … o0 + kTile +
//   K/2 − 2), by the down filter's transpose along x, then y, in shared memory; then each owned canvas pixel is
//   scattered through its weights with atomic adds into the zeroed out (no canvas pixel is scattered twice). float
//   and double only: the Python layer runs half types in float32 (an atomic add in 16 bits rounds at every add).
#include <type_traits>

#include "affine_resample.h"
#include "cuda_check.cuh"
#include "cuda_element.cuh"

namespace ganfast {
namespace {

constexpr int kTile = 16;                 // outputs per tile and axis
constexpr int kThreads = kTile * kTile;   // the forward's last stage: one output per thread
constexpr int kFilterPad = 2;             // zeros on each side of f in shared memory: the weights read f[−2 … K]

// Along one axis, for a canvas pixel at upsampled position u: the first padded pixel read, the parity of
// (j0 − K/2 + 1) and the bilinear weights of j0 and j0 + 1.
template <typename T>
struct AxisFootprint {
  int64_t q0;
  int parity;
  T w0, w1;
};

template <typename T>
__device__ __forceinline__ AxisFootprint<T> axis_footprint(T u, int64_t upsampled, int64_t taps) {
  // beyond [−2, size + 1] both neighbours lie outside; the clamp keeps the integer conversion defined
  u = u < T(-2) ? T(-2) : (u > T(upsampled + 1) ? T(upsampled + 1) : u);
  const T fu = floor(u);
  const int64_t j0 = static_cast<int64_t>(fu);
  const T w1 = u - fu;
  const int64_t shifted = j0 + taps / 2 + 1;  // j0 − K/2 + 1 + K ≥ 0: division floors, the remainder is the parity
  return {shifted / 2 - taps / 2, int(shifted % 2), j0 >= 0 && j0 < upsampled ? T(1) - w1 : T(0),
          j0 + 1 >= 0 && j0 + 1 < upsampled ? w1 : T(0)};
}

// W_b of the header comment; fpad is f with kFilterPad zeros on each side.
template <typename T>
__device__ __forceinline__ T tap_weight(const T* fpad, const AxisFootprint<T>& a, int64_t b, int64_t taps) {
  const T* f = fpad + taps - 2 * b + a.parity;  // fpad[K − 2b + parity] = f[e − 2b]
  return T(2) * (a.w0 * f[0] + a.w1 * f[1]);
}

// The source pixel of padded pixel q (pads ≤ size − 1: one reflection).
__device__ __forceinline__ int64_t reflect(int64_t q, int64_t pad0, int64_t size) {
  int64_t i = q - pad0;
  i = i < 0 ? -i : i;
  return i >= size ? 2 * (size - 1) - i : i;
}

template <typename T>
__device__ __forceinline__ void load_filter(T* fpad, const T* filter, int64_t taps) {
  for (int64_t i = threadIdx.x; i < taps + 2 * kFilterPad; i += blockDim.x)
    fpad[i] = i >= kFilterPad && i < taps + kFilterPad ? filter[i - kFilterPad] : T(0);
}

// The upsampled positions (A · (sx, sy, 1)) of canvas pixel (sx, sy), as footprints along x and y.
template <typename T>
struct CanvasFootprint {
  AxisFootprint<T> x, y;
};

template <typename T>
__device__ __forceinline__ CanvasFootprint<T> canvas_footprint(const T* m, int64_t sx, int64_t sy,
                                                             const AffineResampleArgs& a) {
  const int64_t hp = a.height + a.pad_y0 + a.pad_y1, wp = a.width + a.pad_x0 + a.pad_x1;
  return {axis_footprint(m[0] * T(sx) + m[1] * T(sy) + m[2], 2 * wp, a.taps),
          axis_footprint(m[3] * T(sx) + m[4] * T(sy) + m[5], 2 * hp, a.taps)};
}

// Canvas pixels per axis that a tile of kTile outputs reads.
GANFAST_HD int64_t canvas_tile(int64_t taps) { return 2 * kTile + taps - 2; }

template <typename S>
__global__ void __launch_bounds__(kThreads) forward_kernel(AffineResampleArgs a, int64_t tiles_x) {
  using E = CudaElement<S>;
  using T = typename E::Compute;
  extern __shared__ __align__(16) unsigned char shared[];
  const int64_t taps = a.taps, ct = canvas_tile(taps);
  T* fpad = reinterpret_cast<T*>(shared);
  T* canvas = fpad + taps + 2 * kFilterPad;  // ct × ct canvas pixels
  T* rows = canvas + ct * ct;                // ct × kTile: the canvas filtered along x
  const int64_t o0y = blockIdx.x / tiles_x * kTile, o0x = blockIdx.x % tiles_x * kTile;
  const int64_t hp = a.height + a.pad_y0 + a.pad_y1, wp = a.width + a.pad_x0 + a.pad_x1;
  const int64_t* ss = a.src_stride;
  const int64_t* sd = a.dst_stride;
  load_filter(fpad, static_cast<const T*>(a.filter), taps);
  for (int64_t plane = blockIdx.z; plane < a.batch * a.channels; plane += gridDim.z) {
    const int64_t n = plane / a.channels, c = plane % a.channels;
    const T* m = static_cast<const T*>(a.matrix) + n * 6;
    const S* x = static_cast<const S*>(a.src) + n * ss[0] + c * ss[1];
    __syncthreads();  // the filter is in place; the previous plane's reads of rows are done
    for (int64_t i = threadIdx.x; i < ct * ct; i += blockDim.x) {
      const CanvasFootprint<T> fp = canvas_footprint(m, 2 * o0x + 1 + i % ct, 2 * o0y + 1 + i / ct, a);
      T acc = T(0);
      for (int64_t by = 0; by <= taps / 2; ++by) {
        const int64_t qy = fp.y.q0 + by;
        if (qy < 0 || qy >= hp) continue;
        const S* row = x + reflect(qy, a.pad_y0, a.height) * ss[2];
        T along_x = T(0);
        for (int64_t bx = 0; bx <= taps / 2; ++bx) {
          const int64_t qx = fp.x.q0 + bx;
          if (qx >= 0 && qx < wp)
            along_x += tap_weight(fpad, fp.x, bx, taps) * E::load(row, reflect(qx, a.pad_x0, a.width) * ss[3]);
        }
        acc += tap_weight(fpad, fp.y, by, taps) * along_x;
      }
      canvas[i] = acc;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < ct * kTile; i += blockDim.x) {  // rows[r][o] = Σ_k f[k] canvas[r][2o + k]
      const T* in = canvas + i / kTile * ct + 2 * (i % kTile);
      T acc = T(0);
      for (int64_t k = 0; k < taps; ++k) acc += fpad[k + kFilterPad] * in[k];
      rows[i] = acc;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < kTile * kTile; i += blockDim.x) {  // one output per thread
      const int64_t oy = i / kTile, ox = i % kTile;
      if (o0y + oy >= a.height || o0x + ox >= a.width) continue;
      T acc = T(0);
      for (int64_t k = 0; k < taps; ++k) acc += fpad[k + kFilterPad] * rows[(2 * oy + k) * kTile + ox];
      E::store(static_cast<S*>(a.dst), n * sd[0] + c * sd[1] + (o0y + oy) * sd[2] + (o0x + ox) * sd[3], acc);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) transpose_kernel(AffineResampleArgs a, int64_t tiles_x) {
  extern __shared__ __align__(16) unsigned char shared[];
  const int64_t taps = a.taps, ct = canvas_tile(taps), dt = kTile + taps - 2, lead = taps / 2 - 1;
  T* fpad = reinterpret_cast<T*>(shared);
  T* dy = fpad + taps + 2 * kFilterPad;  // dt × dt: dy of outputs o0 − lead + d
  T* cols = dy + dt * dt;                // dt × ct: dy through the down filter's transpose along x
  T* grad = cols + dt * ct;              // ct × ct: the canvas gradient
  const int64_t o0y = blockIdx.x / tiles_x * kTile, o0x = blockIdx.x % tiles_x * kTile;
  const int64_t hp = a.height + a.pad_y0 + a.pad_y1, wp = a.width + a.pad_x0 + a.pad_x1;
  // owned canvas pixels per axis: 2 kTile, the last tile all up to the last canvas pixel read, 2 size + K − 2
  const int64_t own_y = o0y + kTile >= a.height ? 2 * (a.height - o0y) + taps - 2 : 2 * kTile;
  const int64_t own_x = o0x + kTile >= a.width ? 2 * (a.width - o0x) + taps - 2 : 2 * kTile;
  const int64_t* ss = a.src_stride;
  const int64_t* sd = a.dst_stride;
  load_filter(fpad, static_cast<const T*>(a.filter), taps);
  for (int64_t plane = blockIdx.z; plane < a.batch * a.channels; plane += gridDim.z) {
    const int64_t n = plane / a.channels, c = plane % a.channels;
    const T* m = static_cast<const T*>(a.matrix) + n * 6;
    const T* g = static_cast<const T*>(a.src) + n * ss[0] + c * ss[1];
    T* out = static_cast<T*>(a.dst) + n * sd[0] + c * sd[1];
    __syncthreads();  // the filter is in place; the previous plane's reads of grad are done
    for (int64_t i = threadIdx.x; i < dt * dt; i += blockDim.x) {
      const int64_t y = o0y - lead + i / dt, x = o0x - lead + i % dt;
      dy[i] = y >= 0 && y < a.height && x >= 0 && x < a.width ? g[y * ss[2] + x * ss[3]] : T(0);
    }
    __syncthreads();
    // canvas pixel j (from 2 o0 + 1) is read by output d (o0 − lead + d) with tap j − 2d + K − 2, for
    // d ∈ [j / 2, (j + K − 2) / 2]
    for (int64_t i = threadIdx.x; i < dt * ct; i += blockDim.x) {
      const int64_t r = i / ct, j = i % ct;
      T acc = T(0);
      for (int64_t d = j / 2; d <= (j + taps - 2) / 2 && d < dt; ++d)
        acc += fpad[j - 2 * d + taps - 2 + kFilterPad] * dy[r * dt + d];
      cols[i] = acc;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < ct * ct; i += blockDim.x) {
      const int64_t j = i / ct, col = i % ct;
      T acc = T(0);
      for (int64_t d = j / 2; d <= (j + taps - 2) / 2 && d < dt; ++d)
        acc += fpad[j - 2 * d + taps - 2 + kFilterPad] * cols[d * ct + col];
      grad[i] = acc;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < own_y * own_x; i += blockDim.x) {
      const int64_t jy = i / own_x, jx = i % own_x;
      const T gv = grad[jy * ct + jx];
      const CanvasFootprint<T> fp = canvas_footprint(m, 2 * o0x + 1 + jx, 2 * o0y + 1 + jy, a);
      for (int64_t by = 0; by <= taps / 2; ++by) {
        const int64_t qy = fp.y.q0 + by;
        if (qy < 0 || qy >= hp) continue;
        T* row = out + reflect(qy, a.pad_y0, a.height) * sd[2];
        const T gy = tap_weight(fpad, fp.y, by, taps) * gv;
        for (int64_t bx = 0; bx <= taps / 2; ++bx) {
          const int64_t qx = fp.x.q0 + bx;
          if (qx >= 0 && qx < wp)
            atomicAdd(row + reflect(qx, a.pad_x0, a.width) * sd[3], tap_weight(fpad, fp.x, bx, taps) * gy);
        }
      }
    }
  }
}

// Launches `kernel` with `elements` values of type T of dynamic shared memory (opting in past the 48 KiB default).
template <typename T, typename Kernel>
void launch(Kernel kernel, const AffineResampleArgs& a, int64_t elements, int device, cudaStream_t stream,
            const char* name) {
  const int64_t tiles_x = (a.width + kTile - 1) / kTile, tiles_y = (a.height + kTile - 1) / kTile;
  const dim3 grid = plane_grid(device, tiles_y * tiles_x, a.batch * a.channels, [] {
    return "affine_resample: the image has more tiles than one CUDA launch covers";
  });
  const size_t bytes = size_t(elements) * sizeof(T);
  if (bytes > 48 * 1024)
    GANFAST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  kernel<<<grid, kThreads, bytes, stream>>>(a, tiles_x);
  GANFAST_CUDA_CHECK_LAUNCH(name);
}

}  // namespace

void affine_resample_cuda(const AffineResampleArgs& a, int device, uintptr_t stream) {
  check_affine_resample_args(a);
  if (a.batch * a.channels * a.height * a.width == 0) return;
  DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const int64_t taps = a.taps, ct = canvas_tile(taps), dt = kTile + taps - 2, fpad = taps + 2 * kFilterPad;
  dispatch_dtype<__half, __nv_bfloat16>("affine_resample", a.dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    using T = typename CudaElement<S>::Compute;
    if (!a.transpose) {
      launch<T>(forward_kernel<S>, a, fpad + ct * ct + ct * kTile, device, s, "affine_resample forward_kernel");
    } else if constexpr (std::is_floating_point_v<S>) {
      launch<T>(transpose_kernel<S>, a, fpad + dt * dt + dt * ct + ct * ct, device, s,
                "affine_resample transpose_kernel");
    } else {
      fail("affine_resample: the CUDA transpose takes float32 and float64 (half types go through float32)");
    }
  });
}

}  // namespace ganfast
