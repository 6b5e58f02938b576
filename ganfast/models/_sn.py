"""The one place models take spectral normalization from."""
import torch


def spectral_norm(module: torch.nn.Module) -> torch.nn.Module:
    """Spectral normalization of ``module.weight`` (one power iteration per training forward)."""
    return torch.nn.utils.parametrizations.spectral_norm(module)
