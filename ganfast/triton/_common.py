"""Helpers shared by the Triton kernels."""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

MAX_GRID_YZ = 65535  # CUDA's limit on grid axes 1 and 2 (program_id(1), program_id(2)); axis 0 allows 2**31 − 1


def on_device(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """The context every Triton launch runs in: x's GPU made current (Triton launches on the current device),
    nothing for CPU tensors (the interpreter)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def split_f64(value: float) -> tuple[float, float]:
    """``value`` as hi + lo, both exactly representable in float32 (≈48 significant bits together).

    Triton passes Python floats as float32; float64 kernels rebuild the scalar with :func:`scalar`.
    """
    import numpy as np
    hi = float(np.float32(value))
    return hi, float(np.float32(value - hi))


@triton.jit
def compute_type(v):
    """``v`` in the arithmetic type: float64 stays float64, every other float is computed in float32.

    (One expression, not an if with two returns: compiled for a GPU, Triton requires both returns to have one
    type, so the branching form fails for float64.)"""
    return v.to(tl.float64 if v.dtype == tl.float64 else tl.float32)


@triton.jit
def scalar(hi, lo, like):
    """A scalar from :func:`split_f64`, in the arithmetic type of ``like`` (broadcast to its shape; both branches
    return the same kind of value, as Triton requires when compiling for a GPU)."""
    if like.dtype == tl.float64:
        r = (tl.zeros_like(like) + hi) + lo  # each float32 half widened exactly, then summed in float64
    else:
        r = tl.zeros_like(like) + hi
    return r


@triton.jit
def expm1(z):
    """exp(z) − 1 accurate near 0 (Kahan: (u − 1)·z / log u with u = exp z), exact where u rounds to 1."""
    u = tl.exp(z)
    um1 = u - 1
    r = tl.where(um1 == 0, z, um1 * z / tl.log(tl.where(um1 == 0, u + 1, u)))
    return tl.where((um1 == -1) | (u == float("inf")), um1, r)


@triton.jit
def log1p(v):
    """log(1 + v) accurate for small v (Kahan: log(w)·v / (w − 1) with w = 1 + v)."""
    w = v + 1
    wm1 = w - 1
    return tl.where(wm1 == 0, v, tl.log(w) * v / tl.where(wm1 == 0, v + 1, wm1))
