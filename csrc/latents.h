// Per-seed latent vectors, bit-exact with NumPy's legacy generator: row j of the output is
// np.random.RandomState(seeds[j]).randn(z_dim) (the convention of NVlabs' generate.py), as float64 or rounded to
// float32; and per-seed integers of a second stream (the class draws of ganfast/sampling.py's seed_classes).
// No tensors involved: the seeds and the output are host arrays. The Python side is ganfast/sampling.py
// (seed_latents), which keeps NumPy itself as the fallback when the extension is missing.
#pragma once
#include <cstdint>

namespace ganfast {

// seeds: `count` values in [0, 2^32); out: count × z_dim values of `dtype` (kFloat32 or kFloat64), row-major.
// Rows are computed in parallel.
void seed_latents_cpu(const int64_t* seeds, int64_t count, int64_t z_dim, int dtype, void* out);

// out[j] = np.random.RandomState([seeds[j], stream]).randint(high): seeds and stream in [0, 2^32), high >= 1.
// Computed in parallel.
void seed_randint_cpu(const int64_t* seeds, int64_t count, int64_t stream, int64_t high, int64_t* out);

}  // namespace ganfast
