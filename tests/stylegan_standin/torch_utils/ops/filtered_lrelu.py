"""Stand-in filtered_lrelu with the NVlabs signature (ganfast's reference); records the impl of each call."""
import math

from ganfast.reference import filtered_lrelu as _filtered_lrelu

CALLS = []


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2, clamp=None,
                   flip_filter=False, impl="cuda"):
    CALLS.append(impl)
    return _filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
