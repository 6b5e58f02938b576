"""Stand-in for StyleGAN3's alias-free networks: a synthesis-layer-like function (modulated convolution with
torch's grouped conv2d, then filtered_lrelu through its module, as the NVlabs code calls it), and a name bound by
import that the patch must rebind."""
import math

import torch
from torch_utils.ops import filtered_lrelu
from torch_utils.ops.filtered_lrelu import filtered_lrelu as flrelu  # noqa: F401


def modulated_conv2d(x, w, s, demodulate=True, padding=0, input_gain=None):
    batch = x.shape[0]
    w = w[None] * s[:, None, :, None, None]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    if input_gain is not None:
        w = w * input_gain
    y = torch.nn.functional.conv2d(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, *w.shape[2:]), padding=padding,
                                   groups=batch)
    return y.reshape(batch, -1, *y.shape[2:])


def synthesis_layer(x, weight, styles, bias, up_filter, down_filter, up, down, padding, magnitude):
    x = modulated_conv2d(x, weight, styles, padding=weight.shape[-1] - 1, input_gain=magnitude.rsqrt())
    return filtered_lrelu.filtered_lrelu(x=x, fu=up_filter, fd=down_filter, b=bias, up=up, down=down,
                                         padding=padding, gain=math.sqrt(2), slope=0.2, clamp=256)
