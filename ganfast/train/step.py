"""The functional training step: one D update, one G update, the EMA generator, and their bookkeeping.

These functions hold no state of their own; :class:`ganfast.train.Trainer` composes them, and a user with an
own loop can call them directly. ``G(z)`` returns samples and ``D(x)`` returns logits of shape ``(N,)``;
conditional models are called as ``G(z, c)`` and ``D(x, c)`` with labels ``c`` (N, c_dim) (``real_c`` the
labels of the real batch, ``fake_c`` those the fakes are generated with); with ``c`` None they are called
without it, so models that take no labels work unchanged.

Generators with an ``update_emas`` argument (StyleGAN2/3: the mapping's w_avg, StyleGAN3's magnitude EMAs) move
their running statistics in the D step's generation only, never in the G step or the path-length pass, as
StyleGAN2-ADA's and StyleGAN3's training loops do.
"""
from __future__ import annotations

import contextlib
import inspect
import math

import torch
import torch.distributed as dist

from .. import losses


def check_loss(loss: str) -> None:
    if loss not in losses.LOSS_KINDS:
        raise ValueError(f"loss must be one of {losses.LOSS_KINDS}; got {loss!r}")


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on ``device`` when asked, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def apply_gradients(params: list[torch.nn.Parameter], opt: torch.optim.Optimizer) -> tuple[float, bool]:
    """Averages gradients over data-parallel ranks, then steps ``opt`` unless the gradient is not finite.

    Returns ``(grad_norm, skipped)``: a step whose gradient holds NaN/inf is skipped (gradients zeroed,
    parameters and optimizer state untouched) on every rank alike, since all ranks see the same averaged norm.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if _distributed() and grads:
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item() \
        if grads else 0.0
    skipped = not math.isfinite(norm)
    if not skipped:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return norm, skipped


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    """Turns off ``requires_grad`` of ``module``'s parameters within the block (no weight grads are computed)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _no_augment(images: torch.Tensor) -> torch.Tensor:
    return images


