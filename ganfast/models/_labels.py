"""The one check of the conditioning input ``c`` that every model's forward makes."""
from __future__ import annotations

import torch


def check_labels(c: torch.Tensor | None, c_dim: int, batch: int, model: str) -> torch.Tensor | None:
    """``c`` as float32 ``(batch, c_dim)`` for a conditional model (c_dim > 0), None for an unconditional one.

    Follows NVlabs' convention: labels are float vectors (one-hot rows for classes). An unconditional model takes
    ``c=None`` (or an empty ``(batch, 0)`` tensor); anything else is a ValueError naming the model."""
    if c_dim == 0:
        if c is not None and not (isinstance(c, torch.Tensor) and c.shape == (batch, 0)):
            raise ValueError(f"{model} is unconditional (c_dim=0) but was given labels c; pass c=None")
        return None
    if c is None:
        raise ValueError(f"{model} is conditional: c (class labels as one-hot rows, or label vectors: a float tensor "
                         f"of shape ({batch}, {c_dim})) is required")
    if not isinstance(c, torch.Tensor) or c.shape != (batch, c_dim) or not c.is_floating_point():
        shape = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
        raise ValueError(f"{model}: c must be a float tensor of shape ({batch}, {c_dim}) (one-hot rows for classes); "
                         f"got {shape}")
    return c.float()
