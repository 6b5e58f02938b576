"""Mode coverage for 2-D Gaussian mixtures (the unrolled-GAN / VEEGAN / PacGAN protocol)."""
from __future__ import annotations

import math

import torch


def mixture_metrics(samples: torch.Tensor, modes: torch.Tensor, std: float, min_share: float = 0.02) -> dict:
    """Scores generated 2-D ``samples`` against a mixture with centres ``modes`` and standard deviation ``std``.

    - ``hq``: the fraction of high-quality samples — within 3·std (Euclidean) of their nearest centre;
    - ``modes``: how many modes are covered — a mode is covered when at least ``min_share`` of its fair share
      (N / K) of the samples, and at least one, are high-quality samples of that mode;
    - ``kl``: KL(p ‖ uniform) of the histogram p of the high-quality samples over the modes, in nats
      (0 when spread evenly, log K when all in one mode; None when there is no high-quality sample).
    """
    if samples.dim() != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape (N, 2); got {tuple(samples.shape)}")
    samples = samples.detach().double().cpu()
    modes = modes.double().cpu()
    dist, nearest = torch.cdist(samples, modes).min(dim=1)
    hq = dist <= 3 * std
    counts = torch.bincount(nearest[hq], minlength=len(modes)).double()
    need = max(1.0, min_share * len(samples) / len(modes))
    total = counts.sum().item()
    kl = None
    if total > 0:
        p = counts / total
        kl = float((p[p > 0] * (p[p > 0] * len(modes)).log()).sum())
    return {"modes": int((counts >= need).sum()), "num_modes": len(modes), "hq": hq.double().mean().item(),
            "kl": kl, "max_kl": math.log(len(modes))}
