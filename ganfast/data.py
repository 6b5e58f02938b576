"""Data sets for ``ganfast train`` — nothing is downloaded — and a deterministic, checkpointable data order.

Embedded data sets:

- ``ring8``: 8 isotropic Gaussians with centres evenly spaced on a circle of radius 2 (the first at (2, 0)),
  standard deviation 0.02 — the setting of the unrolled-GAN / VEEGAN / PacGAN mode-collapse experiments.
- ``grid25``: 25 isotropic Gaussians with centres on the 5×5 grid {-4, -2, 0, 2, 4}², spacing 2,
  standard deviation 0.05.
- ``digits``: scikit-learn's 1797 handwritten digits (8×8, values 0–16, shipped inside scikit-learn),
  resized with antialiased bilinear interpolation to 16 or 32 px, one channel, scaled to [-1, 1].

Users' own data: a folder (searched recursively) or ``.zip`` of PNG/JPEG images (decoded with Pillow,
centre-cropped to a square, resized to ``resolution``, RGB unless every image is greyscale), or a ``.npz``
file whose array (key ``x``, else the only array) is ``(N, 2)`` points or ``(N, C, H, W)`` / ``(N, H, W, C)``
images (uint8 in [0, 255] or floats already in [-1, 1]).

Every data set is held in memory as one tensor; :class:`DataOrder` walks it in a seeded permutation per epoch
whose position is a small ``state_dict`` (so a resumed run reads exactly the batches the uninterrupted run
would), and splits each global batch between data-parallel ranks.
"""
from __future__ import annotations

import math
import contextlib
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

RING8_RADIUS, RING8_STD = 2.0, 0.02
GRID25_SPACING, GRID25_STD = 2.0, 0.05
MIXTURE_SIZE = 1 << 16  # points drawn once per seed for a 2-D mixture data set
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MAX_MEMBER_BYTES = 1 << 28  # 256 MiB: no image of a GAN data set is larger uncompressed


@dataclass
class Dataset:
    """An in-memory data set: ``data`` is ``(N, 2)`` points or ``(N, C, H, W)`` images in [-1, 1].

    ``modes``/``std`` are the mixture centres and standard deviation for the 2-D Gaussian mixtures (None
    otherwise); the 2-D metrics use them. ``labels``: None, int64 class indices ``(N,)`` (0..K-1) or float32
    label vectors ``(N, D)``.
    """

    name: str
    data: torch.Tensor
    modes: torch.Tensor | None = None
    std: float | None = None
    labels: torch.Tensor | None = None

    @property
    def c_dim(self) -> int:
        """0 without labels, the number of classes K for class labels, D for label vectors."""
        if self.labels is None:
            return 0
        return int(self.labels.max()) + 1 if self.labels.dim() == 1 else self.labels.shape[1]

    @property
    def num_classes(self) -> int | None:
        return self.c_dim if self.labels is not None and self.labels.dim() == 1 else None

    def label_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """float32 ``(len(indices), c_dim)``: one-hot rows for class labels, the label vectors themselves else."""
        if self.labels is None:
            return torch.zeros(len(indices), 0)
        rows = self.labels[indices]
        if rows.dim() == 1:
            return F.one_hot(rows, self.c_dim).float()
        return rows.float()

    @property
    def is_2d(self) -> bool:
        return self.data.dim() == 2

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return self.data.shape[0]


def ring8_modes(radius: float = RING8_RADIUS) -> torch.Tensor:
    """The 8 centres of ``ring8``: radius·(cos 2πk/8, sin 2πk/8), k = 0..7."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid25_modes(spacing: float = GRID25_SPACING) -> torch.Tensor:
    """The 25 centres of ``grid25``: spacing·(i, j) for i, j in -2..2."""
    axis = torch.arange(-2, 3, dtype=torch.float32) * spacing
    return torch.cartesian_prod(axis, axis)


def gaussian_mixture(modes: torch.Tensor, std: float, n: int, seed: int) -> torch.Tensor:
    """``n`` points from the equal-weight isotropic mixture with the given centres, drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    which = torch.randint(len(modes), (n,), generator=gen)
    return modes[which] + std * torch.randn(n, 2, generator=gen)


def digits(resolution: int = 16) -> torch.Tensor:
    """scikit-learn's handwritten digits as ``(1797, 1, resolution, resolution)`` float32 in [-1, 1]."""
    return digits_with_labels(resolution)[0]


