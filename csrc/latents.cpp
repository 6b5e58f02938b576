// NumPy's legacy normal draws (RandomState.randn), reproduced bit for bit:
//   seeding   MT19937 init_genrand(seed): key[0] = seed, key[i] = 1812433253·(key[i-1] ^ key[i-1] >> 30) + i
//   uniform   a = next() >> 5, b = next() >> 6, (a·2^26 + b) / 2^53        (53 random bits in [0, 1))
//   gaussian  Marsaglia's polar method: x1, x2 = 2·uniform − 1 until 0 < r2 = x1² + x2² < 1, f = √(−2 ln r2 / r2);
//             returns f·x2 and keeps f·x1 for the next draw
// and NumPy's legacy integers (RandomState([seed, stream]).randint(high)), also bit for bit:
//   seeding   init_by_array(key): init_genrand(19650218), then max(624, len) mixing steps with the key words
//             (multiplier 1664525) and 623 more (multiplier 1566083941), key[0] = 2^31
//   randint   r = high − 1, mask = 2^k − 1 the smallest ≥ r: draw (next() & mask) until ≤ r, 32-bit draws when
//             r < 2^32 − 1 (r = 2^32 − 1: one draw as it is), 64-bit ones (next() << 32 | next()) above; r = 0
//             draws nothing
// The file is compiled with -ffp-contract=off (CMakeLists.txt): a fused multiply-add in r2 would change bits.
// log is the C library's, as NumPy's.
#include "latents.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "common.h"
#include "parallel.h"

namespace ganfast {
namespace {

class MT19937 {
 public:
  explicit MT19937(uint32_t seed) {
    key_[0] = seed;
    for (int i = 1; i < kN; ++i) key_[i] = 1812433253u * (key_[i - 1] ^ (key_[i - 1] >> 30)) + uint32_t(i);
    pos_ = kN;
  }

  // init_by_array: the seeding of RandomState(array of 32-bit words).
  MT19937(const uint32_t* init_key, int key_length) : MT19937(19650218u) {
    int i = 1, j = 0;
    for (int k = std::max(kN, key_length); k > 0; --k) {
      key_[i] = (key_[i] ^ ((key_[i - 1] ^ (key_[i - 1] >> 30)) * 1664525u)) + init_key[j] + uint32_t(j);
      if (++i >= kN) key_[0] = key_[kN - 1], i = 1;
      if (++j >= key_length) j = 0;
    }
    for (int k = kN - 1; k > 0; --k) {
      key_[i] = (key_[i] ^ ((key_[i - 1] ^ (key_[i - 1] >> 30)) * 1566083941u)) - uint32_t(i);
      if (++i >= kN) key_[0] = key_[kN - 1], i = 1;
    }
    key_[0] = 0x80000000u;
  }

  uint32_t next() {
    if (pos_ == kN) refill();
    uint32_t y = key_[pos_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
  }

  double uniform() {
    const int32_t a = int32_t(next() >> 5), b = int32_t(next() >> 6);
    return (a * 67108864.0 + b) / 9007199254740992.0;
  }

 private:
  static constexpr int kN = 624, kM = 397;

  static uint32_t twist(uint32_t upper, uint32_t lower, uint32_t far) {
    const uint32_t y = (upper & 0x80000000u) | (lower & 0x7fffffffu);
    return far ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
  }

  void refill() {
    int i = 0;
    for (; i < kN - kM; ++i) key_[i] = twist(key_[i], key_[i + 1], key_[i + kM]);
    for (; i < kN - 1; ++i) key_[i] = twist(key_[i], key_[i + 1], key_[i + kM - kN]);
    key_[kN - 1] = twist(key_[kN - 1], key_[0], key_[kM - 1]);
    pos_ = 0;
  }

  uint32_t key_[kN];
  int pos_;
};

// One row: z_dim normal draws of a freshly seeded generator, in NumPy's order.
template <typename T>
void fill_row(uint32_t seed, int64_t z_dim, T* out) {
  MT19937 rng(seed);
  for (int64_t k = 0; k < z_dim; k += 2) {
    double x1, x2, r2;
    do {
      x1 = 2.0 * rng.uniform() - 1.0;
      x2 = 2.0 * rng.uniform() - 1.0;
      r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1.0 || r2 == 0.0);
    const double f = std::sqrt(-2.0 * std::log(r2) / r2);
    out[k] = T(f * x2);
    if (k + 1 < z_dim) out[k + 1] = T(f * x1);
  }
}

// randint(high) of the legacy generator: an integer in [0, high), by masked rejection.
int64_t randint(MT19937& rng, int64_t high) {
  const uint64_t r = uint64_t(high) - 1;
  if (r == 0) return 0;
  uint64_t mask = r;
  for (int shift = 1; shift < 64; shift *= 2) mask |= mask >> shift;
  if (r == 0xffffffffu) return int64_t(rng.next());
  uint64_t v;
  if (r < 0xffffffffu) {
    do v = rng.next() & mask; while (v > r);
  } else {
    do {
      const uint64_t high_word = rng.next();  // drawn first
      v = ((high_word << 32) | rng.next()) & mask;
    } while (v > r);
  }
  return int64_t(v);
}

void check_seeds(const char* op, const int64_t* seeds, int64_t count) {
  for (int64_t j = 0; j < count; ++j)
    if (seeds[j] < 0 || seeds[j] > int64_t(0xffffffff))
      fail(std::string(op) + ": seed " + std::to_string(seeds[j]) + " is outside [0, 2**32 - 1]");
}

}  // namespace

void seed_randint_cpu(const int64_t* seeds, int64_t count, int64_t stream, int64_t high, int64_t* out) {
  if (count < 0 || (count > 0 && (!seeds || !out))) fail("seed_randint: bad arguments");
  if (high < 1) fail("seed_randint: high must be >= 1, got " + std::to_string(high));
  if (stream < 0 || stream > int64_t(0xffffffff))
    fail("seed_randint: stream " + std::to_string(stream) + " is outside [0, 2**32 - 1]");
  check_seeds("seed_randint", seeds, count);
  // seeding updates about 1,900 state words per seed (init_genrand and init_by_array), the first refill 624 more
  parallel_for(count, 64, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const uint32_t key[2] = {uint32_t(seeds[j]), uint32_t(stream)};
      MT19937 rng(key, 2);
      out[j] = randint(rng, high);
    }
  });
}

void seed_latents_cpu(const int64_t* seeds, int64_t count, int64_t z_dim, int dtype, void* out) {
  if (count < 0 || z_dim < 0 || (count > 0 && z_dim > 0 && (!seeds || !out))) fail("seed_latents: bad arguments");
  check_seeds("seed_latents", seeds, count);
  dispatch_dtype("seed_latents", dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    if constexpr (!std::is_floating_point_v<S>) {
      fail("seed_latents: dtype must be float32 or float64");
    } else {
      if (z_dim == 0) return;
      // about 2.6 generator outputs and one log per value, plus 1248 outputs of seeding and refilling per seed
      parallel_for(count, std::max<int64_t>(1, 4096 / (z_dim + 512)), [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) fill_row(uint32_t(seeds[j]), z_dim, static_cast<S*>(out) + j * z_dim);
      });
    }
  });
}

}  // namespace ganfast
