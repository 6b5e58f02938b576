// color_matrix on the CPU: (image, block of rows) tasks over threads; each pixel's channels are read once, the
// matrix-vector product done in registers, and each output channel written once.
#include <algorithm>

#include "color_matrix.h"
#include "parallel.h"

namespace ganfast {

void check_color_matrix_args(const ColorMatrixArgs& a) {
  if (a.batch < 0 || a.pixels < 0 || a.width < 1) fail("color_matrix: bad sizes");
  if (a.channels < 1 || a.channels > kMaxColorChannels) fail("color_matrix: channels must be 1 to 4");
  if (!a.out || !a.x || !a.matrix || !a.offset) fail("color_matrix: pointers must not be null");
}

namespace {

constexpr int64_t kRowsPerTask = 16;

// One row of pixels: channels k of x at xs[k] + col·sx, of out at os[i] + col·so.
template <typename S, typename T, int C>
inline void color_row(S* const* os, const S* const* xs, int64_t width, int64_t sx, int64_t so, const T (&m)[C][C],
                      const T (&b)[C]) {
  using E = Element<S>;
  for (int64_t col = 0; col < width; ++col) {
    T v[C];
    for (int k = 0; k < C; ++k) v[k] = E::load(xs[k], col * sx);
    for (int i = 0; i < C; ++i) {
      T acc = b[i];
      for (int k = 0; k < C; ++k) acc += m[i][k] * v[k];
      E::store(os[i], col * so, acc);
    }
  }
}

template <typename S, int C>
void color_typed(const ColorMatrixArgs& a) {
  using T = typename Element<S>::Compute;
  const S* x = static_cast<const S*>(a.x);
  S* out = static_cast<S*>(a.out);
  const int64_t height = a.pixels / a.width, chunks = (height + kRowsPerTask - 1) / kRowsPerTask;
  parallel_for(a.batch * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / chunks, r0 = (task % chunks) * kRowsPerTask;
      const int64_t r1 = std::min(height, r0 + kRowsPerTask);
      T m[C][C], b[C];
      for (int i = 0; i < C; ++i) {
        b[i] = static_cast<const T*>(a.offset)[n * C + i];
        for (int k = 0; k < C; ++k) m[i][k] = static_cast<const T*>(a.matrix)[(n * C + i) * C + k];
      }
      for (int64_t row = r0; row < r1; ++row) {
        const S* xs[C];
        S* os[C];
        for (int k = 0; k < C; ++k) {
          xs[k] = x + n * a.x_stride[0] + k * a.x_stride[1] + row * a.x_stride[2];
          os[k] = out + n * a.out_stride[0] + k * a.out_stride[1] + row * a.out_stride[2];
        }
        if (a.x_stride[3] == 1 && a.out_stride[3] == 1)  // unit strides: a loop the compiler vectorises
          color_row<S, T, C>(os, xs, a.width, 1, 1, m, b);
        else
          color_row<S, T, C>(os, xs, a.width, a.x_stride[3], a.out_stride[3], m, b);
      }
    }
  });
}

template <typename S>
void dispatch_channels(const ColorMatrixArgs& a) {
  switch (a.channels) {
    case 1: return color_typed<S, 1>(a);
    case 2: return color_typed<S, 2>(a);
    case 3: return color_typed<S, 3>(a);
    default: return color_typed<S, 4>(a);
  }
}

}  // namespace

void color_matrix_cpu(const ColorMatrixArgs& a) {
  check_color_matrix_args(a);
  dispatch_dtype("color_matrix", a.dtype, [&](auto tag) { dispatch_channels<typename decltype(tag)::type>(a); });
}

}  // namespace ganfast
