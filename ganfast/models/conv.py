"""DCGAN (Radford et al. 2016) and SNGAN (Miyato et al. 2018) convolutional G/D for 16 to 128 px images.

Generator: z -> linear to ``(ch·2^(S−1), 4, 4)`` -> S stride-2 4×4 transposed convolutions, each halving the
channels, with batch norm + ReLU -> 3×3 convolution to the image channels -> tanh, where S = log2(res / 4).
SNGAN's CNN generator is this same DCGAN-style architecture, so ``SNGANGenerator`` is this class.

Discriminators: 3×3 convolution, then per stage a stride-2 4×4 convolution that doubles the channels (SNGAN
adds a 3×3 convolution before each), LeakyReLU(0.1) throughout, down to 4×4, then a linear layer to a logit.
DCGAN's has no normalization (so R1 / gradient penalties apply cleanly); SNGAN's puts spectral normalization
on every convolution and the linear layer.

Conditional models (``c_dim`` > 0, labels ``c`` of shape (N, c_dim), one-hot for classes): the generator's
batch norms become conditional batch norms (de Vries et al. 2017, as in Miyato & Koyama 2018: per-class gain
and bias from a linear map of ``c``); the discriminator is a projection discriminator (Miyato & Koyama,
"cGANs with Projection Discriminator", 2018): logit = ψ(φ(x)) + ⟨V c, φ(x)⟩, with φ the features, ψ the
final linear layer and V an embedding of the label (spectrally normalised in SNGAN's).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._labels import check_labels
from ._sn import spectral_norm
from ._spec import BuildableModule

RESOLUTIONS = (16, 32, 64, 128)


def _stages(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}; got {resolution}")
    return int(math.log2(resolution // 4))


class ConditionalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose affine transform depends on the label: y = x̂ · (γ + W_γ c) + (β + W_β c), x̂ the
    normalised input. W_γ, W_β start at zero, so every class starts with gain 1 and bias 0; for one-hot ``c``
    the columns of W are per-class offsets (an embedding). With ``c_dim`` 0 it is ``nn.BatchNorm2d``."""

    def __init__(self, num_features: int, c_dim: int = 0):
        super().__init__(num_features)
        self.c_dim = c_dim
        if c_dim:
            self.gain = nn.Linear(c_dim, num_features, bias=False)
            self.shift = nn.Linear(c_dim, num_features, bias=False)
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if not self.c_dim:
            return super().forward(x)
        if self.training:  # the bookkeeping nn.BatchNorm2d does (momentum is set, so the counter is not used)
            self.num_batches_tracked.add_(1)
        x = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, self.momentum, self.eps)
        gain = (self.weight + self.gain(c)).unsqueeze(-1).unsqueeze(-1)
        shift = (self.bias + self.shift(c)).unsqueeze(-1).unsqueeze(-1)
        return x * gain + shift


class DCGANGenerator(BuildableModule):
    def __init__(self, z_dim: int = 64, resolution: int = 16, channels: int = 1, base_channels: int = 64,
                 c_dim: int = 0):
        super().__init__()
        stages = _stages(resolution)
        self.z_dim, self.resolution, self.channels, self.c_dim = z_dim, resolution, channels, c_dim
        width = base_channels * 2 ** (stages - 1)
        self.input = nn.Sequential(nn.Linear(z_dim, width * 16), nn.Unflatten(1, (width, 4, 4)),
                                   ConditionalBatchNorm2d(width, c_dim), nn.ReLU())
        blocks = []
        for _ in range(stages):
            blocks += [nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1),
                       ConditionalBatchNorm2d(width // 2, c_dim), nn.ReLU()]
            width //= 2
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        c = check_labels(c, self.c_dim, z.shape[0], type(self).__name__)
        x = z
        for layer in (*self.input, *self.blocks):
            x = layer(x, c) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return torch.tanh(self.to_image(x))


SNGANGenerator = DCGANGenerator


class _ConvDiscriminator(BuildableModule):
    def __init__(self, resolution: int, channels: int, base_channels: int, sn: bool, c_dim: int):
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
        self.embed = norm(nn.Linear(c_dim, width * 16, bias=False)) if c_dim else None
        self.resolution, self.c_dim = resolution, c_dim

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        c = check_labels(c, self.c_dim, x.shape[0], type(self).__name__)
        features = self.features(x)
        logit = self.logit(features).squeeze(1)
        if self.embed is not None:  # the projection term ⟨V c, φ(x)⟩
            logit = logit + (self.embed(c.to(features.dtype)) * features).sum(dim=1)
        return logit


class DCGANDiscriminator(_ConvDiscriminator):
    def __init__(self, resolution: int = 16, channels: int = 1, base_channels: int = 32, c_dim: int = 0):
        super().__init__(resolution, channels, base_channels, sn=False, c_dim=c_dim)


class SNGANDiscriminator(_ConvDiscriminator):
    def __init__(self, resolution: int = 16, channels: int = 1, base_channels: int = 32, c_dim: int = 0):
        super().__init__(resolution, channels, base_channels, sn=True, c_dim=c_dim)