def call_with_labels(model, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """``model(x, c)``, or ``model(x)`` when ``c`` is None (models that take no labels)."""
    return model(x) if c is None else model(x, c)


def _takes_update_emas(fn) -> bool:
    """Whether a generator (a module's forward, or a function) has an ``update_emas`` argument."""
    try:
        return "update_emas" in inspect.signature(fn.forward if isinstance(fn, torch.nn.Module) else fn).parameters
    except (TypeError, ValueError):  # no signature to inspect (e.g. a builtin)
        return False


def generate(G, z: torch.Tensor, c: torch.Tensor | None, update_emas: bool) -> torch.Tensor:
    """``call_with_labels(G, z, c)`` with ``update_emas`` passed on to generators that take it (else dropped)."""
    kwargs = {"update_emas": update_emas} if _takes_update_emas(G) else {}
    return G(z, **kwargs) if c is None else G(z, c, **kwargs)


def d_step(G, D, opt_d, real: torch.Tensor, z: torch.Tensor, *, real_c: torch.Tensor | None = None,
           fake_c: torch.Tensor | None = None, loss: str = "logistic", r1_gamma: float = 0.0, r1_interval: int = 1,
           regularize: bool = False, gp_weight: float = 10.0, bf16: bool = False,
           augment=None, r2: bool = False) -> dict:
    """One discriminator update on ``(real, real_c)`` and ``(G(z, fake_c), fake_c)`` with
    ``ganfast.losses.d_loss(loss, ...)``.

    ``augment(images) -> images`` (e.g. :class:`ganfast.augment.AugmentPipe`; None: none) is applied to reals and
    fakes before D; R1 differentiates D(augment(real)) with respect to the un-augmented reals, through the
    augmentation. The stats' ``real_sign`` is the batch mean of sign(D(augment(real))), ADA's overfitting signal.

    With ``regularize`` (the trainer sets it every ``r1_interval`` steps: lazy regularisation), the loss gains
    ``r1_gamma / 2 · r1_interval · R1`` where R1 = E‖∇ₓD(x_real)‖², folded into this step's single backward
    (so the optimiser still steps once per minibatch and Adam needs no lazy-rate correction); R1 is the gradient
    of D(x, real_c) with respect to the image only. With ``r2`` the same step also adds
    ``r1_gamma / 2 · r1_interval · R2`` (R2: the penalty on the fakes); then ``ganfast.losses.r1_r2`` computes both
    (``passes="auto"``: one D pass on [real; fake] on a GPU, two on the CPU) unless D has batch statistics, where
    D runs twice. The ``"wasserstein"`` loss always adds ``gp_weight · wgan_gp`` (interpolates judged with the real
    labels).
    """
    check_loss(loss)
    augment = augment or _no_augment
    with torch.no_grad(), autocast(real.device, bf16):
        fake = generate(G, z, fake_c, update_emas=True)  # the one pass that moves G's running statistics
    use_r1 = regularize and r1_gamma > 0
    use_r2 = use_r1 and r2
    stats = {}
    if use_r2 and isinstance(D, torch.nn.Module) and not losses.batch_dependent_layers(D):
        with autocast(real.device, bf16):
            real_logits, fake_logits, r1, r2_value = losses.r1_r2(
                D, real, fake.to(real.dtype), real_c, fake_c, augment=None if augment is _no_augment else augment)
        real_logits, fake_logits, r1, r2_value = real_logits.float(), fake_logits.float(), r1.mean(), r2_value.mean()
    else:
        real = real.detach().requires_grad_(use_r1)
        fake = fake.detach().to(real.dtype).requires_grad_(use_r2)
        with autocast(real.device, bf16):
            real_logits = call_with_labels(D, augment(real), real_c).float()
            fake_logits = call_with_labels(D, augment(fake), fake_c).float()
        r1 = losses.r1_penalty(real_logits, real) if use_r1 else None
        r2_value = losses.r2_penalty(fake_logits, fake) if use_r2 else None
    loss_value = losses.d_loss(loss, real_logits, fake_logits)
    total = loss_value
    for name, value in (("r1", r1), ("r2", r2_value)):
        if value is not None:
            total = total + value * losses.lazy_penalty_weight(r1_gamma / 2, r1_interval)
            stats[name] = value.item()
    if loss == "wasserstein":
        with autocast(real.device, bf16):
            gp = losses.wgan_gp(lambda x: call_with_labels(D, augment(x), real_c).float(), real.detach(),
                                fake.detach().to(real.dtype))
        total = total + gp_weight * gp
        stats["gp"] = gp.item()
    total.backward()
    grad_norm, skipped = apply_gradients([p for p in D.parameters() if p.requires_grad], opt_d)
    threshold = 0.5 if loss == "least_squares" else 0.0  # where D's output says "real" rather than "fake"
    stats.update(loss_d=loss_value.item(), d_real_acc=(real_logits > threshold).float().mean().item(),
                 d_fake_acc=(fake_logits < threshold).float().mean().item(), grad_norm_d=grad_norm, skipped_d=skipped,
                 real_sign=torch.sign(real_logits.detach()).mean().item())
    return stats


def g_step(G, D, opt_g, z: torch.Tensor, *, fake_c: torch.Tensor | None = None, loss: str = "logistic",
           bf16: bool = False, path_length: losses.PathLengthPenalty | None = None, pl_weight: float = 0.0,
           pl_interval: int = 1, regularize: bool = False, augment=None, real: torch.Tensor | None = None,
           real_c: torch.Tensor | None = None) -> dict:
    """One generator update: minimises ``ganfast.losses.g_loss(loss, D(augment(G(z, c)), c))`` with ``c = fake_c``
    (D's weights get no gradient; ``augment`` as in :func:`d_step`, differentiated through). The paired
    ``"rpgan"`` loss also needs D on ``(real, real_c)`` (detached; no penalty in the G step).

    With ``regularize`` and a ``path_length`` penalty (StyleGAN2 generators: ``G.mapping`` then
    ``G.synthesis``), the loss gains ``pl_weight · pl_interval · path_length(images, ws)`` (lazy regularisation
    folded into this step's backward, like R1 in :func:`d_step`).
    """
    check_loss(loss)
    augment = augment or _no_augment
    use_pl = regularize and path_length is not None and pl_weight > 0
    with _frozen(D), autocast(z.device, bf16):
        if use_pl:
            ws = generate(G.mapping, z, fake_c, update_emas=False)
            fake = G.synthesis(ws, update_emas=False) if _takes_update_emas(G.synthesis) else G.synthesis(ws)
        else:
            fake = generate(G, z, fake_c, update_emas=False)
        fake_logits = call_with_labels(D, augment(fake), fake_c).float()
        real_logits = None
        if loss in losses.PAIRED_KINDS:
            if real is None:
                raise ValueError(f"g_step: the {loss!r} loss pairs fakes with reals; pass real (and real_c)")
            real_logits = call_with_labels(D, augment(real.detach()), real_c).float()
    loss_value = losses.g_loss(loss, fake_logits, real_logits)
    total, stats = loss_value, {}
    if use_pl:
        penalty = path_length(fake.float(), ws)
        total = total + penalty * losses.lazy_penalty_weight(pl_weight, pl_interval)
        stats["pl"] = penalty.item()
    total.backward()
    grad_norm, skipped = apply_gradients([p for p in G.parameters() if p.requires_grad], opt_g)
    return {**stats, "loss_g": loss_value.item(), "grad_norm_g": grad_norm, "skipped_g": skipped}


def ema_beta(batch_size: int, nimg: int, ema_kimg: float, rampup: float | None = 0.05) -> float:
    """The EMA decay for one step of ``batch_size`` images: half-life ``ema_kimg`` thousand images.

    With ``rampup`` the half-life is at most ``rampup · nimg`` (images seen so far), so early, poor weights
    are forgotten quickly (StyleGAN2-ADA's rule).
    """
    half_life = ema_kimg * 1000
    if rampup is not None:
        half_life = min(half_life, nimg * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


@torch.no_grad()
def ema_update(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """``G_ema ← beta·G_ema + (1 − beta)·G`` for parameters; buffers (e.g. batch-norm statistics) are copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p.detach(), 1 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def broadcast_module(module: torch.nn.Module, params: bool = True) -> None:
    """Copies rank 0's buffers (and parameters) to every rank; a no-op without a process group."""
    if not _distributed():
        return
    tensors = list(module.buffers()) + (list(module.parameters()) if params else [])
    for t in tensors:
        dist.broadcast(t.data, src=0)
