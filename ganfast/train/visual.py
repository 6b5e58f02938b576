"""Sample pictures written with Pillow (atomically): image grids, and scatter plots for 2-D data."""
from __future__ import annotations

import math

import numpy as np
import torch

from .._io import atomic_write


def save_png(picture: np.ndarray, path: str) -> None:
    """A uint8 ``(H, W, 1)`` or ``(H, W, 3)`` picture as a PNG file."""
    from PIL import Image
    image = Image.fromarray(picture[:, :, 0] if picture.shape[2] == 1 else picture, "L" if picture.shape[2] == 1
                            else "RGB")
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def image_grid(images: torch.Tensor, columns: int | None = None, scale: int = 1, gap: int = 1) -> np.ndarray:
    """``(N, C, H, W)`` images in [-1, 1] as one uint8 ``(H', W', C)`` grid (``columns`` defaults to about √N),
    each image enlarged ``scale`` times (nearest neighbour) and separated by ``gap`` grey pixels."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    h, w = h * scale, w * scale
    grid = torch.full((c, rows * (h + gap) + gap, columns * (w + gap) + gap), 128, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = gap + r * (h + gap), gap + col * (w + gap)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid.permute(1, 2, 0).numpy()


def save_image_grid(images: torch.Tensor, path: str, columns: int | None = None, scale: int = 1,
                    gap: int = 1) -> None:
    """:func:`image_grid` written as a PNG."""
    save_png(image_grid(images, columns, scale, gap), path)


def scatter(points: torch.Tensor, modes: torch.Tensor | None = None, size: int = 512,
            extent: float | None = None) -> np.ndarray:
    """2-D ``points`` (black) and mixture ``modes`` (red crosses) drawn on a white square uint8 RGB picture."""
    from PIL import Image, ImageDraw
    pts = points.detach().double().cpu().numpy()
    if extent is None:
        ref = modes.double().abs().max().item() if modes is not None else float(np.abs(pts).max())
        extent = 1.25 * ref + 0.5
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)

    def to_pixel(x, y):
        return (x + extent) / (2 * extent) * (size - 1), (extent - y) / (2 * extent) * (size - 1)

    for x, y in pts:
        px, py = to_pixel(x, y)
        draw.point((px, py), fill="black")
    for x, y in (modes.tolist() if modes is not None else []):
        px, py = to_pixel(x, y)
        draw.line((px - 4, py, px + 4, py), fill="red")
        draw.line((px, py - 4, px, py + 4), fill="red")
    return np.asarray(img)


def save_scatter(points: torch.Tensor, path: str, modes: torch.Tensor | None = None, size: int = 512,
                 extent: float | None = None) -> None:
    """:func:`scatter` written as a PNG."""
    save_png(scatter(points, modes, size, extent), path)
