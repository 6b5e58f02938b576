"""ganfast ops: each a ``torch.ops.ganfast.*`` registration with a public function taking ``impl=``."""
from .affine_resample import affine_resample
from .affine_sample import affine_sample
from .bias_act import ACTIVATIONS, bias_act
from .color_matrix import color_matrix
from .conv2d_resample import conv2d_resample
from .filtered_lrelu import filtered_lrelu
from .grad_penalty import grad_penalty
from .modulated_conv2d import modulated_conv2d, modulated_conv2d_bias_act
from .sample_lerp import sample_lerp
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["ACTIVATIONS", "affine_resample", "affine_sample", "bias_act", "color_matrix", "conv2d_resample",
           "downsample2d", "filter2d", "filtered_lrelu", "grad_penalty", "modulated_conv2d",
           "modulated_conv2d_bias_act", "sample_lerp", "setup_filter", "upfirdn2d", "upsample2d"]
from . import spectral_norm  # noqa: E402,F401  (registers ganfast::spectral_norm_power_ / _sigma)
