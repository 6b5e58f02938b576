"""An MLP GAN for 2-D data (the mode-collapse experiments' ring and grid mixtures)."""
from __future__ import annotations

import torch
from torch import nn

from ._spec import BuildableModule


def _mlp(in_features: int, hidden: int, depth: int, out_features: int, act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else hidden, hidden), act()]
    layers.append(nn.Linear(hidden if depth else in_features, out_features))
    return nn.Sequential(*layers)


class MLPGenerator(BuildableModule):
    """z ``(N, z_dim)`` -> points ``(N, out_features)`` through ``depth`` ReLU layers of width ``hidden``."""

    def __init__(self, z_dim: int = 16, hidden: int = 256, depth: int = 3, out_features: int = 2):
        super().__init__()
        self.z_dim = z_dim
        self.net = _mlp(z_dim, hidden, depth, out_features, nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(BuildableModule):
    """points ``(N, in_features)`` -> logits ``(N,)`` through ``depth`` LeakyReLU(0.2) layers of width ``hidden``."""

    def __init__(self, in_features: int = 2, hidden: int = 256, depth: int = 3):
        super().__init__()
        self.net = _mlp(in_features, hidden, depth, 1, lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)
