"""Mode coverage on stacked digits (the Stacked-MNIST protocol): each channel of an image is classified by the
metrics' digit classifier, the triple ``100·d_R + 10·d_G + d_B`` is the image's mode.

- ``modes``: how many of the 1000 modes at least one image falls into;
- ``kl``: KL(p || u) = Σ_m p_m log(1000 p_m) over the modes with p_m > 0, p the images' mode histogram, u uniform
  (natural log; 0 for a perfectly balanced histogram, log 1000 ≈ 6.91 for a single mode; a uniform generator
  still scores about 999 / (2n) from sampling noise with n images: 0.019 at 26k);
- ``confident``: the share of images whose three digits the classifier reads with probability >= 0.9 each
  (:data:`CONFIDENCE`): noise also lands in modes, so coverage means little where this share is low;
- ``classifier_acc``: the share of real stacked images whose three digits are all read right, and
  ``classifier_acc_digit`` the share of their channels read right (a metric is only as good as its classifier),
  ``confident_real`` the ``confident`` share of the real images.
"""
from __future__ import annotations

import torch

from .digits_classifier import digits_probabilities

NUM_MODES = 1000
CONFIDENCE = 0.9


def stacked_channels_probabilities(resolution: int = 16, device: str | torch.device = "cpu"):
    """``(N, 3, res, res)`` images in [-1, 1] -> ``(N, 3, 10)`` digit probabilities, one row per channel (the
    cached digit classifier for ``resolution``)."""
    probabilities = digits_probabilities(resolution, device)

    def run(images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, {resolution}, {resolution}) stacked digits; got "
                             f"{tuple(images.shape)}")
        n = images.shape[0]
        return probabilities(images.reshape(n * 3, 1, *images.shape[2:])).view(n, 3, 10)

    return run


def confident_share(probabilities: torch.Tensor, threshold: float = CONFIDENCE) -> float:
    """The share of images whose three channels' top probability is at least ``threshold``, of ``(N, 3, 10)``."""
    return (probabilities.amax(dim=2).amin(dim=1) >= threshold).double().mean().item()


def modes_of(digits: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` digits -> ``(N,)`` modes ``100·d_R + 10·d_G + d_B``."""
    return digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


def mode_coverage(modes: torch.Tensor, num_modes: int = NUM_MODES) -> dict:
    """``{"modes": modes hit, "kl": KL(histogram || uniform), "num_samples"}`` of ``(N,)`` mode indices."""
    modes = torch.as_tensor(modes).reshape(-1)
    if modes.numel() == 0:
        raise ValueError("modes: no samples")
    if modes.dtype.is_floating_point or modes.min() < 0 or modes.max() >= num_modes:
        raise ValueError(f"modes must be integers in [0, {num_modes}); got {modes.dtype} in "
                         f"[{modes.min().item()}, {modes.max().item()}]")
    p = torch.bincount(modes.long(), minlength=num_modes).double() / modes.numel()
    hit = p > 0
    kl = (p[hit] * (p[hit] * num_modes).log()).sum().item()
    return {"modes": int(hit.sum()), "kl": max(kl, 0.0), "num_samples": modes.numel()}


def classifier_accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> dict:
    """How well the classifier reads real stacked images of modes ``labels`` (N,) from its ``(N, 3, 10)``
    probabilities: ``classifier_acc`` (all three digits right), ``classifier_acc_digit`` (channels right),
    ``confident_real`` (:func:`confident_share`)."""
    truth = torch.stack([labels // 100, labels // 10 % 10, labels % 10], dim=1)
    right = probabilities.argmax(dim=2).cpu() == truth.cpu()
    return {"classifier_acc": right.all(dim=1).double().mean().item(),
            "classifier_acc_digit": right.double().mean().item(), "confident_real": confident_share(probabilities)}


def fake_modes(probabilities: torch.Tensor) -> dict:
    """:func:`mode_coverage` of images with these ``(N, 3, 10)`` digit probabilities, and their ``confident``
    share."""
    return {**mode_coverage(modes_of(probabilities.argmax(dim=2))), "confident": confident_share(probabilities)}


def read_stacked_digits(images: torch.Tensor, resolution: int | None = None, device: str | torch.device = "cpu",
                        batch_size: int = 2048) -> torch.Tensor:
    """The digit probabilities ``(N, 3, 10)`` the classifier gives ``(N, 3, r, r)`` stacked-digit images in
    [-1, 1]; ``.argmax(2)`` are the digits read."""
    run = stacked_channels_probabilities(resolution or images.shape[-1], device)
    return torch.cat([run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def expected_uniform_kl(num_samples: int, num_modes: int = NUM_MODES) -> float:
    """About what a perfectly uniform generator scores with ``num_samples`` images, (K - 1) / (2n): the
    chi-square approximation of the plug-in KL's bias, the floor against which to judge a measured KL."""
    return (num_modes - 1) / (2 * num_samples)
