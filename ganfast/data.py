"""Data sets for ``ganfast train`` — nothing is downloaded — and a deterministic, checkpointable data order.

Embedded data sets:

- ``ring8``: 8 isotropic Gaussians with centres evenly spaced on a circle of radius 2 (the first at (2, 0)),
  standard deviation 0.02 — the setting of the unrolled-GAN / VEEGAN / PacGAN mode-collapse experiments.
- ``grid25``: 25 isotropic Gaussians with centres on the 5×5 grid {-4, -2, 0, 2, 4}², spacing 2,
  standard deviation 0.05.
- ``digits``: scikit-learn's 1797 handwritten digits (8×8, values 0–16, shipped inside scikit-learn),
  resized with antialiased bilinear interpolation to 8, 16 (default) or 32 px, one channel, with their
  classes 0–9 as labels.
- ``stacked-digits``: the Stacked-MNIST construction (Metz et al. 2017, "Unrolled GANs") on those digits:
  :data:`STACKED_DIGITS_SIZE` RGB images whose R, G and B channels are three digit images drawn
  independently, so 1000 modes (digit triples); label ``100·d_R + 10·d_G + d_B`` (a class 0–999). Each mode
  holds exactly ``size / 1000`` images (modes assigned by a fixed permutation, then each channel's image drawn
  uniformly among the digits of its class), and the set is the same for every run seed. 16 (default) or 32 px
  (8 also works). Built once into the uint8 cache, like decoded folders.

Users' own data, in StyleGAN2-ADA's layout: a folder (searched recursively) or ``.zip`` of PNG/JPEG images,
with an optional ``dataset.json`` at its root, ``{"labels": [["relative/path.png", label], ...]}`` or
``{"labels": null}``, where a label is a class index (int) or a list of numbers; or a ``.npz`` file with an
``images`` array (else ``x``, else its only array) of ``(N, 2)`` points or ``(N, C, H, W)`` / ``(N, H, W, C)``
images (uint8 in [0, 255] or floats in [-1, 1]) and an optional ``labels`` array (``(N,)`` integers or
``(N, D)`` numbers). Images are centre-cropped to a square and resized (Lanczos) to ``resolution``, by default
the images' own size (rounded down to a power of two); RGB unless every image is greyscale.

Images are stored as uint8 ``(N, C, H, W)``, never as floats in bulk. Those of a folder, zip or ``.npz`` are
decoded once, by a pool of threads, into a ``.npy`` cache file under ``$GANFAST_CACHE/datasets`` (default
``~/.cache/ganfast/datasets``) named by a hash of the file list, sizes, modification times, the resolution and
:data:`CACHE_VERSION`; it is written atomically and then memory-mapped, so resumed runs and every torchrun rank
share it without decoding again, and a data set larger than RAM pages in and out. ``mirror`` doubles a set
with x-flips, as StyleGAN2-ADA does: index ``i >= N`` is image ``i - N`` flipped, with its label.

:class:`DataOrder` walks a data set in a seeded permutation per epoch whose position is a small ``state_dict``
(so a resumed run reads exactly the batches the uninterrupted run would), and splits each global batch between
data-parallel ranks; :class:`BatchLoader` turns its indices into float batches on the training device,
preparing the next batch in a background thread.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import threading
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._io import atomic_write, remove_stale_temps

RING8_RADIUS, RING8_STD = 2.0, 0.02
GRID25_SPACING, GRID25_STD = 2.0, 0.05
MIXTURE_SIZE = 1 << 16  # points drawn once per seed for a 2-D mixture data set
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MAX_MEMBER_BYTES = 1 << 28  # 256 MiB: no image of a GAN data set is larger uncompressed
LABELS_FILE = "dataset.json"
CACHE_VERSION = 1  # bump when decoding changes: older cache files are then never read
DECODE_CHUNK = 256  # images decoded per round: bounds the memory of a cache build
GREY_MODES = ("L", "LA", "1", "I", "I;16")
STACKED_DIGITS_SIZE = 60_000  # images of ``stacked-digits``: 60 per mode
STACKED_DIGITS_SEED = 0  # the data set does not follow the run seed: every run and metric sees the same images
STACKED_DIGITS_MODES = 1000
BUILTIN_DATASETS = ("ring8", "grid25", "digits", "stacked-digits")


@dataclass
class Dataset:
    """A data set: ``data`` is ``(N, 2)`` float points or ``(N, C, H, W)`` uint8 images (often memory-mapped).

    ``modes``/``std`` are the mixture centres and standard deviation for the 2-D Gaussian mixtures (None
    otherwise); the 2-D metrics use them. ``labels``: None, int64 ``(N,)`` class indices or float32 ``(N, D)``
    vectors. ``mirror``: the set is doubled by x-flips (``len`` is 2N; index ``i >= N`` is image ``i - N``
    flipped). ``report`` says how the images were obtained (cache hit, or decode time).
    """

    name: str
    data: torch.Tensor
    modes: torch.Tensor | None = None
    std: float | None = None
    labels: torch.Tensor | None = None
    mirror: bool = False
    report: str = ""

    def __post_init__(self):
        if self.labels is not None and len(self.labels) != self.data.shape[0]:
            raise ValueError(f"dataset {self.name!r}: {len(self.labels)} labels for {self.data.shape[0]} samples")
        if self.mirror and self.is_2d:
            raise ValueError(f"mirror: x-flips apply to images; {self.name!r} is 2-D points")

    @property
    def is_2d(self) -> bool:
        return self.data.dim() == 2

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    @property
    def num_stored(self) -> int:
        """Samples held (before x-flips)."""
        return self.data.shape[0]

    def __len__(self) -> int:
        return self.num_stored * (2 if self.mirror else 1)

    @property
    def num_classes(self) -> int | None:
        """K for class labels 0..K-1 (K = largest index + 1, as StyleGAN2-ADA counts), else None."""
        if self.labels is None or self.labels.dtype != torch.int64:
            return None
        return int(self.labels.max()) + 1

    @property
    def c_dim(self) -> int:
        """Width of a label vector: 0 without labels, K for classes (one-hot), D for label vectors."""
        if self.labels is None:
            return 0
        return self.num_classes if self.labels.dtype == torch.int64 else self.labels.shape[1]

    def label_vectors(self, indices) -> torch.Tensor:
        """float32 ``(len(indices), c_dim)``: one-hot rows for class labels, the vectors themselves otherwise."""
        stored = torch.as_tensor(indices, dtype=torch.int64) % self.num_stored
        if self.labels is None:
            return torch.zeros(len(stored), 0)
        if self.labels.dtype == torch.int64:
            return F.one_hot(self.labels[stored], self.num_classes).float()
        return self.labels[stored].float()

    def rows(self, indices) -> torch.Tensor:
        """The samples at ``indices`` as stored (uint8 images, float points), flipped copies made for
        ``i >= num_stored``."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        out = self.data[indices % self.num_stored]
        flip = indices >= self.num_stored
        if flip.any():
            out[flip] = out[flip].flip(-1)
        return out

    def batch(self, indices) -> torch.Tensor:
        """The samples at ``indices`` as float32 (images in [-1, 1]), on the CPU."""
        return to_float(self.rows(indices))

    __getitem__ = batch


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1] (x / 127.5 - 1); other tensors as float32."""
    return x.to(torch.float32) / 127.5 - 1 if x.dtype == torch.uint8 else x.float()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 in [0, 255], rounded: the inverse of :func:`to_float` on its values."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


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


def stacked_digit_labels(size: int = STACKED_DIGITS_SIZE, seed: int = STACKED_DIGITS_SEED) -> torch.Tensor:
    """The modes of :func:`stacked_digits` (``100·d_R + 10·d_G + d_B``): ``arange(size) % 1000`` in a permutation
    drawn from ``seed``, int64 ``(size,)``."""
    if size < 1:
        raise ValueError(f"size must be a positive number of images; got {size}")
    gen = torch.Generator().manual_seed(seed)
    return (torch.arange(size) % STACKED_DIGITS_MODES)[torch.randperm(size, generator=gen)]


def stacked_digits(resolution: int = 16, size: int = STACKED_DIGITS_SIZE, seed: int = STACKED_DIGITS_SEED,
                   cache_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Stacked digits: ``(images uint8 (size, 3, r, r), modes int64 (size,), report)``.

    Image i has mode ``m_i`` from :func:`stacked_digit_labels`; its channel k holds a digit image of class
    ``(m_i // 10^(2-k)) % 10`` drawn uniformly among the digits of that class (draws from ``seed + 1``,
    independent per image and channel). The images are written once to the uint8 cache and memory-mapped."""
    labels = stacked_digit_labels(size, seed)
    path = _cache_file(cache_root(cache_dir), "stacked-digits", [size, seed], resolution)
    images = _open_cache(path, size)
    if images is not None:
        return images, labels, f"embedded, cache hit ({path})"
    start = time.perf_counter()
    pool, classes = digits_with_labels(resolution)
    pool = to_uint8(pool)[:, 0]
    members = [torch.nonzero(classes == d)[:, 0] for d in range(10)]
    counts = torch.tensor([len(m) for m in members])
    digit = torch.stack([labels // 100, labels // 10 % 10, labels % 10], dim=1)  # (size, 3): the class per channel
    gen = torch.Generator().manual_seed(seed + 1)
    pick = (torch.rand(size, 3, generator=gen, dtype=torch.float64) * counts[digit]).long()
    offsets = torch.cumsum(counts, 0) - counts
    order = torch.cat(members)  # digits grouped by class: class d's j-th member is order[offsets[d] + j]
    rows = order[offsets[digit] + pick]
    images = _write_cache(path, (size, 3, resolution, resolution),
                          (pool[rows[lo:lo + 8192]].numpy() for lo in range(0, size, 8192)))
    return images, labels, f"embedded, built in {time.perf_counter() - start:.1f} s into the cache {path}"


@contextlib.contextmanager
def _image_errors(name: str):
    """Reading or decoding errors of the image ``name`` (a broken or truncated file, a bad zip member) as a
    ValueError naming it."""
    from PIL import Image
    try:
        yield
    except Image.UnidentifiedImageError:
        raise ValueError(f"dataset: {name!r} is not a readable PNG/JPEG image: its bytes are neither format, "
                         "whatever its name says") from None
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


def decode_image(name: str, source, resolution: int, grey: bool) -> np.ndarray:
    """One image decoded, converted to L or RGB, centre-cropped to a square and resized (Lanczos) to
    ``resolution``: ``(C, resolution, resolution)`` uint8."""
    from PIL import Image
    with _open_image(name, source) as img, _image_errors(name):
        img = img.convert("L" if grey else "RGB")
        w, h = img.size
        side = min(w, h)
        img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        a = np.asarray(img.resize((resolution, resolution), Image.Resampling.LANCZOS), dtype=np.uint8)
    return a[None] if grey else a.transpose(2, 0, 1)


# -- sources: a folder or a zip of images ----------------------------------------------------------------------
class _Folder:
    """The PNG/JPEG files under a folder (recursively, sorted), named by their path relative to it with '/'.

    Symbolic links to folders are not followed; a file (or link) that resolves to a place outside the folder is
    refused with a ValueError, so a data folder cannot make ganfast read files elsewhere."""

    def __init__(self, path: str):
        self.path = path
        files = sorted(os.path.join(root, f) for root, _, names in os.walk(path)
                       for f in names if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ValueError(f"dataset: no PNG/JPEG images found under {path!r}")
        root = os.path.realpath(path)
        for f in files:
            if os.path.commonpath([root, os.path.realpath(f)]) != root:
                raise ValueError(f"dataset: {f!r} is a link to {os.path.realpath(f)!r}, outside the data folder "
                                 f"{path!r}; copy the image into the folder or point --dataset at its real folder")
        self.files = files
        self.names = [os.path.relpath(f, path).replace(os.sep, "/") for f in files]
        self.labels_where = repr(os.path.join(path, LABELS_FILE))

    def fingerprint(self) -> list:
        """What the cache key covers: the folder and each file's name, size and modification time."""
        stats = [os.stat(f) for f in self.files]
        return [os.path.realpath(self.path)] + [[n, s.st_size, s.st_mtime_ns] for n, s in zip(self.names, stats)]

    def source(self, index: int):
        return self.files[index]

    def labels_text(self) -> bytes | None:
        path = os.path.join(self.path, LABELS_FILE)
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()

    def close(self) -> None:
        pass


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


class _Zip:
    """The PNG/JPEG members of a zip file (sorted by name). Members are read into memory (nothing is
    extracted), one thread at a time; an archive with a member path escaping its root, or a member too large to
    be an image, is refused all the same."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"dataset: {path!r} is not a readable zip file ({exc})") from None
        self.lock = threading.Lock()
        infos = sorted((i for i in self.zf.infolist() if i.filename.lower().endswith(IMAGE_EXTENSIONS)),
                       key=lambda i: i.filename)
        try:
            for info in self.zf.infolist():
                _check_member(path, info)
            if not infos:
                raise ValueError(f"dataset: no PNG/JPEG images found in {path!r}")
        except ValueError:
            self.zf.close()
            raise
        self.infos = infos
        self.names = [i.filename for i in infos]
        self.labels_where = f"{LABELS_FILE!r} in {path!r}"

    def fingerprint(self) -> list:
        """The archive's path, size and modification time, and each member's name, size and CRC."""
        s = os.stat(self.path)
        return [os.path.realpath(self.path), s.st_size, s.st_mtime_ns] + \
            [[i.filename, i.file_size, i.CRC] for i in self.infos]

    def source(self, index: int):
        name = self.names[index]
        with _image_errors(name), self.lock:
            return io.BytesIO(self.zf.read(name))

    def labels_text(self) -> bytes | None:
        try:
            info = self.zf.getinfo(LABELS_FILE)
        except KeyError:
            return None
        try:
            return self.zf.read(info)
        except (zipfile.BadZipFile, zlib.error, OSError) as exc:
            raise ValueError(f"dataset: {self.labels_where} is damaged ({exc})") from None

    def close(self) -> None:
        self.zf.close()


# -- labels ---------------------------------------------------------------------------------------------------------
def parse_labels(text: bytes | None, names: list[str], where: str) -> torch.Tensor | None:
    """The labels of the images ``names`` from a ``dataset.json`` (``where`` names it in errors): None when
    there is none or it says ``"labels": null``; else each image needs exactly one label, of one kind."""
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"dataset: {where} is damaged: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or "labels" not in doc:
        raise ValueError(f'dataset: {where} is damaged: expected {{"labels": [[path, label], ...]}} or '
                         '{"labels": null}')
    entries = doc["labels"]
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise ValueError(  # noqa: TRY004 (a damaged file, not a wrong argument)
            f"dataset: {where} is damaged: 'labels' must be a list of [path, label] pairs or null")
    by_name = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"dataset: {where} is damaged: {str(entry)[:80]} is not a [path, label] pair")
        name = entry[0].replace("\\", "/")
        if name in by_name:
            raise ValueError(f"dataset: {where} labels {name!r} twice")
        by_name[name] = entry[1]
    known = set(names)
    for name in by_name:
        if name not in known:
            raise ValueError(f"dataset: {where} has a label for {name!r}, which is not an image of the data set")
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"dataset: {where} has no label for the image {missing[0]!r} "
                         f"({len(missing)} of {len(names)} images lack one)")
    return _label_tensor([by_name[n] for n in names], names, where)


def _label_kind(value) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return "class index" if value >= 0 else None
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 and math.isfinite(v) for v in value):
        return f"vector of {len(value)} numbers"
    return None


def _label_tensor(values: list, names: list[str], where: str) -> torch.Tensor:
    """int64 class indices or float32 vectors; a ValueError naming the image whose label is bad or of another
    kind than the first image's."""
    first = None
    for name, value in zip(names, values):
        kind = _label_kind(value)
        if kind is None:
            raise ValueError(f"dataset: {where} gives {name!r} the label {str(value)[:80]}; a label is a class "
                             "index (an integer >= 0) or a non-empty list of finite numbers")
        if first is None:
            first = (name, kind)
        elif kind != first[1]:
            raise ValueError(f"dataset: {where} mixes label kinds: {first[0]!r} has a {first[1]}, {name!r} a {kind}")
    if first[1] == "class index":
        return torch.tensor(values, dtype=torch.int64)
    return torch.tensor(values, dtype=torch.float32)


def _array_labels(labels: np.ndarray, count: int, path: str) -> torch.Tensor:
    """A ``.npz`` ``labels`` array checked: ``(N,)`` integers >= 0 (classes) or ``(N, D)`` finite numbers."""
    if len(labels) != count:
        raise ValueError(f"dataset: {path!r} has {len(labels)} labels for {count} images")
    if labels.ndim == 1 and labels.dtype.kind in "ui":
        if count and labels.min() < 0:
            raise ValueError(f"dataset: the class labels in {path!r} must be >= 0; found {labels.min()}")
        return torch.from_numpy(labels.astype(np.int64))
    if labels.ndim == 2 and labels.shape[1] > 0 and labels.dtype.kind in "uif":
        if not np.isfinite(labels).all():
            raise ValueError(f"dataset: the labels in {path!r} hold NaN or inf")
        return torch.from_numpy(labels.astype(np.float32))
    raise ValueError(f"dataset: the labels in {path!r} must be (N,) class indices (integers) or (N, D) vectors; "
                     f"got {labels.dtype} of shape {labels.shape}")


# -- the uint8 cache ------------------------------------------------------------------------------------------------
def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where decoded data sets are cached: ``cache_dir``, else ``$GANFAST_CACHE/datasets``, else
    ``~/.cache/ganfast/datasets``."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("GANFAST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ganfast")
    return Path(base) / "datasets"


def _cache_file(cache_dir: Path, kind: str, fingerprint: list, resolution: int | None) -> Path:
    key = json.dumps([CACHE_VERSION, kind, resolution, fingerprint], separators=(",", ":"))
    return cache_dir / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"


def _open_cache(path: Path, count: int) -> torch.Tensor | None:
    """The cached images ``(count, C, H, W)`` uint8, memory-mapped (copy-on-write: pages are shared by every
    process that maps the file); None if absent or unreadable."""
    try:
        a = np.load(path, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[0] != count:
        return None
    return torch.from_numpy(a)


def _write_cache(path: Path, shape: tuple[int, ...], chunks) -> torch.Tensor:
    """Writes the ``.npy`` file of uint8 ``shape`` from ``chunks`` (arrays of consecutive images, in order)
    atomically: readers see no file or the whole file. Returns it memory-mapped."""
    if path.parent.is_dir():
        remove_stale_temps(path.parent)

    def write(f):
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        written = 0
        for chunk in chunks:
            f.write(np.ascontiguousarray(chunk, dtype=np.uint8).data)
            written += len(chunk)
        assert written == shape[0]

    atomic_write(path, write)
    images = _open_cache(path, shape[0])
    if images is None:
        raise OSError(f"dataset cache: {path} could not be read back after writing it")
    return images


def _default_workers() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def _notify(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=4)


def _native_side(sides: list[int], name: str) -> int:
    """The data set's own resolution: its smallest image side, as a power of two (rounded down)."""
    side = min(sides)
    if side < 4:
        raise ValueError(f"dataset: {name!r} has images of side {side} px; at least 4 are needed")
    return 1 << int(math.log2(side))


def _decode_source(src, kind: str, name: str, resolution: int | None, cache_dir, workers: int | None):
    """The images of a folder or zip as uint8 ``(N, C, r, r)``, from the cache or decoded into it, and a
    sentence saying which."""
    path = _cache_file(cache_root(cache_dir), kind, src.fingerprint(), resolution)
    count = len(src.names)
    images = _open_cache(path, count)
    if images is not None:
        return images, f"cache hit, no decoding ({path})"
    start = time.perf_counter()
    workers = workers or _default_workers()
    with ThreadPoolExecutor(workers, thread_name_prefix="ganfast-decode") as pool:
        def header(i):
            with _open_image(src.names[i], src.source(i)) as img:
                return img.mode, img.width, img.height
        headers = list(pool.map(header, range(count)))
        grey = all(mode in GREY_MODES for mode, _, _ in headers)
        sides = [min(w, h) for _, w, h in headers]
        r = resolution or _native_side(sides, name)
        _say_reshaped(name, src.names, headers, r)

        def decode(i):
            return decode_image(src.names[i], src.source(i), r, grey)

        def chunks():
            for lo in range(0, count, DECODE_CHUNK):
                yield np.stack(list(pool.map(decode, range(lo, min(lo + DECODE_CHUNK, count)))))

        images = _write_cache(path, (count, 1 if grey else 3, r, r), chunks())
    seconds = time.perf_counter() - start
    return images, (f"decoded {count} images in {seconds:.1f} s ({count / max(seconds, 1e-9):.0f} img/s, "
                    f"{workers} threads) into the cache {path}")


def _say_reshaped(name: str, names: list[str], headers: list, r: int) -> None:
    """One notice for the non-square images (centre-cropped) and one for those resized."""
    not_square = [(n, w, h) for n, (_, w, h) in zip(names, headers) if w != h]
    resized = [(n, w, h) for n, (_, w, h) in zip(names, headers) if min(w, h) != r]
    if not_square:
        n, w, h = not_square[0]
        _notify(f"dataset {name!r}: {len(not_square)} of {len(names)} images are not square (e.g. {n!r}, {w}x{h}); "
                "they are centre-cropped to squares")
    if resized:
        n, w, h = resized[0]
        _notify(f"dataset {name!r}: {len(resized)} of {len(names)} images are resized to {r}x{r} "
                f"(e.g. {n!r}, {w}x{h})")


def image_files(path: str, resolution: int | None = None, cache_dir=None,
                workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """A folder or ``.zip`` of PNG/JPEG images: ``(images uint8 (N, C, r, r), labels or None, report)``."""
    src = _Folder(path) if os.path.isdir(path) else _Zip(path)
    try:
        labels = parse_labels(src.labels_text(), src.names, src.labels_where)
        images, report = _decode_source(src, "folder" if isinstance(src, _Folder) else "zip", path, resolution,
                                        cache_dir, workers)
    finally:
        src.close()
    return images, labels, report


def _npz_key(keys: list[str], path: str) -> str:
    """The data array's name: ``images``, else ``x``, else the only array besides ``labels``."""
    data_keys = [k for k in keys if k != "labels"]
    key = "images" if "images" in keys else "x" if "x" in keys else data_keys[0] if len(data_keys) == 1 else None
    if key is None:
        raise ValueError(f"dataset: {path!r} holds arrays {keys}; name the data array 'images' (or 'x')")
    return key


def _npz_shape(path: str) -> tuple[int, ...] | None:
    """The data array's shape, read from its header alone (None if the file is not a plain ``.npz``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            key = _npz_key([n[:-4] for n in zf.namelist() if n.endswith(".npy")], path)
            with zf.open(key + ".npy") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                return read(f)[0]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _npz_contents(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The data array of a ``.npz`` and its ``labels`` array (or None), checked."""
    with np.load(path) as archive:
        keys = list(archive.keys())
        a = archive[_npz_key(keys, path)]
        labels = archive["labels"] if "labels" in keys else None
    if a.dtype.kind not in "uif" or a.size == 0:
        raise ValueError(f"dataset: the array in {path!r} must be a non-empty array of real numbers; got {a.dtype} "
                         f"of shape {a.shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"dataset: the array in {path!r} holds NaN or inf")
    if not (a.ndim == 2 and a.shape[1] == 2) and a.ndim != 4:
        raise ValueError(f"dataset: the array in {path!r} must be (N, 2), (N, C, H, W) or (N, H, W, C); "
                         f"got shape {a.shape}")
    return a, labels


def _npz_images(a: np.ndarray, path: str, resolution: int | None):
    """Checks ``.npz`` images; returns the shape they are stored at and a generator of uint8 chunks."""
    if a.dtype != np.uint8 and (a.min() < -1 or a.max() > 1):
        raise ValueError(f"dataset: the images in {path!r} hold values in [{a.min()}, {a.max()}]; give uint8 in "
                         "[0, 255] or numbers in [-1, 1]")
    if a.dtype != np.uint8 and a.min() >= 0:
        warnings.warn(f"dataset: the images in {path!r} hold no negative value (range [{a.min()}, {a.max()}]): "
                      "if they are in [0, 1], scale them to [-1, 1] (x * 2 - 1), the range generators produce",
                      stacklevel=4)
    if a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    n, c, h, w = a.shape
    r = resolution or _native_side([min(h, w)], path)
    if h != w:
        _notify(f"dataset {path!r}: the images are {w}x{h}, not square; they are centre-cropped to squares")
    if min(h, w) != r:
        _notify(f"dataset {path!r}: the {w}x{h} images are resized to {r}x{r}")
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2

    def chunks():
        for lo in range(0, n, DECODE_CHUNK):
            x = torch.from_numpy(np.ascontiguousarray(a[lo:lo + DECODE_CHUNK, :, top:top + side, left:left + side]))
            if a.dtype == np.uint8 and side == r:
                yield x.numpy()
                continue
            x = to_float(x) if a.dtype == np.uint8 else x.float()
            if side != r:
                x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
            yield to_uint8(x).numpy()

    return (n, c, r, r), chunks()


def npz_file(path: str, resolution: int | None = None, cache_dir=None):
    """A ``.npz``: ``(data, labels or None, report)``; points stay float32, images become uint8 (cached: a
    cache hit reads the labels and the array's header only)."""
    s = os.stat(path)
    cache = _cache_file(cache_root(cache_dir), "npz", [os.path.realpath(path), s.st_size, s.st_mtime_ns], resolution)
    shape = _npz_shape(path)
    images = _open_cache(cache, shape[0]) if shape is not None and len(shape) == 4 else None
    if images is not None:
        with np.load(path) as archive:
            labels = archive["labels"] if "labels" in archive.files else None
        labels = None if labels is None else _array_labels(labels, len(images), path)
        return images, labels, f"cache hit, no decoding ({cache})"
    a, labels = _npz_contents(path)
    labels = None if labels is None else _array_labels(labels, len(a), path)
    if a.ndim == 2:
        return torch.from_numpy(a.astype(np.float32)), labels, ""
    start = time.perf_counter()
    shape, chunks = _npz_images(a, path, resolution)
    images = _write_cache(cache, shape, chunks)
    return images, labels, f"converted {shape[0]} images in {time.perf_counter() - start:.1f} s into the cache {cache}"


def load_dataset(name: str, resolution: int | None = None, seed: int = 0, mirror: bool = False,
                 cache_dir: str | os.PathLike | None = None, workers: int | None = None) -> Dataset:
    """``ring8``, ``grid25``, ``digits``, ``stacked-digits`` or a path (image folder, ``.zip``, ``.npz``) as a
    :class:`Dataset`.

    ``resolution`` applies to image data (None: the images' own, 16 for the digits); ``seed`` picks the points
    of a 2-D mixture; ``mirror`` adds x-flipped copies; ``cache_dir`` overrides where decoded images are cached
    (see :func:`cache_root`); ``workers``: decoding threads (default: the CPU count, at most 16).
    """
    if name == "ring8":
        modes = ring8_modes()
        return Dataset(name, gaussian_mixture(modes, RING8_STD, MIXTURE_SIZE, seed), modes, RING8_STD, mirror=mirror)
    if name == "grid25":
        modes = grid25_modes()
        return Dataset(name, gaussian_mixture(modes, GRID25_STD, MIXTURE_SIZE, seed), modes, GRID25_STD,
                       mirror=mirror)
    if name == "digits":
        images, labels = digits_with_labels(resolution or 16)
        return Dataset(name, to_uint8(images), labels=labels, mirror=mirror, report="embedded, nothing to decode")
    if name == "stacked-digits":
        if mirror:
            raise ValueError("mirror: x-flipped digits are no digits; stacked-digits' modes would lose their meaning")
        images, labels, report = stacked_digits(resolution or 16, cache_dir=cache_dir)
        return Dataset(name, images, labels=labels, report=report)
    if not os.path.exists(name):
        raise ValueError(f"dataset must be 'ring8', 'grid25', 'digits', 'stacked-digits', an image folder, a .zip or "
                         f"a .npz file; "
                         f"got {name!r}, which does not exist")
    if os.path.isdir(name) or name.lower().endswith(".zip"):
        images, labels, report = image_files(name, resolution, cache_dir, workers)
        return Dataset(name, images, labels=labels, mirror=mirror, report=report)
    if name.lower().endswith(".npz"):
        data, labels, report = npz_file(name, resolution, cache_dir)
        return Dataset(name, data, labels=labels, mirror=mirror, report=report)
    raise ValueError(f"dataset: {name!r} is neither a folder, a .zip nor a .npz file")


class DataOrder:
    """Deterministic batches of indices into ``data`` (anything with a length: a tensor, a :class:`Dataset`):
    epoch ``e`` is the permutation drawn from ``seed + e``.

    ``next_indices()`` returns this rank's share (positions ``rank::world_size``) of the next global batch of
    ``batch_size`` indices, ``next_batch()`` the rows of ``data`` at them; a global batch never straddles epochs
    (the tail of an epoch that cannot fill one is skipped). ``peek_indices()`` tells the next batch's indices
    without moving. ``state_dict()`` is the position (epoch, index) — restoring it continues the same sequence.
    """

    def __init__(self, data, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch_size must be a positive multiple of world_size={world_size}; got {batch_size}")
        if batch_size > len(data):
            raise ValueError(f"batch_size ({batch_size}) exceeds the data set size ({len(data)})")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.index = 0, 0
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {e: p for e, p in self._perms.items() if e >= self.epoch}
            self._perms[epoch] = torch.randperm(len(self.data), generator=gen)
        return self._perms[epoch]

    def _position(self) -> tuple[int, int]:
        """Epoch and index of the next global batch."""
        if self.index + self.batch_size > len(self.data):
            return self.epoch + 1, 0
        return self.epoch, self.index

    def peek_indices(self) -> torch.Tensor:
        epoch, index = self._position()
        return self._permutation(epoch)[index:index + self.batch_size][self.rank::self.world_size]

    def next_indices(self) -> torch.Tensor:
        rows = self.peek_indices()
        self.epoch, self.index = self._position()
        self.index += self.batch_size
        return rows

    def next_batch(self) -> torch.Tensor:
        return self.data[self.next_indices()]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "index": self.index, "batch_size": self.batch_size,
                "size": len(self.data)}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or state["batch_size"] != self.batch_size:
            raise ValueError(f"data order: checkpoint has seed={state['seed']}, batch_size={state['batch_size']}; "
                             f"this run has seed={self.seed}, batch_size={self.batch_size}")
        if state.get("size", len(self.data)) != len(self.data):
            raise ValueError(f"data order: the checkpoint walked a data set of {state['size']} samples, this run's has "
                             f"{len(self.data)} (another data set, resolution or --mirror setting?)")
        self.epoch, self.index, self._perms = state["epoch"], state["index"], {}


class BatchLoader:
    """This rank's batches of a :class:`DataOrder` over a :class:`Dataset`, as float32 on ``device`` (images in
    [-1, 1], converted there from uint8).

    While the caller trains on one batch, a background thread gathers the next one's rows (x-flips included)
    and, for a GPU, pins them, so that the copy is non-blocking. What a batch holds depends on its indices
    alone, so prefetching changes nothing in the sequence of batches (a resume that moves the order simply
    discards the prepared batch).
    """

    def __init__(self, dataset: Dataset, order: DataOrder, device: torch.device):
        self.dataset, self.order, self.device = dataset, order, torch.device(device)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ganfast-data")
        self._ahead = None  # (indices, future of their rows)

    def _rows(self, indices: torch.Tensor) -> torch.Tensor:
        rows = self.dataset.rows(indices)
        return rows.pin_memory() if self.device.type == "cuda" else rows

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch on the device, its indices into the data set)``; the order moves one batch on."""
        indices = self.order.next_indices()
        if self._ahead is not None and torch.equal(self._ahead[0], indices):
            rows = self._ahead[1].result()
        else:
            rows = self._rows(indices)
        ahead = self.order.peek_indices()
        self._ahead = (ahead, self._pool.submit(self._rows, ahead))
        return to_float(rows.to(self.device, non_blocking=True)), indices
