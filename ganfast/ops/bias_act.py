"""bias_act: fused bias + activation + gain + clamp (StyleGAN2-ADA's ``bias_act``), first and second derivatives.

    y = clamp(act(x + b) · gain, −clamp, +clamp)        (b broadcast along ``dim``; clamp=None: no clamp)

Registered ops (all with fake impls, so torch.compile traces them):
    ganfast::bias_act        forward                                        (order 0)
    ganfast::bias_act_grad   dx = dy · gain · act'(x + b) · [|y| < clamp]   (order 1)
    ganfast::bias_act_grad2  d(dx)/dx contracted: g · dy · gain · act''(x + b) · [|y| < clamp]   (order 2)
The backward of each is made of the next, so double backward (R1, path length) runs on the kernels.
Backends: "ext" (C++ on CPU, CUDA on GPU), "triton", "ref" (ganfast.reference.bias_act).
"""
from __future__ import annotations

import functools

import torch

from .. import _ext
from .._dispatch import register_op
from ..reference.bias_act import ACTIVATIONS
from ..reference.bias_act import bias_act as bias_act_ref
from ._common import (autocast_like, check_dim, check_epilogue, check_tensor, custom_op, dense, no_autocast,
                      register_autograd, same_layout, without_autocast)

__all__ = ["bias_act", "ACTIVATIONS"]


# auto on CPU, measured (2 cores, fp32, 1 thread, min of medians; benchmarks/cpu_table.py --only rows_bias_act_small):
# the C++ kernel beats eager torch for the piecewise-linear activations, clamped (the StyleGAN case: 2-5x at
# 4x128x64x64) and unclamped (R3GAN's lrelu: the reference's torch.where is about 15x slower than F.leaky_relu, and
# the kernel beats F.leaky_relu(x + b) * gain: 8x128x32x32 forward+backward 0.73 vs 3.0 ms; 8x64x8x8 82 vs 109 µs,
# eager calls taking the autograd.Function route below). torch's vectorised transcendentals win for the rest, so
# those calls ("cpu:other") take the reference.
# auto on CUDA: the CUDA kernel first (lowest launch overhead), Triton second: not yet measured on a GPU.
_OP = register_op("bias_act", {"cpu": ("ext", "ref"), "cpu:other": ("ref",), "cuda": ("ext", "triton", "ref")})
_CPU_EXT_ACTS = ("linear", "relu", "lrelu")


def _launch(impl: str, order: int, x: torch.Tensor, b: torch.Tensor | None, g: torch.Tensor | None,
            h: torch.Tensor | None, y: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float,
            clamp: float | None) -> torch.Tensor:
    """Runs the elementwise pass of ``order`` with the chosen backend; returns a tensor laid out like x."""
    x = dense(x)
    b = None if b is None else b.contiguous()  # the kernels read b with stride 1 (callers of the op may pass views)
    g, h, y = (same_layout(t, x) for t in (g, h, y))
    out = torch.empty_like(x)
    clamp = -1.0 if clamp is None else _clamp_in(x.dtype, clamp)
    channels = x.shape[dim] if x.ndim else 1
    stride_c = x.stride(dim) if channels > 1 else 1  # a size-1 dim may carry any stride
    code = ACTIVATIONS[act].code
    if impl == "triton":
        from ..triton import bias_act as triton_bias_act
        triton_bias_act.bias_act(order, out, x, b, g, h, y, channels, stride_c, code, alpha, gain, clamp)
    elif x.numel():
        addr = _ext.address
        _ext.launch("bias_act", x.device, _ext.DTYPE_CODES[x.dtype], code, order, x.numel(), channels,
                    stride_c, alpha, gain, clamp, addr(out), addr(x), addr(b), addr(g), addr(h), addr(y))
    return out


@functools.lru_cache(maxsize=256)
def _clamp_in(dtype: torch.dtype, clamp: float) -> float:
    """``clamp`` rounded to ``dtype``: clamped outputs are stored as that value, so the gradient mask
    (|y| < clamp) must compare against it too (the reference compares in the tensor's dtype)."""
    return float(torch.tensor(clamp, dtype=dtype)) if dtype in (torch.float16, torch.bfloat16) else clamp


# ---- registered ops -------------------------------------------------------------------------------------------

@custom_op("ganfast::bias_act", mutates_args=())
def _bias_act_op(x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float,
                 clamp: float | None, impl: str) -> torch.Tensor:
    return _launch(impl, 0, x, b, None, None, None, dim, act, alpha, gain, clamp)


@custom_op("ganfast::bias_act_grad", mutates_args=())
def _bias_act_grad_op(dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor | None, dim: int,
                      act: str, alpha: float, gain: float, clamp: float | None, impl: str) -> torch.Tensor:
    return _launch(impl, 1, x, b, dy, None, y, dim, act, alpha, gain, clamp)


