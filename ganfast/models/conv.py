"""DCGAN (Radford et al. 2016) and SNGAN (Miyato et al. 2018) convolutional G/D for 16 to 128 px images.

Generator: z -> linear to ``(ch·2^(S−1), 4, 4)`` -> S stride-2 4×4 transposed convolutions, each halving the
channels, with batch norm + ReLU -> 3×3 convolution to the image channels -> tanh, where S = log2(res / 4).
SNGAN's CNN generator is this same DCGAN-style architecture, so ``SNGANGenerator`` is this class.

Discriminators: 3×3 convolution, then per stage a stride-2 4×4 convolution that doubles the channels (SNGAN
adds a 3×3 convolution before each), LeakyReLU(0.1) throughout, down to 4×4, then a linear layer to a logit.
DCGAN's has no normalization (so R1 / gradient penalties apply cleanly); SNGAN's puts spectral normalization
on every convolution and the linear layer.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._sn import spectral_norm
from ._spec import BuildableModule

RESOLUTIONS = (16, 32, 64, 128)


def _stages(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}; got {resolution}")
    return int(math.log2(resolution // 4))


class DCGANGenerator(BuildableModule):
    def __init__(self, z_dim: int = 64, resolution: int = 16, channels: int = 1, base_channels: int = 64):
        super().__init__()
        stages = _stages(resolution)
        self.z_dim, self.resolution, self.channels = z_dim, resolution, channels
        width = base_channels * 2 ** (stages - 1)
        self.input = nn.Sequential(nn.Linear(z_dim, width * 16), nn.Unflatten(1, (width, 4, 4)),
                                   nn.BatchNorm2d(width), nn.ReLU())
        blocks = []
        for _ in range(stages):
            blocks += [nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1),
                       nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.to_image(self.blocks(self.input(z))))


SNGANGenerator = DCGANGenerator


class _ConvDiscriminator(BuildableModule):
    def __init__(self, resolution: int, channels: int, base_channels: int, sn: bool):
        super().__init__()
        norm = spectral_norm if sn else (lambda m: m)
        width = base_channels
        layers: list[nn.Module] = [norm(nn.Conv2d(channels, width, 3, padding=1)), nn.LeakyReLU(0.1)]
        for _ in range(_stages(resolution)):
            if sn:
                layers += [norm(nn.Conv2d(width, width, 3, padding=1)), nn.LeakyReLU(0.1)]
            layers += [norm(nn.Conv2d(width, width * 2, 4, stride=2, padding=1)), nn.LeakyReLU(0.1)]
            width *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.logit = norm(nn.Linear(width * 16, 1))
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(x)).squeeze(1)


class DCGANDiscriminator(_ConvDiscriminator):
    def __init__(self, resolution: int = 16, channels: int = 1, base_channels: int = 32):
        super().__init__(resolution, channels, base_channels, sn=False)


class SNGANDiscriminator(_ConvDiscriminator):
    def __init__(self, resolution: int = 16, channels: int = 1, base_channels: int = 32):
        super().__init__(resolution, channels, base_channels, sn=True)
