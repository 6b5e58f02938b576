"""An MLP GAN for 2-D data (the mode-collapse experiments' ring and grid mixtures). Conditional models
(``c_dim`` > 0) concatenate the labels ``c`` (N, c_dim) to their input: ``[z, c]`` in G, ``[x, c]`` in D."""
from __future__ import annotations

import torch
from torch import nn

from ._labels import check_labels
from ._spec import BuildableModule


def _mlp(in_features: int, hidden: int, depth: int, out_features: int, act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else hidden, hidden), act()]
    layers.append(nn.Linear(hidden if depth else in_features, out_features))
    return nn.Sequential(*layers)


class MLPGenerator(BuildableModule):
    """z ``(N, z_dim)`` -> points ``(N, out_features)`` through ``depth`` ReLU layers of width ``hidden``."""

    def __init__(self, z_dim: int = 16, hidden: int = 256, depth: int = 3, out_features: int = 2, c_dim: int = 0):
        super().__init__()
        self.z_dim, self.c_dim = z_dim, c_dim
        self.net = _mlp(z_dim + c_dim, hidden, depth, out_features, nn.ReLU)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        c = check_labels(c, self.c_dim, z.shape[0], type(self).__name__)
        return self.net(z if c is None else torch.cat([z, c.to(z.dtype)], dim=1))


class MLPDiscriminator(BuildableModule):
    """points ``(N, in_features)`` -> logits ``(N,)`` through ``depth`` LeakyReLU(0.2) layers of width ``hidden``."""

    def __init__(self, in_features: int = 2, hidden: int = 256, depth: int = 3, c_dim: int = 0):
        super().__init__()
        self.c_dim = c_dim
        self.net = _mlp(in_features + c_dim, hidden, depth, 1, lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        c = check_labels(c, self.c_dim, x.shape[0], type(self).__name__)
        return self.net(x if c is None else torch.cat([x, c.to(x.dtype)], dim=1)).squeeze(1)
