"""``ganfast.patch_stylegan()``: swap ganfast's ops into an already-imported StyleGAN2-ADA / StyleGAN3-style
code base.

    import training.networks            # the code base first (it imports torch_utils.ops.*)
    handle = ganfast.patch_stylegan()
    ...                                  # bias_act, upfirdn2d & co, conv2d_resample, modulated_conv2d and
                                         # filtered_lrelu are ganfast's
    handle.undo()                        # or: with ganfast.patch_stylegan(): ...

Replaced (where the module is imported): ``torch_utils.ops.bias_act.bias_act``; ``torch_utils.ops.upfirdn2d``'s
``upfirdn2d``, ``upsample2d``, ``downsample2d`` and ``filter2d`` (``setup_filter`` stays: it only builds a
tensor); ``torch_utils.ops.conv2d_resample.conv2d_resample``; ``torch_utils.ops.filtered_lrelu.filtered_lrelu``
(StyleGAN3's alias-free layers); ``modulated_conv2d`` in ``training.networks`` and ``training.networks_stylegan2``.
Every other module of the code base that bound one of these functions by name
(``from torch_utils.ops.bias_act import bias_act``) is rebound too; ``__main__`` is not (see ganfast.patch._rebind).
The replacements take the originals' arguments, ``impl`` included: ``impl="ref"`` asks for ganfast's reference,
anything else for ganfast's default (or the ``impl`` given to ``patch_stylegan``). R3GAN's code base also gets its
one-pass D step (``ganfast.patch.r3gan``).
"""
from __future__ import annotations

import math
import sys
import warnings
from typing import Callable

from .. import ops
from .._dispatch import normalize_impl
from ._rebind import Binding, rebind, restore
from .r3gan import patch_adversarial_training

_NVLABS_FAST = ("cuda", None, "auto")


def _chooser(default: str | None) -> Callable[[str | None], str | None]:
    """Maps an NVlabs ``impl`` argument onto ganfast's: "ref" stays, "cuda" (their fast path) means ``default``."""
    def choose(impl):
        return default if impl in _NVLABS_FAST else impl
    return choose


def _replacements(default: str | None) -> dict[tuple[str, str], Callable]:
    choose = _chooser(default)

    def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="cuda"):
        return ops.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=choose(impl))

    def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="cuda"):
        return ops.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain,
                             impl=choose(impl))

    def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
        return ops.upsample2d(x, f, up=up, padding=padding, flip_filter=flip_filter, gain=gain, impl=choose(impl))

    def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
        return ops.downsample2d(x, f, down=down, padding=padding, flip_filter=flip_filter, gain=gain,
                                impl=choose(impl))

    def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl="cuda"):
        return ops.filter2d(x, f, padding=padding, flip_filter=flip_filter, gain=gain, impl=choose(impl))

    def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False,
                        impl=None):
        return ops.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                                   flip_weight=flip_weight, flip_filter=flip_filter, impl=choose(impl))

    def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                         demodulate=True, flip_weight=True, fused_modconv=True, impl=None):
        return ops.modulated_conv2d(x, weight, styles, noise, up=up, down=down, padding=padding,
                                    resample_filter=resample_filter, demodulate=demodulate, flip_weight=flip_weight,
                                    fused_modconv=fused_modconv, impl=choose(impl))

    def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                       clamp=None, flip_filter=False, impl="cuda"):
        return ops.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                                  clamp=clamp, flip_filter=flip_filter, impl=choose(impl))

    fir = "torch_utils.ops.upfirdn2d"
    table = {("torch_utils.ops.bias_act", "bias_act"): bias_act,
             **{(fir, fn.__name__): fn for fn in (upfirdn2d, upsample2d, downsample2d, filter2d)},
             ("torch_utils.ops.conv2d_resample", "conv2d_resample"): conv2d_resample,
             ("torch_utils.ops.filtered_lrelu", "filtered_lrelu"): filtered_lrelu,
             ("training.networks", "modulated_conv2d"): modulated_conv2d,
             ("training.networks_stylegan2", "modulated_conv2d"): modulated_conv2d}
    for fn in table.values():
        fn.__ganfast_patch__ = True
    return table


class StyleGANPatch:
    """What ``patch_stylegan`` changed; ``undo()`` puts the originals back (also on leaving a ``with`` block)."""

    def __init__(self, bindings: list[Binding]):
        self._bindings = bindings

    @property
    def patched(self) -> list[str]:
        """"module.name" of every binding that now points at a ganfast function."""
        return [f"{module.__name__}.{name}" for module, name, _, _ in self._bindings]

    def undo(self) -> None:
        """Restores every binding that still holds ganfast's function (idempotent)."""
        restore(self._bindings)
        self._bindings = []

    def __enter__(self) -> "StyleGANPatch":
        return self

    def __exit__(self, *exc) -> None:
        self.undo()

    def __repr__(self) -> str:
        return f"StyleGANPatch({len(self._bindings)} bindings)"


def patch_stylegan(impl: str | None = None) -> StyleGANPatch:
    """Replaces the StyleGAN2-ADA/StyleGAN3 ops of the already-imported code base with ganfast's (see the
    module docstring); ``impl`` is used where the code base asks for its fast path (default: ganfast's auto).
    Returns a :class:`StyleGANPatch` whose ``undo()`` restores the originals."""
    default = None if impl is None else normalize_impl(impl)
    pairs = {(sys.modules[module_name], attr): replacement
             for (module_name, attr), replacement in _replacements(default).items() if module_name in sys.modules}
    bindings = rebind(pairs) + patch_adversarial_training(default)  # R3GAN's AdversarialTraining D step
    if not bindings:
        warnings.warn("ganfast.patch_stylegan(): none of torch_utils.ops.{bias_act,upfirdn2d,conv2d_resample,"
                      "filtered_lrelu} or "
                      "training.networks[_stylegan2] is imported (or they are patched already); nothing was "
                      "replaced. Import the code base first.", RuntimeWarning, stacklevel=2)
    return StyleGANPatch(bindings)
