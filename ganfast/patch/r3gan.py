"""R3GAN's code base (Huang et al. 2024, ``R3GAN/Trainer.py``): its ``AdversarialTraining`` discriminator step on
ganfast's ops. ``patch_stylegan()`` calls :func:`patch_adversarial_training` when ``R3GAN.Trainer`` is imported.

R3GAN's own ``AccumulateDiscriminatorGradients(Noise, RealSamples, Conditions, Gamma, Scale, Preprocessor)``
runs D on the reals and on the fakes, builds two gradient graphs for R1 and R2 and back-propagates through both.
The replacement (``ganfast.losses.r1_r2_step``, ``passes`` as in ``ganfast.losses.r1_r2``: "auto" is two D passes
on the CPU, one on [reals; fakes] elsewhere; ``Preprocessor`` applied to each half in R3GAN's order, gradients
with respect to the samples before it) reduces the input gradients with the fused ``grad_penalty`` and
back-propagates ``Scale · mean_b [softplus(−(l_r − l_f)) + γ/2 · (R1_b + R2_b)]``, returning
R3GAN's ``[AdversarialLoss, RelativisticLogits, R1Penalty, R2Penalty]`` (detached, per sample). On the CPU its
first call sets glibc malloc to keep freed memory (``ganfast.malloc.keep_freed_memory``: process-wide, opt out with
``GANFAST_KEEP_FREED_MEMORY=0``). A discriminator
with batch statistics (``ganfast.losses.batch_dependent_layers``) keeps R3GAN's own two-pass step, with a warning.
"""
from __future__ import annotations

import sys
import warnings

import torch

from .. import losses
from ..malloc import keep_freed_memory

MODULE, CLASS, METHOD = "R3GAN.Trainer", "AdversarialTraining", "AccumulateDiscriminatorGradients"


def _ganfast_step(original, impl: str | None, passes: str | int):
    def AccumulateDiscriminatorGradients(self, Noise, RealSamples, Conditions, Gamma, Scale=1,  # noqa: N802,N803
                                         Preprocessor=lambda x: x):
        D = self.Discriminator
        found = losses.batch_dependent_layers(D) if isinstance(D, torch.nn.Module) else ["(not a torch.nn.Module)"]
        if found:
            warnings.warn(f"ganfast R3GAN patch: D has batch-dependent layers ({', '.join(found)}); R3GAN's own "
                          "two-pass D step is used", RuntimeWarning, stacklevel=2)
            return original(self, Noise, RealSamples, Conditions, Gamma, Scale, Preprocessor)
        if RealSamples.device.type == "cpu":
            keep_freed_memory()  # process-wide; GANFAST_KEEP_FREED_MEMORY=0 turns it off (ganfast.malloc)
        fake = self.Generator(Noise, Conditions)
        out = losses.r1_r2_step(D, RealSamples, fake, Conditions, Conditions, Preprocessor, impl, passes)
        relativistic = out.real_logits - out.fake_logits
        adversarial = torch.nn.functional.softplus(-relativistic)
        total = adversarial + (Gamma / 2) * (out.r1 + out.r2).to(adversarial.dtype)
        (Scale * total.mean()).backward()
        return [t.detach() for t in (adversarial, relativistic, out.r1, out.r2)]
    AccumulateDiscriminatorGradients.__ganfast_patch__ = True
    return AccumulateDiscriminatorGradients


def patch_adversarial_training(impl: str | None, passes: str | int = "auto") -> list[tuple]:
    """Replaces ``R3GAN.Trainer.AdversarialTraining.AccumulateDiscriminatorGradients`` (if that module is imported
    and not patched yet); returns the binding ``(class, name, original, replacement)`` in a list (empty: none)."""
    cls = getattr(sys.modules.get(MODULE), CLASS, None)
    original = getattr(cls, METHOD, None) if isinstance(cls, type) else None
    if not callable(original) or getattr(original, "__ganfast_patch__", False):
        return []
    replacement = _ganfast_step(original, impl, passes)
    setattr(cls, METHOD, replacement)
    return [(cls, METHOD, original, replacement)]
