"""High-throughput, deterministic, resumable sampling of a generator into image files.

    for batch in ganfast.sample(G, range(1000), batch_size=256):      # SampleBatch(seeds, images uint8 NHWC,
        ...                                                           #   labels)
    ganfast.write_samples(G, "0-999999", "out/", fmt="npz")           # what `ganfast sample` runs
    ganfast.write_samples(G, "0-999", "out3/", class_index=3)         # class 3 of a class-conditional G

Determinism: the latent of seed s is ``np.random.RandomState(s).randn(z_dim)`` (the convention of NVlabs'
generate.py, so seeds mean the same latents there and here), and random layer noise, when asked for, comes from a
per-seed ``torch.Generator`` (``ganfast.nn.noise``; drawn on the host, so ``noise_mode="random"`` costs host time
that "const" does not); so an image depends only on its seed, never on the batch size, the shard or the
number of processes. No image comes from a process's first forward (a discarded batch-1 forward runs first: that
one may round differently), and on CUDA G runs with cuDNN's benchmark mode off and deterministic algorithms on
(:func:`reproducible_algorithms`); README, "Determinism", says what the guarantee covers.

Labels (class-conditional generators, ``G.c_dim`` > 0, one-hot ``c`` as in NVlabs): one class K for every
seed, or a class per seed drawn from the training set's class counts (``G.class_counts``, which
``load_generator`` restores from the checkpoint; uniform without them) by ``np.random.RandomState([seed,
LABEL_STREAM]).randint``: a stream of its own, so the latent stays NVlabs' and the class depends on the seed
alone. The image of (seed, class) depends on those two alone.

Output layout (every file written atomically, see ``ganfast._io``):
    png         DIR/00012/seed00012345.png            (sub-folders of 1000 seeds)
                DIR/class3/00012/seed00012345.png     (class-conditional G: by class first)
    npz         DIR/seeds00000000-00000999.npz        (``images`` uint8 NHWC, ``seeds`` int64, and ``labels``
                                                       int64 class per image for a class-conditional G)
    webdataset  DIR/seeds00000000-00000999.tar        (``%08d.png`` + ``%08d.json`` per seed; the json holds
                                                       ``"class": K`` for a class-conditional G)
A rerun of the same command skips the files that exist and writes the rest. ``shard=(i, n)`` takes the i-th of
n contiguous, balanced parts of the seed list (sizes differ by at most one, so every shard has work when there
are at least n seeds); npz/webdataset files group ``shard_size`` seeds of one part, so for them the number of
shards is one of the folder's settings.
``DIR/ganfast-samples.json`` records what the files depend on (see ``_settings``); a run into a folder written
with other settings is refused, so one folder never mixes two kinds of samples or holds a seed twice.

Pipeline: latents (and class draws) are made on the host by the extension, the generator runs under no_grad (on a
CPU as :func:`inference_model`: batch norms folded, channels_last; optionally autocast to bf16/fp16 and
torch.compile; on a GPU replayed from a CUDA graph), images are converted to uint8 NHWC on the device and copied
into pinned host memory asynchronously while the next batch is generated (on a GPU the host prepares batch i+1 while
the device runs batch i); a pool of threads encodes and writes the files, so the device does not wait on the disk.
On a CPU the host's share (latents, class draws, noise generators, made only for ``noise_mode="random"``: about 2 ms
per batch of 256) is too small for a separate producer thread to gain anything on two cores (measured)."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import io
import json
import math
import os
import tarfile
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from . import _ext
from ._io import atomic_write, prepare_output_dir
from .nn.noise import per_sample_noise
from .nn.stylegan import NOISE_MODES as STYLEGAN_NOISE_MODES

__all__ = ["DTYPES", "FORMATS", "NOISE_MODES", "SampleBatch", "SampleOptions", "SampleReport",
           "parse_class", "parse_seeds", "parse_shard", "sample", "sample_options", "seed_classes", "seed_latents",
           "shard_seeds", "write_samples"]

FORMATS = ("png", "npz", "webdataset")
NOISE_MODES = STYLEGAN_NOISE_MODES
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MANIFEST = "ganfast-samples.json"  # the settings a sample folder was written with
LABEL_STREAM = 0x6C61626C  # seed s draws its class from np.random.RandomState([s, LABEL_STREAM])
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


def shard_seeds(seeds: list[int], index: int, count: int) -> list[int]:
    """The ``index``-th of ``count`` contiguous parts of ``seeds`` whose sizes differ by at most one."""
    return seeds[index * len(seeds) // count:(index + 1) * len(seeds) // count]


def parse_class(spec: str | int | None) -> int | str | None:
    """``--class``: a class index (``"3"``), ``"all"`` (a class per seed, drawn from the training distribution) or
    None (the same as "all" for a class-conditional generator; nothing for an unconditional one)."""
    if spec is None or spec == "all":
        return spec
    if isinstance(spec, str):
        if not spec.strip().isdigit():
            raise ValueError(f"class must be a class index (an integer >= 0) or 'all', got {spec!r}")
        spec = int(spec)
    if isinstance(spec, bool) or not isinstance(spec, (int, np.integer)) or spec < 0:
        raise ValueError(f"class must be a class index (an integer >= 0) or 'all', got {spec!r}")
    return int(spec)


# ---- generation ------------------------------------------------------------------------------------------------

def seed_latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """float32 (len(seeds), z_dim): row j is ``np.random.RandomState(seeds[j]).randn(z_dim)``, made in parallel by
    the compiled extension (csrc/latents.cpp, bit-exact with NumPy) or, without it, by NumPy."""
    if _ext.loaded():
        seeds = torch.tensor(seeds, dtype=torch.int64)
        out = torch.empty(len(seeds), z_dim)
        _ext._C.seed_latents_cpu(seeds.data_ptr(), len(seeds), z_dim, _ext.DTYPE_CODES[out.dtype], out.data_ptr())
        return out
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32))


def seed_classes(seeds: Sequence[int], class_counts: Sequence[int]) -> np.ndarray:
    """int64 (len(seeds),): the class of each seed, drawn with probability proportional to ``class_counts``
    (images per class) from ``np.random.RandomState([seed, LABEL_STREAM])``: class k where the integer
    ``randint(sum(counts))`` falls in k's share. Exact integer arithmetic; the stream is NumPy's frozen legacy
    one, so a seed keeps its class across versions and machines. The draws are made in parallel by the compiled
    extension (csrc/latents.cpp, bit-exact with NumPy) or, without it, by NumPy."""
    cumulative = np.cumsum(np.asarray(class_counts, dtype=np.int64))
    if _ext.loaded():
        seeds = torch.tensor(seeds, dtype=torch.int64)
        draws = torch.empty(len(seeds), dtype=torch.int64)
        _ext._C.seed_randint_cpu(seeds.data_ptr(), len(seeds), LABEL_STREAM, int(cumulative[-1]), draws.data_ptr())
        draws = draws.numpy()
    else:
        draws = np.array([np.random.RandomState([s, LABEL_STREAM]).randint(cumulative[-1]) for s in seeds],
                         dtype=np.int64)
    return np.searchsorted(cumulative, draws, side="right").astype(np.int64)


def to_uint8_nhwc(images: torch.Tensor) -> torch.Tensor:
    """Maps [-1, 1] NCHW images to uint8 NHWC (x·127.5 + 128, clamped), on the images' device."""
    return (images.float().permute(0, 2, 3, 1) * 127.5 + 128).clamp_(0, 255).to(torch.uint8)


