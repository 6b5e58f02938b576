"""The built-in feature extractor: a small CNN that ganfast trains on the real digits, cached on disk.

Trained deterministically (seed 0) on 90% of scikit-learn's digits at the requested resolution, with the other
10% held out; the held-out accuracy is stored with the weights. Features are the 64-d penultimate activations.
Cache: ``$GANFAST_CACHE`` or ``~/.cache/ganfast``, file ``digits_classifier_v<VERSION>_<res>px.safetensors``
(bump ``VERSION`` whenever the architecture or its training changes).
"""
from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..data import digits_with_labels
from .frechet import Extractor

FEATURES = 64
VERSION = 2


class DigitsClassifier(nn.Module):
    """conv 16 -> max-pool -> conv 32 -> average-pool to 4×4 -> linear 64 (features) -> linear 10."""

    def __init__(self, resolution: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(32 * 16, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, 10)
        self.resolution = resolution

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _cache_path(resolution: int) -> str:
    folder = os.environ.get("GANFAST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ganfast")
    return os.path.join(folder, f"digits_classifier_v{VERSION}_{resolution}px.safetensors")


def train_digits_classifier(resolution: int = 16, epochs: int = 10, seed: int = 0) -> tuple[DigitsClassifier, float]:
    """Trains the classifier on 90% of the digits; returns it (in eval mode) and its held-out accuracy."""
    x, y = digits_with_labels(resolution)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=gen)
    held = len(x) // 10
    test, train = perm[:held], perm[held:]
    torch.manual_seed(seed)
    model = DigitsClassifier(resolution)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = train[torch.randperm(len(train), generator=gen)]
        for i in range(0, len(order), 64):
            rows = order[i:i + 64]
            loss = F.cross_entropy(model(x[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    return model, accuracy


def load_digits_classifier(resolution: int = 16) -> tuple[DigitsClassifier, float]:
    """The cached classifier for ``resolution`` (trained and cached on first use) and its held-out accuracy."""
    from safetensors.torch import load_file, safe_open, save_file
    path = _cache_path(resolution)
    model = DigitsClassifier(resolution)
    if os.path.isfile(path):
        with safe_open(path, framework="pt") as f:
            accuracy = json.loads(f.metadata()["ganfast"])["accuracy"]
        model.load_state_dict(load_file(path))
        return model.eval(), accuracy
    model, accuracy = train_digits_classifier(resolution)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp,
              metadata={"ganfast": json.dumps({"accuracy": accuracy})})
    os.replace(tmp, path)
    return model, accuracy


def _on_images(resolution: int, device: str | torch.device, apply):
    """``images -> apply(model, images)`` without autograd, the cached classifier on ``device``, for ``(N, 1, res,
    res)`` images (a ValueError for any other shape)."""
    model = load_digits_classifier(resolution)[0].to(device)

    def run(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1:] != (1, resolution, resolution):
            raise ValueError(f"images must be (N, 1, {resolution}, {resolution}); got {tuple(images.shape)}")
        with torch.no_grad():
            return apply(model, images)

    return run


def digits_extractor(resolution: int = 16, device: str | torch.device = "cpu") -> Extractor:
    """A feature extractor for ``(N, 1, res, res)`` images in [-1, 1]: the cached classifier's 64-d features."""
    return _on_images(resolution, device, lambda model, images: model.features(images.to(device).float()))


def digits_probabilities(resolution: int = 16, device: str | torch.device = "cpu"):
    """The cached classifier as a function: ``(N, 1, res, res)`` images in [-1, 1] -> class probabilities
    (softmax of its logits) ``(N, 10)`` on the CPU."""
    return _on_images(resolution, device, lambda model, images: torch.cat(
        [model(images[i:i + 1000].to(device).float()).softmax(dim=1).cpu() for i in range(0, len(images), 1000)]))


def digits_predictor(resolution: int = 16, device: str | torch.device = "cpu"):
    """The cached classifier as a function: ``(N, 1, res, res)`` images in [-1, 1] -> predicted digits (N,)."""
    probabilities = digits_probabilities(resolution, device)
    return lambda images: probabilities(images).argmax(dim=1)
