// filtered_lrelu on the CPU: each task is a band of output rows of one plane. It computes the mid rows the band
// reads (all mid columns) in per-thread row buffers, applies the activation or the mask, and filters them down;
// the upsampled intermediate never exists as a whole. Rows are laid out (zero-inserted, phase-split) so that every
// filter pass is a sum of contiguous row sweeps; separable stages run as a horizontal then a vertical pass.
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

// dst[j] += Σ_{t < taps} w[t] · src[offset[t] + j] for j < n: one contiguous sweep per tap, vectorised over j.
template <typename T>
__attribute__((always_inline)) inline void correlate_impl(T* __restrict dst, const T* __restrict src,
                                                          const T* __restrict w, const int64_t* offset, int64_t taps,
                                                          int64_t n) {
  for (int64_t t = 0; t < taps; ++t) {
    const T wt = w[t];
    const T* __restrict s = src + offset[t];
    for (int64_t j = 0; j < n; ++j) dst[j] += wt * s[j];
  }
}

GANFAST_CPU_CLONES void correlate(float* dst, const float* src, const float* w, const int64_t* offset, int64_t taps,
                                  int64_t n) {
  correlate_impl(dst, src, w, offset, taps, n);
}

GANFAST_CPU_CLONES void correlate(double* dst, const double* src, const double* w, const int64_t* offset,
                                  int64_t taps, int64_t n) {
  correlate_impl(dst, src, w, offset, taps, n);
}

// dst[j] += w · src[j] for j < n.
GANFAST_CPU_CLONES void axpy(float* __restrict dst, const float* __restrict src, float w, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] += w * src[j];
}

