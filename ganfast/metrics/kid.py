"""Kernel Inception Distance (Bińkowski et al. 2018): an unbiased MMD² estimate, averaged over subsets.

k(x, y) = (x·y / d + 1)³ for d-dimensional features. For subsets X, Y of m rows each,
MMD²_u = Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j)] / (m(m−1)) − 2 Σ_{i,j} k(x_i, y_j) / m²;
KID is its mean over ``num_subsets`` subsets drawn without replacement (seeded), with their standard deviation.
"""
from __future__ import annotations

import torch


def _polynomial(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased MMD² of two equally sized feature sets under the cubic polynomial kernel."""
    m = x.shape[0]
    kxx, kyy, kxy = _polynomial(x, x), _polynomial(y, y), _polynomial(x, y)
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / m ** 2)


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> dict:
    """``{"kid": mean, "kid_std": std, "subset_size": m}`` over subsets of ``min(subset_size, N_real, N_fake)``
    rows of the ``(N, F)`` feature matrices (float64 on their device)."""
    for name, t in (("real", real), ("fake", fake)):
        if t.dim() != 2 or t.shape[0] < 2:
            raise ValueError(f"{name} must be (N, F) features with N >= 2; got shape {tuple(t.shape)}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1; got {num_subsets}")
    m = min(subset_size, real.shape[0], fake.shape[0])
    gen = torch.Generator().manual_seed(seed)
    real, fake = real.double(), fake.double().to(real.device)
    values = torch.tensor([mmd2_unbiased(real[torch.randperm(real.shape[0], generator=gen)[:m].to(real.device)],
                                         fake[torch.randperm(fake.shape[0], generator=gen)[:m].to(real.device)])
                           for _ in range(num_subsets)], dtype=torch.float64)
    return {"kid": float(values.mean()), "kid_std": float(values.std()) if num_subsets > 1 else 0.0,
            "subset_size": m}
