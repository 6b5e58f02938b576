"""Triton kernel for filtered_lrelu: one fused tile per program, the upsampled intermediate only in registers.

Each program computes a tile of outputs of one plane (planes walked with a grid stride). Per axis the two
upfirdn stages of csrc/filtered_lrelu.h are banded matrices, so a tile is a chain of tl.dot's:
    separable stage 1:   mid = Uy · X · Ux,      Ux[i, j] = taps1[i·up − j + c]   (Uy likewise, transposed)
    2-D stage 1:         mid = Σ_ty Sy_ty · X · Ux_ty, Ux_ty from tap row ty, Sy_ty[j, i] = [i·up − j + c = ty]
    stage 2:             out = Dy · mid · Dx,    Dx[j, o] = taps2[j − o·down]     (2-D: the same sum over rows)
with X the input tile (bias added), c ∈ [0, up) the phase of the tile's first mid pixel. Between the stages, the
activation (recording 2-bit codes, 4 per mask byte) or the stored mask's factor. A tile reads a mid tile of MT
pixels per axis and produces the (MT − taps2) // down + 1 outputs whose windows lie inside it; along x that count
is a multiple of 4 / gcd(down, 4) so that the mask bytes a tile owns are whole.
The oracle is ganfast/reference/filtered_lrelu.py.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import MAX_GRID_YZ, compute_type, on_device, scalar, split_f64


@triton.jit
def _band(taps_ptr, rows, cols, row_step, col_step, shift, TAPS: tl.constexpr):
    """M[r, c] = taps[r·row_step − c·col_step + shift], 0 outside [0, TAPS)."""
    t = rows[:, None] * row_step - cols[None, :] * col_step + shift
    ok = (t >= 0) & (t < TAPS)
    return tl.load(taps_ptr + tl.where(ok, t, 0), mask=ok, other=0)


@triton.jit
def _select(rows, cols, row_step, col_step, shift, tap, like):
    """S[r, c] = 1 where r·row_step − c·col_step + shift == tap, else 0 (in ``like``'s type)."""
    return ((rows[:, None] * row_step - cols[None, :] * col_step + shift) == tap).to(like.dtype)


@triton.jit
def _filtered_lrelu_kernel(
        out_ptr, x_ptr, bias_ptr, mask_ptr, taps1_ptr, taps2_ptr,
        planes, channels, in_h, in_w, mid_h, mid_w, out_h, out_w, mask_w,
        sxn, sxc, sxh, sxw, son, soc, soh, sow,
        pad1_x, pad1_y, pad2_x, pad2_y, shift_x, shift_y, valid_x, valid_y, tiles_x,
        gain_hi, gain_lo, slope_hi, slope_lo, clamp_hi, clamp_lo,
        UP: tl.constexpr, DOWN: tl.constexpr, T1H: tl.constexpr, T1W: tl.constexpr, T2H: tl.constexpr,
        T2W: tl.constexpr, SEP1: tl.constexpr, SEP2: tl.constexpr, MODE: tl.constexpr, HAS_BIAS: tl.constexpr,
        HAS_CLAMP: tl.constexpr, WRITE_MASK: tl.constexpr, IT_Y: tl.constexpr, IT_X: tl.constexpr,
        MT_Y: tl.constexpr, MT_X: tl.constexpr, BO_Y: tl.constexpr, BO_X: tl.constexpr, PRECISION: tl.constexpr):
    o0y = (tl.program_id(0) // tiles_x).to(tl.int64) * valid_y
    o0x = (tl.program_id(0) % tiles_x).to(tl.int64) * valid_x
    j0y, j0x = o0y * DOWN - pad2_y, o0x * DOWN - pad2_x
    # first input pixel of the tile, i0 = ceil((j0 − pad1) / up) (shift·UP keeps the numerator non-negative)
    i0y = (j0y - pad1_y + UP - 1 + shift_y * UP) // UP - shift_y
    i0x = (j0x - pad1_x + UP - 1 + shift_x * UP) // UP - shift_x
    cy, cx = i0y * UP + pad1_y - j0y, i0x * UP + pad1_x - j0x
    ii_y, ii_x = tl.arange(0, IT_Y), tl.arange(0, IT_X)
    jj_y, jj_x = tl.arange(0, MT_Y), tl.arange(0, MT_X)
    oo_y, oo_x = tl.arange(0, BO_Y), tl.arange(0, BO_X)
    iy, ix = i0y + ii_y, i0x + ii_x
    jy, jx = j0y + jj_y, j0x + jj_x
    oy, ox = o0y + oo_y, o0x + oo_x
    in_ok = ((iy >= 0) & (iy < in_h))[:, None] & ((ix >= 0) & (ix < in_w))[None, :]
    mid_ok = ((jy >= 0) & (jy < mid_h))[:, None] & ((jx >= 0) & (jx < mid_w))[None, :]
    out_ok = ((oo_y < valid_y) & (oy < out_h))[:, None] & ((oo_x < valid_x) & (ox < out_w))[None, :]
    x_tile = iy[:, None] * sxh + ix[None, :] * sxw
    out_tile = oy[:, None] * soh + ox[None, :] * sow
    if SEP1:
        ux = _band(taps1_ptr, ii_x, jj_x, UP, 1, cx, T1W)          # [IT_X, MT_X]
        uy = tl.trans(_band(taps1_ptr, ii_y, jj_y, UP, 1, cy, T1H))  # [MT_Y, IT_Y]
    if SEP2:
        dx = _band(taps2_ptr, jj_x, oo_x, 1, DOWN, 0, T2W)         # [MT_X, BO_X]
        dy = tl.trans(_band(taps2_ptr, jj_y, oo_y, 1, DOWN, 0, T2H))  # [BO_Y, MT_Y]
    if WRITE_MASK:  # the mid pixels this tile owns: the first valid·down per axis, all the rest for the last tile
        own_y = tl.where(o0y + valid_y >= out_h, jj_y >= 0, jj_y < valid_y * DOWN) & (jy >= 0) & (jy < mid_h)
        q = tl.arange(0, MT_X // 4)
        own_q = tl.where(o0x + valid_x >= out_w, q >= 0, 4 * q < valid_x * DOWN) & (j0x + 4 * q < mid_w)
        own_x = tl.where(o0x + valid_x >= out_w, jj_x >= 0, jj_x < valid_x * DOWN)
        own = own_y[:, None] & own_x[None, :] & mid_ok
        byte_ok = own_y[:, None] & own_q[None, :]
        bit_shift = 2 * tl.arange(0, 4)
    for plane in range(tl.program_id(1), planes, tl.num_programs(1)):
        n = tl.cast(plane // channels, tl.int64)  # tl.cast: the interpreter's loop variable is a Python int
        c = tl.cast(plane % channels, tl.int64)
        xv = compute_type(tl.load(x_ptr + n * sxn + c * sxc + x_tile, mask=in_ok, other=0))
        if HAS_BIAS:
            xv = tl.where(in_ok, xv + compute_type(tl.load(bias_ptr + c)), 0)
        # stage 1
        if SEP1:
            mid = tl.dot(uy.to(xv.dtype), tl.dot(xv, ux.to(xv.dtype), input_precision=PRECISION),
                         input_precision=PRECISION)
        else:
            mid = tl.zeros((MT_Y, MT_X), dtype=xv.dtype)
            for ty in range(T1H):  # a loop, not unrolled: one set of dot buffers
                ux_row = _band(taps1_ptr + ty * T1W, ii_x, jj_x, UP, 1, cx, T1W).to(xv.dtype)
                sel = tl.trans(_select(ii_y, jj_y, UP, 1, cy, ty, xv))
                mid += tl.dot(sel, tl.dot(xv, ux_row, input_precision=PRECISION), input_precision=PRECISION)
        # the elementwise stage
        gain = scalar(gain_hi, gain_lo, mid)
        slope = scalar(slope_hi, slope_lo, mid)
        plane_mask = mask_ptr + tl.cast(plane, tl.int64) * mid_h * mask_w
        if MODE == 0:
            positive = mid > 0
            act = tl.where(positive, mid, mid * slope) * gain
            code = tl.where(positive, 1, 2)
            if HAS_CLAMP:
                clamp = scalar(clamp_hi, clamp_lo, mid)
                clamped = ~((act < clamp) & (act > -clamp))  # NaN stays NaN (code 0), as in the C++ kernel
                act = tl.where(clamped, tl.where(act > 0, clamp, tl.where(act < 0, -clamp, act)), act)
                code = tl.where(clamped, 0, code)
            mid = tl.where(mid_ok, act, 0)
            if WRITE_MASK:
                code = tl.where(own, code, 0)
                packed = tl.sum(tl.reshape(code, (MT_Y, MT_X // 4, 4)) << bit_shift[None, None, :], axis=2)
                tl.store(plane_mask + jy[:, None] * mask_w + (j0x // 4 + q)[None, :], packed.to(tl.uint8),
                         mask=byte_ok)
        else:
            byte = tl.load(plane_mask + jy[:, None] * mask_w + (tl.where(jx >= 0, jx, 0) // 4)[None, :],
                           mask=mid_ok, other=0).to(tl.int32)
            code = (byte >> (2 * (jx % 4))[None, :]) & 3
            factor = tl.where(code == 1, gain, tl.where(code == 2, gain * slope, 0))
            mid = tl.where(mid_ok, mid * factor, 0)
        # stage 2
        if SEP2:
            out = tl.dot(dy.to(mid.dtype), tl.dot(mid, dx.to(mid.dtype), input_precision=PRECISION),
                         input_precision=PRECISION)
        else:
            out = tl.zeros((BO_Y, BO_X), dtype=mid.dtype)
            for ty in range(T2H):
                dx_row = _band(taps2_ptr + ty * T2W, jj_x, oo_x, 1, DOWN, 0, T2W).to(mid.dtype)
                sel = tl.trans(_select(jj_y, oo_y, 1, DOWN, 0, ty, mid))
                out += tl.dot(sel, tl.dot(mid, dx_row, input_precision=PRECISION), input_precision=PRECISION)
        tl.store(out_ptr + n * son + c * soc + out_tile, out.to(out_ptr.dtype.element_ty), mask=out_ok)


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))  # tl.dot needs every dimension >= 16


def _axis_tile(taps1: int, taps2: int, up: int, down: int, byte_aligned: bool) -> tuple[int, int, int, int]:
    """(input tile, mid tile, output tile, valid outputs per tile) along one axis."""
    mid_tile = _pow2(max(64, taps2 + 4 * down))
    valid = (mid_tile - taps2) // down + 1
    if byte_aligned:  # valid·down a multiple of 4: tiles own whole mask bytes
        step = 4 // math.gcd(down, 4)
        valid = valid // step * step
    return _pow2((mid_tile + taps1 - 2) // up + 1), mid_tile, _pow2(valid), valid


def filtered_lrelu(out: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, mask: torch.Tensor | None,
                   taps1: torch.Tensor, taps2: torch.Tensor, up: int, down: int, pad1, pad2, mid, activation: bool,
                   gain: float, slope: float, clamp: float) -> None:
    """Launches the kernel into ``out`` (see ganfast/ops/filtered_lrelu.py: _launch for the arguments)."""
    batch, channels, out_h, out_w = out.shape
    t1h, t1w = taps1.shape[0], taps1.shape[-1]
    t2h, t2w = taps2.shape[0], taps2.shape[-1]
    it_y, mt_y, bo_y, valid_y = _axis_tile(t1h, t2h, up, down, False)
    it_x, mt_x, bo_x, valid_x = _axis_tile(t1w, t2w, up, down, True)
    tiles_x = triton.cdiv(out_w, valid_x)
    planes = batch * channels
    grid = (triton.cdiv(out_h, valid_y) * tiles_x, min(planes, MAX_GRID_YZ))
    dummy = out
    half = x.dtype in (torch.float16, torch.bfloat16)
    with on_device(x):
        _filtered_lrelu_kernel[grid](
            out, x, b if b is not None else dummy, mask if mask is not None else dummy, taps1, taps2,
            planes, channels, x.shape[2], x.shape[3], mid[0], mid[1], out_h, out_w, (mid[1] + 3) // 4,
            *x.stride(), *out.stride(), pad1[0], pad1[1], pad2[0], pad2[1],
            (max(pad1[0], 0) + max(pad2[0], 0)) // up + 1, (max(pad1[1], 0) + max(pad2[1], 0)) // up + 1,
            valid_x, valid_y, tiles_x, *split_f64(gain), *split_f64(slope), *split_f64(max(clamp, 0.0)),
            UP=up, DOWN=down, T1H=t1h, T1W=t1w, T2H=t2h, T2W=t2w, SEP1=taps1.ndim == 1, SEP2=taps2.ndim == 1,
            MODE=0 if activation else 1, HAS_BIAS=b is not None, HAS_CLAMP=activation and clamp >= 0,
            WRITE_MASK=activation and mask is not None, IT_Y=it_y, IT_X=it_x, MT_Y=mt_y, MT_X=mt_x, BO_Y=bo_y,
            BO_X=bo_x, PRECISION="tf32" if half else "ieee", num_warps=8)