GANFAST_CPU_CLONES void axpy(double* __restrict dst, const double* __restrict src, double w, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] += w * src[j];
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

  // Vertically, mid row j reads input rows [first, end) with tap rows first_tap + k·up, and output row o reads
  // mid rows [first, end) with tap rows first_tap + k (windows non-decreasing in j and o). Horizontally, each input
  // row is laid out zero-inserted and padded (z[i·up + pad1] = x[i], length mid_w + taps1_w − 1), so that
  // mid[j] = Σ_t z[j + t]·taps1[t]; each mid row is laid out padded (a[m − pad2]) and split into its down phases
  // (phase r holds position m·down + r at m), so that out[o] = Σ_t taps2[t]·phase_{t % down}[o + t / down].
  std::vector<AxisWindow> w1y(a.mid_h), w2y(a.out_h);
  for (int64_t j = 0; j < a.mid_h; ++j) w1y[j] = axis_window(j, a.in_h, a.up, 1, a.pad1_y, a.taps1_h);
  for (int64_t o = 0; o < a.out_h; ++o) w2y[o] = axis_window(o, a.mid_h, 1, a.down, a.pad2_y, a.taps2_h);
  const int64_t z_len = a.mid_w + a.taps1_w - 1;
  const int64_t phase_len = a.out_w + (a.taps2_w - 1) / a.down + 1, phases_len = a.down * phase_len;
  std::vector<int64_t> offset1(a.taps1_w), offset2(a.taps2_w);
  for (int64_t t = 0; t < a.taps1_w; ++t) offset1[t] = t;
  for (int64_t t = 0; t < a.taps2_w; ++t) offset2[t] = (t % a.down) * phase_len + t / a.down;

  // bands of output rows: tall enough that the mid rows shared with the next band (recomputed) stay few
  const int64_t band = std::max<int64_t>(16, a.taps2_h), bands = (a.out_h + band - 1) / band;
  const int64_t planes = a.batch * a.channels, tasks = planes * bands;
  // multiply-adds per task, roughly: small calls stay on the calling thread (starting threads costs more)
  const int64_t stage1 = a.sep1 ? a.taps1_w + a.taps1_h : a.taps1_w * a.taps1_h / a.up + 1;
  const int64_t stage2 = (a.sep2 ? a.taps2_w + a.taps2_h : a.taps2_w * a.taps2_h) / (a.down * a.down) + 1;
  const int64_t work = band * a.down * a.mid_w * (stage1 / a.up + stage2 + 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(work, 1));
  parallel_for(tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> z_rows, h1, mid, phases, g, acc(a.out_w);
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
        // stage 1: the input rows the mid rows read, converted (and biased) once into zero-inserted rows
        const int64_t iy0 = w1y[r0].first, iy1 = w1y[r1 - 1].end, in_rows_n = std::max<int64_t>(iy1 - iy0, 0);
        z_rows.assign(in_rows_n * z_len, T(0));
        const T b = bias ? E::load(bias, c) : T(0);
        for (int64_t iy = iy0; iy < iy1; ++iy) {
          T* z = z_rows.data() + (iy - iy0) * z_len;
          for (int64_t ix = 0; ix < a.in_w; ++ix) {
            const int64_t p = ix * a.up + a.pad1_x;
            if (p >= 0 && p < z_len) z[p] = E::load(x_plane, iy * a.x_stride[2] + ix * a.x_stride[3]) + b;
          }
        }
        if (a.sep1) {
          h1.assign(in_rows_n * a.mid_w, T(0));
          for (int64_t k = 0; k < in_rows_n; ++k)
            correlate(h1.data() + k * a.mid_w, z_rows.data() + k * z_len, taps1, offset1.data(), a.taps1_w,
                      a.mid_w);
        }
        for (int64_t my = r0; my < r1; ++my) {
          T* mrow = mid.data() + (my - r0) * a.mid_w;
          const AxisWindow wy = w1y[my];
          for (int64_t iy = wy.first; iy < wy.end; ++iy) {
            const int64_t ty = wy.first_tap + (iy - wy.first) * a.up;
            if (a.sep1)
              axpy(mrow, h1.data() + (iy - iy0) * a.mid_w, taps1[ty], a.mid_w);
            else
              correlate(mrow, z_rows.data() + (iy - iy0) * z_len, taps1 + ty * a.taps1_w, offset1.data(), a.taps1_w,
                        a.mid_w);
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

      // stage 2: the mid rows the outputs read, split into phases
      const int64_t g0 = w2y[oy0].first, g1 = w2y[oy1 - 1].end;
      const int64_t read_len = (a.out_w - 1) * a.down + a.taps2_w;
      phases.assign(std::max<int64_t>(g1 - g0, 0) * phases_len, T(0));
      for (int64_t my = g0; my < g1; ++my) {
        T* ph = phases.data() + (my - g0) * phases_len;
        const T* mrow = mid.data() + (my - r0) * a.mid_w;
        for (int64_t p = 0; p < read_len; ++p) {
          const int64_t m = p - a.pad2_x;
          if (m >= 0 && m < a.mid_w) ph[(p % a.down) * phase_len + p / a.down] = mrow[m];
        }
      }
      if (a.sep2 && g1 > g0) {
        g.assign((g1 - g0) * a.out_w, T(0));
        for (int64_t my = g0; my < g1; ++my)
          correlate(g.data() + (my - g0) * a.out_w, phases.data() + (my - g0) * phases_len, taps2, offset2.data(),
                    a.taps2_w, a.out_w);
      }
      for (int64_t oy = oy0; oy < oy1; ++oy) {
        std::fill(acc.begin(), acc.end(), T(0));
        const AxisWindow wy = w2y[oy];
        for (int64_t my = wy.first; my < wy.end; ++my) {
          const int64_t ty = wy.first_tap + (my - wy.first);
          if (a.sep2)
            axpy(acc.data(), g.data() + (my - g0) * a.out_w, taps2[ty], a.out_w);
          else
            correlate(acc.data(), phases.data() + (my - g0) * phases_len, taps2 + ty * a.taps2_w, offset2.data(),
                      a.taps2_w, a.out_w);
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
  dispatch_dtype("filtered_lrelu", a.dtype, [&](auto tag) { filtered_lrelu_typed<typename decltype(tag)::type>(a); });
}

}  // namespace ganfast
