"""Improved precision and recall (Kynkäänniemi et al. 2019) in a feature space."""
from __future__ import annotations

import torch


def _radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    d = torch.cdist(features, features)
    return d.kthvalue(k + 1, dim=1).values  # the 0 distance to itself is the first


def _inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    return (torch.cdist(queries, centres) <= radii.unsqueeze(0)).any(dim=1)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict:
    """``precision``: share of fake features inside the real manifold; ``recall``: share of real inside the fake.

    A manifold is the union of balls around each of its points with radius = distance to its k-th nearest
    neighbour in the same set. ``real``/``fake`` are ``(N, F)`` feature matrices.
    """
    for name, t in (("real", real), ("fake", fake)):
        if t.dim() != 2 or t.shape[0] <= k:
            raise ValueError(f"{name} must be (N, F) features with N > k={k}; got shape {tuple(t.shape)}")
    real, fake = real.double(), fake.double()
    precision = _inside(fake, real, _radii(real, k)).double().mean().item()
    recall = _inside(real, fake, _radii(fake, k)).double().mean().item()
    return {"precision": precision, "recall": recall}
