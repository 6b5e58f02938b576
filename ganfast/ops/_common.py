"""The op contract: validation and layout helpers shared by the op modules. Errors name the offending argument.

How an op ``foo`` is built (bias_act, upfirdn2d, grad_penalty are complete examples):

1. Reference: ``ganfast/reference/foo.py``, plain PyTorch, the oracle for the tests (float64) and ``impl="ref"``.
2. Registration (``ganfast._dispatch.register_op``): ``_OP = register_op("foo", {"cpu": ("ext", "ref"),
   "cuda": ("ext", "triton", "ref")}, missing={"triton": "why there is none"}, notes={...})``. The entry
   checks dtypes (kernels take ``FLOAT_DTYPES``; ``ref_dtypes`` widens the reference's), the extension and
   Triton availability, and writes the reasons ``ganfast info`` and ``ImplNotSupportedError`` show: an op writes
   none of that itself. ``notes`` says where a route hands work to torch's own kernels (the rule in
   ``ganfast._dispatch``). ``_OP.resolve(impl, x.device, x.dtype, variant)`` gives the concrete impl.
3. Public function: validate with the helpers below (``check_tensor`` for dtype/device/rank, ``check_same_device``,
   ``check_dim``, ``check_epilogue`` for act/alpha/gain/clamp, ``check_finite``, ``check_clamp``); ``"ref"`` calls
   the reference, every other impl the registered op ``torch.ops.ganfast.foo(..., impl)``.
4. Registered op: ``@custom_op("ganfast::foo", mutates_args=())`` with ``register_fake`` (shapes only, so
   torch.compile traces it) and ``register_autograd`` (both below: torch's, with the autocast rule of item 7) whose
   backward is made of registered ops (double backward runs on the kernels). The setup calls
   ``ctx.set_materialize_grads(False)`` and the backward returns None for a None incoming gradient and for every
   input the derivative cannot depend on, never zeros: that is the reference's gradient graph (tests:
   ``support.assert_grad_graph_parity``), and Adam skips a None gradient but steps a zero one.
5. Launch: Triton kernels in ``ganfast/triton/foo.py`` launch inside ``ganfast.triton._common.on_device(x)``;
   compiled kernels through ``ganfast._ext.launch("foo", x.device, dtype code, ..., addresses)``, which calls
   ``_C.foo_cpu`` / ``_C.foo_cuda``. In C++/CUDA (``csrc/``, ``kernels/``) the dtype code becomes a type with
   ``ganfast::dispatch_dtype`` (csrc/common.h) and the op's pybind11 bindings go in its own ``bind_foo(m)`` in
   csrc/module.cpp.
6. Tests in ``tests/test_foo.py`` (float64 parity, gradcheck/gradgradcheck, the gradient graph, every dtype and
   layout, the kernels' grid limits, bad input), benchmarks in ``benchmarks/test_bench_foo.py``.
7. Autocast (``torch.autocast`` on x's device, CPU or CUDA): every op does what torch's autocast does to the torch
   op it stands in for, and nothing inside an op is autocast.
   a. Compute dtype: the dtype of the activation input x. The convolutions (modulated_conv2d, conv2d_resample),
      like torch's conv2d on autocast's lower-precision list, first cast x to the autocast dtype
      (``autocast_input``; float64 stays float64, as under autocast).
   b. Parameters (weights, styles, biases, noise, the second operand of an interpolation) are cast to the
      compute dtype where they are used (StyleGAN's rule: ``w.to(x.dtype)``); an op that outside autocast
      demands x's dtype of them takes any float dtype under autocast (``autocast_like``). The casts are torch's
      differentiable ``.to`` outside the registered ops, so every gradient comes back in its own input's dtype.
      Filters and matrices stay in the kernels' arithmetic type (float32; float64 for float64 x), per-sample
      reductions (grad_penalty) return float32, as without autocast.
   c. Registered ops made with ``custom_op`` run with autocast off (their autocast kernel turns it off and
      redispatches; no casts), so do their backwards (``register_autograd``), and the public functions run the
      reference under ``no_autocast``: kernels, reference and fake impl see the same dtypes and return the same
      dtypes, eager and under torch.compile, in the forward and in every backward.
   Outside autocast nothing changes: a parameter of the wrong dtype is an error, as before.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch

from .._dispatch import FLOAT_DTYPES
from ..reference.bias_act import ACTIVATIONS

__all__ = ["FLOAT_DTYPES", "check_tensor", "check_same_device", "check_dim", "check_finite", "check_clamp",
           "check_epilogue", "compute_dtype", "is_dense", "dense", "same_layout", "AUTOCAST_DEVICES", "custom_op",
           "register_autograd", "without_autocast", "register_adjoint_pair", "autocast_on", "autocast_input",
           "autocast_like", "no_autocast"]

AUTOCAST_DEVICES = ("cpu", "cuda")  # the device types ganfast's kernels serve and torch's autocast covers
_AUTOCAST_LIB = torch.library.Library("ganfast", "FRAGMENT")  # holds the ops' autocast kernels (rule 7c)


def custom_op(name: str, mutates_args=()):
    """``torch.library.custom_op(name, mutates_args=...)`` for a ganfast op, with autocast kernels (CPU, CUDA)
    that run the op with autocast off and its arguments unchanged (rule 7c of the module docstring): inside,
    torch's own calls (convolutions, matmuls) compute in the dtypes the op was given, as the fake impl says."""
    def register(fn):
        op = torch.library.custom_op(name, mutates_args=mutates_args)(fn)
        overload = op._opoverload
        for device_type in AUTOCAST_DEVICES:
            def kernel(_keyset, *args, device_type=device_type):
                with torch.autocast(device_type, enabled=False):
                    return overload(*args)
            _AUTOCAST_LIB.impl(name.split("::")[1], kernel, "Autocast" + torch._C._dispatch_key_for_device(device_type),
                               with_keyset=True)
        return op
    return register


