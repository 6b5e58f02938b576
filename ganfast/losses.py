"""Adversarial losses, gradient penalties and lazy-regularisation helpers for GAN training.

Adversarial losses (``kind`` one of ``LOSS_KINDS``; every term is a mean over its logits)::

    kind             d_loss(kind, real, fake)                 g_loss(kind, fake)
    "logistic"       softplus(−real) + softplus(fake)         softplus(−fake)     (non-saturating, StyleGAN)
    "hinge"          relu(1 − real) + relu(1 + fake)          −fake               (SNGAN, BigGAN)
    "wasserstein"    fake − real                              −fake               (WGAN, with wgan_gp)
    "least_squares"  ½(real − 1)² + ½ fake²                   ½(fake − 1)²        (LSGAN, a=0 b=1 c=1)
    "rpgan"          softplus(−(real − fake))                 softplus(−(fake − real))   (R3GAN's relativistic
                                                                                   pairing: logits paired by index)

``d_loss`` takes ``None`` for either side, for training loops that run D on reals and fakes separately (not for
"rpgan", which pairs them; its ``g_loss`` takes the real logits too).

Penalties (each returns a scalar; multiply by its weight yourself)::

    r1_penalty(outputs, inputs)      mean_b Σ (∂ Σoutputs / ∂inputs)²_b      StyleGAN: loss += γ/2 · r1
    r2_penalty(outputs, inputs)      the same, on fake inputs                  loss += γ/2 · r2
    wgan_gp(critic, real, fake)      mean_b (‖∇critic(x̂)_b‖₂ − center)²,  x̂ = eps·real + (1 − eps)·fake
    dragan_penalty(critic, real)     wgan_gp between real and real + 0.5·std(real)·U,  U ~ U[0, 1)
    path_length_penalty(images, ws, mean)  /  PathLengthPenalty   StyleGAN2's path-length regulariser

R1 and R2 together (R3GAN: both on every D step)::

    rpgan_r1_r2(D, real, fake, gamma, c)   mean_b [softplus(−(l_r − l_f)) + γ/2 · (R1_b + R2_b)]
    r1_r2(D, real, fake, ...)              (l_r, l_f, R1_b, R2_b) for any loss
With ``passes=1`` D runs once on the concatenated batch [real; fake], one ``autograd.grad`` (create_graph=True)
gives both input gradients and one fused ``grad_penalty`` reduces them: the same numbers as two passes, provided D
treats every sample on its own (no batch statistics; :func:`batch_dependent_layers` says which layers would break
that). ``passes=2`` runs D on each half (R3GAN's own structure). ``passes="auto"`` (the default) picks two passes
on the CPU, where they were measured faster (the same FLOPs; at 2B samples the convolutions ran slower, and
activations of 32 MiB and more pass glibc's mmap threshold and are faulted in afresh every step), and one pass
elsewhere (not measured on a GPU).

Every penalty differentiates only with respect to its inputs (``torch.autograd.grad(..., inputs,
create_graph=True)``), never with respect to the critic's weights, and its result is differentiable, so
``loss.backward()`` sends the penalty's gradient into the critic's parameters. The per-sample reduction
(sum of squares, norm, penalty term) runs as one fused op (``ganfast.ops.grad_penalty``; ``impl=`` as for
every ganfast op, ``"ref"`` = ``ganfast.reference.losses``).

Lazy regularisation (StyleGAN2: run a penalty every ``interval`` steps only)::

    if lazy_reg_due(step, interval): loss = lazy_penalty_weight(gamma / 2, interval) * r1_penalty(...)
    lr, betas = lazy_adam_params(lr, betas, interval)     # lr·k/(k+1), β^(k/(k+1)), k = interval
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .ops.grad_penalty import grad_penalty as _grad_penalty
from .ops.sample_lerp import sample_lerp as _sample_lerp
from .reference import losses as _ref

__all__ = ["LOSS_KINDS", "d_loss", "g_loss", "r1_penalty", "r2_penalty", "wgan_gp", "dragan_penalty",
           "r1_r2", "rpgan_r1_r2", "resolve_passes", "batch_dependent_layers", "R1R2", "path_length_penalty",
           "PathLengthPenalty", "lazy_reg_due", "lazy_penalty_weight", "lazy_adam_params"]

LOSS_KINDS = _ref.LOSS_KINDS
PAIRED_KINDS = _ref.PAIRED_KINDS


# ---- adversarial losses ----------------------------------------------------------------------------------------

def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"kind must be one of {LOSS_KINDS}, got {kind!r}")


def _check_logits(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")


def d_loss(kind: str, real_logits: torch.Tensor | None, fake_logits: torch.Tensor | None) -> torch.Tensor:
    """The discriminator's loss (scalar): the mean of the real-logit term plus the mean of the fake-logit term.

    Args:
        kind: one of ``LOSS_KINDS`` (see the module docstring for the formulas).
        real_logits: D's raw outputs on real samples (any shape), or None to leave out the real term.
        fake_logits: D's raw outputs on generated samples, or None to leave out the fake term.
    """
    _check_kind(kind)
    if real_logits is None and fake_logits is None:
        raise ValueError("d_loss needs real_logits, fake_logits or both; got neither")
    for name, t in (("real_logits", real_logits), ("fake_logits", fake_logits)):
        if t is not None:
            _check_logits(name, t)
    if kind in _ref.PAIRED_KINDS:
        _check_paired(kind, real_logits, fake_logits)
    return _ref.d_loss(kind, real_logits, fake_logits)


def _check_paired(kind: str, real_logits, fake_logits) -> None:
    if real_logits is None or fake_logits is None:
        raise ValueError(f"{kind!r} pairs real and fake logits by index: both real_logits and fake_logits are needed")
    _check_logits("real_logits", real_logits)
    if real_logits.shape != fake_logits.shape:
        raise ValueError(f"{kind!r} pairs logits by index: real_logits {tuple(real_logits.shape)} and fake_logits "
                         f"{tuple(fake_logits.shape)} must have one shape")


def g_loss(kind: str, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
    """The generator's loss (scalar) from D's raw outputs on generated samples; ``kind`` as in :func:`d_loss`.
    ``real_logits`` (D on reals, no gradient needed) is required by "rpgan" and ignored by the others."""
    _check_kind(kind)
    _check_logits("fake_logits", fake_logits)
    if kind in _ref.PAIRED_KINDS:
        _check_paired(kind, real_logits, fake_logits)
    return _ref.g_loss(kind, fake_logits, real_logits)


# ---- gradient penalties ----------------------------------------------------------------------------------------

def _per_sample(g: torch.Tensor, center: float | None, impl: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(term_b, norm_b) of the per-sample gradient reduction; the fused op unless impl is "ref"."""
    return _grad_penalty(g, center, impl=impl)


