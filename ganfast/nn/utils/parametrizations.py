"""Spectral normalization, parametrization flavour: a drop-in for ``torch.nn.utils.parametrizations.spectral_norm``.

Same registration as torch's (``parametrizations.<name>.original``, buffers ``parametrizations.<name>.0._u`` /
``._v`` drawn with the same ``normal_`` calls, 15 power iterations at registration, 1-D weights simply
normalised), so state_dicts are interchangeable; the iterations and σ run on ganfast's kernels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ._sn_state import SNUnit, default_dim, run_units, sigma

__all__ = ["SpectralNormParametrization", "spectral_norm"]

_INIT_ITERATIONS = 15  # torch's registration-time iterations


class SpectralNormParametrization(nn.Module):
    """W ↦ W / σ(W) with the power iteration on ganfast's kernels (torch's ``_SpectralNorm``, same buffers)."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12,
                 impl: str | None = None, uv: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        super().__init__()
        ndim = weight.ndim
        if not -ndim <= dim < ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [-{ndim}, {ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim % ndim
        self.eps = eps
        self.impl = impl
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            if uv is not None:  # adopting a torch parametrization's vectors
                self.register_buffer("_u", uv[0])
                self.register_buffer("_v", uv[1])
                return
            h = weight.shape[self.dim]
            u = weight.new_empty(h).normal_(0, 1)
            v = weight.new_empty(weight.numel() // h).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
            run_units([SNUnit(self, weight, self._u, self._v, self.dim, _INIT_ITERATIONS, eps, True, impl)])

    @classmethod
    def adopt(cls, torch_sn: nn.Module, weight: torch.Tensor, impl: str | None = None) -> "SpectralNormParametrization":
        """A ganfast parametrization taking over torch's ``_SpectralNorm`` (its settings and its u, v)."""
        uv = (torch_sn._u, torch_sn._v) if weight.ndim > 1 else None
        new = cls(weight, getattr(torch_sn, "n_power_iterations", 1), torch_sn.dim, torch_sn.eps, impl, uv)
        return new.train(torch_sn.training)

    def unit(self, weight: torch.Tensor) -> SNUnit:
        """``weight`` (≥ 2-D) as the kernels see it in this forward (iterations only in training mode)."""
        return SNUnit(self, weight, self._u, self._v, self.dim, self.n_power_iterations if self.training else 0,
                      self.eps, True, self.impl)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        return weight / sigma(self.unit(weight))

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None, impl: str | None = None) -> nn.Module:
    """Drop-in for ``torch.nn.utils.parametrizations.spectral_norm``: same arguments, state_dict keys and u/v
    evolution; ``impl`` picks the kernel (None/"auto", "ext" or "ref"). Returns ``module``."""
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    parametrize.register_parametrization(
        module, name, SpectralNormParametrization(weight, n_power_iterations,
                                                  default_dim(module) if dim is None else dim, eps, impl))
    return module