def register_autograd(name: str, backward, setup_context) -> None:
    """``torch.library.register_autograd`` with the backward run with autocast off (rule 7c): its torch ops (the
    sums and products around the registered ops) compute in the dtypes they are given whether the backward runs
    after the autocast region (eager), inside it (a double backward) or is traced with the forward (torch.compile).
    A backward does not know its device beforehand: autocast goes off for every device type where it is on."""
    torch.library.register_autograd(name, without_autocast(backward), setup_context=setup_context)


def without_autocast(backward):
    """``backward`` run with autocast off for every device type where it is on (rule 7c); also for the eager
    ``torch.autograd.Function`` twins of registered ops, which share the registered ops' backward functions."""
    @functools.wraps(backward)
    def backward_without_autocast(ctx, *grads):
        active = [device_type for device_type in AUTOCAST_DEVICES if torch.is_autocast_enabled(device_type)]
        if not active:  # the common case (a backward after the autocast region), at no cost
            return backward(ctx, *grads)
        with contextlib.ExitStack() as stack:
            for device_type in active:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            return backward(ctx, *grads)
    return backward_without_autocast


def register_adjoint_pair(name: str, adjoint_name: str, adjoint_args) -> None:
    """Autograd for two registered ops that are linear in their first input and each other's adjoint (a sampling
    pass and its transpose): the gradient of each is the other applied to the incoming gradient, so every
    derivative order runs on the kernels. ``adjoint_args(inputs)`` gives the other op's arguments after the
    gradient as (tensors, others); the tensors are saved for backward. None flows for a None incoming gradient and
    to every argument but the first (maps and filters are drawn, not learnt)."""
    def setup_context(ctx, inputs, output):
        tensors, ctx.adjoint_others = adjoint_args(inputs)
        ctx.save_for_backward(*tensors)
        ctx.set_materialize_grads(False)

    def backward_by(adjoint):
        def backward(ctx, g):
            dx = adjoint(g, *ctx.saved_tensors, *ctx.adjoint_others) if g is not None and ctx.needs_input_grad[0] \
                else None
            return (dx,) + (None,) * (len(ctx.needs_input_grad) - 1)
        return backward

    register_autograd(name, backward_by(getattr(torch.ops.ganfast, adjoint_name.split("::")[1])), setup_context)
    register_autograd(adjoint_name, backward_by(getattr(torch.ops.ganfast, name.split("::")[1])), setup_context)