@dataclass
class SampleBatch:
    seeds: np.ndarray   # int64 (N,)
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray | None = None  # int64 (N,) class per image, float32 (N, c_dim) label vectors, or None


@dataclass(frozen=True)
class SampleOptions:
    """The sampling options, checked once against a generator by :func:`sample_options` and then used as they
    are by :func:`sample`, :func:`write_samples` and ``ganfast sample``.

    ``g_kwargs``: what G is called with besides z and c (truncation_psi / noise_mode, those its forward takes;
    noise_mode defaults to "const", NVlabs' generate.py default). ``classes``: None (unconditional G), a class
    index (every image of that class), ``"all"`` (a class per seed, drawn from ``class_counts``) or a float
    tensor (len(seeds), c_dim) of labels given row by row (:func:`sample` only)."""

    z_dim: int
    c_dim: int
    g_kwargs: dict
    dtype: torch.dtype
    compile: bool
    classes: int | str | torch.Tensor | None
    class_counts: tuple[int, ...] | None
    cuda_graph: bool = False

    @property
    def dtype_name(self) -> str:
        return next(name for name, d in DTYPES.items() if d == self.dtype)

    def labels_setting(self):
        """The label choice as the folder manifest records it."""
        if self.classes is None or isinstance(self.classes, int):
            return self.classes if self.classes is None else {"class": self.classes}
        return {"class": "all", "drawn_from_class_counts": list(self.class_counts)}

    def labels_for(self, seeds: list[int]) -> np.ndarray | None:
        """The label of each seed: int64 class indices, the given float vectors, or None (unconditional)."""
        if self.classes is None:
            return None
        if isinstance(self.classes, torch.Tensor):
            return self.classes.detach().cpu().float().numpy()
        if isinstance(self.classes, int):
            return np.full(len(seeds), self.classes, dtype=np.int64)
        return seed_classes(seeds, self.class_counts)


# Defaults chosen by measurement (benchmarks/cpu_table.py; DCGAN 32 px on a busy 2-core CPU, interleaved rounds):
# batch 256 gave 2.1x the images/s of batch 64 (512 another 1.4x, but activation memory grows with the batch for
# larger generators). torch.compile is off unless asked for: on the CPU the compiled model was slower than the eager
# one for the default DCGAN (16 px, batch 256, 1 thread: 31.5 against 26.9 ms of thread CPU time per batch, under
# load 5-7) and took 46-54 s to compile (4 s from a warm cache); for the default StyleGAN2 (16 px) it was 15%
# faster at 1 thread after 20-23 s of compiling, which a run recovers only after about 250,000 images. Not measured
# on a GPU:
# there the batch stays 64 and compile is asked for explicitly.
_DEFAULT_BATCH = {"cpu": 256}


