"""Sampling throughput (images/s) of the StyleGAN2 generator: ganfast.sample (on a GPU with and without its CUDA
graph) vs a generate.py-style loop (one seed per forward, reference ops) vs a batched loop on the reference ops;
plus writing npz and PNG files.

On a GPU: 64² and 256² generators in StyleGAN2's config-F channel widths (z/w 512), batch 64, float16 layers.
On a CPU: one tiny generator, so that CI proves the suite runs. extra_info["images"] gives images per call.
"""
import pytest
import torch
from bench_support import COMPACT, DEVICE, ON_GPU, synced

import ganfast
from ganfast.models import StyleGAN2Generator

RESOLUTIONS = [64, 256] if ON_GPU else [16]
N_IMAGES = 256 if ON_GPU else 8
BATCH = 64 if ON_GPU else 4


def _generator(resolution):
    torch.manual_seed(0)
    if ON_GPU:
        G = StyleGAN2Generator(z_dim=512, w_dim=512, img_resolution=resolution, img_channels=3,
                               channel_base=32768 if resolution > 64 else 16384, channel_max=512, mapping_layers=8,
                               num_fp16_res=4, conv_clamp=256)
    else:
        G = StyleGAN2Generator(img_resolution=resolution)
    return G.to(DEVICE)


def _drain(iterator):
    return sum(len(batch.seeds) for batch in iterator)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("variant", ["ganfast"] + ["ganfast_no_cuda_graph"] * ON_GPU + ["batched_ref"]
                         + ["one_seed_per_forward_ref"] * (not COMPACT))
def test_sample_throughput(benchmark, resolution, variant):
    G = _generator(resolution)
    seeds = range(N_IMAGES if variant != "one_seed_per_forward_ref" else N_IMAGES // 8)
    dtype = "fp16" if ON_GPU and variant.startswith("ganfast") else "fp32"
    batch = 1 if variant == "one_seed_per_forward_ref" else BATCH

    def run():
        if variant.startswith("ganfast"):
            return _drain(ganfast.sample(G, seeds, batch_size=batch, dtype=dtype,
                                         cuda_graph=False if variant == "ganfast_no_cuda_graph" else None))
        with ganfast.use_impl("ref"):
            return _drain(ganfast.sample(G, seeds, batch_size=batch, dtype=dtype))

    assert run() == len(seeds)
    benchmark.group = f"sample {resolution}px"
    benchmark.extra_info.update(images=len(seeds), variant=variant)
    benchmark(synced(run))


@pytest.mark.parametrize("fmt", ["npz", "png"])
def test_write_throughput(benchmark, tmp_path, fmt):
    G = _generator(RESOLUTIONS[0])
    runs = iter(range(10 ** 6))

    def run():  # a fresh directory per round: nothing is skipped
        return ganfast.write_samples(G, range(N_IMAGES), tmp_path / str(next(runs)), fmt=fmt, batch_size=BATCH,
                                     shard_size=BATCH, progress=False, dtype="fp16" if ON_GPU else "fp32").images

    benchmark.group = f"write {RESOLUTIONS[0]}px"
    benchmark.extra_info.update(images=N_IMAGES, variant=f"write_{fmt}")
    assert benchmark.pedantic(run, rounds=3 if ON_GPU else 1, iterations=1) == N_IMAGES
