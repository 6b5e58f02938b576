// upfirdn2d on the CPU, polyphase: each output pixel gathers only the input pixels its filter taps meet
// (no zero-inserted buffer), rows of output split over threads, half types computed in float.
#include <vector>

#include "parallel.h"
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

template <typename S>
void upfirdn2d_typed(const Upfirdn2dArgs& a) {
  using E = Element<S>;
  using T = typename E::Compute;
  const S* x = static_cast<const S*>(a.x);
  S* out = static_cast<S*>(a.out);
  const T* taps = static_cast<const T*>(a.taps);

  std::vector<AxisWindow> win_y(a.out_h), win_x(a.out_w);
  for (int64_t o = 0; o < a.out_h; ++o) win_y[o] = axis_window(o, a.in_h, a.up_y, a.down_y, a.pad_y0, a.taps_h);
  for (int64_t o = 0; o < a.out_w; ++o) win_x[o] = axis_window(o, a.in_w, a.up_x, a.down_x, a.pad_x0, a.taps_w);
  const int64_t sxh = a.x_stride[2], sxw = a.x_stride[3], soh = a.out_stride[2], sow = a.out_stride[3];
  const int64_t tap_step_y = a.up_y * a.taps_w, tap_step_x = a.up_x;

  const int64_t rows = a.batch * a.channels * a.out_h;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(a.out_w, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t oy = row % a.out_h, plane = row / a.out_h;
      const int64_t n = plane / a.channels, c = plane % a.channels;
      const S* x_plane = x + n * a.x_stride[0] + c * a.x_stride[1];
      S* out_row = out + n * a.out_stride[0] + c * a.out_stride[1] + oy * soh;
      const AxisWindow wy = win_y[oy];
      for (int64_t ox = 0; ox < a.out_w; ++ox) {
        const AxisWindow wx = win_x[ox];
        T acc = T(0);
        const T* tap_row = taps + wy.first_tap * a.taps_w + wx.first_tap;
        for (int64_t iy = wy.first; iy < wy.end; ++iy, tap_row += tap_step_y) {
          const S* x_row = x_plane + iy * sxh;
          const T* tap = tap_row;
          for (int64_t ix = wx.first; ix < wx.end; ++ix, tap += tap_step_x) acc += E::load(x_row, ix * sxw) * *tap;
        }
        E::store(out_row, ox * sow, acc);
      }
    }
  });
}

}  // namespace

void upfirdn2d_cpu(const Upfirdn2dArgs& a) {
  check_upfirdn2d_args(a);
  switch (a.dtype) {
    case kFloat32: return upfirdn2d_typed<float>(a);
    case kFloat64: return upfirdn2d_typed<double>(a);
    case kFloat16: return upfirdn2d_typed<Half>(a);
    case kBFloat16: return upfirdn2d_typed<BFloat16>(a);
    default: fail("upfirdn2d: unsupported dtype code " + std::to_string(a.dtype));
  }
}

}  // namespace ganfast
