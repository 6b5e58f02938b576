"""High-throughput, deterministic, resumable sampling of a generator into image files.

    for batch in ganfast.sample(G, range(1000), batch_size=256):      # SampleBatch(seeds, images uint8 NHWC)
        ...
    ganfast.write_samples(G, "0-999999", "out/", fmt="npz")           # what `ganfast sample` runs

Determinism: the latent of seed s is ``np.random.RandomState(s).randn(z_dim)`` (the convention of NVlabs'
generate.py, so seeds mean the same latents there and here), and random layer noise, when asked for, comes from a
per-seed ``torch.Generator`` (``ganfast.nn.noise``; drawn on the host, so ``noise_mode="random"`` costs host time
that "const" does not); so an image depends only on its seed, never on the batch size, the shard or the
number of processes.

Output layout (every file written atomically, see ``ganfast._io``):
    png         DIR/00012/seed00012345.png            (sub-folders of 1000 seeds)
    npz         DIR/seeds00000000-00000999.npz        (``images`` uint8 NHWC, ``seeds`` int64)
    webdataset  DIR/seeds00000000-00000999.tar        (``%08d.png`` + ``%08d.json`` per seed)
A rerun of the same command skips the files that exist and writes the rest. ``shard=(i, n)`` takes every n-th
file of the seed list starting at the i-th, so shards never overlap and their union is the whole set.
``DIR/ganfast-samples.json`` records what the files depend on (see ``_settings``); a run into a folder written
with other settings is refused, so one folder never mixes two kinds of samples or holds a seed twice.

Pipeline: latents are made on the host, the generator runs under no_grad (optionally autocast to bf16/fp16 and
torch.compile), images are converted to uint8 NHWC on the device and copied into pinned host memory
asynchronously while the next batch is generated; a pool of threads encodes and writes the files, so the device
does not wait on the disk.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import os
import tarfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ._io import atomic_write, prepare_output_dir
from .nn.noise import per_sample_noise

__all__ = ["FORMATS", "SampleBatch", "SampleReport", "parse_seeds", "parse_shard", "sample", "seed_latents",
           "write_samples"]

FORMATS = ("png", "npz", "webdataset")
MANIFEST = "ganfast-samples.json"  # the settings a sample folder was written with
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_MAX_SEED = 2 ** 32 - 1  # np.random.RandomState takes 32-bit seeds
_NOISE_SEED_OFFSET = 2 ** 32  # seed s draws its layer noise from torch.Generator().manual_seed(2**32 + s)


# ---- arguments -------------------------------------------------------------------------------------------------

def parse_seeds(spec: str | Iterable[int]) -> list[int]:
    """Seeds from ``"0-999,1005,2000-2009"`` (inclusive ranges) or an iterable of ints; duplicates refused."""
    if isinstance(spec, str):
        seeds: list[int] = []
        for part in spec.replace(" ", "").split(","):
            lo, sep, hi = part.partition("-")
            try:
                first, last = int(lo), int(hi if sep else lo)
            except ValueError:
                raise ValueError(f"seeds must look like '0-999,1005' (inclusive ranges of integers), "
                                 f"got {spec!r}") from None
            if last < first:
                raise ValueError(f"seeds: range {part!r} is empty (end before start)")
            if last > _MAX_SEED:
                raise ValueError(f"seeds must lie in [0, {_MAX_SEED}], got {part!r}")
            seeds.extend(range(first, last + 1))
    else:
        seeds = [int(s) for s in spec]
    if not seeds:
        raise ValueError("seeds is empty")
    if min(seeds) < 0 or max(seeds) > _MAX_SEED:
        raise ValueError(f"seeds must lie in [0, {_MAX_SEED}]")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds contains duplicates (each seed is one image)")
    return seeds


def parse_shard(spec: str | tuple[int, int]) -> tuple[int, int]:
    """``"i/n"`` (or (i, n)): this process writes shard i of n, 0 ≤ i < n."""
    if isinstance(spec, str):
        index, sep, count = spec.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"shard must look like 'i/n' with integers 0 <= i < n, got {spec!r}")
        spec = (int(index), int(count))
    index, count = spec
    if not 0 <= index < count:
        raise ValueError(f"shard must satisfy 0 <= i < n, got {index}/{count}")
    return index, count


# ---- generation ------------------------------------------------------------------------------------------------

def seed_latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """float32 (len(seeds), z_dim): row j is ``np.random.RandomState(seeds[j]).randn(z_dim)``."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32))


