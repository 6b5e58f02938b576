"""The one place models take spectral normalization from: ganfast's drop-in for torch's parametrization."""
import torch

from ..nn.utils.parametrizations import spectral_norm as _ganfast_spectral_norm


def spectral_norm(module: torch.nn.Module) -> torch.nn.Module:
    """Spectral normalization of ``module.weight`` (one power iteration per training forward)."""
    return _ganfast_spectral_norm(module)