def batch_size_for(G: torch.nn.Module, batch_size: int | None) -> int:
    """``batch_size``, checked, or the measured default for G's device (None)."""
    if batch_size is None:
        return _DEFAULT_BATCH.get(next(G.parameters(), torch.empty(0)).device.type, 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return batch_size


def _check_cuda_graph(cuda_graph: bool | None, device: torch.device, noise_mode: str | None) -> bool:
    """Whether G's forward is replayed from a CUDA graph: by default on a CUDA device unless layer noise is random
    (drawn on the host per seed, which a graph would freeze at the captured batch's); asking for it there is an
    error."""
    if cuda_graph is None:
        return device.type == "cuda" and noise_mode != "random"
    if not isinstance(cuda_graph, bool):
        raise ValueError(f"cuda_graph must be True, False or None, got {cuda_graph!r}")
    if cuda_graph and noise_mode == "random":
        raise ValueError("cuda_graph=True cannot be used with noise_mode='random': the noise is drawn on the host "
                         "for each batch, and a graph would replay the captured batch's")
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a generator on a CUDA device; G is on {device}")
    return cuda_graph


def sample_options(G: torch.nn.Module, truncation_psi: float = 1.0, noise_mode: str | None = None,
                   dtype: str | torch.dtype | None = None, compile: bool | None = None,
                   c: int | str | torch.Tensor | None = None, class_counts: Sequence[int] | None = None,
                   num_seeds: int | None = None, cuda_graph: bool | None = None) -> SampleOptions:
    """Checks the sampling options against ``G`` once (a ValueError/TypeError naming the bad one).

    ``c`` for a conditional G (``c_dim`` > 0, one-hot class labels): a class index, ``"all"`` or None (a class
    per seed drawn from ``class_counts``, default ``G.class_counts`` (from its checkpoint), else uniform), or a
    float tensor (num_seeds, c_dim) of labels. An unconditional G takes only None. ``compile`` (None:
    off, measured above ``_DEFAULT_BATCH``): ``torch.compile`` G; a generator that fails to compile runs eagerly
    (with a warning). ``cuda_graph`` None: on a CUDA device, G's
    forward is captured once into a CUDA graph and replayed for every batch (not with ``noise_mode="random"``); a
    capture that fails, or a replay that does not reproduce the eager images, leaves G eager (with a warning)."""
    z_dim = getattr(G, "z_dim", None)
    if not isinstance(z_dim, int):
        raise TypeError(f"G must be a generator module with an int attribute z_dim; {type(G).__name__} has none")
    if isinstance(truncation_psi, bool) or not isinstance(truncation_psi, (int, float)) or \
            not math.isfinite(truncation_psi):
        raise ValueError(f"truncation_psi must be a finite number, got {truncation_psi!r}")
    if noise_mode is not None and noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    dtype = DTYPES.get(dtype, dtype) if dtype is not None else torch.float32
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    compile = False if compile is None else compile
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False, got {compile!r}")
    params = inspect.signature(G.forward).parameters
    g_kwargs = {}
    for name, value, default in (("truncation_psi", float(truncation_psi), 1.0),
                                 ("noise_mode", noise_mode or "const", "const")):
        if name in params:
            g_kwargs[name] = value
        elif value != default:
            raise ValueError(f"{name}={value!r} was given but {type(G).__name__}.forward takes no {name} (of "
                             f"ganfast's models, {', '.join(_models_taking(name)) or 'none'} take it)")
    c_dim = getattr(G, "c_dim", 0) or 0
    classes, counts = _label_choice(G, c_dim, c, class_counts, num_seeds)
    device = next(G.parameters(), torch.empty(0)).device
    cuda_graph = _check_cuda_graph(cuda_graph, device, noise_mode)
    return SampleOptions(z_dim, c_dim, g_kwargs, dtype, compile, classes, counts, cuda_graph)


def _label_choice(G, c_dim: int, c, class_counts, num_seeds: int | None):
    """``(classes, class_counts)`` of :class:`SampleOptions`, checked."""
    if c_dim == 0:
        if c is not None:
            raise ValueError(f"class/c was given but {type(G).__name__} is unconditional (c_dim 0)")
        return None, None
    if isinstance(c, torch.Tensor):
        if not c.is_floating_point() or c.shape != (num_seeds if num_seeds is not None else len(c), c_dim):
            raise ValueError(f"c must be a float tensor (one row per seed, {c_dim} columns); got {c.dtype} "
                             f"{tuple(c.shape)}")
        return c, None
    if getattr(G, "label_vectors", False):
        raise ValueError(f"{type(G).__name__} was trained on label vectors, not classes: give c as a float tensor "
                         f"(one row of {c_dim} per seed) to ganfast.sample")
    c = parse_class(c)
    if isinstance(c, int):
        if c >= c_dim:
            raise ValueError(f"class {c} is out of range: the generator has {c_dim} classes (0-{c_dim - 1})")
        return c, None
    counts = class_counts if class_counts is not None else getattr(G, "class_counts", None)
    counts = [1] * c_dim if counts is None else counts
    if len(counts) != c_dim or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0
                                   for n in counts) or sum(counts) <= 0:
        raise ValueError(f"class_counts must be {c_dim} integers >= 0 (images per class), not all 0; got {counts!r}")
    return "all", tuple(int(n) for n in counts)


