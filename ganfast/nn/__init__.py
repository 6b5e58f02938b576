"""Drop-in modules built on ganfast ops: StyleGAN2 layers, spectrally normalised layers, and ``ganfast.nn.utils``
(spectral norm hook/parametrization)."""
from . import utils
from .spectral_norm_layers import SNConv2d, SNConvTranspose2d, SNEmbedding, SNLinear
from .stylegan import FullyConnectedLayer, ModulatedConv2d, SynthesisLayer, ToRGBLayer

__all__ = ["FullyConnectedLayer", "ModulatedConv2d", "SNConv2d", "SNConvTranspose2d", "SNEmbedding", "SNLinear",
           "SynthesisLayer", "ToRGBLayer", "utils"]
