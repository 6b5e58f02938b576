// Shared definitions of the torch-free extension: dtype codes, element conversions, host/device macros.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define GANFAST_HD __host__ __device__ __forceinline__
#else
#define GANFAST_HD inline
#endif

namespace ganfast {

// Element types as the Python layer encodes them (ganfast/_ext.py: DTYPE_CODES).
enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Storage types for the half-width floats on the CPU: raw bits, converted to float for arithmetic.
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// IEEE binary16 -> binary32 (exact).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
    return bits_to_float(float_to_bits(magnitude) | sign);
  }
  if (exponent == 31) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf / NaN
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// binary32 -> binary16 with round-to-nearest-even, overflow to inf, NaN kept quiet.
inline uint16_t float_to_half(float f) {
  uint32_t u = float_to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  uint32_t out;
  if (u >= 0x47800000u) {  // |f| >= 2^16: inf or NaN (values in [65520, 2^16) round up to inf below)
    out = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (u < 0x38800000u) {
    // Result is subnormal or zero. Adding 0.5 (2^-1) puts the half's 2^-24 unit at the float's last
    // mantissa bit, so the FPU's own round-to-nearest-even does the rounding.
    const float shifted = bits_to_float(u) + 0.5f;
    out = float_to_bits(shifted) - 0x3f000000u;
  } else {
    const uint32_t odd = (u >> 13) & 1u;
    u += 0xc8000fffu + odd;  // rebias exponent (-112 << 23) and add the rounding bias
    out = u >> 13;
  }
  return static_cast<uint16_t>(out | sign);
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// binary32 -> bfloat16 with round-to-nearest-even, NaN kept quiet.
inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Load/store an element as its arithmetic type (float for the half types).
template <typename S> struct Element {
  using Compute = S;
  static Compute load(const S* p, int64_t i) { return p[i]; }
  static void store(S* p, int64_t i, Compute v) { p[i] = v; }
};
template <> struct Element<Half> {
  using Compute = float;
  static float load(const Half* p, int64_t i) { return half_to_float(p[i].bits); }
  static void store(Half* p, int64_t i, float v) { p[i].bits = float_to_half(v); }
};
template <> struct Element<BFloat16> {
  using Compute = float;
  static float load(const BFloat16* p, int64_t i) { return bf16_to_float(p[i].bits); }
  static void store(BFloat16* p, int64_t i, float v) { p[i].bits = float_to_bf16(v); }
};

[[noreturn]] inline void fail(const std::string& what) { throw std::invalid_argument("ganfast._C: " + what); }

template <typename T> struct TypeTag { using type = T; };

// The one dtype dispatch of every kernel: calls fn(TypeTag<S>{}) with S the storage type of the dtype code
// (float, double, and HalfT / BFloat16T for the half-width types: ganfast::Half / BFloat16 on the host,
// __half / __nv_bfloat16 in CUDA code); an unknown code fails naming ``op``. Use: typename decltype(tag)::type.
template <typename HalfT = Half, typename BFloat16T = BFloat16, typename Fn>
void dispatch_dtype(const char* op, int dtype, Fn&& fn) {
  switch (dtype) {
    case kFloat32: return fn(TypeTag<float>{});
    case kFloat64: return fn(TypeTag<double>{});
    case kFloat16: return fn(TypeTag<HalfT>{});
    case kBFloat16: return fn(TypeTag<BFloat16T>{});
    default: fail(std::string(op) + ": unsupported dtype code " + std::to_string(dtype));
  }
}

}  // namespace ganfast
