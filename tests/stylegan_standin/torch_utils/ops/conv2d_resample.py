"""Stand-in conv2d_resample with the NVlabs signature."""
from ganfast.reference import conv2d_resample as _conv2d_resample


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    return _conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
