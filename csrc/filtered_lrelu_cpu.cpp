// filtered_lrelu on the CPU: each task is a band of output rows of one plane. It computes the mid rows the band
// reads (all mid columns) in per-thread row buffers, applies the activation or the mask, and filters them down;
// the upsampled intermediate never exists as a whole. Separable stages run as a horizontal then a vertical pass.
#include <algorithm>
#include <vector>

#include "filtered_lrelu.h"
#include "parallel.h"

namespace ganfast {

void check_filtered_lrelu_args(const FilteredLreluArgs& a) {
  if (a.batch < 0 || a.channels < 0 || a.in_h < 0 || a.in_w < 0 || a.mid_h < 1 || a.mid_w < 1 || a.out_h < 0 ||
      a.out_w < 0)
    fail("filtered_lrelu: bad sizes");
  if (a.up < 1 || a.down < 1) fail("filtered_lrelu: up and down must be >= 1");
  if (a.taps1_h < 1 || a.taps1_w < 1 || a.taps2_h < 1 || a.taps2_w < 1) fail("filtered_lrelu: empty filter");
  if ((a.sep1 && a.taps1_h != a.taps1_w) || (a.sep2 && a.taps2_h != a.taps2_w))
    fail("filtered_lrelu: a separable filter has as many taps along y as along x");
  if (a.mode != 0 && a.mode != 1) fail("filtered_lrelu: mode must be 0 or 1");
  if (a.mode == 1 && !a.mask) fail("filtered_lrelu: mode 1 needs the mask");
  if (!a.out || !a.x || !a.taps1 || !a.taps2) fail("filtered_lrelu: out, x and the taps must not be null");
}

namespace {

// dst[j] (+)= Σ_k src[w.first + k] · taps[w.first_tap + k·step] over the window w = win[j] of each j < n.
template <typename T, bool Accumulate>
void window_pass(T* __restrict dst, const T* __restrict src, const T* __restrict taps, const AxisWindow* win,
                 int64_t step, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const AxisWindow w = win[j];
    const T* s = src + w.first;
    const T* t = taps + w.first_tap;
    T acc = T(0);
    for (int64_t k = 0; k < w.end - w.first; ++k) acc += s[k] * t[k * step];
    if (Accumulate) dst[j] += acc; else dst[j] = acc;
  }
}

template <typename S>
void filtered_lrelu_typed(const FilteredLreluArgs& a) {
  using E = Element<S>;
  using T = typename E::Compute;
  const S* x = static_cast<const S*>(a.x);
  const S* bias = static_cast<const S*>(a.bias);
  S* out = static_cast<S*>(a.out);
  const T* taps1 = static_cast<const T*>(a.taps1);
  const T* taps2 = static_cast<const T*>(a.taps2);
  const T gain = T(a.gain), slope = T(a.slope), clamp = T(a.clamp);
  const bool write_mask = a.mode == 0 && a.mask != nullptr;
  const int64_t mask_w = mask_row_bytes(a.mid_w);

  // stage 1: mid pixel j reads inputs [first, end) with taps first_tap + k·up; stage 2: output o reads mid
  // pixels [first, end) with taps first_tap + k. Windows are non-decreasing in j and o.
  std::vector<AxisWindow> w1y(a.mid_h), w1x(a.mid_w), w2y(a.out_h), w2x(a.out_w);
  for (int64_t j = 0; j < a.mid_h; ++j) w1y[j] = axis_window(j, a.in_h, a.up, 1, a.pad1_y, a.taps1_h);
  for (int64_t j = 0; j < a.mid_w; ++j) w1x[j] = axis_window(j, a.in_w, a.up, 1, a.pad1_x, a.taps1_w);
  for (int64_t o = 0; o < a.out_h; ++o) w2y[o] = axis_window(o, a.mid_h, 1, a.down, a.pad2_y, a.taps2_h);
  for (int64_t o = 0; o < a.out_w; ++o) w2x[o] = axis_window(o, a.mid_w, 1, a.down, a.pad2_x, a.taps2_w);

  // bands of output rows: tall enough that the mid rows shared with the next band (recomputed) stay few
  const int64_t band = std::max<int64_t>(16, a.taps2_h), bands = (a.out_h + band - 1) / band;
  const int64_t planes = a.batch * a.channels, tasks = planes * bands;
  // multiply-adds per task, roughly: small calls stay on the calling thread (starting threads costs more)
  const int64_t stage1 = a.sep1 ? a.taps1_w + a.taps1_h : a.taps1_w * a.taps1_h / a.up + 1;
  const int64_t stage2 = (a.sep2 ? a.taps2_w + a.taps2_h : a.taps2_w * a.taps2_h) / (a.down * a.down) + 1;
  const int64_t work = band * a.down * a.mid_w * (stage1 / a.up + stage2 + 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(work, 1));
  parallel_for(tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> in_rows, h1, mid, g, acc(a.out_w);
    std::vector<uint8_t> codes(4 * mask_w);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t plane = task / bands, oy0 = (task % bands) * band, oy1 = std::min(a.out_h, oy0 + band);
      const int64_t n = plane / a.channels, c = plane % a.channels;
      const S* x_plane = x + n * a.x_stride[0] + c * a.x_stride[1];
      S* out_plane = out + n * a.out_stride[0] + c * a.out_stride[1];

      // the mid rows the band reads; with a mask to write, also the rows it owns: [oy0·down, oy1·down), and
      // for the last band everything below (the mask covers the whole mid grid)
      int64_t r0 = w2y[oy0].first, r1 = w2y[oy1 - 1].end;
      const int64_t own0 = std::min(a.mid_h, oy0 * a.down);
      const int64_t own1 = oy1 == a.out_h ? a.mid_h : std::min(a.mid_h, oy1 * a.down);
      if (write_mask) r0 = std::min(r0, own0), r1 = std::max(r1, own1);
      const int64_t rows = r1 - r0;
      mid.assign(std::max<int64_t>(rows, 0) * a.mid_w, T(0));
      if (rows > 0) {
        // stage 1: the input rows the mid rows read, converted (and biased) once
        const int64_t iy0 = w1y[r0].first, iy1 = w1y[r1 - 1].end, in_rows_n = iy1 - iy0;
        in_rows.resize(std::max<int64_t>(in_rows_n, 0) * a.in_w);
        const T b = bias ? E::load(bias, c) : T(0);
        for (int64_t iy = iy0; iy < iy1; ++iy)
          for (int64_t ix = 0; ix < a.in_w; ++ix)
            in_rows[(iy - iy0) * a.in_w + ix] = E::load(x_plane, iy * a.x_stride[2] + ix * a.x_stride[3]) + b;
        if (a.sep1) {
          h1.resize(std::max<int64_t>(in_rows_n, 0) * a.mid_w);
          for (int64_t iy = iy0; iy < iy1; ++iy)
            window_pass<T, false>(h1.data() + (iy - iy0) * a.mid_w, in_rows.data() + (iy - iy0) * a.in_w, taps1,
                                  w1x.data(), a.up, a.mid_w);
        }
        for (int64_t my = r0; my < r1; ++my) {
          T* mrow = mid.data() + (my - r0) * a.mid_w;
          const AxisWindow wy = w1y[my];
          for (int64_t iy = wy.first; iy < wy.end; ++iy) {
            const int64_t ty = wy.first_tap + (iy - wy.first) * a.up;
            if (a.sep1) {
              const T wt = taps1[ty];
              const T* h = h1.data() + (iy - iy0) * a.mid_w;
              for (int64_t j = 0; j < a.mid_w; ++j) mrow[j] += wt * h[j];
            } else {
              window_pass<T, true>(mrow, in_rows.data() + (iy - iy0) * a.in_w, taps1 + ty * a.taps1_w, w1x.data(),
                                   a.up, a.mid_w);
            }
          }
          // the elementwise stage
          uint8_t* mask_row = a.mask ? a.mask + (plane * a.mid_h + my) * mask_w : nullptr;
          if (a.mode == 0) {
            for (int64_t j = 0; j < a.mid_w; ++j) mrow[j] = lrelu_clamp(mrow[j], gain, slope, clamp, codes[j]);
            if (write_mask && my >= own0 && my < own1) {
              for (int64_t q = 0; q < mask_w; ++q) {
                uint8_t byte = 0;
                for (int64_t k = 0; k < 4 && 4 * q + k < a.mid_w; ++k) byte |= uint8_t(codes[4 * q + k] << (2 * k));
                mask_row[q] = byte;
              }
            }
          } else {
            for (int64_t j = 0; j < a.mid_w; ++j)
              mrow[j] *= code_factor<T>((mask_row[j >> 2] >> (2 * (j & 3))) & 3, gain, slope);
          }
        }
      }

      // stage 2
      const int64_t g0 = w2y[oy0].first, g1 = w2y[oy1 - 1].end;
      if (a.sep2 && g1 > g0) {
        g.resize((g1 - g0) * a.out_w);
        for (int64_t my = g0; my < g1; ++my)
          window_pass<T, false>(g.data() + (my - g0) * a.out_w, mid.data() + (my - r0) * a.mid_w, taps2, w2x.data(),
                                1, a.out_w);
      }
      for (int64_t oy = oy0; oy < oy1; ++oy) {
        std::fill(acc.begin(), acc.end(), T(0));
        const AxisWindow wy = w2y[oy];
        for (int64_t my = wy.first; my < wy.end; ++my) {
          const int64_t ty = wy.first_tap + (my - wy.first);
          if (a.sep2) {
            const T wt = taps2[ty];
            const T* gr = g.data() + (my - g0) * a.out_w;
            for (int64_t o = 0; o < a.out_w; ++o) acc[o] += wt * gr[o];
          } else {
            window_pass<T, true>(acc.data(), mid.data() + (my - r0) * a.mid_w, taps2 + ty * a.taps2_w, w2x.data(), 1,
                                 a.out_w);
          }
        }
        S* out_row = out_plane + oy * a.out_stride[2];
        for (int64_t o = 0; o < a.out_w; ++o) E::store(out_row, o * a.out_stride[3], acc[o]);
      }
    }
  });
}

}  // namespace

void filtered_lrelu_cpu(const FilteredLreluArgs& a) {
  check_filtered_lrelu_args(a);
  if (a.batch * a.channels * a.out_h * a.out_w == 0) return;
  switch (a.dtype) {
    case kFloat32: return filtered_lrelu_typed<float>(a);
    case kFloat64: return filtered_lrelu_typed<double>(a);
    case kFloat16: return filtered_lrelu_typed<Half>(a);
    case kBFloat16: return filtered_lrelu_typed<BFloat16>(a);
    default: fail("filtered_lrelu: unsupported dtype code " + std::to_string(a.dtype));
  }
}

}  // namespace ganfast
