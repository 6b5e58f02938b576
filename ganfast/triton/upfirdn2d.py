"""Triton kernel for upfirdn2d, polyphase: each output pixel gathers only the filter taps that meet input pixels.

Per axis the zero-inserted, padded input z has x[i] at i·up + pad0, and y[o] = Σ_t z[o·down + t] · taps[t].
Tap t meets an input pixel only when o·down + t − pad0 is a multiple of up: for the first such pixel
i0 = ceil((o·down − pad0) / up) the taps are t0 + k·up with t0 = i0·up − (o·down − pad0), k < ceil(taps / up).
Any strides for x and out (contiguous, channels_last, ...). Math mirrors csrc/upfirdn2d.h; the oracle is
ganfast/reference/upfirdn2d.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import MAX_GRID_YZ, compute_type, on_device


@triton.jit
def _axis_phase(o, down, pad0, shift, UP: tl.constexpr):
    """(first input pixel i0, its tap t0) of outputs o (int64: o·down passes 2³¹ on inputs that tall) along one
    axis; ``shift``·UP ≥ pad0 keeps the integer division's numerator non-negative, so it floors."""
    start = o * down - pad0
    first = (start + UP - 1 + shift * UP) // UP - shift
    return first, first * UP - start


@triton.jit
def _upfirdn2d_fwd_kernel(out_ptr, x_ptr, taps_ptr, planes, channels, in_h, in_w, out_h, out_w,
                          sxn, sxc, sxh, sxw, son, soc, soh, sow, pad_x0, pad_y0, shift_x, shift_y,
                          DOWN_X: tl.constexpr, DOWN_Y: tl.constexpr, UP_X: tl.constexpr, UP_Y: tl.constexpr,
                          TAPS_H: tl.constexpr, TAPS_W: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """out[n, c, oy, ox] = Σ_{a, b} x[n, c, iy0 + a, ix0 + b] · taps[ty0 + a·UP_Y, tx0 + b·UP_X]
    over a < ceil(TAPS_H / UP_Y), b < ceil(TAPS_W / UP_X), taps and pixels in range (see _axis_phase).
    Grid: the plane's tiles on axis 0 (row-major), planes on axis 1 (≤ 65535, walked with a grid stride)."""
    tiles_w = tl.cdiv(out_w, BLOCK_W)
    oy = (tl.program_id(0) // tiles_w).to(tl.int64) * BLOCK_H + tl.arange(0, BLOCK_H)  # int64 from here on
    ox = (tl.program_id(0) % tiles_w).to(tl.int64) * BLOCK_W + tl.arange(0, BLOCK_W)
    iy0, ty0 = _axis_phase(oy, DOWN_Y, pad_y0, shift_y, UP_Y)
    ix0, tx0 = _axis_phase(ox, DOWN_X, pad_x0, shift_x, UP_X)
    out_mask = (oy < out_h)[:, None] & (ox < out_w)[None, :]
    out_tile = oy[:, None] * soh + ox[None, :] * sow
    for plane in range(tl.program_id(1), planes, tl.num_programs(1)):
        n = tl.cast(plane // channels, tl.int64)  # tl.cast: the interpreter's loop variable is a Python int
        c = tl.cast(plane % channels, tl.int64)
        x_plane = x_ptr + n * sxn + c * sxc
        acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=taps_ptr.dtype.element_ty)
        for a in tl.static_range((TAPS_H + UP_Y - 1) // UP_Y):
            iy, ty = iy0 + a, ty0 + a * UP_Y
            mask_y = (ty < TAPS_H) & (iy >= 0) & (iy < in_h)
            for b in tl.static_range((TAPS_W + UP_X - 1) // UP_X):
                ix, tx = ix0 + b, tx0 + b * UP_X
                mask_x = (tx < TAPS_W) & (ix >= 0) & (ix < in_w)
                mask = mask_y[:, None] & mask_x[None, :]
                xv = tl.load(x_plane + iy[:, None] * sxh + ix[None, :] * sxw, mask=mask, other=0)
                tap = tl.load(taps_ptr + ty[:, None] * TAPS_W + tx[None, :], mask=mask, other=0)
                acc += compute_type(xv) * tap
        tl.store(out_ptr + n * son + c * soc + out_tile, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def upfirdn2d(out: torch.Tensor, x: torch.Tensor, taps: torch.Tensor, up, down, padding) -> None:
    """Launches the kernel into ``out``; ``taps`` is the 2-D correlation filter in the arithmetic type,
    ``up``/``down`` are (x, y), ``padding`` is (x0, x1, y0, y1)."""
    batch, channels, out_h, out_w = out.shape
    block_w = min(64, triton.next_power_of_2(out_w))
    block_h = min(max(1, 1024 // block_w), triton.next_power_of_2(out_h))
    grid = (triton.cdiv(out_h, block_h) * triton.cdiv(out_w, block_w), min(batch * channels, MAX_GRID_YZ))
    pad_x0, pad_y0 = padding[0], padding[2]
    with on_device(x):
        _upfirdn2d_fwd_kernel[grid](
            out, x, taps, batch * channels, channels, x.shape[2], x.shape[3], out_h, out_w, *x.stride(), *out.stride(),
            pad_x0, pad_y0, max(pad_x0, 0) // up[0] + 1, max(pad_y0, 0) // up[1] + 1,
            DOWN_X=down[0], DOWN_Y=down[1], UP_X=up[0], UP_Y=up[1], TAPS_H=taps.shape[0], TAPS_W=taps.shape[1],
            BLOCK_H=block_h, BLOCK_W=block_w)
