// filtered_lrelu: StyleGAN3's bias + upsample + leaky ReLU + clamp + downsample, fused, and the linear map of its
// derivative. One pass per (n, c) plane, in two upfirdn stages around an elementwise one:
//     mid[j] = Σ_t z[j + t] · taps1[t],     z[i·up + pad1] = x[i] (+ bias)         (stage 1, per axis)
//     a[j]   = mode 0: clamp(lrelu(mid[j]) · gain, ±clamp), recording a 2-bit code per mid pixel
//              mode 1: mid[j] · factor(code[j])                                  (the derivative's linear map)
//     out[o] = Σ_t a[o·down + t − pad2] · taps2[t]   (a is 0 outside [0, mid))  (stage 2, per axis)
// The forward is mode 0 with pad2 = 0; its adjoint is mode 1 with the stages' roles swapped (ganfast/ops/
// filtered_lrelu.py sets the geometry). The index math is shared by the C++ CPU kernel (filtered_lrelu_cpu.cpp)
// and the CUDA kernel (kernels/filtered_lrelu.cu); the oracle is ganfast/reference/filtered_lrelu.py.
#pragma once
#include <cstdint>

#include "common.h"
#include "upfirdn2d.h"

namespace ganfast {

struct FilteredLreluArgs {
  int dtype;                         // DType of x, bias and out
  int mode;                          // 0: activation (writes the mask when it is non-null), 1: the mask's map
  int64_t batch, channels;
  int64_t in_h, in_w, mid_h, mid_w, out_h, out_w;
  int64_t up, down;                  // stage 1's upsampling, stage 2's downsampling
  int64_t pad1_x, pad1_y, pad2_x, pad2_y;
  int64_t taps1_h, taps1_w, taps2_h, taps2_w;
  bool sep1, sep2;                   // separable: the taps are one 1-D row (taps_w == taps_h) used along both axes
  double gain, slope, clamp;         // clamp < 0: no clamping
  int64_t x_stride[4], out_stride[4];  // elements, (N, C, H, W): any layout
  void* out;
  const void* x;
  const void* bias;                  // length C in x's dtype, or null (mode 0 only)
  uint8_t* mask;                     // (N·C, mid_h, mask_row_bytes(mid_w)) row-major, 2 bits per mid pixel
  const void* taps1;                 // double for float64, float otherwise; row-major taps_h × taps_w
  const void* taps2;
};

// Mask codes (2 bits; pixel j of a row sits in byte j / 4 at bit 2·(j % 4)).
constexpr uint8_t kCodeClamped = 0, kCodePositive = 1, kCodeNegative = 2;

GANFAST_HD int64_t mask_row_bytes(int64_t mid_w) { return (mid_w + 3) / 4; }

// The activation of one mid pixel and its code.
template <typename T>
GANFAST_HD T lrelu_clamp(T v, T gain, T slope, T clamp, uint8_t& code) {
  code = v > T(0) ? kCodePositive : kCodeNegative;
  T y = (v > T(0) ? v : v * slope) * gain;
  if (clamp >= T(0) && !(y < clamp && y > -clamp)) {  // NaN stays NaN, as in the reference
    y = y > clamp ? clamp : (y < -clamp ? -clamp : y);
    code = kCodeClamped;
  }
  return y;
}

// The derivative of the activation for a code: gain, gain·slope or 0.
template <typename T>
GANFAST_HD T code_factor(uint8_t code, T gain, T slope) {
  return code == kCodePositive ? gain : (code == kCodeNegative ? gain * slope : T(0));
}

void check_filtered_lrelu_args(const FilteredLreluArgs& a);

void filtered_lrelu_cpu(const FilteredLreluArgs& args);
#ifdef GANFAST_WITH_CUDA
void filtered_lrelu_cuda(const FilteredLreluArgs& args, int device, uintptr_t stream);
#endif

}  // namespace ganfast
