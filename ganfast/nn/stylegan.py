"""StyleGAN2 building blocks on ganfast ops: equalised-lr FullyConnectedLayer, ModulatedConv2d, SynthesisLayer
and ToRGBLayer, with StyleGAN2-ADA's parameters, initialisation and forward arguments (so their state_dicts load).

    layer = ganfast.nn.SynthesisLayer(512, 512, w_dim=512, resolution=32, up=2, conv_clamp=256)
    y = layer(x, w)                        # x: (N, 512, 16, 16), w: (N, 512) -> (N, 512, 32, 32)
"""
from __future__ import annotations

import math

import torch

from ..ops.bias_act import bias_act
from ..ops.modulated_conv2d import modulated_conv2d, modulated_conv2d_bias_act
from ..reference.bias_act import ACTIVATIONS
from ..reference.upfirdn2d import setup_filter
from .noise import random_noise

NOISE_MODES = ("random", "const", "none")


class FullyConnectedLayer(torch.nn.Module):
    """y = act(x @ (w · lr/√in)ᵀ + b · lr): equalised learning rate; b starts at ``bias_init``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1, bias_init: float = 0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        y = x.matmul(w.t())  # under autocast y may be of a lower precision than x: b follows y
        return bias_act(y, None if b is None else b.to(y.dtype), act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class ModulatedConv2d(torch.nn.Module):
    """A convolution whose weight is modulated per sample by ``styles`` (and demodulated): ``modulated_conv2d``
    with a (out, in, k, k) N(0, 1) weight, padding k // 2, and StyleGAN2's flip_weight = (up == 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, up: int = 1, down: int = 1,
                 demodulate: bool = True, resample_filter=(1, 3, 3, 1), impl: str | None = None):
        super().__init__()
        self.up, self.down, self.demodulate, self.padding, self.impl = up, down, demodulate, kernel_size // 2, impl
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.register_buffer("resample_filter", setup_filter(resample_filter))

    def forward(self, x: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                fused_modconv: bool = True) -> torch.Tensor:
        return modulated_conv2d(x, self.weight, styles, noise, up=self.up, down=self.down, padding=self.padding,
                                resample_filter=self.resample_filter, demodulate=self.demodulate,
                                flip_weight=self.up == 1, fused_modconv=fused_modconv, impl=self.impl)


class SynthesisLayer(torch.nn.Module):
    """StyleGAN2's synthesis layer: styles = affine(w); modulated conv (optionally up=2); noise (random,
    const or none, scaled by the learned ``noise_strength``); bias, activation, gain and clamp — the last four
    fused into the convolution by ``modulated_conv2d_bias_act``."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, channels_last: bool = False, impl: str | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.in_channels, self.out_channels, self.w_dim, self.resolution = in_channels, out_channels, w_dim, resolution
        self.up, self.use_noise, self.activation = up, use_noise, activation
        self.conv_clamp, self.impl = conv_clamp, impl
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size)
                                         .to(memory_format=memory_format))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        expected = (x.shape[0], self.in_channels, self.resolution // self.up, self.resolution // self.up)
        if tuple(x.shape) != expected:
            raise ValueError(f"x must have shape {expected}, got {tuple(x.shape)}")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = random_noise(x.shape[0], self.resolution, self.resolution, x.device,
                                 x.dtype) * self.noise_strength.to(x.dtype)
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return modulated_conv2d_bias_act(x, self.weight, styles, noise, self.bias.to(x.dtype), up=self.up,
                                         padding=self.padding, resample_filter=self.resample_filter,
                                         flip_weight=self.up == 1, act=self.activation, gain=self.act_gain * gain,
                                         clamp=clamp, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"resolution={self.resolution}, up={self.up}, activation={self.activation}")


class ToRGBLayer(torch.nn.Module):
    """StyleGAN2's toRGB: a modulated (not demodulated) k×k convolution, styles scaled by 1/√(in·k²), + bias,
    clamped to ±conv_clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False, impl: str | None = None):
        super().__init__()
        self.conv_clamp, self.impl = conv_clamp, impl
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size)
                                         .to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        return modulated_conv2d_bias_act(x, self.weight, styles, None, self.bias.to(x.dtype), demodulate=False,
                                         clamp=self.conv_clamp, impl=self.impl)
