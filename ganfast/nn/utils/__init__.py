"""Drop-ins for ``torch.nn.utils``' spectral normalization (hook and parametrization flavours)."""
from . import parametrizations
from .spectral_norm import convert_spectral_norm, remove_spectral_norm, spectral_norm, spectral_norm_step

__all__ = ["convert_spectral_norm", "parametrizations", "remove_spectral_norm", "spectral_norm", "spectral_norm_step"]
