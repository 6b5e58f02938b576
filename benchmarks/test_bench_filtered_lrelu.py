"""filtered_lrelu benchmarks at StyleGAN3-T shapes: ganfast vs the eager reference composition vs
torch.compile(reference), forward and forward+backward, and the bytes the backward keeps (saved tensors).

Layers of the 1024 px config T (channel base 32768, margin 10, 14 layers; filter size 6, lrelu upsampling 2):
the layer's conv output (its input size + 2) goes through filtered_lrelu with up = 2 · out_rate / in_rate,
down = 2, up taps 6·up, down taps 12 and the symmetric padding of StyleGAN3's SynthesisLayer.
On a GPU: batch 4, layers 36→36 (512 ch), 52→84 (512 ch, up 4), 276→276 (128 ch), 532→1044 (32 ch, up 4),
1044→1044 (32 ch); float32 and float16. On a CPU: one tiny layer, so that CI proves the suite runs.
"""
import pytest
import torch
from bench_support import DEVICE, ON_GPU, synced

from ganfast.ops import filtered_lrelu
from ganfast.reference import filtered_lrelu as filtered_lrelu_ref

# (batch, channels, in size, out size, in sampling rate, out sampling rate)
LAYERS = [(4, 512, 36, 36, 16, 16), (4, 512, 52, 84, 32, 64), (4, 128, 276, 276, 256, 256),
          (4, 32, 532, 1044, 512, 1024), (4, 32, 1044, 1044, 1024, 1024)] if ON_GPU else [(2, 8, 20, 20, 8, 8)]
DTYPES = [torch.float32, torch.float16] if ON_GPU else [torch.float32]
_compiled_ref = torch.compile(filtered_lrelu_ref)
VARIANTS = {"ganfast": filtered_lrelu, "ref": filtered_lrelu_ref, "compiled_ref": _compiled_ref}


def _layer_id(layer) -> str:
    batch, channels, in_size, out_size = layer[:4]
    return f"{batch}x{channels}x{in_size}to{out_size}"


def sg3_layer(layer, dtype):
    """x, bias and the filtered_lrelu arguments of one StyleGAN3 synthesis layer (random low-pass taps)."""
    batch, channels, in_size, out_size, in_rate, out_rate = layer
    up, down = 2 * max(in_rate, out_rate) // in_rate, 2 * max(in_rate, out_rate) // out_rate
    up_taps, down_taps = 6 * up if up > 1 else 1, 6 * down if down > 1 else 1
    conv_size = in_size + 2  # the 3x3 conv with padding 2 before it
    pad_total = (out_size - 1) * down + 1 - conv_size * up + up_taps + down_taps - 2
    pad_lo = (pad_total + up) // 2
    fu, fd = (torch.rand(taps, device=DEVICE) + 0.5 for taps in (up_taps, down_taps))
    x = torch.randn(batch, channels, conv_size, conv_size, device=DEVICE, dtype=dtype)
    b = torch.randn(channels, device=DEVICE, dtype=dtype)
    kwargs = {"fu": fu / fu.sum(), "fd": fd / fd.sum(), "up": up, "down": down,
              "padding": [pad_lo, pad_total - pad_lo] * 2, "clamp": 256.0}
    return x, b, kwargs


@pytest.mark.parametrize("layer", LAYERS, ids=_layer_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("pass_", ["fwd", "fwd_bwd"])
def test_filtered_lrelu(benchmark, layer, dtype, variant, pass_):
    fn = VARIANTS[variant]
    x, b, kw = sg3_layer(layer, dtype)
    with torch.no_grad():  # correctness first: every variant must agree with the reference before it is timed
        expected = filtered_lrelu_ref(x, b=b, **kw)
        assert expected.shape[2:] == (layer[3], layer[3])
        torch.testing.assert_close(fn(x, b=b, **kw), expected, rtol=2e-2, atol=2e-2)
    moved = (x.numel() + expected.numel()) * x.element_size()
    if pass_ == "fwd":
        call = lambda: fn(x, b=b, **kw)  # noqa: E731
    else:
        x.requires_grad_()
        dy = torch.randn_like(expected)
        call = lambda: torch.autograd.grad(fn(x, b=b, **kw), x, dy)  # noqa: E731
        moved *= 2  # backward: read dy, write dx
    benchmark.group = f"filtered_lrelu {pass_} {_layer_id(layer)} {dtype}"
    benchmark.extra_info.update(bytes=moved, variant=variant)
    benchmark(synced(call))


@pytest.mark.parametrize("layer", LAYERS, ids=_layer_id)
@pytest.mark.parametrize("variant", ["ganfast", "ref"])
def test_filtered_lrelu_saved_memory(benchmark, layer, variant):
    """Bytes the autograd graph of one layer keeps for the backward (extra_info saved_bytes; storages counted
    once, the input x itself excluded), timed as the forward with autograd on."""
    fn = VARIANTS[variant]
    x, b, kw = sg3_layer(layer, torch.float32)
    x.requires_grad_()
    b.requires_grad_()
    storages = {}

    def pack(t):
        if t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr():
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x, b=b, **kw)
    saved = sum(storages.values())
    if variant == "ganfast":  # 2 bits per mid pixel and the filters: under a quarter of one float32 output...
        mid = [(layer[3] - 1) * kw["down"] + len(kw["fd"])] * 2
        assert saved <= x.shape[0] * x.shape[1] * mid[0] * ((mid[1] + 3) // 4) + 4 * (len(kw["fu"]) + len(kw["fd"]))
    else:  # ...while the reference keeps the upsampled tensor (several times the output)
        assert saved >= 4 * y.numel()
    benchmark.group = f"filtered_lrelu saved memory {_layer_id(layer)}"
    benchmark.extra_info.update(saved_bytes=saved, variant=variant)
    benchmark(synced(lambda: fn(x, b=b, **kw)))
