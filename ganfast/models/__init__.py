"""Generators and discriminators built on ganfast ops: an MLP GAN for 2-D data, DCGAN and SNGAN at 16-128 px,
StyleGAN2 (mapping + skip synthesis generator, resnet discriminator), the StyleGAN3 generator (T and R) and
R3GAN's ResNeXt-style G and D.

Every generator maps latents ``z`` of shape ``(N, z_dim)`` to samples and has a ``z_dim`` attribute; every
discriminator maps samples to logits (``(N,)``, or ``(N, 1)`` for StyleGAN2 as in StyleGAN2-ADA).
:class:`ganfast.train.Trainer` takes any such pair.
"""
from .conv import DCGANDiscriminator, DCGANGenerator, SNGANDiscriminator, SNGANGenerator
from .mlp import MLPDiscriminator, MLPGenerator
from .r3gan import R3GANDiscriminator, R3GANGenerator
from .stylegan2 import MappingNetwork, StyleGAN2Discriminator, StyleGAN2Generator
from .stylegan3 import StyleGAN3Generator

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator", "MappingNetwork",
           "R3GANDiscriminator", "R3GANGenerator",
           "SNGANDiscriminator", "SNGANGenerator", "StyleGAN2Discriminator", "StyleGAN2Generator",
           "StyleGAN3Generator"]
