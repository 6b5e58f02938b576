"""``ganfast.patch_rosinality()``: the ``op`` package of rosinality's stylegan2-pytorch, and every copy of it (pSp,
e4e, ReStyle, HyperStyle, StyleCLIP, StyleGAN-NADA, StyleSwin, GPEN, BasicSR's ``basicsr.ops``, ...), served by
ganfast's kernels, with nothing compiled and nothing loaded from disk.

    import ganfast
    handle = ganfast.patch_rosinality()   # before importing the code base (or: ganfast run train.py ...)
    from models.stylegan2.model import Generator
    ...
    handle.undo()                         # or: with ganfast.patch_rosinality(): ...

From then on, importing a module named ``fused_act`` or ``upfirdn2d`` (under any package path) whose source is a
copy of rosinality's (it defines ``fused_leaky_relu`` and ``FusedLeakyReLU``, or ``upfirdn2d`` and
``upfirdn2d_native``/``UpFirDn2d``) gives a module built by ganfast instead: their file is read, never executed,
so its ``cpp_extension.load(...)`` (or its missing ``fused_act_ext``) never runs. The module holds

- ``fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2**0.5, device=None)``: ``lrelu(input + bias,
  negative_slope) * scale``, bias along dim 1 of any rank: ganfast's ``bias_act(act="lrelu")``;
- ``FusedLeakyReLU``: the module with the copy's own signature (``(channel, bias=True, negative_slope, scale)``,
  or the old ``(channel, negative_slope, scale)``) and a parameter ``bias`` of shape (channel,), so their
  checkpoints load unchanged;
- ``upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0), device=None)``: int or (x, y) up/down, pad (p0, p1) for
  both axes or (x0, x1, y0, y1), a true convolution with the 2-D kernel: ganfast's ``upfirdn2d``; and
  ``upfirdn2d_native`` with its ten-argument signature.

The derivatives are theirs: twice differentiable in input and bias, None for the kernel; the leaky ReLU's mask
has no derivative, and a second-order pass that meets it gives input and bias a zero gradient (not None), as
their CUDA path's autograd Functions do. Copies imported before the patch have
``fused_leaky_relu``, ``upfirdn2d`` and ``upfirdn2d_native`` rebound instead (in their module and wherever the
code base bound them by name). ``conv2d_gradfix`` compiles nothing and is left as it is.
"""
from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import threading
from types import ModuleType
from typing import Callable

import torch
from torch import nn

from .. import ops
from .._dispatch import OPS, normalize_impl
from ._rebind import Binding, rebind, restore

# module name's last part -> the source that marks it as a copy of rosinality's
_MARKERS = {"fused_act": (re.compile(r"^def fused_leaky_relu\(", re.M), re.compile(r"^class FusedLeakyReLU\b", re.M)),
            "upfirdn2d": (re.compile(r"^def upfirdn2d\(", re.M),
                          re.compile(r"^(def upfirdn2d_native\(|class UpFirDn2d\b)", re.M))}
# what serves each replaced function: (ganfast op, its dispatch variant for these calls, how it is called)
SERVED_BY = {"fused_leaky_relu": ("bias_act", "other", "act='lrelu', alpha=negative_slope, gain=scale, dim=1"),
             "FusedLeakyReLU": ("bias_act", "other", "act='lrelu' with the module's bias"),
             "upfirdn2d": ("upfirdn2d", None, "flip_filter=False, padding (x0, x1, y0, y1)"),
             "upfirdn2d_native": ("upfirdn2d", None, "flip_filter=False")}
_REBOUND = {"fused_act": ("fused_leaky_relu",), "upfirdn2d": ("upfirdn2d", "upfirdn2d_native")}
_ACTIVE: list["RosinalityPatch"] = []
_LOCK = threading.Lock()


def _kind(leaf: str, source: str) -> str | None:
    """"fused_act" or "upfirdn2d" when ``source`` is a copy of rosinality's module of that name, else None."""
    markers = _MARKERS.get(leaf)
    return leaf if markers and all(m.search(source) for m in markers) else None


