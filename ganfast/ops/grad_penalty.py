"""grad_penalty: the per-sample reduction of a gradient-penalty pass (R1, R2, WGAN-GP, DRAGAN, path length).

For g of shape (B, ...), per sample b (accumulated in float32, or float64 for float64 g):

    s_b = Σ g_b²,   norm_b = √s_b,   term_b = s_b  (center None: R1/R2)   or   (norm_b − center)²

Registered ops (fake impls for torch.compile):
    ganfast::grad_penalty           g → (term, norm)                                   one pass over g
    ganfast::grad_penalty_backward  g · coef_b,  coef_b = 2·dterm_b·(1 − center/norm_b) + dnorm_b/norm_b
                                    (R1: 2·dterm_b + dnorm_b/norm_b; the norm terms are 0 where norm_b = 0,
                                    the subgradient torch.linalg.vector_norm takes)     one pass over g
The backward of grad_penalty is grad_penalty_backward; the backward of that is itself (in g) plus per-sample
dot products (in dterm, dnorm, norm), so every derivative order stays exact (gradgradcheck).
Backends: "ext" (C++ on CPU, CUDA on GPU), "triton", "ref" (ganfast.reference.losses.grad_penalty).
"""
from __future__ import annotations

import torch

from .. import _ext
from .._dispatch import register_op
from ..reference.losses import grad_penalty as grad_penalty_ref
from ._common import check_tensor, custom_op, is_dense, no_autocast, register_autograd

__all__ = ["grad_penalty"]


# auto on CPU, measured (2 shared cores, float32, forward + backward, median of 15, the call of
# benchmarks/test_bench_losses.py::test_grad_penalty_op): the C++ kernel wins from about half a million elements
# per call (8x3x256x256: 5-15 ms vs 47-140 ms for torch's norm/sum chain, whose threads stall when the cores are
# busy), while below that an idle machine favours torch's own kernels, which have less per-call overhead
# (64x3x32x32: 0.54 vs 0.18-0.24 ms; 4x3x16x16: 0.22 vs 0.05 ms), so smaller calls ("cpu:small") take the
# reference. auto on CUDA: Triton first (the reduction splits long samples over programs), the CUDA kernel
# second: not yet measured on a GPU.
_OP = register_op("grad_penalty", {"cpu": ("ext", "ref"), "cpu:small": ("ref",), "cuda": ("triton", "ext", "ref")})
SMALL_CPU_NUMEL = 1 << 19


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the per-sample results: float64 for float64 gradients, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sample_major(t: torch.Tensor) -> torch.Tensor:
    """``t`` if every sample is one contiguous block of memory (dense, batch stride = numel / B), else a
    contiguous copy. The kernels then see a (B, N) row-major buffer; the element order inside a sample does
    not matter to them (sums and elementwise scales)."""
    per_sample = t[0].numel() if t.shape[0] else 0
    if is_dense(t) and (t.shape[0] == 1 or t.stride(0) == per_sample):
        return t
    return t.contiguous()


def _center_arg(center: float) -> float:
    return -1.0 if center is None else center


