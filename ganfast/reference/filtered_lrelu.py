"""Reference filtered leaky ReLU with StyleGAN3's ``filtered_lrelu`` semantics, composed of the reference
bias_act and upfirdn2d.

For each channel of x (N, C, H, W):
    1. add the bias b[c],
    2. upsample by zero insertion, pad by (x0, x1, y0, y1) with respect to the upsampled image (negative crops)
       and FIR-filter with fu (gain up², so that the signal's mean is kept),
    3. y = clamp(lrelu(v, slope) · gain, −clamp, clamp),
    4. FIR-filter with fd and keep every down-th pixel.
Output size per axis: (in·up + pad0 + pad1 − (fu_taps − 1) − (fd_taps − 1) + down − 1) // down.
Both filters are convolved (``flip_filter=True``: correlated); a 1-D filter is separable.
"""
from __future__ import annotations

import math

import torch

from .bias_act import bias_act
from .upfirdn2d import IntOrPair, parse_padding, upfirdn2d


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding: IntOrPair = 0,
                   gain: float = math.sqrt(2), slope: float = 0.2, clamp: float | None = None,
                   flip_filter: bool = False) -> torch.Tensor:
    """The oracle for :func:`ganfast.ops.filtered_lrelu` (same arguments, no validation beyond the essentials)."""
    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=parse_padding(padding), gain=up ** 2, flip_filter=flip_filter)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter)
