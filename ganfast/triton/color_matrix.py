"""Triton kernel for color_matrix: out[n, :, p] = M[n] · x[n, :, p] + b[n], one program per block of pixels of one
image, the channels (≤ 4, a constexpr) read once into registers. Math mirrors csrc/color_matrix.h; the oracle is
ganfast/reference/color_matrix.py."""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from ._common import MAX_GRID_YZ, compute_type, on_device


@triton.jit
def _color_matrix_kernel(out_ptr, x_ptr, m_ptr, b_ptr, batch, pixels, width, sxn, sxc, sxh, sxw, son, soc, soh, sow,
                         C: tl.constexpr, BLOCK: tl.constexpr):
    """Grid: pixel blocks on axis 0, images on axis 1 (grid-strided past 65535)."""
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = p < pixels
    row, col = p // width, p % width
    x_off, o_off = row * sxh + col * sxw, row * soh + col * sow
    for n_ in range(tl.program_id(1), batch, tl.num_programs(1)):
        n = tl.cast(n_, tl.int64)
        for i in tl.static_range(C):
            acc = tl.zeros((BLOCK,), dtype=m_ptr.dtype.element_ty) + tl.load(b_ptr + n * C + i)
            for k in tl.static_range(C):
                v = compute_type(tl.load(x_ptr + n * sxn + k * sxc + x_off, mask=valid, other=0))
                acc += tl.load(m_ptr + (n * C + i) * C + k) * v
            tl.store(out_ptr + n * son + i * soc + o_off, acc.to(out_ptr.dtype.element_ty), mask=valid)


def color_matrix(out: torch.Tensor, x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> None:
    batch, channels, h, w = x.shape
    block = min(1024, triton.next_power_of_2(h * w))
    grid = (triton.cdiv(h * w, block), min(batch, MAX_GRID_YZ))
    with on_device(x):
        _color_matrix_kernel[grid](out, x, matrix, offset, batch, h * w, w, *x.stride(), *out.stride(), C=channels,
                                   BLOCK=block)
