// Spectral normalization's power iteration on the CPU: the weights one after another; within a weight the
// mat-vecs are split over threads (rows for W v, columns for Wᵀ u), each output summed by one thread in a
// fixed order, so results do not depend on the thread count. Half types are computed in float.
#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.h"
#include "spectral_norm.h"

namespace ganfast {
namespace {

constexpr int64_t kGrain = 1 << 18;  // multiply-adds per thread below which a mat-vec stays on one thread

template <typename S>
struct SNWeight {
  using E = Element<S>;
  using T = typename E::Compute;
  const S* weight;
  S* u;
  S* v;
  int64_t outer, rows, inner, cols;

  explicit SNWeight(const SNMatrix& m)
      : weight(reinterpret_cast<const S*>(m.weight)), u(reinterpret_cast<S*>(m.u)), v(reinterpret_cast<S*>(m.v)),
        outer(m.outer), rows(m.rows), inner(m.inner), cols(m.outer * m.inner) {}

  // y = W x (rows values): one thread per row, eight partial sums so that the loop vectorises.
  void mat_vec(const S* x, T* y) const {
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T part[8] = {};
        for (int64_t a = 0; a < outer; ++a) {
          const S* row = weight + (a * rows + i) * inner;
          const S* xa = x + a * inner;
          int64_t r = 0;
          for (; r + 8 <= inner; r += 8)
            for (int k = 0; k < 8; ++k) part[k] += E::load(row, r + k) * E::load(xa, r + k);
          for (; r < inner; ++r) part[r % 8] += E::load(row, r) * E::load(xa, r);
        }
        y[i] = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
      }
    });
  }

  // y = Wᵀ x (cols values): each thread owns a range of columns and sweeps the rows over it, four rows at a time
  // (a quarter of the loads and stores of y).
  void mat_t_vec(const S* x, T* y) const {
    parallel_for(cols, std::max<int64_t>(1, kGrain / std::max<int64_t>(rows, 1)), [&](int64_t begin, int64_t end) {
      std::fill(y + begin, y + end, T(0));
      for (int64_t a = begin / inner; a * inner < end; ++a) {
        const int64_t r0 = std::max(begin - a * inner, int64_t(0)), r1 = std::min(end - a * inner, inner);
        T* ya = y + a * inner;
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

template <typename S>
void spectral_norm_typed(const SpectralNormArgs& a) {
  for (int64_t k = 0; k < a.count; ++k) {
    const SNMatrix& m = a.matrices[k];
    SNWeight<S>(m).run(m, static_cast<S*>(a.out) + m.out_offset);
  }
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
