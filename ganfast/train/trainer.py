"""``Trainer``: the training loop over the functional step API, with EMA, ticks, snapshots and exact resume."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import operator
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .. import losses
from .._io import atomic_write, prepare_output_dir
from ..data import BatchLoader, DataOrder, Dataset
from ..malloc import keep_freed_memory
from ..models._spec import model_spec
from . import schedules
from . import step as steps
from ..checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .loggers import Loggers, check_loggers, metric_scalars, open_loggers, stat_scalars
from .visual import image_grid, save_png, scatter

STATS = "stats.jsonl"
SNAPSHOT_PATTERN = "network-snapshot-{kimg:06d}.safetensors"  # the networks kept every ``snapshot_ticks`` ticks
RESUMABLE_FIELDS = ("snapshot_ticks", "keep_snapshots", "collapse_ratio", "num_fixed")  # free to change on resume
STOP_SIGNALS = ("SIGTERM", "SIGINT")  # what stops Trainer.train after its step (a SIGINT anywhere: 130)
RECALL_FLOOR = 0.1  # a k-NN recall of the real features below this raises the collapse alarm


@dataclass
class TrainConfig:
    """Hyper-parameters of a run. ``loss`` is a ``ganfast.losses.LOSS_KINDS`` name (``"wasserstein"`` adds
    ``gp_weight`` · WGAN-GP); ``r1_gamma`` 0 turns R1 off; ``pl_weight`` > 0 adds StyleGAN2's path-length
    penalty every ``pl_interval`` steps (generators with ``mapping``/``synthesis``); ``ema_kimg`` is the EMA
    half-life in kimg.

    ``aug`` chooses D's augmentation: ``"ada"`` (StyleGAN2-ADA's ``augpipe`` preset with p adjusted every
    ``ada_interval`` steps towards ``aug_target`` so that it can move by 1 in ``ada_kimg`` thousand images, starting
    at ``aug_p``), ``"fixed"`` (that pipeline at p = ``aug_p``), ``"diffaug"`` (DiffAugment's colour, translation,
    cutout) or ``"noaug"``.

    A tick is ``tick_steps`` steps: one ``stats.jsonl`` record (with an evaluation) and a log line. Every
    ``snapshot_ticks`` ticks, and at the end, a sample picture and the checkpoint are written, and with
    ``keep_snapshots`` also a ``network-snapshot-<kimg>.safetensors`` (G, D, G_ema and their specs) that later
    snapshots do not overwrite.

    ``cond``: conditional training on the data set's labels (G and D must be built with its ``c_dim``).

    ``r2``: R2 (the same penalty on the fakes) beside R1, γ/2 each, through ``ganfast.losses.r1_r2`` (one D
    pass on [real; fake] on a GPU, two on the CPU) when D has no batch statistics, else in two passes.
    ``decay_kimg`` > 0 turns on R3GAN's cosine schedules (:mod:`ganfast.train.schedules`): lr -> ``lr_end``,
    β2 -> ``beta2_end``, γ -> ``gamma_end`` (None: γ/10), EMA half-life 0 -> ``ema_kimg``, and with
    ``aug="fixed"`` p 0 -> ``aug_p``.
    """

    batch_size: int = 64
    loss: str = "logistic"
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.99)
    r1_gamma: float = 0.0
    r1_interval: int = 16
    gp_weight: float = 10.0
    pl_weight: float = 0.0
    pl_interval: int = 4
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    bf16: bool = False
    seed: int = 0
    tick_steps: int = 100
    snapshot_ticks: int = 10
    collapse_ratio: float = 0.5
    num_fixed: int = 64
    cond: bool = False
    keep_snapshots: bool = False
    aug: str = "noaug"
    aug_p: float = 0.0
    aug_target: float = 0.6
    augpipe: str = "bgc"
    ada_interval: int = 4
    ada_kimg: float = 500.0
    r2: bool = False
    decay_kimg: float = 0.0
    lr_end: float | None = None
    beta2_end: float | None = None
    gamma_end: float | None = None

    def __post_init__(self):
        """Each field checked and made a plain Python value (numpy or torch scalars from a sweep are fine), so
        that a bad value is a ValueError naming it, not a crash steps later."""
        steps.check_loss(self.loss)
        for name in ("batch_size", "r1_interval", "pl_interval", "tick_steps", "snapshot_ticks", "num_fixed"):
            setattr(self, name, _checked_number(name, getattr(self, name), integer=True, low=1))
        self.seed = _checked_number("seed", self.seed, integer=True, low=0)
        for name, positive in (("lr_g", True), ("lr_d", True), ("r1_gamma", False), ("gp_weight", False),
                               ("pl_weight", False), ("ema_kimg", False), ("collapse_ratio", False)):
            setattr(self, name, _checked_number(name, getattr(self, name), low=0, strict=positive))
        try:
            betas = tuple(_checked_number("betas", b, low=0) for b in self.betas)
        except TypeError:
            betas = ()
        if len(betas) != 2 or max(betas) >= 1:
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = betas
        if self.ema_rampup is not None:
            self.ema_rampup = _checked_number("ema_rampup", self.ema_rampup, low=0, strict=True)
        self.decay_kimg = _checked_number("decay_kimg", self.decay_kimg, low=0)
        for name in ("lr_end", "gamma_end", "beta2_end"):
            if getattr(self, name) is not None:
                setattr(self, name, _checked_number(name, getattr(self, name), low=0, strict=name == "lr_end"))
        if self.beta2_end is not None and self.beta2_end >= 1:
            raise ValueError(f"TrainConfig.beta2_end must be in [0, 1), got {self.beta2_end!r}")
        for name in ("bf16", "cond", "keep_snapshots", "r2"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"TrainConfig.{name} must be True or False, got {getattr(self, name)!r}")
            setattr(self, name, bool(getattr(self, name)))
        from ..augment import AUG_MODES, PRESETS
        if self.aug not in AUG_MODES:
            raise ValueError(f"TrainConfig.aug must be one of {AUG_MODES}, got {self.aug!r}")
        if self.augpipe not in PRESETS:
            raise ValueError(f"TrainConfig.augpipe must be one of {sorted(PRESETS)}, got {self.augpipe!r}")
        self.ada_interval = _checked_number("ada_interval", self.ada_interval, integer=True, low=1)
        self.ada_kimg = _checked_number("ada_kimg", self.ada_kimg, low=0, strict=True)
        self.aug_p = _checked_number("aug_p", self.aug_p, low=0)
        self.aug_target = _checked_number("aug_target", self.aug_target, low=0, strict=True)
        if self.aug_p > 1 or self.aug_target >= 1:
            raise ValueError(f"TrainConfig.aug_p must be in [0, 1] and aug_target in (0, 1), got {self.aug_p!r}, "
                             f"{self.aug_target!r}")


def _checked_number(name: str, value, integer: bool = False, low: float = 0, strict: bool = False):
    """``value`` as a Python int (``integer``) or float, finite and >= ``low`` (> if ``strict``); else a
    ValueError naming ``TrainConfig.<name>``. Integers must be integral (numpy/torch integer scalars too)."""
    kind = "an integer" if integer else "a finite number"
    bound = f"{'>' if strict else '>='} {low:g}"
    try:
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.numel() != 1):
            raise TypeError
        number = operator.index(value) if integer else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"TrainConfig.{name} must be {kind} {bound}, got {value!r}") from None
    if not math.isfinite(number) or number < low or (strict and number == low):
        raise ValueError(f"TrainConfig.{name} must be {kind} {bound}, got {value!r}")
    return number


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


GRID_CLASSES = 32  # a class-conditional sample grid shows (at most) this many classes, one per row


def label_space(dataset: Dataset) -> dict:
    """What a checkpoint records of the labels a conditional model was trained on: ``c_dim``, ``num_classes``
    (None for label vectors) and ``class_counts`` (images per class: the label distribution sampling draws
    from)."""
    counts = None
    if dataset.num_classes is not None:
        counts = torch.bincount(dataset.labels, minlength=dataset.num_classes).tolist()
    return {"c_dim": dataset.c_dim, "num_classes": dataset.num_classes, "class_counts": counts}


def _model_c_dim(model: torch.nn.Module) -> int:
    return getattr(model, "c_dim", 0) or 0


def set_threads(threads: int | None, device) -> None:
    """The thread policy of ``ganfast train`` and of :class:`Trainer`: ``threads`` torch CPU threads when given,
    else 1 when running on the CPU. These small models ran 10-15x faster with 1 than with 2 threads on a busy
    2-core machine (measured: ring8 12.4 vs 0.85 steps/s), and torchrun processes share the cores. ganfast's C++
    kernels run on torch's OpenMP threads, so the same count governs them."""
    on_cpu = torch.device(device).type == "cpu" if device is not None else not torch.cuda.is_available()
    if threads is not None or on_cpu:
        torch.set_num_threads(threads or 1)


