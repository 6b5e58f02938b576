"""Reference adversarial losses and gradient penalties: plain PyTorch, autograd does all differentiation.

The oracle for :mod:`ganfast.losses` and for the fused ops in ``ganfast.ops.grad_penalty`` /
``ganfast.ops.sample_lerp``. Shapes: the first dimension of every image-like tensor is the batch.

    grad_penalty(g, center)   per sample b:  s_b = Σ g_b²,  n_b = √s_b,
                              term_b = s_b (center None: R1/R2)  or  (n_b − center)² (WGAN-GP/DRAGAN)
    sample_lerp(a, b, eps)    eps_b · a + (1 − eps_b) · b          (the WGAN-GP interpolation)
    rpgan_r1_r2(D, real, fake, gamma, c)   R3GAN's discriminator step, two passes (D on reals, D on fakes)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOSS_KINDS = ("logistic", "hinge", "wasserstein", "least_squares", "rpgan")
PAIRED_KINDS = ("rpgan",)  # losses of the pair (real_b, fake_b): both sides needed, in D and in G


# ---- the fused passes, unfused ---------------------------------------------------------------------------------

def grad_penalty(g: torch.Tensor, center: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(term, norm), each of shape (B,), computed in float32 for half-precision ``g`` (float64 stays)."""
    flat = g.reshape(g.shape[0], -1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    norm = torch.linalg.vector_norm(flat, dim=1)  # its gradient at 0 is 0 (a subgradient), as the kernels'
    term = flat.square().sum(dim=1) if center is None else (norm - center).square()
    return term, norm


def sample_lerp(a: torch.Tensor, b: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """eps_b · a + (1 − eps_b) · b with ``eps`` of shape (B,) (or anything with B elements)."""
    return torch.lerp(b, a, eps.reshape([-1] + [1] * (a.ndim - 1)).to(a.dtype))


# ---- adversarial losses ----------------------------------------------------------------------------------------

def d_loss(kind: str, real_logits: torch.Tensor | None, fake_logits: torch.Tensor | None) -> torch.Tensor:
    """The discriminator's loss: mean over the real logits' term plus mean over the fake logits' term; RpGAN
    (relativistic pairing): mean_b softplus(−(real_b − fake_b))."""
    if kind == "rpgan":
        return F.softplus(fake_logits - real_logits).mean()
    parts = []
    if real_logits is not None:
        parts.append({"logistic": lambda r: F.softplus(-r), "hinge": lambda r: F.relu(1 - r),
                      "wasserstein": lambda r: -r,
                      "least_squares": lambda r: 0.5 * (r - 1).square()}[kind](real_logits).mean())
    if fake_logits is not None:
        parts.append({"logistic": lambda f: F.softplus(f), "hinge": lambda f: F.relu(1 + f),
                      "wasserstein": lambda f: f,
                      "least_squares": lambda f: 0.5 * f.square()}[kind](fake_logits).mean())
    return sum(parts[1:], parts[0])


def g_loss(kind: str, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
    """The generator's loss on the discriminator's logits for generated samples (mean); RpGAN also takes the
    real logits: mean_b softplus(−(fake_b − real_b))."""
    if kind == "rpgan":
        return F.softplus(real_logits - fake_logits).mean()
    return {"logistic": lambda f: F.softplus(-f), "hinge": lambda f: -f, "wasserstein": lambda f: -f,
            "least_squares": lambda f: 0.5 * (f - 1).square()}[kind](fake_logits).mean()


# ---- penalties -------------------------------------------------------------------------------------------------

def r1_penalty(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """mean_b Σ (∂ Σ outputs / ∂ inputs)²_b  (multiply by γ/2 for StyleGAN's R1)."""
    (g,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return grad_penalty(g)[0].mean()


r2_penalty = r1_penalty


def _norm_penalty(critic, x_hat: torch.Tensor, center: float) -> torch.Tensor:
    x_hat = x_hat.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return grad_penalty(g, center)[0].mean()


def wgan_gp(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor, center: float = 1.0) -> torch.Tensor:
    """mean_b (‖∇critic(x̂)_b‖₂ − center)² at x̂ = eps_b · real + (1 − eps_b) · fake."""
    return _norm_penalty(critic, sample_lerp(real.detach(), fake.detach(), eps), center)


def dragan_penalty(critic, real: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor,
                   center: float = 1.0) -> torch.Tensor:
    """WGAN-GP between ``real`` and its perturbation real + 0.5 · std(real) · noise (noise ~ U[0, 1))."""
    real = real.detach()
    return wgan_gp(critic, real, real + 0.5 * real.std() * noise, eps, center)


def path_length_penalty(images: torch.Tensor, ws: torch.Tensor, mean: torch.Tensor, decay: float,
                        noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2's path-length penalty: (mean_b (L_b − m)², m) with L_b = √(mean over ws of Σ ∂(Σ images·noise
    /√(H·W))/∂w²) and m = lerp(mean, mean_b L_b, decay) (the gradient flows through m, as in StyleGAN2-ADA)."""
    scaled = noise / math.sqrt(images[0, 0].numel())
    (g,) = torch.autograd.grad((images * scaled).sum(), ws, create_graph=True)
    num_ws = ws[0].numel() // ws.shape[-1] if ws.ndim > 1 else 1
    lengths = (g.reshape(g.shape[0], -1).square().sum(dim=1) / num_ws).sqrt()
    new_mean = mean.to(lengths).lerp(lengths.mean(), decay)
    return (lengths - new_mean).square().mean(), new_mean.detach()


def rpgan_r1_r2(D, real: torch.Tensor, fake: torch.Tensor, gamma: float, c: torch.Tensor | None = None):
    """R3GAN's discriminator loss as its code base computes it, in two passes: with x_r, x_f the detached inputs,
    l_r = D(x_r, c), l_f = D(x_f, c), R1_b = Σ (∂Σl_r/∂x_r)²_b, R2_b = Σ (∂Σl_f/∂x_f)²_b,
    loss = mean_b [softplus(−(l_r − l_f)) + γ/2 · (R1_b + R2_b)]. Returns (loss, l_r, l_f, R1, R2)."""
    x_r, x_f = real.detach().requires_grad_(True), fake.detach().requires_grad_(True)
    l_r, l_f = (D(x) if c is None else D(x, c) for x in (x_r, x_f))
    r1, r2 = (grad_penalty(torch.autograd.grad(logits.sum(), x, create_graph=True)[0])[0]
              for logits, x in ((l_r, x_r), (l_f, x_f)))
    loss = (F.softplus(l_f - l_r).reshape(-1) + gamma / 2 * (r1 + r2).to(l_r.dtype)).mean()
    return loss, l_r, l_f, r1, r2
