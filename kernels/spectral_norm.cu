// Spectral normalization on CUDA: every weight's whole power iteration (both mat-vecs, the normalisations,
// n iterations and σ) in ONE launch for all weights: block b owns weight b, so each step only needs the
// block's own barrier. Raw mat-vec results go to the weight's output slots (overwritten by the u, v copies
// at the end), so no workspace is needed. See csrc/spectral_norm.h for the layout and the math.
//
// One block per weight suits what GANs spectrally normalise (dozens of weights of 10⁴–10⁶ elements in one
// launch, where torch pays about ten launches per weight); a single very large weight is limited to one SM's
// bandwidth (not yet measured on a GPU).
#include <algorithm>

#include "cuda_check.cuh"
#include "cuda_element.cuh"
#include "spectral_norm.h"

namespace ganfast {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

// The sum of every thread's x, returned to all threads (begins and ends with a barrier).
__device__ double block_sum(double x, double* scratch) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  x = warp_sum(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  if (warp == 0) {
    x = warp_sum(lane < kWarps ? scratch[lane] : 0.0);
    if (lane == 0) scratch[kWarps] = x;
  }
  __syncthreads();
  return scratch[kWarps];
}

template <typename S>
struct BlockSN {
  using E = CudaElement<S>;
  using T = typename E::Compute;
  const S* weight;
  int64_t outer, rows, inner, cols;
  double eps;
  double* scratch;

  // y = W x (rows values): one warp per row.
  __device__ void mat_vec(const S* x, S* y) const {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int64_t i = warp; i < rows; i += kWarps) {
      T acc = T(0);
      for (int64_t a = 0; a < outer; ++a) {
        const S* row = weight + (a * rows + i) * inner;
        const S* xa = x + a * inner;
        for (int64_t r = lane; r < inner; r += 32) acc += E::load(row, r) * E::load(xa, r);
      }
      acc = warp_sum(acc);
      if (lane == 0) E::store(y, i, acc);
    }
  }

  // y = Wᵀ x (cols values): one thread per column; neighbouring threads read neighbouring elements of a row.
  __device__ void mat_t_vec(const S* x, S* y) const {
    for (int64_t j = threadIdx.x; j < cols; j += kThreads) {
      const int64_t a = j / inner, r = j - a * inner;
      const S* col = weight + a * rows * inner + r;
      T acc = T(0);
      for (int64_t i = 0; i < rows; ++i) acc += E::load(col, i * inner) * E::load(x, i);
      E::store(y, j, acc);
    }
  }

  // dst = raw / max(‖raw‖, eps); returns Σ dst·raw to every thread. Barriers: raw is complete before it is
  // read, dst is complete (and raw no longer read) on return.
  __device__ double normalize(const S* raw, int64_t n, S* dst) const {
    __syncthreads();
    double squares = 0;
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      const double t = double(E::load(raw, k));
      squares += t * t;
    }
    const T denom = max(T(sqrt(block_sum(squares, scratch))), T(eps));
    double dot = 0;
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      const T t = E::load(raw, k);
      E::store(dst, k, t / denom);
      dot += double(E::load(dst, k)) * double(t);
    }
    return block_sum(dot, scratch);
  }
};

template <typename S>
__global__ void __launch_bounds__(kThreads) spectral_norm_kernel(const SNMatrix* matrices, S* out_base) {
  __shared__ double scratch[kWarps + 1];
  const SNMatrix m = matrices[blockIdx.x];
  const BlockSN<S> sn{reinterpret_cast<const S*>(m.weight), m.outer, m.rows, m.inner, m.outer * m.inner, m.eps,
                      scratch};
  S* u = reinterpret_cast<S*>(m.u);
  S* v = reinterpret_cast<S*>(m.v);
  S* out = out_base + m.out_offset;
  S* raw_u = out + 1;            // W v, later the copy of u
  S* raw_v = out + 1 + m.rows;   // Wᵀ u, later the copy of v
  double sigma = 0;
  bool sigma_known = false;      // the last step was u ← normalize(W v): σ = uᵀ(W v) came with it
  for (int64_t it = 0; it < m.n_iters; ++it) {
    if (m.u_first) {
      sn.mat_vec(v, raw_u);
      sn.normalize(raw_u, m.rows, u);
      sn.mat_t_vec(u, raw_v);
      sn.normalize(raw_v, sn.cols, v);
    } else {
      sn.mat_t_vec(u, raw_v);
      sn.normalize(raw_v, sn.cols, v);
      sn.mat_vec(v, raw_u);
      sigma = sn.normalize(raw_u, m.rows, u);
      sigma_known = true;
    }
  }
  if (!sigma_known) {
    sn.mat_vec(v, raw_u);
    __syncthreads();
    double dot = 0;
    for (int64_t k = threadIdx.x; k < m.rows; k += kThreads)
      dot += double(CudaElement<S>::load(u, k)) * double(CudaElement<S>::load(raw_u, k));
    sigma = block_sum(dot, scratch);  // ends with a barrier: raw_u may be overwritten below
  }
  for (int64_t k = threadIdx.x; k < m.rows; k += kThreads) raw_u[k] = u[k];
  for (int64_t k = threadIdx.x; k < sn.cols; k += kThreads) raw_v[k] = v[k];
  if (threadIdx.x == 0) CudaElement<S>::store(out, 0, typename CudaElement<S>::Compute(sigma));
}

}  // namespace

void spectral_norm_cuda(const SpectralNormArgs& a, int device, uintptr_t stream) {
  if (a.count < 0 || (a.count > 0 && (!a.matrices || !a.out))) fail("spectral_norm: bad argument block");
  if (a.count == 0) return;
  if (a.count > 2147483647) fail("spectral_norm: too many weights for one launch");
  DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const unsigned blocks = unsigned(a.count);
  dispatch_dtype<__half, __nv_bfloat16>("spectral_norm", a.dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    spectral_norm_kernel<S><<<blocks, kThreads, 0, s>>>(a.matrices, static_cast<S*>(a.out));
  });
  GANFAST_CUDA_CHECK_LAUNCH("spectral_norm_kernel");
}

}  // namespace ganfast
