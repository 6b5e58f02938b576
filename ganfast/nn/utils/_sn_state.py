"""What the three spectral-norm flavours (hook, parametrization, SN layers) share: σ for one weight, taken from
a pending :func:`ganfast.nn.utils.spectral_norm_step` result when there is a valid one, else from its own launch."""
from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import torch
from torch import nn

from ... import _ext
from ..._dispatch import default_impl
from ...ops.spectral_norm import OP, SNResult, power_iteration, power_iteration_one, spectral_norm_sigma
from ...reference import spectral_norm as sn_ref


def default_dim(module: nn.Module) -> int:
    """torch's default normalised dimension: 1 (output channels) for ConvTranspose*, else 0."""
    return 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0


class SNUnit(NamedTuple):
    """One spectrally normalised weight as its owner (hook, parametrization or layer) sees it in a forward."""
    owner: Any                 # where a pending step result is kept (attribute ``_ganfast_pending``)
    weight: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    dim: int
    n_power_iterations: int    # this forward's iterations: the configured number in training, 0 in eval
    eps: float
    u_first: bool              # parametrization order
    impl: str | None

    def key(self) -> tuple:
        """A step result stays valid while the weight is unchanged and the mode (iterations) is the same."""
        return (self.weight._version, self.n_power_iterations, self.u.data_ptr(), self.v.data_ptr())


def run_units(units: list[SNUnit]) -> list[SNResult]:
    """The power iteration for ``units`` (one device, dtype and impl): one launch."""
    return power_iteration([t.weight for t in units], [t.u for t in units], [t.v for t in units],
                           [t.dim for t in units], [t.n_power_iterations for t in units], [t.eps for t in units],
                           [t.u_first for t in units], impl=units[0].impl)


def _call_class(unit: SNUnit) -> str | None:
    """The class of a one-weight call for ``impl`` selection (ganfast/ops/spectral_norm.py: auto orders)."""
    if unit.n_power_iterations == 0:
        return "sigma"
    return "small" if unit.weight.numel() < SMALL_WEIGHT else None


SMALL_WEIGHT = 1 << 16  # weight elements below which a one-weight call is "small"

_CHOICES: dict[tuple, str] = {}  # OP.resolve's answers for one-weight calls, by everything they depend on


def _choice(unit: SNUnit) -> str:
    """``OP.resolve`` for a one-weight call, memoised: a layer's forward asks the same question every time, and
    the answer depends only on the key (the spectral-norm op's limits do not depend on the call)."""
    weight = unit.weight
    key = (unit.impl, default_impl(), weight.device, weight.dtype, _call_class(unit), _ext.loaded())
    chosen = _CHOICES.get(key)
    if chosen is None:
        chosen = _CHOICES[key] = OP.resolve(unit.impl, weight.device, weight.dtype, _call_class(unit))
    return chosen


def _torch_sigma(unit: SNUnit) -> torch.Tensor:
    """torch's own spectral norm step for one weight, with torch's mat-vecs: the iteration in place on u, v, then
    σ = uᴴ W_mat v differentiable in W (u, v constants; conjugate transposes and vdot, as torch's, so complex
    weights work too). u and v enter σ's graph as clones, so that a later iteration leaves that graph valid,
    where torch's flavour clones them: always for the parametrization, after an iteration for the hook (in eval
    mode torch's hook uses the buffers themselves, and so does this: two copies fewer a layer)."""
    w_mat = sn_ref.weight_matrix(unit.weight, unit.dim)
    u, v = unit.u, unit.v
    if unit.n_power_iterations:
        with torch.no_grad():
            w_const = w_mat.detach()
            for _ in range(unit.n_power_iterations):
                if unit.u_first:
                    u.copy_(sn_ref.normalize(torch.mv(w_const, v), unit.eps))
                    v.copy_(sn_ref.normalize(torch.mv(w_const.mH, u), unit.eps))
                else:
                    v.copy_(sn_ref.normalize(torch.mv(w_const.mH, u), unit.eps))
                    u.copy_(sn_ref.normalize(torch.mv(w_const, v), unit.eps))
    if unit.n_power_iterations or unit.u_first:
        u, v = u.clone(), v.clone()
    return torch.vdot(u, torch.mv(w_mat, v))


# owner -> (W, u, v as aliases, _sigma_key of them, σ): σ of the last forward without iterations. The aliases keep
# the three storages alive, so that an equal address is the same memory; in-place writes (optimizer steps,
# load_state_dict, iterations) change a version. Weakly keyed: copies and pickles of a module do not carry it.
_EVAL_SIGMAS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sigma_key(unit: SNUnit) -> tuple:
    w, u, v = unit.weight, unit.u, unit.v
    return (w.data_ptr(), w._version, w.shape, w.stride(), w.dtype, u.data_ptr(), u._version, u.shape,
            v.data_ptr(), v._version, v.shape, unit.dim)


def _eval_sigma(unit: SNUnit) -> SNResult | None:
    """A forward without iterations (eval mode) whose W, u and v are those of the previous one has the same σ
    (uᴴ W_mat v, nothing else): that forward's value, as a result for spectral_norm_sigma (u, v as σ's graph
    takes them: cloned for the parametrization flavour, as torch's does), or None."""
    entry = _EVAL_SIGMAS.get(unit.owner)
    if entry is None or entry[3] != _sigma_key(unit):
        return None
    u, v = (unit.u.clone(), unit.v.clone()) if unit.u_first else (unit.u, unit.v)
    return SNResult(entry[4], u, v)


def _keep_eval_sigma(unit: SNUnit, value: torch.Tensor) -> None:
    _EVAL_SIGMAS[unit.owner] = (unit.weight.detach(), unit.u.detach(), unit.v.detach(), _sigma_key(unit),
                                value.detach())


def sigma(unit: SNUnit) -> torch.Tensor:
    """σ for this forward, differentiable in the weight; runs the iteration unless a step already did, and in eval
    mode reuses σ while W, u and v are unchanged (except for impl="ref", the oracle, which recomputes)."""
    if torch.compiler.is_compiling():  # a compiled forward runs its own launch (no step results in graphs)
        return spectral_norm_sigma(unit.weight, run_units([unit])[0], unit.dim)
    pending = getattr(unit.owner, "_ganfast_pending", None)
    if pending is not None:
        unit.owner._ganfast_pending = None
    reuse = unit.n_power_iterations == 0 and (unit.impl or default_impl()) != "ref"
    if pending is not None and pending[0] == unit.key():
        result = pending[1]
    elif reuse and (result := _eval_sigma(unit)) is not None:
        pass
    elif _choice(unit) == "ref":
        value = _torch_sigma(unit)
        if reuse:
            _keep_eval_sigma(unit, value)
        return value
    else:
        result = power_iteration_one(unit.owner, unit.weight, unit.u, unit.v, unit.dim, unit.n_power_iterations,
                                     unit.eps, unit.u_first, unit.impl)
        if reuse:
            _keep_eval_sigma(unit, result.sigma)
    return spectral_norm_sigma(unit.weight, result, unit.dim)


def stash(units: list[SNUnit]) -> None:
    """Runs ``units`` in one launch per (device, dtype, impl) and leaves each result for its owner's next forward;
    units whose forward would take torch's mat-vecs (auto's choice for their class of call) are left to it."""
    groups: dict[tuple, list[SNUnit]] = {}
    for unit in units:
        if _choice(unit) == "ref":
            continue
        groups.setdefault((unit.weight.device, unit.weight.dtype, unit.impl), []).append(unit)
    for group in groups.values():
        for unit, result in zip(group, run_units(group)):
            unit.owner._ganfast_pending = (unit.key(), result)