def check_device(device: torch.device) -> None:
    """A ValueError naming the device when it is CUDA and this torch sees no CUDA device."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {str(device)!r} was asked for, but torch sees no CUDA device "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use cpu")


def peak_memory(device: torch.device) -> dict:
    """Peak resident memory of this process (MiB, from getrusage) and, on CUDA, peak allocated device memory."""
    import resource
    import sys
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
    peak = {"peak_rss_mib": round(rss, 1)}
    if device.type == "cuda":
        peak["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / (1 << 20), 1)
    return peak


def diversity(samples: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between (flattened) samples: it falls when a generator collapses."""
    flat = samples.detach().double().flatten(1)
    n = len(flat)
    return float(torch.cdist(flat, flat).sum() / (n * (n - 1)))


class Trainer:
    """Trains any generator/discriminator pair — ``G(z)`` -> samples, ``D(x)`` -> logits ``(N,)``, ``G.z_dim``;
    with ``config.cond``, ``G(z, c)`` and ``D(x, c)`` on the data set's labels (one-hot rows for classes).

    Each step is one :func:`~ganfast.train.step.d_step` (with lazy R1 every ``r1_interval`` steps) and one
    :func:`~ganfast.train.step.g_step` on fresh latents, then the EMA update of ``G_ema``. Latents are drawn
    from a generator re-seeded from (seed, step, rank), and data from a :class:`~ganfast.data.DataOrder`, so a
    run resumed from its checkpoint repeats the uninterrupted run exactly. A conditional run gives D the real
    images' own labels, and generates fakes with the labels of data set rows drawn uniformly (so fake labels
    follow the data set's label distribution) from the latents' generator. Under ``torchrun`` (a process
    group is initialised) each rank takes ``batch_size / world_size`` samples and gradients are averaged.

    ``evaluate(G_ema) -> dict`` adds metrics to each tick's record (for 2-D mixtures the mode metrics are
    computed without it); a ``recall`` it returns feeds the collapse alarm, as does a ``classes_dropped`` list.
    ``snapshot_hook(path)`` runs after each network snapshot (``ganfast train --metrics``); the metric records it
    returns (``metric-<name>.jsonl`` lines), if any, go to the loggers. ``loggers``: backend names of
    :mod:`ganfast.train.loggers` (``"tensorboard"``, ``"wandb"``, ``"mlflow"``) that rank 0 sends every
    ``stats.jsonl`` scalar, metric result and sample grid to while :meth:`train` runs (kept in checkpoints and
    snapshots: ``ganfast metrics`` sends its results to them too). ``threads``: torch
    CPU threads, as :func:`set_threads` (1 on the CPU unless given). ``run`` is the run's definition as
    ``ganfast train`` built it, stored in the checkpoint for ``--resume``.

    :meth:`train` stops cleanly on SIGTERM or a first Ctrl-C (SIGINT): it finishes the step, writes the
    checkpoint and sets ``interrupted`` to the signal's name; a second Ctrl-C raises KeyboardInterrupt.
    """

    def __init__(self, G: torch.nn.Module, D: torch.nn.Module, dataset: Dataset, out_dir: str,
                 config: TrainConfig | None = None, device: str | torch.device | None = None,
                 evaluate: Callable[[torch.nn.Module], dict] | None = None, progress: bool = True,
                 threads: int | None = None, run: dict | None = None,
                 snapshot_hook: Callable[[str], list[dict] | None] | None = None, loggers: tuple[str, ...] = ()):
        for name, value, kind in (("G", G, torch.nn.Module), ("D", D, torch.nn.Module), ("dataset", dataset, Dataset)):
            if not isinstance(value, kind):
                hint = " (a tensor of samples becomes one with ganfast.data.Dataset(name, tensor))" \
                    if name == "dataset" else ""
                raise TypeError(f"Trainer: {name} must be a {kind.__module__}.{kind.__name__}, got "
                                f"{type(value).__name__}{hint}")
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer: config must be a TrainConfig, got {type(config).__name__}")
        self.config = cfg = config or TrainConfig()
        try:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError as exc:
            raise ValueError(f"device: {device!r} is not a device ({exc})") from None
        check_device(self.device)
        set_threads(threads, self.device)
        if self.device.type == "cpu":
            keep_freed_memory()  # the step's activations reuse the last step's pages (ganfast.malloc)
        self.run, self.snapshot_hook, self.interrupted = dict(run or {}), snapshot_hook, None
        check_loggers(list(loggers))
        self.logger_names, self.logger = list(loggers), Loggers([])
        self.rank, self.world_size = _world()
        if cfg.batch_size % self.world_size:
            raise ValueError(f"batch_size ({cfg.batch_size}) must be a multiple of the world size ({self.world_size})")
        self.G, self.D = G.to(self.device).train(), D.to(self.device).train()
        steps.broadcast_module(self.G)
        steps.broadcast_module(self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        self.path_length = losses.PathLengthPenalty().to(self.device) if cfg.pl_weight > 0 else None
        self.dataset, self.out_dir, self.evaluate, self.progress = dataset, out_dir, evaluate, progress
        self.c_dim = self._check_conditioning()
        self.augment, self.ada = self._build_augment(cfg, dataset)
        self.order = DataOrder(dataset, cfg.batch_size, cfg.seed, self.rank, self.world_size)
        self.loader = BatchLoader(dataset, self.order, self.device)
        self.step, self.nimg, self.tick = 0, 0, 0
        self.best_diversity, self.best_recall = 0.0, 0.0
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        num_fixed = 2048 if dataset.is_2d else cfg.num_fixed
        self.fixed_z = torch.randn(num_fixed, G.z_dim, generator=gen)
        self.real_diversity = diversity(dataset.batch(torch.randperm(len(dataset), generator=gen)[:num_fixed]))
        self.fixed_c, self.grid_columns = None, None
        if self.c_dim and dataset.num_classes is not None and not dataset.is_2d:
            # the sample grid: one row per class, the same latent down each column
            rows, self.grid_columns = min(dataset.num_classes, GRID_CLASSES), max(1, math.isqrt(num_fixed))
            self.fixed_z = self.fixed_z[:self.grid_columns].repeat(rows, 1)
            self.fixed_c = torch.eye(self.c_dim)[torch.arange(rows).repeat_interleave(self.grid_columns)]
        elif self.c_dim:
            self.fixed_c = dataset.label_vectors(torch.randint(len(dataset), (num_fixed,), generator=gen))
        self._tick_stats: list[dict] = []
        if self.rank == 0:
            prepare_output_dir(out_dir)

    def _check_conditioning(self) -> int:
        """The label dimension the models are trained with (0: unconditional), checked against the models."""
        dataset, g_dim, d_dim = self.dataset, _model_c_dim(self.G), _model_c_dim(self.D)
        if not self.config.cond:
            if g_dim or d_dim:
                raise ValueError(f"G/D are conditional (c_dim {g_dim}/{d_dim}) but TrainConfig.cond is False; "
                                 "train with cond=True (--cond) or build unconditional models")
            return 0
        if dataset.labels is None:
            raise ValueError(f"cond: the data set {dataset.name!r} has no labels to condition on")
        if g_dim != dataset.c_dim or d_dim != dataset.c_dim:
            raise ValueError(f"cond: the data set {dataset.name!r} has labels of dimension {dataset.c_dim}, but G and "
                             f"D were built with c_dim {g_dim} and {d_dim}")
        return dataset.c_dim

    @staticmethod
    def _build_augment(cfg: TrainConfig, dataset: Dataset):
        """D's augmentation (a callable or None) and the ADA controller (or None) for ``cfg.aug``."""
        from ..augment import AdaController, AugmentPipe, DiffAugment
        if cfg.aug == "noaug":
            return None, None
        if dataset.is_2d:
            raise ValueError(f"aug: {cfg.aug!r} augments images; 2-D data needs 'noaug'")
        if cfg.aug == "diffaug":
            return DiffAugment(), None
        pipe = AugmentPipe(cfg.augpipe, p=cfg.aug_p)
        ada = AdaController(pipe, cfg.aug_target, cfg.ada_interval, cfg.ada_kimg) if cfg.aug == "ada" else None
        return pipe, ada

    @property
    def aug_p(self) -> float:
        """The augmentation probability D's inputs see now (1 for DiffAugment, 0 without augmentation)."""
        return 0.0 if self.augment is None else getattr(self.augment, "p", 1.0)

    # -- the loop ---------------------------------------------------------------------------------------------
    def _fakes(self, phase: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents and labels for this step's fakes, from a generator seeded by (seed, step, rank, phase): the
        labels are those of uniformly drawn data set rows (the data set's label distribution)."""
        cfg = self.config
        n = cfg.batch_size // self.world_size
        gen = torch.Generator().manual_seed(((cfg.seed * 1_000_003 + self.step) * 1024 + self.rank) * 2 + phase)
        z = torch.randn(n, self.G.z_dim, generator=gen).to(self.device)
        if not self.c_dim:
            return z, None
        return z, self.dataset.label_vectors(torch.randint(len(self.dataset), (n,), generator=gen)).to(self.device)

    def _next_real(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's next real batch on the device (images float in [-1, 1]) and, when training is
        conditional, their label vectors ``(B, c_dim)`` (else None)."""
        real, indices = self.loader.next()
        if not self.c_dim:
            return real, None
        return real, self.dataset.label_vectors(indices).to(self.device)

    def train_step(self) -> dict:
        """One D step, one G step and the EMA update; returns the step's statistics."""
        cfg = self.config
        hp = self._schedule()
        real, real_c = self._next_real()
        z, fake_c = self._fakes(0)
        regularize = losses.lazy_reg_due(self.step, cfg.r1_interval)
        stats = steps.d_step(self.G, self.D, self.opt_d, real, z, real_c=real_c, fake_c=fake_c, loss=cfg.loss,
                             r1_gamma=hp["r1_gamma"], r1_interval=cfg.r1_interval, regularize=regularize,
                             gp_weight=cfg.gp_weight, bf16=cfg.bf16, augment=self.augment, r2=cfg.r2)
        z, fake_c = self._fakes(1)
        stats.update(steps.g_step(self.G, self.D, self.opt_g, z, fake_c=fake_c, loss=cfg.loss, bf16=cfg.bf16,
                                  path_length=self.path_length, pl_weight=cfg.pl_weight, pl_interval=cfg.pl_interval,
                                  regularize=losses.lazy_reg_due(self.step, cfg.pl_interval), augment=self.augment,
                                  real=real, real_c=real_c))
        if self.ada is not None:
            signs = torch.tensor([stats["real_sign"] * len(real), len(real)], dtype=torch.float64)
            if self.world_size > 1:
                dist.all_reduce(signs)
            self.ada.accumulate(signs[0].item(), int(signs[1].item()))
            self.ada.update()
        steps.broadcast_module(self.G, params=False)
        steps.broadcast_module(self.D, params=False)
        self.step += 1
        self.nimg += cfg.batch_size
        ema_kimg = schedules.at(cfg, self.nimg)["ema_kimg"]
        steps.ema_update(self.G_ema, self.G, steps.ema_beta(cfg.batch_size, self.nimg, ema_kimg, cfg.ema_rampup))
        return stats

    def _schedule(self) -> dict:
        """The scheduled hyper-parameters at this step (:mod:`ganfast.train.schedules`), set into the optimizers and
        the fixed-p augmentation when ``decay_kimg`` > 0."""
        cfg = self.config
        hp = schedules.at(cfg, self.nimg)
        if cfg.decay_kimg:
            for opt, lr in ((self.opt_g, hp["lr_g"]), (self.opt_d, hp["lr_d"])):
                for group in opt.param_groups:
                    group["lr"], group["betas"] = lr, (cfg.betas[0], hp["beta2"])
            if cfg.aug == "fixed":
                self.augment.p = hp["aug_p"]
        return hp

    def train(self, total_steps: int) -> None:
        """Trains until ``self.step == total_steps`` (ticks, snapshots and the final checkpoint included), or until
        SIGTERM / a first Ctrl-C: then the step in progress is finished, the checkpoint written and
        ``self.interrupted`` set to "SIGTERM" or "SIGINT" (signals are caught only in the main thread)."""
        try:
            steps_asked = operator.index(total_steps)
        except TypeError:
            steps_asked = -1
        if steps_asked < 0:
            raise ValueError(f"total_steps must be an integer >= 0, got {total_steps!r}")
        total_steps = steps_asked
        if self.rank == 0 and self.logger_names:
            config = {"config": dataclasses.asdict(self.config), "run": self.run}
            self.logger = open_loggers(self.logger_names, self.out_dir, self.nimg, json.loads(json.dumps(config)))
        try:
            self._loop(total_steps)
        finally:
            self.logger.close()
            self.logger = Loggers([])

    def _loop(self, total_steps: int) -> None:
        from tqdm.auto import tqdm
        if self.step == 0 and self.rank == 0:
            self.save_start_pictures()
        bar = tqdm(total=total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not self.progress or self.rank != 0)
        tick_start, tick_nimg = time.perf_counter(), self.nimg
        self.interrupted = None
        with self._stop_on_signals(bar.write) as stop:
            while self.step < total_steps:
                self._tick_stats.append(self.train_step())
                bar.update(1)
                if self.step % 10 == 0 or self.step == total_steps:
                    last = self._tick_stats[-1]
                    rate = (self.nimg - tick_nimg) / max(time.perf_counter() - tick_start, 1e-9)
                    bar.set_postfix_str(f"{rate:.0f} img/s, {self.nimg / 1000:.1f} kimg, "
                                        f"G {last['loss_g']:.3f}, D {last['loss_d']:.3f}")
                done = self.step == total_steps
                if self.step % self.config.tick_steps == 0 or done:
                    elapsed = time.perf_counter() - tick_start
                    self._end_tick(elapsed, self.nimg - tick_nimg, bar.write)
                    snapshot = self.tick % self.config.snapshot_ticks == 0
                    if snapshot or done:
                        self.save_samples()
                        self.save()
                    if (snapshot or done) and self.config.keep_snapshots:
                        self.save_snapshot()
                    tick_start, tick_nimg = time.perf_counter(), self.nimg
                agreed = None if done else self._agree(stop[0])
                if agreed:
                    self.interrupted = agreed
                    self.save()  # the partial tick's statistics are dropped; the run resumes exactly
                    break
        bar.close()

    def _agree(self, stop: str | None) -> str | None:
        """The signal that stops the run, the same on every rank (None: none of them got one), so that all ranks
        stop after the same step and report, and exit with, the same signal: a rank's own ``stop`` is one of
        ``STOP_SIGNALS`` or None, and the last of ``STOP_SIGNALS`` any rank got wins."""
        code = 0 if stop is None else STOP_SIGNALS.index(stop) + 1
        if self.world_size > 1:
            t = torch.tensor([code], device=self.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            code = int(t.item())
        return STOP_SIGNALS[code - 1] if code else None

    @contextlib.contextmanager
    def _stop_on_signals(self, log: Callable[[str], None]):
        """Within it, SIGTERM and a first SIGINT set ``stop[0]`` to the signal's name (the loop then stops after
        its step); a second SIGINT raises KeyboardInterrupt. Previous handlers are restored on exit."""
        stop: list[str | None] = [None]
        if threading.current_thread() is not threading.main_thread():
            yield stop
            return

        def handle(signum, frame):
            name = signal.Signals(signum).name
            if name == "SIGINT" and stop[0] == "SIGINT":
                raise KeyboardInterrupt
            if stop[0] is None and self.rank == 0:
                log(f"{name}: finishing step {self.step + 1}, then writing the checkpoint"
                    + (" (Ctrl-C again aborts without saving)" if name == "SIGINT" else ""))
            stop[0] = stop[0] or name

        previous = {sig: signal.signal(sig, handle) for sig in (getattr(signal, n) for n in STOP_SIGNALS)}
        try:
            yield stop
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- ticks: statistics, health monitors, evaluation ----------------------------------------------------------
    def _end_tick(self, seconds: float, images: int, log: Callable[[str], None]) -> None:
        self.tick += 1
        rows, self._tick_stats = self._tick_stats, []
        if self.rank != 0:
            return
        record = {"tick": self.tick, "step": self.step, "kimg": self.nimg / 1000, "time": time.time(),
                  "sec_per_tick": seconds, "sec_per_kimg": seconds / max(images, 1) * 1000,
                  "img_per_s": images / max(seconds, 1e-9), **peak_memory(self.device)}
        if self.config.decay_kimg:
            record.update({k: v for k, v in schedules.at(self.config, self.nimg).items() if k != "aug_p"})
        for key in ("loss_g", "loss_d", "r1", "r2", "d_real_acc", "d_fake_acc", "grad_norm_g", "grad_norm_d"):
            values = [r[key] for r in rows if key in r and r[key] == r[key] and abs(r[key]) != float("inf")]
            if values:
                record[key] = sum(values) / len(values)
        record["skipped_steps"] = sum(int(r["skipped_d"]) + int(r["skipped_g"]) for r in rows)
        record["aug_p"] = self.aug_p
        record["lr_g"], record["lr_d"] = self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]
        record["rt"] = sum(r["real_sign"] for r in rows) / max(len(rows), 1)
        samples = self.sample()
        record["diversity"] = diversity(samples)
        record["diversity_real"] = self.real_diversity
        if self.grid_columns is not None and self.grid_columns > 1:  # a class whose samples collapse shows here
            record["diversity_per_class"] = [diversity(row) for row in samples.split(self.grid_columns)]
        if self.dataset.modes is not None:
            from ..metrics import mixture_metrics
            record.update(mixture_metrics(samples, self.dataset.modes, self.dataset.std))
        if self.evaluate is not None:
            with self._rng_untouched():
                record.update(self.evaluate(self.G_ema))
        reasons = self._collapse_reasons(record)
        record["collapse_alarm"] = bool(reasons)
        with open(os.path.join(self.out_dir, STATS), "a") as f:
            f.write(json.dumps(record) + "\n")
        self.logger.scalars(stat_scalars(record), self.nimg)
        shown = {k: v for k, v in record.items() if k in ("kimg", "sec_per_tick", "sec_per_kimg", "img_per_s",
                                                              "peak_rss_mib", "peak_cuda_mib", "loss_g", "loss_d",
                                                              "d_real_acc", "d_fake_acc", "aug_p", "rt", "modes", "kl",
                                                              "confident", "hq", "fd", "recall", "class_acc")}
        log(f"tick {self.tick} step {self.step}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
        if record["skipped_steps"]:
            log(f"warning: {record['skipped_steps']} updates skipped this tick (non-finite gradients)")
        if reasons:
            log("warning: mode-collapse alarm: " + "; ".join(reasons))

    def _collapse_reasons(self, record: dict) -> list[str]:
        """Why this tick looks like mode collapse or mode dropping (empty: it does not): sample diversity fell
        below ``collapse_ratio`` x its best; the recall of the real features by the fakes (k-NN) fell likewise or
        is below ``RECALL_FLOOR``; classes of the data whose reals the fakes hardly cover (``classes_dropped``)."""
        ratio, reasons = self.config.collapse_ratio, []
        self.best_diversity = max(self.best_diversity, record["diversity"])
        if record["diversity"] < ratio * self.best_diversity:
            reasons.append(f"sample diversity {record['diversity']:.4g} fell below {ratio} x its best "
                           f"{self.best_diversity:.4g}")
        recall = record.get("recall")
        if recall is not None:
            self.best_recall = max(self.best_recall, recall)
            if recall < RECALL_FLOOR or recall < ratio * self.best_recall:
                reasons.append(f"recall of the real data {recall:.3g} (best {self.best_recall:.3g}, floor "
                               f"{RECALL_FLOOR})")
        if record.get("classes_dropped"):
            reasons.append(f"classes the generator dropped: {record['classes_dropped']}")
        return reasons

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None, c: torch.Tensor | None = None) -> torch.Tensor:
        """``G_ema`` on ``z`` and labels ``c`` (default: the run's fixed latents and labels), on the CPU, in chunks of
        the training batch (a size the device's memory is known to hold)."""
        if z is None:
            z, c = self.fixed_z, self.fixed_c
        chunk = self.config.batch_size // self.world_size
        with self._rng_untouched():
            chunks = [(z[i:i + chunk], None if c is None else c[i:i + chunk]) for i in range(0, len(z), chunk)]
            return torch.cat([steps.call_with_labels(self.G_ema, zs.to(self.device),
                                                     None if cs is None else cs.to(self.device)).float().cpu()
                              for zs, cs in chunks])

    def _rng_untouched(self):
        """Monitoring (samples, evaluations) may draw random numbers (e.g. StyleGAN2's layer noise) without moving
        the training RNG: otherwise a run resumed after a snapshot would not repeat the uninterrupted run."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def _save_picture(self, samples: torch.Tensor, path: str, tag: str, columns: int | None = None) -> None:
        """The picture of ``samples`` (scatter plot or image grid) as a PNG at ``path`` and, under ``tag``, to the
        loggers; a class-conditional grid's rows also as ``<tag>/class<k>``."""
        if self.dataset.is_2d:
            picture = scatter(samples, self.dataset.modes)
        else:
            scale = max(1, 64 // samples.shape[-1])
            picture = image_grid(samples, columns=columns, scale=scale)
        save_png(picture, path)
        self.logger.image(tag, picture, self.nimg)
        if columns is not None:  # only class-conditional grids have their columns set
            for k, row in enumerate(samples.split(columns)):
                self.logger.image(f"{tag}/class{k}", image_grid(row, columns=columns, scale=scale), self.nimg)

    def save_start_pictures(self) -> None:
        """``reals.png`` (training samples, as many as the fixed latents) and ``fakes_init.png`` (G_ema before
        training), to compare the later ``samples-*.png`` with."""
        gen = torch.Generator().manual_seed(self.config.seed + 104723)
        reals = self.dataset.batch(torch.randperm(len(self.dataset), generator=gen)[:len(self.fixed_z)])
        self._save_picture(reals, os.path.join(self.out_dir, "reals.png"), "reals")
        self._save_picture(self.sample(), os.path.join(self.out_dir, "fakes_init.png"), "samples", self.grid_columns)

    def save_samples(self) -> str | None:
        """Writes ``samples-<step>.png`` (image grid, one row per class for class-conditional models; a scatter plot
        for 2-D data); returns its path."""
        if self.rank != 0:
            return None
        path = os.path.join(self.out_dir, f"samples-{self.step:07d}.png")
        self._save_picture(self.sample(), path, "samples", self.grid_columns)
        return path

    # -- checkpoints --------------------------------------------------------------------------------------------
    def _modules(self) -> dict:
        modules = {"G": self.G, "D": self.D, "G_ema": self.G_ema}
        return modules if self.path_length is None else {**modules, "path_length": self.path_length}

    def _optimizers(self) -> dict:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def _extra(self) -> dict:
        return {"step": self.step, "nimg": self.nimg, "tick": self.tick, "best_diversity": self.best_diversity,
                "best_recall": self.best_recall, "data_order": self.order.state_dict(),
                "config": dataclasses.asdict(self.config), "world_size": self.world_size, "run": self.run,
                "loggers": self.logger_names,
                "labels": label_space(self.dataset) if self.c_dim else None,
                "models": {"G": model_spec(self.G), "D": model_spec(self.D)},
                "ada": None if self.ada is None else self.ada.state_dict()}

    def save(self, path: str | None = None) -> None:
        """Writes the checkpoint (rank 0; other ranks wait for it)."""
        if self.rank == 0:
            save_checkpoint(path or os.path.join(self.out_dir, CHECKPOINT_NAME), self._modules(), self._optimizers(),
                            self._extra())
        if self.world_size > 1:
            dist.barrier()

    def save_snapshot(self) -> str | None:
        """Writes ``network-snapshot-<kimg>.safetensors``: G, D and G_ema with their model specs (no optimizer
        state), which ``load_generator``, ``ganfast sample`` and ``ganfast metrics`` take like a checkpoint.
        Returns its path on rank 0 after running ``snapshot_hook`` on it."""
        path = None
        if self.rank == 0:
            path = os.path.join(self.out_dir, SNAPSHOT_PATTERN.format(kimg=self.nimg // 1000))
            save_checkpoint(path, {"G": self.G, "D": self.D, "G_ema": self.G_ema}, {}, self._extra())
            if self.snapshot_hook is not None:
                with self._rng_untouched():
                    records = self.snapshot_hook(path)
                for record in records or []:
                    self.logger.scalars(metric_scalars(record), self.nimg)
        if self.world_size > 1:
            dist.barrier()
        return path

    def init_from(self, path: str) -> None:
        """Fine-tuning: G, D and G_ema take the weights of another run's checkpoint or snapshot (a file or a run
        folder); the optimizers, step and RNG stay this run's own."""
        from ..checkpoint import checkpoint_path
        load_checkpoint(checkpoint_path(path), {"G": self.G, "D": self.D, "G_ema": self.G_ema}, {},
                        restore_rng=False)
        steps.broadcast_module(self.G)
        steps.broadcast_module(self.D)
        steps.broadcast_module(self.G_ema)

    def resume(self, path: str | None = None, missing_ok: bool = False) -> bool:
        """Loads a checkpoint written by :meth:`save` and continues from its step; ``stats.jsonl`` keeps only the
        records of the ticks the checkpoint includes (a run killed after writing a tick's record but before its
        checkpoint would otherwise repeat it). With ``missing_ok``, a missing checkpoint (a run killed before its
        first one) starts the run afresh, with an empty ``stats.jsonl``. Returns whether a checkpoint was loaded."""
        path = path or os.path.join(self.out_dir, CHECKPOINT_NAME)
        found = os.path.isfile(path)
        if found:
            self._check_config(path)
            extra = load_checkpoint(path, self._modules(), self._optimizers())
            missing = {"world_size", "data_order", "step", "nimg", "tick", "best_diversity"} - extra.keys()
            if missing:
                raise ValueError(f"resume: {path!r} is not a Trainer checkpoint (no {sorted(missing)})")
            if extra["world_size"] != self.world_size:
                raise ValueError(f"resume: the checkpoint was written by {extra['world_size']} processes, "
                                 f"this run has {self.world_size}; the data order would differ")
            self.order.load_state_dict(extra["data_order"])
            self.step, self.nimg, self.tick = extra["step"], extra["nimg"], extra["tick"]
            self.best_diversity = extra["best_diversity"]
            self.best_recall = extra.get("best_recall", 0.0)
            if self.ada is not None:
                if extra.get("ada") is None:
                    raise ValueError(f"resume: {path!r} was not written by an ADA run (no controller state)")
                self.ada.load_state_dict(extra["ada"])
        elif not missing_ok:
            raise FileNotFoundError(f"resume: no checkpoint at {path!r}")
        if self.rank == 0:
            self._trim_stats()
        return found

    def _check_config(self, path: str) -> None:
        """A ValueError naming the TrainConfig fields that differ from the checkpoint's run (only those in
        ``RESUMABLE_FIELDS`` may): otherwise Adam would keep the stored learning rates while the config claimed
        others, and the run would no longer be the one its checkpoint describes."""
        from ..checkpoint import checkpoint_extra
        stored = checkpoint_extra(path).get("config")
        if not isinstance(stored, dict):
            return
        current = json.loads(json.dumps(dataclasses.asdict(self.config)))  # as stored: tuples become lists
        differ = [k for k in current if k not in RESUMABLE_FIELDS and k in stored and current[k] != stored[k]]
        if differ:
            raise ValueError(f"resume: {path!r} was trained with " + ", ".join(f"{k}={stored[k]!r}" for k in differ)
                             + "; this Trainer has " + ", ".join(f"{k}={current[k]!r}" for k in differ)
                             + f" (a resumed run keeps its definition; only {', '.join(RESUMABLE_FIELDS)} may "
                             "change)")

    def _trim_stats(self) -> None:
        """Drops the ``stats.jsonl`` records of ticks after ``self.tick`` and a torn last line (atomically)."""
        stats = os.path.join(self.out_dir, STATS)
        if not os.path.isfile(stats):
            return
        with open(stats) as f:
            lines = f.read().splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the kill
                continue
            if line.endswith("\n") and record.get("tick", 0) <= self.tick:
                kept.append(line)
        if kept != lines:
            atomic_write(stats, lambda f: f.write("".join(kept).encode()))
