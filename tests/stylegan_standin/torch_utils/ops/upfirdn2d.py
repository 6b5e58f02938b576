"""Stand-in upfirdn2d and helpers with the NVlabs signatures; the helpers call the module-level upfirdn2d."""
from ganfast.reference import setup_filter  # noqa: F401  (kept by the patch)
from ganfast.reference.upfirdn2d import downsample_padding, filter_padding, upsample_padding
from ganfast.reference.upfirdn2d import upfirdn2d as _upfirdn2d


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="cuda"):
    return _upfirdn2d(x, f, up, down, padding, flip_filter, gain)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
    return upfirdn2d(x, f, up=up, padding=upsample_padding(f, up, padding), flip_filter=flip_filter,
                     gain=gain * up * up, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
    return upfirdn2d(x, f, down=down, padding=downsample_padding(f, down, padding), flip_filter=flip_filter,
                     gain=gain, impl=impl)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl="cuda"):
    return upfirdn2d(x, f, padding=filter_padding(f, padding), flip_filter=flip_filter, gain=gain, impl=impl)
