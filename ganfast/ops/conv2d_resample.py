"""conv2d_resample: 2-D convolution with optional FIR up/downsampling (StyleGAN2-ADA's ``conv2d_resample``).

Mathematically ``downsample_f(conv_w(upsample_f(x)))`` exactly as ganfast.reference.conv2d_resample writes it;
computed here through cheaper equivalent routes. Every route rests on two facts: a "valid" convolution with
w and a depthwise filtering with f commute (both are linear and shift-invariant, f the same on every channel),
and a 1×1 convolution commutes with every per-channel spatial operation.
    1×1 w, down only:  downsample (filter, pad, decimate) the C input channels, then the 1×1 conv
    1×1 w, up only:    the 1×1 conv, then upsample the O output channels
    down only:         pad + filter, then a strided conv (decimating the conv's output = striding it)
    up > 1:            conv_transpose2d (stride up) = the conv of the zero-inserted input, then the
                       filter with the remaining padding (gain up²), then the optional downsample
    no resampling:     conv2d with its own symmetric padding, or explicit padding when asymmetric/negative
The filtering steps use ganfast.ops.upfirdn2d with this call's ``impl``, the convolutions torch's
conv2d/conv_transpose2d (whatever the impl: ganfast has no convolution kernel of its own here);
``impl="ref"`` runs ganfast.reference.conv2d_resample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._dispatch import register_op
from ..reference.conv2d_resample import check_factor, oriented_weight, resample_padding
from ..reference.conv2d_resample import conv2d_resample as conv2d_resample_ref
from ..reference.upfirdn2d import IntOrPair
from ._common import autocast_input, check_same_device, check_tensor, no_autocast
from .upfirdn2d import upfirdn2d

__all__ = ["conv2d_resample"]

_OP = register_op("conv2d_resample", {"cpu": ("ext", "ref"), "cuda": ("ext", "triton", "ref")},
                  notes={impl: "torch's conv2d/conv_transpose2d with ganfast's upfirdn2d kernels for the filter steps"
                         for impl in ("ext", "triton")})


def _transposed_weight(w: torch.Tensor, groups: int, flip_weight: bool) -> torch.Tensor:
    """w (O, C/g, kh, kw) as conv_transpose2d's (C, O/g, kh, kw): per group, in and out swapped. A transposed
    conv convolves (it flips the kernel), so the orientation is the opposite of ``oriented_weight``'s."""
    out_channels, in_per_group, kh, kw = w.shape
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
    w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    return w.flip([2, 3]) if flip_weight else w


def _upsampling_conv(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None, up: int,
                     pads: list[int], groups: int, flip_weight: bool, flip_filter: bool, impl: str | None
                     ) -> torch.Tensor:
    """conv_w(filter_f(pad(zero_insert(x)))) as conv_transpose2d(x) followed by the filter.

    Per axis, the valid conv of the padded zero-inserted input equals the full transposed conv (stride up,
    no padding) padded by (pad0 − (k − 1), pad1 − (k − up)). conv_transpose2d crops symmetrically by its
    ``padding`` q ≥ 0, so q takes the part of the crop both sides share; the filter step pads the rest."""
    kh, kw = w.shape[2:]
    px0, px1, py0, py1 = pads
    px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
    qx, qy = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
    x = F.conv_transpose2d(x, _transposed_weight(w, groups, flip_weight), stride=up, padding=[qy, qx],
                           groups=groups)
    return upfirdn2d(x, f, padding=[px0 + qx, px1 + qx, py0 + qy, py1 + qy], gain=up ** 2, flip_filter=flip_filter,
                     impl=impl)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding: IntOrPair = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False, impl: str | None = None) -> torch.Tensor:
    """2-D convolution with optional up/downsampling, a drop-in for StyleGAN2-ADA's ``conv2d_resample``.

    Args:
        x: (N, C, H, W) float tensor; under autocast cast to its dtype first, as torch's conv2d is (see
            ganfast.ops._common).
        w: (O, C/groups, kh, kw) weight (cast to x's dtype).
        f: FIR filter for the resampling (from ``setup_filter``), or None.
        up, down: integer resampling factors (≥ 1).
        padding: int, [x, y] or [x0, x1, y0, y1] padding of the (upsampled) input; negative crops.
        groups: convolution groups.
        flip_weight: False means a true convolution (the weight flipped), True a correlation (torch's conv2d).
        flip_filter: correlate with f instead of convolving.
        impl: None/"auto"/"cuda", "ref", "ext" or "triton": the reference, or the FIR-filter kernels used around
            torch's convolutions (see ganfast._dispatch).
    Returns:
        (N, O, H', W'), equal to ganfast.reference.conv2d_resample; differentiable twice in x and w.
    """
    check_tensor("x", x, ndim=4)
    check_tensor("w", w, ndim=4)
    check_same_device(x, w=w, f=f)
    up, down = check_factor(up, "up"), check_factor(down, "down")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    out_channels, in_per_group, kh, kw = w.shape
    if out_channels % groups:
        raise ValueError(f"groups={groups} must divide w's output channels ({out_channels})")
    if x.shape[1] != in_per_group * groups:
        raise ValueError(f"x has {x.shape[1]} channels but w expects {in_per_group} x groups={groups} = "
                         f"{in_per_group * groups}")
    x = autocast_input(x)
    if _OP.resolve(impl, x.device, x.dtype) == "ref":
        with no_autocast(x):
            return conv2d_resample_ref(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
    w = w.to(x.dtype)
    pads = resample_padding(f, up, down, padding)
    px0, px1, py0, py1 = pads

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=pads, flip_filter=flip_filter, impl=impl)
        return F.conv2d(x, w, groups=groups)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = F.conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=pads, gain=up ** 2, flip_filter=flip_filter, impl=impl)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=pads, flip_filter=flip_filter, impl=impl)
        return F.conv2d(x, oriented_weight(w, flip_weight), stride=down, groups=groups)
    if up > 1:
        x = _upsampling_conv(x, w, f, up, pads, groups, flip_weight, flip_filter, impl)
        return upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl) if down > 1 else x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, oriented_weight(w, flip_weight), padding=[py0, px0], groups=groups)
    x = upfirdn2d(x, None, padding=pads, impl=impl)
    return F.conv2d(x, oriented_weight(w, flip_weight), groups=groups)
