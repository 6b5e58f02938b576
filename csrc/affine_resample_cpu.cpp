// affine_resample on the CPU, one fused pass per output tile with no full-size intermediate (csrc/affine_resample.h
// has the math).
//
// Forward: the output is cut into tiles of at most kTile × kTile pixels; a task is one tile of one image, for every
// channel. The tile's outputs read a canvas tile of (2·th + K − 2) × (2·tw + K − 2) pixels, whose bilinear
// footprints (computed once per tile, shared by the channels) cover a box of the upsampled image U. Per channel:
// gather the box's preimage in the padded image (reflection by index tables, no padded copy), upsample it 2×
// along y then x (polyphase: K/2 taps per output), sample the canvas tile, downsample 2× along x then y, store.
// Transpose: the adjoint of the same stages in reverse order (Dᵀ, bilinear scatter into the box, Uᵀ, reflection
// folded back) per tile; a task is one image (or a group of its channels when the batch is smaller than the core
// count), its tiles in a fixed order, accumulating into private per-channel planes. Every output element is the
// same sequence of operations whatever the thread count: bit-identical runs.
// Sums run in float for the half types and float32, in double for float64.
#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "affine_resample.h"
#include "parallel.h"
#include "simd.h"

namespace ganfast {

void check_affine_resample_args(const AffineResampleArgs& a) {
  if (a.batch < 0 || a.channels < 0 || a.height < 0 || a.width < 0) fail("affine_resample: negative sizes");
  if (a.transpose != 0 && a.transpose != 1) fail("affine_resample: transpose must be 0 or 1");
  if (a.taps < 2 || a.taps % 2 != 0)
    fail("affine_resample: the filter must have an even number of taps >= 2, got " + std::to_string(a.taps));
  const int64_t max_x = std::max<int64_t>(a.width - 1, 0), max_y = std::max<int64_t>(a.height - 1, 0);
  if (a.pad_x0 < 0 || a.pad_x1 < 0 || a.pad_y0 < 0 || a.pad_y1 < 0 || a.pad_x0 > max_x || a.pad_x1 > max_x ||
      a.pad_y0 > max_y || a.pad_y1 > max_y)
    fail("affine_resample: reflection margins must be in [0, size - 1], got x (" + std::to_string(a.pad_x0) + ", " +
         std::to_string(a.pad_x1) + ") y (" + std::to_string(a.pad_y0) + ", " + std::to_string(a.pad_y1) +
         ") for a " + std::to_string(a.height) + "x" + std::to_string(a.width) + " image");
  const int64_t box_h = 2 * (a.height + a.pad_y0 + a.pad_y1) + 5, box_w = 2 * (a.width + a.pad_x0 + a.pad_x1) + 5;
  if (box_h * box_w > INT32_MAX)  // the per-tile indices into the upsampled image are 32-bit
    fail("affine_resample: the 2x upsampled padded image (" + std::to_string(box_h - 5) + "x" +
         std::to_string(box_w - 5) + ") must have fewer than 2^31 pixels");
  if (!a.dst || !a.src || !a.matrix || !a.filter) fail("affine_resample: pointers must not be null");
}

namespace {

constexpr int64_t kTile = 64;  // output tile side

int64_t floor_half(int64_t v) { return v >= 0 ? v / 2 : -((1 - v) / 2); }

// out[j] = Σ_k w[k] · src[k][j] for j < n, summed in k order; blocks of kBlock outputs stay in registers.
template <typename T>
GANFAST_INLINE void combine_rows_impl(T* __restrict out, const T* const* src, const T* w, int64_t count, int64_t n) {
  constexpr int64_t kBlock = 16;
  int64_t j = 0;
  for (; j + kBlock <= n; j += kBlock) {
    T acc[kBlock] = {};
    for (int64_t k = 0; k < count; ++k) {
      const T wk = w[k];
      const T* __restrict s = src[k] + j;
      for (int64_t b = 0; b < kBlock; ++b) acc[b] += wk * s[b];
    }
    for (int64_t b = 0; b < kBlock; ++b) out[j + b] = acc[b];
  }
  for (; j < n; ++j) {
    T acc = T(0);
    for (int64_t k = 0; k < count; ++k) acc += w[k] * src[k][j];
    out[j] = acc;
  }
}

GANFAST_CPU_CLONES void combine_rows(float* out, const float* const* src, const float* w, int64_t count, int64_t n) {
  combine_rows_impl(out, src, w, count, n);
}

GANFAST_CPU_CLONES void combine_rows(double* out, const double* const* src, const double* w, int64_t count,
                                     int64_t n) {
  combine_rows_impl(out, src, w, count, n);
}

// s[p] = bilinear read of the box at footprint p: (1 − ay)((1 − ax) b[o] + ax b[o + 1]) + ay(... row o + width).
template <typename T>
GANFAST_INLINE void sample_box_impl(T* __restrict s, const T* __restrict box, int64_t width,
                                    const int32_t* __restrict offset, const T* __restrict ax,
                                    const T* __restrict ay, int64_t n) {
  for (int64_t p = 0; p < n; ++p) {
    const T* b = box + offset[p];
    const T top = (T(1) - ax[p]) * b[0] + ax[p] * b[1];
    const T bottom = (T(1) - ax[p]) * b[width] + ax[p] * b[width + 1];
    s[p] = (T(1) - ay[p]) * top + ay[p] * bottom;
  }
}

GANFAST_CPU_CLONES void sample_box(float* s, const float* box, int64_t width, const int32_t* offset, const float* ax,
                                   const float* ay, int64_t n) {
  sample_box_impl(s, box, width, offset, ax, ay, n);
}

GANFAST_CPU_CLONES void sample_box(double* s, const double* box, int64_t width, const int32_t* offset,
                                   const double* ax, const double* ay, int64_t n) {
  sample_box_impl(s, box, width, offset, ax, ay, n);
}

// Footprints of canvas pixels (sx0 + 2i, sy), i < n, as footprint() of csrc/affine_sample.h computes them (the
// position clamped to [−2, size + 1], its floor and fractions), and the running bounds {min x0, max x0, min y0,
// max y0}.
template <typename T>
GANFAST_INLINE void footprint_row_impl(const T* m, int64_t sx0, int64_t sy, int64_t n, int64_t in_w, int64_t in_h,
                                       int32_t* __restrict fx, int32_t* __restrict fy, T* __restrict ax,
                                       T* __restrict ay, int32_t* bounds) {
  const T bx = m[1] * T(sy) + m[2], by = m[4] * T(sy) + m[5];
  const T hi_x = T(in_w + 1), hi_y = T(in_h + 1);
  int32_t min_x = bounds[0], max_x = bounds[1], min_y = bounds[2], max_y = bounds[3];
  for (int64_t i = 0; i < n; ++i) {
    const T sx = T(sx0 + 2 * i);
    T ix = m[0] * sx + bx, iy = m[3] * sx + by;
    ix = ix < T(-2) ? T(-2) : (ix > hi_x ? hi_x : ix);
    iy = iy < T(-2) ? T(-2) : (iy > hi_y ? hi_y : iy);
    const T fx_i = std::floor(ix), fy_i = std::floor(iy);
    const int32_t jx = static_cast<int32_t>(fx_i), jy = static_cast<int32_t>(fy_i);
    fx[i] = jx, fy[i] = jy, ax[i] = ix - fx_i, ay[i] = iy - fy_i;
    min_x = std::min(min_x, jx), max_x = std::max(max_x, jx), min_y = std::min(min_y, jy), max_y = std::max(max_y, jy);
  }
  bounds[0] = min_x, bounds[1] = max_x, bounds[2] = min_y, bounds[3] = max_y;
}

GANFAST_CPU_CLONES void footprint_row(const float* m, int64_t sx0, int64_t sy, int64_t n, int64_t in_w,
                                      int64_t in_h, int32_t* fx, int32_t* fy, float* ax, float* ay, int32_t* bounds) {
  footprint_row_impl(m, sx0, sy, n, in_w, in_h, fx, fy, ax, ay, bounds);
}

GANFAST_CPU_CLONES void footprint_row(const double* m, int64_t sx0, int64_t sy, int64_t n, int64_t in_w,
                                      int64_t in_h, int32_t* fx, int32_t* fy, double* ax, double* ay,
                                      int32_t* bounds) {
  footprint_row_impl(m, sx0, sy, n, in_w, in_h, fx, fy, ax, ay, bounds);
}

GANFAST_CPU_CLONES void box_offsets(const int32_t* fx, const int32_t* fy, int32_t* offset, int64_t n, int32_t bx0,
                                    int32_t by0, int32_t width) {
  for (int64_t p = 0; p < n; ++p) offset[p] = (fy[p] - by0) * width + (fx[p] - bx0);
}

// The per-call constants: sizes, the filter's polyphase taps and the reflection tables.
template <typename T>
struct Plan {
  int64_t h, w, hp, wp, uh, uw, taps, half;  // image, padded and upsampled sizes; K and K/2
  int64_t tiles_y, tiles_x;
  std::vector<T> f;            // f[k]
  std::vector<T> up[2];        // up[e][i] = 2 f[(K/2 − 1 + e) % 2 + 2i]: U index 2t + e reads P t + shift[e] − i
  int64_t shift[2];            // floor((K/2 − 1 + e) / 2)
  std::vector<T> up_t;         // 2 f[k], the transposed upsampling's taps
  std::vector<int64_t> ry, rx; // padded index → image index (reflection)

