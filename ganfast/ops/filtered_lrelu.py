"""filtered_lrelu: StyleGAN3's fused bias, upsampling, leaky ReLU, clamp and downsampling, to second order.

Per (n, c) plane and per axis, with v the upsampled, padded, fu-filtered x + b on the grid of "mid" pixels:
    mid[j] = Σ_t z[j + t] · A[t],        z[i·up + pad0] = x[i] + b,        A = fu · up (per axis), flipped
    a[j]   = clamp(lrelu(mid[j], slope) · gain, ±clamp)
    y[o]   = Σ_t a[o·down + t] · B[t],   B = fd, flipped                       (flipped unless flip_filter)
Only mid pixels j < (out − 1)·down + fd_taps are ever read; that grid is the op's "mid" grid. The
upsampled intermediate never lives in memory: the kernels compute it in tiles. For the backward they keep a
2-bit code per mid pixel (mask: 1 = slope 1, 2 = slope ``slope``, 0 = clamped), 4 pixels per byte along x,
so that the derivative is the linear map
    L(t) = down_B(code_factor ⊙ up_A(t)),      code_factor ∈ {gain, gain·slope, 0}
and its adjoint L* (up by ``down`` with B reversed, the mask, down by ``up`` with A reversed). L and L* are one
registered op (``transpose`` selects), each the other's derivative, so every order of derivative runs on the
kernels; the mask is piecewise constant in x and b.

Registered ops (fake impls, so torch.compile traces them):
    ganfast::filtered_lrelu         (y, mask) = forward; the mask only when asked (write_mask)
    ganfast::filtered_lrelu_linear  L(t) or L*(t) with a stored mask
Backward of the forward: dx = L*(dy), db = Σ_{n,h,w} dx. No gradient flows to the filters.
The derivative depends on dy alone (the mask is fixed): x and b are not inputs of its graph, so their second
derivative is None where the reference (plain autograd) gives zeros, as with NVlabs' CUDA op.
Backends: "ext" (C++ on CPU, CUDA on GPU), "triton", "ref" (ganfast.reference.filtered_lrelu).
"""
from __future__ import annotations

import math

import torch

from .. import _ext
from .._dispatch import register_op
from ..reference.filtered_lrelu import filtered_lrelu as filtered_lrelu_ref
from ..reference.upfirdn2d import IntOrPair, filter_size, parse_padding
from ._common import (autocast_like, check_clamp, check_finite, check_same_device, check_tensor, compute_dtype,
                      custom_op, no_autocast, register_autograd)
from .upfirdn2d import _empty_output

__all__ = ["filtered_lrelu"]

# auto on CPU, measured (2 cores shared with other jobs, fp32, StyleGAN3-T layer 1x128x86² -> 84², up 2, down 2,
# 12-tap filters, forward / forward+backward): the C++ kernel 64 / 162 ms, the reference 485 / 708 ms,
# torch.compile(reference) 114 / 278 ms; the backward keeps 1 MiB (the mask) against the reference's 99 MiB.
# auto on CUDA: the CUDA kernel first, Triton second: not yet measured on a GPU.
_OP = register_op("filtered_lrelu", {"cpu": ("ext", "ref"), "cuda": ("ext", "triton", "ref")})


# ---- geometry -----------------------------------------------------------------------------------------------------

def _sizes(in_h: int, in_w: int, fu, fd, up: int, down: int, padding) -> tuple[list[int], list[int]]:
    """([mid_h, mid_w], [out_h, out_w]): the mid grid the output reads (see the module docstring) and the output."""
    (fu_w, fu_h), (fd_w, fd_h) = filter_size(fu), filter_size(fd)
    px0, px1, py0, py1 = padding
    out_h = (in_h * up + py0 + py1 - (fu_h - 1) - (fd_h - 1) + down - 1) // down
    out_w = (in_w * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + down - 1) // down
    return [max(out_h - 1, 0) * down + fd_h, max(out_w - 1, 0) * down + fd_w], [out_h, out_w]


