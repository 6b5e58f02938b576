"""ganfast ops: each a ``torch.ops.ganfast.*`` registration with a public function taking ``impl=``."""
from .bias_act import ACTIVATIONS, bias_act
from .modulated_conv2d import modulated_conv2d, modulated_conv2d_bias_act

__all__ = ["ACTIVATIONS", "bias_act", "modulated_conv2d", "modulated_conv2d_bias_act"]