  explicit Plan(const AffineResampleArgs& a) : h(a.height), w(a.width), taps(a.taps), half(a.taps / 2) {
    hp = h + a.pad_y0 + a.pad_y1, wp = w + a.pad_x0 + a.pad_x1, uh = 2 * hp, uw = 2 * wp;
    tiles_y = (h + kTile - 1) / kTile, tiles_x = (w + kTile - 1) / kTile;
    const T* filter = static_cast<const T*>(a.filter);
    f.assign(filter, filter + taps);
    for (int e = 0; e < 2; ++e) {
      const int64_t hh = half - 1 + e;
      shift[e] = hh / 2;
      for (int64_t i = 0; i < half; ++i) up[e].push_back(T(2) * f[hh % 2 + 2 * i]);
    }
    for (int64_t k = 0; k < taps; ++k) up_t.push_back(T(2) * f[k]);
    auto reflect = [](int64_t i, int64_t size) { return i < 0 ? -i : (i >= size ? 2 * (size - 1) - i : i); };
    for (int64_t q = 0; q < hp; ++q) ry.push_back(reflect(q - a.pad_y0, h));
    for (int64_t q = 0; q < wp; ++q) rx.push_back(reflect(q - a.pad_x0, w));
  }
};

// One output tile of one image: its canvas tile's bilinear footprints and the boxes of U and P they read.
//   canvas tile: rows r ∈ [0, ch) at canvas row 2·y0 + 1 + r; columns in phase order (even canvas-tile columns
//   first, then odd: index e·cw/2 + i holds column 2i + e), the layout the 2× down / up along x read contiguously;
//   box of U: [by0, by1] × [bx0, bx1] (every neighbour a footprint names), of which [vy0, vy1] × [vx0, vx1] lies
//   inside U (the rest reads zero); P rows [qy0, qy1] × columns [qx0, qx1]: every padded pixel the valid part of
//   the box reads (entries outside the padded image are the zero padding of the upsampling).
template <typename T>
struct Tile {
  int64_t y0, x0, th, tw, ch, cw;
  int64_t by0, by1, bx0, bx1, vy0, vy1, vx0, vx1, qy0, qy1, qx0, qx1;
  bool empty;  // no footprint reaches inside U: the canvas tile is zero
  std::vector<int32_t> fx, fy, offset;
  std::vector<T> ax, ay;

