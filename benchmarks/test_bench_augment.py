"""Augmentation benchmarks: StyleGAN2-ADA's bgc pipeline forward + backward (the D input's gradient, as in the
G step and R1) at p = 1, ganfast (the fused geometric pass ganfast.ops.affine_resample) vs the reference
composition (affine_grid/grid_sample and the reference upfirdn2d) vs torch.compile(reference); and the colour
stage (ganfast.ops.color_matrix vs the reference's baddbmm) against a copy of the images, the floor of any
per-pixel pass.

On a GPU: batch 32 at 256 px, RGB. On a CPU: a tiny shape so that CI proves the suite runs; a realistic CPU
figure is measured with ``python benchmarks/test_bench_augment.py`` (batch 32, 256 px, one of each variant).
Every variant applies the same drawn parameters.
"""
import time

import pytest
import torch
from bench_support import DEVICE, ON_GPU, bench_copy, shape_id, synced

from ganfast.augment import AugmentPipe
from ganfast.ops import color_matrix
from ganfast.reference import augment as ref
from ganfast.reference.color_matrix import color_matrix as color_matrix_ref

SHAPES = [(32, 3, 256, 256)] if ON_GPU else [(2, 3, 16, 16)]
_compiled_apply = torch.compile(ref.apply)


def _setup(shape, seed=0):
    torch.manual_seed(seed)
    pipe = AugmentPipe("bgc", p=1.0)
    params = pipe.sample_params(shape[0], shape[1], shape[2], shape[3], DEVICE)
    x = torch.randn(shape, device=DEVICE, requires_grad=True)
    return pipe, params, x


def variants(pipe, params):
    return {"ganfast": lambda x: pipe.apply(x, params), "ref": lambda x: ref.apply(x, params),
            "compiled_ref": lambda x: _compiled_apply(x, params)}


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("variant", ["ganfast", "ref", "compiled_ref"])
def test_bgc_fwd_bwd(benchmark, shape, variant):
    pipe, params, x = _setup(shape)
    fn = variants(pipe, params)[variant]
    with torch.no_grad():  # every variant agrees with the reference before it is timed
        expected = ref.apply(x, params)
        torch.testing.assert_close(fn(x), expected, rtol=1e-4, atol=1e-4)
    dy = torch.randn_like(expected)
    benchmark.group = f"augment bgc fwd_bwd {shape_id(shape)}"
    benchmark.extra_info.update(variant=variant)
    benchmark(synced(lambda: torch.autograd.grad(fn(x), x, dy)))


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_color_copy_floor(benchmark, shape):
    bench_copy(benchmark, "augment color", shape, torch.float32)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("variant", ["ganfast", "ref"])
def test_color(benchmark, shape, variant):
    """The colour stage alone: ganfast.ops.color_matrix vs the reference's baddbmm (same bytes as the copy)."""
    _, params, x = _setup(shape)
    x = x.detach()
    color_pass = color_matrix if variant == "ganfast" else color_matrix_ref
    benchmark.group = f"augment color copy {shape_id(shape)} torch.float32"
    benchmark.extra_info.update(bytes=2 * x.numel() * x.element_size(), variant=variant)
    benchmark(synced(lambda: ref.color(x, params.C, color_pass)))


def _time(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if ON_GPU:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


if __name__ == "__main__":  # one realistic figure per variant: batch 32, 256 px, bgc at p = 1, forward + backward
    import sys
    shape, repeats = (32, 3, 256, 256), int(sys.argv[1]) if len(sys.argv) > 1 else 3
    pipe, params, x = _setup(shape)
    dy = torch.randn(shape, device=DEVICE)
    print(f"bgc forward+backward, {shape_id(shape)}, {DEVICE}, {torch.get_num_threads()} threads, "
          f"mean of {repeats} after one warm-up:")
    for name, fn in variants(pipe, params).items():
        seconds = _time(lambda: torch.autograd.grad(fn(x), x, dy), repeats)  # noqa: B023
        print(f"  {name:13s} {seconds * 1000:9.1f} ms")
    out = torch.empty_like(x)
    xd = x.detach()
    print(f"colour stage: ganfast {_time(lambda: ref.color(xd, params.C, color_matrix), 10) * 1000:.2f} ms, "
          f"baddbmm {_time(lambda: ref.color(xd, params.C), 10) * 1000:.2f} ms, "
          f"copy {_time(lambda: out.copy_(xd), 10) * 1000:.2f} ms")
