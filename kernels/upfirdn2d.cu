// upfirdn2d on CUDA: each block computes a tile of output pixels of one (n, c) plane at a time. It stages
// the input pixels the tile reads (at most axis_span(...) per axis, csrc/upfirdn2d.h) and the filter taps
// in shared memory, converted to the arithmetic type, then every output pixel gathers only the taps its
// polyphase window meets. Tiles of a plane run along x (row-major), planes are walked with a grid stride along
// z. Index math shared with the CPU kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda_check.cuh"
#include "upfirdn2d.h"

namespace ganfast {
namespace {

template <typename S> struct CudaLoad {
  using Compute = S;
  static __device__ __forceinline__ S load(const S* p) { return *p; }
  static __device__ __forceinline__ void store(S* p, S v) { *p = v; }
};
template <> struct CudaLoad<__half> {
  using Compute = float;
  static __device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
  static __device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
};
template <> struct CudaLoad<__nv_bfloat16> {
  using Compute = float;
  static __device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
};

constexpr int kThreads = 256;
constexpr int kMaxTileW = 64, kMaxTileH = 32;
constexpr int64_t kSharedBytes = 48 * 1024;  // the default per-block limit, no opt-in needed

struct Tile {
  int h, w;            // output pixels per block
  int in_h, in_w;      // input pixels staged per block (bounds from axis_span)
};

// Shared memory: the tile's row and column windows (the same for every plane), then tile.in_h × tile.in_w
// staged inputs and the taps in the arithmetic type T.
template <typename T>
int64_t shared_bytes(const Upfirdn2dArgs& a, const Tile& t) {
  return int64_t(t.h + t.w) * int64_t(sizeof(AxisWindow)) +
         (int64_t(t.in_h) * t.in_w + a.taps_h * a.taps_w) * int64_t(sizeof(T));
}

template <typename S>
__global__ void __launch_bounds__(kThreads) upfirdn2d_tiled_kernel(Upfirdn2dArgs a, Tile tile) {
  using E = CudaLoad<S>;
  using T = typename E::Compute;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  AxisWindow* win_y = reinterpret_cast<AxisWindow*>(shared_raw);
  AxisWindow* win_x = win_y + tile.h;
  T* staged = reinterpret_cast<T*>(win_x + tile.w);
  T* taps = staged + tile.in_h * tile.in_w;
  const S* x = static_cast<const S*>(a.x);
  S* out = static_cast<S*>(a.out);

  const int64_t tiles_w = (a.out_w + tile.w - 1) / tile.w;
  const int64_t oy0 = int64_t(blockIdx.x) / tiles_w * tile.h, ox0 = int64_t(blockIdx.x) % tiles_w * tile.w;
  const int th = int(a.out_h - oy0 < tile.h ? a.out_h - oy0 : tile.h);
  const int tw = int(a.out_w - ox0 < tile.w ? a.out_w - ox0 : tile.w);
  const int n_taps = int(a.taps_h * a.taps_w);
  for (int i = threadIdx.x; i < n_taps; i += kThreads) taps[i] = static_cast<const T*>(a.taps)[i];
  for (int i = threadIdx.x; i < th + tw; i += kThreads) {
    if (i < th)
      win_y[i] = axis_window(oy0 + i, a.in_h, a.up_y, a.down_y, a.pad_y0, a.taps_h);
    else
      win_x[i - th] = axis_window(ox0 + i - th, a.in_w, a.up_x, a.down_x, a.pad_x0, a.taps_w);
  }
  __syncthreads();
  // windows are non-decreasing in o: the tile reads inputs from its first output's first to its last's end
  const int64_t iy_begin = win_y[0].first, ix_begin = win_x[0].first;
  const int span_h = int(win_y[th - 1].end - iy_begin), span_w = int(win_x[tw - 1].end - ix_begin);
  const int tap_step_y = int(a.up_y * a.taps_w), tap_step_x = int(a.up_x);
  const int64_t planes = a.batch * a.channels;

  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const int64_t n = plane / a.channels, c = plane % a.channels;
    const S* x_tile = x + n * a.x_stride[0] + c * a.x_stride[1] + iy_begin * a.x_stride[2] + ix_begin * a.x_stride[3];
    S* out_tile = out + n * a.out_stride[0] + c * a.out_stride[1] + oy0 * a.out_stride[2] + ox0 * a.out_stride[3];
    for (int i = threadIdx.x; i < span_h * span_w; i += kThreads) {
      const int r = i / span_w, col = i % span_w;  // consecutive threads, consecutive columns
      staged[r * tile.in_w + col] = E::load(x_tile + r * a.x_stride[2] + col * a.x_stride[3]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < th * tw; i += kThreads) {
      const int ty = i / tw, tx = i % tw;
      const AxisWindow wy = win_y[ty], wx = win_x[tx];
      const int rows = int(wy.end - wy.first), cols = int(wx.end - wx.first);
      const T* tap_row = taps + wy.first_tap * a.taps_w + wx.first_tap;
      const T* in_row = staged + (wy.first - iy_begin) * tile.in_w + (wx.first - ix_begin);
      T acc = T(0);
      for (int r = 0; r < rows; ++r, tap_row += tap_step_y, in_row += tile.in_w)
        for (int k = 0; k < cols; ++k) acc += in_row[k] * tap_row[k * tap_step_x];
      E::store(out_tile + ty * a.out_stride[2] + tx * a.out_stride[3], acc);
    }
    __syncthreads();  // this plane's reads of `staged` are done before the next plane overwrites it
  }
}

// The largest tile (≤ kMaxTileH × kMaxTileW, no larger than the output) whose shared memory fits.
template <typename T>
Tile choose_tile(const Upfirdn2dArgs& a) {
  int64_t h = std::min<int64_t>(kMaxTileH, a.out_h), w = std::min<int64_t>(kMaxTileW, a.out_w);
  for (;;) {
    // spans clamped to kSharedBytes before they become ints (large down factors make them pass 2**31): a span
    // that long never fits, so the clamp changes no decision
    const Tile t{int(h), int(w), int(std::min(axis_span(h, a.up_y, a.down_y, a.taps_h), kSharedBytes)),
                 int(std::min(axis_span(w, a.up_x, a.down_x, a.taps_w), kSharedBytes))};
    if (shared_bytes<T>(a, t) <= kSharedBytes) return t;
    if (h == 1 && w == 1)
      fail("upfirdn2d: the filter (" + std::to_string(a.taps_h) + "x" + std::to_string(a.taps_w) +
           " taps) with this down factor needs more shared memory than the CUDA kernel has; use impl='triton'");
    if (h >= w) h = (h + 1) / 2; else w = (w + 1) / 2;
  }
}

template <typename S>
void launch_typed(const Upfirdn2dArgs& a, int device, cudaStream_t stream) {
  using T = typename CudaLoad<S>::Compute;
  const Tile t = choose_tile<T>(a);
  const int64_t tiles = ((a.out_h + t.h - 1) / t.h) * ((a.out_w + t.w - 1) / t.w);
  const dim3 grid = plane_grid(device, tiles, a.batch * a.channels, [&] {
    return "upfirdn2d: an output plane of " + std::to_string(a.out_h) + "x" + std::to_string(a.out_w) + " needs " +
           std::to_string(tiles) + " tiles of " + std::to_string(t.h) + "x" + std::to_string(t.w) +
           ", more than one CUDA grid holds (2**31 - 1)";
  });
  upfirdn2d_tiled_kernel<S><<<grid, kThreads, size_t(shared_bytes<T>(a, t)), stream>>>(a, t);
  GANFAST_CUDA_CHECK_LAUNCH("upfirdn2d_tiled_kernel");
}

}  // namespace

void upfirdn2d_cuda(const Upfirdn2dArgs& a, int device, uintptr_t stream) {
  check_upfirdn2d_args(a);
  if (a.batch * a.channels * a.out_h * a.out_w == 0) return;
  DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_dtype<__half, __nv_bfloat16>("upfirdn2d", a.dtype, [&](auto tag) {
    launch_typed<typename decltype(tag)::type>(a, device, s);
  });
}

}  // namespace ganfast
