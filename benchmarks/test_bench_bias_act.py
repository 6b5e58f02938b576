"""bias_act benchmarks: ganfast vs the eager reference vs torch.compile(reference), and vs NVlabs' one-clamp
composition (the fastest eager code a user would write) eager and compiled; forward and forward+backward.

On a GPU: StyleGAN2 shapes 32×512×64×64 and 32×128×256×256 in float32, bfloat16 and float16.
On a CPU: one tiny shape, so that CI proves the suite runs (numbers there mean little).
extra_info carries the bytes each call moves, for GB/s against the copy benchmark (benchmarks/summarize.py).
"""
import pytest
import torch
from bench_support import DEVICE, ON_GPU, bench_copy, nvlabs_bias_act, shape_id, sweep, synced, variants

from ganfast.ops import bias_act
from ganfast.reference import bias_act as bias_act_ref

SHAPES = [(32, 512, 64, 64), (32, 128, 256, 256)] if ON_GPU else [(2, 16, 8, 8)]
DTYPES = sweep([torch.float32, torch.bfloat16, torch.float16] if ON_GPU else [torch.float32])
KWARGS = dict(act="lrelu", clamp=256.0)  # the StyleGAN2 synthesis-layer case
_compiled_ref = torch.compile(bias_act_ref)
VARIANTS = variants({"ganfast": bias_act, "ref": bias_act_ref, "compiled_ref": _compiled_ref, "nvlabs": nvlabs_bias_act,
                     "compiled_nvlabs": torch.compile(nvlabs_bias_act)})


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_copy_bandwidth(benchmark, shape, dtype):
    """The floor: an elementwise pass can at best move its bytes at copy speed."""
    bench_copy(benchmark, "bias_act", shape, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("pass_", ["fwd", "fwd_bwd"])
def test_bias_act(benchmark, shape, dtype, variant, pass_):
    x = torch.randn(shape, device=DEVICE, dtype=dtype, requires_grad=pass_ == "fwd_bwd")
    b = torch.randn(shape[1], device=DEVICE, dtype=dtype, requires_grad=pass_ == "fwd_bwd")
    fn = VARIANTS[variant]
    elem = x.element_size()
    if pass_ == "fwd":
        call = lambda: fn(x, b, **KWARGS)  # noqa: E731
        moved = 2 * x.numel() * elem       # read x, write y
    else:
        dy = torch.randn_like(x)
        call = lambda: torch.autograd.grad(fn(x, b, **KWARGS), (x, b), dy)  # noqa: E731
        moved = 6 * x.numel() * elem       # fwd: x→y; bwd: read dy, x, y, write dx; then dx→db (read)
    # correctness first: every variant must agree with the reference before it is timed
    with torch.no_grad():
        torch.testing.assert_close(fn(x, b, **KWARGS), bias_act_ref(x, b, **KWARGS), rtol=2e-2, atol=2e-2)
    benchmark.group = f"bias_act {pass_} {shape_id(shape)} {dtype}"
    benchmark.extra_info.update(bytes=moved, variant=variant)
    benchmark(synced(call))
