// Spectral normalization's power iteration on the CPU. Every output of a mat-vec (a row of W v, a column of Wᵀ u)
// is summed by one thread in an order fixed by the shapes alone, so results depend on neither the thread count
// nor the weight's neighbours in the call (on one CPU; see simd.h). One weight: its mat-vecs are split over
// threads (rows for W v, columns for Wᵀ u) when they are big enough to pay for the threads; several weights: each
// thread takes whole weights, a contiguous share of the total work. Arithmetic in the weight's precision (float
// for float32, as torch's mv; double for float64), float for the half types; vector norms and σ in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.h"
#include "simd.h"
#include "spectral_norm.h"

namespace ganfast {
namespace {

// Multiply-adds per thread below which a mat-vec stays on one thread. The chunks run on torch's OpenMP team
// (parallel.h), whose threads wake in a few µs between back-to-back calls, so a 256 × 2304 mat-vec (0.6M, tens of
// µs on one core) splits over 2 cores as torch's mat-vec does (2^17: 0.92-0.98x of torch's spectral norm at
// 2 threads where 2^21, sized for a pool of sleeping workers, kept it on one core: 0.81-0.85x).
constexpr int64_t kThreadedWork = int64_t(1) << 17;
constexpr int kLanes = 16;  // partial sums per row of W v: one AVX-512 vector of floats, the order at any width

template <typename S>
using Compute = typename Element<S>::Compute;

// y[j] = Σ_a Σ_r W[a][i + j][r] x[a][r] for j < NR, each in kLanes partial sums (lane r % kLanes of each block
// of inner values) added up pairwise at the end: the same order for any NR and any vector width.
template <typename S, int NR>
GANFAST_INLINE void dot_rows(const S* weight, const S* x, int64_t outer, int64_t rows, int64_t inner, int64_t i,
                             Compute<S>* y) {
  using E = Element<S>;
  using T = Compute<S>;
  T part[NR][kLanes] = {};
  for (int64_t a = 0; a < outer; ++a) {
    const S* w = weight + (a * rows + i) * inner;
    const S* xa = x + a * inner;
    int64_t r = 0;
    for (; r + kLanes <= inner; r += kLanes)
      for (int k = 0; k < kLanes; ++k) {
        const T xk = E::load(xa, r + k);
        for (int j = 0; j < NR; ++j) part[j][k] += E::load(w + j * inner, r + k) * xk;
      }
    for (int k = 0; k < kLanes; ++k) {  // the last, partial block: lanes past the end add nothing
      const bool in = r + k < inner;
      const T xk = in ? E::load(xa, r + k) : T(0);
      for (int j = 0; j < NR; ++j) part[j][k] += (in ? E::load(w + j * inner, r + k) : T(0)) * xk;
    }
  }
  for (int j = 0; j < NR; ++j) {
    for (int half = kLanes / 2; half > 0; half /= 2)
      for (int k = 0; k < half; ++k) part[j][k] += part[j][k + half];
    y[j] = part[j][0];
  }
}

// Rows [begin, end) of y = W x, four rows at a time (one load of x serves four rows).
template <typename S>
GANFAST_INLINE void mat_vec_rows_impl(const S* weight, const S* x, Compute<S>* y, int64_t outer, int64_t rows,
                                      int64_t inner, int64_t begin, int64_t end) {
  int64_t i = begin;
  for (; i + 4 <= end; i += 4) dot_rows<S, 4>(weight, x, outer, rows, inner, i, y + i);
  for (; i < end; ++i) dot_rows<S, 1>(weight, x, outer, rows, inner, i, y + i);
}

// Columns [begin, end) of y = Wᵀ x: a sweep over the rows, four at a time (a quarter of the loads and stores of
// y), vectorised along the columns; column c sums its rows in the same order whatever the column range.
template <typename S>
GANFAST_INLINE void mat_t_vec_cols_impl(const S* weight, const S* x, Compute<S>* __restrict y, int64_t rows,
                                        int64_t inner, int64_t begin, int64_t end) {
  using E = Element<S>;
  using T = Compute<S>;
  std::fill(y + begin, y + end, T(0));
  for (int64_t a = begin / inner; a * inner < end; ++a) {
    const int64_t r0 = std::max(begin - a * inner, int64_t(0)), r1 = std::min(end - a * inner, inner);
    T* __restrict ya = y + a * inner;
    const S* block = weight + a * rows * inner;
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
      const S *w0 = block + i * inner, *w1 = w0 + inner, *w2 = w1 + inner, *w3 = w2 + inner;
      const T x0 = E::load(x, i), x1 = E::load(x, i + 1), x2 = E::load(x, i + 2), x3 = E::load(x, i + 3);
      for (int64_t r = r0; r < r1; ++r)
        ya[r] += (E::load(w0, r) * x0 + E::load(w1, r) * x1) + (E::load(w2, r) * x2 + E::load(w3, r) * x3);
    }
    for (; i < rows; ++i) {
      const S* row = block + i * inner;
      const T xi = E::load(x, i);
      for (int64_t r = r0; r < r1; ++r) ya[r] += E::load(row, r) * xi;
    }
  }
}

// The hot loops, with wide-vector clones for float and double; the half types use the baseline build.
template <typename S>
void mat_vec_rows(const S* w, const S* x, float* y, int64_t outer, int64_t rows, int64_t inner, int64_t begin,
                  int64_t end) {
  mat_vec_rows_impl(w, x, y, outer, rows, inner, begin, end);
}
GANFAST_CPU_CLONES void mat_vec_rows(const float* w, const float* x, float* y, int64_t outer, int64_t rows,
                                     int64_t inner, int64_t begin, int64_t end) {
  mat_vec_rows_impl(w, x, y, outer, rows, inner, begin, end);
}
GANFAST_CPU_CLONES void mat_vec_rows(const double* w, const double* x, double* y, int64_t outer, int64_t rows,
                                     int64_t inner, int64_t begin, int64_t end) {
  mat_vec_rows_impl(w, x, y, outer, rows, inner, begin, end);
}
template <typename S>
void mat_t_vec_cols(const S* w, const S* x, float* y, int64_t rows, int64_t inner, int64_t begin, int64_t end) {
  mat_t_vec_cols_impl(w, x, y, rows, inner, begin, end);
}
GANFAST_CPU_CLONES void mat_t_vec_cols(const float* w, const float* x, float* y, int64_t rows, int64_t inner,
                                       int64_t begin, int64_t end) {
  mat_t_vec_cols_impl(w, x, y, rows, inner, begin, end);
}
GANFAST_CPU_CLONES void mat_t_vec_cols(const double* w, const double* x, double* y, int64_t rows, int64_t inner,
                                       int64_t begin, int64_t end) {
  mat_t_vec_cols_impl(w, x, y, rows, inner, begin, end);
}

template <typename S>
struct SNWeight {
  using E = Element<S>;
  using T = Compute<S>;
  const S* weight;
  S* u;
  S* v;
  int64_t outer, rows, inner, cols;
  bool threaded;  // split each mat-vec over threads (false when the caller runs weights on several threads)

