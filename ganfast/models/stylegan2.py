"""StyleGAN2 generator (mapping + skip synthesis) and discriminator (resnet + minibatch std), on ganfast ops.

The architecture and initialisation follow Karras et al., "Analyzing and Improving the Image Quality of
StyleGAN" (2020) as configured in StyleGAN2-ADA: equalised learning rate (weights drawn from N(0, 1) and scaled
by 1/√fan_in at run time), channels = min(channel_base / resolution, channel_max), float16 in the
``num_fp16_res`` highest resolutions with activations clamped to ±``conv_clamp``, [1, 3, 3, 1] resampling
filter. The defaults are small enough to train on a CPU at 16–32 px.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..nn import FullyConnectedLayer, SynthesisLayer, ToRGBLayer
from ._labels import check_labels
from ._spec import BuildableModule
from ..ops import bias_act, conv2d_resample, setup_filter, upsample2d

__all__ = ["MappingNetwork", "StyleGAN2Discriminator", "StyleGAN2Generator"]


def _channels(resolution: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // resolution, channel_max)


def _log2_resolution(resolution: int, name: str) -> int:
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"{name} must be a power of two >= 4, got {resolution!r}")
    return int(math.log2(resolution))


def _fp16_threshold(img_resolution: int, num_fp16_res: int) -> int:
    """Blocks at resolution ≥ this run in float16 (on CUDA only; CPUs get float32)."""
    return max(2 ** (_log2_resolution(img_resolution, "img_resolution") + 1 - num_fp16_res), 8)


def _block_dtype(use_fp16: bool, x: torch.Tensor) -> torch.dtype:
    return torch.float16 if use_fp16 and x.device.type == "cuda" else torch.float32


# ---- generator -------------------------------------------------------------------------------------------------

class MappingNetwork(nn.Module):
    """z (and, for c_dim > 0, the label c) → w, broadcast to ``num_ws`` style vectors; tracks the mean w for the
    truncation trick: w' = w_avg + ψ·(w − w_avg). As in StyleGAN2-ADA, the input is the concatenation of
    normalize_2nd_moment(z) and normalize_2nd_moment(embed(c)) (embed: a linear layer c_dim → w_dim); with
    ``z_dim`` 0 (the discriminator's label mapping) it is the embedded label alone."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, c_dim, w_dim, num_ws, w_avg_beta
        self.embed = FullyConnectedLayer(c_dim, w_dim) if c_dim else None
        features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList(FullyConnectedLayer(i, o, activation="lrelu", lr_multiplier=lr_multiplier)
                                    for i, o in zip(features[:-1], features[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool | None = None) -> torch.Tensor:
        """ws (N, num_ws, w_dim). ``update_emas`` (None: in training mode) moves w_avg towards this batch's w."""
        parts = [_normalize_2nd_moment(z.float())] if self.z_dim else []
        batch = z.shape[0] if self.z_dim else (c.shape[0] if isinstance(c, torch.Tensor) else 0)
        c = check_labels(c, self.c_dim, batch, "the mapping network")
        if c is not None:
            parts.append(_normalize_2nd_moment(self.embed(c)))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for layer in self.layers:
            x = layer(x)
        if self.training if update_emas is None else update_emas:
            self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (2× up) conv0, conv1, and a ToRGB added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 use_fp16: bool, conv_clamp: float | None, resample_filter: list[int]):
        super().__init__()
        self.resolution, self.use_fp16, self.in_channels = resolution, use_fp16, in_channels
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str,
                fused_modconv: bool) -> tuple[torch.Tensor, torch.Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        dtype = _block_dtype(self.use_fp16, ws)
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x.to(dtype), next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).float()
        return x, y if img is None else img + y


class StyleGAN2Generator(BuildableModule):
    """``G(z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode='random')`` → images in ~[-1, 1],
    shape (N, img_channels, img_resolution, img_resolution). In training mode each call also moves the mapping
    network's w_avg (the truncation centre) towards the batch's mean w, as StyleGAN2-ADA's training loop does."""

    def __init__(self, z_dim: int = 64, c_dim: int = 0, w_dim: int = 64, img_resolution: int = 16,
                 img_channels: int = 1, channel_base: int = 1024, channel_max: int = 64, mapping_layers: int = 2,
                 num_fp16_res: int = 0, conv_clamp: float | None = None, resample_filter=(1, 3, 3, 1)):
        super().__init__()
        log2 = _log2_resolution(img_resolution, "img_resolution")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        fp16_from = _fp16_threshold(img_resolution, num_fp16_res)
        self.blocks = nn.ModuleList()
        in_channels = 0
        for res in (2 ** i for i in range(2, log2 + 1)):
            out_channels = _channels(res, channel_base, channel_max)
            self.blocks.append(SynthesisBlock(in_channels, out_channels, w_dim, res, img_channels,
                                              use_fp16=res >= fp16_from, conv_clamp=conv_clamp,
                                              resample_filter=list(resample_filter)))
            in_channels = out_channels
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1  # each block's ToRGB shares the next conv's w
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers)

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True) -> torch.Tensor:
        x = img = None
        start = 0
        for block in self.blocks:
            x, img = block(x, img, ws.narrow(1, start, block.num_conv + 1), noise_mode, fused_modconv)
            start += block.num_conv
        return img

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "random", update_emas: bool | None = None,
                fused_modconv: bool = True) -> torch.Tensor:
        check_labels(c, self.c_dim, z.shape[0], type(self).__name__)
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas)
        return self.synthesis(ws, noise_mode, fused_modconv)


