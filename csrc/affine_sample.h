// affine_sample: bilinear sampling of each (n, c) plane at an affine map of the output pixel grid, zeros outside;
// and its transpose (adjoint), which scatters each output value back onto the four input pixels it read.
// Shared by the C++ CPU kernels (affine_sample_cpu.cpp) and the CUDA kernels (kernels/affine_sample.cu);
// the oracle is ganfast/reference/affine_sample.py (grid_sample with align_corners=False).
#pragma once
#include <cmath>
#include <cstdint>

#include "common.h"

namespace ganfast {

// Output pixel (ox, oy) of image n reads input position (ix, iy) = A[n] · (ox, oy, 1), pixel centres at integers:
//   out = Σ_{jx ∈ {x0, x0+1}, jy ∈ {y0, y0+1}} (1 − |ix − jx|)(1 − |iy − jy|) · x[jy, jx],  x0 = floor(ix),
// neighbours outside the input contributing zero. The transpose maps a gradient of the output's shape to the
// input's shape: dx[jy, jx] = Σ over outputs of the same weight times dy.
struct AffineSampleArgs {
  int dtype;                  // DType of x/dy and out
  int transpose;              // 0: sample (out has the output size); 1: transpose (out has the input size)
  int64_t batch, channels;
  int64_t in_h, in_w;         // the sampled image's size
  int64_t out_h, out_w;       // the sampling grid's size
  int64_t src_stride[4];      // strides (elements) of the tensor read: x (sample) or dy (transpose)
  int64_t dst_stride[4];      // strides of the tensor written
  void* dst;
  const void* src;
  const void* matrix;         // (N, 2, 3) row-major, double for float64 tensors, float otherwise
};

// The bilinear footprint of one output pixel: top-left neighbour and the weights of the two columns / rows.
template <typename T>
struct Footprint {
  int64_t x0, y0;
  T wx0, wx1, wy0, wy1;
};

// Positions are clamped to [−2, size + 1] first (all four neighbours stay outside beyond that), which keeps the
// integer conversion defined for any finite or infinite position.
template <typename T>
GANFAST_HD Footprint<T> footprint(const T* m, int64_t ox, int64_t oy, int64_t in_w, int64_t in_h) {
  T ix = m[0] * T(ox) + m[1] * T(oy) + m[2];
  T iy = m[3] * T(ox) + m[4] * T(oy) + m[5];
  ix = ix < T(-2) ? T(-2) : (ix > T(in_w + 1) ? T(in_w + 1) : ix);
  iy = iy < T(-2) ? T(-2) : (iy > T(in_h + 1) ? T(in_h + 1) : iy);
  const T fx = floor(ix), fy = floor(iy);
  const T ax = ix - fx, ay = iy - fy;
  return {static_cast<int64_t>(fx), static_cast<int64_t>(fy), T(1) - ax, ax, T(1) - ay, ay};
}

GANFAST_HD bool inside(int64_t j, int64_t size) { return j >= 0 && j < size; }

void check_affine_sample_args(const AffineSampleArgs& a);

void affine_sample_cpu(const AffineSampleArgs& args);
#ifdef GANFAST_WITH_CUDA
void affine_sample_cuda(const AffineSampleArgs& args, int device, uintptr_t stream);
#endif

}  // namespace ganfast
