// Wide-vector code paths for the CPU kernels. The build targets baseline x86-64 (SSE2, 4 floats a vector) so
// that one binary runs anywhere; a hot loop marked GANFAST_CPU_CLONES is compiled three times more, for
// x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline, and the loader picks the widest the CPU has
// (GNU ifunc). Elsewhere (other compilers, other architectures, no ifunc) the macro is empty and the loop is
// compiled once for the build's target.
//
// A clone may contract a*b + c into a fused multiply-add where the baseline does not, so results can differ in
// the last bit between CPUs; on one CPU they are fixed (the kernels sum in an order that depends on neither the
// vector width nor the thread count).
#pragma once

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define GANFAST_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GANFAST_CPU_CLONES
#endif

// For the templates a clone wraps: inlined into each clone, so each gets that clone's instructions.
#if defined(__GNUC__) || defined(__clang__)
#define GANFAST_INLINE __attribute__((always_inline)) inline
#else
#define GANFAST_INLINE inline
#endif
