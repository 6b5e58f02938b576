// grad_penalty: the per-sample reduction of a gradient penalty and its backward, shared by the C++ CPU kernel
// (grad_penalty_cpu.cpp) and the CUDA kernel (kernels/grad_penalty.cu). The oracle is
// ganfast/reference/losses.py (grad_penalty); the Python layer is ganfast/ops/grad_penalty.py.
//
// g is a (batch, per_sample) row-major buffer. Per-sample values (term, norm, dterm, dnorm) are of the
// accumulation type: double for float64 g, float otherwise. center < 0 selects R1's sum of squares.
//   forward:  s_b = Σ g_b²,  norm_b = √s_b,  term_b = s_b (center < 0) or (norm_b − center)²
//   backward: out_b = g_b · coef_b  (penalty_coef below)
#pragma once
#include <cmath>
#include <cstdint>

#include "common.h"

namespace ganfast {

struct GradPenaltyArgs {
  int dtype;           // DType of g (and of out)
  int64_t batch;       // B
  int64_t per_sample;  // N: elements of one sample
  double center;       // < 0: R1 (no center)
  void* term;          // forward outputs, (B,) of the accumulation type
  void* norm;
  void* out;           // backward output, like g
  const void* g;
  const void* dterm;   // backward inputs, (B,) of the accumulation type
  const void* dnorm;
  const void* norm_in;
};

// The penalty term of one sample from its sum of squares.
template <typename T>
GANFAST_HD T penalty_term(T sumsq, T norm, T center) {
  if (center < T(0)) return sumsq;
  const T d = norm - center;
  return d * d;
}

// d(dterm·term + dnorm·norm)/dg_b = g_b · coef_b; the 1/norm factors are 0 where norm = 0 (the subgradient
// that torch.linalg.vector_norm uses).
template <typename T>
GANFAST_HD T penalty_coef(T dterm, T dnorm, T norm, T center) {
  const T inv = norm > T(0) ? T(1) / norm : T(0);
  if (center < T(0)) return T(2) * dterm + dnorm * inv;
  return (T(2) * dterm * (norm - center) + dnorm) * inv;
}

// Checks what the kernels rely on (the Python layer validates tensors before this). forward: term, norm, g;
// backward: out, g, dterm, dnorm, norm_in.
void check_grad_penalty_args(const GradPenaltyArgs& a, bool backward);

void grad_penalty_fwd_cpu(const GradPenaltyArgs& args);
void grad_penalty_bwd_cpu(const GradPenaltyArgs& args);
#ifdef GANFAST_WITH_CUDA
void grad_penalty_fwd_cuda(const GradPenaltyArgs& args, int device, uintptr_t stream);
void grad_penalty_bwd_cuda(const GradPenaltyArgs& args, int device, uintptr_t stream);
#endif

}  // namespace ganfast
