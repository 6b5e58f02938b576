"""Reference affine_sample: bilinear sampling of each image at an affine map of the output pixel grid.

    out[n, c] = grid_sample(x, affine_grid(theta, (N, C, H_out, W_out)), "bilinear", "zeros") per image n,
both with align_corners=False: ``theta`` (N, 2, 3) maps output coordinates normalised to [-1, 1] (pixel
edges at ±1) to input coordinates normalised the same way; samples outside the input read zeros.
In pixel units (pixel centres at integers) the input position of output pixel (ox, oy) is
    (ix, iy)ᵀ = A · (ox, oy, 1)ᵀ,   A = pixel_matrix(theta, (H, W), (H_out, W_out)),
and out = Σ over the four integer neighbours (jx, jy) of (1 − |ix − jx|)(1 − |iy − jy|) · x[jy, jx].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_matrix(theta: torch.Tensor, in_size, out_size) -> torch.Tensor:
    """(N, 2, 3) map from output pixel indices to input pixel positions (centres at integers) for ``theta``.

    Output normalised x = (2·ox + 1) / W_out − 1; input pixel ix = ((gx + 1)·W − 1) / 2, and likewise in y."""
    (h, w), (ho, wo) = in_size, out_size
    t = theta.to(torch.float64)
    sx, sy = 2.0 / wo, 2.0 / ho                      # d(normalised out) / d(out pixel)
    bx, by = 1.0 / wo - 1.0, 1.0 / ho - 1.0          # normalised out at pixel 0
    col_x, col_y = t[:, :, 0] * sx, t[:, :, 1] * sy  # normalised input per output pixel step
    const = t[:, :, 0] * bx + t[:, :, 1] * by + t[:, :, 2]
    half = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64, device=theta.device)[None, :]
    return torch.stack([col_x * half, col_y * half, (const + 1) * half - 0.5], dim=2)


def affine_sample(x: torch.Tensor, theta: torch.Tensor, size) -> torch.Tensor:
    """Bilinear samples of ``x`` (N, C, H, W) on the grid ``affine_grid(theta, (N, C, *size))``, zeros outside."""
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
