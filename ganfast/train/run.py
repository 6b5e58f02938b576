"""What ``ganfast train`` and ``ganfast demo`` build: per-data-set defaults, models, evaluators, DDP setup."""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from ..data import BUILTIN_DATASETS, Dataset, load_dataset
from ..models import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, R3GANDiscriminator,
                      R3GANGenerator, SNGANDiscriminator, StyleGAN2Discriminator, StyleGAN2Generator,
                      StyleGAN3Generator)
from ..models.conv import RESOLUTIONS as CONV_RESOLUTIONS
from ..models.stylegan3 import STYLEGAN3_CONFIGS
from . import r3gan
from .trainer import TrainConfig, Trainer, check_device

T = TypeVar("T")

# Defaults tuned on CPU (a busy shared 2-core machine, 1 thread): ring8 seed 0 had 8/8 modes from step 1000 and
# 89% high-quality samples at step 6000, 93% at 8000; digits at 2000 steps: recognisable digits, FD 4626 -> 22.
DEFAULTS_2D = dict(model="mlp", steps=8000, config=TrainConfig(
    batch_size=256, lr_g=5e-4, lr_d=5e-4, betas=(0.5, 0.9), r1_gamma=0.01, r1_interval=4, ema_kimg=5.0,
    tick_steps=500, snapshot_ticks=4))
DEFAULTS_IMAGE = dict(model="dcgan", steps=3000, config=TrainConfig(
    batch_size=64, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.99), r1_gamma=0.1, r1_interval=16, ema_kimg=2.0,
    tick_steps=250, snapshot_ticks=4, aug="ada"))
# StyleGAN2 up to 32 px (CPU-sized widths; above, StyleGAN2-ADA's auto configuration: stylegan2_auto): R1 γ and lazy
# intervals as StyleGAN2-ADA's small-data configs, path length on; not tuned here (the demo uses DCGAN, which trains
# faster on a CPU).
DEFAULTS_STYLEGAN2 = dict(steps=3000, config=TrainConfig(
    batch_size=32, lr_g=2.5e-3, lr_d=2.5e-3, betas=(0.0, 0.99), r1_gamma=0.05, r1_interval=16, pl_weight=2.0,
    pl_interval=4, ema_kimg=2.0, tick_steps=250, snapshot_ticks=4, aug="ada"))
# StyleGAN3 as NVlabs trains it: no path-length penalty; R1 and the rest as StyleGAN2 here (not tuned either).
DEFAULTS_STYLEGAN3 = dict(steps=3000, config=TrainConfig(**{**DEFAULTS_STYLEGAN2["config"].__dict__,
                                                             "pl_weight": 0.0}))
MODELS = ("mlp", "dcgan", "sngan", "stylegan2", "stylegan3-t", "stylegan3-r", "r3gan")
MODES_TICK_SAMPLES = 10_000  # fakes of each tick's mode coverage on stacked digits (a uniform G: KL about 0.05)
CPU_SIZED_MAX_RESOLUTION = 32  # StyleGAN2 above this uses StyleGAN2-ADA's ``auto`` configuration


