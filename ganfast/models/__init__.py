"""GAN models built on ganfast ops."""
from .stylegan2 import MappingNetwork, StyleGAN2Discriminator, StyleGAN2Generator

__all__ = ["MappingNetwork", "StyleGAN2Discriminator", "StyleGAN2Generator"]
