"""Drop-in modules: spectrally normalised layers, and ``ganfast.nn.utils`` (spectral norm hook/parametrization)."""
from . import utils
from .spectral_norm_layers import SNConv2d, SNConvTranspose2d, SNEmbedding, SNLinear

__all__ = ["SNConv2d", "SNConvTranspose2d", "SNEmbedding", "SNLinear", "utils"]
