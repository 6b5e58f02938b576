"""StyleGAN3 generator (configs T and R), on ganfast ops: mapping network, Fourier-feature input, alias-free
synthesis layers (modulated convolution + ``filtered_lrelu``).

Karras et al., "Alias-Free Generative Adversarial Networks" (2021): config T (translation equivariance) uses 3×3
convolutions and separable Kaiser filters; config R (rotation equivariance) uses 1×1 convolutions and radially
symmetric jinc filters for the downsampling of the layers that are not critically sampled (NVlabs' training
also doubles R's channel_base and channel_max: ``ganfast train --model stylegan3-r`` does). The layer schedule
and filters are ``ganfast.nn.stylegan3``'s. The defaults are CPU-sized (NVlabs': 14 layers, 512-wide w).
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.stylegan import NOISE_MODES
from ..nn.stylegan3 import AliasFreeSynthesisLayer, SynthesisInput, layer_schedule
from ._spec import BuildableModule
from .stylegan2 import MappingNetwork, _log2_resolution

__all__ = ["AliasFreeSynthesisNetwork", "StyleGAN3Generator"]

STYLEGAN3_CONFIGS = {"t": {"conv_kernel": 3, "use_radial_filters": False},
                     "r": {"conv_kernel": 1, "use_radial_filters": True}}


class AliasFreeSynthesisNetwork(nn.Module):
    """ws (N, num_layers + 2, w_dim) → images (N, img_channels, img_resolution, img_resolution), float32:
    ``input`` takes ws[:, 0], layer i takes ws[:, i + 1]; the last layer is the toRGB; × ``output_scale``."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int, channel_max: int,
                 num_layers: int, num_critical: int, first_cutoff: float, first_stopband: float,
                 last_stopband_rel: float, margin_size: int, output_scale: float, num_fp16_res: int,
                 **layer_kwargs):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws, self.output_scale = num_layers + 2, output_scale
        self.schedule = s = layer_schedule(img_resolution, img_channels, channel_base, channel_max, num_layers,
                                           num_critical, first_cutoff, first_stopband, last_stopband_rel,
                                           margin_size)
        self.input = SynthesisInput(w_dim, s.channels[0], s.sizes[0], s.sampling_rates[0], s.cutoffs[0])
        self.layers = nn.ModuleList()
        for i in range(num_layers + 1):
            prev = max(i - 1, 0)
            self.layers.append(AliasFreeSynthesisLayer(
                w_dim, s.channels[prev], s.channels[i], s.sizes[prev], s.sizes[i], s.sampling_rates[prev],
                s.sampling_rates[i], s.cutoffs[prev], s.cutoffs[i], s.half_widths[prev], s.half_widths[i],
                is_torgb=i == num_layers, is_critically_sampled=i >= num_layers - num_critical,
                use_fp16=s.sampling_rates[i] * 2 ** num_fp16_res > img_resolution, **layer_kwargs))

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool = False,
                update_emas: bool | None = None) -> torch.Tensor:
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws = ws.float().unbind(dim=1)
        x = self.input(ws[0])
        for layer, w in zip(self.layers, ws[1:]):
            x = layer(x, w, force_fp32=force_fp32, update_emas=update_emas)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.float()


class StyleGAN3Generator(BuildableModule):
    """``G(z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode='random')`` → images in ~[-1, 1],
    shape (N, img_channels, img_resolution, img_resolution); ``noise_mode`` is accepted and ignored (as NVlabs':
    StyleGAN3 has no noise). In training mode (or with ``update_emas``) each call moves the mapping's w_avg and
    every layer's magnitude_ema. ``conv_kernel`` 3 and ``use_radial_filters`` False: config T; 1 and True:
    config R (``STYLEGAN3_CONFIGS``)."""

    def __init__(self, z_dim: int = 64, c_dim: int = 0, w_dim: int = 64, img_resolution: int = 16,
                 img_channels: int = 1, channel_base: int = 1024, channel_max: int = 32, num_layers: int = 6,
                 num_critical: int = 2, margin_size: int = 10, output_scale: float = 0.25, conv_kernel: int = 3,
                 use_radial_filters: bool = False, filter_size: int = 6, lrelu_upsampling: int = 2,
                 first_cutoff: float = 2, first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3,
                 conv_clamp: float | None = 256, magnitude_ema_beta: float = 0.999, mapping_layers: int = 2,
                 num_fp16_res: int = 0):
        super().__init__()
        _log2_resolution(img_resolution, "img_resolution")
        for name, value in (("conv_kernel", conv_kernel), ("filter_size", filter_size),
                            ("lrelu_upsampling", lrelu_upsampling), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = AliasFreeSynthesisNetwork(
            w_dim, img_resolution, img_channels, channel_base, channel_max, num_layers, num_critical, first_cutoff,
            first_stopband, last_stopband_rel, margin_size, output_scale, num_fp16_res, conv_kernel=conv_kernel,
            filter_size=filter_size, lrelu_upsampling=lrelu_upsampling, use_radial_filters=use_radial_filters,
            conv_clamp=conv_clamp, magnitude_ema_beta=magnitude_ema_beta)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers, w_avg_beta=0.998)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "random", update_emas: bool | None = None,
                force_fp32: bool = False) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, update_emas=update_emas)
