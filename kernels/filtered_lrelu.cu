// filtered_lrelu on CUDA: each block computes a tile of outputs of one (n, c) plane at a time (planes walked with a
// grid stride along z). It stages the input pixels the tile reads (biased, in the arithmetic type), computes the
// mid tile in shared memory (a horizontal then a vertical pass for separable taps), applies the activation and
// writes the 2-bit codes of the mid pixels it owns (mode 0) or applies the stored mask (mode 1), and filters the
// mid tile down to the outputs. The upsampled intermediate never leaves shared memory. Index math shared with the
// CPU kernel (csrc/filtered_lrelu.h, csrc/upfirdn2d.h).
#include <algorithm>

#include "cuda_check.cuh"
#include "cuda_element.cuh"
#include "filtered_lrelu.h"

namespace ganfast {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTileH = 32, kMaxTileW = 32;
constexpr int64_t kSharedBytes = 48 * 1024;  // the default per-block limit, no opt-in needed

struct FlTile {
  int out_h, out_w;  // outputs per block (out_w a multiple of 4, or the whole row: tiles own whole mask bytes)
  int mid_h, mid_w;  // mid pixels staged per block
  int in_h, in_w;    // input pixels staged per block
};

template <typename T>
int64_t fl_shared_bytes(const FilteredLreluArgs& a, const FlTile& t) {
  int64_t elems = int64_t(t.in_h) * t.in_w + int64_t(t.mid_h) * t.mid_w + a.taps1_h * (a.sep1 ? 1 : a.taps1_w) +
                  a.taps2_h * (a.sep2 ? 1 : a.taps2_w);
  if (a.sep1) elems += int64_t(t.in_h) * t.mid_w;   // horizontal pass of stage 1
  if (a.sep2) elems += int64_t(t.mid_h) * t.out_w;  // horizontal pass of stage 2
  return elems * int64_t(sizeof(T));
}

template <typename S>
__global__ void __launch_bounds__(kThreads) filtered_lrelu_kernel(FilteredLreluArgs a, FlTile tile) {
  using E = CudaElement<S>;
  using T = typename E::Compute;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* in_s = reinterpret_cast<T*>(shared_raw);
  T* mid_s = in_s + tile.in_h * tile.in_w;
  T* taps1 = mid_s + tile.mid_h * tile.mid_w;
  T* taps2 = taps1 + a.taps1_h * (a.sep1 ? 1 : a.taps1_w);
  T* h1_s = taps2 + a.taps2_h * (a.sep2 ? 1 : a.taps2_w);  // sep1: in_h × mid_w
  T* g_s = h1_s + (a.sep1 ? tile.in_h * tile.mid_w : 0);   // sep2: mid_h × out_w
  const S* x = static_cast<const S*>(a.x);
  const S* bias = static_cast<const S*>(a.bias);
  S* out = static_cast<S*>(a.out);
  const T gain = T(a.gain), slope = T(a.slope), clamp = T(a.clamp);
  const int64_t mask_w = mask_row_bytes(a.mid_w);

  const int n_taps1 = int(a.taps1_h * (a.sep1 ? 1 : a.taps1_w)), n_taps2 = int(a.taps2_h * (a.sep2 ? 1 : a.taps2_w));
  for (int i = threadIdx.x; i < n_taps1; i += kThreads) taps1[i] = static_cast<const T*>(a.taps1)[i];
  for (int i = threadIdx.x; i < n_taps2; i += kThreads) taps2[i] = static_cast<const T*>(a.taps2)[i];

  const int64_t tiles_w = (a.out_w + tile.out_w - 1) / tile.out_w;
  const int64_t oy0 = int64_t(blockIdx.x) / tiles_w * tile.out_h, ox0 = int64_t(blockIdx.x) % tiles_w * tile.out_w;
  const int th = int(std::min<int64_t>(a.out_h - oy0, tile.out_h));
  const int tw = int(std::min<int64_t>(a.out_w - ox0, tile.out_w));
  // the mid pixels the tile reads; with a mask to write, also those it owns ([o0·down, (o0 + t)·down), and all
  // the rest for the last tile of an axis); columns start on a mask byte
  const bool write_mask = a.mode == 0 && a.mask != nullptr;
  int64_t my0 = axis_window(oy0, a.mid_h, 1, a.down, a.pad2_y, a.taps2_h).first;
  int64_t my1 = axis_window(oy0 + th - 1, a.mid_h, 1, a.down, a.pad2_y, a.taps2_h).end;
  int64_t mx0 = axis_window(ox0, a.mid_w, 1, a.down, a.pad2_x, a.taps2_w).first;
  int64_t mx1 = axis_window(ox0 + tw - 1, a.mid_w, 1, a.down, a.pad2_x, a.taps2_w).end;
  const int64_t own_y0 = std::min(a.mid_h, oy0 * a.down);
  const int64_t own_y1 = oy0 + th == a.out_h ? a.mid_h : std::min(a.mid_h, (oy0 + th) * a.down);
  const int64_t own_x0 = std::min(a.mid_w, ox0 * a.down);
  const int64_t own_x1 = ox0 + tw == a.out_w ? a.mid_w : std::min(a.mid_w, (ox0 + tw) * a.down);
  if (write_mask) {
    my0 = std::min(my0, own_y0), my1 = std::max(my1, own_y1);
    mx0 = std::min(mx0, own_x0), mx1 = std::max(mx1, own_x1);
  }
  mx0 -= mx0 & 3;
  const int rows = int(my1 - my0), cols = int(mx1 - mx0);
  // input pixels the mid tile reads
  const int64_t iy0 = rows > 0 ? axis_window(my0, a.in_h, a.up, 1, a.pad1_y, a.taps1_h).first : 0;
  const int64_t iy1 = rows > 0 ? axis_window(my1 - 1, a.in_h, a.up, 1, a.pad1_y, a.taps1_h).end : 0;
  const int64_t ix0 = cols > 0 ? axis_window(mx0, a.in_w, a.up, 1, a.pad1_x, a.taps1_w).first : 0;
  const int64_t ix1 = cols > 0 ? axis_window(mx1 - 1, a.in_w, a.up, 1, a.pad1_x, a.taps1_w).end : 0;
  const int in_rows = int(iy1 - iy0), in_cols = int(ix1 - ix0);
  const int64_t planes = a.batch * a.channels;
  __syncthreads();

  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const int64_t n = plane / a.channels, c = plane % a.channels;
    const S* x_plane = x + n * a.x_stride[0] + c * a.x_stride[1];
    const T b = bias ? E::load(bias, c) : T(0);
    for (int i = threadIdx.x; i < in_rows * in_cols; i += kThreads) {
      const int r = i / in_cols, col = i % in_cols;
      in_s[r * tile.in_w + col] = E::load(x_plane, (iy0 + r) * a.x_stride[2] + (ix0 + col) * a.x_stride[3]) + b;
    }
    __syncthreads();
    // stage 1
    if (a.sep1) {
      for (int i = threadIdx.x; i < in_rows * cols; i += kThreads) {
        const int r = i / cols, col = i % cols;
        const AxisWindow wx = axis_window(mx0 + col, a.in_w, a.up, 1, a.pad1_x, a.taps1_w);
        const T* src = in_s + r * tile.in_w + (wx.first - ix0);
        T acc = T(0);
        for (int k = 0; k < int(wx.end - wx.first); ++k) acc += src[k] * taps1[wx.first_tap + k * a.up];
        h1_s[r * tile.mid_w + col] = acc;
      }
      __syncthreads();
    }
    for (int i = threadIdx.x; i < rows * cols; i += kThreads) {
      const int r = i / cols, col = i % cols;
      const AxisWindow wy = axis_window(my0 + r, a.in_h, a.up, 1, a.pad1_y, a.taps1_h);
      T acc = T(0);
      if (a.sep1) {
        const T* src = h1_s + (wy.first - iy0) * tile.mid_w + col;
        for (int k = 0; k < int(wy.end - wy.first); ++k) acc += taps1[wy.first_tap + k * a.up] * src[k * tile.mid_w];
      } else {
        const AxisWindow wx = axis_window(mx0 + col, a.in_w, a.up, 1, a.pad1_x, a.taps1_w);
        for (int ky = 0; ky < int(wy.end - wy.first); ++ky) {
          const T* src = in_s + (wy.first - iy0 + ky) * tile.in_w + (wx.first - ix0);
          const T* tap = taps1 + (wy.first_tap + ky * a.up) * a.taps1_w + wx.first_tap;
          for (int kx = 0; kx < int(wx.end - wx.first); ++kx) acc += src[kx] * tap[kx * a.up];
        }
      }
      mid_s[r * tile.mid_w + col] = acc;
    }
    __syncthreads();
    // the elementwise stage, 4 mid pixels (one mask byte) per thread
    const int groups = (cols + 3) / 4;
    uint8_t* mask_plane = a.mask ? a.mask + plane * a.mid_h * mask_w : nullptr;
    for (int i = threadIdx.x; i < rows * groups; i += kThreads) {
      const int r = i / groups, col0 = 4 * (i % groups);
      const int64_t my = my0 + r, mx = mx0 + col0;
      T* v = mid_s + r * tile.mid_w + col0;
      if (a.mode == 0) {
        uint8_t byte = 0;
        for (int k = 0; k < 4 && col0 + k < cols; ++k) {
          uint8_t code;
          v[k] = lrelu_clamp(v[k], gain, slope, clamp, code);
          if (mx + k < a.mid_w) byte |= uint8_t(code << (2 * k));
        }
        if (write_mask && my >= own_y0 && my < own_y1 && mx >= own_x0 && mx < own_x1)
          mask_plane[my * mask_w + mx / 4] = byte;
      } else {
        const uint8_t byte = mask_plane[my * mask_w + mx / 4];
        for (int k = 0; k < 4 && col0 + k < cols; ++k) v[k] *= code_factor<T>((byte >> (2 * k)) & 3, gain, slope);
      }
    }
    __syncthreads();
    // stage 2
    S* out_plane = out + n * a.out_stride[0] + c * a.out_stride[1];
    if (a.sep2) {
      for (int i = threadIdx.x; i < rows * tw; i += kThreads) {
        const int r = i / tw, oc = i % tw;
        const AxisWindow wx = axis_window(ox0 + oc, a.mid_w, 1, a.down, a.pad2_x, a.taps2_w);
        const T* src = mid_s + r * tile.mid_w + (wx.first - mx0);
        T acc = T(0);
        for (int k = 0; k < int(wx.end - wx.first); ++k) acc += src[k] * taps2[wx.first_tap + k];
        g_s[r * tile.out_w + oc] = acc;
      }
      __syncthreads();
    }
    for (int i = threadIdx.x; i < th * tw; i += kThreads) {
      const int orow = i / tw, oc = i % tw;
      const AxisWindow wy = axis_window(oy0 + orow, a.mid_h, 1, a.down, a.pad2_y, a.taps2_h);
      T acc = T(0);
      if (a.sep2) {
        const T* src = g_s + (wy.first - my0) * tile.out_w + oc;
        for (int k = 0; k < int(wy.end - wy.first); ++k) acc += taps2[wy.first_tap + k] * src[k * tile.out_w];
      } else {
        const AxisWindow wx = axis_window(ox0 + oc, a.mid_w, 1, a.down, a.pad2_x, a.taps2_w);
        for (int ky = 0; ky < int(wy.end - wy.first); ++ky) {
          const T* src = mid_s + (wy.first - my0 + ky) * tile.mid_w + (wx.first - mx0);
          const T* tap = taps2 + (wy.first_tap + ky) * a.taps2_w + wx.first_tap;
          for (int kx = 0; kx < int(wx.end - wx.first); ++kx) acc += src[kx] * tap[kx];
        }
      }
      E::store(out_plane, (oy0 + orow) * a.out_stride[2] + (ox0 + oc) * a.out_stride[3], acc);
    }
    __syncthreads();  // this plane's reads of shared memory are done before the next plane overwrites it
  }
}