def _check_batched(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.ndim == 0 or t.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch dimension first, got shape {tuple(t.shape)}")


def _input_grad(outputs: torch.Tensor, inputs: torch.Tensor, what: str) -> torch.Tensor:
    """∂ Σoutputs / ∂inputs with create_graph=True, differentiating with respect to ``inputs`` only."""
    _check_batched("inputs", inputs)
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"outputs must be a torch.Tensor, got {type(outputs).__name__}")
    if not inputs.requires_grad:
        raise ValueError(f"{what}: inputs does not require grad; call inputs.requires_grad_(True) (on a detached "
                         "tensor) before computing outputs from it")
    if not outputs.requires_grad:
        raise ValueError(f"{what}: outputs does not require grad, so it was not computed from inputs")
    (g,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True, allow_unused=True)
    if g is None:
        raise ValueError(f"{what}: inputs was not used to compute outputs (no gradient path from outputs to inputs)")
    return g


def r1_penalty(outputs: torch.Tensor, inputs: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``mean_b Σ_{non-batch dims} (∂ Σoutputs / ∂inputs)²``, a differentiable scalar.

    The caller applies the weight: StyleGAN2 adds ``γ/2 · r1_penalty(D(x), x)`` to D's loss on reals, with
    ``x = reals.detach().requires_grad_(True)``. Only ``inputs``' gradient is computed (create_graph=True),
    never the weights'. Raises ValueError if ``inputs`` does not require grad or ``outputs`` does not depend
    on it.
    """
    return _per_sample(_input_grad(outputs, inputs, "r1_penalty"), None, impl)[0].mean()


def r2_penalty(outputs: torch.Tensor, inputs: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """R2: :func:`r1_penalty` on generated inputs (``outputs = D(fakes)``); the caller applies γ/2."""
    return _per_sample(_input_grad(outputs, inputs, "r2_penalty"), None, impl)[0].mean()


def _check_center(center) -> float:
    center = float(center)
    if not math.isfinite(center) or center < 0:
        raise ValueError(f"center must be a finite number >= 0, got {center}")
    return center


def _check_pair(real, fake) -> None:
    _check_batched("real", real)
    _check_batched("fake", fake)
    if fake.shape != real.shape:
        raise ValueError(f"fake has shape {tuple(fake.shape)} but real has {tuple(real.shape)}")
    if fake.device != real.device or fake.dtype != real.dtype:
        raise ValueError(f"fake ({fake.dtype} on {fake.device}) must match real ({real.dtype} on {real.device})")


def _check_per_sample(name: str, t, like: torch.Tensor) -> torch.Tensor:
    """A (B,)-element tensor on ``like``'s device and dtype."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.numel() != like.shape[0] or (t.ndim and t.shape[0] != like.shape[0]):
        raise ValueError(f"{name} must hold one value per sample (shape ({like.shape[0]},) or "
                         f"({like.shape[0]}, 1, ...)), got shape {tuple(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but real is on {like.device}")
    return t.reshape(-1).to(like.dtype)


def _norm_penalty_at(critic, x_hat: torch.Tensor, center: float, what: str, impl: str | None) -> torch.Tensor:
    x_hat = x_hat.detach().requires_grad_(True)
    out = critic(x_hat)
    return _per_sample(_input_grad(out, x_hat, what), center, impl)[0].mean()


def _interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None, impl: str | None) -> torch.Tensor:
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    lerp_impl = None if impl == "ext" else impl  # the interpolation has no extension kernel: auto serves "ext"
    return _sample_lerp(real.detach(), fake.detach(), _check_per_sample("eps", eps, real), impl=lerp_impl)


