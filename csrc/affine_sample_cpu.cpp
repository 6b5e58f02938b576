// affine_sample on the CPU: the sampling pass splits output rows over threads (each output pixel's footprint is
// computed once and applied to every channel); the transpose splits (n, c) planes over threads, so each thread
// scatters into its own planes and no two threads write one pixel.
#include <algorithm>
#include <vector>

#include "affine_sample.h"
#include "parallel.h"

namespace ganfast {

void check_affine_sample_args(const AffineSampleArgs& a) {
  if (a.batch < 0 || a.channels < 0 || a.in_h < 0 || a.in_w < 0 || a.out_h < 0 || a.out_w < 0)
    fail("affine_sample: negative sizes");
  if (a.transpose != 0 && a.transpose != 1) fail("affine_sample: transpose must be 0 or 1");
  if (!a.dst || !a.src || !a.matrix) fail("affine_sample: pointers must not be null");
}

namespace {

template <typename S>
void sample_typed(const AffineSampleArgs& a) {
  using E = Element<S>;
  using T = typename E::Compute;
  const S* x = static_cast<const S*>(a.src);
  S* out = static_cast<S*>(a.dst);
  const T* matrix = static_cast<const T*>(a.matrix);
  const int64_t* sx = a.src_stride;
  const int64_t* so = a.dst_stride;
  const int64_t rows = a.batch * a.out_h;
  parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, a.out_w * a.channels)),
               [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / a.out_h, oy = row % a.out_h;
      const T* m = matrix + n * 6;
      for (int64_t ox = 0; ox < a.out_w; ++ox) {
        const Footprint<T> f = footprint(m, ox, oy, a.in_w, a.in_h);
        const bool cx0 = inside(f.x0, a.in_w), cx1 = inside(f.x0 + 1, a.in_w);
        const bool cy0 = inside(f.y0, a.in_h), cy1 = inside(f.y0 + 1, a.in_h);
        const int64_t o00 = f.y0 * sx[2] + f.x0 * sx[3];
        for (int64_t c = 0; c < a.channels; ++c) {
          const S* plane = x + n * sx[0] + c * sx[1];
          T acc = T(0);
          if (cy0 && cx0) acc += f.wy0 * f.wx0 * E::load(plane, o00);
          if (cy0 && cx1) acc += f.wy0 * f.wx1 * E::load(plane, o00 + sx[3]);
          if (cy1 && cx0) acc += f.wy1 * f.wx0 * E::load(plane, o00 + sx[2]);
          if (cy1 && cx1) acc += f.wy1 * f.wx1 * E::load(plane, o00 + sx[2] + sx[3]);
          E::store(out, n * so[0] + c * so[1] + oy * so[2] + ox * so[3], acc);
        }
      }
    }
  });
}

// Transpose: out (input-sized) = Σ over output pixels of weight · dy, accumulated in T per plane.
template <typename S>
void transpose_typed(const AffineSampleArgs& a) {
  using E = Element<S>;
  using T = typename E::Compute;
  const S* dy = static_cast<const S*>(a.src);
  S* out = static_cast<S*>(a.dst);
  const T* matrix = static_cast<const T*>(a.matrix);
  const int64_t* sd = a.src_stride;
  const int64_t* so = a.dst_stride;
  const int64_t planes = a.batch * a.channels;
  parallel_for(planes, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(a.in_h * a.in_w);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / a.channels, c = plane % a.channels;
      const T* m = matrix + n * 6;
      const S* src = dy + n * sd[0] + c * sd[1];
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t oy = 0; oy < a.out_h; ++oy) {
        for (int64_t ox = 0; ox < a.out_w; ++ox) {
          const Footprint<T> f = footprint(m, ox, oy, a.in_w, a.in_h);
          const T g = E::load(src, oy * sd[2] + ox * sd[3]);
          const bool cx0 = inside(f.x0, a.in_w), cx1 = inside(f.x0 + 1, a.in_w);
          if (inside(f.y0, a.in_h)) {
            T* r = acc.data() + f.y0 * a.in_w + f.x0;
            if (cx0) r[0] += f.wy0 * f.wx0 * g;
            if (cx1) r[1] += f.wy0 * f.wx1 * g;
          }
          if (inside(f.y0 + 1, a.in_h)) {
            T* r = acc.data() + (f.y0 + 1) * a.in_w + f.x0;
            if (cx0) r[0] += f.wy1 * f.wx0 * g;
            if (cx1) r[1] += f.wy1 * f.wx1 * g;
          }
        }
      }
      S* dst = out + n * so[0] + c * so[1];
      for (int64_t iy = 0; iy < a.in_h; ++iy)
        for (int64_t ix = 0; ix < a.in_w; ++ix) E::store(dst, iy * so[2] + ix * so[3], acc[iy * a.in_w + ix]);
    }
  });
}

template <typename S>
void dispatch(const AffineSampleArgs& a) {
  if (a.transpose)
    transpose_typed<S>(a);
  else
    sample_typed<S>(a);
}

}  // namespace

void affine_sample_cpu(const AffineSampleArgs& a) {
  check_affine_sample_args(a);
  dispatch_dtype("affine_sample", a.dtype, [&](auto tag) { dispatch<typename decltype(tag)::type>(a); });
}

}  // namespace ganfast
