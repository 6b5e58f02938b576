"""affine_resample benchmarks: StyleGAN2-ADA's geometric pass (reflect pad, 2× up, bilinear sampling, 2× down) at
the bgc pipeline's drawn matrices, forward and forward + backward (the D input's gradient), as

    fused         ganfast.ops.affine_resample (one pass, no full-size intermediate)
    four_step     the same stages as four ganfast ops: F.pad, upsample2d, affine_sample, downsample2d
    ref           the reference composition (ganfast.reference.augment.geometric)
    compiled_ref  torch.compile(reference)

On a GPU: batch 32 at 256 px, RGB. On a CPU: a tiny shape so that CI proves the suite runs; the realistic CPU
figures (these four for the pass alone and for the whole bgc pipeline) come from
``python benchmarks/test_bench_affine_resample.py [repeats]``.
"""
import os
import time

import pytest
import torch
import torch.nn.functional as F
from bench_support import DEVICE, ON_GPU, shape_id, synced, variants

from ganfast.augment import AugmentPipe
from ganfast.ops import affine_resample, affine_sample, color_matrix, downsample2d, upsample2d
from ganfast.reference import augment as ref

SHAPES = [(32, 3, 256, 256)] if ON_GPU else [(2, 3, 16, 16)]
_compiled_geometric = torch.compile(ref.geometric)
_compiled_apply = torch.compile(ref.apply)


def four_step_geometric(images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
    """The geometric pass as four ganfast ops with full-size intermediates (before the fused kernel)."""
    f = ref.geometric_filter(images.device)
    padding, theta, size = ref.geometric_plan(G_inv, images.shape[2], images.shape[3], f.numel())
    x = F.pad(images, list(padding), mode="reflect")
    x = upsample2d(x, f, up=2)
    x = affine_sample(x, theta, size)
    return downsample2d(x, f, down=2, padding=-(f.numel() // 4) * 2, flip_filter=True)


GEOMETRIC = {"fused": affine_resample, "four_step": four_step_geometric, "ref": ref.geometric,
             "compiled_ref": _compiled_geometric}


def _setup(shape, seed=0):
    torch.manual_seed(seed)
    params = AugmentPipe("bgc", p=1.0).sample_params(shape[0], shape[1], shape[2], shape[3], DEVICE)
    return params, torch.randn(shape, device=DEVICE, requires_grad=True)


def bgc_variants(params):
    """The bgc pipeline (geometric, then colour) with each geometric pass; the colour pass is ganfast's except for
    the reference compositions."""
    return {"fused": lambda x: ref.apply(x, params, affine_resample, color_matrix),
            "four_step": lambda x: ref.apply(x, params, four_step_geometric, color_matrix),
            "ref": lambda x: ref.apply(x, params),
            "compiled_ref": lambda x: _compiled_apply(x, params)}


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("variant", variants(list(GEOMETRIC)))
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_geometric(benchmark, shape, variant, mode):
    params, x = _setup(shape)
    fn = GEOMETRIC[variant]
    with torch.no_grad():  # every variant agrees with the reference before it is timed
        expected = ref.geometric(x, params.G_inv)
        torch.testing.assert_close(fn(x, params.G_inv), expected, rtol=1e-4, atol=1e-4)
    dy = torch.randn_like(expected)
    benchmark.group = f"affine_resample {mode} {shape_id(shape)}"
    benchmark.extra_info.update(variant=variant)
    if mode == "fwd":
        with torch.no_grad():
            benchmark(synced(lambda: fn(x, params.G_inv)))
    else:
        benchmark(synced(lambda: torch.autograd.grad(fn(x, params.G_inv), x, dy)))


def _timed_ms(fn, repeats: int) -> tuple[float, float]:
    """(median wall-clock ms, mean process CPU ms) per call after one warm-up (and compilation) call; on a shared
    CPU the CPU time, summed over this process's threads, is the steadier figure."""
    fn()
    times, cpu = [], time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if ON_GPU:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000, (time.process_time() - cpu) / repeats * 1000


if __name__ == "__main__":  # realistic figures: batch 32, 256 px, the bgc pipeline's matrices at p = 1
    import sys
    shape, repeats = (32, 3, 256, 256), int(sys.argv[1]) if len(sys.argv) > 1 else 5
    params, x = _setup(shape)
    dy = torch.randn(shape, device=DEVICE)
    print(f"{shape_id(shape)} float32 on {DEVICE}, {torch.get_num_threads()} torch threads, "
          f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f} at start; "
          f"per call after one warm-up: median wall ms of {repeats} (mean CPU ms)")
    for name, fn in GEOMETRIC.items():
        with torch.no_grad():
            forward = _timed_ms(lambda: fn(x, params.G_inv), repeats)  # noqa: B023
        both = _timed_ms(lambda: torch.autograd.grad(fn(x, params.G_inv), x, dy), repeats)  # noqa: B023
        print(f"  geometric {name:13s} forward {forward[0]:8.1f} ({forward[1]:8.1f})   "
              f"forward+backward {both[0]:8.1f} ({both[1]:8.1f})")
    for name, fn in bgc_variants(params).items():
        both = _timed_ms(lambda: torch.autograd.grad(fn(x), x, dy), repeats)  # noqa: B023
        print(f"  bgc       {name:13s} {'':30s}forward+backward {both[0]:8.1f} ({both[1]:8.1f})")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