  SNWeight(const SNMatrix& m, bool threaded)
      : weight(reinterpret_cast<const S*>(m.weight)), u(reinterpret_cast<S*>(m.u)), v(reinterpret_cast<S*>(m.v)),
        outer(m.outer), rows(m.rows), inner(m.inner), cols(m.outer * m.inner), threaded(threaded) {}

  int64_t grain(int64_t n) const {
    return threaded && rows * cols >= kThreadedWork ? std::max<int64_t>(1, kThreadedWork / (rows * cols / n)) : n;
  }

  // y = W x (rows values), split in whole groups of four rows: a row summed in a group of four and one summed
  // alone may round differently, so every split must group the rows as the one-thread pass does.
  void mat_vec(const S* x, T* y) const {
    const int64_t groups = (rows + 3) / 4;
    parallel_for(groups, grain(groups), [&](int64_t begin, int64_t end) {
      mat_vec_rows(weight, x, y, outer, rows, inner, 4 * begin, std::min(rows, 4 * end));
    });
  }

  // y = Wᵀ x (cols values)
  void mat_t_vec(const S* x, T* y) const {
    parallel_for(cols, grain(cols), [&](int64_t begin, int64_t end) {
      mat_t_vec_cols(weight, x, y, rows, inner, begin, end);
    });
  }

