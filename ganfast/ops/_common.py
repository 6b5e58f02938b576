"""Validation and layout helpers shared by the op modules. Errors name the offending argument."""
from __future__ import annotations

import torch

from .._ext import DTYPE_CODES

FLOAT_DTYPES = tuple(DTYPE_CODES)


def check_tensor(name: str, t, *, dtypes=FLOAT_DTYPES, like: torch.Tensor | None = None,
                 ndim: int | None = None) -> None:
    """Raises TypeError/ValueError naming ``name`` unless ``t`` is a tensor of an accepted dtype (matching
    ``like``'s device and dtype when given) and rank."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if like is not None:
        if t.device != like.device:
            raise ValueError(f"{name} is on {t.device} but x is on {like.device}")
        if t.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {like.dtype}; cast it first")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")


def check_dim(dim, ndim: int, name: str = "dim") -> int:
    """``dim`` normalised to [0, ndim), or a ValueError naming it."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{name} must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{name}={dim} is out of range for a {ndim}-D tensor")
    return dim % ndim


def is_dense(t: torch.Tensor) -> bool:
    """True if ``t`` covers its storage span exactly once (any dim order): the layout the kernels index."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` if it is dense, else a contiguous copy."""
    return t if is_dense(t) else t.contiguous()


def same_layout(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``t`` with exactly ``like``'s strides (copied if they differ), so kernels can share one index."""
    if t is None or t.stride() == like.stride():
        return t
    return torch.empty_like(like).copy_(t)
