"""upfirdn2d: upsample, FIR-filter and downsample each channel (StyleGAN2-ADA's ``upfirdn2d``), with its helpers.

Per (n, c) plane and per axis: insert up−1 zeros after each pixel, zero-pad by (pad0, pad1) (negative crops),
convolve with the filter f (a correlation when ``flip_filter``), keep every down-th pixel:
    y[o] = Σ_t z[o·down + t] · taps[t],      z[i·up + pad0] = x[i],      out = (in·up + pad0 + pad1 − k + down) // down
with ``taps`` f flipped (unless ``flip_filter``) and scaled by gain**(f.ndim / 2); a 1-D f is separable.

Registered op (with a fake impl, so torch.compile traces it):
    ganfast::upfirdn2d   forward and, with other arguments, its own gradient:
the gradient w.r.t. x is the adjoint map, another upfirdn2d: up and down swapped, the filter flipped,
padding (k − 1 − pad0, in·up − out·down + pad0 − up + 1) per axis. The backward is the same registered op,
so every derivative order runs on the kernels. No gradient flows to f.
Backends: "ext" (C++ on CPU, CUDA on GPU), "triton", "ref" (ganfast.reference.upfirdn2d).
"""
from __future__ import annotations

import torch

from .. import _ext
from .._dispatch import register_op
from ..reference.upfirdn2d import (IntOrPair, downsample_padding, filter_padding, filter_size, parse_padding,
                                   parse_scaling, setup_filter, upsample_padding)
from ..reference.upfirdn2d import upfirdn2d as upfirdn2d_ref
from ._common import (check_finite, check_same_device, check_tensor, compute_dtype, custom_op, no_autocast,
                      register_autograd)

__all__ = ["upfirdn2d", "setup_filter", "upsample2d", "downsample2d", "filter2d"]


# auto on CPU, measured (one core, [1,3,3,1] filter, 4x64x32x32 and 2x32x128x128, fp32 and bf16, forward and
# forward+backward) against the reference (torch's depthwise conv2d on the zero-inserted input): the C++
# kernel is 1.6-7x faster for upsample2d, 1.3-3.8x for downsample2d and on par (0.8-1.1x) for filter2d.
# auto on CUDA: the CUDA kernel first, Triton second: not yet measured on a GPU.
_OP = register_op("upfirdn2d", {"cpu": ("ext", "ref"), "cuda": ("ext", "triton", "ref")})


def output_size(in_size: int, up: int, down: int, pad0: int, pad1: int, taps: int) -> int:
    """Length of one axis of upfirdn2d's output."""
    return (in_size * up + pad0 + pad1 - taps + down) // down


def _output_shape(x: torch.Tensor, f: torch.Tensor | None, up, down, padding) -> list[int]:
    (upx, upy), (downx, downy), (px0, px1, py0, py1), (fw, fh) = up, down, padding, filter_size(f)
    return [x.shape[0], x.shape[1], output_size(x.shape[2], upy, downy, py0, py1, fh),
            output_size(x.shape[3], upx, downx, px0, px1, fw)]


