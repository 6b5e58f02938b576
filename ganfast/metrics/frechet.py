"""Fréchet distance between Gaussians fitted to features, with a pluggable feature extractor; FID.

FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½, in float64 on the features' device. tr (Σ₁Σ₂)^½ is the sum
of the square roots of the eigenvalues of the symmetric PSD matrix Σ₁^½ Σ₂ Σ₁^½ (same spectrum as Σ₁Σ₂),
so no non-symmetric matrix square root is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Extractor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FeatureStats:
    """Mean and covariance (float64) of ``n`` feature vectors."""

    mean: torch.Tensor
    cov: torch.Tensor
    n: int


def feature_stats(features: torch.Tensor) -> FeatureStats:
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N, F) with N >= 2; got shape {tuple(features.shape)}")
    f = features.double()
    return FeatureStats(f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1]), f.shape[0])


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: FeatureStats | torch.Tensor, b: FeatureStats | torch.Tensor) -> float:
    """Fréchet distance between two feature sets (``(N, F)`` tensors) or their :class:`FeatureStats`."""
    a = a if isinstance(a, FeatureStats) else feature_stats(a)
    b = b if isinstance(b, FeatureStats) else feature_stats(b)
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature dimensions differ: {a.mean.shape[0]} vs {b.mean.shape[0]}")
    device = a.mean.device
    root_a = _sqrtm_psd(a.cov)
    middle = root_a @ b.cov.to(device) @ root_a
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    diff = a.mean - b.mean.to(device)
    return float(diff @ diff + a.cov.trace() + b.cov.to(device).trace() - 2 * tr_sqrt)


@torch.no_grad()
def extract_features(extractor: Extractor, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``extractor`` applied batch by batch to ``images`` (``(N, C, H, W)`` in [-1, 1])."""
    return torch.cat([extractor(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def inception_extractor(path: str, device: str | torch.device = "cpu", mode: str | None = None) -> Extractor:
    """Features of images in [-1, 1] from a user-supplied Inception file, for FID: any format
    :func:`ganfast.metrics.detectors.load_detector` recognises (NVlabs' ``.pkl``, a TorchScript ``.pt``, pytorch-fid's
    state dict). ganfast ships no weights and downloads nothing. Images are quantised as saved images are,
    round((x + 1) · 127.5) clamped to [0, 255], greyscale repeated to RGB."""
    from .detectors import load_detector
    detector = load_detector(path, "inception", mode=mode, device=device)

    def extract(images: torch.Tensor) -> torch.Tensor:
        return detector(((images.float() + 1) * 127.5).clamp(0, 255).round())

    return extract
