"""Triton kernels of the gradient-penalty pass: the per-sample reduction + penalty, its backward, and the
WGAN-GP interpolation.

Every tensor is a per-sample-contiguous (B, N) buffer (ganfast.ops.grad_penalty.sample_major). Per-sample
results are float32 (float64 for float64 gradients). Math mirrors csrc/grad_penalty.h; the oracle is
ganfast/reference/losses.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import MAX_GRID_YZ, compute_type, on_device, scalar, split_f64

REDUCE_BLOCK = 2048
REDUCE_CHUNK = 16 * REDUCE_BLOCK  # elements of one sample per program of the reduction (at least)
SCALE_BLOCK = 1024


@triton.jit
def _penalty_term(s, center_hi, center_lo, HAS_CENTER: tl.constexpr):
    """(term, norm) from a sum of squares s: norm = √s, term = s (R1) or (norm − center)²."""
    norm = tl.sqrt(s)
    if HAS_CENTER:
        d = norm - scalar(center_hi, center_lo, norm)
        return d * d, norm
    return s, norm


@triton.jit
def _grad_penalty_fwd_kernel(term_ptr, norm_ptr, partial_ptr, g_ptr, per_sample, chunk, center_hi, center_lo,
                             HAS_CENTER: tl.constexpr, ONE_CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """Program (b, k): s = Σ g_b² over chunk k of sample b. With one chunk per sample it writes norm_b = √s and
    term_b = s (R1) or (norm_b − center)² itself; otherwise s goes to partial[b, k] for the finish kernel."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    row = g_ptr + b * per_sample
    start = k.to(tl.int64) * chunk
    stop = tl.minimum(start + chunk, per_sample)
    acc = tl.zeros([BLOCK], dtype=term_ptr.dtype.element_ty)
    for offset in range(0, chunk, BLOCK):
        offs = start + offset + tl.arange(0, BLOCK)
        v = compute_type(tl.load(row + offs, mask=offs < stop, other=0))
        acc += v * v
    s = tl.sum(acc, axis=0)
    if ONE_CHUNK:
        term, norm = _penalty_term(s, center_hi, center_lo, HAS_CENTER)
        tl.store(term_ptr + b, term)
        tl.store(norm_ptr + b, norm)
    else:
        tl.store(partial_ptr + b * tl.num_programs(1) + k, s)


@triton.jit
def _grad_penalty_finish_kernel(term_ptr, norm_ptr, partial_ptr, chunks, center_hi, center_lo,
                                HAS_CENTER: tl.constexpr, CHUNKS_P2: tl.constexpr):
    """Per sample b: s = Σ_k partial[b, k] (a fixed order: deterministic), then norm_b and term_b."""
    b = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, CHUNKS_P2)
    s = tl.sum(tl.load(partial_ptr + b * chunks + k, mask=k < chunks, other=0), axis=0)
    term, norm = _penalty_term(s, center_hi, center_lo, HAS_CENTER)
    tl.store(term_ptr + b, term)
    tl.store(norm_ptr + b, norm)


