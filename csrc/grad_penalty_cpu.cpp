// grad_penalty on the CPU: per-sample sums of squares over chunks in parallel (float lanes per block, blocks
// summed in double), then the per-sample terms; the backward is one parallel elementwise scale.
#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "grad_penalty.h"
#include "parallel.h"

namespace ganfast {

void check_grad_penalty_args(const GradPenaltyArgs& a, bool backward) {
  if (a.batch < 0 || a.per_sample < 0) fail("grad_penalty: bad sizes");
  if (a.batch * a.per_sample > 0 && !a.g) fail("grad_penalty: g must not be null");
  if (!backward && a.batch > 0 && (!a.term || !a.norm)) fail("grad_penalty: term and norm must not be null");
  if (backward && a.batch * a.per_sample > 0 && (!a.out || !a.dterm || !a.dnorm || !a.norm_in))
    fail("grad_penalty: the backward needs out, dterm, dnorm and norm");
}

namespace {

constexpr int64_t kChunk = 1 << 16;  // elements per parallel task of the reduction
constexpr int kLanes = 16;           // independent accumulators, so the compiler can vectorise

// Σ v² over [begin, end) of one sample: blocks of kLanes-wide accumulation in T, block sums in double.
template <typename S>
double sum_squares(const S* row, int64_t begin, int64_t end) {
  using E = Element<S>;
  using T = typename E::Compute;
  double total = 0;
  int64_t i = begin;
  constexpr int64_t kBlock = 1024;
  for (; i + kBlock <= end; i += kBlock) {
    T lanes[kLanes] = {};
    for (int64_t j = 0; j < kBlock; j += kLanes)
      for (int k = 0; k < kLanes; ++k) {
        const T v = E::load(row, i + j + k);
        lanes[k] += v * v;
      }
    T block = 0;
    for (int k = 0; k < kLanes; ++k) block += lanes[k];
    total += double(block);
  }
  for (; i < end; ++i) {
    const double v = double(E::load(row, i));
    total += v * v;
  }
  return total;
}

template <typename S>
void fwd_typed(const GradPenaltyArgs& a) {
  using T = std::conditional_t<std::is_same<S, double>::value, double, float>;
  const S* g = static_cast<const S*>(a.g);
  const int64_t chunks = std::max<int64_t>(1, (a.per_sample + kChunk - 1) / kChunk);
  std::vector<double> partial(a.batch * chunks, 0.0);
  // at least ~2^17 elements per thread: below that, starting a thread costs more than it saves
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 17) / std::max<int64_t>(1, std::min(a.per_sample, kChunk)));
  parallel_for(a.batch * chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks, c = task % chunks;
      partial[task] = sum_squares(g + b * a.per_sample, c * kChunk, std::min(a.per_sample, (c + 1) * kChunk));
    }
  });
  T* term = static_cast<T*>(a.term);
  T* norm = static_cast<T*>(a.norm);
  for (int64_t b = 0; b < a.batch; ++b) {
    double s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += partial[b * chunks + c];
    norm[b] = T(std::sqrt(s));
    term[b] = penalty_term<T>(T(s), norm[b], T(a.center));
  }
}

template <typename S>
void bwd_typed(const GradPenaltyArgs& a) {
  using E = Element<S>;
  using T = typename E::Compute;
  const T* dterm = static_cast<const T*>(a.dterm);
  const T* dnorm = static_cast<const T*>(a.dnorm);
  const T* norm = static_cast<const T*>(a.norm_in);
  const S* g = static_cast<const S*>(a.g);
  S* out = static_cast<S*>(a.out);
  std::vector<T> coef(a.batch);
  for (int64_t b = 0; b < a.batch; ++b) coef[b] = penalty_coef<T>(dterm[b], dnorm[b], norm[b], T(a.center));
  const int64_t n = a.batch * a.per_sample;
  parallel_for(n, 1 << 17, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {  // walk sample by sample: a constant coefficient in the inner loop
      const int64_t b = i / a.per_sample;
      const int64_t stop = std::min(end, (b + 1) * a.per_sample);
      const T c = coef[b];
      for (; i < stop; ++i) E::store(out, i, E::load(g, i) * c);
    }
  });
}

}  // namespace

void grad_penalty_fwd_cpu(const GradPenaltyArgs& a) {
  check_grad_penalty_args(a, false);
  dispatch_dtype("grad_penalty", a.dtype, [&](auto tag) { fwd_typed<typename decltype(tag)::type>(a); });
}

void grad_penalty_bwd_cpu(const GradPenaltyArgs& a) {
  check_grad_penalty_args(a, true);
  if (a.batch * a.per_sample == 0) return;
  dispatch_dtype("grad_penalty", a.dtype, [&](auto tag) { bwd_typed<typename decltype(tag)::type>(a); });
}

}  // namespace ganfast
