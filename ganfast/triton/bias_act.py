"""Triton kernels for bias_act: ``y = clamp(act(x + b[c]) * gain)`` and its first and second derivatives.

One elementwise pass over a dense tensor. The channel of memory offset ``o`` is ``(o // stride_c) % C``,
which holds for every non-overlapping dense layout (contiguous, channels_last, any ``dim``).
Math mirrors csrc/bias_act.h; the oracle is ganfast/reference/bias_act.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import compute_type, expm1, log1p, on_device, scalar, split_f64

BLOCK = 1024


@triton.jit
def _act(z, alpha, ACT: tl.constexpr, ORDER: tl.constexpr):
    """d^ORDER/dz^ORDER of activation ACT (codes as in reference.ACTIVATIONS)."""
    zero = tl.zeros_like(z)
    one = zero + 1
    if ACT == 0:  # linear
        r = z if ORDER == 0 else (one if ORDER == 1 else zero)
    elif ACT == 1:  # relu
        r = tl.where(z < 0, zero, z) if ORDER == 0 else (tl.where(z > 0, one, zero) if ORDER == 1 else zero)
    elif ACT == 2:  # lrelu
        r = tl.where(z > 0, z, z * alpha) if ORDER == 0 else (tl.where(z > 0, one, one * alpha) if ORDER == 1 else zero)
    elif ACT == 3:  # tanh
        e = expm1(-2 * tl.abs(z))  # tanh|z| = -e / (e + 2), no cancellation near 0
        t = -e / (e + 2)
        t = tl.where(z < 0, -t, t)
        r = t if ORDER == 0 else ((1 - t * t) if ORDER == 1 else -2 * t * (1 - t * t))
    elif ACT == 4:  # sigmoid
        s = 1 / (1 + tl.exp(-z))
        r = s if ORDER == 0 else (s * (1 - s) if ORDER == 1 else s * (1 - s) * (1 - 2 * s))
    elif ACT == 5:  # elu
        zn = tl.where(z > 0, zero, z)  # NaN stays NaN
        e = tl.exp(zn)
        r = tl.where(z > 0, z, expm1(zn)) if ORDER == 0 else (
            tl.where(z > 0, one, e) if ORDER == 1 else tl.where(z > 0, zero, e))
    elif ACT == 6:  # selu
        # scale and scale * alpha of SELU as float32 hi + lo pairs (exact enough for float64)
        scale = zero + 1.0507010221481323 - 3.479265231476347e-08
        scale_alpha = zero + 1.7580993175506592 + 2.3296717444054593e-08
        zn = tl.where(z > 0, zero, z)
        e = tl.exp(zn) * scale_alpha
        r = tl.where(z > 0, z * scale, expm1(zn) * scale_alpha) if ORDER == 0 else (
            tl.where(z > 0, scale, e) if ORDER == 1 else tl.where(z > 0, zero, e))
    elif ACT == 7:  # softplus, linear above 20 as torch's default threshold
        s = 1 / (1 + tl.exp(-z))
        r = tl.where(z > 20, z, log1p(tl.exp(tl.where(z > 20, zero, z)))) if ORDER == 0 else (
            tl.where(z > 20, one, s) if ORDER == 1 else tl.where(z > 20, zero, s * (1 - s)))
    else:  # swish
        s = 1 / (1 + tl.exp(-z))
        r = z * s if ORDER == 0 else (s * (1 + z * (1 - s)) if ORDER == 1 else s * (1 - s) * (2 + z * (1 - 2 * s)))
    return r


@triton.jit
def _load_z(x_ptr, b_ptr, offs, mask, channels, stride_c, HAS_B: tl.constexpr):
    z = compute_type(tl.load(x_ptr + offs, mask=mask, other=0))
    if HAS_B:
        z += compute_type(tl.load(b_ptr + (offs // stride_c) % channels, mask=mask, other=0))
    return z


@triton.jit
def act_gain_clamp(z, alpha_hi, alpha_lo, gain_hi, gain_lo, clamp_hi, clamp_lo, ACT: tl.constexpr,
                   HAS_CLAMP: tl.constexpr):
    """clamp(act(z) · gain, −clamp, clamp): the forward epilogue, shared with the fused modulated-conv kernel."""
    y = _act(z, scalar(alpha_hi, alpha_lo, z), ACT, 0) * scalar(gain_hi, gain_lo, z)
    if HAS_CLAMP:
        c = scalar(clamp_hi, clamp_lo, z)
        y = tl.where((y >= c) | (y <= -c), tl.where(y > 0, c, -c), y)
    return y


@triton.jit
def _bias_act_fwd_kernel(out_ptr, x_ptr, b_ptr, n, channels, stride_c,
                         alpha_hi, alpha_lo, gain_hi, gain_lo, clamp_hi, clamp_lo,
                         ACT: tl.constexpr, HAS_B: tl.constexpr, HAS_CLAMP: tl.constexpr, BLOCK: tl.constexpr):
    """out = clamp(act(x + b[c]) * gain, -clamp, clamp)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    z = _load_z(x_ptr, b_ptr, offs, mask, channels, stride_c, HAS_B)
    y = act_gain_clamp(z, alpha_hi, alpha_lo, gain_hi, gain_lo, clamp_hi, clamp_lo, ACT, HAS_CLAMP)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_act_bwd_kernel(out_ptr, g_ptr, h_ptr, x_ptr, b_ptr, y_ptr, n, channels, stride_c,
                         alpha_hi, alpha_lo, gain_hi, gain_lo, clamp_hi, clamp_lo,
                         ACT: tl.constexpr, ORDER: tl.constexpr, HAS_B: tl.constexpr, HAS_CLAMP: tl.constexpr,
                         BLOCK: tl.constexpr):
    """ORDER 1: out = g * gain * act'(z);  ORDER 2: out = g * h * gain * act''(z);  zero where |y| >= clamp."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    z = _load_z(x_ptr, b_ptr, offs, mask, channels, stride_c, HAS_B)
    d = _act(z, scalar(alpha_hi, alpha_lo, z), ACT, ORDER) * scalar(gain_hi, gain_lo, z)
    d *= compute_type(tl.load(g_ptr + offs, mask=mask, other=0))
    if ORDER == 2:
        d *= compute_type(tl.load(h_ptr + offs, mask=mask, other=0))
    if HAS_CLAMP:
        c = scalar(clamp_hi, clamp_lo, z)
        y = compute_type(tl.load(y_ptr + offs, mask=mask, other=0))
        d = tl.where((y < c) & (y > -c), d, tl.zeros_like(d))  # exact 0 even where d is not finite
    tl.store(out_ptr + offs, d.to(out_ptr.dtype.element_ty), mask=mask)


def bias_act(order: int, out: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, g: torch.Tensor | None,
             h: torch.Tensor | None, yref: torch.Tensor | None, channels: int, stride_c: int, act: int,
             alpha: float, gain: float, clamp: float) -> None:
    """Launches the pass of the given order into ``out`` (all tensors share x's dense layout)."""
    n = x.numel()
    if n == 0:
        return
    grid = (triton.cdiv(n, BLOCK),)
    scalars = (*split_f64(alpha), *split_f64(gain), *split_f64(max(clamp, 0.0)))
    flags = dict(ACT=act, HAS_B=b is not None, HAS_CLAMP=clamp >= 0, BLOCK=BLOCK)
    b = x if b is None else b  # a placeholder pointer; never read when HAS_B is False
    with on_device(x):
        if order == 0:
            _bias_act_fwd_kernel[grid](out, x, b, n, channels, stride_c, *scalars, **flags)
        else:
            _bias_act_bwd_kernel[grid](out, g, g if h is None else h, x, b, x if yref is None else yref, n,
                                       channels, stride_c, *scalars, ORDER=order, **flags)