def to_uint8_nhwc(images: torch.Tensor) -> torch.Tensor:
    """Maps [-1, 1] NCHW images to uint8 NHWC (x·127.5 + 128, clamped), on the images' device."""
    return (images.float().permute(0, 2, 3, 1) * 127.5 + 128).clamp_(0, 255).to(torch.uint8)


@dataclass
class SampleBatch:
    seeds: np.ndarray   # int64 (N,)
    images: np.ndarray  # uint8 (N, H, W, C)


def _generator_kwargs(G: torch.nn.Module, truncation_psi: float, noise_mode: str | None) -> dict:
    """The keyword arguments G's forward takes among truncation_psi / noise_mode (None: "const", NVlabs'
    generate.py default); an error for those asked for (a value other than the default) that G cannot take."""
    params = inspect.signature(G.forward).parameters
    kwargs = {}
    if noise_mode is None and "noise_mode" in params:
        noise_mode = "const"
    for name, value, default in (("truncation_psi", truncation_psi, 1.0), ("noise_mode", noise_mode, None)):
        if name in params:
            if value is not None:
                kwargs[name] = value
        elif value not in (default, None):
            raise ValueError(f"{name}={value!r} was given but {type(G).__name__}.forward takes no {name}")
    return kwargs


def sample(G: torch.nn.Module, seeds: str | Iterable[int], batch_size: int = 64, truncation_psi: float = 1.0,
           noise_mode: str | None = None, dtype: str | torch.dtype | None = None,
           compile: bool = False) -> Iterator[SampleBatch]:
    """Generates one image per seed, ``batch_size`` at a time, yielding uint8 NHWC batches on the host.

    G: a generator module with ``z_dim``, called as ``G(z, **kw)`` → images in [-1, 1] (N, C, H, W) on the
    device of its parameters; kw holds ``truncation_psi`` / ``noise_mode`` when its forward takes them. G runs in
    eval mode (its mode is restored afterwards). dtype: "bf16"/"fp16"/"fp32" (or a torch dtype): the autocast
    dtype. The latents follow ``seed_latents``.
    """
    seeds = parse_seeds(seeds)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    z_dim = getattr(G, "z_dim", None)
    if not isinstance(z_dim, int):
        raise TypeError(f"G must be a generator module with an int attribute z_dim; {type(G).__name__} has none")
    if isinstance(truncation_psi, bool) or not isinstance(truncation_psi, (int, float)) or \
            not math.isfinite(truncation_psi):
        raise ValueError(f"truncation_psi must be a finite number, got {truncation_psi!r}")
    kwargs = _generator_kwargs(G, truncation_psi, noise_mode)
    return _generate(G, seeds, batch_size, z_dim, kwargs, _sample_dtype(dtype), compile)


def _sample_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    dtype = _DTYPES.get(dtype, dtype) if dtype is not None else torch.float32
    if dtype not in _DTYPES.values():
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    return dtype


def _generate(G: torch.nn.Module, seeds: list[int], batch_size: int, z_dim: int, kwargs: dict, dtype: torch.dtype,
              compile: bool) -> Iterator[SampleBatch]:
    device = next(G.parameters(), torch.empty(0)).device
    on_gpu = device.type == "cuda"
    was_training = G.training
    run = torch.compile(G.eval()) if compile else G.eval()
    pending: tuple[list[int], torch.Tensor, torch.cuda.Event | None] | None = None
    try:
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start:start + batch_size]
            z = seed_latents(chunk, z_dim)
            z = z.pin_memory().to(device, non_blocking=True) if on_gpu else z.to(device)
            noise = per_sample_noise([torch.Generator().manual_seed(_NOISE_SEED_OFFSET + s) for s in chunk])
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32), noise:
                images = run(z, **kwargs)
            if images.ndim != 4:
                raise ValueError(f"G must return images (N, C, H, W) in [-1, 1]; got shape {tuple(images.shape)}")
            images = to_uint8_nhwc(images)
            host = torch.empty(images.shape, dtype=torch.uint8, pin_memory=on_gpu)
            host.copy_(images, non_blocking=on_gpu)
            event = torch.cuda.Event() if on_gpu else None
            if event is not None:
                event.record()
            if pending is not None:  # the previous batch's copy overlapped this batch's generation
                yield _finish(*pending)
            pending = (chunk, host, event)
        if pending is not None:
            yield _finish(*pending)
    finally:
        G.train(was_training)