  // dst = t / max(‖t‖, eps); returns Σ dst·t (σ when t = W v and dst is the new u).
  static double normalize(const T* t, int64_t n, double eps, S* dst) {
    double squares = 0;
    for (int64_t k = 0; k < n; ++k) squares += double(t[k]) * double(t[k]);
    const T denom = std::max(T(std::sqrt(squares)), T(eps));
    double dot = 0;
    for (int64_t k = 0; k < n; ++k) {
      E::store(dst, k, t[k] / denom);
      dot += double(E::load(dst, k)) * double(t[k]);
    }
    return dot;
  }

  static double dot(const S* a, const T* b, int64_t n) {
    double sum = 0;
    for (int64_t k = 0; k < n; ++k) sum += double(E::load(a, k)) * double(b[k]);
    return sum;
  }

  void run(const SNMatrix& m, S* out) const {
    std::vector<T> t(std::max(rows, cols));
    double sigma = 0;
    bool sigma_known = false;  // the last step was u ← normalize(W v): σ = uᵀ(W v) came with it
    for (int64_t it = 0; it < m.n_iters; ++it) {
      if (m.u_first) {
        mat_vec(v, t.data());
        normalize(t.data(), rows, m.eps, u);
        mat_t_vec(u, t.data());
        normalize(t.data(), cols, m.eps, v);
      } else {
        mat_t_vec(u, t.data());
        normalize(t.data(), cols, m.eps, v);
        mat_vec(v, t.data());
        sigma = normalize(t.data(), rows, m.eps, u);
        sigma_known = true;
      }
    }
    if (!sigma_known) {
      mat_vec(v, t.data());
      sigma = dot(u, t.data(), rows);
    }
    E::store(out, 0, T(sigma));
    std::copy(u, u + rows, out + 1);
    std::copy(v, v + cols, out + 1 + rows);
  }
};

// Multiply-adds of one weight's call: one pass over W per mat-vec.
int64_t work_of(const SNMatrix& m) {
  const int64_t passes = 2 * m.n_iters + (m.u_first || m.n_iters == 0 ? 1 : 0);
  return passes * m.outer * m.rows * m.inner;
}

template <typename S>
void spectral_norm_typed(const SpectralNormArgs& a) {
  auto run = [&](int64_t k, bool threaded) {
    const SNMatrix& m = a.matrices[k];
    SNWeight<S>(m, threaded).run(m, static_cast<S*>(a.out) + m.out_offset);
  };
  std::vector<int64_t> before(a.count + 1, 0);  // work of the weights before weight k
  for (int64_t k = 0; k < a.count; ++k) before[k + 1] = before[k] + work_of(a.matrices[k]);
  const int64_t total = before[a.count];
  const int64_t workers = std::min<int64_t>({usable_cores(), a.count, total / kThreadedWork});
  if (workers <= 1) {
    for (int64_t k = 0; k < a.count; ++k) run(k, true);
    return;
  }
  // Worker w runs the weights whose work's midpoint falls in the w-th of `workers` equal shares.
  parallel_for(workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = 0; k < a.count; ++k) {
      const int64_t share = (before[k] + before[k + 1]) / 2 * workers / std::max<int64_t>(total, 1);
      if (share >= begin && share < end) run(k, false);
    }
  });
}

}  // namespace

void spectral_norm_cpu(const SpectralNormArgs& a) {
  if (a.count < 0 || (a.count > 0 && (!a.matrices || !a.out))) fail("spectral_norm: bad argument block");
  for (int64_t k = 0; k < a.count; ++k) {
    const SNMatrix& m = a.matrices[k];
    if (!m.weight || !m.u || !m.v || m.outer < 1 || m.rows < 1 || m.inner < 1 || m.n_iters < 0 || m.out_offset < 0)
      fail("spectral_norm: bad descriptor for weight " + std::to_string(k));
  }
  dispatch_dtype("spectral_norm", a.dtype, [&](auto tag) { spectral_norm_typed<typename decltype(tag)::type>(a); });
}

}  // namespace ganfast
