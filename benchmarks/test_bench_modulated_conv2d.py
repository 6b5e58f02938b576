"""StyleGAN2 synthesis-layer benchmarks: modulated conv + noise + bias + lrelu + gain + clamp, forward and
forward+backward, ganfast vs the eager reference in both fused_modconv modes vs torch.compile(reference).

On a GPU: batch 32 at StyleGAN2's shapes (512 ch at 8/16/32 px, 256 ch at 64 px, 128 ch at 128 px, 64 ch at
256 px; output resolution), up=1 and up=2, in bfloat16, float16 and TF32 (float32 with TF32 allowed); weights
and styles float32 as in StyleGAN2-ADA. ganfast runs with auto and with each of its impls.
On a CPU: tiny shapes, so that CI proves the suite runs (numbers there mean little).
extra_info carries the convolution's flops (2·N·I·O·k²·pixels, ×3 for forward+backward) for TFLOP/s, and the
activation bytes moved by an ideal fused layer.
"""
import math

import pytest
import torch
from bench_support import COMPACT, DEVICE, ON_GPU, sweep, synced, variants

from ganfast.ops import modulated_conv2d_bias_act
from ganfast.reference import bias_act as bias_act_ref
from ganfast.reference import modulated_conv2d as modulated_conv2d_ref
from ganfast.reference import setup_filter

BATCH = 32 if ON_GPU else 2
SHAPES = [(512, 8), (512, 16), (512, 32), (256, 64), (128, 128), (64, 256)] if ON_GPU else [(8, 8)]
if ON_GPU and COMPACT:  # a small-resolution wide layer and a large-resolution narrow one
    SHAPES = SHAPES[1::3]
DTYPES = sweep({"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32} if ON_GPU else
              {"fp32": torch.float32})
LAYER = dict(padding=1, act="lrelu", gain=math.sqrt(2), clamp=256.0)


def _reference(fused_modconv):
    def layer(x, weight, styles, noise, bias, up, f):
        y = modulated_conv2d_ref(x, weight, styles, noise, up=up, padding=1, resample_filter=f,
                                 flip_weight=up == 1, fused_modconv=fused_modconv)
        return bias_act_ref(y, bias.to(y.dtype), act="lrelu", gain=math.sqrt(2), clamp=256.0)
    return layer


def _ganfast(impl):
    def layer(x, weight, styles, noise, bias, up, f):
        return modulated_conv2d_bias_act(x, weight, styles, noise, bias.to(x.dtype), up=up, resample_filter=f,
                                         flip_weight=up == 1, impl=impl, **LAYER)
    return layer


# "ref" is StyleGAN2-ADA's grouped-conv route (fused_modconv=True), "ref_nonfused" its scale-activations route
# (the one it trains with); torch.compile gets the non-fused route, whose one shared convolution it can fuse around.
VARIANTS = {"ganfast": _ganfast(None), "ref": _reference(True), "ref_nonfused": _reference(False),
            "compiled_ref": torch.compile(_reference(False))}
if ON_GPU:
    VARIANTS.update(ganfast_ext=_ganfast("ext"), ganfast_triton=_ganfast("triton"))
VARIANTS = variants(VARIANTS, drop=("ref_nonfused",))
# a fixed number of timed rounds keeps the suite within minutes (432 GPU cases in full, 64 compact)
ROUNDS = (10 if COMPACT else 20) if ON_GPU else 2


def _rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("channels,res", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("pass_", ["fwd", "fwd_bwd"])
def test_synthesis_layer(benchmark, channels, res, up, dtype_name, variant, pass_):
    dtype = DTYPES[dtype_name]
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = dtype_name == "tf32"
    grad = pass_ == "fwd_bwd"
    in_res = res // up
    x = torch.randn(BATCH, channels, in_res, in_res, device=DEVICE, dtype=dtype, requires_grad=grad)
    weight = torch.randn(channels, channels, 3, 3, device=DEVICE, requires_grad=grad)
    styles = (torch.randn(BATCH, channels, device=DEVICE) + 1).requires_grad_(grad)
    bias = torch.zeros(channels, device=DEVICE, requires_grad=grad)
    noise = torch.randn(BATCH, 1, res, res, device=DEVICE, dtype=dtype) * 0.1
    f = setup_filter([1, 3, 3, 1], device=DEVICE)
    fn = VARIANTS[variant]
    args = (x, weight, styles, noise, bias, up, f)
    flops = 2 * BATCH * channels * channels * 9 * in_res * in_res  # MACs per input pixel for up=2 too
    moved = (x.numel() + BATCH * channels * res * res) * x.element_size()  # read x, write y
    if grad:
        dy = torch.randn(BATCH, channels, res, res, device=DEVICE, dtype=dtype)
        call = lambda: torch.autograd.grad(fn(*args), (x, weight, styles, bias), dy)  # noqa: E731
        flops, moved = 3 * flops, 3 * moved
    else:
        call = lambda: fn(*args)  # noqa: E731
    # correctness first (this also compiles the torch.compile variants before timing)
    with torch.no_grad():
        want = _reference(True)(*(t.detach().double() if torch.is_tensor(t) and t.is_floating_point() else t
                                  for t in args))
        got = fn(*args)
    assert _rel_err(got, want) < (3e-2 if dtype != torch.float32 else 5e-3), variant
    benchmark.group = f"synthesis_layer {pass_} {BATCH}x{channels}x{res}px up{up} {dtype_name}"
    benchmark.extra_info.update(flops=flops, bytes=moved, variant=variant)
    benchmark.pedantic(synced(call), rounds=ROUNDS, warmup_rounds=1)
