// bias_act on the CPU: one pass over memory, split over threads, half types computed in float.
#include <vector>

#include "bias_act.h"
#include "parallel.h"
#include "simd.h"

namespace ganfast {

void check_bias_act_args(const BiasActArgs& a) {
  if (a.n < 0 || a.channels < 1 || a.stride_c < 1) fail("bias_act: bad sizes");
  if (!a.out || !a.x) fail("bias_act: out and x must not be null");
  if (a.order >= 1 && !a.g) fail("bias_act: orders 1 and 2 need g");
  if (a.order == 2 && !a.h) fail("bias_act: order 2 needs h");
  if (a.order >= 1 && a.clamp >= 0 && !a.yref) fail("bias_act: a clamped gradient needs yref");
}

namespace {

// Elements [begin, end): the hot loop, with wide-vector clones (simd.h). ROW: element i's bias is
// bias[i - begin] (layouts whose channel stride is small, channels_last: 1, where a constant-bias segment would hold
// only a few elements); else every element's bias is bias[0]. MASKED: a clamped gradient (reads yref). Both are
// template flags so the loop has no runtime branch.
template <typename S, int ACT, int ORDER, bool MASKED, bool ROW>
GANFAST_CPU_CLONES void bias_act_loop(const TypedBiasActArgs<S, typename Element<S>::Compute>& p, int64_t begin,
                                      int64_t end, const typename Element<S>::Compute* __restrict bias) {
  using E = Element<S>;
  using T = typename E::Compute;
  // locals, so that the stores to out cannot alias the scalars and inputs (the loop vectorises without checks)
  S* __restrict out = p.out;
  const S *__restrict x = p.x, *__restrict g = p.g, *__restrict h = p.h, *__restrict yref = p.yref;
  const T alpha = p.alpha, gain = p.gain, clamp = p.clamp, shared_bias = ROW ? T(0) : bias[0];
  for (int64_t i = begin; i < end; ++i) {
    const T gi = ORDER >= 1 ? E::load(g, i) : T(0);
    const T hi = ORDER == 2 ? E::load(h, i) : T(0);
    const T yi = MASKED ? E::load(yref, i) : T(0);
    const T bi = ROW ? bias[i - begin] : shared_bias;
    E::store(out, i, bias_act_element<ACT, ORDER, T>(E::load(x, i), bi, gi, hi, yi, alpha, gain, clamp));
  }
}

// Segments shorter than this take the bias-row path (when its period fits kMaxPeriod).
constexpr int64_t kMinSegment = 64;
constexpr int64_t kMaxPeriod = int64_t(1) << 16;

template <typename S, int ACT, int ORDER, bool MASKED>
void bias_act_typed(const BiasActArgs& a) {
  using E = Element<S>;
  using T = typename E::Compute;
  const TypedBiasActArgs<S, T> p(a);
  const int64_t sc = p.b ? a.stride_c : a.n;  // without a bias the whole tensor is one segment

  // A short segment (channels_last: one element): the bias pattern repeats every period = sc * channels
  // elements, so lay one period out as a row and walk the tensor period by period.
  if (p.b && sc < kMinSegment && sc * a.channels <= kMaxPeriod) {
    const int64_t period = sc * a.channels;
    std::vector<T> row(period);
    for (int64_t j = 0; j < period; ++j) row[j] = E::load(p.b, j / sc);
    parallel_for(a.n, 1 << 15, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {
        const int64_t offset = i % period, period_end = std::min(end, i - offset + period);
        bias_act_loop<S, ACT, ORDER, MASKED, true>(p, i, period_end, row.data() + offset);
        i = period_end;
      }
    });
    return;
  }

  // Elements [s*sc, (s+1)*sc) share channel s % channels: walk segment by segment so that the
  // inner loop has a constant bias and no index arithmetic.
  parallel_for(a.n, 1 << 15, [&](int64_t begin, int64_t end) {
    int64_t seg = begin / sc;
    int64_t channel = p.b ? seg % a.channels : 0;
    for (int64_t i = begin; i < end; ++seg) {
      const int64_t seg_end = std::min(end, (seg + 1) * sc);
      const T bias = p.b ? E::load(p.b, channel) : T(-0.0);  // -0 keeps x's sign of zero
      bias_act_loop<S, ACT, ORDER, MASKED, false>(p, i, seg_end, &bias);
      i = seg_end;
      if (p.b && ++channel == a.channels) channel = 0;
    }
  });
}

}  // namespace

void bias_act_cpu(const BiasActArgs& a) {
  check_bias_act_args(a);
  dispatch_bias_act<Half, BFloat16>(a, [&](auto type, auto order, auto act) {
    using S = typename decltype(type)::type;
    constexpr int kAct = decltype(act)::value, kOrder = decltype(order)::value;
    if (kOrder >= 1 && a.clamp >= 0)
      bias_act_typed<S, kAct, kOrder, true>(a);
    else
      bias_act_typed<S, kAct, kOrder, false>(a);
  });
}

}  // namespace ganfast