def sample(G: torch.nn.Module, seeds: str | Iterable[int], batch_size: int | None = None,
           truncation_psi: float = 1.0, noise_mode: str | None = None, dtype: str | torch.dtype | None = None,
           compile: bool | None = None, c: int | str | torch.Tensor | None = None,
           class_counts: Sequence[int] | None = None, cuda_graph: bool | None = None) -> Iterator[SampleBatch]:
    """Generates one image per seed, ``batch_size`` at a time, yielding uint8 NHWC batches on the host.

    G: a generator module with ``z_dim``, called as ``G(z, **kw)`` (``G(z, c, **kw)`` when ``G.c_dim`` > 0) →
    images in [-1, 1] (N, C, H, W) on the device of its parameters; kw holds ``truncation_psi`` / ``noise_mode``
    when its forward takes them. G runs in eval mode (its mode is restored afterwards). dtype:
    "bf16"/"fp16"/"fp32" (or a torch dtype): the autocast dtype. The latents follow ``seed_latents``; ``c``:
    see :func:`sample_options` (each batch's ``labels`` says what each image was generated with). batch_size None:
    256 on a CPU, 64 elsewhere (measurements above ``_DEFAULT_BATCH``).
    """
    seeds = parse_seeds(seeds)
    batch_size = batch_size_for(G, batch_size)
    options = sample_options(G, truncation_psi, noise_mode, dtype, compile, c, class_counts, len(seeds), cuda_graph)
    return _generate(G, seeds, batch_size, options, options.labels_for(seeds))


def _label_input(labels: np.ndarray | None, c_dim: int) -> torch.Tensor | None:
    """What G takes as c: one-hot rows for class indices, the vectors themselves otherwise."""
    if labels is None:
        return None
    if labels.ndim == 1:
        return torch.nn.functional.one_hot(torch.from_numpy(labels), c_dim).float()
    return torch.from_numpy(labels)


def _generate(G: torch.nn.Module, seeds: list[int], batch_size: int, options: SampleOptions,
              labels: np.ndarray | None) -> Iterator[SampleBatch]:
    device = next(G.parameters(), torch.empty(0)).device
    on_gpu = device.type == "cuda"
    was_training = G.training
    model = inference_model(G.eval())
    run = _CompiledOrEager(model) if options.compile else model
    if options.cuda_graph and len(seeds) > batch_size:  # one batch: capturing would only add work
        run = _CudaGraphOrEager(run, batch_size)
    dtype = options.dtype
    autocast = dict(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32,
                    cache_enabled=not options.cuda_graph)  # a graph must not capture autocast's weight cache
    chunks = [(seeds[i:i + batch_size], None if labels is None else labels[i:i + batch_size])
              for i in range(0, len(seeds), batch_size)]
    batches = (_images(run, chunk, chunk_labels, options, device, autocast) for chunk, chunk_labels in chunks)
    pending: tuple[list[int], torch.Tensor, torch.cuda.Event | None, np.ndarray | None] | None = None
    try:
        if seeds:  # a process's first forward may round differently from later ones (README, "Determinism"): one
            # is discarded
            _forward(model, seeds[:1], None if labels is None else labels[:1], options, device, autocast)
        for (chunk, chunk_labels), images in zip(chunks, batches):
            host = torch.empty(images.shape, dtype=torch.uint8, pin_memory=on_gpu)
            host.copy_(images, non_blocking=on_gpu)
            event = torch.cuda.Event() if on_gpu else None
            if event is not None:
                event.record()
            if pending is not None:  # the previous batch's copy overlapped this batch's generation
                yield _finish(*pending)
            pending = (chunk, host, event, chunk_labels)
        if pending is not None:
            yield _finish(*pending)
    finally:
        batches.close()
        G.train(was_training)


def _images(run, seeds: list[int], labels: np.ndarray | None, options: SampleOptions, device: torch.device,
            autocast: dict) -> torch.Tensor:
    """The uint8 NHWC images of ``seeds``, on the device."""
    images = _forward(run, seeds, labels, options, device, autocast)
    if images.ndim != 4:
        raise ValueError(f"G must return images (N, C, H, W) in [-1, 1]; got shape {tuple(images.shape)}")
    return to_uint8_nhwc(images)


