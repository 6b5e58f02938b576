"""Drop-ins for other code bases, one module per family: ``nvlabs`` (StyleGAN2-ADA / StyleGAN3)."""
from .nvlabs import StyleGANPatch, patch_stylegan

__all__ = ["StyleGANPatch", "patch_stylegan"]
