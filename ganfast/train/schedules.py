"""R3GAN's hyper-parameter schedules: cosine from a start to an end value over ``decay_kimg``, then held.

    cosine(start, end, t) = end + (start − end) · ½ (1 + cos(π · min(t, 1))),   t = nimg / (1000 · decay_kimg)

With ``TrainConfig.decay_kimg`` > 0, :func:`at` schedules: the learning rates (``lr_g``/``lr_d`` -> ``lr_end``),
Adam's β2 (``betas[1]`` -> ``beta2_end``), the R1/R2 weight γ (``r1_gamma`` -> ``gamma_end``, R3GAN: γ/10), the
EMA half-life (0 -> ``ema_kimg``) and, for ``aug="fixed"``, the augmentation probability (0 -> ``aug_p``).
With ``decay_kimg`` 0 every value is the config's own, at every step. Each is a function of the images shown
only, so a resumed run repeats the uninterrupted one exactly.
"""
from __future__ import annotations

import math


def cosine(start: float, end: float, nimg: int, decay_kimg: float) -> float:
    """``start`` at nimg 0, ``end`` from ``decay_kimg`` thousand images on, a half cosine in between."""
    if decay_kimg <= 0:
        return end
    t = min(nimg / (decay_kimg * 1000), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


def at(cfg, nimg: int) -> dict:
    """The scheduled values after ``nimg`` images: lr_g, lr_d, beta2, r1_gamma, ema_kimg, aug_p."""
    beta2 = cfg.betas[1]
    if not cfg.decay_kimg:
        return {"lr_g": cfg.lr_g, "lr_d": cfg.lr_d, "beta2": beta2, "r1_gamma": cfg.r1_gamma,
                "ema_kimg": cfg.ema_kimg, "aug_p": cfg.aug_p}
    decay = cfg.decay_kimg

    def end(value, fallback):
        return fallback if value is None else value
    return {"lr_g": cosine(cfg.lr_g, end(cfg.lr_end, cfg.lr_g), nimg, decay),
            "lr_d": cosine(cfg.lr_d, end(cfg.lr_end, cfg.lr_d), nimg, decay),
            "beta2": cosine(beta2, end(cfg.beta2_end, beta2), nimg, decay),
            "r1_gamma": cosine(cfg.r1_gamma, end(cfg.gamma_end, cfg.r1_gamma / 10), nimg, decay),
            "ema_kimg": cosine(0.0, cfg.ema_kimg, nimg, decay),
            "aug_p": cosine(0.0, cfg.aug_p, nimg, decay) if cfg.aug == "fixed" else cfg.aug_p}
