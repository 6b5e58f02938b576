"""ganfast: fused Triton / CUDA / C++ kernels for GAN training and sampling in PyTorch.

    import ganfast
    y = ganfast.ops.bias_act(x, b, act="lrelu", clamp=256)   # a drop-in for StyleGAN2-ADA's bias_act
    ganfast.info()                                            # what was built and which kernel each op uses
"""
__version__ = "0.1.0"

from . import ops, reference  # noqa: E402  (registers the torch.ops.ganfast.* ops)
from . import losses  # noqa: E402
from ._dispatch import ImplNotSupportedError, use_impl  # noqa: E402
from .info import info  # noqa: E402
from . import nn  # noqa: E402
from .nn.utils import convert_spectral_norm  # noqa: E402
from .patch import StyleGANPatch, patch_stylegan  # noqa: E402
from .sampling import sample, write_samples  # noqa: E402
from .validate import validate  # noqa: E402

__all__ = ["ImplNotSupportedError", "StyleGANPatch", "convert_spectral_norm", "info", "losses", "nn", "ops",
           "patch_stylegan", "reference", "sample", "use_impl", "validate", "write_samples", "__version__"]
