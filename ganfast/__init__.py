"""ganfast: fused Triton / CUDA / C++ kernels for GAN training and sampling in PyTorch.

    import ganfast
    y = ganfast.ops.bias_act(x, b, act="lrelu", clamp=256)   # a drop-in for StyleGAN2-ADA's bias_act
    ganfast.info()                                            # what was built and which kernel each op uses
"""
from . import losses, malloc, nn, ops, reference  # ops registers the torch.ops.ganfast.* ops
from ._dispatch import ImplNotSupportedError, use_impl
from ._version import __version__
from .info import info
from .nn.utils import convert_spectral_norm
from .patch import RosinalityPatch, StyleGANPatch, patch_rosinality, patch_stylegan
from .sampling import sample, write_samples
from .validate import validate

__all__ = ["ImplNotSupportedError", "RosinalityPatch", "StyleGANPatch", "convert_spectral_norm", "info", "losses",
           "malloc", "nn", "ops", "patch_rosinality", "patch_stylegan", "reference", "sample", "use_impl", "validate",
           "write_samples", "__version__"]
