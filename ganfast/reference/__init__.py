"""Pure-PyTorch reference implementations: the oracle for every test and benchmark.

Each function here is written for clarity, with autograd doing all differentiation; the fused kernels in
``ganfast.ops`` must agree with them.
"""
from .bias_act import ACTIVATIONS, ActivationSpec, bias_act

__all__ = ["ACTIVATIONS", "ActivationSpec", "bias_act"]
from . import spectral_norm  # noqa: E402,F401