def _finish(seeds: list[int], host: torch.Tensor, event) -> SampleBatch:
    if event is not None:
        event.synchronize()
    return SampleBatch(np.asarray(seeds, dtype=np.int64), host.numpy())


# ---- files -----------------------------------------------------------------------------------------------------

@dataclass
class _Unit:
    """One output file and the seeds it holds."""
    path: Path
    seeds: list[int]


def _plan(seeds: list[int], fmt: str, out: Path, shard_size: int) -> list[_Unit]:
    if fmt == "png":
        return [_Unit(out / f"{s // 1000:05d}" / f"seed{s:08d}.png", [s]) for s in seeds]
    ext = "npz" if fmt == "npz" else "tar"
    chunks = (seeds[i:i + shard_size] for i in range(0, len(seeds), shard_size))
    return [_Unit(out / f"seeds{c[0]:08d}-{c[-1]:08d}.{ext}", c) for c in chunks]


def _is_complete(unit: _Unit, fmt: str) -> bool:
    """Whether an earlier run already wrote this file (files are atomic: present means complete)."""
    if not unit.path.exists():
        return False
    if fmt == "npz":
        with np.load(unit.path) as data:
            if data["seeds"].tolist() != unit.seeds:
                raise FileExistsError(f"{unit.path} exists but holds other seeds; remove it or use another out dir")
    return True


def _png_bytes(image: np.ndarray, compress_level: int) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG",
                                                                            compress_level=compress_level)
    return buf.getvalue()


def _write_unit(unit: _Unit, fmt: str, images: np.ndarray, meta: dict, compress_level: int) -> None:
    if fmt == "png":
        data = _png_bytes(images[0], compress_level)
        atomic_write(unit.path, lambda f: f.write(data))
    elif fmt == "npz":
        atomic_write(unit.path, lambda f: np.savez(f, images=images, seeds=np.asarray(unit.seeds, dtype=np.int64)))
    else:
        def write_tar(f):
            with tarfile.open(fileobj=f, mode="w") as tar:
                for seed, image in zip(unit.seeds, images):
                    for name, data in ((f"{seed:08d}.png", _png_bytes(image, compress_level)),
                                       (f"{seed:08d}.json", json.dumps({"seed": seed, **meta}).encode())):
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        atomic_write(unit.path, write_tar)


@dataclass
class SampleReport:
    images: int        # images written by this call
    skipped: int       # images already on disk from an earlier run
    seconds: float
    out: Path

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.images} images in {self.seconds:.1f} s ({self.images_per_s:.1f} img/s) written to {self.out}"
                + (f"; {self.skipped} already there were skipped" if self.skipped else ""))


def _options(G: torch.nn.Module, sample_kwargs: dict) -> dict:
    """The truncation and noise mode G is actually called with (its defaults filled in)."""
    kwargs = _generator_kwargs(G, sample_kwargs.get("truncation_psi", 1.0), sample_kwargs.get("noise_mode"))
    return {"truncation_psi": float(kwargs.get("truncation_psi", 1.0)), "noise_mode": kwargs.get("noise_mode")}


def _settings(G: torch.nn.Module, seeds: list[int], fmt: str, shard_size: int, sample_kwargs: dict) -> dict:
    """What the files of a sample folder depend on (not the shard, batch size, workers or compile): the
    generator's weights (its state dict), the layout, the sampling options and, where files group several seeds
    (npz, webdataset), the seed list (count and SHA-256; a png is one seed under its own name)."""
    from .checkpoint import tensor_digest
    weights = hashlib.sha256()
    for key, value in G.state_dict().items():
        weights.update(f"{key}:{tensor_digest(value)};".encode())
    grouped = fmt != "png"
    seed_list = hashlib.sha256(np.asarray(seeds, np.int64).tobytes()).hexdigest()
    dtype = _sample_dtype(sample_kwargs.get("dtype"))
    return {"generator": f"sha256:{weights.hexdigest()} of its state dict", "format": fmt,
            "seeds": f"{len(seeds)} seeds, sha256:{seed_list}" if grouped else None,
            "shard_size": shard_size if grouped else None, **_options(G, sample_kwargs),
            "dtype": next(name for name, d in _DTYPES.items() if d == dtype)}


