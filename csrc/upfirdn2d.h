// upfirdn2d: per (n, c) plane, upsample by zero insertion, pad, correlate with a 2-D FIR filter, downsample.
// The index math is shared by the C++ CPU kernel (upfirdn2d_cpu.cpp) and the CUDA kernel
// (kernels/upfirdn2d.cu). Semantics follow StyleGAN2-ADA's upfirdn2d; the oracle is
// ganfast/reference/upfirdn2d.py. The Python layer hands the filter already oriented for correlation,
// scaled by its gain and (for separable filters) expanded to 2-D, in the arithmetic type.
#pragma once
#include <cstdint>

#include "common.h"

namespace ganfast {

// Per axis: the zero-inserted, padded input z has pixel i of x at position i·up + pad0 (pad0 < 0 crops),
// and output o is  y[o] = Σ_{t < taps} z[o·down + t] · taps[t].
struct Upfirdn2dArgs {
  int dtype;                      // DType of x and out
  int64_t batch, channels;        // N, C
  int64_t in_h, in_w, out_h, out_w;
  int64_t up_x, up_y, down_x, down_y, pad_x0, pad_y0;
  int64_t taps_h, taps_w;         // the filter is taps_h × taps_w, row-major, contiguous
  int64_t x_stride[4];            // strides of x in elements (N, C, H, W): any layout
  int64_t out_stride[4];          // strides of out in elements
  void* out;
  const void* x;
  const void* taps;               // double for float64 tensors, float otherwise
};

// floor(a / b) for b > 0 and any sign of a.
GANFAST_HD int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The input pixels that output o of one axis reads: i in [first, end), meeting taps first_tap + k·up.
// first and end are clamped to [0, in] and are non-decreasing in o (tiled kernels rely on that).
struct AxisWindow {
  int64_t first, end, first_tap;
};

GANFAST_HD AxisWindow axis_window(int64_t o, int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t taps) {
  const int64_t start = o * down - pad0;            // position of tap 0, counted from input pixel 0 (in z)
  int64_t first = floor_div(start + up - 1, up);    // first i with i·up >= start
  int64_t last = floor_div(start + taps - 1, up);   // last i with i·up <= start + taps - 1
  first = first < 0 ? 0 : (first > in ? in : first);
  int64_t end = last + 1 > in ? in : last + 1;
  end = end < first ? first : end;
  return {first, end, first * up - start};
}

// The most input pixels that `tile` consecutive outputs of one axis read (a bound on end − first).
GANFAST_HD int64_t axis_span(int64_t tile, int64_t up, int64_t down, int64_t taps) {
  return ((tile - 1) * down + taps - 1) / up + 1;
}

// Checks what the kernels rely on (the Python layer validates tensors before this).
void check_upfirdn2d_args(const Upfirdn2dArgs& a);

void upfirdn2d_cpu(const Upfirdn2dArgs& args);
#ifdef GANFAST_WITH_CUDA
void upfirdn2d_cuda(const Upfirdn2dArgs& args, int device, uintptr_t stream);
#endif

}  // namespace ganfast