def digits_with_labels(resolution: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`digits` and the class (0–9) of each image."""
    if resolution not in (8, 16, 32):
        raise ValueError(f"resolution must be 8, 16 or 32 for digits; got {resolution}")
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return (x.clamp(0, 1) * 2 - 1).contiguous(), torch.from_numpy(bunch.target).long()


@contextlib.contextmanager
def _image_errors(name: str):
    """Reading or decoding errors of the image ``name`` (a broken or truncated file, a bad zip member) as a
    ValueError naming it."""
    from PIL import Image
    try:
        yield
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, zipfile.BadZipFile,
            Image.DecompressionBombError) as exc:
        raise ValueError(f"dataset: {name!r} is not a readable PNG/JPEG image of a sane size ({exc})") from None


def _open_image(name: str, source):
    """``source`` (a path or binary file) as a lazily decoded PIL image: PNG or JPEG only (whatever its name,
    no other decoder runs), of at most ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (about 89M: Pillow's
    decompression-bomb limit)."""
    from PIL import Image
    with _image_errors(name):
        img = Image.open(source, formats=["PNG", "JPEG"])
        if img.width * img.height > (Image.MAX_IMAGE_PIXELS or math.inf):
            img.close()
            raise ValueError(f"{img.width}x{img.height} pixels, more than PIL.Image.MAX_IMAGE_PIXELS")
    return img


def _square_array(name: str, img, resolution: int, grey: bool) -> np.ndarray:
    """One image decoded, converted to L or RGB, centre-cropped to a square and resized: (C, r, r) uint8."""
    from PIL import Image
    with _image_errors(name):
        img = img.convert("L" if grey else "RGB")
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    a = np.asarray(img.resize((resolution, resolution), Image.Resampling.LANCZOS), dtype=np.uint8)
    return a[None] if grey else a.transpose(2, 0, 1)


def _images_to_tensor(names: list[str], open_source, resolution: int) -> torch.Tensor:
    """The images ``open_source(name)`` gives -> ``(N, C, resolution, resolution)`` in [-1, 1], RGB unless every
    image is greyscale. Headers are read first (for the mode), then images are decoded one at a time, so memory
    holds one full-size image, not the whole set."""
    modes = []
    for name in names:
        with _open_image(name, open_source(name)) as img:
            modes.append(img.mode)
    grey = all(mode in ("L", "LA", "1", "I", "I;16") for mode in modes)
    arrays = []
    for name in names:
        with _open_image(name, open_source(name)) as img:
            arrays.append(_square_array(name, img, resolution, grey))
    return torch.from_numpy(np.stack(arrays)).float() / 127.5 - 1


def image_folder(path: str, resolution: int) -> torch.Tensor:
    """All PNG/JPEG images under the folder ``path`` (recursively, sorted by path), see :func:`_images_to_tensor`.

    Symbolic links to folders are not followed; a file (or link) that resolves to a place outside ``path`` is
    refused with a ValueError, so a data folder cannot make ganfast read files elsewhere."""
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(path)
                   for f in names if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f"dataset: no PNG/JPEG images found under {path!r}")
    root = os.path.realpath(path)
    for f in files:
        if os.path.commonpath([root, os.path.realpath(f)]) != root:
            raise ValueError(f"dataset: {f!r} is a link to {os.path.realpath(f)!r}, outside the data folder "
                             f"{path!r}; copy the image into the folder or point --dataset at its real folder")
    return _images_to_tensor(files, lambda f: f, resolution)


def _check_member(archive: str, info: zipfile.ZipInfo) -> None:
    """Refuses a zip member whose name would escape the archive's root if extracted ("zip slip"), and one
    whose uncompressed size is beyond any image's (a zip bomb)."""
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise ValueError(f"dataset: {archive!r} has a member {name!r} whose path escapes the archive root "
                         "(absolute, drive-qualified or with '..'); refusing the archive")
    if info.file_size > MAX_MEMBER_BYTES:
        raise ValueError(f"dataset: {archive!r} has a member {name!r} of {info.file_size} bytes uncompressed, "
                         f"more than the {MAX_MEMBER_BYTES} an image may have; refusing the archive")


def image_zip(path: str, resolution: int) -> torch.Tensor:
    """All PNG/JPEG members of the zip file ``path`` (sorted by name). Members are decoded in memory (nothing is
    extracted); an archive with a member path escaping its root, or a member too large to be an image, is
    refused all the same."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            _check_member(path, info)
        names = sorted(n for n in zf.namelist() if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise ValueError(f"dataset: no PNG/JPEG images found in {path!r}")
        return _images_to_tensor(names, zf.open, resolution)


def npz_array(path: str, resolution: int | None = None) -> torch.Tensor:
    """The array of a ``.npz`` file: ``(N, 2)`` points, or images resized to ``resolution`` when given."""
    with np.load(path) as archive:
        keys = list(archive.keys())
        if "x" in keys:
            a = archive["x"]
        elif len(keys) == 1:
            a = archive[keys[0]]
        else:
            raise ValueError(f"dataset: {path!r} holds arrays {keys}; name the data array 'x'")
    if a.dtype.kind not in "uif" or a.size == 0:
        raise ValueError(f"dataset: the array in {path!r} must be a non-empty array of real numbers; got {a.dtype} "
                         f"of shape {a.shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"dataset: the array in {path!r} holds NaN or inf")
    if a.ndim == 2 and a.shape[1] == 2:
        return torch.from_numpy(a.astype(np.float32))
    if a.ndim != 4:
        raise ValueError(f"dataset: the array in {path!r} must be (N, 2), (N, C, H, W) or (N, H, W, C); "
                         f"got shape {a.shape}")
    if a.dtype != np.uint8 and (a.min() < -1 or a.max() > 1):
        raise ValueError(f"dataset: the images in {path!r} hold values in [{a.min()}, {a.max()}]; give uint8 in "
                         "[0, 255] or numbers in [-1, 1]")
    if a.dtype != np.uint8 and a.min() >= 0:
        warnings.warn(f"dataset: the images in {path!r} hold no negative value (range [{a.min()}, {a.max()}]): "
                      "if they are in [0, 1], scale them to [-1, 1] (x * 2 - 1), the range generators produce",
                      stacklevel=2)
    if a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    x = torch.from_numpy(np.ascontiguousarray(a))
    x = x.float() / 127.5 - 1 if a.dtype == np.uint8 else x.float()
    if resolution is not None and x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


def load_dataset(name: str, resolution: int = 16, seed: int = 0) -> Dataset:
    """``ring8``, ``grid25``, ``digits`` or a path (image folder, ``.zip``, ``.npz``) as a :class:`Dataset`.

    ``resolution`` applies to image data; ``seed`` picks the points of a 2-D mixture.
    """
    if name == "ring8":
        modes = ring8_modes()
        return Dataset(name, gaussian_mixture(modes, RING8_STD, MIXTURE_SIZE, seed), modes, RING8_STD)
    if name == "grid25":
        modes = grid25_modes()
        return Dataset(name, gaussian_mixture(modes, GRID25_STD, MIXTURE_SIZE, seed), modes, GRID25_STD)
    if name == "digits":
        images, labels = digits_with_labels(resolution)
        return Dataset(name, images, labels=labels)
    if os.path.isdir(name):
        return Dataset(name, image_folder(name, resolution))
    if not os.path.isfile(name):
        raise ValueError(f"dataset must be 'ring8', 'grid25', 'digits', an image folder, a .zip or a .npz file; "
                         f"got {name!r}, which does not exist")
    if name.lower().endswith(".zip"):
        return Dataset(name, image_zip(name, resolution))
    if name.lower().endswith(".npz"):
        return Dataset(name, npz_array(name, resolution))
    raise ValueError(f"dataset: {name!r} is neither a folder, a .zip nor a .npz file")


class DataOrder:
    """Deterministic batches from an in-memory tensor: epoch ``e`` is the permutation drawn from ``seed + e``.

    ``next_batch()`` returns this rank's share (rows ``rank::world_size``) of the next global batch of
    ``batch_size`` rows; a global batch never straddles epochs (the tail of an epoch that cannot fill one is
    skipped). ``state_dict()`` is the position (epoch, index) — restoring it continues the same sequence.
    """

    def __init__(self, data: torch.Tensor, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch_size must be a positive multiple of world_size={world_size}; got {batch_size}")
        if batch_size > len(data):
            raise ValueError(f"batch_size ({batch_size}) exceeds the data set size ({len(data)})")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.index = 0, 0
        self._perm = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(len(self.data), generator=gen)
        return self._perm

    def next_indices(self) -> torch.Tensor:
        """The data set rows of this rank's share of the next batch."""
        if self.index + self.batch_size > len(self.data):
            self.epoch, self.index, self._perm = self.epoch + 1, 0, None
        rows = self._permutation()[self.index:self.index + self.batch_size]
        self.index += self.batch_size
        return rows[self.rank::self.world_size]

    def next_batch(self) -> torch.Tensor:
        return self.data[self.next_indices()]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "index": self.index, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or state["batch_size"] != self.batch_size:
            raise ValueError(f"data order: checkpoint has seed={state['seed']}, batch_size={state['batch_size']}; "
                             f"this run has seed={self.seed}, batch_size={self.batch_size}")
        self.epoch, self.index, self._perm = state["epoch"], state["index"], None