@triton.jit
def _grad_penalty_bwd_kernel(out_ptr, g_ptr, dterm_ptr, dnorm_ptr, norm_ptr, batch, per_sample, center_hi,
                             center_lo, HAS_CENTER: tl.constexpr, BLOCK: tl.constexpr):
    """out_b = g_b · coef_b with coef_b = (2·dterm_b·(norm_b − center) + dnorm_b) / norm_b (R1:
    2·dterm_b + dnorm_b / norm_b); the 1/norm_b factors are 0 where norm_b = 0."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # slices on grid axis 0 (no 65535 limit)
    mask = offs < per_sample
    for b in range(tl.program_id(1), batch, tl.num_programs(1)):  # samples on axis 1 (≤ 65535), grid-strided
        norm = tl.load(norm_ptr + b)
        dterm = tl.load(dterm_ptr + b)
        dnorm = tl.load(dnorm_ptr + b)
        inv = tl.where(norm > 0, 1 / tl.where(norm > 0, norm, 1), 0)
        if HAS_CENTER:
            coef = (2 * dterm * (norm - scalar(center_hi, center_lo, norm)) + dnorm) * inv
        else:
            coef = 2 * dterm + dnorm * inv
        base = tl.cast(b, tl.int64) * per_sample + offs
        g = tl.load(g_ptr + base, mask=mask, other=0)
        tl.store(out_ptr + base, (g.to(coef.dtype) * coef).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sample_lerp_fwd_kernel(out_ptr, a_ptr, b_ptr, eps_ptr, batch, per_sample, BLOCK: tl.constexpr):
    """out_b = eps_b · a_b + (1 − eps_b) · b_b  (computed as b + eps·(a − b))."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # slices on grid axis 0
    mask = offs < per_sample
    for s in range(tl.program_id(1), batch, tl.num_programs(1)):  # samples on axis 1 (≤ 65535), grid-strided
        e = compute_type(tl.load(eps_ptr + s))
        base = tl.cast(s, tl.int64) * per_sample + offs
        a = compute_type(tl.load(a_ptr + base, mask=mask, other=0))
        bv = compute_type(tl.load(b_ptr + base, mask=mask, other=0))
        tl.store(out_ptr + base, (bv + e * (a - bv)).to(out_ptr.dtype.element_ty), mask=mask)


def _scale_grid(batch: int, per_sample: int) -> tuple[int, int]:
    """Slices of a sample on grid axis 0, samples on axis 1 (at most MAX_GRID_YZ programs, each walking the
    samples with a grid stride)."""
    return triton.cdiv(per_sample, SCALE_BLOCK), min(batch, MAX_GRID_YZ)


def grad_penalty_fwd(term: torch.Tensor, norm: torch.Tensor, g: torch.Tensor, per_sample: int, center: float) -> None:
    """Writes term and norm (B,) for the per-sample-contiguous g; center < 0 selects R1's sum of squares.
    Samples longer than REDUCE_CHUNK are split over several programs plus a per-sample finish."""
    batch = g.shape[0]
    # chunks ride on grid axis 1: past MAX_GRID_YZ of them (samples of 2**31 elements), each chunk grows
    chunk = max(REDUCE_CHUNK, triton.cdiv(triton.cdiv(per_sample, MAX_GRID_YZ), REDUCE_BLOCK) * REDUCE_BLOCK)
    chunks = max(1, triton.cdiv(per_sample, chunk))
    scalars = split_f64(max(center, 0.0))
    partial = term.new_empty(batch * chunks) if chunks > 1 else term  # placeholder when unused
    with on_device(g):
        _grad_penalty_fwd_kernel[(batch, chunks)](term, norm, partial, g, per_sample, chunk, *scalars,
                                                  HAS_CENTER=center >= 0, ONE_CHUNK=chunks == 1, BLOCK=REDUCE_BLOCK)
        if chunks > 1:
            _grad_penalty_finish_kernel[(batch,)](term, norm, partial, chunks, *scalars, HAS_CENTER=center >= 0,
                                                  CHUNKS_P2=triton.next_power_of_2(chunks))


def grad_penalty_bwd(out: torch.Tensor, g: torch.Tensor, dterm: torch.Tensor, dnorm: torch.Tensor,
                     norm: torch.Tensor, per_sample: int, center: float) -> None:
    """Writes out = g · coef_b (same layout as g)."""
    if out.numel() == 0:
        return
    with on_device(g):
        _grad_penalty_bwd_kernel[_scale_grid(g.shape[0], per_sample)](
            out, g, dterm, dnorm, norm, g.shape[0], per_sample, *split_f64(max(center, 0.0)),
            HAS_CENTER=center >= 0, BLOCK=SCALE_BLOCK)


def sample_lerp(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: torch.Tensor, per_sample: int) -> None:
    """Writes out = eps_b · a + (1 − eps_b) · b (a, b, out share a per-sample-contiguous layout)."""
    if out.numel() == 0:
        return
    with on_device(a):
        _sample_lerp_fwd_kernel[_scale_grid(a.shape[0], per_sample)](
            out, a, b, eps, a.shape[0], per_sample, BLOCK=SCALE_BLOCK)
