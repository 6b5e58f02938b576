"""sample_lerp: the WGAN-GP interpolation between two batches with one weight per sample.

    out_b = eps_b · a_b + (1 − eps_b) · b_b          (a, b of shape (B, ...), eps of shape (B,))

Registered op ``ganfast::sample_lerp`` (one pass; fake impl for torch.compile). Its backward is linear in the
incoming gradient and is written with differentiable torch ops (da = dout·eps, db = dout·(1 − eps),
deps_b = Σ dout_b·(a_b − b_b)), so every derivative order is exact.
Backends: "triton" (GPU; CPU under TRITON_INTERPRET=1), "ref" (ganfast.reference.losses.sample_lerp).
There is no "ext" kernel: torch's own fused lerp is the CPU path.
"""
from __future__ import annotations

import torch

from .._dispatch import register_op
from ..reference.losses import sample_lerp as sample_lerp_ref
from ._common import autocast_like, check_tensor, custom_op, no_autocast, register_autograd, same_layout
from .grad_penalty import sample_major

__all__ = ["sample_lerp"]


# auto on CPU: the reference (torch.lerp, one fused torch kernel; a C++ copy would not beat it). auto on CUDA:
# Triton (one pass, eps read once per block): not yet measured on a GPU.
_OP = register_op("sample_lerp", {"cpu": ("ref",), "cuda": ("triton", "ref")},
                  missing={"ext": "sample_lerp has no compiled-extension kernel (torch.lerp is the CPU path; "
                                  "Triton on GPUs)"})


@custom_op("ganfast::sample_lerp", mutates_args=())
def _sample_lerp_op(a: torch.Tensor, b: torch.Tensor, eps: torch.Tensor, impl: str) -> torch.Tensor:
    from ..triton import grad_penalty as triton_grad_penalty
    a = sample_major(a)
    b = same_layout(b, a)
    out = torch.empty_like(a)
    triton_grad_penalty.sample_lerp(out, a, b, eps.contiguous(), a[0].numel())
    return out


@_sample_lerp_op.register_fake
def _(a, b, eps, impl):
    return torch.empty_like(sample_major(a))


def _setup(ctx, inputs, output):
    a, b, eps, impl = inputs
    ctx.set_materialize_grads(False)  # no gradient in, None out
    ctx.save_for_backward(a, b, eps)


def _backward(ctx, dout):
    if dout is None:
        return None, None, None, None
    a, b, eps = ctx.saved_tensors
    e = eps.reshape([-1] + [1] * (a.ndim - 1))
    da = dout * e if ctx.needs_input_grad[0] else None
    db = dout * (1 - e) if ctx.needs_input_grad[1] else None
    deps = (dout * (a - b)).reshape(a.shape[0], -1).sum(dim=1) if ctx.needs_input_grad[2] else None
    return da, db, deps, None


register_autograd("ganfast::sample_lerp", _backward, setup_context=_setup)


def sample_lerp(a: torch.Tensor, b: torch.Tensor, eps: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """``eps_b · a + (1 − eps_b) · b`` per sample; ``eps`` has one value per sample (shape (B,)). b and eps have
    a's dtype (under autocast any float dtype: they are cast to a's, see ganfast.ops._common)."""
    check_tensor("a", a)
    b, eps = autocast_like(a, b, eps)
    check_tensor("b", b, like=a)
    check_tensor("eps", eps, like=a, ndim=1)
    if a.ndim == 0:
        raise ValueError("a must have a batch dimension first")
    if b.shape != a.shape:
        raise ValueError(f"b has shape {tuple(b.shape)} but a has {tuple(a.shape)}")
    if eps.shape[0] != a.shape[0]:
        raise ValueError(f"eps has {eps.shape[0]} values but the batch is {a.shape[0]}")
    chosen = _OP.resolve(impl, a.device, a.dtype)
    if chosen == "ref":
        with no_autocast(a):
            return sample_lerp_ref(a, b, eps)
    return torch.ops.ganfast.sample_lerp(a, b, eps, chosen)
