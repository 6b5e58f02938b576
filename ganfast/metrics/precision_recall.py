"""Improved precision and recall (Kynkäänniemi et al. 2019) in a feature space, by blocked distances."""
from __future__ import annotations

import torch

from .neighbours import ball_counts, knn_radii


def _inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    return ball_counts(queries, centres, radii) > 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict:
    """``precision``: share of fake features inside the real manifold; ``recall``: share of real inside the fake.

    A manifold is the union of balls around each of its points with radius = distance to its k-th nearest
    neighbour in the same set. ``real``/``fake`` are ``(N, F)`` feature matrices.
    """
    for name, t in (("real", real), ("fake", fake)):
        if t.dim() != 2 or t.shape[0] <= k:
            raise ValueError(f"{name} must be (N, F) features with N > k={k}; got shape {tuple(t.shape)}")
    real, fake = real.double(), fake.double()
    precision = _inside(fake, real, knn_radii(real, k)).double().mean().item()
    recall = _inside(real, fake, knn_radii(fake, k)).double().mean().item()
    return {"precision": precision, "recall": recall}
