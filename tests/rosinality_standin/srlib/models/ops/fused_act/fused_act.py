"""Stand-in for basicsr's older models/ops/fused_act/fused_act.py: the prebuilt extension is imported if present,
and its absence is hidden until the first call (NameError: name 'fused_act_ext' is not defined)."""
import torch
from torch import nn
from torch.autograd import Function

try:
    from . import fused_act_ext
except ImportError:
    pass


class FusedLeakyReLUFunction(Function):
    @staticmethod
    def forward(ctx, input, bias, negative_slope, scale):
        return fused_act_ext.fused_bias_act(input, bias, input.new_empty(0), 3, 0, negative_slope, scale)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel, negative_slope=0.2, scale=2 ** 0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, input):
        return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)


def fused_leaky_relu(input, bias, negative_slope=0.2, scale=2 ** 0.5):
    return FusedLeakyReLUFunction.apply(input, bias, negative_slope, scale)
