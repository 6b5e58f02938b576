"""Reference modulated convolution (StyleGAN2's weight modulation / demodulation), StyleGAN2-ADA semantics.

For sample n, output channel o, input channel i:
    w'[n, o, i, :, :] = w[o, i, :, :] · s[n, i]                                      (modulation)
    d[n, o]           = rsqrt(Σ_{i,kh,kw} w'[n, o, i]² + 1e-8)                       (demodulation)
    y[n]              = d[n, :] · conv2d_resample(x[n], w'[n], f, up, down, padding) + noise
Since s scales input channels and d scales output channels, the same y is
    y = d · conv2d_resample(x · s, w) + noise,
which is the ``fused_modconv=False`` route (scale activations before and after one shared convolution);
``fused_modconv=True`` builds the per-sample weights and runs one grouped convolution over the batch. Both are
written out below; they agree up to rounding.

float16 inputs with ``demodulate`` are pre-normalised as in StyleGAN2-ADA, to keep w' in range:
weights by 1/√(I·kh·kw)/max|w| per output channel, styles by 1/max|s| per sample (d cancels both scales).
"""
from __future__ import annotations

import math

import torch

from .conv2d_resample import conv2d_resample
from .upfirdn2d import IntOrPair

DEMOD_EPS = 1e-8


def prenormalize(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2-ADA's float16 pre-normalisation of the weight (O, I, kh, kw) and styles (N, I)."""
    fan_in = weight[0].numel()
    weight = weight * (1 / math.sqrt(fan_in) / torch.linalg.vector_norm(weight, math.inf, dim=(1, 2, 3),
                                                                          keepdim=True))
    styles = styles / torch.linalg.vector_norm(styles, math.inf, dim=1, keepdim=True)
    return weight, styles


def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """d[n, o] = rsqrt(Σ_{i,k} (w[o, i, k] · s[n, i])² + 1e-8), shape (N, O)."""
    modulated = weight[None] * styles[:, None, :, None, None]
    return (modulated.square().sum(dim=(2, 3, 4)) + DEMOD_EPS).rsqrt()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, down: int = 1, padding: IntOrPair = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True) -> torch.Tensor:
    """x (N, I, H, W), weight (O, I, kh, kw), styles (N, I), noise broadcastable to the output (added after
    demodulation); up/down/padding/resample_filter/flip_weight as in ``conv2d_resample``."""
    batch = x.shape[0]
    if x.dtype == torch.float16 and demodulate:
        weight, styles = prenormalize(weight, styles)
    dcoefs = demod_coefficients(weight, styles) if demodulate else None
    resample = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)

    if not fused_modconv:  # scale the activations before and after one convolution shared by the batch
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = conv2d_resample(x, weight.to(x.dtype), **resample)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        return x if noise is None else x + noise.to(x.dtype)

    # one grouped convolution: the batch becomes the group dimension, each group with its own weights
    w = weight[None] * styles[:, None, :, None, None]
    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None]
    y = conv2d_resample(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, *weight.shape[1:]).to(x.dtype),
                        groups=batch, **resample)
    y = y.reshape(batch, -1, *y.shape[2:])
    return y if noise is None else y + noise.to(y.dtype)