# ---- discriminator ---------------------------------------------------------------------------------------------

class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional FIR up/downsampling, then bias + activation (+ clamp)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding,
                            flip_weight=self.up == 1)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        act_gain = (np.sqrt(2) if self.activation == "lrelu" else 1) * gain
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)


class DiscriminatorBlock(nn.Module):
    """Resnet block: (FromRGB at the top) conv 3×3, conv 3×3 with 2× down, plus a 1×1 downsampled skip, ×√½."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 use_fp16: bool, conv_clamp: float | None):
        super().__init__()
        self.use_fp16 = use_fp16
        self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu",
                                   conv_clamp=conv_clamp) if in_channels == 0 else None
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        dtype = _block_dtype(self.use_fp16, img)
        if self.fromrgb is not None:
            x = self.fromrgb(img.to(dtype))
        x = x.to(dtype)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation of features over groups of ``group_size`` samples as extra channels."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"batch size {n} must be divisible by the minibatch-std group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w).float()
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # std over the group
        y = y.mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1).repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(BuildableModule):
    """``D(img, c=None)`` → logits (N, 1); resnet architecture with minibatch std and (for c_dim > 0) a
    projection onto the embedded class label."""

    def __init__(self, img_resolution: int = 16, img_channels: int = 1, c_dim: int = 0, channel_base: int = 1024,
                 channel_max: int = 64, num_fp16_res: int = 0, conv_clamp: float | None = None,
                 mbstd_group_size: int = 4):
        super().__init__()
        log2 = _log2_resolution(img_resolution, "img_resolution")
        self.img_resolution, self.img_channels, self.c_dim = img_resolution, img_channels, c_dim
        fp16_from = _fp16_threshold(img_resolution, num_fp16_res)
        self.blocks = nn.ModuleList()
        for res in (2 ** i for i in range(log2, 2, -1)):
            in_channels = 0 if res == img_resolution else _channels(res, channel_base, channel_max)
            self.blocks.append(DiscriminatorBlock(in_channels, _channels(res, channel_base, channel_max),
                                                  _channels(res // 2, channel_base, channel_max), img_channels,
                                                  use_fp16=res >= fp16_from, conv_clamp=conv_clamp))
        channels4 = _channels(4, channel_base, channel_max)
        cmap_dim = channels4 if c_dim else 0
        self.fromrgb4 = Conv2dLayer(img_channels, channels4, 1, activation="lrelu") if log2 == 2 else None
        # the label mapping: 8 layers, as NVlabs (its D takes MappingNetwork's defaults; --map sets only G's)
        self.mapping = MappingNetwork(0, c_dim, cmap_dim, num_ws=1, num_layers=8) if c_dim else None
        self.mbstd = MinibatchStdLayer(mbstd_group_size)
        self.conv = Conv2dLayer(channels4 + 1, channels4, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(channels4 * 16, channels4, activation="lrelu")
        self.out = FullyConnectedLayer(channels4, cmap_dim or 1)
        self.cmap_dim = cmap_dim

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(c, self.c_dim, img.shape[0], type(self).__name__)
        x = self.fromrgb4(img) if self.fromrgb4 is not None else None
        for block in self.blocks:
            x = block(x, img)
        x = self.conv(self.mbstd(x.float()))
        x = self.out(self.fc(x.flatten(1)))
        if self.mapping is not None:
            cmap = self.mapping(None, c, update_emas=False)[:, 0]  # no w_avg: NVlabs' w_avg_beta=None here
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x
