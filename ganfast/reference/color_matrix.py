"""Reference color_matrix: a per-image affine map of the channel vector of every pixel,
    out[n, :, y, x] = matrix[n] · x[n, :, y, x] + offset[n]      (matrix (N, C, C), offset (N, C)),
as one batched matmul."""
from __future__ import annotations

import torch


def color_matrix(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    out = torch.baddbmm(offset.to(x.dtype)[:, :, None], matrix.to(x.dtype), x.reshape(n, c, h * w))
    return out.reshape(n, c, h, w)
