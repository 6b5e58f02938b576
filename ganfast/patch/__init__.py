"""Drop-ins for other code bases, one module per family: ``nvlabs`` (StyleGAN2-ADA / StyleGAN3), ``r3gan``
(R3GAN's one-pass D step, applied by ``patch_stylegan``) and ``rosinality`` (stylegan2-pytorch's ``op`` package and
its copies)."""
from .nvlabs import StyleGANPatch, patch_stylegan
from .rosinality import RosinalityPatch, patch_rosinality

__all__ = ["RosinalityPatch", "StyleGANPatch", "patch_rosinality", "patch_stylegan"]
