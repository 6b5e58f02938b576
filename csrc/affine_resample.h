// affine_resample: StyleGAN2-ADA's geometric augmentation of each (n, c) plane as one resampling pass, and its
// transpose (adjoint). Shared by the C++ CPU kernels (affine_resample_cpu.cpp) and the CUDA kernels
// (kernels/affine_resample.cu); the oracle is ganfast.reference.augment.geometric (reflect pad, upsample2d,
// grid_sample, downsample2d, each a separate torch call).
//
// Per axis (shown for x; y is the same with its own sizes), with the even-length lowpass f of K taps:
//   P  reflection padding: padded index q ∈ [0, Wp), Wp = W + pad_x0 + pad_x1, reads x[reflect(q − pad_x0)],
//      reflect(i) = −i for i < 0 and 2(W − 1) − i for i ≥ W (pad_x0, pad_x1 ≤ W − 1: one reflection suffices);
//   U  2× upsampling (upfirdn2d up=2, padding ((K + 1)/2, (K − 2)/2), gain 2 per axis):
//      u[j] = 2 Σ_k f[k] · p[(j + K/2 − 1 − k) / 2] over the k making the index an integer in [0, Wp), j ∈ [0, 2Wp);
//   S  bilinear sampling on the canvas s ∈ [0, 2W + K)²: canvas pixel (sx, sy) reads the upsampled image at
//      (ux, uy) = A[n] · (sx, sy, 1), the four neighbours weighted (1 − |ux − jx|)(1 − |uy − jy|), zeros outside
//      [0, 2Wp) × [0, 2Hp) (see csrc/affine_sample.h: the same footprint);
//   D  2× downsampling (downsample2d with flip_filter and padding −K/2): y[X] = Σ_k f[k] · s[2X + k + 1].
//   out = D_y D_x S_A U_y U_x P x  (out has the input's size H × W);
//   transpose: dx = Pᵀ Uᵀ S_Aᵀ Dᵀ dy  (reflection folds the gradient of a padded index back onto its source).
// (U and D checked against the reference upsample2d / downsample2d to 1e-15 in float64.)
#pragma once
#include <cstdint>

#include "common.h"

namespace ganfast {

struct AffineResampleArgs {
  int dtype;                         // DType of the tensor read and the tensor written
  int transpose;                     // 0: out = R x; 1: out = Rᵀ dy (both of the image's size)
  int64_t batch, channels, height, width;
  int64_t pad_x0, pad_x1, pad_y0, pad_y1;  // reflection margins, each in [0, size − 1]
  int64_t taps;                      // K, even, ≥ 2
  int64_t src_stride[4];             // strides (elements) of the tensor read: x, or dy for the transpose
  int64_t dst_stride[4];             // strides of the tensor written
  void* dst;
  const void* src;
  const void* matrix;                // (N, 2, 3) row-major A: canvas pixel → upsampled padded pixel position;
                                     // double for float64 tensors, float otherwise
  const void* filter;                // f, K taps, in the matrix's type
};

void check_affine_resample_args(const AffineResampleArgs& a);

void affine_resample_cpu(const AffineResampleArgs& args);
#ifdef GANFAST_WITH_CUDA
void affine_resample_cuda(const AffineResampleArgs& args, int device, uintptr_t stream);
#endif

}  // namespace ganfast
