"""Spectral normalization, hook flavour: a drop-in for ``torch.nn.utils.spectral_norm`` / ``remove_spectral_norm``,
plus :func:`spectral_norm_step` (every SN weight of a model in one launch) and :func:`convert_spectral_norm`.

The registration is torch's (same parameter ``<name>_orig``, buffers ``<name>_u``/``<name>_v`` drawn with the same
``normal_`` calls, the same state_dict hooks and version metadata, a :class:`SpectralNorm` forward pre-hook that
subclasses torch's), so torch's checkpoints load and vice versa; only the power iteration and σ run on ganfast's
kernels. One difference: after a forward, ``module.<name>`` holds W/σ detached from the graph (torch leaves the
graph-attached tensor there, which makes ``copy.deepcopy`` of the module fail).
"""
from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm as _TorchSpectralNorm
from torch.nn.utils.spectral_norm import SpectralNormLoadStateDictPreHook, SpectralNormStateDictHook

from . import parametrizations
from ._sn_state import SNUnit, default_dim, sigma, stash

__all__ = ["SpectralNorm", "spectral_norm", "remove_spectral_norm", "spectral_norm_step", "convert_spectral_norm"]

T_module = TypeVar("T_module", bound=nn.Module)

class SpectralNorm(_TorchSpectralNorm):
    """torch's spectral-norm forward pre-hook with the power iteration and σ on ganfast's kernels (a subclass, so
    torch's ``remove_spectral_norm`` and its duplicate-registration check recognise it)."""

    def __init__(self, name: str = "weight", n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12,
                 impl: str | None = None) -> None:
        super().__init__(name, n_power_iterations, dim, eps)
        self.impl = impl

    def unit(self, module: nn.Module, do_power_iteration: bool) -> SNUnit:
        """This weight as the kernels see it in a forward of ``module``."""
        return SNUnit(self, getattr(module, self.name + "_orig"), getattr(module, self.name + "_u"),
                      getattr(module, self.name + "_v"), self.dim,
                      self.n_power_iterations if do_power_iteration else 0, self.eps, False, self.impl)

    def compute_weight(self, module: nn.Module, do_power_iteration: bool) -> torch.Tensor:
        unit = self.unit(module, do_power_iteration)
        return unit.weight / sigma(unit)

    def __call__(self, module: nn.Module, inputs) -> None:
        _set_plain_attribute(module, self.name, self.compute_weight(module, do_power_iteration=module.training))