def wgan_gp(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None, center: float = 1.0,
            impl: str | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): ``mean_b (‖∇_x̂ critic(x̂)_b‖₂ − center)²``, a differentiable scalar.

    ``x̂ = eps·real + (1 − eps)·fake`` with one ``eps`` per sample (shape (B,) or (B, 1, ...); None: drawn
    from U[0, 1)). ``real`` and ``fake`` are detached: the penalty trains the critic only. ``critic`` maps a
    batch to outputs whose sum is differentiated; the caller applies λ (10 in the paper).
    """
    _check_pair(real, fake)
    if not callable(critic):
        raise TypeError(f"critic must be callable, got {type(critic).__name__}")
    return _norm_penalty_at(critic, _interpolate(real, fake, eps, impl), _check_center(center), "wgan_gp", impl)


def dragan_penalty(critic, real: torch.Tensor, center: float = 1.0, eps: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None, impl: str | None = None) -> torch.Tensor:
    """DRAGAN (Kodali et al. 2017): :func:`wgan_gp` between ``real`` and ``real + 0.5·std(real)·noise``.

    ``noise`` ~ U[0, 1) like ``real`` when None (the perturbation of the DRAGAN authors' code; std over the
    whole batch); ``eps`` as in :func:`wgan_gp`. The caller applies λ.
    """
    _check_batched("real", real)
    real = real.detach()
    if noise is None:
        noise = torch.rand_like(real)
    elif not isinstance(noise, torch.Tensor) or noise.shape != real.shape:
        raise ValueError(f"noise must be a tensor shaped like real {tuple(real.shape)}")
    return wgan_gp(critic, real, real + 0.5 * real.std() * noise.to(real), eps, center, impl)


def path_length_penalty(images: torch.Tensor, ws: torch.Tensor, mean: torch.Tensor | float, decay: float = 0.01,
                        noise: torch.Tensor | None = None,
                        impl: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2's path-length penalty, functional form: returns ``(penalty, new_mean)``.

    With ``y = Σ images · noise / √(H·W)`` (noise ~ N(0, I) when None) and ``g = ∂y/∂ws``:
    ``L_b = √(mean over the ws of Σ_{w_dim} g_b²)``, ``new_mean = mean + decay · (mean_b L_b − mean)``,
    ``penalty = mean_b (L_b − new_mean)²``. The gradient flows through ``new_mean`` as in StyleGAN2-ADA; the
    returned ``new_mean`` is detached: keep it for the next call. ``ws``: (B, num_ws, w_dim) or (B, w_dim),
    used to compute ``images`` (B, C, H, W). The caller applies the weight (StyleGAN2: 2).
    """
    _check_batched("images", images)
    _check_batched("ws", ws)
    if images.shape[0] != ws.shape[0]:
        raise ValueError(f"images has batch {images.shape[0]} but ws has {ws.shape[0]}")
    decay = float(decay)
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    if noise is None:
        noise = torch.randn_like(images)
    elif not isinstance(noise, torch.Tensor) or noise.shape != images.shape:
        raise ValueError(f"noise must be a tensor shaped like images {tuple(images.shape)}")
    spatial = images[0, 0].numel() if images.ndim > 2 else 1
    g = _input_grad(images * (noise / math.sqrt(spatial)), ws, "path_length_penalty")
    num_ws = ws[0].numel() // ws.shape[-1] if ws.ndim > 1 else 1
    lengths = _per_sample(g, None, impl)[1] / math.sqrt(num_ws)
    mean = torch.as_tensor(mean).to(lengths)
    new_mean = mean.lerp(lengths.mean(), decay)
    return (lengths - new_mean).square().mean(), new_mean.detach()


