"""What the three spectral-norm flavours (hook, parametrization, SN layers) share: σ for one weight, taken from
a pending :func:`ganfast.nn.utils.spectral_norm_step` result when there is a valid one, else from its own launch."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ...ops.spectral_norm import OP, SNResult, power_iteration, spectral_norm_sigma
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


def _torch_sigma(unit: SNUnit) -> torch.Tensor:
    """torch's own spectral norm step for one weight, with torch's mat-vecs: the iteration in place on u, v, then
    σ = uᴴ W_mat v differentiable in W (u, v constants: clones, so that a later iteration leaves the graph valid);
    ᴴ is the conjugate transpose for complex weights, the transpose for real ones, as in torch's parametrization."""
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
    return torch.vdot(u.clone(), torch.mv(w_mat, v.clone()))


def sigma(unit: SNUnit) -> torch.Tensor:
    """σ for this forward, differentiable in the weight; runs the iteration unless a step already did."""
    if torch.compiler.is_compiling():  # a compiled forward runs its own launch (no step results in graphs)
        return spectral_norm_sigma(unit.weight, run_units([unit])[0], unit.dim)
    pending = getattr(unit.owner, "_ganfast_pending", None)
    if pending is not None:
        unit.owner._ganfast_pending = None
    if pending is not None and pending[0] == unit.key():
        result = pending[1]
    elif OP.resolve(unit.impl, unit.weight.device, unit.weight.dtype, _call_class(unit)) == "ref":
        return _torch_sigma(unit)
    else:
        result = run_units([unit])[0]
    return spectral_norm_sigma(unit.weight, result, unit.dim)


def stash(units: list[SNUnit]) -> None:
    """Runs ``units`` in one launch per (device, dtype, impl) and leaves each result for its owner's next forward;
    units whose forward would take torch's mat-vecs (auto's choice for their class of call) are left to it."""
    groups: dict[tuple, list[SNUnit]] = {}
    for unit in units:
        if OP.resolve(unit.impl, unit.weight.device, unit.weight.dtype, _call_class(unit)) == "ref":
            continue
        groups.setdefault((unit.weight.device, unit.weight.dtype, unit.impl), []).append(unit)
    for group in groups.values():
        for unit, result in zip(group, run_units(group)):
            unit.owner._ganfast_pending = (unit.key(), result)
