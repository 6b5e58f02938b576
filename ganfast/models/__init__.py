"""Generators and discriminators: an MLP GAN for 2-D data, DCGAN and SNGAN at 16/32 px.

Every generator maps latents ``z`` of shape ``(N, z_dim)`` to samples and has a ``z_dim`` attribute; every
discriminator maps samples to logits of shape ``(N,)``. :class:`ganfast.train.Trainer` takes any such pair.
"""
from .conv import DCGANDiscriminator, DCGANGenerator, SNGANDiscriminator, SNGANGenerator
from .mlp import MLPDiscriminator, MLPGenerator

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator",
           "SNGANDiscriminator", "SNGANGenerator"]
