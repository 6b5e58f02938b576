"""Stand-in for basicsr's older models/ops/upfirdn2d/upfirdn2d.py: the extension imported if present."""
from torch.autograd import Function

try:
    from . import upfirdn2d_ext
except ImportError:
    pass


class UpFirDn2d(Function):
    @staticmethod
    def forward(ctx, input, kernel, up, down, pad):
        n, c, h, w = input.shape
        out = upfirdn2d_ext.upfirdn2d(input.reshape(-1, h, w, 1), kernel, *up, *down, *pad)
        return out.view(n, c, out.shape[1], out.shape[2])


def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
    return UpFirDn2d.apply(input, kernel, (up, up), (down, down), (pad[0], pad[1], pad[0], pad[1]))