class PathLengthPenalty(torch.nn.Module):
    """StyleGAN2's path-length penalty with its running mean as a buffer (saved in the state_dict).

        pl = PathLengthPenalty(decay=0.01)
        loss_g += pl_weight * pl(images, ws)          # updates pl.mean
    """

    def __init__(self, decay: float = 0.01):
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("mean", torch.zeros(()))

    def forward(self, images: torch.Tensor, ws: torch.Tensor, noise: torch.Tensor | None = None,
                impl: str | None = None) -> torch.Tensor:
        penalty, new_mean = path_length_penalty(images, ws, self.mean, self.decay, noise, impl)
        with torch.no_grad():
            self.mean.copy_(new_mean)
        return penalty

    def extra_repr(self) -> str:
        return f"decay={self.decay}"


# ---- R1 and R2 in one pass -------------------------------------------------------------------------------------

_BATCH_STAT_NAMES = ("MinibatchStd",)  # StyleGAN's minibatch standard deviation (ganfast's and NVlabs' classes)


def batch_dependent_layers(D: torch.nn.Module) -> list[str]:
    """Names (``D.named_modules()``) and kinds of the layers whose output for a sample depends on the other samples
    of the batch, so that D on [real; fake] differs from D on each: batch norm (any ``_BatchNorm``, SyncBatchNorm
    included) in training mode or without running statistics, modules whose class name contains ``MinibatchStd``
    (StyleGAN's minibatch standard deviation), and any module with an attribute ``batch_dependent = True`` (how a
    custom layer with batch statistics declares itself; such a layer that does not is not detected)."""
    found = []
    for name, module in D.named_modules():
        kind = type(module).__name__
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            if module.training or not module.track_running_stats:
                found.append(f"{name or '(D itself)'} ({kind}, batch statistics)")
        elif any(s in kind for s in _BATCH_STAT_NAMES) or getattr(module, "batch_dependent", False) is True:
            found.append(f"{name or '(D itself)'} ({kind})")
    return found


class R1R2(NamedTuple):
    """What :func:`r1_r2` returns: D's logits on reals and fakes, and the per-sample penalties (shape (B,))."""
    real_logits: torch.Tensor
    fake_logits: torch.Tensor
    r1: torch.Tensor
    r2: torch.Tensor


def r1_r2(D: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, real_c: torch.Tensor | None = None,
          fake_c: torch.Tensor | None = None, augment=None, impl: str | None = None,
          passes: str | int = "auto") -> R1R2:
    """D's logits and R1/R2 per sample from D on ``x = [real; fake]`` (both detached; ``passes``: one D forward on
    ``x``, two on its halves, or "auto", see :func:`resolve_passes`):
    ``R1_b = Σ (∂ΣD/∂x)²_b`` over the real rows, ``R2_b`` over the fake rows, the gradient taken with respect to
    the images before ``augment`` (applied to the real and the fake half separately, in that order, so that its
    random draws match a two-pass step). Labels: ``real_c`` and ``fake_c`` (both or neither). Raises ValueError
    naming the layers if D has batch statistics (:func:`batch_dependent_layers`)."""
    _check_pair(real, fake)
    if not isinstance(D, torch.nn.Module):
        raise TypeError(f"D must be a torch.nn.Module (its layers are checked for batch statistics), got "
                        f"{type(D).__name__}")
    if (real_c is None) != (fake_c is None):
        raise ValueError("give labels for both halves (real_c and fake_c) or for neither")
    check_per_sample(D)
    return r1_r2_step(lambda x, c: D(x) if c is None else D(x, c), real, fake, real_c, fake_c, augment, impl, passes)


def check_per_sample(D: torch.nn.Module) -> None:
    """A ValueError naming D's batch-dependent layers (:func:`batch_dependent_layers`), if it has any."""
    found = batch_dependent_layers(D)
    if found:
        raise ValueError(f"one-pass R1+R2: D has batch-dependent layers, so D on [real; fake] would not equal D on "
                         f"each: {', '.join(found)}; use r1_penalty/r2_penalty on two D passes (or eval-mode batch "
                         "norm)")


