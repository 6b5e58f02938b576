"""Benchmark setup: device, shapes, a timing wrapper that synchronises CUDA inside the timed call, and the plain
torch compositions that ganfast's kernels are compared with.

``GANFAST_BENCH=compact`` (benchmarks/run_gpu.sh's ``bench`` stage) keeps the first two shapes and dtypes of every
suite and leaves out the torch.compile variants (minutes of compilation each), so that every op and the whole D
and G steps are measured within the device budget; unset, the suites run in full (``sweep``).
"""
import contextlib
import math
import os

import torch
import torch.nn.functional as F

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
COMPACT = os.environ.get("GANFAST_BENCH") == "compact"


def sweep(values, compact: int = 2):
    """``values``, or its first ``compact`` entries in compact mode (a list, or a dict of variants)."""
    if not COMPACT:
        return values
    return dict(list(values.items())[:compact]) if isinstance(values, dict) else list(values)[:compact]


def variants(names, drop=()):
    """Variant names (a list or dict), without the torch.compile ones (and ``drop``) in compact mode."""
    if not COMPACT:
        return names
    keep = [n for n in names if not n.startswith("compiled") and n not in drop]
    return {n: names[n] for n in keep} if isinstance(names, dict) else keep


def synced(fn):
    """``fn`` followed by a device synchronisation, so pytest-benchmark times the GPU work itself."""
    if not ON_GPU:
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


def bench_copy(benchmark, op: str, shape, dtype) -> None:
    """The bandwidth floor's yardstick: copying an input of ``shape`` (an elementwise or filtering pass moves at
    least these bytes). Group "<op> copy <shape> <dtype>": summarize.py matches it to groups by shape and dtype."""
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    out = torch.empty_like(x)
    benchmark.group = f"{op} copy {shape_id(shape)} {dtype}"
    benchmark.extra_info.update(bytes=2 * x.numel() * x.element_size(), variant="copy")
    benchmark(synced(lambda: out.copy_(x)))


def nvlabs_bias_act(x, b, act="lrelu", clamp=256.0, alpha=0.2, gain=math.sqrt(2)):
    """bias_act for lrelu as NVlabs' reference computes it and a user writes it: bias, leaky ReLU (slope alpha),
    gain, one clamp (None: none, as R3GAN calls it); x's dim 1 holds the channels. The fastest eager baseline
    for bias_act (ganfast.reference.bias_act, the test oracle, handles every activation and is slower)."""
    if act != "lrelu":
        raise ValueError("nvlabs_bias_act is written for act='lrelu'")
    y = F.leaky_relu(x.add(b.reshape([1, -1] + [1] * (x.ndim - 2))), alpha)
    y = y if gain == 1 else y.mul(gain)
    return y if clamp is None else y.clamp(-clamp, clamp)


@contextlib.contextmanager
def r3gan_on_nvlabs_ops():
    """Within: ganfast's R3GAN networks run NVlabs' reference compositions, as R3GAN's own code runs on a CPU (its
    CUDA plugins do not serve CPU tensors): bias_act = x + b then F.leaky_relu (:func:`nvlabs_bias_act`, no clamp),
    upsample2d / downsample2d = zero insertion, padding, a depthwise convolution, decimation
    (``ganfast.reference.upfirdn2d``, written as NVlabs' ``_upfirdn2d_ref``)."""
    from ganfast.models import r3gan
    from ganfast.reference.upfirdn2d import downsample2d, upsample2d
    names = ("bias_act", "upsample2d", "downsample2d")
    saved = {name: getattr(r3gan, name) for name in names}
    r3gan.bias_act = lambda x, b, act, alpha, gain: nvlabs_bias_act(x, b, act, None, alpha, gain)
    r3gan.upsample2d, r3gan.downsample2d = upsample2d, downsample2d
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(r3gan, name, fn)
