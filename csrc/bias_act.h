// bias_act: y = clamp(act(x + b[c]) * gain, -clamp, clamp) and its first and second derivatives,
// shared by the C++ CPU kernel (bias_act_cpu.cpp) and the CUDA kernel (kernels/bias_act.cu).
// Semantics follow StyleGAN2-ADA's torch_utils/ops/bias_act; the oracle is ganfast/reference/bias_act.py.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common.h"

namespace ganfast {

// Activation codes (ganfast/ops/bias_act.py: ACTIVATIONS holds the same numbering).
enum Act : int { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish, kNumActs };

// What the elementwise pass computes, with z = x + b[c] and mask = (clamp < 0 || |yref| < clamp):
//   order 0: out = clamp(act(z) * gain)
//   order 1: out = g * gain * act'(z) * mask          (dL/dx from g = dL/dy)
//   order 2: out = g * h * gain * act''(z) * mask     (d/dx of order 1, g = d(dL/dx), h = dL/dy)
struct BiasActArgs {
  int dtype;          // DType of every tensor
  int act;            // Act
  int order;          // 0, 1 or 2
  int64_t n;          // elements of x
  int64_t channels;   // size of x along `dim` (length of b)
  int64_t stride_c;   // stride of `dim` in elements; all tensors share x's dense layout
  double alpha, gain, clamp;  // clamp < 0: none
  void* out;
  const void* x;
  const void* b;      // may be null
  const void* g;      // orders 1, 2
  const void* h;      // order 2
  const void* yref;   // forward output, for the clamp mask; may be null when clamp < 0
};

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

// d^order/dz^order act(z), in the arithmetic type T (float, or double for float64 tensors).
template <int ACT, int ORDER, typename T>
GANFAST_HD T act_eval(T z, T alpha) {
  using std::exp; using std::expm1; using std::log1p; using std::tanh;
  const T one = T(1), zero = T(0);
  if (ACT == kLinear) return ORDER == 0 ? z : ORDER == 1 ? one : zero;
  if (ACT == kRelu) return ORDER == 0 ? (z < zero ? zero : z) : ORDER == 1 ? (z > zero ? one : zero) : zero;
  if (ACT == kLrelu) return ORDER == 0 ? (z > zero ? z : z * alpha) : ORDER == 1 ? (z > zero ? one : alpha) : zero;
  if (ACT == kTanh) {
    const T t = tanh(z);
    return ORDER == 0 ? t : ORDER == 1 ? one - t * t : T(-2) * t * (one - t * t);
  }
  if (ACT == kSigmoid || ACT == kSwish) {
    const T s = one / (one + exp(-z));
    if (ACT == kSigmoid) return ORDER == 0 ? s : ORDER == 1 ? s * (one - s) : s * (one - s) * (one - T(2) * s);
    return ORDER == 0 ? z * s : ORDER == 1 ? s * (one + z * (one - s)) : s * (one - s) * (T(2) + z * (one - T(2) * s));
  }
  if (ACT == kElu) return ORDER == 0 ? (z > zero ? z : expm1(z)) : ORDER == 1 ? (z > zero ? one : exp(z)) : (z > zero ? zero : exp(z));
  if (ACT == kSelu) {
    const T scale = T(kSeluScale), sa = T(kSeluScale * kSeluAlpha);
    return ORDER == 0 ? (z > zero ? scale * z : sa * expm1(z)) : ORDER == 1 ? (z > zero ? scale : sa * exp(z)) : (z > zero ? zero : sa * exp(z));
  }
  // softplus with torch's defaults (beta 1, threshold 20: linear above it)
  if (z > T(20)) return ORDER == 0 ? z : ORDER == 1 ? one : zero;
  const T s = one / (one + exp(-z));
  return ORDER == 0 ? log1p(exp(z)) : ORDER == 1 ? s : s * (one - s);
}

// One element of the pass; `bias` is b[c] (0 without b), g/h/yref are the element's values of those tensors.
// `clamp` is +inf when there is none, so the element has no data-independent branch (the CPU loop vectorizes).
template <int ACT, int ORDER, typename T>
GANFAST_HD T bias_act_element(T x, T bias, T g, T h, T yref, T alpha, T gain, T clamp) {
  const T z = x + bias;
  if (ORDER == 0) {
    // clamp written as selects: NaN passes through (like torch.clamp)
    const T y = act_eval<ACT, 0>(z, alpha) * gain;
    const T lo = y < -clamp ? -clamp : y;
    return lo > clamp ? clamp : lo;
  }
  const T d = act_eval<ACT, ORDER>(z, alpha) * gain * (ORDER == 1 ? g : g * h);
  return (yref < clamp && yref > -clamp) ? d : T(0);
}

// The kernels' clamp value: +inf for "no clamp" (args.clamp < 0).
template <typename T>
GANFAST_HD T effective_clamp(double clamp) {
  return clamp >= 0 ? T(clamp) : std::numeric_limits<T>::infinity();
}

// The arguments' addresses typed as storage type S, and the scalars in arithmetic type T.
template <typename S, typename T>
struct TypedBiasActArgs {
  S* out;
  const S *x, *b, *g, *h, *yref;
  T alpha, gain, clamp;
  GANFAST_HD explicit TypedBiasActArgs(const BiasActArgs& a)
      : out(static_cast<S*>(a.out)), x(static_cast<const S*>(a.x)), b(static_cast<const S*>(a.b)),
        g(static_cast<const S*>(a.g)), h(static_cast<const S*>(a.h)), yref(static_cast<const S*>(a.yref)),
        alpha(T(a.alpha)), gain(T(a.gain)), clamp(effective_clamp<T>(a.clamp)) {}
};

template <int V> using IntTag = std::integral_constant<int, V>;

// Calls fn(TypeTag<storage type>, IntTag<order>, IntTag<act>) for the arguments' runtime codes, so that
// each backend instantiates its kernel for every combination. Half/BF16 are the backend's storage types.
template <typename HalfT, typename BFloat16T, typename Fn>
void dispatch_bias_act(const BiasActArgs& a, Fn&& fn) {
  auto by_act = [&](auto type, auto order) {
    switch (a.act) {
      case kLinear: return fn(type, order, IntTag<kLinear>{});
      case kRelu: return fn(type, order, IntTag<kRelu>{});
      case kLrelu: return fn(type, order, IntTag<kLrelu>{});
      case kTanh: return fn(type, order, IntTag<kTanh>{});
      case kSigmoid: return fn(type, order, IntTag<kSigmoid>{});
      case kElu: return fn(type, order, IntTag<kElu>{});
      case kSelu: return fn(type, order, IntTag<kSelu>{});
      case kSoftplus: return fn(type, order, IntTag<kSoftplus>{});
      case kSwish: return fn(type, order, IntTag<kSwish>{});
      default: fail("bias_act: unknown activation code " + std::to_string(a.act));
    }
  };
  auto by_order = [&](auto type) {
    switch (a.order) {
      case 0: return by_act(type, IntTag<0>{});
      case 1: return by_act(type, IntTag<1>{});
      case 2: return by_act(type, IntTag<2>{});
      default: fail("bias_act: order must be 0, 1 or 2, got " + std::to_string(a.order));
    }
  };
  dispatch_dtype<HalfT, BFloat16T>("bias_act", a.dtype, by_order);
}

// Checks what the kernels rely on (the Python layer validates tensors before this).
void check_bias_act_args(const BiasActArgs& a);

void bias_act_cpu(const BiasActArgs& args);
#ifdef GANFAST_WITH_CUDA
void bias_act_cuda(const BiasActArgs& args, int device, uintptr_t stream);
#endif

}  // namespace ganfast
