"""Triton kernel for affine_resample (StyleGAN2-ADA's geometric pass), forward and transpose, in one kernel each.

    out = D_y D_x S_A U_y U_x P x   (csrc/affine_resample.h: reflect pad P, 2× upsample U with the K-tap filter f,
                                     bilinear sampling S_A of the canvas, 2× downsample D; the oracle is
                                     ganfast.reference.augment.geometric)
Per axis the bilinear pair of upsampled neighbours j0 = floor(u), j0 + 1 (weights w0 = 1 − (u − j0), w1 = u − j0,
zero outside [0, 2·padded)) reads K/2 + 1 consecutive padded pixels q = q0 + b, q0 = floor((j0 − K/2 + 1) / 2),
with the weight
    W_b = 2·(w0·f[e − 2b] + w1·f[e + 1 − 2b]),   e = K − 2 + ((j0 − K/2 + 1) mod 2),   f = 0 outside [0, K),
so a canvas sample is Σ_{a, b} W_a^y W_b^x · x[reflect(q0y + a − pad_y0), reflect(q0x + b − pad_x0)]: the
upsampled image is never formed. Each program takes one tile of one (n, c) plane (planes grid-strided):
- forward: the MT × MT canvas tile starting at canvas pixel 2·o0 + 1 (o0 the tile's first output), then
  out = Dy · S · Dx with the banded Dx[j, o] = f[j − 2o] (tl.dot); the tile yields V = (MT − K) / 2 + 1 outputs
  per axis.
- transpose: the canvas gradient of the tile's canvas pixels, G = Dyᵀ · dy · Dxᵀ, from the dy of outputs
  o0 − (K/2 − 1) … o0 + V − 1 (every output whose window meets the tile's first 2V canvas pixels), then a scatter
  of each canvas pixel through its (K/2 + 1)² weights into the zeroed out with atomic adds. A tile scatters only
  the 2V canvas pixels per axis that it owns (the last tile of an axis: all the rest), so no canvas pixel is
  scattered twice. One kernel rather than a canvas-gradient kernel plus a scatter: the canvas gradient (4× the
  image) never reaches memory, and the atomics are the same either way. Atomic adds need float32/float64:
  ganfast.ops runs half types' transposes in float32.
The tap loops keep the footprint of the rows out of the registers (recomputed per row tap, disable_licm): held
across the loops, the sm_90 build spilled (255 registers at 8 warps). Offsets inside a plane are 32-bit unless
Triton passes the strides as 64-bit (from 2³¹).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import MAX_GRID_YZ, compute_type, on_device
from .filtered_lrelu import _band

_FILTER_PAD = tl.constexpr(2)  # zeros on each side of f: the weights read f[−2 … K] with constant offsets, unmasked


@triton.jit
def _axis_footprint(u, padded2, TAPS: tl.constexpr):
    """Per canvas pixel, along one axis: the first padded pixel q0 read, the parity p of (j0 − K/2 + 1), and the
    bilinear weights of j0 and j0 + 1 (zero outside the upsampled image of size ``padded2``)."""
    u = tl.minimum(tl.maximum(u, -2.0), padded2 + 1.0)  # beyond, both neighbours lie outside: defines the int cast
    fu = tl.floor(u)
    j0 = fu.to(tl.int32)  # |j0| ≤ padded2 + 1
    w1 = u - fu
    w0 = tl.where((j0 >= 0) & (j0 < padded2), 1 - w1, 0)
    w1 = tl.where((j0 + 1 >= 0) & (j0 + 1 < padded2), w1, 0)
    shifted = j0 + TAPS // 2 + 1  # = j0 − K/2 + 1 + K ≥ 0 (j0 ≥ −2): floor division and parity need no sign care
    return shifted // 2 - TAPS // 2, shifted % 2, w0, w1


@triton.jit
def _tap_weight(f_ptr, parity, w0, w1, b, TAPS: tl.constexpr):
    """W_b of the module docstring; ``f_ptr`` is f padded by _FILTER_PAD zeros on each side."""
    base = f_ptr + TAPS - 2 - 2 * b + _FILTER_PAD  # f[K − 2 − 2b]
    f_even = tl.load(base)       # f[e − 2b] for parity 0
    f_odd = tl.load(base + 1)    # f[e − 2b] for parity 1, f[e + 1 − 2b] for parity 0
    f_next = tl.load(base + 2)   # f[e + 1 − 2b] for parity 1
    return 2 * (w0 * tl.where(parity == 1, f_odd, f_even) + w1 * tl.where(parity == 1, f_next, f_odd))


@triton.jit
def _position(m, sx, sy):
    """The upsampled position, along the axis of matrix row ``m``, of canvas pixels (sx, sy)."""
    return tl.load(m) * sx + tl.load(m + 1) * sy + tl.load(m + 2)


@triton.jit
def _tap(m, sx, sy, padded, f_ptr, a, TAPS: tl.constexpr):
    """Padded pixel q0 + a along the axis of matrix row ``m`` read by canvas pixels (sx, sy), and its weight W_a."""
    q0, parity, w0, w1 = _axis_footprint(_position(m, sx, sy), 2 * padded, TAPS)
    return q0 + a, _tap_weight(f_ptr, parity, w0, w1, a, TAPS)


@triton.jit
def _reflect(q, pad0, size):
    """The source pixel of padded pixel q (one reflection: pads ≤ size − 1)."""
    i = q - pad0
    i = tl.where(i < 0, -i, i)
    return tl.where(i >= size, 2 * (size - 1) - i, i)


@triton.jit
def _affine_resample_kernel(
        dst_ptr, src_ptr, m_ptr, f_ptr, planes, channels, height, width, pad_y0, pad_x0, padded_h, padded_w,
        ss0, ss1, ss2, ss3, sd0, sd1, sd2, sd3, tiles_x,
        TRANSPOSE: tl.constexpr, TAPS: tl.constexpr, MT: tl.constexpr, BO: tl.constexpr, VALID: tl.constexpr,
        PRECISION: tl.constexpr):
    """Grid: tiles of the plane (row-major) on axis 0, planes on axis 1 (grid-strided past 65535)."""
    o0y = (tl.program_id(0) // tiles_x).to(tl.int64) * VALID
    o0x = (tl.program_id(0) % tiles_x).to(tl.int64) * VALID
    jj_y, jj_x = tl.arange(0, MT), tl.arange(0, MT)
    oo_y, oo_x = tl.arange(0, BO), tl.arange(0, BO)
    taps = f_ptr + _FILTER_PAD
    if TRANSPOSE:
        # dy rows/columns o0 − (K/2 − 1) + o; canvas pixel j of the tile is read by that output with f[j − 2o + K − 2]
        oy, ox = o0y - (TAPS // 2 - 1) + oo_y, o0x - (TAPS // 2 - 1) + oo_x
        dy_ok = ((oy >= 0) & (oy < height) & (oo_y < VALID + TAPS // 2 - 1))[:, None] & \
            ((ox >= 0) & (ox < width) & (oo_x < VALID + TAPS // 2 - 1))[None, :]
        owned_y = tl.where(o0y + VALID >= height, MT, 2 * VALID)  # the last tile of an axis owns the rest
        owned_x = tl.where(o0x + VALID >= width, MT, 2 * VALID)
        own_y = (jj_y < owned_y) & (2 * o0y + 1 + jj_y < 2 * height + TAPS - 1)
        own_x = (jj_x < owned_x) & (2 * o0x + 1 + jj_x < 2 * width + TAPS - 1)
        own = own_y[:, None] & own_x[None, :]
    else:
        oy, ox = o0y + oo_y, o0x + oo_x
        out_ok = ((oo_y < VALID) & (oy < height))[:, None] & ((oo_x < VALID) & (ox < width))[None, :]
    ty = m_ptr.dtype.element_ty
    sy = (2 * o0y + 1 + jj_y).to(ty)[:, None]  # the tile's canvas pixels
    sx = (2 * o0x + 1 + jj_x).to(ty)[None, :]
    for plane in range(tl.program_id(1), planes, tl.num_programs(1)):
        n = tl.cast(plane // channels, tl.int64)  # tl.cast: the interpreter's loop variable is a Python int
        c = tl.cast(plane % channels, tl.int64)
        m = m_ptr + n * 6
        if TRANSPOSE:
            g = compute_type(tl.load(src_ptr + n * ss0 + c * ss1 + oy[:, None] * ss2 + ox[None, :] * ss3,
                                     mask=dy_ok, other=0))
            dmy = _band(taps, jj_y, oo_y, 1, 2, TAPS - 2, TAPS).to(g.dtype)            # [MT, BO]
            dmx = tl.trans(_band(taps, jj_x, oo_x, 1, 2, TAPS - 2, TAPS)).to(g.dtype)  # [BO, MT]
            g = tl.dot(dmy, tl.dot(g, dmx, input_precision=PRECISION), input_precision=PRECISION)  # canvas gradient
            q0x, par_x, w0x, w1x = _axis_footprint(_position(m, sx, sy), 2 * padded_w, TAPS)
            plane_dst = dst_ptr + n * sd0 + c * sd1
            for a in tl.range(TAPS // 2 + 1, disable_licm=True):
                qy, wy = _tap(m + 3, sx, sy, padded_h, f_ptr, a, TAPS)
                wy = wy * g
                ok_y = own & (qy >= 0) & (qy < padded_h)
                row = _reflect(qy, pad_y0, height) * sd2
                for b in tl.range(TAPS // 2 + 1, disable_licm=True):
                    qx = q0x + b
                    w = _tap_weight(f_ptr, par_x, w0x, w1x, b, TAPS) * wy
                    tl.atomic_add(plane_dst + row + _reflect(qx, pad_x0, width) * sd3,
                                  w.to(dst_ptr.dtype.element_ty), mask=ok_y & (qx >= 0) & (qx < padded_w))
        else:
            q0x, par_x, w0x, w1x = _axis_footprint(_position(m, sx, sy), 2 * padded_w, TAPS)
            plane_src = src_ptr + n * ss0 + c * ss1
            s = tl.zeros((MT, MT), dtype=ty)
            for a in tl.range(TAPS // 2 + 1, disable_licm=True):
                qy, wy = _tap(m + 3, sx, sy, padded_h, f_ptr, a, TAPS)
                ok_y = (qy >= 0) & (qy < padded_h)
                row = _reflect(qy, pad_y0, height) * ss2
                for b in tl.range(TAPS // 2 + 1, disable_licm=True):
                    qx = q0x + b
                    xv = tl.load(plane_src + row + _reflect(qx, pad_x0, width) * ss3,
                                 mask=ok_y & (qx >= 0) & (qx < padded_w), other=0)
                    s += _tap_weight(f_ptr, par_x, w0x, w1x, b, TAPS) * wy * compute_type(xv)
            dmy = tl.trans(_band(taps, jj_y, oo_y, 1, 2, 0, TAPS)).to(ty)  # [BO, MT]: Dy[o, j] = f[j − 2o]
            dmx = _band(taps, jj_x, oo_x, 1, 2, 0, TAPS).to(ty)            # [MT, BO]
            out = tl.dot(dmy, tl.dot(s, dmx, input_precision=PRECISION), input_precision=PRECISION)
            tl.store(dst_ptr + n * sd0 + c * sd1 + oy[:, None] * sd2 + ox[None, :] * sd3,
                     out.to(dst_ptr.dtype.element_ty), mask=out_ok)


def tile_sizes(taps: int, canvas_tile: int) -> tuple[int, int]:
    """(outputs per tile and axis V, the power-of-two block BO holding them and, for the transpose, the K/2 − 1
    outputs before them) for a canvas tile of ``canvas_tile`` pixels per axis."""
    valid = (canvas_tile - taps) // 2 + 1
    if valid < 1:
        raise ValueError(f"canvas_tile must exceed the filter's {taps} taps, got {canvas_tile}")
    return valid, max(16, triton.next_power_of_2(valid + taps // 2 - 1))  # tl.dot needs dimensions >= 16


def affine_resample(out: torch.Tensor, src: torch.Tensor, matrix: torch.Tensor, filt: torch.Tensor, margins,
                    transpose: bool, canvas_tile: int = 64) -> None:
    """Launches the kernel into ``out`` (x's shape; zeroed already and float32/float64 for the transpose).

    ``matrix`` (N, 2, 3) maps canvas pixels to upsampled padded positions, ``filt`` holds the K taps, both in the
    arithmetic type; ``margins`` = (pad_x0, pad_x1, pad_y0, pad_y1) (see ganfast.reference.augment.geometric_plan).
    ``canvas_tile`` (a power of two ≥ 16) sets the tile: 64 on a GPU; smaller ones let tests cross tile edges."""
    batch, channels, height, width = src.shape
    taps = filt.numel()
    valid, block = tile_sizes(taps, canvas_tile)
    pad_x0, pad_x1, pad_y0, pad_y1 = (int(v) for v in margins)
    tiles_x = triton.cdiv(width, valid)
    planes = batch * channels
    grid = (triton.cdiv(height, valid) * tiles_x, min(planes, MAX_GRID_YZ))
    padded_filter = F.pad(filt.reshape(-1), (_FILTER_PAD, _FILTER_PAD))
    half = src.dtype in (torch.float16, torch.bfloat16)
    with on_device(src):
        _affine_resample_kernel[grid](
            out, src, matrix, padded_filter, planes, channels, height, width, pad_y0, pad_x0,
            height + pad_y0 + pad_y1, width + pad_x0 + pad_x1, *src.stride(), *out.stride(), tiles_x,
            TRANSPOSE=int(transpose), TAPS=taps, MT=canvas_tile, BO=block, VALID=valid,
            PRECISION="tf32" if half else "ieee", num_warps=8)