def _set_plain_attribute(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """``setattr(module, name, value)`` for the plain tensor attribute that holds W/σ, without the parameter,
    buffer and submodule checks of ``Module.__setattr__`` (a few µs a layer), which it falls back to if ``name``
    is one of those."""
    if name in module._parameters or name in module._buffers or name in module._modules:
        setattr(module, name, value)
    else:
        module.__dict__[name] = value


class _DetachAfterForward:
    """Forward hook: replaces ``module.<name>`` (W/σ of the forward) by its detached value, so that the module can
    be deep-copied after a forward (e.g. for an EMA copy); the forward's graph keeps its own reference."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module: nn.Module, inputs, output) -> None:
        weight = module.__dict__.get(self.name)  # absent (a parameter again): SN was removed
        if isinstance(weight, torch.Tensor):
            module.__dict__[self.name] = weight.detach()


def attach(module: nn.Module, name: str, n_power_iterations: int, dim: int, eps: float,
           impl: str | None) -> SpectralNorm:
    """torch's registration without the forward pre-hook: ``<name>`` becomes the parameter ``<name>_orig``,
    buffers ``<name>_u``, ``<name>_v`` are drawn as torch draws them, and the state_dict hooks are added."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, _TorchSpectralNorm) and hook.name == name:
            raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
    weight = module._parameters.get(name)
    if weight is None:
        raise ValueError(f"spectral_norm: {type(module).__name__} has no parameter {name!r} (or it is None)")
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError("spectral_norm: the module has uninitialized parameters; run a dummy forward first")
    if not -weight.ndim <= dim < weight.ndim:
        raise ValueError(f"spectral_norm: dim={dim} is out of range for the {weight.ndim}-D parameter {name!r}")
    fn = SpectralNorm(name, n_power_iterations, dim % weight.ndim, eps, impl)
    with torch.no_grad():
        h, w = fn.reshape_weight_to_matrix(weight).shape
        u = F.normalize(weight.new_empty(h).normal_(0, 1), dim=0, eps=fn.eps)
        v = F.normalize(weight.new_empty(w).normal_(0, 1), dim=0, eps=fn.eps)
    del module._parameters[name]
    module.register_parameter(name + "_orig", weight)
    module.register_buffer(name + "_u", u)
    module.register_buffer(name + "_v", v)
    module._register_state_dict_hook(SpectralNormStateDictHook(fn))
    module._register_load_state_dict_pre_hook(SpectralNormLoadStateDictPreHook(fn))
    return fn


def spectral_norm(module: T_module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None, impl: str | None = None) -> T_module:
    """Drop-in for ``torch.nn.utils.spectral_norm``: same arguments, state_dict and u/v evolution.

    ``impl``: the kernel (None/"auto", "ext" or "ref"; see ganfast._dispatch). Returns ``module``.
    """
    fn = attach(module, name, n_power_iterations, default_dim(module) if dim is None else dim, eps, impl)
    setattr(module, name, getattr(module, name + "_orig").data)
    module.register_forward_pre_hook(fn)
    module.register_forward_hook(_DetachAfterForward(name))
    return module


def _drop_hooks(hooks: dict, match) -> None:
    for key in [k for k, hook in hooks.items() if match(getattr(hook, "hook", hook))]:
        del hooks[key]


def remove_spectral_norm(module: T_module, name: str = "weight") -> T_module:
    """Drop-in for ``torch.nn.utils.remove_spectral_norm`` (works for torch's and ganfast's hooks)."""
    fn = next((h for h in module._forward_pre_hooks.values()
               if isinstance(h, _TorchSpectralNorm) and h.name == name), None)
    if fn is None:
        raise ValueError(f"spectral_norm of '{name}' not found in {module}")
    fn.remove(module)
    _drop_hooks(module._forward_pre_hooks, lambda h: h is fn)
    _drop_hooks(module._forward_hooks, lambda h: isinstance(h, _DetachAfterForward) and h.name == name)
    _drop_hooks(module._state_dict_hooks, lambda h: isinstance(h, SpectralNormStateDictHook) and h.fn is fn)
    _drop_hooks(module._load_state_dict_pre_hooks,
                lambda h: isinstance(h, SpectralNormLoadStateDictPreHook) and h.fn is fn)
    return module


def _units(model: nn.Module) -> list[SNUnit]:
    """Every ganfast spectral-norm weight of ``model`` (hooks, parametrizations and SN layers), as its next
    forward will use it."""
    units = []
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                units.append(hook.unit(module, module.training))
        layer_fn = getattr(module, "_ganfast_sn", None)
        if isinstance(layer_fn, SpectralNorm):
            units.append(layer_fn.unit(module, module.training))
        if isinstance(module, parametrize.ParametrizationList) and hasattr(module, "original"):
            first = module[0]  # later parametrizations see another one's output, not the stored weight
            if isinstance(first, parametrizations.SpectralNormParametrization) and module.original.ndim > 1:
                units.append(first.unit(module.original))
    return units


def spectral_norm_step(model: nn.Module) -> int:
    """Runs the power iteration (training mode) or σ alone (eval mode) for every ganfast spectral-norm weight of
    ``model`` in one launch per device and dtype, and leaves each result for that weight's next forward, which then
    skips its own launch. Call it right before a forward of ``model``; the numbers are those of the per-layer path
    (a result is ignored, and recomputed, if its weight changed in between). On a CPU, weights whose forward would
    use torch's mat-vecs under ``auto`` (σ alone, small weights: see README) are left to their forward. Returns the
    number of weights."""
    units = _units(model)
    stash(units)
    return len(units)


def convert_spectral_norm(model: T_module, impl: str | None = None) -> T_module:
    """Replaces, in place, every torch spectral norm in ``model`` (hooks and parametrizations) by ganfast's,
    keeping its u, v buffers, settings and state_dict keys. Returns ``model``."""
    torch_param_sn = getattr(torch.nn.utils.parametrizations, "_SpectralNorm", None)
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if type(hook) is not _TorchSpectralNorm:
                continue
            fn = SpectralNorm(hook.name, hook.n_power_iterations, hook.dim, hook.eps, impl)
            module._forward_pre_hooks[key] = fn
            for hooks in (module._state_dict_hooks, module._load_state_dict_pre_hooks):
                for wrapped in hooks.values():
                    inner = getattr(wrapped, "hook", wrapped)
                    if isinstance(inner, (SpectralNormStateDictHook, SpectralNormLoadStateDictPreHook)) \
                            and inner.fn is hook:
                        inner.fn = fn
            module.register_forward_hook(_DetachAfterForward(hook.name))
        if isinstance(module, parametrize.ParametrizationList) and torch_param_sn is not None:
            for i, p in enumerate(module):
                if type(p) is torch_param_sn:
                    module[i] = parametrizations.SpectralNormParametrization.adopt(p, module.original, impl)
    return model
