"""Reference upfirdn2d (upsample, FIR filter, downsample) with StyleGAN2-ADA's semantics, and its helpers.

For each channel of x (N, C, H, W):
    1. upsample: insert up−1 zeros after every pixel (per axis),
    2. pad with zeros (a negative padding crops),
    3. convolve with the FIR filter f (a true convolution; ``flip_filter=True`` makes it a correlation),
       f scaled by gain**(f.ndim / 2): a 1-D f is separable and is applied along x and then along y,
    4. keep every down-th pixel.
Output size per axis: (in·up + pad0 + pad1 − taps + down) // down.

The argument parsers and the padding rules of ``upsample2d`` / ``downsample2d`` / ``filter2d`` live here once and
are shared with ``ganfast.ops.upfirdn2d``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

IntOrPair = int | Sequence[int]


def _as_tuple(value) -> tuple:
    """``value`` as a tuple, or () when it is not a sequence (so that the caller's error message applies)."""
    try:
        return tuple(value)
    except TypeError:
        return ()


def parse_scaling(value: IntOrPair, name: str) -> tuple[int, int]:
    """``up``/``down`` as (x, y): an int or a pair of ints ≥ 1."""
    pair = (value, value) if isinstance(value, int) else _as_tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be an int >= 1 or a pair [x, y] of such ints, got {value!r}")
    return pair


def parse_padding(value: IntOrPair) -> tuple[int, int, int, int]:
    """``padding`` as (x0, x1, y0, y1): an int, [x, y] or [x0, x1, y0, y1]; negative values crop."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * 4
    pads = _as_tuple(value)
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in pads) or len(pads) not in (2, 4):
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1] of ints, got {value!r}")
    return (pads[0], pads[0], pads[1], pads[1]) if len(pads) == 2 else pads


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) in taps of a 2-D or separable 1-D filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    return f.shape[-1], f.shape[0]


def setup_filter(f, device=torch.device("cpu"), normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1, separable: bool | None = None) -> torch.Tensor:
    """A float32 FIR filter for upfirdn2d from a list/array/tensor of taps (None: the identity [1]).

    A 1-D filter stays separable (1-D) when ``separable`` or, by default, when it has ≥ 8 taps; otherwise it
    becomes its 2-D outer product. ``normalize`` divides by the sum of the taps; ``gain`` multiplies by
    gain**(f.ndim / 2), so that the 2-D filter's overall gain is ``gain`` either way.
    """
    f = torch.as_tensor(1 if f is None else f, dtype=torch.float32, device=device)
    if f.ndim > 2 or f.numel() == 0:
        raise ValueError(f"f must be a scalar, 1-D or 2-D array of taps, got shape {tuple(f.shape)}")
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("separable=True needs a 1-D filter")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * gain ** (f.ndim / 2)


def upsample_padding(f: torch.Tensor | None, up: IntOrPair, padding: IntOrPair) -> list[int]:
    """upfirdn2d padding for ``upsample2d``: the output is in·up, aligned like nearest-neighbour upsampling."""
    (upx, upy), (px0, px1, py0, py1), (fw, fh) = parse_scaling(up, "up"), parse_padding(padding), filter_size(f)
    return [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]


def downsample_padding(f: torch.Tensor | None, down: IntOrPair, padding: IntOrPair) -> list[int]:
    """upfirdn2d padding for ``downsample2d``: the output is in/down."""
    (dx, dy), (px0, px1, py0, py1), (fw, fh) = parse_scaling(down, "down"), parse_padding(padding), filter_size(f)
    return [px0 + (fw - dx + 1) // 2, px1 + (fw - dx) // 2, py0 + (fh - dy + 1) // 2, py1 + (fh - dy) // 2]


def filter_padding(f: torch.Tensor | None, padding: IntOrPair) -> list[int]:
    """upfirdn2d padding for ``filter2d``: the output has the input's size."""
    (px0, px1, py0, py1), (fw, fh) = parse_padding(padding), filter_size(f)
    return [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: IntOrPair = 1, down: IntOrPair = 1,
              padding: IntOrPair = 0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample each channel of x (N, C, H, W); see the module docstring."""
    (upx, upy), (downx, downy) = parse_scaling(up, "up"), parse_scaling(down, "down")
    px0, px1, py0, py1 = parse_padding(padding)
    n, c, h, w = x.shape
    if f is None:
        f = torch.ones(1, 1, dtype=x.dtype, device=x.device)
    # 1. zero insertion: each pixel becomes a upy × upx block with the pixel in its top-left corner
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)
    # 2. pad with zeros, then crop where the padding is negative
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    # 3. depthwise convolution (conv2d correlates, so flip f for a true convolution)
    f = (f * gain ** (f.ndim / 2)).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    weight = f[None, None].expand(c, 1, *f.shape)
    if f.ndim == 2:
        x = F.conv2d(x, weight, groups=c)
    else:
        x = F.conv2d(x, weight.unsqueeze(2), groups=c)  # along x
        x = F.conv2d(x, weight.unsqueeze(3), groups=c)  # along y
    # 4. decimation
    return x[:, :, ::downy, ::downx]


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1):
    """Upsample by ``up`` with the FIR filter f (gain × up_x·up_y keeps the signal's mean)."""
    upx, upy = parse_scaling(up, "up")
    return upfirdn2d(x, f, up=up, padding=upsample_padding(f, up, padding), flip_filter=flip_filter,
                     gain=gain * upx * upy)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1):
    """Filter with f, then downsample by ``down``."""
    return upfirdn2d(x, f, down=down, padding=downsample_padding(f, down, padding), flip_filter=flip_filter,
                     gain=gain)


def filter2d(x, f, padding=0, flip_filter=False, gain=1):
    """Filter with f, keeping the size (plus ``padding``)."""
    return upfirdn2d(x, f, padding=filter_padding(f, padding), flip_filter=flip_filter, gain=gain)