def _has_bias_argument(source: str) -> bool:
    """Whether the copy's ``FusedLeakyReLU.__init__`` takes ``bias`` (the newer signature)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == "FusedLeakyReLU":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return any(a.arg == "bias" for a in item.args.args + item.args.kwonlyargs)
    return True


def _lrelu_grad(dy: torch.Tensor, out: torch.Tensor, slope: float, scale: float, impl: str | None) -> torch.Tensor:
    """dy · (out > 0 ? 1 : slope) · scale: their backward, which reads the mask from the output."""
    chosen = OPS["bias_act"].resolve(impl, dy.device, dy.dtype, "other")
    if chosen == "ref":
        return torch.where(out > 0, dy, dy * slope) * scale
    return torch.ops.ganfast.bias_act_grad(dy, out, None, out, 1, "lrelu", slope, scale, None, chosen)


class _FusedLeakyReLUFunction(torch.autograd.Function):
    """ganfast's bias_act forward with their autograd structure: a zero (not None) gradient reaches input and
    bias wherever a second-order pass meets the mask, as their FusedLeakyReLUFunction gives it."""

    @staticmethod
    def forward(ctx, input, bias, negative_slope, scale, impl):
        out = ops.bias_act(input, bias, dim=1, act="lrelu", alpha=negative_slope, gain=scale, impl=impl)
        ctx.save_for_backward(out)
        ctx.params = (bias is not None, negative_slope, scale, impl)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        grad_input, grad_bias = _FusedLeakyReLUGrad.apply(grad_output, out, *ctx.params)
        return grad_input, grad_bias, None, None, None


class _FusedLeakyReLUGrad(torch.autograd.Function):
    """(grad_input, grad_bias) of the leaky ReLU; linear in grad_output, no derivative for the mask."""

    @staticmethod
    def forward(ctx, grad_output, out, has_bias, negative_slope, scale, impl):
        ctx.save_for_backward(out)
        ctx.params = (negative_slope, scale, impl)
        grad_input = _lrelu_grad(grad_output, out, negative_slope, scale, impl)
        grad_bias = grad_input.sum([0, *range(2, grad_input.ndim)]) if has_bias else None
        return grad_input, grad_bias

    @staticmethod
    def backward(ctx, gradgrad_input, gradgrad_bias):
        (out,) = ctx.saved_tensors
        if gradgrad_bias is not None:
            gradgrad_input = gradgrad_input + gradgrad_bias.view(1, -1, *[1] * (out.ndim - 2))
        return _lrelu_grad(gradgrad_input, out, *ctx.params), None, None, None, None, None


def _replacements(impl: str | None) -> dict[str, Callable]:
    """The functions of a patched module; ``impl`` is passed to ganfast's ops."""

    def fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5, device=None):
        """lrelu(input + bias, negative_slope) * scale, with bias (C,) along dim 1 (``device`` is ignored)."""
        if bias is not None and bias.dtype != input.dtype:
            bias = bias.to(input.dtype)
        if torch.is_grad_enabled() and (input.requires_grad or (bias is not None and bias.requires_grad)):
            return _FusedLeakyReLUFunction.apply(input, bias, negative_slope, scale, impl)
        return ops.bias_act(input, bias, dim=1, act="lrelu", alpha=negative_slope, gain=scale, impl=impl)

    def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0), device=None):
        """Zero-insert by ``up``, pad (negative: crop), convolve with the 2-D ``kernel``, keep every ``down``-th."""
        if not isinstance(kernel, torch.Tensor) or kernel.ndim != 2:
            raise ValueError(f"upfirdn2d: kernel must be a 2-D tensor, got {getattr(kernel, 'shape', kernel)!r}")
        pad = tuple(pad) if isinstance(pad, (tuple, list)) else (pad,)
        if len(pad) not in (2, 4):
            raise ValueError(f"upfirdn2d: pad must be (p0, p1) or (x0, x1, y0, y1), got {pad!r}")
        padding = [*pad, *pad] if len(pad) == 2 else list(pad)
        return ops.upfirdn2d(input, kernel, up=up, down=down, padding=padding, impl=impl)

    def upfirdn2d_native(input, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
        """``upfirdn2d`` with each factor and pad given separately."""
        return upfirdn2d(input, kernel, (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1))

    table = {"fused_leaky_relu": fused_leaky_relu, "upfirdn2d": upfirdn2d, "upfirdn2d_native": upfirdn2d_native}
    for fn in table.values():
        fn.__ganfast_patch__ = True
    return table


class _FusedLeakyReLU(nn.Module):
    """``fused_leaky_relu(input, self.bias, negative_slope, scale)`` with a learnt bias (C,) (zeros at first)."""

    __ganfast_patch__ = True
    _function: Callable

    def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5, device=None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, input):
        return type(self)._function(input, self.bias, self.negative_slope, self.scale)


class _OldFusedLeakyReLU(_FusedLeakyReLU):
    """The old copies' signature: always a bias, ``(channel, negative_slope=0.2, scale=2**0.5)``."""

    def __init__(self, channel, negative_slope=0.2, scale=2 ** 0.5, device=None):
        super().__init__(channel, True, negative_slope, scale)