def autocast_on(x: torch.Tensor) -> bool:
    """Whether torch.autocast is active for x's device."""
    return x.device.type in AUTOCAST_DEVICES and torch.is_autocast_enabled(x.device.type)


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """The activation input of a convolution op under autocast (rule 7a): cast to the autocast dtype, unless it is
    float64 or autocast is off for its device."""
    if x.dtype != torch.float64 and autocast_on(x):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


def autocast_like(x: torch.Tensor, *tensors: torch.Tensor | None) -> tuple:
    """``tensors`` cast to x's dtype under autocast (rule 7b; None stays None), unchanged outside it (where a
    mismatch is the caller's error)."""
    if not autocast_on(x):
        return tensors
    return tuple(t if t is None or not t.is_floating_point() else t.to(x.dtype) for t in tensors)


def no_autocast(x: torch.Tensor):
    """A context in which autocast is off for x's device (rule 7c: the reference runs on the dtypes it is given)."""
    return torch.autocast(x.device.type, enabled=False) if autocast_on(x) else contextlib.nullcontext()


def check_tensor(name: str, t, *, dtypes=FLOAT_DTYPES, like: torch.Tensor | None = None,
                 ndim: int | None = None) -> None:
    """Raises TypeError/ValueError naming ``name`` unless ``t`` is a tensor of an accepted dtype (matching
    ``like``'s device and dtype when given) and rank."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if like is not None:
        if t.device != like.device:
            raise ValueError(f"{name} is on {t.device} but x is on {like.device}")
        if t.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {like.dtype}; cast it first")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")


def check_same_device(x: torch.Tensor, **tensors) -> None:
    """ValueError naming the first of ``tensors`` (name=tensor or None) that is not on x's device."""
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")


def check_finite(name: str, value, minimum: float | None = None) -> float:
    """``value`` as a float, or an error naming it when it is NaN, infinite, below ``minimum`` (when given) or not a
    number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be finite{'' if minimum is None else f' and >= {minimum:g}'}, got {value}")
    return value


def check_clamp(clamp) -> float | None:
    """The epilogue's clamp: None (no clamp) or a finite number >= 0, as a float; a ValueError naming it else."""
    if clamp is None:
        return None
    clamp = float(clamp)
    if not clamp >= 0 or math.isinf(clamp):
        raise ValueError(f"clamp must be None or a finite number >= 0, got {clamp}")
    return clamp


def check_epilogue(act: str, alpha, gain, clamp) -> tuple[str, float, float, float | None]:
    """The epilogue y = clamp(act(z) · gain, ±clamp) of bias_act and the fused convolutions, checked and with
    defaults filled in: (act, alpha, gain, clamp); alpha/gain None take the activation's defaults, clamp None
    means no clamp. alpha and gain must be finite, clamp finite and ≥ 0."""
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    spec = ACTIVATIONS[act]
    alpha = check_finite("alpha", spec.def_alpha if alpha is None else alpha)
    gain = check_finite("gain", spec.def_gain if gain is None else gain)
    return act, alpha, gain, check_clamp(clamp)


def check_dim(dim, ndim: int, name: str = "dim") -> int:
    """``dim`` normalised to [0, ndim), or a ValueError naming it."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{name} must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{name}={dim} is out of range for a {ndim}-D tensor")
    return dim % ndim


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The kernels' arithmetic type for ``dtype``: float64 stays float64, every other float computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def is_dense(t: torch.Tensor) -> bool:
    """True if ``t`` covers its storage span exactly once (any dim order): the layout the kernels index."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` if it is dense, else a contiguous copy."""
    return t if t.is_contiguous() or is_dense(t) else t.contiguous()


def same_layout(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``t`` with exactly ``like``'s strides (copied if they differ), so kernels can share one index."""
    if t is None or t.stride() == like.stride():
        return t
    return torch.empty_like(like).copy_(t)