// The largest tile (≤ kMaxTileH × kMaxTileW, no larger than the output) whose shared memory fits; tile widths stay
// multiples of 4 (or the whole output row) so that tiles own whole mask bytes.
template <typename T>
FlTile choose_fl_tile(const FilteredLreluArgs& a) {
  int64_t h = std::min<int64_t>(kMaxTileH, a.out_h), w = a.out_w <= kMaxTileW ? a.out_w : kMaxTileW;
  for (;;) {
    // mid pixels a tile may stage (reads plus owned pixels, plus 3 for the byte alignment of its first column)
    const int64_t mid_h = std::min<int64_t>((h - 1) * a.down + std::max(a.taps2_h, a.down), kSharedBytes);
    const int64_t mid_w = std::min<int64_t>((w - 1) * a.down + std::max(a.taps2_w, a.down) + 3, kSharedBytes);
    const FlTile t{int(h), int(w), int(mid_h), int(mid_w),
                   int(std::min(axis_span(mid_h, a.up, 1, a.taps1_h), kSharedBytes)),
                   int(std::min(axis_span(mid_w, a.up, 1, a.taps1_w), kSharedBytes))};
    if (fl_shared_bytes<T>(a, t) <= kSharedBytes) return t;
    if (h > 1 && (h >= w || w <= 4)) {
      h = (h + 1) / 2;
    } else if (w > 4) {
      w = w == a.out_w ? std::min<int64_t>(kMaxTileW, (w + 7) / 8 * 4) : w / 2;  // halves, staying a multiple of 4
    } else {
      fail("filtered_lrelu: the filters (" + std::to_string(a.taps1_h) + "x" + std::to_string(a.taps1_w) + " and " +
           std::to_string(a.taps2_h) + "x" + std::to_string(a.taps2_w) +
           " taps) with these factors need more shared memory than the CUDA kernel has; use impl='triton'");
    }
  }
}

