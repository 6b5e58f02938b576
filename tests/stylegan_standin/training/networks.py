"""Stand-in networks: modulated_conv2d written as StyleGAN2 does (per-sample weights, grouped convolution), and
a synthesis-layer-like function that uses it with bias_act through the module, as the NVlabs code does."""
import torch

from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, fused_modconv=True):
    batch = x.shape[0]
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    x = conv2d_resample.conv2d_resample(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, *weight.shape[1:]),
                                        f=resample_filter, up=up, down=down, padding=padding, groups=batch,
                                        flip_weight=flip_weight)
    x = x.reshape(batch, -1, *x.shape[2:])
    return x if noise is None else x + noise


def synthesis_layer(x, weight, styles, bias, noise, f, up):
    x = modulated_conv2d(x, weight, styles, noise, up=up, padding=1, resample_filter=f, flip_weight=up == 1)
    x = bias_act.bias_act(x, bias, act="lrelu", gain=2 ** 0.5, clamp=256)
    return upfirdn2d.filter2d(x, f)


def to_rgb(x, weight, styles, bias, conv_clamp=None):
    """StyleGAN2-ADA's ToRGBLayer: a 1x1 modulated conv without demodulation, then a linear bias_act."""
    x = modulated_conv2d(x, weight, styles, demodulate=False)
    return bias_act.bias_act(x, bias, clamp=conv_clamp)


def make_filter():
    return upfirdn2d.setup_filter([1, 3, 3, 1])


def unused():
    return torch.zeros(1)