class _Loader(importlib.abc.Loader):
    """Builds the module from ganfast's functions; the copy's own file is never executed."""

    def __init__(self, patch: "RosinalityPatch", kind: str, source: str):
        self.patch, self.kind, self.source = patch, kind, source

    def create_module(self, spec):
        return None

    def exec_module(self, module: ModuleType) -> None:
        functions = self.patch._functions
        module.__ganfast_patch__ = True
        if self.kind == "fused_act":
            base = _FusedLeakyReLU if _has_bias_argument(self.source) else _OldFusedLeakyReLU
            cls = type("FusedLeakyReLU", (base,), {"__module__": module.__name__, "__qualname__": "FusedLeakyReLU",
                                                   "_function": staticmethod(functions["fused_leaky_relu"])})
            module.fused_leaky_relu, module.FusedLeakyReLU = functions["fused_leaky_relu"], cls
        else:
            module.upfirdn2d, module.upfirdn2d_native = functions["upfirdn2d"], functions["upfirdn2d_native"]
        self.patch.modules.append(module.__name__)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``*.fused_act`` / ``*.upfirdn2d`` modules (and top-level ones) whose source is a rosinality copy."""

    def __init__(self, patch: "RosinalityPatch"):
        self.patch = patch

    def find_spec(self, fullname, path, target=None):
        leaf = fullname.rpartition(".")[2]
        if leaf not in _MARKERS or fullname.split(".")[0] == "ganfast":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.origin, str) or not spec.origin.endswith(".py") \
                or spec.submodule_search_locations is not None:
            return None
        try:
            with open(spec.origin, encoding="utf-8") as file:
                source = file.read()
        except (OSError, UnicodeDecodeError):
            return None
        kind = _kind(leaf, source)
        if kind is None:
            return None
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=_Loader(self.patch, kind, source))


class RosinalityPatch:
    """An installed ``patch_rosinality``: ``modules`` lists the copies built by ganfast, ``patched`` adds the
    rebound names; ``undo()`` (or leaving a ``with`` block) stops serving new imports and restores what was rebound.
    Modules already imported under the patch keep ganfast's functions: their own code was never loaded."""

    def __init__(self, impl: str | None):
        self.impl = impl
        self._functions = _replacements(impl)
        self._finder: _Finder | None = _Finder(self)
        self._bindings: list[Binding] = []
        self.modules: list[str] = []

    @property
    def active(self) -> bool:
        return self._finder is not None

    @property
    def patched(self) -> list[str]:
        """The modules built by ganfast, then every "module.name" rebound to one of its functions."""
        return [*self.modules, *(f"{module.__name__}.{name}" for module, name, _, _ in self._bindings)]

    def _install(self) -> None:
        pairs = {}
        for module in list(sys.modules.values()):
            leaf = getattr(module, "__name__", "").rpartition(".")[2]
            if leaf in _REBOUND and not getattr(module, "__ganfast_patch__", False) \
                    and _kind(leaf, _public_names(module)):
                for name in _REBOUND[leaf]:
                    if callable(getattr(module, name, None)):
                        pairs[(module, name)] = self._functions[name]
        self._bindings = rebind(pairs)
        sys.meta_path.insert(0, self._finder)
        _ACTIVE.append(self)

    def undo(self) -> None:
        """Stops serving imports and restores the rebound names (idempotent)."""
        with _LOCK:
            if self._finder in sys.meta_path:
                sys.meta_path.remove(self._finder)
            if self in _ACTIVE:
                _ACTIVE.remove(self)
            self._finder = None
            restore(self._bindings)
            self._bindings = []

    def __enter__(self) -> "RosinalityPatch":
        return self

    def __exit__(self, *exc) -> None:
        self.undo()

    def __repr__(self) -> str:
        state = "active" if self.active else "undone"
        return f"RosinalityPatch({state}, {len(self.modules)} modules, {len(self._bindings)} bindings)"


def _public_names(module: ModuleType) -> str:
    """An already-imported module's top-level definitions as source-like lines, for the markers of ``_kind``."""
    lines = []
    for name, value in vars(module).items():
        if getattr(value, "__module__", None) == module.__name__:
            lines.append(f"class {name}:" if isinstance(value, type) else f"def {name}(")
    return "\n".join(lines)


def patch_rosinality(impl: str | None = None) -> RosinalityPatch:
    """Serves every rosinality ``op`` copy imported from now on with ganfast's kernels, and rebinds the copies
    already imported (see the module docstring). ``impl`` (default: ganfast's auto) is passed to the ops.
    Returns a :class:`RosinalityPatch` whose ``undo()`` removes it."""
    patch = RosinalityPatch(None if impl is None else normalize_impl(impl))
    with _LOCK:
        patch._install()
    return patch


def active_patches() -> list[RosinalityPatch]:
    """The installed patches, oldest first."""
    return list(_ACTIVE)

