// upfirdn2d on the CPU: rows of output split over threads, half types computed in float.
#include <algorithm>
#include <vector>

#include "parallel.h"
#include "simd.h"
#include "upfirdn2d.h"

namespace ganfast {

void check_upfirdn2d_args(const Upfirdn2dArgs& a) {
  if (a.batch < 0 || a.channels < 0 || a.in_h < 0 || a.in_w < 0 || a.out_h < 0 || a.out_w < 0)
    fail("upfirdn2d: negative sizes");
  if (a.up_x < 1 || a.up_y < 1 || a.down_x < 1 || a.down_y < 1) fail("upfirdn2d: up and down must be >= 1");
  if (a.taps_h < 1 || a.taps_w < 1) fail("upfirdn2d: the filter must have at least one tap");
  if (!a.out || !a.x || !a.taps) fail("upfirdn2d: out, x and taps must not be null");
}

namespace {

constexpr int64_t kRowsPerTask = 16;  // output rows of one plane per parallel task

constexpr int64_t kBlock = 16;  // output pixels accumulated in registers at once

// out[ox] = Σ_k w[k] · src[k][ox] for ox < n (a multiple of kBlock): each block of kBlock outputs stays in
// registers over all the taps.
template <typename T>
GANFAST_INLINE void correlate_row_impl(T* __restrict out, const T* const* src, const T* w, int64_t taps,
                                       int64_t n) {
  for (int64_t o = 0; o < n; o += kBlock) {
    T acc[kBlock] = {};
    for (int64_t k = 0; k < taps; ++k) {
      const T wk = w[k];
      const T* __restrict s = src[k] + o;
      for (int64_t j = 0; j < kBlock; ++j) acc[j] += wk * s[j];
    }
    for (int64_t j = 0; j < kBlock; ++j) out[o + j] = acc[j];
  }
}

GANFAST_CPU_CLONES void correlate_row(float* out, const float* const* src, const float* w, int64_t taps, int64_t n) {
  correlate_row_impl(out, src, w, taps, n);
}

GANFAST_CPU_CLONES void correlate_row(double* out, const double* const* src, const double* w, int64_t taps,
                                      int64_t n) {
  correlate_row_impl(out, src, w, taps, n);
}

// Vertically polyphase: output row oy reads only the input rows iy its window meets, each with one tap row.
// Horizontally, each input row is laid out once per task as the zero-inserted, padded row z split into its
// `down` phases (phase r holds z[m·down + r] at m), so that
//     y[ox] = Σ_ty Σ_tx taps[ty][tx] · phase_ty[tx % down][ox + tx / down]
// is a sum of contiguous rows, computed a register block at a time (correlate_row).
template <typename S>
void upfirdn2d_typed(const Upfirdn2dArgs& a) {
  using E = Element<S>;
  using T = typename E::Compute;
  const S* x = static_cast<const S*>(a.x);
  S* out = static_cast<S*>(a.out);
  const T* taps = static_cast<const T*>(a.taps);

  std::vector<AxisWindow> win_y(a.out_h);
  for (int64_t o = 0; o < a.out_h; ++o) win_y[o] = axis_window(o, a.in_h, a.up_y, a.down_y, a.pad_y0, a.taps_h);
  // the input columns any output reads, and the z position of the first one (z counted from output 0's tap 0)
  const int64_t ix_begin = axis_window(0, a.in_w, a.up_x, a.down_x, a.pad_x0, a.taps_w).first;
  const int64_t ix_end = axis_window(a.out_w - 1, a.in_w, a.up_x, a.down_x, a.pad_x0, a.taps_w).end;
  const int64_t z_begin = ix_begin * a.up_x + a.pad_x0;
  // phases are padded so that whole blocks of kBlock outputs can be read
  const int64_t out_w_blocks = (a.out_w + kBlock - 1) / kBlock * kBlock;
  const int64_t down = a.down_x, phase_len = out_w_blocks + (a.taps_w - 1) / down + 1, row_len = down * phase_len;
  std::vector<int64_t> src_offset(a.taps_w);
  for (int64_t tx = 0; tx < a.taps_w; ++tx) src_offset[tx] = (tx % down) * phase_len + tx / down;
  const int64_t sxh = a.x_stride[2], sxw = a.x_stride[3], soh = a.out_stride[2], sow = a.out_stride[3];

  const int64_t chunks = (a.out_h + kRowsPerTask - 1) / kRowsPerTask, tasks = a.batch * a.channels * chunks;
  const int64_t work = kRowsPerTask * a.out_w * a.taps_w * ((a.taps_h + a.up_y - 1) / a.up_y);
  parallel_for(tasks, std::max<int64_t>(1, (int64_t(1) << 17) / std::max<int64_t>(work, 1)), [&](int64_t begin, int64_t end) {
    const int64_t max_taps = ((a.taps_h + a.up_y - 1) / a.up_y) * a.taps_w;
    std::vector<T> acc(out_w_blocks), rows_buf, tap_w(max_taps);
    std::vector<const T*> tap_src(max_taps);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t plane = task / chunks, oy_begin = (task % chunks) * kRowsPerTask;
      const int64_t oy_end = std::min(a.out_h, oy_begin + kRowsPerTask);
      const int64_t n = plane / a.channels, c = plane % a.channels;
      const S* x_plane = x + n * a.x_stride[0] + c * a.x_stride[1];
      S* out_plane = out + n * a.out_stride[0] + c * a.out_stride[1];

      const int64_t iy_begin = win_y[oy_begin].first, iy_end = win_y[oy_end - 1].end;
      rows_buf.assign((iy_end - iy_begin) * row_len, T(0));
      for (int64_t iy = iy_begin; iy < iy_end; ++iy) {
        T* phases = rows_buf.data() + (iy - iy_begin) * row_len;
        const S* x_row = x_plane + iy * sxh;
        int64_t q = z_begin / down, r = z_begin % down;  // z position q·down + r of input column ix
        for (int64_t ix = ix_begin; ix < ix_end; ++ix) {
          phases[r * phase_len + q] = E::load(x_row, ix * sxw);
          for (r += a.up_x; r >= down; r -= down) ++q;
        }
      }

      for (int64_t oy = oy_begin; oy < oy_end; ++oy) {
        const AxisWindow wy = win_y[oy];
        int64_t n_taps = 0;
        for (int64_t iy = wy.first; iy < wy.end; ++iy) {
          const T* tap_row = taps + (wy.first_tap + (iy - wy.first) * a.up_y) * a.taps_w;
          for (int64_t tx = 0; tx < a.taps_w; ++tx, ++n_taps) {
            tap_w[n_taps] = tap_row[tx];
            tap_src[n_taps] = rows_buf.data() + (iy - iy_begin) * row_len + src_offset[tx];
          }
        }
        correlate_row(acc.data(), tap_src.data(), tap_w.data(), n_taps, out_w_blocks);
        S* out_row = out_plane + oy * soh;
        for (int64_t ox = 0; ox < a.out_w; ++ox) E::store(out_row, ox * sow, acc[ox]);
      }
    }
  });
}

}  // namespace

void upfirdn2d_cpu(const Upfirdn2dArgs& a) {
  check_upfirdn2d_args(a);
  dispatch_dtype("upfirdn2d", a.dtype, [&](auto tag) { upfirdn2d_typed<typename decltype(tag)::type>(a); });
}

}  // namespace ganfast
