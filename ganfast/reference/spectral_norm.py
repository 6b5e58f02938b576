"""Spectral normalization (Miyato et al. 2018) in plain PyTorch: the oracle for ganfast's kernels.

A weight W is viewed as the matrix W_mat (h × w): dimension ``dim`` moved first, the rest flattened. With
normalize(x) = x / max(‖x‖₂, eps), one power iteration is, in torch's two orders:

    hook flavour (torch.nn.utils.spectral_norm):                   v ← normalize(W_matᴴ u),  u ← normalize(W_mat v)
    parametrization flavour (torch.nn.utils.parametrizations):     u ← normalize(W_mat v),  v ← normalize(W_matᴴ u)

and σ = uᴴ W_mat v (torch.vdot), the estimate of W's largest singular value; the normalised weight is W / σ.
For real weights ᴴ is the transpose; complex weights follow torch's parametrization (conjugate transpose, vdot).
"""
from __future__ import annotations

import torch

__all__ = ["weight_matrix", "normalize", "power_iteration", "spectral_norm_sigma"]


def weight_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """``weight`` as the h × w matrix of spectral normalization (``dim`` first, the rest flattened)."""
    if dim != 0:
        weight = weight.permute(dim, *[d for d in range(weight.ndim) if d != dim])
    return weight.reshape(weight.shape[0], -1)


def normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / max(‖x‖₂, eps) (torch.nn.functional.normalize of a vector)."""
    return x / x.norm().clamp_min(eps)


@torch.no_grad()
def power_iteration(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int, n_power_iterations: int,
                    eps: float, u_first: bool) -> torch.Tensor:
    """Runs ``n_power_iterations`` iterations, writing u and v in place; returns σ = uᵀ W_mat v (no grad).

    ``u_first``: the parametrization flavour's order (u, then v); otherwise the hook flavour's (v, then u).
    """
    w_mat = weight_matrix(weight, dim)
    for _ in range(n_power_iterations):
        if u_first:
            u.copy_(normalize(w_mat @ v, eps))
            v.copy_(normalize(w_mat.mH @ u, eps))
        else:
            v.copy_(normalize(w_mat.mH @ u, eps))
            u.copy_(normalize(w_mat @ v, eps))
    return torch.vdot(u, w_mat @ v)


def spectral_norm_sigma(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int) -> torch.Tensor:
    """σ = uᴴ W_mat v, differentiable in ``weight`` (u and v are constants)."""
    return torch.vdot(u, weight_matrix(weight, dim) @ v)
