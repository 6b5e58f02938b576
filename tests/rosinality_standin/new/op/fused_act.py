"""Stand-in for the newer copies' op/fused_act.py: the extension is built when the module is imported."""
import os

import torch
from torch import nn
from torch.autograd import Function
from torch.nn import functional as F
from torch.utils.cpp_extension import load

module_path = os.path.dirname(__file__)
fused = load("fused", sources=[os.path.join(module_path, "fused_bias_act.cpp"),
                               os.path.join(module_path, "fused_bias_act_kernel.cu")])


class FusedLeakyReLUFunctionBackward(Function):
    @staticmethod
    def forward(ctx, grad_output, out, bias, negative_slope, scale):
        ctx.save_for_backward(out)
        ctx.negative_slope, ctx.scale = negative_slope, scale
        grad_input = fused.fused_bias_act(grad_output.contiguous(), grad_output.new_empty(0), out, 3, 1,
                                          negative_slope, scale)
        grad_bias = grad_input.sum([0, *range(2, grad_input.ndim)]).detach() if bias else None
        return grad_input, grad_bias

    @staticmethod
    def backward(ctx, gradgrad_input, gradgrad_bias):
        (out,) = ctx.saved_tensors
        if gradgrad_bias is None:
            gradgrad_bias = gradgrad_input.new_empty(0)
        gradgrad_out = fused.fused_bias_act(gradgrad_input.contiguous(), gradgrad_bias, out, 3, 1,
                                            ctx.negative_slope, ctx.scale)
        return gradgrad_out, None, None, None, None


class FusedLeakyReLUFunction(Function):
    @staticmethod
    def forward(ctx, input, bias, negative_slope, scale):
        ctx.bias = bias is not None
        out = fused.fused_bias_act(input, bias if bias is not None else input.new_empty(0), input.new_empty(0), 3, 0,
                                   negative_slope, scale)
        ctx.save_for_backward(out)
        ctx.negative_slope, ctx.scale = negative_slope, scale
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        grad_input, grad_bias = FusedLeakyReLUFunctionBackward.apply(grad_output, out, ctx.bias, ctx.negative_slope,
                                                                     ctx.scale)
        return grad_input, grad_bias if ctx.bias else None, None, None


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, input):
        return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)


def fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5):
    if input.device.type == "cpu":  # the copies' CPU branch: the slope is fixed at 0.2
        if bias is not None:
            return F.leaky_relu(input + bias.view(1, bias.shape[0], *[1] * (input.ndim - 2)), 0.2) * scale
        return F.leaky_relu(input, 0.2) * scale
    return FusedLeakyReLUFunction.apply(input.contiguous(), bias, negative_slope, scale)