def _launch_fwd(impl: str, g: torch.Tensor, center: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = sample_major(g)
    batch = g.shape[0]
    term = torch.empty(batch, device=g.device, dtype=acc_dtype(g.dtype))
    norm = torch.empty_like(term)
    per_sample = g[0].numel()
    if impl == "triton":
        from ..triton import grad_penalty as triton_grad_penalty
        triton_grad_penalty.grad_penalty_fwd(term, norm, g, per_sample, center)
    else:
        _ext.launch("grad_penalty_fwd", g.device, _ext.DTYPE_CODES[g.dtype], batch, per_sample, center,
                    _ext.address(term), _ext.address(norm), _ext.address(g))
    return term, norm


def _launch_bwd(impl: str, g: torch.Tensor, dterm: torch.Tensor, dnorm: torch.Tensor, norm: torch.Tensor,
                center: float) -> torch.Tensor:
    g = sample_major(g)
    dterm, dnorm, norm = (t.to(acc_dtype(g.dtype)).contiguous() for t in (dterm, dnorm, norm))
    out = torch.empty_like(g)
    per_sample = g[0].numel()
    if impl == "triton":
        from ..triton import grad_penalty as triton_grad_penalty
        triton_grad_penalty.grad_penalty_bwd(out, g, dterm, dnorm, norm, per_sample, center)
    elif out.numel():
        _ext.launch("grad_penalty_bwd", g.device, _ext.DTYPE_CODES[g.dtype], g.shape[0], per_sample, center,
                    _ext.address(out), _ext.address(g), _ext.address(dterm), _ext.address(dnorm),
                    _ext.address(norm))
    return out


# ---- registered ops -------------------------------------------------------------------------------------------

@custom_op("ganfast::grad_penalty", mutates_args=())
def _grad_penalty_op(g: torch.Tensor, center: float, impl: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_fwd(impl, g, center)


@custom_op("ganfast::grad_penalty_backward", mutates_args=())
def _grad_penalty_backward_op(g: torch.Tensor, dterm: torch.Tensor, dnorm: torch.Tensor, norm: torch.Tensor,
                              center: float, impl: str) -> torch.Tensor:
    return _launch_bwd(impl, g, dterm, dnorm, norm, center)


@_grad_penalty_op.register_fake
def _(g, center, impl):
    term = g.new_empty(g.shape[0], dtype=acc_dtype(g.dtype))
    return term, torch.empty_like(term)


@_grad_penalty_backward_op.register_fake
def _(g, dterm, dnorm, norm, center, impl):
    return torch.empty_like(sample_major(g))


def _per_sample_view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape([-1] + [1] * (ndim - 1))


def _safe_inverse(norm: torch.Tensor) -> torch.Tensor:
    """1 / norm, and 0 where norm is 0 (the subgradient choice of the kernels)."""
    positive = norm > 0
    return torch.where(positive, 1 / torch.where(positive, norm, torch.ones_like(norm)), torch.zeros_like(norm))


def _setup_fwd(ctx, inputs, output):
    g, center, impl = inputs
    ctx.params = (center, impl)
    ctx.set_materialize_grads(False)  # no gradient in, None out
    ctx.save_for_backward(g, output[1])


def _backward_fwd(ctx, dterm, dnorm):
    g, norm = ctx.saved_tensors
    center, impl = ctx.params
    if dterm is None and dnorm is None:
        return None, None, None
    dterm = torch.zeros_like(norm) if dterm is None else dterm
    dnorm = torch.zeros_like(norm) if dnorm is None else dnorm
    return torch.ops.ganfast.grad_penalty_backward(g, dterm, dnorm, norm, center, impl), None, None


def _setup_bwd(ctx, inputs, output):
    g, dterm, dnorm, norm, center, impl = inputs
    ctx.params = (center, impl)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(g, dterm, dnorm, norm)


def _backward_bwd(ctx, grad_out):
    """out = g · coef(dterm, dnorm, norm): linear in g (the same op), and per-sample dot products for the rest."""
    g, dterm, dnorm, norm = ctx.saved_tensors
    center, impl = ctx.params
    d_g = d_dterm = d_dnorm = d_norm = None
    if grad_out is None:
        return d_g, d_dterm, d_dnorm, d_norm, None, None
    if ctx.needs_input_grad[0]:
        d_g = torch.ops.ganfast.grad_penalty_backward(grad_out, dterm, dnorm, norm, center, impl)
    if any(ctx.needs_input_grad[1:4]):
        dot = (grad_out.to(norm.dtype) * g.to(norm.dtype)).reshape(g.shape[0], -1).sum(dim=1)
        inv = _safe_inverse(norm)
        if center >= 0:  # coef = 2·dterm·(1 − c/n) + dnorm/n
            d_dterm = dot * 2 * torch.where(norm > 0, 1 - center * inv, torch.zeros_like(norm))
            d_norm = dot * (2 * dterm * center - dnorm) * inv * inv
        else:  # coef = 2·dterm + dnorm/n
            d_dterm = dot * 2
            d_norm = -dot * dnorm * inv * inv
        d_dnorm = dot * inv
    return d_g, d_dterm, d_dnorm, d_norm, None, None


register_autograd("ganfast::grad_penalty", _backward_fwd, setup_context=_setup_fwd)
register_autograd("ganfast::grad_penalty_backward", _backward_bwd, setup_context=_setup_bwd)


# ---- public API -----------------------------------------------------------------------------------------------

def grad_penalty(g: torch.Tensor, center: float | None = None,
                 impl: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample penalty terms and gradient norms of ``g`` (B, ...): ``(term, norm)``, each of shape (B,).

    ``term_b = Σ g_b²`` when ``center`` is None (R1/R2), else ``(‖g_b‖₂ − center)²`` (WGAN-GP/DRAGAN).
    Results are float32 (float64 for float64 ``g``); differentiable to any order in ``g``. ``g`` may have
    any layout (a per-sample-contiguous one such as channels_last is read in place).
    """
    check_tensor("g", g)
    if g.ndim == 0 or g.shape[0] == 0:
        raise ValueError(f"g must have a non-empty batch dimension first, got shape {tuple(g.shape)}")
    if center is not None:
        center = float(center)
        if not center >= 0 or center == float("inf"):
            raise ValueError(f"center must be None or a finite number >= 0, got {center}")
    chosen = _OP.resolve(impl, g.device, g.dtype, "small" if g.numel() < SMALL_CPU_NUMEL else None)
    if chosen == "ref":
        with no_autocast(g):
            return grad_penalty_ref(g, center)
    return torch.ops.ganfast.grad_penalty(g, _center_arg(center), chosen)

