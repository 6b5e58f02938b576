"""Sample pictures written with Pillow: image grids, and scatter plots for 2-D data."""
from __future__ import annotations

import math

import numpy as np
import torch


def save_image_grid(images: torch.Tensor, path: str, columns: int | None = None, scale: int = 1) -> None:
    """``(N, C, H, W)`` images in [-1, 1] as one PNG grid (``columns`` defaults to about √N)."""
    from PIL import Image
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = torch.zeros(c, rows * h, columns * w, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = x[i]
    array = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(array[:, :, 0] if c == 1 else array, "L" if c == 1 else "RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    img.save(path)


def save_scatter(points: torch.Tensor, path: str, modes: torch.Tensor | None = None, size: int = 512,
                 extent: float | None = None) -> None:
    """2-D ``points`` (black) and mixture ``modes`` (red crosses) drawn on a white square PNG."""
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
    img.save(path)