def stylegan2_auto(resolution: int, world_size: int = 1, batch_size: int | None = None) -> dict:
    """StyleGAN2-ADA's ``auto`` configuration for a resolution (Karras et al. 2020, "Training Generative
    Adversarial Networks with Limited Data", its train.py): global batch min(4096 / res, 32) per GPU (at most 64
    in all), minibatch-std groups of 4 samples (fewer when the per-GPU batch is not a multiple of 4), channel
    base 16384 (32768 from 512 px) with at most 512 channels, 2 mapping layers, 512-dimensional z and w, float16
    in the 4 highest resolutions clamped to ±256, learning rate 0.0025 (0.002 at 1024 px), R1 γ = 0.0002 · res² /
    batch, EMA half-life batch · 10 / 32 kimg with a 5% ramp-up, path length weight 2. ``batch_size`` replaces the
    batch (γ and EMA follow it).

    Returns ``{"model": G/D keyword arguments, "config": TrainConfig fields}``."""
    batch = batch_size or max(min(world_size * min(4096 // resolution, 32), 64), world_size)
    lr = 0.002 if resolution >= 1024 else 0.0025
    model = {"z_dim": 512, "w_dim": 512, "channel_base": 32768 if resolution >= 512 else 16384, "channel_max": 512,
             "mapping_layers": 2, "num_fp16_res": 4, "conv_clamp": 256,
             "mbstd_group_size": math.gcd(max(batch // world_size, 1), 4)}
    config = {"batch_size": batch, "lr_g": lr, "lr_d": lr, "betas": (0.0, 0.99),
              "r1_gamma": 0.0002 * resolution ** 2 / batch, "r1_interval": 16, "pl_weight": 2.0, "pl_interval": 4,
              "ema_kimg": batch * 10 / 32, "ema_rampup": 0.05}
    return {"model": model, "config": config}


def r3gan_preset(dataset_name: str, preset: str | None) -> str:
    """The R3GAN preset of a run: the one asked for, else ``stacked16`` for the stacked digits, else ``tiny``."""
    return preset or ("stacked16" if dataset_name == "stacked-digits" else r3gan.DEFAULT_PRESET)


def defaults(dataset: Dataset, model: str | None = None, preset: str | None = None) -> dict:
    """Default model, step count and TrainConfig: DCGAN for images it supports (16-128 px), else StyleGAN2;
    ``model="r3gan"``: the R3GAN ``preset``'s (:mod:`ganfast.train.r3gan`)."""
    if model == "r3gan" and not dataset.is_2d:
        spec = r3gan.check_preset(preset or r3gan.DEFAULT_PRESET)
        return {"model": "r3gan", "steps": spec["steps"],
                "config": TrainConfig(**r3gan.config_fields(preset or r3gan.DEFAULT_PRESET))}
    if dataset.is_2d:
        return DEFAULTS_2D
    if model == "stylegan2" or (model is None and dataset.sample_shape[-1] not in CONV_RESOLUTIONS):
        return {"model": "stylegan2", **DEFAULTS_STYLEGAN2}
    if model in ("stylegan3-t", "stylegan3-r"):
        return {"model": model, **DEFAULTS_STYLEGAN3}
    return DEFAULTS_IMAGE


def build_models(model: str, dataset: Dataset, z_dim: int | None = None, *, cbase: int | None = None,
                 cmax: int | None = None, map_layers: int | None = None, fp16_res: int | None = None,
                 auto: dict | None = None, batch_size: int = 32, c_dim: int = 0, r3gan_kwargs: dict | None = None):
    """``(G, D)`` for a model name and a data set (its shape decides sizes and channels). StyleGAN2 takes
    ``auto`` keyword arguments (:func:`stylegan2_auto`), then the channel base / maximum, mapping layers and
    float16 resolutions given here; DCGAN/SNGAN take ``cbase`` as their base width. ``batch_size`` sets
    StyleGAN3's magnitude EMA decay as NVlabs' training does (half-life 20k images); ``c_dim`` > 0 makes the
    models conditional on labels of that dimension. R3GAN takes its G keyword arguments
    (``ganfast.train.r3gan.model_kwargs``; D takes the same without ``z_dim``)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    if dataset.is_2d:
        if model != "mlp":
            raise ValueError(f"model: 2-D data needs 'mlp'; got {model!r}")
        return MLPGenerator(z_dim or 16, out_features=dataset.sample_shape[0], c_dim=c_dim), \
            MLPDiscriminator(dataset.sample_shape[0], c_dim=c_dim)
    if model == "mlp":
        raise ValueError("model: 'mlp' is for 2-D data; images need 'dcgan', 'sngan', 'stylegan2' or 'stylegan3-*'")
    channels, resolution, _ = dataset.sample_shape
    if model == "r3gan":
        kw = dict(r3gan_kwargs or r3gan.model_kwargs(r3gan.DEFAULT_PRESET, resolution, channels, c_dim, False))
        return R3GANGenerator(**kw), R3GANDiscriminator(**{k: v for k, v in kw.items() if k != "z_dim"})
    if model == "stylegan2":
        kw = dict(auto or {})
        given = {"channel_base": cbase, "channel_max": cmax, "mapping_layers": map_layers, "num_fp16_res": fp16_res}
        kw.update({k: v for k, v in given.items() if v is not None})
        mbstd = kw.pop("mbstd_group_size", 4)
        z_dim = z_dim or kw.pop("z_dim", 64)
        shared = {k: kw[k] for k in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp") if k in kw}
        return (StyleGAN2Generator(z_dim=z_dim, img_resolution=resolution, img_channels=channels, c_dim=c_dim, **kw),
                StyleGAN2Discriminator(img_resolution=resolution, img_channels=channels, c_dim=c_dim,
                                       mbstd_group_size=mbstd, **shared))
    if model.startswith("stylegan3"):
        config, widen = STYLEGAN3_CONFIGS[model[-1]], 2 if model == "stylegan3-r" else 1  # R: twice the channels
        G = StyleGAN3Generator(z_dim=z_dim or 64, c_dim=c_dim, img_resolution=resolution, img_channels=channels,
                               channel_base=cbase or 1024 * widen, channel_max=cmax or 32 * widen,
                               magnitude_ema_beta=0.5 ** (batch_size / 20e3), **config)
        return G, StyleGAN2Discriminator(img_resolution=resolution, img_channels=channels, c_dim=c_dim)
    if map_layers is not None or fp16_res is not None or cmax is not None:
        raise ValueError(f"--map, --fp16-res and --cmax apply to stylegan2; {model} takes --cbase (base width)")
    widths = {} if cbase is None else {"base_channels": cbase}
    G = DCGANGenerator(z_dim or 64, resolution, channels, c_dim=c_dim, **widths)
    D = (DCGANDiscriminator if model == "dcgan" else SNGANDiscriminator)(resolution, channels, c_dim=c_dim, **widths)
    return G, D


def init_distributed(device: str | torch.device | None = None) -> torch.device:
    """The device to train on — ``device`` when given (``cuda`` without an index: the rank's GPU), else the rank's
    GPU when CUDA is available, else the CPU — after joining the torchrun process group when launched by
    torchrun: NCCL for a CUDA device, gloo for the CPU."""
    world_size, local_rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    try:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise ValueError(f"device: {device!r} is not a device ({exc})") from None
    check_device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


_HANDOFFS = itertools.count()  # rank0_first calls, in the same order on every rank: each waits on its own key


def rank0_first(load: Callable[[], T], what: str) -> T:
    """``load()`` on rank 0 first, then on the other ranks (which then find, e.g., rank 0's decoded data set
    cache). The other ranks wait by polling the process group's key-value store, not in a collective, so a long
    first ``load`` meets no collective timeout; if rank 0's ``load`` raises, they raise a one-line ValueError
    quoting its error (rank 0 waits a few seconds for them to read it) instead of waiting for it."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    store, key = dist.distributed_c10d._get_default_store(), f"ganfast/rank0-first/{next(_HANDOFFS)}"
    if rank == 0:
        try:
            result = load()
        except Exception as exc:
            store.set(key, f"{type(exc).__name__}: {exc}".splitlines()[0])
            with contextlib.suppress(Exception):  # a rank already gone does not keep this one from failing
                store.wait([f"{key}/read{r}" for r in range(1, world_size)], timedelta(seconds=10))
            raise
        store.set(key, "")
        return result
    try:
        while not store.check([key]):
            time.sleep(0.1)
        error = store.get(key).decode()
    except RuntimeError as exc:  # without torchrun rank 0 holds the store: it ended
        raise ValueError(f"rank 0 ended before loading {what} ({exc})".splitlines()[0]) from None
    if error:
        store.set(f"{key}/read{rank}", "")
        raise ValueError(f"rank 0 could not load {what}, so rank {rank} stops too: {error}")
    return load()


def new_run_folder(root: str, data: str, model: str) -> str:
    """Creates ``root/<NNNNN>-<data>-<model>`` with the next free number (one above the highest there) and
    returns it. ``os.mkdir`` fails when the name exists, so of runs starting at once each gets its own folder."""
    os.makedirs(root, exist_ok=True)
    data = re.sub(r"[^A-Za-z0-9_.]+", "_", os.path.splitext(os.path.basename(os.path.normpath(data)))[0]) or "data"
    taken = [int(m.group(1)) for m in (re.match(r"(\d+)-", name) for name in os.listdir(root)) if m]
    number = max(taken, default=-1) + 1
    while True:
        path = os.path.join(root, f"{number:05d}-{data}-{model}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            number += 1


def build_trainer(dataset_name: str, out: str | None, *, seed: int = 0, resolution: int | None = None,
                  model: str | None = None, overrides: dict | None = None, device=None, progress: bool = True,
                  eval_samples: int = 1000, mirror: bool = False, cbase: int | None = None, cmax: int | None = None,
                  map_layers: int | None = None, fp16_res: int | None = None,
                  cache_dir: str | None = None, outdir: str | None = None, threads: int | None = None,
                  snapshot_hook=None, loggers: tuple[str, ...] = (), preset: str | None = None,
                  bf16_stages: int | None = None) -> tuple[Trainer, int]:
    """The trainer for a run and its default step count; ``overrides`` replace ``TrainConfig`` fields (``cond``:
    conditional models on the data set's labels). With ``outdir`` (and ``out`` None) the run gets a new numbered
    folder there (:func:`new_run_folder`). The run's definition (data set, model and its options, resolution and
    the one asked for, x-flips; R3GAN's preset and bf16 stages) is kept in ``trainer.run``. ``loggers``: the
    trainer's live views (:mod:`ganfast.train.loggers`). ``preset`` (R3GAN only; default :func:`r3gan_preset`) sets
    the model and the TrainConfig before ``overrides``; ``bf16_stages`` None: the preset's on CUDA, none on the CPU.

    Under torchrun, rank 0 loads (decodes) the data set first and the other ranks then read its cache."""
    if (out is None) == (outdir is None):
        raise ValueError("give either out (a run folder) or outdir (a folder of numbered runs)")
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    def load():
        return load_dataset(dataset_name, resolution=resolution, seed=seed, mirror=mirror, cache_dir=cache_dir)
    dataset = rank0_first(load, f"the data set {dataset_name!r}") if world_size > 1 else load()
    if preset is not None and model != "r3gan":
        raise ValueError(f"--preset {preset} applies to --model r3gan, not {model or 'the default model'}")
    if model == "r3gan":
        preset = r3gan_preset(dataset_name, preset)
    base = defaults(dataset, model, preset)
    model = model or base["model"]
    fields, auto = dict(base["config"].__dict__), None
    if model == "stylegan2" and dataset.sample_shape[-1] > CPU_SIZED_MAX_RESOLUTION:
        auto = stylegan2_auto(dataset.sample_shape[-1], world_size, (overrides or {}).get("batch_size"))
        fields.update(auto["config"])
    config = TrainConfig(**{**fields, **(overrides or {}), "seed": seed})
    if config.cond and dataset.labels is None:
        raise ValueError(f"--cond: the data set {dataset_name!r} has no labels (give a dataset.json with labels, or "
                         "a .npz with a 'labels' array)")
    torch.manual_seed(seed)
    r3gan_kwargs = None
    if model == "r3gan" and not dataset.is_2d:
        on_cuda = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type == "cuda"
        r3gan_kwargs = r3gan.model_kwargs(preset, dataset.sample_shape[-1], dataset.sample_shape[0],
                                          dataset.c_dim if config.cond else 0, on_cuda, bf16_stages)
        bf16_stages = r3gan_kwargs["bf16_stages"]
    G, D = build_models(model, dataset, cbase=cbase, cmax=cmax, map_layers=map_layers, fp16_res=fp16_res,
                        auto=auto and auto["model"], batch_size=config.batch_size,
                        c_dim=dataset.c_dim if config.cond else 0, r3gan_kwargs=r3gan_kwargs)
    evaluate = None
    if dataset.name == "digits":
        from ..metrics import digits_extractor, digits_predictor
        from .evaluators import image_evaluator
        real = dataset.batch(torch.arange(dataset.num_stored))  # the 1797 digits: small enough as float
        fake_c = None
        if config.cond:  # labels of data set rows drawn once, so successive ticks are comparable
            rows = torch.randint(len(dataset), (eval_samples,), generator=torch.Generator().manual_seed(seed + 3))
            fake_c = dataset.label_vectors(rows)
        side = dataset.sample_shape[-1]
        evaluate = image_evaluator(real, digits_extractor(side), G.z_dim, eval_samples, seed, fake_c=fake_c,
                                   classify=digits_predictor(side) if config.cond else None, labels=dataset.labels)
    if dataset.name == "stacked-digits":
        from .evaluators import modes_evaluator
        fake_c = None
        if config.cond:
            rows = torch.randint(len(dataset), (MODES_TICK_SAMPLES,), generator=torch.Generator().manual_seed(seed + 3))
            fake_c = dataset.label_vectors(rows)
        evaluate = modes_evaluator(G.z_dim, MODES_TICK_SAMPLES, seed, fake_c=fake_c,
                                   resolution=dataset.sample_shape[-1])
    if out is None:
        made = [new_run_folder(outdir, dataset_name, model) if rank == 0 else None]
        if world_size > 1:
            dist.broadcast_object_list(made)
        out = made[0]
    builtin = dataset_name in BUILTIN_DATASETS
    run = {"dataset": dataset_name if builtin else os.path.abspath(dataset_name),
           "model": model, "resolution": None if dataset.is_2d else dataset.sample_shape[-1],
           "resolution_asked": resolution, "mirror": mirror,
           "cbase": cbase, "cmax": cmax, "map": map_layers, "fp16_res": fp16_res}
    if model == "r3gan":
        run.update(preset=preset, bf16_stages=bf16_stages)
    trainer = Trainer(G, D, dataset, out, config, device=device, evaluate=evaluate, progress=progress,
                      threads=threads, run=run, snapshot_hook=snapshot_hook, loggers=loggers)
    return trainer, base["steps"]


def describe(trainer: Trainer) -> str:
    """The block ``ganfast train`` prints at start: data, labels, models, device, threads, batch."""
    ds, cfg = trainer.dataset, trainer.config
    if ds.is_2d:
        data = f"{ds.num_stored} points in 2-D"
    else:
        channels, height, width = ds.sample_shape
        data = f"{ds.num_stored} images, {width}x{height}, {channels} channel{'s' if channels > 1 else ''}"
        if ds.mirror:
            data += f", x-flips: {len(ds)} in all"
    labels = "none" if ds.labels is None else f"{ds.num_classes} classes" if ds.num_classes else \
        f"vectors of {ds.c_dim}"
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("G", trainer.G), ("D", trainer.D))}
    per_rank = f" ({cfg.batch_size // trainer.world_size} per rank x {trainer.world_size})" \
        if trainer.world_size > 1 else ""
    lines = [f"dataset   {ds.name}: {data}", f"labels    {labels}"]
    if ds.report:
        lines.append(f"decoding  {ds.report}")
    lines += [f"model     G {type(trainer.G).__name__} {params['G'] / 1e6:.2f}M parameters, "
              + f"D {type(trainer.D).__name__} {params['D'] / 1e6:.2f}M parameters",
              f"device    {trainer.device}, {torch.get_num_threads()} threads, batch {cfg.batch_size}{per_rank}"]
    return "\n".join(lines)
