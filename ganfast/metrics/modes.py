"""Mode coverage on stacked digits (the Stacked-MNIST protocol): each channel of an image is classified by the
metrics' digit classifier, the triple ``100·d_R + 10·d_G + d_B`` is the image's mode.

- ``modes``: how many of the 1000 modes at least one image falls into;
- ``kl``: KL(p || u) = Σ_m p_m log(1000 p_m) over the modes with p_m > 0, p the images' mode histogram, u uniform
  (natural log; 0 for a perfectly balanced histogram, log 1000 ≈ 6.91 for a single mode; a uniform generator
  still scores about 999 / (2n) from sampling noise with n images: 0.019 at 26k);
- ``classifier_acc``: the share of real stacked images whose three digits are all read right, and
  ``classifier_acc_digit`` the share of their channels read right (a metric is only as good as its classifier).
"""
from __future__ import annotations

import torch

from .digits_classifier import digits_predictor

NUM_MODES = 1000


def stacked_channels_predictor(resolution: int = 16, device: str | torch.device = "cpu"):
    """``(N, 3, res, res)`` images in [-1, 1] -> ``(N, 3)`` predicted digits, one per channel (the cached digit
    classifier for ``resolution``)."""
    predict = digits_predictor(resolution, device)

    def run(images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, {resolution}, {resolution}) stacked digits; got "
                             f"{tuple(images.shape)}")
        n = images.shape[0]
        return predict(images.reshape(n * 3, 1, *images.shape[2:])).view(n, 3)

    return run


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


def classifier_accuracy(digits: torch.Tensor, labels: torch.Tensor) -> dict:
    """How well predicted ``(N, 3)`` digits read real stacked images of modes ``labels`` (N,):
    ``classifier_acc`` (all three digits right) and ``classifier_acc_digit`` (channels right)."""
    truth = torch.stack([labels // 100, labels // 10 % 10, labels % 10], dim=1)
    right = digits.cpu() == truth.cpu()
    return {"classifier_acc": right.all(dim=1).double().mean().item(),
            "classifier_acc_digit": right.double().mean().item()}


def read_stacked_digits(images: torch.Tensor, resolution: int | None = None, device: str | torch.device = "cpu",
                        batch_size: int = 2048) -> torch.Tensor:
    """The digits ``(N, 3)`` the classifier reads in ``(N, 3, r, r)`` stacked-digit images in [-1, 1]."""
    predict = stacked_channels_predictor(resolution or images.shape[-1], device)
    return torch.cat([predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def stacked_modes(images: torch.Tensor, resolution: int | None = None, device: str | torch.device = "cpu") -> \
        torch.Tensor:
    """The modes ``(N,)`` of ``(N, 3, r, r)`` stacked-digit images in [-1, 1]."""
    return modes_of(read_stacked_digits(images, resolution, device))


def expected_uniform_kl(num_samples: int, num_modes: int = NUM_MODES) -> float:
    """About what a perfectly uniform generator scores with ``num_samples`` images, (K - 1) / (2n): the
    chi-square approximation of the plug-in KL's bias, the floor against which to judge a measured KL."""
    return (num_modes - 1) / (2 * num_samples)
