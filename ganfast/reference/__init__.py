"""Pure-PyTorch reference implementations: the oracle for every test and benchmark.

Each function here is written for clarity, with autograd doing all differentiation; the fused kernels in
``ganfast.ops`` must agree with them.
"""
from . import losses
from .bias_act import ACTIVATIONS, ActivationSpec, bias_act
from .conv2d_resample import conv2d_resample
from .filtered_lrelu import filtered_lrelu
from .modulated_conv2d import modulated_conv2d
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["ACTIVATIONS", "ActivationSpec", "bias_act", "conv2d_resample", "downsample2d", "filter2d", "filtered_lrelu",
           "losses", "modulated_conv2d", "setup_filter", "upfirdn2d", "upsample2d"]
from . import spectral_norm  # noqa: E402,F401