@custom_op("ganfast::bias_act_grad2", mutates_args=())
def _bias_act_grad2_op(g: torch.Tensor, dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None,
                       y: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float, clamp: float | None,
                       impl: str) -> torch.Tensor:
    return _launch(impl, 2, x, b, g, dy, y, dim, act, alpha, gain, clamp)


@_bias_act_op.register_fake
def _(x, b, dim, act, alpha, gain, clamp, impl):
    return torch.empty_like(dense(x))


@_bias_act_grad_op.register_fake
def _(dy, x, b, y, dim, act, alpha, gain, clamp, impl):
    return torch.empty_like(dense(x))


@_bias_act_grad2_op.register_fake
def _(g, dy, x, b, y, dim, act, alpha, gain, clamp, impl):
    return torch.empty_like(dense(x))


def _sum_to_bias(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.sum(dim=[d for d in range(t.ndim) if d != dim]) if t.ndim > 1 else t


def _setup_fwd(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp, impl = inputs
    ctx.params = (dim, act, alpha, gain, clamp, impl)
    ctx.set_materialize_grads(False)  # no gradient in, None out: zeros would make x and b look used
    ctx.save_for_backward(x, b, output if clamp is not None else None)


def _grad_ops(ctx) -> tuple:
    """The derivative ops a backward builds on: the registered ops, or (after a forward of the eager route) their
    autograd.Function twins, so that a double backward stays off the dispatcher too, or, on the eager route
    without grad mode (a backward that records no graph: no create_graph), the bare launches."""
    if getattr(ctx, "eager", False):
        if not torch.is_grad_enabled():
            return _launch_grad, _launch_grad2
        return _EagerBiasActGrad.apply, _EagerBiasActGrad2.apply
    return torch.ops.ganfast.bias_act_grad, torch.ops.ganfast.bias_act_grad2


def _launch_grad(dy, x, b, y, dim, act, alpha, gain, clamp, impl):
    return _launch(impl, 1, x, b, dy, None, y, dim, act, alpha, gain, clamp)


def _launch_grad2(g, dy, x, b, y, dim, act, alpha, gain, clamp, impl):
    return _launch(impl, 2, x, b, g, dy, y, dim, act, alpha, gain, clamp)


def _backward_fwd(ctx, dy):
    x, b, y = ctx.saved_tensors
    dim, act, alpha, gain, clamp, impl = ctx.params
    dx = db = None
    if dy is not None and (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
        if act == "linear" and clamp is None:  # dx depends on dy alone: x and b stay out of its graph
            dx = dy if gain == 1 else dy * gain
        else:
            dx = _grad_ops(ctx)[0](dy, x, b, y, dim, act, alpha, gain, clamp, impl)
        if b is not None and ctx.needs_input_grad[1]:
            db = _sum_to_bias(dx, dim)
    return dx if ctx.needs_input_grad[0] else None, db, None, None, None, None, None, None


def _setup_grad(ctx, inputs, output):
    dy, x, b, y, dim, act, alpha, gain, clamp, impl = inputs
    ctx.params = (dim, act, alpha, gain, clamp, impl)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(dy, x, b, y)


def _backward_grad(ctx, ddx):
    dy, x, b, y = ctx.saved_tensors
    dim, act, alpha, gain, clamp, impl = ctx.params
    d_dy = d_x = d_b = None
    if ddx is None:
        return None, None, None, None, None, None, None, None, None, None
    grad_op, grad2_op = _grad_ops(ctx)
    if ctx.needs_input_grad[0]:  # dx is linear in dy
        d_dy = grad_op(ddx, x, b, y, dim, act, alpha, gain, clamp, impl)
    # act'' = 0 almost everywhere for the piecewise-linear activations: dx does not depend on x or b, so their
    # gradients are None (not zeros), as in StyleGAN2-ADA and the reference; Adam then leaves b alone.
    if ACTIVATIONS[act].has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
        d_x = grad2_op(ddx, dy, x, b, y, dim, act, alpha, gain, clamp, impl)
        if b is not None and ctx.needs_input_grad[2]:
            d_b = _sum_to_bias(d_x, dim)
    return d_dy, d_x if ctx.needs_input_grad[1] else None, d_b, None, None, None, None, None, None, None


def _backward_grad2(ctx, *grads):
    raise NotImplementedError("ganfast.ops.bias_act supports first and second derivatives; a third-order "
                              "derivative was requested (use impl='ref' for higher orders)")


register_autograd("ganfast::bias_act", _backward_fwd, setup_context=_setup_fwd)
register_autograd("ganfast::bias_act_grad", _backward_grad, setup_context=_setup_grad)
register_autograd("ganfast::bias_act_grad2", _backward_grad2,
                  setup_context=lambda ctx, inputs, output: None)


class _EagerBiasAct(torch.autograd.Function):
    """ganfast::bias_act for eager calls with a gradient to record: the same launches and backward formulas without
    the custom-op dispatcher's Python layers (measured on CPU at 8x64x8x8 fp32: about 45 µs of a forward with grad
    and 100 µs of a forward+backward, more than the work). Old-style forward(ctx, ...): the setup_context style
    costs more per call."""

    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp, impl):
        y = _launch(impl, 0, x, b, None, None, None, dim, act, alpha, gain, clamp)
        ctx.eager = True
        _setup_fwd(ctx, (x, b, dim, act, alpha, gain, clamp, impl), y)
        return y

    backward = staticmethod(without_autocast(_backward_fwd))


class _EagerBiasActGrad(torch.autograd.Function):
    """ganfast::bias_act_grad on the eager route (see _EagerBiasAct)."""

    @staticmethod
    def forward(ctx, dy, x, b, y, dim, act, alpha, gain, clamp, impl):
        ctx.eager = True
        _setup_grad(ctx, (dy, x, b, y, dim, act, alpha, gain, clamp, impl), None)
        return _launch_grad(dy, x, b, y, dim, act, alpha, gain, clamp, impl)

    backward = staticmethod(without_autocast(_backward_grad))


class _EagerBiasActGrad2(torch.autograd.Function):
    """ganfast::bias_act_grad2 on the eager route (see _EagerBiasAct)."""

    @staticmethod
    def forward(ctx, g, dy, x, b, y, dim, act, alpha, gain, clamp, impl):
        return _launch_grad2(g, dy, x, b, y, dim, act, alpha, gain, clamp, impl)

    backward = staticmethod(_backward_grad2)


# ---- public API -----------------------------------------------------------------------------------------------

def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str | None = None) -> torch.Tensor:
    """Fused ``clamp(act(x + b) * gain, -clamp, clamp)``, a drop-in for StyleGAN2-ADA's ``bias_act``.

    Args:
        x: input tensor of any shape (float16/bfloat16/float32/float64; any dense layout, e.g. channels_last).
        b: optional 1-D bias of length ``x.shape[dim]``, same device and dtype as ``x`` (under autocast any float
            dtype: it is cast to x's, see ganfast.ops._common).
        dim: the dimension of ``x`` that ``b`` runs along.
        act: one of ``ACTIVATIONS`` (linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish).
        alpha: activation parameter (lrelu slope); None: the activation's default.
        gain: output scale; None: the activation's default (√2 for relu, lrelu, swish; 1 otherwise).
        clamp: clamp the output to [-clamp, clamp] (≥ 0); None: no clamping.
        impl: None/"auto"/"cuda", "ref", "ext" or "triton" (see ganfast._dispatch).
    Returns:
        A tensor like ``x`` (same shape, dtype, device and dense layout). Differentiable twice in x and b.
    """
    check_tensor("x", x)
    act, alpha, gain, clamp = check_epilogue(act, alpha, gain, clamp)
    (b,) = autocast_like(x, b)
    if b is not None:
        check_tensor("b", b, like=x, ndim=1)
        if x.ndim == 0:
            raise ValueError("x must have at least one dimension when b is given")
        dim = check_dim(dim, x.ndim)
        if b.shape[0] != x.shape[dim]:
            raise ValueError(f"b has length {b.shape[0]} but x.shape[{dim}] is {x.shape[dim]}")
    else:
        dim = 0  # without b, dim plays no part (as in StyleGAN2-ADA)
    variant = None if act in _CPU_EXT_ACTS else "other"
    chosen = _OP.resolve(impl, x.device, x.dtype, variant)
    if chosen == "ref":
        with no_autocast(x):
            return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    if _plain_eager_call(x, b):  # the op's own body, without the dispatcher's Python layers
        if torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)):
            return _EagerBiasAct.apply(x, b, dim, act, alpha, gain, clamp, chosen)
        return _launch(chosen, 0, x, b, None, None, None, dim, act, alpha, gain, clamp)
    return torch.ops.ganfast.bias_act(x, b, dim, act, alpha, gain, clamp, chosen)


def _plain_eager_call(x: torch.Tensor, b: torch.Tensor | None) -> bool:
    """Whether the registered op would do nothing but run its body and its autograd formulas: no tracing
    (torch.compile, torch.jit.trace), no tensor subclass, functorch transform or dispatch mode that must see the op.
    The functorch and dispatch-mode checks are torch internals: where a torch release lacks them, every call goes
    through the dispatcher."""
    if _TORCH_INTERNALS is None:
        return False
    functorch_wrapped, dispatch_mode = _TORCH_INTERNALS
    return (type(x) in _PLAIN and (b is None or type(b) in _PLAIN) and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not functorch_wrapped(x)
            and (b is None or not functorch_wrapped(b)) and dispatch_mode() is None)


# Plain tensors, and parameters (a model's bias: nn.Parameter turns torch functions' overrides off, so the op sees a
# plain tensor)
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _torch_internals():
    """(is_functorch_wrapped_tensor, _get_current_dispatch_mode), or None where this torch lacks either."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
        return torch._C._functorch.is_functorch_wrapped_tensor, _get_current_dispatch_mode
    except (ImportError, AttributeError):
        return None


_TORCH_INTERNALS = _torch_internals()
