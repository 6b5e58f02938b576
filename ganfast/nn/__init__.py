"""Drop-in modules built on ganfast ops: StyleGAN2 layers, StyleGAN3's alias-free layers and filter design,
spectrally normalised layers, and ``ganfast.nn.utils`` (spectral norm hook/parametrization)."""
from . import utils
from .spectral_norm_layers import SNConv2d, SNConvTranspose2d, SNEmbedding, SNLinear
from .stylegan import FullyConnectedLayer, ModulatedConv2d, SynthesisLayer, ToRGBLayer
from .stylegan3 import AliasFreeSynthesisLayer, SynthesisInput, design_lowpass_filter, layer_schedule

__all__ = ["AliasFreeSynthesisLayer", "FullyConnectedLayer", "ModulatedConv2d", "SNConv2d", "SNConvTranspose2d",
           "SNEmbedding", "SNLinear", "SynthesisInput", "SynthesisLayer", "ToRGBLayer", "design_lowpass_filter",
           "layer_schedule", "utils"]
