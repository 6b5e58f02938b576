"""Reference conv2d_resample: a 2-D convolution with optional FIR up/downsampling (StyleGAN2-ADA semantics).

    y = downsample_f( conv_w( upsample_f(x) ) )

written as its definition: zero-insertion upsampling and filtering (gain up²) with the padding below,
the convolution, then filtering and decimation. ``ganfast.ops.conv2d_resample`` computes the same thing
through faster equivalent routes (transposed conv for up, strided conv for down).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .upfirdn2d import IntOrPair, filter_size, parse_padding, upfirdn2d


def check_factor(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def resample_padding(f: torch.Tensor | None, up: int, down: int, padding: IntOrPair) -> list[int]:
    """[x0, x1, y0, y1]: the user's padding plus what the up- and downsampling filters need, so that the output
    is (in·up + pads − k + 1) / down with the filters centred as in StyleGAN2-ADA."""
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    return [px0, px1, py0, py1]


def oriented_weight(w: torch.Tensor, flip_weight: bool) -> torch.Tensor:
    """conv2d correlates; ``flip_weight=False`` asks for a true convolution, i.e. the flipped kernel."""
    return w if flip_weight or w.shape[2:] == (1, 1) else w.flip([2, 3])


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding: IntOrPair = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    """x (N, C·groups… , H, W) convolved with w (O, C/groups, kh, kw), upsampled by ``up`` before and
    downsampled by ``down`` after, with the FIR filter f (from ``setup_filter``; None: box of one tap)."""
    up, down = check_factor(up, "up"), check_factor(down, "down")
    pads = resample_padding(f, up, down, padding)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=pads, gain=up ** 2, flip_filter=flip_filter)
    x = F.conv2d(x, oriented_weight(w, flip_weight).to(x.dtype), groups=groups)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
