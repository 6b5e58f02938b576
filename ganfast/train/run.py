"""What ``ganfast train`` and ``ganfast demo`` build: per-data-set defaults, models, evaluators, DDP setup."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..data import Dataset, load_dataset
from ..models import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, SNGANDiscriminator,
                      StyleGAN2Discriminator, StyleGAN2Generator)
from .trainer import TrainConfig, Trainer

# Defaults tuned on CPU (a busy shared 2-core machine, 1 thread): ring8 seed 0 had 8/8 modes from step 1000 and
# 89% high-quality samples at step 6000, 93% at 8000; digits at 2000 steps: recognisable digits, FD 4626 -> 22.
DEFAULTS_2D = dict(model="mlp", steps=8000, config=TrainConfig(
    batch_size=256, lr_g=5e-4, lr_d=5e-4, betas=(0.5, 0.9), r1_gamma=0.01, r1_interval=4, ema_kimg=5.0,
    tick_steps=500, snapshot_ticks=4))
DEFAULTS_IMAGE = dict(model="dcgan", steps=3000, config=TrainConfig(
    batch_size=64, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.99), r1_gamma=0.1, r1_interval=16, ema_kimg=2.0,
    tick_steps=250, snapshot_ticks=4, aug="ada"))
# StyleGAN2 (16-32 px, CPU-sized widths): R1 γ and lazy intervals as StyleGAN2-ADA's small-data configs, path
# length on; not tuned here (the demo uses DCGAN, which trains faster on a CPU).
DEFAULTS_STYLEGAN2 = dict(steps=3000, config=TrainConfig(
    batch_size=32, lr_g=2.5e-3, lr_d=2.5e-3, betas=(0.0, 0.99), r1_gamma=0.05, r1_interval=16, pl_weight=2.0,
    pl_interval=4, ema_kimg=2.0, tick_steps=250, snapshot_ticks=4, aug="ada"))
MODELS = ("mlp", "dcgan", "sngan", "stylegan2")


def defaults(dataset: Dataset, model: str | None = None) -> dict:
    if model == "stylegan2":
        return {"model": "stylegan2", **DEFAULTS_STYLEGAN2}
    return DEFAULTS_2D if dataset.is_2d else DEFAULTS_IMAGE


def build_models(model: str, dataset: Dataset, z_dim: int | None = None):
    """``(G, D)`` for a model name and a data set (its shape decides sizes and channels)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    if dataset.is_2d:
        if model != "mlp":
            raise ValueError(f"model: 2-D data needs 'mlp'; got {model!r}")
        return MLPGenerator(z_dim or 16, out_features=dataset.sample_shape[0]), \
            MLPDiscriminator(dataset.sample_shape[0])
    if model == "mlp":
        raise ValueError("model: 'mlp' is for 2-D data; images need 'dcgan', 'sngan' or 'stylegan2'")
    channels, resolution, _ = dataset.sample_shape
    if model == "stylegan2":
        return (StyleGAN2Generator(z_dim=z_dim or 64, img_resolution=resolution, img_channels=channels),
                StyleGAN2Discriminator(img_resolution=resolution, img_channels=channels))
    G = DCGANGenerator(z_dim or 64, resolution, channels)
    D = (DCGANDiscriminator if model == "dcgan" else SNGANDiscriminator)(resolution, channels)
    return G, D


def init_distributed() -> torch.device:
    """Joins the torchrun process group when launched by torchrun (gloo on CPU, NCCL on GPUs); the device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def build_trainer(dataset_name: str, out: str, *, seed: int = 0, resolution: int = 16, model: str | None = None,
                  overrides: dict | None = None, device=None, progress: bool = True,
                  eval_samples: int = 1000) -> tuple[Trainer, int]:
    """The trainer for a run and its default step count; ``overrides`` replace ``TrainConfig`` fields."""
    dataset = load_dataset(dataset_name, resolution=resolution, seed=seed)
    base = defaults(dataset, model)
    config = TrainConfig(**{**base["config"].__dict__, **(overrides or {}), "seed": seed})
    torch.manual_seed(seed)
    G, D = build_models(model or base["model"], dataset)
    evaluate = None
    if dataset.name == "digits":
        from ..metrics import digits_extractor
        from .evaluators import image_evaluator
        evaluate = image_evaluator(dataset.data, digits_extractor(resolution), G.z_dim, eval_samples, seed)
    trainer = Trainer(G, D, dataset, out, config, device=device, evaluate=evaluate, progress=progress)
    return trainer, base["steps"]
