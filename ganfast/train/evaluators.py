"""Per-tick evaluations for image data: Fréchet distance and precision/recall in a feature space."""
from __future__ import annotations

import torch

from ..metrics import feature_stats, frechet_distance, precision_recall
from ..metrics.frechet import Extractor, extract_features


def image_evaluator(real: torch.Tensor, extractor: Extractor, z_dim: int, num_samples: int = 1000, seed: int = 0):
    """A ``Trainer`` ``evaluate`` callback: ``{"fd", "precision", "recall"}`` of ``num_samples`` fakes vs ``real``.

    The fakes come from fixed latents (drawn from ``seed``), so successive ticks are comparable; the real
    features are computed once.
    """
    real_features = extract_features(extractor, real)
    real_stats = feature_stats(real_features)
    z = torch.randn(num_samples, z_dim, generator=torch.Generator().manual_seed(seed + 104729))

    @torch.no_grad()
    def evaluate(G: torch.nn.Module) -> dict:
        device = next(G.parameters()).device
        fake = torch.cat([G(z[i:i + 500].to(device)).float().cpu() for i in range(0, len(z), 500)])
        fake_features = extract_features(extractor, fake)
        return {"fd": frechet_distance(real_stats, feature_stats(fake_features)),
                **precision_recall(real_features, fake_features, k=3)}

    return evaluate
