"""What rosinality's compiled extension computes, in plain PyTorch (no autograd: their Functions call it)."""
import torch
import torch.nn.functional as F


def fused_bias_act(input, bias, refer, act, grad, alpha, scale):
    """act 3 (leaky ReLU): grad 0 gives lrelu(input + bias) * scale; grad 1 scales input by the mask of refer."""
    assert act == 3 and grad in (0, 1)
    x = input + bias.view(1, -1, *[1] * (input.ndim - 2)) if bias.numel() else input
    positive = (x if grad == 0 else refer) > 0
    return torch.where(positive, x, x * alpha) * scale


def upfirdn2d(input, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
    """input (B, H, W, minor): zero-insert, pad (negative: crop), convolve with kernel, keep every down-th."""
    b, h, w, minor = input.shape
    x = input.permute(0, 3, 1, 2).reshape(b * minor, 1, h, w)
    x = _zero_insert(x, up_x, up_y)
    x = F.pad(x, [max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
    x = x[:, :, max(-pad_y0, 0):x.shape[2] - max(-pad_y1, 0), max(-pad_x0, 0):x.shape[3] - max(-pad_x1, 0)]
    x = F.conv2d(x, kernel.flip([0, 1])[None, None].to(x.dtype))[:, :, ::down_y, ::down_x]
    return x.reshape(b, minor, x.shape[2], x.shape[3]).permute(0, 2, 3, 1)


def _zero_insert(x, up_x, up_y):
    out = x.new_zeros(x.shape[0], 1, x.shape[2] * up_y, x.shape[3] * up_x)
    out[:, :, ::up_y, ::up_x] = x
    return out
