"""Stand-in for the newer copies' op/upfirdn2d.py: built at import, a CPU path by zero insertion + conv2d."""
import os
from collections import abc

import torch
from torch.autograd import Function
from torch.nn import functional as F
from torch.utils.cpp_extension import load

module_path = os.path.dirname(__file__)
upfirdn2d_op = load("upfirdn2d", sources=[os.path.join(module_path, "upfirdn2d.cpp"),
                                          os.path.join(module_path, "upfirdn2d_kernel.cu")])


class UpFirDn2d(Function):
    """First-order only in this stand-in (the tests run the CPU branch and ganfast's replacement)."""

    @staticmethod
    def forward(ctx, input, kernel, up, down, pad):
        n, c, h, w = input.shape
        ctx.save_for_backward(kernel)
        ctx.args = (up, down, pad, (h, w))
        out = upfirdn2d_op.upfirdn2d(input.reshape(-1, h, w, 1), kernel, *up, *down, *pad)
        return out.view(n, c, out.shape[1], out.shape[2])

    @staticmethod
    def backward(ctx, grad_output):
        (kernel,) = ctx.saved_tensors
        (up_x, up_y), (down_x, down_y), (px0, px1, py0, py1), (h, w) = ctx.args
        n, c, out_h, out_w = grad_output.shape
        kh, kw = kernel.shape
        g_pad = (kw - px0 - 1, w * up_x - out_w * down_x + px0 - up_x + 1,
                 kh - py0 - 1, h * up_y - out_h * down_y + py0 - up_y + 1)
        grad = upfirdn2d_op.upfirdn2d(grad_output.reshape(-1, out_h, out_w, 1), kernel.flip([0, 1]), down_x, down_y,
                                      up_x, up_y, *g_pad)
        return grad.view(n, c, h, w), None, None, None, None


def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
    up = tuple(up) if isinstance(up, abc.Iterable) else (up, up)
    down = tuple(down) if isinstance(down, abc.Iterable) else (down, down)
    pad = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else tuple(pad)
    if input.device.type == "cpu":
        return upfirdn2d_native(input, kernel, *up, *down, *pad)
    return UpFirDn2d.apply(input, kernel, up, down, pad)


def upfirdn2d_native(input, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
    """Each channel as a one-channel image: zero insertion, padding, conv2d with the flipped kernel, decimation."""
    _, channel, in_h, in_w = input.shape
    out = input.reshape(-1, in_h, 1, in_w, 1)
    out = F.pad(out, [0, up_x - 1, 0, 0, 0, up_y - 1]).reshape(-1, 1, in_h * up_y, in_w * up_x)
    out = F.pad(out, [max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
    out = out[:, :, max(-pad_y0, 0):out.shape[2] - max(-pad_y1, 0), max(-pad_x0, 0):out.shape[3] - max(-pad_x1, 0)]
    kernel_h, kernel_w = kernel.shape
    out = F.conv2d(out, torch.flip(kernel, [0, 1]).view(1, 1, kernel_h, kernel_w))
    out = out[:, :, ::down_y, ::down_x]
    return out.reshape(-1, channel, out.shape[2], out.shape[3])
