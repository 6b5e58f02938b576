"""Drop-in modules built on ganfast ops."""
from .stylegan import FullyConnectedLayer, ModulatedConv2d, SynthesisLayer, ToRGBLayer

__all__ = ["FullyConnectedLayer", "ModulatedConv2d", "SynthesisLayer", "ToRGBLayer"]