  int64_t box_w() const { return bx1 - bx0 + 1; }
  int64_t box_h() const { return by1 - by0 + 1; }
  int64_t p_w() const { return qx1 - qx0 + 1; }
  int64_t p_h() const { return qy1 - qy0 + 1; }

  void setup(const Plan<T>& plan, const T* m, int64_t tile) {
    y0 = (tile / plan.tiles_x) * kTile, x0 = (tile % plan.tiles_x) * kTile;
    th = std::min(kTile, plan.h - y0), tw = std::min(kTile, plan.w - x0);
    ch = 2 * th + plan.taps - 2, cw = 2 * tw + plan.taps - 2;
    const int64_t n = ch * cw, phase = cw / 2;
    fx.resize(n), fy.resize(n), offset.resize(n), ax.resize(n), ay.resize(n);
    int32_t bounds[4] = {INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN};  // min x0, max x0, min y0, max y0
    for (int64_t r = 0; r < ch; ++r) {
      for (int64_t e = 0; e < 2; ++e) {
        const int64_t p = r * cw + e * phase;
        footprint_row(m, 2 * x0 + 1 + e, 2 * y0 + 1 + r, phase, plan.uw, plan.uh, fx.data() + p, fy.data() + p,
                      ax.data() + p, ay.data() + p, bounds);
      }
    }
    bx0 = bounds[0], bx1 = bounds[1] + 1, by0 = bounds[2], by1 = bounds[3] + 1;
    vx0 = std::max<int64_t>(bx0, 0), vx1 = std::min(bx1, plan.uw - 1);
    vy0 = std::max<int64_t>(by0, 0), vy1 = std::min(by1, plan.uh - 1);
    empty = vx0 > vx1 || vy0 > vy1;
    if (empty) return;
    qx0 = floor_half(vx0 - plan.half + 1), qx1 = floor_half(vx1 + plan.half - 1);
    qy0 = floor_half(vy0 - plan.half + 1), qy1 = floor_half(vy1 + plan.half - 1);
    box_offsets(fx.data(), fy.data(), offset.data(), n, int32_t(bx0), int32_t(by0), int32_t(box_w()));
  }
};

// Scratch buffers of one thread, reused across its tasks.
template <typename T>
struct Scratch {
  std::vector<T> p, v, box, canvas, rows, line, phases;
  std::vector<const T*> src;
  std::vector<T> w;
};

// P box of plane `x` (reflection by the index tables, zero outside the padded image) into s.p.
template <typename S, typename T>
void gather_padded(const Plan<T>& plan, const Tile<T>& t, const S* x, const int64_t* stride, Scratch<T>& s) {
  using E = Element<S>;
  const int64_t pw = t.p_w(), ph = t.p_h();
  s.p.assign(pw * ph, T(0));
  const int64_t cx0 = std::max<int64_t>(t.qx0, 0), cx1 = std::min(t.qx1, plan.wp - 1);
  for (int64_t q = std::max<int64_t>(t.qy0, 0); q <= std::min(t.qy1, plan.hp - 1); ++q) {
    const S* row = x + plan.ry[q] * stride[2];
    T* dst = s.p.data() + (q - t.qy0) * pw - t.qx0;
    for (int64_t qx = cx0; qx <= cx1; ++qx) dst[qx] = E::load(row, plan.rx[qx] * stride[3]);
  }
}

// U = U_x U_y P over the valid part of the box, into s.box (whose ring outside U the caller keeps zero).
template <typename T>
void upsample_box(const Plan<T>& plan, const Tile<T>& t, Scratch<T>& s) {
  const int64_t pw = t.p_w(), bw = t.box_w(), half = plan.half;
  s.v.resize((t.vy1 - t.vy0 + 1) * pw);
  s.src.resize(std::max<int64_t>(plan.taps, 2 * half));
  for (int64_t uy = t.vy0; uy <= t.vy1; ++uy) {  // along y: U row 2j + e from P rows j + shift[e] − i
    const int64_t e = uy & 1, base = (uy >> 1) + plan.shift[e] - t.qy0;
    for (int64_t i = 0; i < half; ++i) s.src[i] = s.p.data() + (base - i) * pw;
    combine_rows(s.v.data() + (uy - t.vy0) * pw, s.src.data(), plan.up[e].data(), half, pw);
  }
  // along x, per phase e: U columns 2j + e for j ∈ [j0_e, j1_e] read V columns j + shift[e] − i
  int64_t j0[2], count[2];
  for (int64_t e = 0; e < 2; ++e) {
    j0[e] = floor_half(t.vx0 - e + 1), count[e] = floor_half(t.vx1 - e) - j0[e] + 1;
  }
  s.phases.resize(std::max<int64_t>(count[0], 0) + std::max<int64_t>(count[1], 0));
  for (int64_t uy = t.vy0; uy <= t.vy1; ++uy) {
    const T* vrow = s.v.data() + (uy - t.vy0) * pw;
    T* brow = s.box.data() + (uy - t.by0) * bw - t.bx0;
    for (int64_t e = 0; e < 2; ++e) {
      if (count[e] <= 0) continue;
      for (int64_t i = 0; i < half; ++i) s.src[i] = vrow + j0[e] + plan.shift[e] - i - t.qx0;
      combine_rows(s.phases.data(), s.src.data(), plan.up[e].data(), half, count[e]);
      for (int64_t j = 0; j < count[e]; ++j) brow[2 * (j0[e] + j) + e] = s.phases[j];
    }
  }
}

// out tile = D_y D_x (canvas tile in s.canvas), stored to plane `out`.
template <typename S, typename T>
void downsample_store(const Plan<T>& plan, const Tile<T>& t, Scratch<T>& s, S* out, const int64_t* stride) {
  using E = Element<S>;
  const int64_t phase = t.cw / 2, taps = plan.taps;
  s.rows.resize(t.ch * t.tw);
  s.src.resize(taps);
  for (int64_t r = 0; r < t.ch; ++r) {  // along x: column X reads canvas columns 2X + k = phase k % 2, X + k / 2
    const T* c = s.canvas.data() + r * t.cw;
    for (int64_t k = 0; k < taps; ++k) s.src[k] = c + (k % 2) * phase + k / 2;
    combine_rows(s.rows.data() + r * t.tw, s.src.data(), plan.f.data(), taps, t.tw);
  }
  s.line.resize(t.tw);
  for (int64_t y = 0; y < t.th; ++y) {  // along y: row Y reads rows 2Y + k
    for (int64_t k = 0; k < taps; ++k) s.src[k] = s.rows.data() + (2 * y + k) * t.tw;
    combine_rows(s.line.data(), s.src.data(), plan.f.data(), taps, t.tw);
    S* row = out + (t.y0 + y) * stride[2] + t.x0 * stride[3];
    for (int64_t x = 0; x < t.tw; ++x) E::store(row, x * stride[3], s.line[x]);
  }
}

template <typename S>
void forward_typed(const AffineResampleArgs& a) {
  using E = Element<S>;
  using T = typename E::Compute;
  const Plan<T> plan(a);
  const S* x = static_cast<const S*>(a.src);
  S* out = static_cast<S*>(a.dst);
  const T* matrix = static_cast<const T*>(a.matrix);
  const int64_t tiles = plan.tiles_y * plan.tiles_x;
  parallel_for(a.batch * tiles, 1, [&](int64_t begin, int64_t end) {
    Tile<T> t;
    Scratch<T> s;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tiles;
      t.setup(plan, matrix + n * 6, task % tiles);
      if (!t.empty) {
        s.box.assign(t.box_w() * t.box_h(), T(0));
        s.canvas.resize(t.ch * t.cw);
      }
      for (int64_t c = 0; c < a.channels; ++c) {
        S* out_plane = out + n * a.dst_stride[0] + c * a.dst_stride[1];
        if (t.empty) {
          for (int64_t y = 0; y < t.th; ++y)
            for (int64_t xo = 0; xo < t.tw; ++xo)
              E::store(out_plane, (t.y0 + y) * a.dst_stride[2] + (t.x0 + xo) * a.dst_stride[3], T(0));
          continue;
        }
        gather_padded(plan, t, x + n * a.src_stride[0] + c * a.src_stride[1], a.src_stride, s);
        upsample_box(plan, t, s);
        sample_box(s.canvas.data(), s.box.data(), t.box_w(), t.offset.data(), t.ax.data(), t.ay.data(),
                   t.ch * t.cw);
        downsample_store(plan, t, s, out_plane, a.dst_stride);
      }
    }
  });
}

// s.canvas = D_xᵀ D_yᵀ (dy tile of plane `dy`), in the canvas tile's phase order.
template <typename S, typename T>
void downsample_transpose(const Plan<T>& plan, const Tile<T>& t, const S* dy, const int64_t* stride, Scratch<T>& s) {
  using E = Element<S>;
  const int64_t taps = plan.taps, half = plan.half, phase = t.cw / 2, padded = t.tw + 2 * (half - 1);
  s.line.resize(t.th * t.tw);
  for (int64_t y = 0; y < t.th; ++y) {
    const S* row = dy + (t.y0 + y) * stride[2] + t.x0 * stride[3];
    for (int64_t x = 0; x < t.tw; ++x) s.line[y * t.tw + x] = E::load(row, x * stride[3]);
  }
  // along y: canvas row r gathers dy rows Y = (r − k) / 2 over the taps k of r's parity; rows carry half − 1
  // zeros on each side for the pass along x
  s.rows.assign(t.ch * padded, T(0));
  s.src.resize(taps);
  s.w.resize(taps);
  for (int64_t r = 0; r < t.ch; ++r) {
    int64_t count = 0;
    for (int64_t k = r % 2; k < taps; k += 2) {
      const int64_t y = (r - k) / 2;
      if (r - k < 0 || y >= t.th) continue;
      s.src[count] = s.line.data() + y * t.tw, s.w[count++] = plan.f[k];
    }
    combine_rows(s.rows.data() + r * padded + half - 1, s.src.data(), s.w.data(), count, t.tw);
  }
  // along x: canvas column 2i + e gathers columns X = i − j with the taps f[2j + e]
  s.canvas.resize(t.ch * t.cw);
  for (int64_t r = 0; r < t.ch; ++r) {
    const T* row = s.rows.data() + r * padded + half - 1;
    for (int64_t e = 0; e < 2; ++e) {
      for (int64_t j = 0; j < half; ++j) s.src[j] = row - j, s.w[j] = plan.f[2 * j + e];
      combine_rows(s.canvas.data() + r * t.cw + e * phase, s.src.data(), s.w.data(), half, phase);
    }
  }
}

// The box's gradient (s.box) scattered from the canvas tile's (s.canvas): the transpose of sample_box.
template <typename T>
void scatter_box(const Tile<T>& t, Scratch<T>& s) {
  const int64_t bw = t.box_w(), n = t.ch * t.cw;
  T* box = s.box.data();
  for (int64_t p = 0; p < n; ++p) {
    const T g = s.canvas[p], ax = t.ax[p], ay = t.ay[p];
    T* b = box + t.offset[p];
    const T top = (T(1) - ay) * g, bottom = ay * g;
    b[0] += (T(1) - ax) * top;
    b[1] += ax * top;
    b[bw] += (T(1) - ax) * bottom;
    b[bw + 1] += ax * bottom;
  }
}

// P box gradient (s.p) = U_yᵀ U_xᵀ (valid part of the box gradient in s.box):
//   P row q gathers U rows uy = 2q + k − K/2 + 1, P column q gathers U columns 2q + k − K/2 + 1, weight 2 f[k].
template <typename T>
void upsample_transpose(const Plan<T>& plan, const Tile<T>& t, Scratch<T>& s) {
  const int64_t taps = plan.taps, half = plan.half, bw = t.box_w(), pw = t.p_w(), ph = t.p_h();
  // along x first (rows of the valid box): each U row becomes a P-column row
  const int64_t lo = 2 * t.qx0 - half + 1, len = 2 * t.qx1 + half - lo + 1;  // U columns any P column reads
  const int64_t phase = (len + 1) / 2;
  s.phases.assign(2 * phase, T(0));
  s.v.resize((t.vy1 - t.vy0 + 1) * pw);
  s.src.resize(taps);
  for (int64_t uy = t.vy0; uy <= t.vy1; ++uy) {
    const T* brow = s.box.data() + (uy - t.by0) * bw - t.bx0;
    for (int64_t e = 0; e < 2; ++e) {  // U column lo + 2i + e to phase e, index i
      const int64_t first = t.vx0 + ((t.vx0 - lo - e) & 1);
      T* dst = s.phases.data() + e * phase;
      for (int64_t ux = first, i = (first - lo - e) / 2; ux <= t.vx1; ux += 2, ++i) dst[i] = brow[ux];
    }
    for (int64_t k = 0; k < taps; ++k) s.src[k] = s.phases.data() + (k % 2) * phase + k / 2;
    combine_rows(s.v.data() + (uy - t.vy0) * pw, s.src.data(), plan.up_t.data(), taps, pw);
  }
  // along y
  s.p.resize(ph * pw);
  s.w.resize(taps);
  for (int64_t q = t.qy0; q <= t.qy1; ++q) {
    int64_t count = 0;
    for (int64_t k = 0; k < taps; ++k) {
      const int64_t uy = 2 * q + k - half + 1;
      if (uy < t.vy0 || uy > t.vy1) continue;
      s.src[count] = s.v.data() + (uy - t.vy0) * pw, s.w[count++] = plan.up_t[k];
    }
    combine_rows(s.p.data() + (q - t.qy0) * pw, s.src.data(), s.w.data(), count, pw);
  }
}

template <typename S>
void transpose_typed(const AffineResampleArgs& a) {
  using E = Element<S>;
  using T = typename E::Compute;
  const Plan<T> plan(a);
  const S* dy = static_cast<const S*>(a.src);
  S* out = static_cast<S*>(a.dst);
  const T* matrix = static_cast<const T*>(a.matrix);
  const int64_t tiles = plan.tiles_y * plan.tiles_x, plane = plan.h * plan.w;
  // a task: the channels [c0, c0 + group) of one image; groups split the channels only when the batch alone
  // cannot occupy the cores (each group computes the tiles' footprints again; no plane's bits depend on it)
  static const int64_t cores = usable_cores();
  const int64_t batch = std::max<int64_t>(a.batch, 1), channels = std::max<int64_t>(a.channels, 1);
  const int64_t groups = std::min(channels, (cores + batch - 1) / batch);
  const int64_t group = (channels + groups - 1) / groups, tasks_per_image = (channels + group - 1) / group;
  parallel_for(a.batch * tasks_per_image, 1, [&](int64_t begin, int64_t end) {
    Tile<T> t;
    Scratch<T> s;
    std::vector<T> acc;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tasks_per_image, c0 = (task % tasks_per_image) * group;
      const int64_t count = std::min(group, a.channels - c0);
      acc.assign(count * plane, T(0));
      for (int64_t tile = 0; tile < tiles; ++tile) {
        t.setup(plan, matrix + n * 6, tile);
        if (t.empty) continue;
        const int64_t pw = t.p_w();
        const int64_t cx0 = std::max<int64_t>(t.qx0, 0), cx1 = std::min(t.qx1, plan.wp - 1);
        for (int64_t c = 0; c < count; ++c) {
          downsample_transpose(plan, t, dy + n * a.src_stride[0] + (c0 + c) * a.src_stride[1], a.src_stride, s);
          s.box.assign(t.box_w() * t.box_h(), T(0));
          scatter_box(t, s);
          upsample_transpose(plan, t, s);
          T* dst = acc.data() + c * plane;  // fold the padded rows and columns back onto the image (reflection)
          for (int64_t q = std::max<int64_t>(t.qy0, 0); q <= std::min(t.qy1, plan.hp - 1); ++q) {
            const T* grow = s.p.data() + (q - t.qy0) * pw - t.qx0;
            T* row = dst + plan.ry[q] * plan.w;
            for (int64_t qx = cx0; qx <= cx1; ++qx) row[plan.rx[qx]] += grow[qx];
          }
        }
      }
      for (int64_t c = 0; c < count; ++c) {
        S* dst = out + n * a.dst_stride[0] + (c0 + c) * a.dst_stride[1];
        const T* src = acc.data() + c * plane;
        for (int64_t y = 0; y < plan.h; ++y)
          for (int64_t x = 0; x < plan.w; ++x)
            E::store(dst, y * a.dst_stride[2] + x * a.dst_stride[3], src[y * plan.w + x]);
      }
    }
  });
}

}  // namespace

void affine_resample_cpu(const AffineResampleArgs& a) {
  check_affine_resample_args(a);
  dispatch_dtype("affine_resample", a.dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    if (a.transpose)
      transpose_typed<S>(a);
    else
      forward_typed<S>(a);
  });
}

}  // namespace ganfast
