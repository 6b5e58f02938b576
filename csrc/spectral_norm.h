// Spectral normalization's power iteration for many weights in one call, shared by the C++ CPU kernel
// (spectral_norm_cpu.cpp) and the CUDA kernel (kernels/spectral_norm.cu). The oracle is
// ganfast/reference/spectral_norm.py; the Python layer is ganfast/ops/spectral_norm.py.
//
// A contiguous weight of shape (d0, ..., d_{k-1}) normalised along `dim` is the h × w matrix
//     W[i, a*R + r] = weight[(a*h + i)*R + r],   A = d0···d_{dim-1}, h = d_dim, R = d_{dim+1}···d_{k-1}, w = A*R
// (dim moved first, the rest flattened, without copying). With normalize(x) = x / max(‖x‖, eps), each of the
// n_iters iterations runs
//     u_first (parametrization flavour):  u ← normalize(W v),  v ← normalize(Wᵀ u)
//     otherwise (hook flavour):           v ← normalize(Wᵀ u), u ← normalize(W v)
// in place on u and v; then σ = uᵀ W v (reusing the last W v when the iteration ended with u). The results go to
// `out + out_offset`: [σ, u (h values), v (w values)] (the clones torch takes before computing W/σ).
#pragma once
#include <cstdint>

#include "common.h"

namespace ganfast {

// One weight, as the Python layer packs it: ten 8-byte fields (ganfast/ops/spectral_norm.py: _DESCRIPTOR).
struct SNMatrix {
  int64_t weight;      // address of the weight (contiguous)
  int64_t u;           // address of u (h values), updated in place
  int64_t v;           // address of v (w values), updated in place
  int64_t outer;       // A
  int64_t rows;        // h
  int64_t inner;       // R
  int64_t n_iters;     // >= 0 (0: σ only, as in eval mode)
  int64_t u_first;     // 0 or 1
  int64_t out_offset;  // elements from `out` to this weight's [σ, u, v]
  double eps;
};
static_assert(sizeof(SNMatrix) == 80, "SNMatrix is packed as ten 8-byte fields by the Python layer");

struct SpectralNormArgs {
  int dtype;                 // DType of every weight, u, v and out
  int64_t count;             // number of weights
  const SNMatrix* matrices;  // host memory for the CPU kernel, device memory for the CUDA kernel
  void* out;
};

void spectral_norm_cpu(const SpectralNormArgs& args);
#ifdef GANFAST_WITH_CUDA
void spectral_norm_cuda(const SpectralNormArgs& args, int device, uintptr_t stream);
#endif

}  // namespace ganfast