def _empty_output(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """The output buffer: channels_last when x is (and is not also contiguous), else contiguous."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.empty(shape, dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _correlation_taps(f: torch.Tensor | None, flip_filter: bool, gain: float, x: torch.Tensor) -> torch.Tensor:
    """The 2-D taps the kernels correlate with, in the arithmetic type (float64 for float64 x, else float32).

    Scaled by gain**(f.ndim/2) in f's dtype as the reference does; a separable f becomes its outer product
    (the x pass times the y pass); flipped unless ``flip_filter`` (a true convolution)."""
    compute = compute_dtype(x.dtype)
    if f is None:
        return torch.full((1, 1), gain, dtype=compute, device=x.device)
    taps = (f if gain == 1 else f * gain ** (f.ndim / 2)).to(compute)  # fewer launches in the common case
    if taps.ndim == 1:
        taps = torch.outer(taps, taps)
    return (taps if flip_filter else taps.flip([0, 1])).contiguous()


def _launch(impl: str, x: torch.Tensor, f: torch.Tensor | None, up, down, padding, flip_filter: bool,
            gain: float) -> torch.Tensor:
    out = _empty_output(x, _output_shape(x, f, up, down, padding))
    if out.numel() == 0:
        return out
    if x.numel() == 0:  # an empty input plane padded to a non-empty output: nothing but zeros
        return out.zero_()
    taps = _correlation_taps(f, flip_filter, gain, x)
    if impl == "triton":
        from ..triton import upfirdn2d as triton_upfirdn2d
        triton_upfirdn2d.upfirdn2d(out, x, taps, up, down, padding)
    else:
        _ext.launch("upfirdn2d", x.device, _ext.DTYPE_CODES[x.dtype], [*x.shape, *out.shape[2:]],
                    [up[0], up[1], down[0], down[1]], [padding[0], padding[2]], list(taps.shape),
                    list(x.stride()), list(out.stride()), _ext.address(out), _ext.address(x), _ext.address(taps))
    return out


# ---- registered op --------------------------------------------------------------------------------------------

@custom_op("ganfast::upfirdn2d", mutates_args=())
def _upfirdn2d_op(x: torch.Tensor, f: torch.Tensor | None, up: list[int], down: list[int], padding: list[int],
                  flip_filter: bool, gain: float, impl: str) -> torch.Tensor:
    return _launch(impl, x, f, up, down, padding, flip_filter, gain)


@_upfirdn2d_op.register_fake
def _(x, f, up, down, padding, flip_filter, gain, impl):
    return _empty_output(x, _output_shape(x, f, up, down, padding))


def gradient_padding(in_size: int, out_size: int, up: int, down: int, pad0: int, taps: int) -> tuple[int, int]:
    """Padding (pad0, pad1) of one axis for the adjoint upfirdn2d (up and down swapped, filter flipped), which
    maps a gradient of length ``out_size`` back to length ``in_size``.

    Output o reads input i through tap s = i·up + pad0 − o·down; the adjoint, reading o from i, must meet
    the flipped tap k − 1 − s, which fixes its pad0 = k − 1 − pad0; pad1 then makes its length in_size."""
    return taps - 1 - pad0, in_size * up - out_size * down + pad0 - up + 1


def _setup_context(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, gain, impl = inputs
    ctx.params = (x.shape[2:], up, down, padding, flip_filter, gain, impl)
    ctx.set_materialize_grads(False)  # no gradient in, None out
    ctx.save_for_backward(f)


def _backward(ctx, dy):
    (f,) = ctx.saved_tensors
    (in_h, in_w), up, down, padding, flip_filter, gain, impl = ctx.params
    dx = None
    if dy is not None and ctx.needs_input_grad[0]:
        fw, fh = filter_size(f)
        pad_x = gradient_padding(in_w, dy.shape[3], up[0], down[0], padding[0], fw)
        pad_y = gradient_padding(in_h, dy.shape[2], up[1], down[1], padding[2], fh)
        dx = torch.ops.ganfast.upfirdn2d(dy, f, list(down), list(up), [*pad_x, *pad_y], not flip_filter, gain, impl)
    return dx, None, None, None, None, None, None, None


register_autograd("ganfast::upfirdn2d", _backward, setup_context=_setup_context)


# ---- public API -----------------------------------------------------------------------------------------------

def _check_filter(f, x: torch.Tensor) -> None:
    if f is None:
        return
    check_tensor("f", f)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"f must be None or a non-empty 1-D (separable) or 2-D filter, got shape {tuple(f.shape)}")
    check_same_device(x, f=f)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: IntOrPair = 1, down: IntOrPair = 1,
              padding: IntOrPair = 0, flip_filter: bool = False, gain: float = 1, impl: str | None = None
              ) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample each channel of x: a drop-in for StyleGAN2-ADA's ``upfirdn2d``.

    Args:
        x: (N, C, H, W) float16/bfloat16/float32/float64 tensor, any layout (channels_last output for
            channels_last input).
        f: the filter, 2-D (fh, fw), 1-D (separable: applied along x and along y) or None (one tap); any float
            dtype (StyleGAN's are float32 from ``setup_filter``), computed in x's arithmetic type (float32 for
            the half types). No gradient flows to f.
        up, down: int or [x, y] (≥ 1).
        padding: int, [x, y] or [x0, x1, y0, y1]; negative values crop.
        flip_filter: correlate instead of convolve.
        gain: the filter is scaled by gain**(f.ndim / 2).
        impl: None/"auto"/"cuda", "ref", "ext" or "triton" (see ganfast._dispatch).
    Returns:
        (N, C, (H·up_y + py0 + py1 − fh + down_y) // down_y, (W·up_x + px0 + px1 − fw + down_x) // down_x),
        differentiable (any order) in x.
    """
    check_tensor("x", x, ndim=4)
    _check_filter(f, x)
    up, down, padding = parse_scaling(up, "up"), parse_scaling(down, "down"), parse_padding(padding)
    gain = check_finite("gain", gain)
    shape = _output_shape(x, f, up, down, padding)
    if shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"upfirdn2d output would be {shape[2]}x{shape[3]} (H x W) for input {x.shape[2]}x"
                         f"{x.shape[3]}, filter {filter_size(f)[1]}x{filter_size(f)[0]}, up={up}, down={down}, "
                         f"padding={padding}: it must be at least 1x1")
    chosen = _OP.resolve(impl, x.device, x.dtype)
    if chosen == "ref":
        with no_autocast(x):
            return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    return torch.ops.ganfast.upfirdn2d(x, f, list(up), list(down), list(padding), bool(flip_filter), gain, chosen)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up: IntOrPair = 2, padding: IntOrPair = 0,
               flip_filter: bool = False, gain: float = 1, impl: str | None = None) -> torch.Tensor:
    """Upsample by ``up`` with the FIR filter f; output (H·up_y, W·up_x) plus padding, gain × up_x·up_y."""
    upx, upy = parse_scaling(up, "up")
    return upfirdn2d(x, f, up=up, padding=upsample_padding(f, up, padding), flip_filter=flip_filter,
                     gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down: IntOrPair = 2, padding: IntOrPair = 0,
                 flip_filter: bool = False, gain: float = 1, impl: str | None = None) -> torch.Tensor:
    """Filter with f and keep every down-th pixel; output (H / down_y, W / down_x) plus padding."""
    return upfirdn2d(x, f, down=down, padding=downsample_padding(f, down, padding), flip_filter=flip_filter,
                     gain=gain, impl=impl)


def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding: IntOrPair = 0, flip_filter: bool = False,
             gain: float = 1, impl: str | None = None) -> torch.Tensor:
    """Filter with f, keeping the size (plus padding)."""
    return upfirdn2d(x, f, padding=filter_padding(f, padding), flip_filter=flip_filter, gain=gain, impl=impl)
