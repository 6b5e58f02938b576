"""R3GAN's presets for ``ganfast train --model r3gan --preset NAME``: every number of the model and the run.

``cifar`` and ``ffhq64`` carry the numbers of R3GAN's ``train.py`` presets ``CIFAR10`` and ``FFHQ-64`` (widths,
cardinality, blocks and expansion per stage, listed from the 4x4 stage up; the batch of its README's commands; the
cosine schedules' start and end values and ``decay_kimg``; EMA half-life; augmentation probability; bf16 in the 3
(CIFAR) or 4 (FFHQ-64) highest-resolution stages, used on CUDA only). ``tiny`` is a CPU preset for smoke runs and
tests; ``stacked16`` is the CPU preset for the 16 px stacked digits (three digits in R, G, B: 1000 modes), sized
for 30 minutes on 2 cores (its train step: 243-254 img/s at 2 threads, 177-220 at 1, load 0.7-1.2): its 6500
steps of 64 are the 416 kimg of its schedules. Its numbers were chosen by short 1-thread runs on a shared 2-core
machine (``benchmarks/results/stacked_digits_r3gan_sweep_1thread.json``; modes of 10k fakes, one seed each):
width 32 trains 2-3.6x the images per second of width 64; at lr 2e-4 γ 1 beat γ 0.1 (772 vs 706 modes at 19
kimg) but the modes fell after 26 kimg; lr 5e-4 or 1e-3 with γ <= 1 lost modes after 6-13 kimg; lr 1e-3 with
γ 10 rose to 887 modes, KL 0.61 at 90 kimg. Every preset trains with RpGAN, R3GAN's augmentation mix
(``augpipe="r3gan"``), R1 + R2 (γ/2 each) on every D step, Adam β1 = 0 and no EMA ramp-up.
"""
from __future__ import annotations

# model: width / cardinality / blocks are one number for every stage, or a list per stage from 4x4 upwards
PRESETS = {
    "cifar": dict(steps=400_000, model=dict(z_dim=64, width=768, cardinality=96, blocks=2, expansion=2,
                                            bf16_stages=3),
                  config=dict(batch_size=512, lr=2e-4, lr_end=5e-5, beta2=0.9, beta2_end=0.99, r1_gamma=0.05,
                              gamma_end=0.005, ema_kimg=5000.0, decay_kimg=20_000.0, aug="fixed", aug_p=0.55)),
    "ffhq64": dict(steps=800_000, model=dict(z_dim=64, width=[768, 768, 768, 768, 384],
                                             cardinality=[96, 96, 96, 96, 48], blocks=2, expansion=2, bf16_stages=4),
                   config=dict(batch_size=256, lr=2e-4, lr_end=5e-5, beta2=0.9, beta2_end=0.99, r1_gamma=2.0,
                               gamma_end=0.2, ema_kimg=500.0, decay_kimg=20_000.0, aug="fixed", aug_p=0.3)),
    "tiny": dict(steps=3000, model=dict(z_dim=64, width=32, cardinality=4, blocks=1, expansion=2, bf16_stages=0),
                 config=dict(batch_size=16, lr=2e-4, lr_end=5e-5, beta2=0.9, beta2_end=0.99, r1_gamma=0.1,
                             gamma_end=0.01, ema_kimg=1.0, decay_kimg=50.0, aug="noaug", aug_p=0.0)),
    "stacked16": dict(steps=6500, model=dict(z_dim=64, width=32, cardinality=4, blocks=1, expansion=2,
                                             bf16_stages=0),
                      config=dict(batch_size=64, lr=1e-3, lr_end=2.5e-4, beta2=0.9, beta2_end=0.99, r1_gamma=10.0,
                                  gamma_end=1.0, ema_kimg=10.0, decay_kimg=416.0, aug="noaug", aug_p=0.0)),
}
DEFAULT_PRESET = "tiny"


def check_preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


def _per_stage(name: str, key: str, value, stages: int, resolution: int) -> list:
    """One value per stage: a number repeated, or the preset's list when it has exactly ``stages`` entries."""
    if not isinstance(value, list):
        return [value] * stages
    if len(value) != stages:
        raise ValueError(f"preset {name!r} sets {key} for {len(value)} stages ({4 << (len(value) - 1)} px); "
                         f"--resolution {resolution} needs {stages}")
    return list(value)


def model_kwargs(name: str, resolution: int, img_channels: int, c_dim: int, on_cuda: bool,
                 bf16_stages: int | None = None) -> dict:
    """Keyword arguments of R3GANGenerator (and, without ``z_dim``, R3GANDiscriminator) for a preset at a
    resolution. ``bf16_stages`` None: the preset's on CUDA, 0 on the CPU."""
    m = check_preset(name)["model"]
    stages = max(resolution.bit_length() - 2, 1)
    if bf16_stages is None:
        bf16_stages = m["bf16_stages"] if on_cuda else 0
    return dict(z_dim=m["z_dim"], c_dim=c_dim, img_resolution=resolution, img_channels=img_channels,
                widths=_per_stage(name, "width", m["width"], stages, resolution),
                cardinalities=_per_stage(name, "cardinality", m["cardinality"], stages, resolution),
                blocks=_per_stage(name, "blocks", m["blocks"], stages, resolution),
                expansion=m["expansion"], bf16_stages=min(bf16_stages, stages))


def config_fields(name: str) -> dict:
    """TrainConfig fields of a preset."""
    c = check_preset(name)["config"]
    return dict(batch_size=c["batch_size"], loss="rpgan", lr_g=c["lr"], lr_d=c["lr"], lr_end=c["lr_end"],
                betas=(0.0, c["beta2"]), beta2_end=c["beta2_end"], r1_gamma=c["r1_gamma"], gamma_end=c["gamma_end"],
                r1_interval=1, r2=True, pl_weight=0.0, ema_kimg=c["ema_kimg"], ema_rampup=None,
                decay_kimg=c["decay_kimg"], aug=c["aug"], aug_p=c["aug_p"], augpipe="r3gan", tick_steps=250,
                snapshot_ticks=4)
