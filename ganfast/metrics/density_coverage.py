"""Density and coverage (Naeem et al. 2020), with k-NN balls around the real features only.

With B_i the closed ball around real X_i of radius NND_k(X_i) (its distance to the k-th nearest other real):
density = Σ_j Σ_i 1[Y_j ∈ B_i] / (k M) (≈ 1 when fakes are distributed like the reals, above 1 when they crowd
into dense real regions) and coverage = share of reals i with at least one fake in B_i. N reals, M fakes.
Computed by blocked distances (:mod:`ganfast.metrics.neighbours`).
"""
from __future__ import annotations

import torch

from .neighbours import ball_counts, knn_radii, nearest_neighbours, within


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5,
                     device: str | torch.device | None = None) -> dict:
    """``{"density", "coverage"}`` of ``(M, F)`` fake features against ``(N, F)`` real features."""
    for name, t in (("real", real), ("fake", fake)):
        if t.dim() != 2 or t.shape[0] < 1:
            raise ValueError(f"{name} must be (N, F) features; got shape {tuple(t.shape)}")
    if real.shape[0] <= k:
        raise ValueError(f"density/coverage need more than k={k} real features; got {real.shape[0]}")
    radii = knn_radii(real, k, device=device)
    density = ball_counts(fake, real, radii, device=device).double().sum().item() / (k * fake.shape[0])
    nearest_fake = nearest_neighbours(real, fake, k=1, device=device)[0][:, 0]
    coverage = within(nearest_fake, radii).double().mean().item()
    return {"density": density, "coverage": coverage}
