"""R3GAN's generator and discriminator (Huang, Gokaslan, Kuleshov, Tompkin, "The GAN is dead; long live the GAN!
A Modern GAN Baseline", NeurIPS 2024), on ganfast ops.

Each stage is a resolution; ``widths``, ``cardinalities`` and ``blocks`` list the stages from 4x4 up to the image
size (for both networks). A residual block is ``x + W3 · act(Wg · act(W1 · x))`` with W1 a 1x1 conv C -> E·C,
Wg a grouped 3x3 conv (``cardinality`` groups), W3 a 1x1 conv E·C -> C, act = leaky ReLU 0.2 with its bias
(``bias_act``; the convs have none). No normalisation. Fix-up initialisation: W ~ N(0, (g/√fan_in)²) with
g = √(2/(1+0.2²)) · L^(-1/4) for W1 and Wg (L: the network's number of blocks), W3 = 0, gain 1 elsewhere.

G: ``[z; embed(c)]`` -> Linear -> per-channel scale of a learned 4x4 basis -> blocks; each further stage: 1x1 conv
where the width changes, bilinear x2 upsampling ([1, 3, 3, 1] FIR, ``upsample2d``), blocks; a 1x1 conv to RGB
(no tanh). D mirrors it: a 1x1 conv from RGB, per stage blocks then x2 downsampling and a 1x1 conv where the width
changes, at 4x4 a depthwise 4x4 conv and a Linear to one logit, or (``c_dim`` > 0) to an embedding whose dot
product with ``embed(c)`` is the logit (projection). ``bf16_stages``: the k highest-resolution stages run under
bf16 autocast (R3GAN's mixed precision; off on the CPU unless asked).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import bias_act, downsample2d, setup_filter, upsample2d
from ._labels import check_labels
from ._spec import BuildableModule

__all__ = ["R3GANDiscriminator", "R3GANGenerator"]

SLOPE = 0.2
ACT_GAIN = math.sqrt(2 / (1 + SLOPE ** 2))  # keeps the variance through leaky ReLU 0.2


def _init(layer: nn.Module, gain: float) -> nn.Module:
    """W ~ N(0, (gain / √fan_in)²) (MSR initialisation); gain 0 gives zeros."""
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.normal_(0, gain / math.sqrt(fan_in)) if gain else layer.weight.zero_()
    return layer


def _conv(cin: int, cout: int, kernel: int = 1, groups: int = 1, gain: float = 1.0) -> nn.Conv2d:
    return _init(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False), gain)


class BiasedActivation(nn.Module):
    """``bias_act(x, b, act="lrelu", alpha=0.2, gain=1)``: the only biases of the networks."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", alpha=SLOPE, gain=1)