def _forward(run, seeds: list[int], labels: np.ndarray | None, options: SampleOptions, device: torch.device,
             autocast: dict) -> torch.Tensor:
    """``run``'s images of ``seeds`` (with their ``labels``): latents, one-hot labels and per-seed layer noise."""
    on_gpu = device.type == "cuda"
    z = seed_latents(seeds, options.z_dim)
    z = z.pin_memory().to(device, non_blocking=True) if on_gpu else z.to(device)
    c = _label_input(labels, options.c_dim)
    args = (z,) if c is None else (z, c.pin_memory().to(device, non_blocking=True) if on_gpu else c)
    noise = per_sample_noise([torch.Generator().manual_seed(_NOISE_SEED_OFFSET + s) for s in seeds]) \
        if options.g_kwargs.get("noise_mode") == "random" else contextlib.nullcontext()  # only then does G draw noise
    with torch.no_grad(), torch.autocast(**autocast), noise, reproducible_algorithms(device):
        return run(*args, **options.g_kwargs)


@contextlib.contextmanager
def reproducible_algorithms(device: torch.device):
    """Within, on a CUDA device: cuDNN's benchmark mode off (it times candidate algorithms in each process, so two
    processes may pick different ones) and torch's deterministic algorithms on (``warn_only``, unless they were on
    strictly already: an op without one warns), without the NaN fill of new tensors that mode adds (a debugging
    aid, one extra write per allocation); the previous settings are restored on exit. Elsewhere: nothing."""
    if device.type != "cuda":
        yield
        return
    cudnn, fill = torch.backends.cudnn, torch.utils.deterministic
    saved = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), fill.fill_uninitialized_memory)
    cudnn.benchmark, cudnn.deterministic, fill.fill_uninitialized_memory = False, True, False
    torch.use_deterministic_algorithms(True, warn_only=not saved[2] or saved[3])
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic, fill.fill_uninitialized_memory = saved[0], saved[1], saved[4]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def inference_model(G: torch.nn.Module) -> torch.nn.Module:
    """The model that sampling runs for G (in eval mode): on a CPU, a copy in which every eval-mode batch norm that
    directly follows a Linear (through an Unflatten), Conv2d or ConvTranspose2d inside an ``nn.Sequential`` is folded
    into that layer (W' = s·W, b' = s·(b − μ) + β, s = γ/√(σ² + ε)), whose ReLU right after such a fold runs in
    place (the same bits, one activation tensor fewer to allocate), whose one-channel output convolution runs as
    :class:`_OneChannelConv` and which runs channels_last; G itself where
    there is no such batch norm, and on other devices (not measured there). Folding changes the float results in
    the last bits, so every path that turns seeds into images (sample, write_samples, validate, metrics: all
    through :func:`sample`) runs this model, and a seed's image is the same everywhere."""
    device = next(G.parameters(), torch.empty(0)).device
    if device.type != "cpu" or not any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules()):
        return G
    model, folded = copy.deepcopy(G), 0
    for seq in [m for m in model.modules() if isinstance(m, torch.nn.Sequential)]:
        layers = list(seq)
        for i, norm in enumerate(layers):
            if i and _foldable_norm(norm):
                prev, spatial = layers[i - 1], 1
                if isinstance(prev, torch.nn.Unflatten) and i > 1 and prev.dim == 1 and len(prev.unflattened_size) == 3:
                    spatial = prev.unflattened_size[1] * prev.unflattened_size[2]
                    prev = layers[i - 2] if isinstance(layers[i - 2], torch.nn.Linear) else None
                if _fold_into(prev, norm, spatial):
                    seq[i] = torch.nn.Identity()
                    folded += 1
                    if i + 1 < len(layers) and type(layers[i + 1]) is torch.nn.ReLU:  # its input is the fresh
                        seq[i + 1] = torch.nn.ReLU(inplace=True)  # output of `prev`: overwrite it, no new tensor
    if not folded:
        return G
    for parent in list(model.modules()):
        for name, conv in parent.named_children():
            if _OneChannelConv.fits(conv):
                setattr(parent, name, _OneChannelConv(conv))
    return model.to(memory_format=torch.channels_last)


