"""``Trainer``: the training loop over the functional step API, with EMA, ticks, snapshots and exact resume."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import operator
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from .. import losses
from .._io import atomic_write, prepare_output_dir
from ..data import DataOrder, Dataset
from ..models._spec import model_spec
from . import step as steps
from ..checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .visual import save_image_grid, save_scatter

STATS = "stats.jsonl"


@dataclass
class TrainConfig:
    """Hyper-parameters of a run. ``loss`` is a ``ganfast.losses.LOSS_KINDS`` name (``"wasserstein"`` adds
    ``gp_weight`` · WGAN-GP); ``r1_gamma`` 0 turns R1 off; ``pl_weight`` > 0 adds StyleGAN2's path-length
    penalty every ``pl_interval`` steps (generators with ``mapping``/``synthesis``); ``ema_kimg`` is the EMA
    half-life in kimg.

    A tick is ``tick_steps`` steps: one ``stats.jsonl`` record (with an evaluation) and a log line. Every
    ``snapshot_ticks`` ticks, and at the end, a sample picture and the checkpoint are written.
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
        if not isinstance(self.bf16, (bool, np.bool_)):
            raise ValueError(f"TrainConfig.bf16 must be True or False, got {self.bf16!r}")
        self.bf16 = bool(self.bf16)


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


