"""upfirdn2d benchmarks: upsample2d / downsample2d / filter2d with StyleGAN2's [1,3,3,1] filter, ganfast vs the
eager reference vs torch.compile(reference), forward and forward+backward.

On a GPU: StyleGAN2 shapes at batch 32 (512 ch at 32 px, 256 ch at 64 px, 128 ch at 128 px) in float32,
bfloat16 and float16. On a CPU: one tiny shape, so that CI proves the suite runs (numbers there mean little;
the CPU auto order comes from the measurements quoted in ganfast/ops/upfirdn2d.py).
extra_info carries the bytes each call moves (input read + output written, and the same again backward),
for GB/s against the copy bandwidth (benchmarks/summarize.py).
"""
import pytest
import torch
from bench_support import DEVICE, ON_GPU, bench_copy, shape_id, sweep, synced, variants

from ganfast.ops import downsample2d, filter2d, setup_filter, upsample2d
from ganfast.reference.upfirdn2d import downsample2d as downsample2d_ref
from ganfast.reference.upfirdn2d import filter2d as filter2d_ref
from ganfast.reference.upfirdn2d import upsample2d as upsample2d_ref

SHAPES = sweep([(32, 512, 32, 32), (32, 256, 64, 64), (32, 128, 128, 128)] if ON_GPU else [(2, 16, 12, 12)])
DTYPES = sweep([torch.float32, torch.bfloat16, torch.float16] if ON_GPU else [torch.float32])
HELPERS = {
    "upsample2d": (upsample2d, upsample2d_ref),
    "downsample2d": (downsample2d, downsample2d_ref),
    "filter2d": (filter2d, filter2d_ref),
}
_compiled_refs = {name: torch.compile(ref) for name, (_, ref) in HELPERS.items()}


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_upfirdn2d_copy_bandwidth(benchmark, shape, dtype):
    """The floor's yardstick: copying the input (filtering moves at least that much, up to 4x for upsampling)."""
    bench_copy(benchmark, "upfirdn2d", shape, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("helper", list(HELPERS))
@pytest.mark.parametrize("variant", variants(["ganfast", "ref", "compiled_ref"]))
@pytest.mark.parametrize("pass_", ["fwd", "fwd_bwd"])
def test_upfirdn2d(benchmark, shape, dtype, helper, variant, pass_):
    ours, ref = HELPERS[helper]
    fn = {"ganfast": ours, "ref": ref, "compiled_ref": _compiled_refs[helper]}[variant]
    f = setup_filter([1, 3, 3, 1], device=DEVICE)
    x = torch.randn(shape, device=DEVICE, dtype=dtype, requires_grad=pass_ == "fwd_bwd")
    with torch.no_grad():  # correctness first: every variant must agree with the reference before it is timed
        expected = ref(x, f)
        torch.testing.assert_close(fn(x, f), expected, rtol=2e-2, atol=2e-2)
    moved = (x.numel() + expected.numel()) * x.element_size()
    if pass_ == "fwd":
        call = lambda: fn(x, f)  # noqa: E731
    else:
        dy = torch.randn_like(expected)
        call = lambda: torch.autograd.grad(fn(x, f), x, dy)  # noqa: E731
        moved *= 2  # backward: read dy, write dx
    benchmark.group = f"{helper} {pass_} {shape_id(shape)} {dtype}"
    benchmark.extra_info.update(bytes=moved, variant=variant)
    benchmark(synced(call))