class _OneChannelConv(torch.nn.Module):
    """A stride-1 k×k Conv2d to one output channel with zero "same" padding p = k // 2, as one GEMM and k² shifted
    adds: t[(i, j), n, h, w] = Σ_c W[c, i, j]·x[n, c, h, w], y[n, h, w] = b + Σ_{i,j} t[(i, j), n, h + i − p,
    w + j − p] over the positions inside the image (zero padding adds nothing). t is tap-major, so each add reads
    and writes rows of unit stride. oneDNN runs such a convolution far below its usual rate (DCGAN's 32→1 channel
    3×3 output layer, 16 px, batch 256, 1 thread, thread CPU time: 1.0 ms this way, 5.9 ms as a Conv2d)."""

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        self.k = conv.kernel_size[0]
        weight = conv.weight.detach()
        self.taps = torch.nn.Parameter(weight[0].reshape(weight.shape[1], -1).t().contiguous(), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else weight.new_zeros(1)
        self.bias = torch.nn.Parameter(bias.clone(), requires_grad=False)

    @staticmethod
    def fits(conv: torch.nn.Module) -> bool:
        k = conv.kernel_size[0] if isinstance(conv, torch.nn.Conv2d) else 0
        return (type(conv) is torch.nn.Conv2d and conv.out_channels == 1 and conv.groups == 1 and k % 2 == 1
                and conv.kernel_size == (k, k) and conv.stride == (1, 1) and conv.dilation == (1, 1)
                and conv.padding == (k // 2, k // 2) and conv.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k, p = self.k, self.k // 2
        t = (self.taps @ x.transpose(0, 1).reshape(c, -1)).reshape(k, k, n, h, w)  # a view for channels_last x
        y = self.bias.expand(n, h, w).clone()
        for i in range(k):
            for j in range(k):
                di, dj = i - p, j - p  # y[., a, b] += t[i, j, ., a + di, b + dj] where both lie inside
                y[:, max(0, -di):h - max(0, di), max(0, -dj):w - max(0, dj)] += \
                    t[i, j, :, max(0, di):h + min(0, di), max(0, dj):w + min(0, dj)]
        return y.unsqueeze(1)


def _foldable_norm(norm: torch.nn.Module) -> bool:
    """An eval-mode BatchNorm2d (or a label-free subclass that computes the same) with running statistics."""
    return (isinstance(norm, torch.nn.BatchNorm2d) and not norm.training and norm.running_var is not None
            and type(norm).forward in (torch.nn.BatchNorm2d.forward,) + _label_free_forward(norm))


def _label_free_forward(norm: torch.nn.Module) -> tuple:
    """ganfast's ConditionalBatchNorm2d is nn.BatchNorm2d when it takes no labels."""
    from .models.conv import ConditionalBatchNorm2d
    return (ConditionalBatchNorm2d.forward,) if isinstance(norm, ConditionalBatchNorm2d) and not norm.c_dim else ()


@torch.no_grad()
def _fold_into(layer, norm: torch.nn.BatchNorm2d, spatial: int) -> bool:
    """Folds ``norm`` into ``layer`` (Conv2d, ConvTranspose2d or, with ``spatial`` > 1 positions per channel, a
    Linear whose outputs are channel-major); False where ``layer`` is none of these."""
    if isinstance(layer, torch.nn.Linear) and spatial > 1 or isinstance(layer, torch.nn.Conv2d) and layer.groups == 1:
        out_dim = 0
    elif isinstance(layer, torch.nn.ConvTranspose2d) and layer.groups == 1:
        out_dim = 1
    else:
        return False
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale + (norm.bias if norm.bias is not None else 0)
    scale, shift = scale.repeat_interleave(spatial), shift.repeat_interleave(spatial)
    if scale.shape[0] != layer.weight.shape[out_dim]:
        return False
    shape = [1] * layer.weight.ndim
    shape[out_dim] = -1
    layer.weight.mul_(scale.reshape(shape))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(shift)
    layer.bias = torch.nn.Parameter(bias * scale + shift, requires_grad=False)
    return True


class _CompiledOrEager:
    """``torch.compile(G)``, switching to G itself for good (one warning) if compiling or running it fails."""

    def __init__(self, G: torch.nn.Module) -> None:
        self.G, self.run = G, torch.compile(G)

    def __call__(self, *args, **kwargs):
        if self.run is not self.G:
            try:
                return self.run(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager module still works
                warnings.warn(f"ganfast.sample: torch.compile of {type(self.G).__name__} failed "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); running it "
                              f"eagerly", RuntimeWarning, stacklevel=3)
                self.run = self.G
        return self.G(*args, **kwargs)


class _CudaGraphOrEager:
    """``run`` (G, or G compiled) replayed from a CUDA graph captured for batches of ``batch_size``: its inputs are
    copied into the graph's static buffers (a smaller batch is padded with zero rows, whose images are cut off:
    in eval mode G treats rows independently) and the images read from its static output. On the first call the
    graph's images are compared with an eager run on the same inputs; if capturing fails or they differ, ``run``
    is used from then on (one warning naming why)."""

    def __init__(self, run, batch_size: int) -> None:
        self.run, self.batch_size = run, batch_size
        self.graph = self.inputs = self.output = None
        self.eager = False

    def __call__(self, *args, **kwargs):
        if self.eager:
            return self.run(*args, **kwargs)
        if self.graph is not None:
            return self._replay(args)
        self.inputs = [torch.zeros((self.batch_size, *a.shape[1:]), dtype=a.dtype, device=a.device) for a in args]
        self._fill(args)
        expected = self.run(*self.inputs, **kwargs)[:len(args[0])]
        try:
            self.graph, self.output = _capture_cuda_graph(self.run, self.inputs, kwargs)
            images = self._replay(args)
            why = None if torch.equal(images, expected) else "its images differ from the eager forward's"
        except Exception as exc:  # noqa: BLE001 - any capture failure: the eager forward still works
            why = f"capture failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        if why is None:
            return images
        warnings.warn(f"ganfast.sample: CUDA graph of {type(getattr(self.run, 'G', self.run)).__name__}: {why}; "
                      f"running it without a graph", RuntimeWarning, stacklevel=3)
        self.eager, self.graph = True, None
        self.inputs = self.output = None
        return expected

    def _fill(self, args) -> None:
        for static, given in zip(self.inputs, args):
            static[:len(given)].copy_(given, non_blocking=True)
            static[len(given):].zero_()

    def _replay(self, args) -> torch.Tensor:
        self._fill(args)
        self.graph.replay()
        return self.output[:len(args[0])]


def _capture_cuda_graph(run, inputs: list[torch.Tensor], kwargs: dict):
    """``(graph, output)``: ``run(*inputs, **kwargs)`` captured into a ``torch.cuda.CUDAGraph``, after a warm-up
    run on a side stream (the documented recipe: lazy set-up such as cuBLAS handles must not be captured)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run(*inputs, **kwargs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = run(*inputs, **kwargs)
    return graph, output


def _finish(seeds: list[int], host: torch.Tensor, event, labels: np.ndarray | None) -> SampleBatch:
    if event is not None:
        event.synchronize()
    return SampleBatch(np.asarray(seeds, dtype=np.int64), host.numpy(), labels)


# ---- files -----------------------------------------------------------------------------------------------------

@dataclass
class _Unit:
    """One output file, the seeds it holds and their labels (None: unconditional)."""
    path: Path
    seeds: list[int]
    labels: np.ndarray | None = None


def _plan(seeds: list[int], fmt: str, out: Path, shard_size: int, shard: tuple[int, int],
          options: SampleOptions) -> list[_Unit]:
    """The files of shard ``shard`` = (i, n), which holds the seeds :func:`shard_seeds` gives it. Labels are drawn
    for its seeds only (a PNG of a class-conditional G lies under its class's folder)."""
    mine = shard_seeds(seeds, *shard)
    if fmt == "png":
        labels = options.labels_for(mine)
        if labels is None:
            return [_Unit(out / f"{s // 1000:05d}" / f"seed{s:08d}.png", [s]) for s in mine]
        return [_Unit(out / f"class{k}" / f"{s // 1000:05d}" / f"seed{s:08d}.png", [s], labels[j:j + 1])
                for j, (s, k) in enumerate(zip(mine, labels.tolist()))]
    ext = "npz" if fmt == "npz" else "tar"
    chunks = [mine[i:i + shard_size] for i in range(0, len(mine), shard_size)]
    return [_Unit(out / f"seeds{c[0]:08d}-{c[-1]:08d}.{ext}", c, options.labels_for(c)) for c in chunks]


def _ranges(seeds: list[int]) -> str:
    """Seeds as inclusive ranges, as ``--seeds`` takes them: [0, 1, 2, 9] -> "0-2,9"."""
    parts, start = [], 0
    for i in range(1, len(seeds) + 1):
        if i == len(seeds) or seeds[i] != seeds[i - 1] + 1:
            parts.append(f"{seeds[start]}" if start == i - 1 else f"{seeds[start]}-{seeds[i - 1]}")
            start = i
    return ",".join(parts) or "none"


def _models_taking(name: str) -> list[str]:
    """The generators exported by ``ganfast.models`` whose forward takes the keyword ``name``."""
    from . import models
    classes = (getattr(models, n) for n in models.__all__)
    return [c.__name__ for c in classes if isinstance(c, type) and issubclass(c, torch.nn.Module)
            and c.__name__.endswith("Generator") and name in inspect.signature(c.forward).parameters]


def _is_complete(unit: _Unit, fmt: str) -> bool:
    """Whether an earlier run already wrote this file (files are atomic: present means complete)."""
    if not unit.path.exists():
        return False
    if fmt == "npz":
        with np.load(unit.path) as data:
            found = data["seeds"].tolist()
            if found != unit.seeds:
                raise FileExistsError(f"{unit.path} exists but holds seeds {_ranges(found)}, not "
                                      f"{_ranges(unit.seeds)}; remove it or use another out dir")
    return True


def _png_bytes(image: np.ndarray, compress_level: int) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG",
                                                                            compress_level=compress_level)
    return buf.getvalue()


def _label_record(label) -> dict:
    """A seed's label in its WebDataset json: ``"class": K``, or ``"label": [...]`` for a label vector."""
    return {"class": int(label)} if np.ndim(label) == 0 else {"label": np.asarray(label).tolist()}


def _write_unit(unit: _Unit, fmt: str, images: np.ndarray, meta: dict, compress_level: int) -> None:
    if fmt == "png":
        data = _png_bytes(images[0], compress_level)
        atomic_write(unit.path, lambda f: f.write(data))
    elif fmt == "npz":
        arrays = {"images": images, "seeds": np.asarray(unit.seeds, dtype=np.int64)}
        if unit.labels is not None:
            arrays["labels"] = unit.labels
        atomic_write(unit.path, lambda f: np.savez(f, **arrays))
    else:
        labels = [{}] * len(unit.seeds) if unit.labels is None else [_label_record(k) for k in unit.labels]

        def write_tar(f):
            with tarfile.open(fileobj=f, mode="w") as tar:
                for seed, image, label in zip(unit.seeds, images, labels):
                    record = {"seed": seed, **label, **meta}
                    for name, data in ((f"{seed:08d}.png", _png_bytes(image, compress_level)),
                                       (f"{seed:08d}.json", json.dumps(record).encode())):
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


def _called_with(options: SampleOptions) -> dict:
    """The truncation and noise mode G is actually called with (its defaults filled in; None: it takes none)."""
    return {"truncation_psi": options.g_kwargs.get("truncation_psi", 1.0),
            "noise_mode": options.g_kwargs.get("noise_mode")}


def _settings(G: torch.nn.Module, seeds: list[int], fmt: str, shard_size: int, options: SampleOptions,
              shards: int = 1) -> dict:
    """What the files of a sample folder depend on (not the shard index, batch size, workers, compile or CUDA
    graphs): the generator's weights (its state dict), the layout, the sampling options, the label choice and,
    where files group several seeds (npz, webdataset), the seed list (count and SHA-256; a png is one seed under
    its own name) and the number of shards (a file groups seeds of one shard)."""
    from .checkpoint import tensor_digest
    weights = hashlib.sha256()
    for key, value in G.state_dict().items():
        weights.update(f"{key}:{tensor_digest(value)};".encode())
    grouped = fmt != "png"
    seed_list = hashlib.sha256(np.asarray(seeds, np.int64).tobytes()).hexdigest()
    return {"generator": f"sha256:{weights.hexdigest()} of its state dict", "format": fmt,
            "seeds": f"{len(seeds)} seeds, sha256:{seed_list}" if grouped else None,
            "shard_size": shard_size if grouped else None, "shards": shards if grouped else None,
            **_called_with(options), "dtype": options.dtype_name,
            "labels": options.labels_setting()}


def _holds_samples(out: Path) -> bool:
    return any(p.is_file() and p.name != MANIFEST and not p.name.startswith(".") for p in out.rglob("*"))


def _claim_folder(out: Path, settings: dict) -> None:
    """Records ``settings`` in ``out``'s manifest, or checks them against the one there: a folder holds samples
    of one kind only (a mismatch is a ValueError naming the setting). The manifest is created exclusively (a hard
    link of a finished file), so of several processes starting at once one writes it and the others compare
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
                  batch_size: int | None = None, shard: str | tuple[int, int] = (0, 1), shard_size: int = 1000,
                  workers: int = 4, png_compress_level: int = 1, progress: bool = True,
                  class_index: int | str | None = None, **sample_kwargs) -> SampleReport:
    """Samples the seeds of this shard into files under ``out`` (layout in the module docstring), skipping files
    an earlier run completed; ``out`` must hold samples of the same settings or none (``MANIFEST``).
    ``class_index`` (class-conditional G): one class for every seed, or "all"/None for a class per seed drawn
    from the training distribution. ``sample_kwargs`` go to :func:`sample_options` (truncation_psi, noise_mode,
    dtype, compile, class_counts, cuda_graph). PNG compression level 1 is lossless like any other, and several
    times faster to encode than 6."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    batch_size = batch_size_for(G, batch_size)
    if isinstance(class_index, torch.Tensor):
        raise ValueError("class_index must be a class index, 'all' or None (label tensors: use ganfast.sample)")
    shard = parse_shard(shard)
    seeds = parse_seeds(seeds)
    options = sample_options(G, c=class_index, **sample_kwargs)  # checked before anything is written
    out = prepare_output_dir(out)
    _claim_folder(out, _settings(G, seeds, fmt, shard_size, options, shard[1]))
    units = _plan(seeds, fmt, out, shard_size, shard, options)
    todo = [u for u in units if not _is_complete(u, fmt)]
    skipped = sum(len(u.seeds) for u in units) - sum(len(u.seeds) for u in todo)
    meta = {k: v for k, v in _called_with(options).items() if v is not None}
    todo_seeds = [s for u in todo for s in u.seeds]
    todo_labels = None if options.classes is None else np.concatenate([u.labels for u in todo] or [np.zeros(0)])
    started = time.perf_counter()
    bar = _progress_bar(len(todo_seeds), progress)
    with ThreadPoolExecutor(workers) as pool:
        in_flight: list[Future] = []
        units_left, filled = iter(todo), []  # the unit being filled and its images so far
        unit = next(units_left, None)
        for batch in (_generate(G, todo_seeds, batch_size, options, todo_labels) if todo_seeds else ()):
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