def _holds_samples(out: Path) -> bool:
    return any(p.is_file() and p.name != MANIFEST and not p.name.startswith(".") for p in out.rglob("*"))


def _claim_folder(out: Path, settings: dict) -> None:
    """Records ``settings`` in ``out``'s manifest, or checks them against the one there: a folder holds samples
    of one kind only (a mismatch is a ValueError naming the setting). The manifest is created exclusively (a
    hard link of a finished file), so of several processes starting at once one writes it and the others compare
    against it. A folder with samples but no manifest (written before manifests existed) is adopted as it is."""
    path = out / MANIFEST
    if not path.exists():
        try:
            atomic_write(path, lambda f: f.write(json.dumps(settings, indent=1).encode()), exclusive=True)
        except FileExistsError:  # another process claimed the folder first: compare below
            pass
    try:
        recorded = json.loads(path.read_text())
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable sample manifest ({exc}); remove it with the samples it "
                         "describes, or use another folder") from None
    for key, value in settings.items():
        if recorded.get(key) != value:
            what = "holds samples written" if _holds_samples(out) else "was claimed (it holds no samples yet)"
            raise ValueError(f"{out} {what} with {key}={recorded.get(key)!r}, but this run has {key}={value!r}; "
                             f"use another folder, or remove it (or its {MANIFEST}, if empty) to start afresh")


def write_samples(G: torch.nn.Module, seeds: str | Iterable[int], out: str | os.PathLike, fmt: str = "png",
                  batch_size: int = 64, shard: str | tuple[int, int] = (0, 1), shard_size: int = 1000,
                  workers: int = 4, png_compress_level: int = 1, progress: bool = True,
                  **sample_kwargs) -> SampleReport:
    """Samples the seeds of this shard into files under ``out`` (layout in the module docstring), skipping files
    an earlier run completed; ``out`` must hold samples of the same settings or none (``MANIFEST``).
    ``sample_kwargs`` go to :func:`sample` (truncation_psi, noise_mode, dtype, compile). PNG compression level 1
    is lossless like any other, and several times faster to encode than 6."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    index, count = parse_shard(shard)
    seeds = parse_seeds(seeds)
    sample(G, seeds[:1], batch_size, **sample_kwargs)  # checks the sampling options before anything is written
    out = prepare_output_dir(out)
    _claim_folder(out, _settings(G, seeds, fmt, shard_size, sample_kwargs))
    units = _plan(seeds, fmt, out, shard_size)[index::count]
    todo = [u for u in units if not _is_complete(u, fmt)]
    skipped = sum(len(u.seeds) for u in units) - sum(len(u.seeds) for u in todo)
    meta = {k: v for k, v in _options(G, sample_kwargs).items() if v is not None}
    todo_seeds = [s for u in todo for s in u.seeds]
    started = time.perf_counter()
    bar = _progress_bar(len(todo_seeds), progress)
    with ThreadPoolExecutor(workers) as pool:
        in_flight: list[Future] = []
        units_left, filled = iter(todo), []  # the unit being filled and its images so far
        unit = next(units_left, None)
        for batch in (sample(G, todo_seeds, batch_size, **sample_kwargs) if todo_seeds else ()):
            pos = 0
            while pos < len(batch.seeds):
                take = min(len(unit.seeds) - sum(len(f) for f in filled), len(batch.seeds) - pos)
                filled.append(batch.images[pos:pos + take])
                pos += take
                if sum(len(f) for f in filled) == len(unit.seeds):
                    images = np.concatenate(filled) if len(filled) > 1 else filled[0]
                    in_flight.append(pool.submit(_write_unit, unit, fmt, images, meta, png_compress_level))
                    unit, filled = next(units_left, None), []
            bar.update(len(batch.seeds))
            while len(in_flight) > 4 * workers:  # bound the memory held by queued writes
                in_flight.pop(0).result()
        for future in in_flight:
            future.result()
    bar.close()
    return SampleReport(len(todo_seeds), skipped, time.perf_counter() - started, out)


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, unit="img", disable=not enabled, desc="sampling", dynamic_ncols=True)
