"""ganfast ops: each a ``torch.ops.ganfast.*`` registration with a public function taking ``impl=``."""
from .bias_act import ACTIVATIONS, bias_act
from .grad_penalty import grad_penalty
from .sample_lerp import sample_lerp

__all__ = ["ACTIVATIONS", "bias_act", "grad_penalty", "sample_lerp"]
from . import spectral_norm  # noqa: E402,F401  (registers ganfast::spectral_norm_power_ / _sigma)