class ResidualBlock(nn.Module):
    """``x + conv3(act(conv_g(act(conv1(x)))))``; see the module docstring for the widths and initialisation."""

    def __init__(self, channels: int, cardinality: int, expansion: int, num_blocks: int, kernel: int = 3):
        super().__init__()
        expanded = channels * expansion
        if expanded % cardinality:
            raise ValueError(f"cardinality {cardinality} must divide the expanded width {expanded} "
                             f"({channels} channels x expansion {expansion})")
        gain = ACT_GAIN * num_blocks ** -0.25  # L^(-1/(2m-2)) with m = 3 layers per block
        self.conv1 = _conv(channels, expanded, 1, gain=gain)
        self.act1 = BiasedActivation(expanded)
        self.conv2 = _conv(expanded, expanded, kernel, groups=cardinality, gain=gain)
        self.act2 = BiasedActivation(expanded)
        self.conv3 = _conv(expanded, channels, 1, gain=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


class Upsample(nn.Module):
    """1x1 conv (only where the width changes), then x2 upsampling with the FIR filter."""

    def __init__(self, cin: int, cout: int, resample_filter):
        super().__init__()
        self.linear = _conv(cin, cout) if cin != cout else None
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x if self.linear is None else self.linear(x)
        return upsample2d(x, self.resample_filter.to(x.dtype))


class Downsample(nn.Module):
    """x2 downsampling with the FIR filter, then a 1x1 conv where the width changes."""

    def __init__(self, cin: int, cout: int, resample_filter):
        super().__init__()
        self.linear = _conv(cin, cout) if cin != cout else None
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = downsample2d(x, self.resample_filter.to(x.dtype))
        return x if self.linear is None else self.linear(x)


class GenerativeBasis(nn.Module):
    """``basis (C, 4, 4) · Linear(z)_c``: a learned 4x4 pattern per channel, scaled per sample."""

    def __init__(self, in_features: int, channels: int):
        super().__init__()
        self.basis = nn.Parameter(torch.randn(channels, 4, 4))
        self.linear = _init(nn.Linear(in_features, channels, bias=False), 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.basis.to(z.dtype).unsqueeze(0) * self.linear(z)[:, :, None, None]


class DiscriminativeBasis(nn.Module):
    """A depthwise 4x4 conv (4x4 -> 1x1 per channel), then a Linear to ``out_features``."""

    def __init__(self, channels: int, out_features: int):
        super().__init__()
        self.basis = _conv(channels, channels, 4, groups=channels)
        self.basis.padding = 0
        self.linear = _init(nn.Linear(channels, out_features, bias=False), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.basis(x).flatten(1))


def _stages(img_resolution: int, widths, cardinalities, blocks) -> int:
    if not isinstance(img_resolution, int) or img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution!r}")
    count = int(math.log2(img_resolution)) - 1
    for name, values in (("widths", widths), ("cardinalities", cardinalities), ("blocks", blocks)):
        if len(values) != count or any(not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"{name} must list {count} positive integers (one per stage, 4x4 to "
                             f"{img_resolution}x{img_resolution}), got {list(values)!r}")
    return count


def _run_stage(stage: nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    """The stage on x; with ``bf16``, all of it (residual stream included) in bfloat16, as R3GAN's stage dtypes."""
    if not bf16:
        return stage(x)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        return stage(x.to(torch.bfloat16))


class R3GANGenerator(BuildableModule):
    """R3GAN's generator: ``G(z, c)`` -> images (N, img_channels, R, R), unbounded (no tanh)."""

    def __init__(self, z_dim: int = 64, c_dim: int = 0, img_resolution: int = 16, img_channels: int = 3,
                 widths: tuple = (64, 64, 64), cardinalities: tuple = (8, 8, 8), blocks: tuple = (1, 1, 1),
                 expansion: int = 2, c_embed_dim: int | None = None, bf16_stages: int = 0,
                 resample_filter: tuple = (1, 3, 3, 1)):
        super().__init__()
        widths, cardinalities, blocks = list(widths), list(cardinalities), list(blocks)
        count = _stages(img_resolution, widths, cardinalities, blocks)
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, c_dim, img_resolution, img_channels
        self.bf16_stages = bf16_stages
        embed = (c_embed_dim or z_dim) if c_dim else 0
        self.embed = _init(nn.Linear(c_dim, embed, bias=False), 1.0) if c_dim else None
        total = sum(blocks)
        self.stages = nn.ModuleList()
        for i in range(count):
            first = GenerativeBasis(z_dim + embed, widths[0]) if i == 0 else \
                Upsample(widths[i - 1], widths[i], resample_filter)
            self.stages.append(nn.Sequential(first, *(ResidualBlock(widths[i], cardinalities[i], expansion, total)
                                                      for _ in range(blocks[i]))))
        self.to_rgb = _conv(widths[-1], img_channels)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        c = check_labels(c, self.c_dim, z.shape[0], "R3GANGenerator")
        dtype = self.to_rgb.weight.dtype
        x = z.to(dtype) if c is None else torch.cat([z.to(dtype), self.embed(c.to(dtype))], dim=1)
        count = len(self.stages)
        for i, stage in enumerate(self.stages):
            x = _run_stage(stage, x, i >= count - self.bf16_stages)
        return self.to_rgb(x.to(dtype))


class R3GANDiscriminator(BuildableModule):
    """R3GAN's discriminator: ``D(x, c)`` -> logits (N,)."""

    def __init__(self, c_dim: int = 0, img_resolution: int = 16, img_channels: int = 3,
                 widths: tuple = (64, 64, 64), cardinalities: tuple = (8, 8, 8), blocks: tuple = (1, 1, 1),
                 expansion: int = 2, c_embed_dim: int | None = None, bf16_stages: int = 0,
                 resample_filter: tuple = (1, 3, 3, 1)):
        super().__init__()
        widths, cardinalities, blocks = list(widths), list(cardinalities), list(blocks)
        count = _stages(img_resolution, widths, cardinalities, blocks)
        self.c_dim, self.img_resolution, self.img_channels, self.bf16_stages = c_dim, img_resolution, img_channels, \
            bf16_stages
        embed = (c_embed_dim or widths[0]) if c_dim else 0
        total = sum(blocks)
        self.from_rgb = _conv(img_channels, widths[-1])
        self.stages = nn.ModuleList()
        for i in reversed(range(count)):  # highest resolution first
            last = DiscriminativeBasis(widths[0], embed or 1) if i == 0 else \
                Downsample(widths[i], widths[i - 1], resample_filter)
            self.stages.append(nn.Sequential(*(ResidualBlock(widths[i], cardinalities[i], expansion, total)
                                               for _ in range(blocks[i])), last))
        self.embed = _init(nn.Linear(c_dim, embed, bias=False), 1 / math.sqrt(embed)) if c_dim else None

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        c = check_labels(c, self.c_dim, img.shape[0], "R3GANDiscriminator")
        x = _run_stage(self.from_rgb, img, self.bf16_stages > 0)
        for i, stage in enumerate(self.stages):
            x = _run_stage(stage, x, i < self.bf16_stages).to(self.from_rgb.weight.dtype)
        if c is not None:
            x = (x * self.embed(c.to(x.dtype))).sum(dim=1, keepdim=True)
        return x.reshape(x.shape[0])
