"""Drop-ins for other code bases, one module per family: ``nvlabs`` (StyleGAN2-ADA / StyleGAN3), ``r3gan``
(R3GAN's one-pass D step, applied by ``patch_stylegan``)."""
from .nvlabs import StyleGANPatch, patch_stylegan

__all__ = ["StyleGANPatch", "patch_stylegan"]
