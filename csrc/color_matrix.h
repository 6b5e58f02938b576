// color_matrix: per image n and pixel p, out[n, :, p] = M[n] · x[n, :, p] + b[n] for up to 4 channels.
// Shared by the C++ CPU kernel (color_matrix_cpu.cpp) and the CUDA kernel (kernels/color_matrix.cu); the oracle is
// ganfast/reference/color_matrix.py.
#pragma once
#include <cstdint>

#include "common.h"

namespace ganfast {

constexpr int kMaxColorChannels = 4;

struct ColorMatrixArgs {
  int dtype;                 // DType of x and out
  int64_t batch, channels;   // channels <= kMaxColorChannels
  int64_t pixels;            // H·W; x and out index pixel p at (p / width)·stride_h + (p % width)·stride_w
  int64_t width;
  int64_t x_stride[4];       // strides of x and out in elements (N, C, H, W)
  int64_t out_stride[4];
  void* out;
  const void* x;
  const void* matrix;        // (N, C, C) row-major, in the arithmetic type (double for float64, else float)
  const void* offset;        // (N, C) in the arithmetic type
};

void check_color_matrix_args(const ColorMatrixArgs& a);

void color_matrix_cpu(const ColorMatrixArgs& args);
#ifdef GANFAST_WITH_CUDA
void color_matrix_cuda(const ColorMatrixArgs& args, int device, uintptr_t stream);
#endif

}  // namespace ganfast
