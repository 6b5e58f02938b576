"""Reference StyleGAN2-ADA augmentation stages (Karras et al. 2020, appendix B), in plain torch ops.

An augmentation is applied in two parts: :class:`ganfast.augment.AugmentPipe` draws the per-image parameters
(:class:`AugmentParams`), and :func:`apply` transforms the images with them. Stages, in order:

- geometric: one 3×3 matrix ``G_inv`` per image maps output pixel positions (origin at the image centre) to
  input positions. The image is padded by reflection (enough that the transformed image stays covered),
  upsampled 2× with the symlet-6 wavelet lowpass, sampled bilinearly at the transformed grid and
  downsampled 2× with the same filter — one resampling however many transforms were composed;
- colour: one 4×4 matrix ``C`` per image acting on homogeneous RGB, one batched matmul here (for one channel:
  the mean of its first three rows, so the grey value moves as the luma of an RGB pixel would);
- image-space filtering: per image, the 4-band symlet-2 filter bank weighted by the band gains, applied
  separably along x and y with reflection padding;
- additive noise: ``images + sigma · noise``;
- cutout: pixels inside a box (centre, size as fractions of the image) set to zero.

The geometric stage here uses ``affine_grid``/``grid_sample`` and the reference upfirdn2d, the colour stage a
batched matmul; the fused pipeline (``ganfast.ops.affine_resample``, ``ganfast.ops.color_matrix``) must agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .affine_sample import affine_sample
from .color_matrix import color_matrix
from .upfirdn2d import downsample2d, upsample2d

# Orthonormal Daubechies symlet lowpass filters (PyWavelets' decomposition coefficients).
SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)
BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)  # expected power of each band of a natural image


def geometric_filter(device=None, dtype=torch.float32) -> torch.Tensor:
    """The 2× resampling filter: symlet-6 normalised to unit DC gain (12 taps)."""
    f = torch.tensor(SYM6, dtype=torch.float64)
    return (f / f.sum()).to(device=device, dtype=dtype)


def filter_bank() -> np.ndarray:
    """(4, taps) filters splitting an axis into octave bands from the symlet-2 pair: band 0 is the lowest
    octave, band 3 the highest; their sum is the identity. Each level upsamples the previous bank 2× by zero
    insertion, smooths it with the lowpass autocorrelation and adds the highpass autocorrelation to its band."""
    lo = np.asarray(SYM2)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2, hi2 = np.convolve(lo, lo[::-1]) / 2, np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(4, 1)
    for band in range(1, 4):
        spread = np.zeros((4, bank.shape[1] * 2 - 1))
        spread[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in spread])
        start = (bank.shape[1] - hi2.size) // 2
        bank[band, start:start + hi2.size] += hi2
    return bank


# ---- batched homogeneous matrices (each argument a tensor of shape (N,)) ----------------------------------------

def _stack(rows, like: torch.Tensor) -> torch.Tensor:
    """(N, r, c) from nested rows of scalars / (N,) tensors."""
    full = [[v if isinstance(v, torch.Tensor) else torch.full_like(like, float(v)) for v in row] for row in rows]
    return torch.stack([torch.stack(row, dim=-1) for row in full], dim=-2)


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _stack([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _stack([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    c, s = theta.cos(), theta.sin()
    return _stack([[c, (-theta).sin(), 0], [s, c, 0], [0, 0, 1]], theta)  # sin(−θ): StyleGAN2-ADA's rounding


def translate3d(tx: torch.Tensor, ty: torch.Tensor, tz: torch.Tensor) -> torch.Tensor:
    return _stack([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], tx)


def scale3d(sx: torch.Tensor, sy: torch.Tensor, sz: torch.Tensor) -> torch.Tensor:
    return _stack([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], sx)


def rotate3d(axis, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` about the unit vector ``axis`` (Rodrigues' formula), homogeneous 4×4."""
    vx, vy, vz = (float(a) for a in axis)
    c, s = theta.cos(), theta.sin()
    d = 1 - c
    return _stack([[vx * vx * d + c, vx * vy * d - vz * s, vx * vz * d + vy * s, 0],
                   [vy * vx * d + vz * s, vy * vy * d + c, vy * vz * d - vx * s, 0],
                   [vz * vx * d - vy * s, vz * vy * d + vx * s, vz * vz * d + c, 0],
                   [0, 0, 0, 1]], theta)


# ---- the stages -------------------------------------------------------------------------------------------------

@dataclass
class AugmentParams:
    """Per-image parameters of one augmentation; None skips a stage.

    G_inv (N, 3, 3) output → input pixel positions, origin at the image centre; C (N, 4, 4) colour matrix;
    band_gains (N, 4); noise (N, C, H, W) already scaled by each image's sigma; cutout_center and cutout_size
    (N, 2) as fractions of (width, height)."""
    G_inv: torch.Tensor | None = None
    C: torch.Tensor | None = None
    band_gains: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    cutout_center: torch.Tensor | None = None
    cutout_size: torch.Tensor | None = None