template <typename S>
void launch_fl_typed(const FilteredLreluArgs& a, int device, cudaStream_t stream) {
  using T = typename CudaElement<S>::Compute;
  const FlTile t = choose_fl_tile<T>(a);
  const int64_t tiles = ((a.out_h + t.out_h - 1) / t.out_h) * ((a.out_w + t.out_w - 1) / t.out_w);
  const dim3 grid = plane_grid(device, tiles, a.batch * a.channels, [&] {
    return "filtered_lrelu: an output plane of " + std::to_string(a.out_h) + "x" + std::to_string(a.out_w) +
           " needs more tiles than one CUDA grid holds (2**31 - 1)";
  });
  filtered_lrelu_kernel<S><<<grid, kThreads, size_t(fl_shared_bytes<T>(a, t)), stream>>>(a, t);
  GANFAST_CUDA_CHECK_LAUNCH("filtered_lrelu_kernel");
}

}  // namespace

void filtered_lrelu_cuda(const FilteredLreluArgs& a, int device, uintptr_t stream) {
  check_filtered_lrelu_args(a);
  if (a.batch * a.channels * a.out_h * a.out_w == 0) return;
  DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_dtype<__half, __nv_bfloat16>("filtered_lrelu", a.dtype, [&](auto tag) {
    launch_fl_typed<typename decltype(tag)::type>(a, device, s);
  });
}

}  // namespace ganfast