def resolve_passes(passes, device: torch.device) -> int:
    """1 or 2: ``passes`` itself, or for "auto" 2 on the CPU (measured faster there: benchmarks/test_bench_r3gan.py)
    and 1 on other devices (the one pass's expected gain on a GPU, fewer launches, is not measured yet)."""
    if isinstance(passes, bool) or passes not in ("auto", 1, 2):
        raise ValueError(f"passes must be 'auto', 1 or 2, got {passes!r}")
    if passes == "auto":
        return 2 if device.type == "cpu" else 1
    return passes


def _logit_rows(logits, rows: int, what: str) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.shape[:1] != (rows,):
        raise ValueError(f"D must return one logit row per sample ({rows} for {what}), got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    return logits


def r1_r2_step(call_d, real: torch.Tensor, fake: torch.Tensor, real_c=None, fake_c=None, augment=None,
               impl: str | None = None, passes: str | int = "auto") -> R1R2:
    """:func:`r1_r2` after its checks, with ``call_d(x, c) -> logits`` the labelled D (``c`` None: unlabelled)."""
    n = real.shape[0]
    halves = [real.detach().requires_grad_(True), fake.detach().requires_grad_(True)]
    if resolve_passes(passes, real.device) == 2:
        seen = halves if augment is None else [augment(h) for h in halves]
        logits = [_logit_rows(call_d(x, c), n, "each half") for x, c in zip(seen, (real_c, fake_c))]
        r1, r2 = (_per_sample(_input_grad(lg, h, "r1_r2"), None, impl)[0] for lg, h in zip(logits, halves))
        return R1R2(logits[0], logits[1], r1, r2)
    x = torch.cat([h.detach() for h in halves]).requires_grad_(True)
    seen = x if augment is None else torch.cat([augment(x[:n]), augment(x[n:])])
    c = None if real_c is None else torch.cat([real_c, fake_c])
    logits = _logit_rows(call_d(seen, c), 2 * n, "[real; fake]")
    term = _per_sample(_input_grad(logits, x, "r1_r2"), None, impl)[0]
    return R1R2(logits[:n], logits[n:], term[:n], term[n:])


def rpgan_r1_r2(D: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, gamma: float,
                c: torch.Tensor | None = None, impl: str | None = None, passes: str | int = "auto") -> torch.Tensor:
    """R3GAN's discriminator loss from :func:`r1_r2` (``passes`` as there):
    ``mean_b [softplus(−(D(real)_b − D(fake)_b)) + γ/2 · (R1_b + R2_b)]``, labels ``c`` for both halves.
    ``loss.backward()`` sends its gradient into D's weights; the two-pass oracle is
    ``ganfast.reference.losses.rpgan_r1_r2``."""
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
    out = r1_r2(D, real, fake, c, c, impl=impl, passes=passes)
    _check_paired("rpgan", out.real_logits, out.fake_logits)
    adversarial = torch.nn.functional.softplus(out.fake_logits - out.real_logits).reshape(-1)
    return (adversarial + gamma / 2 * (out.r1 + out.r2).to(adversarial.dtype)).mean()


# ---- lazy regularisation ---------------------------------------------------------------------------------------

def _check_interval(interval) -> int:
    if interval is None:
        return 1
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval must be None or an int >= 1, got {interval!r}")
    return interval


def lazy_reg_due(step: int, interval: int | None) -> bool:
    """Whether a lazily applied penalty runs at ``step`` (every ``interval``-th step from 0; None: always)."""
    return step % _check_interval(interval) == 0


def lazy_penalty_weight(weight: float, interval: int | None) -> float:
    """``weight · interval``: a penalty applied every ``interval`` steps keeps its average strength."""
    return float(weight) * _check_interval(interval)


def lazy_adam_params(lr: float, betas: tuple[float, float], interval: int | None) -> tuple[float, tuple[float, float]]:
    """Adam's (lr, betas) for an optimiser whose steps include a lazy penalty every ``interval`` steps:
    ``lr · k/(k+1)`` and ``β^(k/(k+1))`` with ``k = interval`` (StyleGAN2's mb_ratio); None: unchanged."""
    k = _check_interval(interval)
    if interval is None:
        return float(lr), (float(betas[0]), float(betas[1]))
    ratio = k / (k + 1)
    return float(lr) * ratio, (float(betas[0]) ** ratio, float(betas[1]) ** ratio)