def diversity(samples: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between (flattened) samples: it falls when a generator collapses."""
    flat = samples.detach().double().flatten(1)
    n = len(flat)
    return float(torch.cdist(flat, flat).sum() / (n * (n - 1)))


class Trainer:
    """Trains any generator/discriminator pair — ``G(z)`` -> samples, ``D(x)`` -> logits ``(N,)``, ``G.z_dim``.

    Each step is one :func:`~ganfast.train.step.d_step` (with lazy R1 every ``r1_interval`` steps) and one
    :func:`~ganfast.train.step.g_step` on fresh latents, then the EMA update of ``G_ema``. Latents are drawn
    from a generator re-seeded from (seed, step, rank), and data from a :class:`~ganfast.data.DataOrder`, so a
    run resumed from its checkpoint repeats the uninterrupted run exactly. Under ``torchrun`` (a process
    group is initialised) each rank takes ``batch_size / world_size`` samples and gradients are averaged.

    ``evaluate(G_ema) -> dict`` adds metrics to each tick's record (for 2-D mixtures the mode metrics are
    computed without it).
    """

    def __init__(self, G: torch.nn.Module, D: torch.nn.Module, dataset: Dataset, out_dir: str,
                 config: TrainConfig | None = None, device: str | torch.device | None = None,
                 evaluate: Callable[[torch.nn.Module], dict] | None = None, progress: bool = True):
        self.config = cfg = config or TrainConfig()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
        self.order = DataOrder(dataset.data, cfg.batch_size, cfg.seed, self.rank, self.world_size)
        self.step, self.nimg, self.tick = 0, 0, 0
        self.best_diversity = 0.0
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        num_fixed = 2048 if dataset.is_2d else cfg.num_fixed
        self.fixed_z = torch.randn(num_fixed, G.z_dim, generator=gen)
        real = dataset.data[torch.randperm(len(dataset), generator=gen)[:min(num_fixed, len(dataset))]]
        self.real_diversity = diversity(real)
        self._tick_stats: list[dict] = []
        if self.rank == 0:
            prepare_output_dir(out_dir)

    # -- the loop ---------------------------------------------------------------------------------------------
    def _latents(self, phase: int) -> torch.Tensor:
        cfg = self.config
        gen = torch.Generator().manual_seed(((cfg.seed * 1_000_003 + self.step) * 1024 + self.rank) * 2 + phase)
        return torch.randn(cfg.batch_size // self.world_size, self.G.z_dim, generator=gen).to(self.device)

    def train_step(self) -> dict:
        """One D step, one G step and the EMA update; returns the step's statistics."""
        cfg = self.config
        real = self.order.next_batch().to(self.device)
        regularize = losses.lazy_reg_due(self.step, cfg.r1_interval)
        stats = steps.d_step(self.G, self.D, self.opt_d, real, self._latents(0), loss=cfg.loss,
                             r1_gamma=cfg.r1_gamma, r1_interval=cfg.r1_interval, regularize=regularize,
                             gp_weight=cfg.gp_weight, bf16=cfg.bf16)
        stats.update(steps.g_step(self.G, self.D, self.opt_g, self._latents(1), loss=cfg.loss, bf16=cfg.bf16,
                                  path_length=self.path_length, pl_weight=cfg.pl_weight, pl_interval=cfg.pl_interval,
                                  regularize=losses.lazy_reg_due(self.step, cfg.pl_interval)))
        steps.broadcast_module(self.G, params=False)
        steps.broadcast_module(self.D, params=False)
        self.step += 1
        self.nimg += cfg.batch_size
        steps.ema_update(self.G_ema, self.G, steps.ema_beta(cfg.batch_size, self.nimg, cfg.ema_kimg, cfg.ema_rampup))
        return stats

    def train(self, total_steps: int) -> None:
        """Trains until ``self.step == total_steps`` (ticks, snapshots and the final checkpoint included)."""
        try:
            steps_asked = operator.index(total_steps)
        except TypeError:
            steps_asked = -1
        if steps_asked < 0:
            raise ValueError(f"total_steps must be an integer >= 0, got {total_steps!r}")
        total_steps = steps_asked
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not self.progress or self.rank != 0)
        tick_start, tick_nimg = time.perf_counter(), self.nimg
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
                self._end_tick((self.nimg - tick_nimg) / max(elapsed, 1e-9), bar.write)
                snapshot = self.tick % self.config.snapshot_ticks == 0
                if snapshot or done:
                    self.save_samples()
                    self.save()
                tick_start, tick_nimg = time.perf_counter(), self.nimg
        bar.close()

    # -- ticks: statistics, health monitors, evaluation ----------------------------------------------------------
    def _end_tick(self, img_per_s: float, log: Callable[[str], None]) -> None:
        self.tick += 1
        rows, self._tick_stats = self._tick_stats, []
        if self.rank != 0:
            return
        record = {"tick": self.tick, "step": self.step, "kimg": self.nimg / 1000, "img_per_s": img_per_s}
        for key in ("loss_g", "loss_d", "r1", "d_real_acc", "d_fake_acc", "grad_norm_g", "grad_norm_d"):
            values = [r[key] for r in rows if key in r and r[key] == r[key] and abs(r[key]) != float("inf")]
            if values:
                record[key] = sum(values) / len(values)
        record["skipped_steps"] = sum(int(r["skipped_d"]) + int(r["skipped_g"]) for r in rows)
        samples = self.sample()
        record["diversity"] = diversity(samples)
        record["diversity_real"] = self.real_diversity
        self.best_diversity = max(self.best_diversity, record["diversity"])
        record["collapse_alarm"] = record["diversity"] < self.config.collapse_ratio * self.best_diversity
        if self.dataset.modes is not None:
            from ..metrics import mixture_metrics
            record.update(mixture_metrics(samples, self.dataset.modes, self.dataset.std))
        if self.evaluate is not None:
            with self._rng_untouched():
                record.update(self.evaluate(self.G_ema))
        with open(os.path.join(self.out_dir, STATS), "a") as f:
            f.write(json.dumps(record) + "\n")
        shown = {k: v for k, v in record.items() if k in ("kimg", "img_per_s", "loss_g", "loss_d", "d_real_acc",
                                                              "d_fake_acc", "modes", "hq", "fd")}
        log(f"tick {self.tick} step {self.step}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
        if record["skipped_steps"]:
            log(f"warning: {record['skipped_steps']} updates skipped this tick (non-finite gradients)")
        if record["collapse_alarm"]:
            msg = (f"mode-collapse alarm: sample diversity {record['diversity']:.4g} fell below "
                   f"{self.config.collapse_ratio} x its best {self.best_diversity:.4g}")
            log("warning: " + msg)

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """``G_ema`` on ``z`` (default: the run's fixed latents), on the CPU."""
        z = self.fixed_z if z is None else z
        with self._rng_untouched():
            return torch.cat([self.G_ema(z[i:i + 512].to(self.device)).float().cpu() for i in range(0, len(z), 512)])

    def _rng_untouched(self):
        """Monitoring (samples, evaluations) may draw random numbers (e.g. StyleGAN2's layer noise) without moving
        the training RNG: otherwise a run resumed after a snapshot would not repeat the uninterrupted run."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def save_samples(self) -> str | None:
        """Writes ``samples-<step>.png`` (image grid, or scatter plot for 2-D data); returns its path."""
        if self.rank != 0:
            return None
        path = os.path.join(self.out_dir, f"samples-{self.step:07d}.png")
        samples = self.sample()
        if self.dataset.is_2d:
            save_scatter(samples, path, self.dataset.modes)
        else:
            save_image_grid(samples, path, scale=max(1, 64 // samples.shape[-1]))
        return path

    # -- checkpoints --------------------------------------------------------------------------------------------
    def _modules(self) -> dict:
        modules = {"G": self.G, "D": self.D, "G_ema": self.G_ema}
        return modules if self.path_length is None else {**modules, "path_length": self.path_length}

    def _optimizers(self) -> dict:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def save(self, path: str | None = None) -> None:
        """Writes the checkpoint (rank 0; other ranks wait for it)."""
        if self.rank == 0:
            extra = {"step": self.step, "nimg": self.nimg, "tick": self.tick, "best_diversity": self.best_diversity,
                     "data_order": self.order.state_dict(), "config": dataclasses.asdict(self.config),
                     "world_size": self.world_size,
                     "models": {"G": model_spec(self.G), "D": model_spec(self.D)}}
            save_checkpoint(path or os.path.join(self.out_dir, CHECKPOINT_NAME), self._modules(), self._optimizers(),
                            extra)
        if self.world_size > 1:
            dist.barrier()

    def resume(self, path: str | None = None, missing_ok: bool = False) -> bool:
        """Loads a checkpoint written by :meth:`save` and continues from its step; ``stats.jsonl`` keeps only the
        records of the ticks the checkpoint includes (a run killed after writing a tick's record but before its
        checkpoint would otherwise repeat it). With ``missing_ok``, a missing checkpoint (a run killed before its
        first one) starts the run afresh, with an empty ``stats.jsonl``. Returns whether a checkpoint was loaded."""
        path = path or os.path.join(self.out_dir, CHECKPOINT_NAME)
        found = os.path.isfile(path)
        if found:
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
        elif not missing_ok:
            raise FileNotFoundError(f"resume: no checkpoint at {path!r}")
        if self.rank == 0:
            self._trim_stats()
        return found

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
