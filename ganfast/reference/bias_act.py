"""Reference bias + activation + gain + clamp, with StyleGAN2-ADA's ``bias_act`` semantics.

    y = clamp(act(x + b) * gain, -clamp, clamp)

with ``b`` broadcast along ``dim``. Where |act(x + b) * gain| reaches ``clamp`` the output is the constant
±clamp, so no gradient flows there.

The piecewise-linear activations (linear, relu, lrelu) are written with ``torch.where`` on a detached
condition, so their first derivative is a function of the incoming gradient alone: differentiating it again
gives ``None`` (not zeros) for x and b, as StyleGAN2-ADA's CUDA op does. That matters: Adam skips a
parameter whose gradient is None but steps it on a zero gradient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ActivationSpec:
    code: int  # the kernels' activation code (csrc/bias_act.h: enum Act)
    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float
    has_2nd_grad: bool  # False: the second derivative is zero almost everywhere


ACTIVATIONS: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(0, lambda x, alpha: x, 0.0, 1.0, False),
    # relu(NaN) = NaN, relu(-inf) = 0 and relu'(0) = 0 as F.relu; lrelu equals F.leaky_relu, derivative included
    "relu": ActivationSpec(1, lambda x, alpha: torch.where(x > 0, x, x.detach().clamp(min=0)), 0.0, math.sqrt(2),
                           False),
    "lrelu": ActivationSpec(2, lambda x, alpha: torch.where(x > 0, x, x * alpha), 0.2, math.sqrt(2), False),
    "tanh": ActivationSpec(3, lambda x, alpha: torch.tanh(x), 0.0, 1.0, True),
    "sigmoid": ActivationSpec(4, lambda x, alpha: torch.sigmoid(x), 0.0, 1.0, True),
    "elu": ActivationSpec(5, lambda x, alpha: F.elu(x), 0.0, 1.0, True),
    "selu": ActivationSpec(6, lambda x, alpha: F.selu(x), 0.0, 1.0, True),
    "softplus": ActivationSpec(7, lambda x, alpha: F.softplus(x), 0.0, 1.0, True),
    "swish": ActivationSpec(8, lambda x, alpha: torch.sigmoid(x) * x, 0.0, math.sqrt(2), True),
}


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """The oracle for :func:`ganfast.ops.bias_act` (same arguments, no validation beyond the essentials)."""
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    if b is not None:
        x = x + b.reshape([-1 if i == dim % x.ndim else 1 for i in range(x.ndim)])
    y = spec.func(x, alpha)
    if gain != 1:
        y = y * gain
    if clamp is not None and clamp >= 0:
        y = torch.where(y.abs() < clamp, y, y.detach().clamp(-clamp, clamp))
    return y