def geometric_plan(G_inv: torch.Tensor, height: int, width: int, taps: int):
    """Reflection padding (x0, x1, y0, y1) and the (N, 2, 3) ``theta`` that samples the 2× upsampled padded image
    (affine_grid's normalised coordinates) for the (2H + taps//2·4) × (2W + ...) canvas that the downsampling
    crops back to H × W. Padding covers the corners of every transformed image plus the filter's reach, at most
    the image size minus one (reflection's limit). Reads the matrices on the host (one sync)."""
    pad = taps // 4
    cx, cy = (width - 1) / 2, (height - 1) / 2
    g = G_inv.to(torch.float64)
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=torch.float64,
                           device=g.device)
    reach = (g @ corners.t())[:, :2, :].permute(1, 0, 2).flatten(1)  # (xy, batch·corner)
    margin = torch.cat([-reach, reach]).amax(dim=1)                  # x0, y0, x1, y1
    margin = margin + torch.tensor([pad * 2 - cx, pad * 2 - cy] * 2, dtype=torch.float64, device=g.device)
    limit = torch.tensor([width - 1, height - 1] * 2, dtype=torch.float64, device=g.device)
    mx0, my0, mx1, my1 = (int(v) for v in margin.clamp_min(0).minimum(limit).ceil().tolist())
    ones = torch.ones(len(g), dtype=torch.float64, device=g.device)
    half = ones * 0.5

    g = translate2d(ones * (mx0 - mx1) / 2, ones * (my0 - my1) / 2) @ g        # origin at the padded centre
    g = scale2d(ones * 2, ones * 2) @ g @ scale2d(half, half)                  # 2× upsampled pixel units
    g = translate2d(-half, -half) @ g @ translate2d(half, half)
    padded_w, padded_h = (width + mx0 + mx1) * 2, (height + my0 + my1) * 2
    out_w, out_h = (width + pad * 2) * 2, (height + pad * 2) * 2
    g = scale2d(ones * 2 / padded_w, ones * 2 / padded_h) @ g @ scale2d(ones * out_w / 2, ones * out_h / 2)
    return (mx0, mx1, my0, my1), g[:, :2, :], (out_h, out_w)


def geometric(images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
    """Reflect-pad, upsample 2×, sample bilinearly at ``G_inv``, downsample 2× (the reference composition; the
    filter in float64 for float64 images)."""
    f = geometric_filter(images.device, torch.float64 if images.dtype == torch.float64 else torch.float32)
    padding, theta, size = geometric_plan(G_inv, images.shape[2], images.shape[3], f.numel())
    x = F.pad(images, list(padding), mode="reflect")
    x = upsample2d(x, f, up=2)
    x = affine_sample(x, theta, size)
    return downsample2d(x, f, down=2, padding=-(f.numel() // 4) * 2, flip_filter=True)


def color_matrix_per_channel(C: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N, C, C) matrix and (N, C, 1) offset a 4×4 colour matrix applies to ``channels`` (3: RGB; 1: the
    mean of the RGB rows, summed over the RGB columns)."""
    if channels == 3:
        return C[:, :3, :3], C[:, :3, 3:]
    if channels == 1:
        rows = C[:, :3, :].mean(dim=1, keepdim=True)
        return rows[:, :, :3].sum(dim=2, keepdim=True), rows[:, :, 3:]
    raise ValueError(f"images: colour transforms need 1 or 3 channels, got {channels}")


def color(images: torch.Tensor, C: torch.Tensor, color_pass=color_matrix) -> torch.Tensor:
    """out[n] = M[n] · x[n] + b[n] per pixel (see :func:`color_matrix_per_channel`), by ``color_pass(images, M, b)``
    (the reference: one batched matmul)."""
    m, b = color_matrix_per_channel(C, images.shape[1])
    return color_pass(images, m, b[:, :, 0])


def band_filter(images: torch.Tensor, band_gains: torch.Tensor) -> torch.Tensor:
    """Each image filtered by Σ_b gain[n, b] · bank[b], separably along x then y, reflection-padded."""
    n, ch, h, w = images.shape
    bank = torch.as_tensor(filter_bank(), dtype=images.dtype, device=images.device)
    pad = bank.shape[1] // 2
    if pad >= min(h, w):
        raise ValueError(f"images: the image-space filter needs images larger than {pad} px, got {h}x{w}")
    taps = (band_gains.to(images.dtype) @ bank).repeat_interleave(ch, dim=0)  # (N·C, taps)
    x = F.pad(images.reshape(1, n * ch, h, w), [pad] * 4, mode="reflect")
    x = F.conv2d(x, taps[:, None, None, :], groups=n * ch)
    x = F.conv2d(x, taps[:, None, :, None], groups=n * ch)
    return x.reshape(n, ch, h, w)


def cutout(images: torch.Tensor, center: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Zeroes the pixels whose centres lie within size/2 of ``center`` along both axes (fractions of the image)."""
    _, _, h, w = images.shape
    x = (torch.arange(w, device=images.device, dtype=center.dtype) + 0.5) / w
    y = (torch.arange(h, device=images.device, dtype=center.dtype) + 0.5) / h
    keep_x = (x[None, :] - center[:, :1]).abs() >= size[:, :1] / 2          # (N, W)
    keep_y = (y[None, :] - center[:, 1:]).abs() >= size[:, 1:] / 2          # (N, H)
    keep = keep_x[:, None, None, :] | keep_y[:, None, :, None]
    return images * keep.to(images.dtype)


def apply(images: torch.Tensor, params: AugmentParams, geometric_pass=geometric, color_pass=color_matrix
          ) -> torch.Tensor:
    """The stages of ``params`` applied in order (``geometric_pass`` does the resampling, ``color_pass`` the colour
    matrices; the defaults are the references)."""
    if params.G_inv is not None:
        images = geometric_pass(images, params.G_inv)
    if params.C is not None:
        images = color(images, params.C, color_pass)
    if params.band_gains is not None:
        images = band_filter(images, params.band_gains)
    if params.noise is not None:
        images = images + params.noise.to(images.dtype)
    if params.cutout_center is not None:
        images = cutout(images, params.cutout_center, params.cutout_size)
    return images
