"""Spectrally normalised layers that fold 1/σ into the output: ``layer(x) = op(x, W) / σ + b`` instead of
``op(x, W / σ) + b``, so W/σ is never materialised (nor its backward); gradients are the same to any order.

State is that of ``torch.nn.utils.spectral_norm(nn.<Layer>(...))``: parameter ``weight_orig``, buffers ``weight_u`` /
``weight_v`` (drawn with the same ``normal_`` calls, so the same seed gives the same layer), the same state_dict
keys and version metadata, so checkpoints of torch-SN layers load directly. ``layer.weight`` is the raw W
(``weight_orig`` detached, sharing its storage, so in-place initialisers work on it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .utils._sn_state import default_dim, sigma
from .utils.spectral_norm import attach

__all__ = ["SNConv2d", "SNConvTranspose2d", "SNEmbedding", "SNLinear"]


class _SpectralNormLayer:
    """Mixin for an ``nn`` layer whose ``weight`` is spectrally normalised by folding 1/σ into its output."""

    def _init_spectral_norm(self, n_power_iterations: int, eps: float, impl: str | None) -> None:
        self._ganfast_sn = attach(self, "weight", n_power_iterations, default_dim(self), eps, impl)

    def __getattr__(self, name: str):
        if name == "weight" and "weight_orig" in self.__dict__.get("_parameters", {}):
            return self._parameters["weight_orig"].detach()
        return super().__getattr__(name)

    def sigma(self) -> torch.Tensor:
        """σ for this forward (power iteration in training mode), differentiable in ``weight_orig``."""
        return sigma(self._ganfast_sn.unit(self, self.training))

    def _scaled(self, out: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """out / σ + bias (bias along ``channel_dim``), in one pass when there is a bias."""
        s = self.sigma()
        bias = getattr(self, "bias", None)
        if bias is None:
            return out / s
        shape = [1] * out.ndim
        shape[channel_dim] = -1
        return torch.addcdiv(bias.view(shape), out, s)

    def extra_repr(self) -> str:
        fn = self._ganfast_sn
        return super().extra_repr() + f", n_power_iterations={fn.n_power_iterations}, eps={fn.eps}"


class SNLinear(_SpectralNormLayer, nn.Linear):
    """``spectral_norm(nn.Linear(...))`` computing ``x Wᵀ / σ + b``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 n_power_iterations: int = 1, eps: float = 1e-12, impl: str | None = None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_spectral_norm(n_power_iterations, eps, impl)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._scaled(F.linear(input, self.weight_orig), -1)


class SNConv2d(_SpectralNormLayer, nn.Conv2d):
    """``spectral_norm(nn.Conv2d(...))`` computing ``conv2d(x, W) / σ + b``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 n_power_iterations: int = 1, eps: float = 1e-12, impl: str | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._init_spectral_norm(n_power_iterations, eps, impl)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._scaled(self._conv_forward(input, self.weight_orig, None), input.ndim - 3)


class SNConvTranspose2d(_SpectralNormLayer, nn.ConvTranspose2d):
    """``spectral_norm(nn.ConvTranspose2d(...))`` (normalised along the output channels, dim 1) computing
    ``conv_transpose2d(x, W) / σ + b``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None,
                 dtype=None, *, n_power_iterations: int = 1, eps: float = 1e-12, impl: str | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device, dtype)
        self._init_spectral_norm(n_power_iterations, eps, impl)

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        out = F.conv_transpose2d(input, self.weight_orig, None, self.stride, self.padding, output_padding,
                                 self.groups, self.dilation)
        return self._scaled(out, input.ndim - 3)


class SNEmbedding(_SpectralNormLayer, nn.Embedding):
    """``spectral_norm(nn.Embedding(...))`` computing ``embedding(idx, W) / σ`` (max_norm and sparse gradients,
    which act on the raw W, are not supported)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight=None, _freeze: bool = False, device=None, dtype=None, *,
                 n_power_iterations: int = 1, eps: float = 1e-12, impl: str | None = None) -> None:
        if max_norm is not None:
            raise ValueError("SNEmbedding: max_norm is not supported (it would renormalise the raw weight)")
        if sparse:
            raise ValueError("SNEmbedding: sparse=True is not supported (σ's gradient is dense)")
        super().__init__(num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq,
                         sparse, _weight, _freeze, device, dtype)
        self._init_spectral_norm(n_power_iterations, eps, impl)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = F.embedding(input, self.weight_orig, self.padding_idx, None, self.norm_type, self.scale_grad_by_freq)
        return out / self.sigma()
