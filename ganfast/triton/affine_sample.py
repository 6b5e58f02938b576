"""Triton kernels for affine_sample: bilinear sampling at A·(ox, oy, 1) (gather) and its transpose (scatter with
atomic adds). One program per block of output pixels of one image; the footprint is computed once and applied to
every channel. Math mirrors csrc/affine_sample.h; the oracle is ganfast/reference/affine_sample.py.
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from ._common import MAX_GRID_YZ, compute_type, on_device


@triton.jit
def _footprint(m_ptr, n, ox, oy, in_w, in_h):
    """Top-left neighbour (int64) and the fractional offsets of the sample positions of outputs (ox, oy)."""
    m = m_ptr + n * 6
    ix = tl.load(m) * ox + tl.load(m + 1) * oy + tl.load(m + 2)
    iy = tl.load(m + 3) * ox + tl.load(m + 4) * oy + tl.load(m + 5)
    ix = tl.minimum(tl.maximum(ix, -2.0), in_w + 1.0)
    iy = tl.minimum(tl.maximum(iy, -2.0), in_h + 1.0)
    fx, fy = tl.floor(ix), tl.floor(iy)
    return fx.to(tl.int64), fy.to(tl.int64), ix - fx, iy - fy


@triton.jit
def _affine_sample_kernel(dst_ptr, src_ptr, m_ptr, batch, channels, in_h, in_w, out_h, out_w,
                          ss0, ss1, ss2, ss3, sd0, sd1, sd2, sd3, TRANSPOSE: tl.constexpr, BLOCK: tl.constexpr):
    """Grid: blocks of the output grid on axis 0, images on axis 1 (grid-strided past 65535).
    TRANSPOSE=0: dst[n, c, oy, ox] = Σ w · src[n, c, neighbour]; TRANSPOSE=1: dst[n, c, neighbour] += w · src[n, c,
    oy, ox] (dst zeroed by the caller)."""
    pix = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = pix < out_h * out_w
    oy, ox = pix // out_w, pix % out_w
    for n_ in range(tl.program_id(1), batch, tl.num_programs(1)):
        n = tl.cast(n_, tl.int64)
        x0, y0, ax, ay = _footprint(m_ptr, n, compute_type(ox.to(m_ptr.dtype.element_ty)),
                                    compute_type(oy.to(m_ptr.dtype.element_ty)), in_w, in_h)
        x1, y1 = x0 + 1, y0 + 1
        cx0, cx1 = (x0 >= 0) & (x0 < in_w), (x1 >= 0) & (x1 < in_w)
        cy0, cy1 = (y0 >= 0) & (y0 < in_h), (y1 >= 0) & (y1 < in_h)
        w00, w01, w10, w11 = (1 - ay) * (1 - ax), (1 - ay) * ax, ay * (1 - ax), ay * ax
        m00, m01, m10, m11 = valid & cy0 & cx0, valid & cy0 & cx1, valid & cy1 & cx0, valid & cy1 & cx1
        for c_ in range(channels):
            c = tl.cast(c_, tl.int64)
            if TRANSPOSE:
                g = compute_type(tl.load(src_ptr + n * ss0 + c * ss1 + oy * ss2 + ox * ss3, mask=valid, other=0))
                base = dst_ptr + n * sd0 + c * sd1
                tl.atomic_add(base + y0 * sd2 + x0 * sd3, (w00 * g).to(dst_ptr.dtype.element_ty), mask=m00)
                tl.atomic_add(base + y0 * sd2 + x1 * sd3, (w01 * g).to(dst_ptr.dtype.element_ty), mask=m01)
                tl.atomic_add(base + y1 * sd2 + x0 * sd3, (w10 * g).to(dst_ptr.dtype.element_ty), mask=m10)
                tl.atomic_add(base + y1 * sd2 + x1 * sd3, (w11 * g).to(dst_ptr.dtype.element_ty), mask=m11)
            else:
                base = src_ptr + n * ss0 + c * ss1
                acc = w00 * compute_type(tl.load(base + y0 * ss2 + x0 * ss3, mask=m00, other=0))
                acc += w01 * compute_type(tl.load(base + y0 * ss2 + x1 * ss3, mask=m01, other=0))
                acc += w10 * compute_type(tl.load(base + y1 * ss2 + x0 * ss3, mask=m10, other=0))
                acc += w11 * compute_type(tl.load(base + y1 * ss2 + x1 * ss3, mask=m11, other=0))
                tl.store(dst_ptr + n * sd0 + c * sd1 + oy * sd2 + ox * sd3, acc.to(dst_ptr.dtype.element_ty),
                         mask=valid)


def affine_sample(out: torch.Tensor, src: torch.Tensor, matrix: torch.Tensor, in_hw, out_hw, transpose: bool) -> None:
    """Launches the kernel into ``out`` (zeroed already for the transpose, which ganfast.ops runs in float32 or
    float64)."""
    batch, channels = src.shape[:2]
    block = min(256, triton.next_power_of_2(out_hw[0] * out_hw[1]))
    grid = (triton.cdiv(out_hw[0] * out_hw[1], block), min(batch, MAX_GRID_YZ))
    with on_device(src):
        _affine_sample_kernel[grid](out, src, matrix, batch, channels, in_hw[0], in_hw[1], out_hw[0], out_hw[1],
                                    *src.stride(), *out.stride(), TRANSPOSE=int(transpose), BLOCK=block)