def _mask_shape(x_shape, mid: list[int]) -> list[int]:
    return [x_shape[0], x_shape[1], mid[0], (mid[1] + 3) // 4]


def _stage_taps(f: torch.Tensor | None, scale: float, flip: bool, x: torch.Tensor) -> torch.Tensor:
    """One stage's correlation taps in the arithmetic type (float64 for float64 x, else float32): f (or one tap
    for None) times ``scale`` per axis (1-D f: ``scale``, 2-D: ``scale``²), flipped for a true convolution."""
    compute = compute_dtype(x.dtype)
    if f is None:
        return torch.full((1,), scale, dtype=compute, device=x.device)
    taps = (f if scale == 1 else f * scale ** f.ndim).to(compute)
    return (taps.flip(list(range(taps.ndim))) if flip else taps).contiguous()


def _launch(impl: str, t: torch.Tensor, fu, fd, b, mask, up: int, down: int, padding, gain: float, slope: float,
            clamp: float | None, flip_filter: bool, transpose: bool, in_size, write_mask: bool):
    """One fused pass. Forward geometry (``transpose`` False): t is x (in_size), the result the output; the
    activation runs when ``mask`` is None (writing a mask if ``write_mask``), else the mask's linear map.
    Transposed geometry: t has the output's size and the result in_size (always with the mask)."""
    mid, out_hw = _sizes(*in_size, fu, fd, up, down, padding)
    a = _stage_taps(fu, up, not flip_filter, t)   # up_A
    bt = _stage_taps(fd, 1, not flip_filter, t)   # down_B
    (fu_w, fu_h), (fd_w, fd_h) = filter_size(fu), filter_size(fd)
    if transpose:
        out_hw = list(in_size)
        taps1, taps2 = bt.flip(list(range(bt.ndim))).contiguous(), a.flip(list(range(a.ndim))).contiguous()
        scale1, scale2 = down, up
        pad1, pad2 = [fd_w - 1, fd_h - 1], [fu_w - 1 - padding[0], fu_h - 1 - padding[2]]
    else:
        taps1, taps2, scale1, scale2 = a, bt, up, down
        pad1, pad2 = [padding[0], padding[2]], [0, 0]
    out = _empty_output(t, [t.shape[0], t.shape[1], *out_hw])
    activation = mask is None
    if activation:
        mask = torch.empty(_mask_shape(t.shape, mid) if write_mask else [0], dtype=torch.uint8, device=t.device)
    if out.numel() == 0:
        return out, mask
    b = None if b is None else b.contiguous()
    clamp_arg = -1.0 if clamp is None else clamp
    if impl == "triton":
        from ..triton import filtered_lrelu as triton_filtered_lrelu
        triton_filtered_lrelu.filtered_lrelu(out, t, b, mask if mask.numel() else None, taps1, taps2, scale1,
                                             scale2, pad1, pad2, mid, activation, gain, slope, clamp_arg)
    else:
        addr = _ext.address
        _ext.launch("filtered_lrelu", t.device, _ext.DTYPE_CODES[t.dtype], 0 if activation else 1,
                    [*t.shape, *mid, *out_hw], [scale1, scale2], [*pad1, *pad2],
                    [taps1.shape[0], taps1.shape[-1], taps1.ndim == 1],
                    [taps2.shape[0], taps2.shape[-1], taps2.ndim == 1],
                    gain, slope, clamp_arg, list(t.stride()), list(out.stride()), addr(out), addr(t), addr(b),
                    addr(mask if mask.numel() else None), addr(taps1), addr(taps2))
    return out, mask


# ---- registered ops -----------------------------------------------------------------------------------------------

@custom_op("ganfast::filtered_lrelu", mutates_args=())
def _filtered_lrelu_op(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, b: torch.Tensor | None,
                       up: int, down: int, padding: list[int], gain: float, slope: float, clamp: float | None,
                       flip_filter: bool, write_mask: bool, impl: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(impl, x, fu, fd, b, None, up, down, padding, gain, slope, clamp, flip_filter, False,
                   list(x.shape[2:]), write_mask)


@_filtered_lrelu_op.register_fake
def _(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, write_mask, impl):
    mid, out_hw = _sizes(x.shape[2], x.shape[3], fu, fd, up, down, padding)
    mask = x.new_empty(_mask_shape(x.shape, mid) if write_mask else [0], dtype=torch.uint8)
    return _empty_output(x, [x.shape[0], x.shape[1], *out_hw]), mask


@custom_op("ganfast::filtered_lrelu_linear", mutates_args=())
def _filtered_lrelu_linear_op(t: torch.Tensor, mask: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None,
                              up: int, down: int, padding: list[int], gain: float, slope: float, flip_filter: bool,
                              transpose: bool, in_size: list[int], impl: str) -> torch.Tensor:
    return _launch(impl, t, fu, fd, None, mask, up, down, padding, gain, slope, None, flip_filter, transpose,
                   in_size, False)[0]


@_filtered_lrelu_linear_op.register_fake
def _(t, mask, fu, fd, up, down, padding, gain, slope, flip_filter, transpose, in_size, impl):
    out_hw = list(in_size) if transpose else _sizes(*in_size, fu, fd, up, down, padding)[1]
    return _empty_output(t, [t.shape[0], t.shape[1], *out_hw])


def _setup_forward(ctx, inputs, output):
    x, fu, fd, b, up, down, padding, gain, slope, _clamp, flip_filter, _write_mask, impl = inputs
    ctx.params = (up, down, padding, gain, slope, flip_filter, list(x.shape[2:]), impl)
    ctx.has_bias = b is not None
    ctx.save_for_backward(output[1], fu, fd)
    ctx.set_materialize_grads(False)


def _backward_forward(ctx, dy, _dmask):
    mask, fu, fd = ctx.saved_tensors
    up, down, padding, gain, slope, flip_filter, in_size, impl = ctx.params
    dx = db = None
    if dy is not None and (ctx.needs_input_grad[0] or ctx.needs_input_grad[3]):
        if mask.numel() == 0:
            raise RuntimeError("ganfast::filtered_lrelu was called with write_mask=False, so it has no backward")
        dx = torch.ops.ganfast.filtered_lrelu_linear(dy, mask, fu, fd, up, down, padding, gain, slope, flip_filter,
                                                     True, in_size, impl)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            db = dx.sum(dim=[0, 2, 3])
    return (dx if ctx.needs_input_grad[0] else None), None, None, db, *([None] * 9)


def _setup_linear(ctx, inputs, output):
    _t, mask, fu, fd, up, down, padding, gain, slope, flip_filter, transpose, in_size, impl = inputs
    ctx.params = (up, down, padding, gain, slope, flip_filter, transpose, in_size, impl)
    ctx.save_for_backward(mask, fu, fd)
    ctx.set_materialize_grads(False)


def _backward_linear(ctx, g):
    mask, fu, fd = ctx.saved_tensors
    up, down, padding, gain, slope, flip_filter, transpose, in_size, impl = ctx.params
    dt = None
    if g is not None and ctx.needs_input_grad[0]:  # the adjoint of L is L*, and of L* is L
        dt = torch.ops.ganfast.filtered_lrelu_linear(g, mask, fu, fd, up, down, padding, gain, slope, flip_filter,
                                                     not transpose, in_size, impl)
    return dt, *([None] * 12)


register_autograd("ganfast::filtered_lrelu", _backward_forward, setup_context=_setup_forward)
register_autograd("ganfast::filtered_lrelu_linear", _backward_linear, setup_context=_setup_linear)


# ---- public API -----------------------------------------------------------------------------------------------

def _check_filter(name: str, f, x: torch.Tensor) -> None:
    if f is None:
        return
    check_tensor(name, f, dtypes=(torch.float32,))
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"{name} must be None or a non-empty 1-D (separable) or 2-D filter, got shape "
                         f"{tuple(f.shape)}")
    check_same_device(x, **{name: f})


def _check_factor(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding: IntOrPair = 0,
                   gain: float = math.sqrt(2), slope: float = 0.2, clamp: float | None = None,
                   flip_filter: bool = False, impl: str | None = None) -> torch.Tensor:
    """Bias, upsample, leaky ReLU, clamp and downsample in one pass: a drop-in for StyleGAN3's ``filtered_lrelu``.

    Args:
        x: (N, C, H, W) float16/bfloat16/float32/float64, any layout (channels_last output for channels_last x).
        fu, fd: the upsampling and downsampling FIR filters: float32, 2-D (fh, fw), 1-D (separable) or None
            (one tap). No gradient flows to them.
        b: optional bias of length C, x's dtype (under autocast any float dtype, cast to x's) and device; added
            before upsampling.
        up, down: int upsampling and downsampling factors (≥ 1).
        padding: int, [x, y] or [x0, x1, y0, y1] with respect to the upsampled image; negative values crop.
        gain: the leaky ReLU's output scale (√2 keeps the variance).
        slope: the leaky ReLU's slope for negative inputs (≥ 0).
        clamp: clamp the activation to [−clamp, clamp] (≥ 0); None: no clamping.
        flip_filter: correlate with both filters instead of convolving.
        impl: None/"auto"/"cuda", "ref", "ext" or "triton" (see ganfast._dispatch).
    Returns:
        (N, C, (H·up + py0 + py1 − (fu_h − 1) − (fd_h − 1) + down − 1) // down, likewise for W) in x's dtype,
        differentiable (any order) in x and b.
    """
    check_tensor("x", x, ndim=4)
    _check_filter("fu", fu, x)
    _check_filter("fd", fd, x)
    (b,) = autocast_like(x, b)
    if b is not None:
        check_tensor("b", b, like=x, ndim=1)
        if b.shape[0] != x.shape[1]:
            raise ValueError(f"b has length {b.shape[0]} but x has {x.shape[1]} channels")
    up, down = _check_factor("up", up), _check_factor("down", down)
    padding = parse_padding(padding)
    gain, slope = check_finite("gain", gain, minimum=0), check_finite("slope", slope, minimum=0)
    clamp = check_clamp(clamp)
    out_hw = _sizes(x.shape[2], x.shape[3], fu, fd, up, down, padding)[1]
    if min(out_hw) < 1:
        raise ValueError(f"filtered_lrelu output would be {out_hw[0]}x{out_hw[1]} (H x W) for input "
                         f"{x.shape[2]}x{x.shape[3]}, fu {tuple(fu.shape) if fu is not None else None}, fd "
                         f"{tuple(fd.shape) if fd is not None else None}, up={up}, down={down}, padding={padding}: "
                         f"it must be at least 1x1")
    chosen = _OP.resolve(impl, x.device, x.dtype)
    if chosen == "ref":
        with no_autocast(x):
            return filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain, slope, clamp, bool(flip_filter))
    write_mask = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    return torch.ops.ganfast.filtered_lrelu(x, fu, fd, b, up, down, list(padding), gain, slope, clamp,
                                            bool(flip_filter), write_mask, chosen)[0]
