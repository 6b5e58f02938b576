"""spectral_norm: the power iteration of spectral normalization for many weights in one launch, and σ.

For each weight W (viewed as the h × w matrix W_mat: ``dim`` first, the rest flattened) with vectors u (h), v (w):

    n iterations in place:  u ← n(W_mat v), v ← n(W_matᵀ u)   (u_first: torch's parametrization flavour)
                       or:  v ← n(W_matᵀ u), u ← n(W_mat v)   (torch's hook flavour),  n(x) = x / max(‖x‖, eps)
    σ = uᴴ W_mat v (uᵀ W_mat v for real weights), returned with copies of u and v (the constants the normalised
    weight W/σ is built from). Complex weights (impl="ref" only) use the conjugate transpose, as torch does.

Registered ops (both with fake impls, so torch.compile traces them):
    ganfast::spectral_norm_power_  the iteration + σ for a list of weights; writes u, v in place and returns one
                                   flat tensor holding [σ, u, v] per weight (no autograd: it runs under no_grad)
    ganfast::spectral_norm_sigma   σ as a differentiable function of W: its value comes from the power launch,
                                   its gradient is dσ/dW = u vᵀ (u, v constants), so W/σ has torch's gradients
                                   to any order.
Backends: "ext" (C++ on CPU; on GPU one CUDA launch for all weights), "ref" (ganfast.reference.spectral_norm).
No Triton kernel: the iteration is a chain of dependent mat-vecs over whole vectors, which needs either one
program per weight or a grid-wide barrier; the CUDA kernel does the former.
float16/bfloat16: the kernels compute in float32 and store u, v, σ in the weight dtype (torch iterates in the
weight dtype itself, so results agree to that dtype's precision, not bitwise).
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Sequence

import torch

from .. import _ext
from .._dispatch import default_impl, register_op
from ..reference import spectral_norm as ref
from ._common import FLOAT_DTYPES, check_dim, check_tensor, custom_op, no_autocast, register_autograd

__all__ = ["SNResult", "power_iteration", "power_iteration_one", "spectral_norm_sigma"]


# auto on CPU, measured (busy 2-core machine, torch at 1 thread; power iteration + σ for the 40 weights of the
# benchmarks' BigGAN-like D, fp32, 1 iteration): C++ 0.9 ms vs 4.3 ms for the reference (0.09M elements) and
# 6.1 ms vs 14.4 ms (5.7M elements); torch's own per-weight loop took 3.0 and 9.9 ms. auto on CUDA: the one-launch
# kernel first; not yet measured on a GPU.
# One-weight calls of a layer's forward (ganfast/nn/utils/_sn_state.py) have classes of their own on the CPU, where
# the kernel's fixed cost of a call (about 15 µs of Python, validation and launch) loses to torch's mat-vecs
# (2-core AMD EPYC, AVX-512, fp32, busy machine, best of 7 rounds of medians; power_iteration against
# torch's hook code): "sigma", σ alone as in eval mode, one pass over W either way: 256×2304: 43 µs vs 30 µs for
# torch's mv + dot; 512×4608: 123 vs 114 µs. "small", an iteration of a weight under 2^16 elements: 64×27: 15 vs
# 15 µs. Larger weights in training keep the kernel (two passes over W against torch's three): 128×576: 21 vs
# 24 µs; 256×2304: 67 vs 105 µs; 512×4608: 228 vs 393 µs.
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
# complex weights (torch's parametrization supports them: vdot and the conjugate transpose) take the reference:
# the kernels are real-valued.
OP = register_op("spectral_norm", {"cpu": ("ext", "ref"), "cuda": ("ext", "ref"), "cpu:sigma": ("ref", "ext"),
                                   "cpu:small": ("ref", "ext")},
                 ref_dtypes=FLOAT_DTYPES + COMPLEX_DTYPES,
                 missing={"triton": "spectral_norm has no Triton kernel (the CUDA kernel runs the whole iteration "
                                    "in one launch)"})


class SNResult(NamedTuple):
    """One weight's result: σ (0-d), and copies of u and v after the iteration (none of them require grad)."""
    sigma: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor


def _matrix_dims(shape: Sequence[int], dim: int) -> tuple[int, int, int]:
    """(A, h, R): the weight is A blocks of h rows of R elements when ``dim`` is moved first (csrc/spectral_norm.h)."""
    outer = inner = 1
    for d, size in enumerate(shape):
        if d < dim:
            outer *= size
        elif d > dim:
            inner *= size
    return outer, shape[dim], inner


def _out_offsets(us: Sequence[torch.Tensor], vs: Sequence[torch.Tensor]) -> tuple[list[int], int]:
    """Where each weight's [σ, u, v] starts in the flat output, and the output's length."""
    offsets, total = [], 0
    for u, v in zip(us, vs):
        offsets.append(total)
        total += 1 + u.shape[0] + v.shape[0]
    return offsets, total


_EPS_BITS: dict[float, int] = {}
_DESCRIPTORS: dict[tuple, torch.Tensor] = {}  # packed SNMatrix records by content: pointers persist across steps
_MAX_DESCRIPTORS = 256
_CAPTURED_DESCRIPTORS: dict[tuple, torch.Tensor] = {}  # records read by captured CUDA graphs: kept for good


def _eps_bits(eps: float) -> int:
    if eps not in _EPS_BITS:
        _EPS_BITS[eps] = struct.unpack("<q", struct.pack("<d", eps))[0]
    return _EPS_BITS[eps]


def _descriptors(weights, us, vs, dims, n_iters, eps, u_first, offsets) -> torch.Tensor:
    """The SNMatrix records (ten int64 each, eps as its float64 bits) on the weights' device, cached by content."""
    rows = []
    for w, u, v, dim, n, e, uf, off in zip(weights, us, vs, dims, n_iters, eps, u_first, offsets):
        rows.append((w.data_ptr(), u.data_ptr(), v.data_ptr(), *_matrix_dims(w.shape, dim), n, int(uf), off,
                     _eps_bits(e)))
    device = weights[0].device
    key = (device, *rows)
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    table = _DESCRIPTORS.get(key, _CAPTURED_DESCRIPTORS.get(key))
    if table is None:
        if capturing:  # the copy below would wait for the device, which a capture forbids
            raise RuntimeError("spectral_norm: power_iteration met weights or u/v vectors it has not seen before "
                               "while a CUDA graph is being captured; run it once with the same tensors before "
                               "capturing (the usual warm-up)")
        if len(_DESCRIPTORS) >= _MAX_DESCRIPTORS:
            _DESCRIPTORS.clear()
        table = torch.tensor(rows, dtype=torch.int64).to(device)
        _DESCRIPTORS[key] = table
    if capturing:  # a captured graph reads this address at every replay: never free it
        _CAPTURED_DESCRIPTORS[key] = table
    elif table.is_cuda:  # a kernel on this stream reads it: keep it alive for that stream after eviction
        table.record_stream(torch.cuda.current_stream(device))
    return table


def _run_power(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor], dims: list[int],
               n_iters: list[int], eps: list[float], u_first: list[bool], impl: str) -> torch.Tensor:
    """The launch behind ganfast::spectral_norm_power_: one flat [σ, u, v]-per-weight tensor, u and v updated."""
    offsets, total = _out_offsets(us, vs)
    out = torch.empty(total, dtype=weights[0].dtype, device=weights[0].device)
    weights = [w.contiguous() for w in weights]  # kept alive until the launch returns
    if impl == "ref":
        for w, u, v, dim, n, e, uf, off in zip(weights, us, vs, dims, n_iters, eps, u_first, offsets):
            out[off] = ref.power_iteration(w, u, v, dim, n, e, uf)
            out[off + 1:off + 1 + u.numel() + v.numel()] = torch.cat([u, v])
    elif weights:
        table = _descriptors(weights, us, vs, dims, n_iters, eps, u_first, offsets)
        _ext.launch("spectral_norm", out.device, _ext.DTYPE_CODES[out.dtype], len(weights), table.data_ptr(),
                    out.data_ptr())
    return out


@custom_op("ganfast::spectral_norm_power_", mutates_args=("us", "vs"))
def _power_op(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor], dims: list[int],
              n_iters: list[int], eps: list[float], u_first: list[bool], impl: str) -> torch.Tensor:
    return _run_power(weights, us, vs, dims, n_iters, eps, u_first, impl)


@_power_op.register_fake
def _(weights, us, vs, dims, n_iters, eps, u_first, impl):
    _, total = _out_offsets(us, vs)
    return weights[0].new_empty(total)


@custom_op("ganfast::spectral_norm_sigma", mutates_args=())
def _sigma_op(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor, dim: int) -> torch.Tensor:
    return sigma.clone()


@_sigma_op.register_fake
def _(weight, u, v, sigma, dim):
    return torch.empty_like(sigma)


def _outer_as_weight(g: torch.Tensor, u: torch.Tensor, v: torch.Tensor, shape: list[int], dim: int) -> torch.Tensor:
    """g · u vᴴ laid out as a weight of ``shape`` (the inverse of moving ``dim`` first and flattening the rest);
    for complex weights the conjugate of σ = uᴴ W v's derivative, as torch's complex autograd takes it."""
    moved = [shape[dim]] + shape[:dim] + shape[dim + 1:]
    grad = (g * torch.outer(u, v.conj())).reshape(moved)
    return grad.movedim(0, dim) if dim else grad


def _sigma_setup(ctx, inputs, output):
    weight, u, v, sigma, dim = inputs
    ctx.dim, ctx.shape = dim, list(weight.shape)
    ctx.set_materialize_grads(False)  # no gradient in, None out
    ctx.save_for_backward(u, v)


def _sigma_backward(ctx, grad):
    u, v = ctx.saved_tensors
    needed = grad is not None and ctx.needs_input_grad[0]
    grad_weight = _outer_as_weight(grad, u, v, ctx.shape, ctx.dim) if needed else None
    return grad_weight, None, None, None, None


class _EagerSigma(torch.autograd.Function):
    """ganfast::spectral_norm_sigma for eager calls: the same forward and backward without the custom-op
    dispatcher's Python layers (≈50 µs a call on CPU, more than the work for a typical layer). Old-style
    forward(ctx, ...): the setup_context style costs another ≈45 µs a call."""

    @staticmethod
    def forward(ctx, weight, u, v, sigma, dim):
        _sigma_setup(ctx, (weight, u, v, sigma, dim), sigma)
        return sigma

    @staticmethod
    def backward(ctx, grad):
        return _sigma_backward(ctx, grad)


register_autograd("ganfast::spectral_norm_sigma", _sigma_backward, setup_context=_sigma_setup)


def _check_like(name: str, t: torch.Tensor, other_name: str, other: torch.Tensor) -> None:
    if t.device != other.device:
        raise ValueError(f"{name} is on {t.device} but {other_name} is on {other.device}")
    if t.dtype != other.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {other_name} has {other.dtype}")


def _check_disjoint(named: list[tuple[str, torch.Tensor]]) -> None:
    """Every u and v is written in place by its own weight's block: no two may share memory (meta tensors have
    none)."""
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size(), name) for name, t in named
                   if t.device.type != "meta")
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"{first} and {second} share memory (each u and v is updated in place)")


_VALIDATED: dict[tuple, tuple] = {}  # argument signatures power_iteration accepted -> the normalised arguments
_MAX_VALIDATED = 1024


def _signature(weights, us, vs, dims, n_power_iterations, eps, u_first) -> tuple | None:
    """Everything the validation of power_iteration's arguments depends on (None if they are not all tensors): a
    call with the same signature as an accepted one is accepted with the same result, so per-layer calls, which
    repeat their arguments at every forward, are checked once (≈10 µs a weight saved on CPU)."""
    try:
        return (tuple((w.data_ptr(), u.data_ptr(), v.data_ptr(), w.shape, u.shape, v.shape, w.dtype, u.dtype,
                       v.dtype, w.device, u.device, v.device, u.is_contiguous(), v.is_contiguous())
                      for w, u, v in zip(weights, us, vs)),
                tuple(dims), tuple(map(type, dims)), tuple(n_power_iterations), tuple(eps), tuple(u_first))
    except (AttributeError, TypeError, RuntimeError):  # not tensors, or unhashable entries: the full checks say why
        return None


def _validate(weights, us, vs, dims, n_power_iterations, eps, u_first, compiling: bool) -> tuple:
    """power_iteration's argument checks; returns (dims normalised, n_iters, eps, u_first) as lists."""
    dims = list(dims)
    for k, (w, u, v) in enumerate(zip(weights, us, vs)):
        check_tensor(f"weights[{k}]", w, dtypes=FLOAT_DTYPES + COMPLEX_DTYPES)
        _check_like(f"weights[{k}]", w, "weights[0]", weights[0])
        if w.ndim == 0:
            raise ValueError(f"weights[{k}] must have at least one dimension")
        dims[k] = check_dim(dims[k], w.ndim, f"dims[{k}]")
        outer, rows, inner = _matrix_dims(w.shape, dims[k])
        if w.numel() == 0:
            raise ValueError(f"weights[{k}] is empty (shape {tuple(w.shape)})")
        for name, vec, length in ((f"us[{k}]", u, rows), (f"vs[{k}]", v, outer * inner)):
            check_tensor(name, vec, dtypes=FLOAT_DTYPES + COMPLEX_DTYPES, ndim=1)
            _check_like(name, vec, f"weights[{k}]", w)
            if vec.shape[0] != length:
                raise ValueError(f"{name} has length {vec.shape[0]} but weights[{k}] needs {length}")
            if not vec.is_contiguous():
                raise ValueError(f"{name} must be contiguous (it is updated in place)")
    if not compiling:  # addresses do not exist while tracing
        _check_disjoint([(f"us[{k}]", u) for k, u in enumerate(us)] + [(f"vs[{k}]", v) for k, v in enumerate(vs)])
    n_iters = [int(n) for n in n_power_iterations]
    if any(n < 0 for n in n_iters):
        raise ValueError(f"n_power_iterations must be >= 0, got {n_iters}")
    eps = [float(e) for e in eps]
    if any(not e > 0 for e in eps):
        raise ValueError(f"eps must be > 0, got {eps}")
    u_first = [bool(b) for b in u_first]
    return dims, n_iters, eps, u_first


# ---- public API -----------------------------------------------------------------------------------------------

def power_iteration(weights: Sequence[torch.Tensor], us: Sequence[torch.Tensor], vs: Sequence[torch.Tensor],
                    dims: Sequence[int], n_power_iterations: Sequence[int], eps: Sequence[float],
                    u_first: Sequence[bool], impl: str | None = None) -> list[SNResult]:
    """Runs spectral normalization's power iteration for every weight, all in one launch, writing u and v in place.

    Args:
        weights: weights of one device and dtype (float16/bfloat16/float32/float64; complex64/complex128 with
            impl="ref", the kernels being real-valued), each at least 1-D.
        us, vs: per weight, contiguous 1-D vectors of length h = W.shape[dim] and w = W.numel() / h, same device
            and dtype as the weights; updated in place.
        dims: per weight, the dimension that becomes W_mat's rows.
        n_power_iterations: per weight, iterations to run (0: σ only, as torch does in eval mode).
        eps: per weight, the normalisation's eps (> 0).
        u_first: per weight, True for torch's parametrization order (u then v), False for the hook order (v then u).
        impl: None/"auto"/"cuda", "ref" or "ext" (see ganfast._dispatch).
    Returns:
        One :class:`SNResult` (σ, u copy, v copy) per weight, without gradient; pass them to
        :func:`spectral_norm_sigma` for a σ differentiable in W.
    """
    count = len(weights)
    for argname, seq in (("us", us), ("vs", vs), ("dims", dims), ("n_power_iterations", n_power_iterations),
                         ("eps", eps), ("u_first", u_first)):
        if len(seq) != count:
            raise ValueError(f"{argname} has {len(seq)} entries but there are {count} weights")
    if not count:
        return []
    compiling = torch.compiler.is_compiling()
    key = None if compiling else _signature(weights, us, vs, dims, n_power_iterations, eps, u_first)
    checked = _VALIDATED.get(key) if key is not None else None
    if checked is None:
        checked = _validate(weights, us, vs, dims, n_power_iterations, eps, u_first, compiling)
        if key is not None:
            if len(_VALIDATED) >= _MAX_VALIDATED:
                _VALIDATED.clear()
            _VALIDATED[key] = checked
    dims, n_iters, eps, u_first = checked
    chosen = OP.resolve(impl, weights[0].device, weights[0].dtype)
    args = ([w.detach() for w in weights], list(us), list(vs), dims, n_iters, eps, u_first, chosen)
    with torch.no_grad(), no_autocast(weights[0]):  # the eager route skips the op's autocast kernel
        if torch.compiler.is_compiling():
            out = torch.ops.ganfast.spectral_norm_power_(*args)
        else:  # the op's own body, without the dispatcher's Python layers (≈150 µs a call on CPU)
            out = _run_power(*args)
            torch.autograd.graph.increment_version(args[1] + args[2])
    offsets, _ = _out_offsets(us, vs)
    results = []
    for off, u, v in zip(offsets, us, vs):
        h, w = u.shape[0], v.shape[0]
        results.append(SNResult(out[off], out[off + 1:off + 1 + h], out[off + 1 + h:off + 1 + h + w]))
    return results


def power_iteration_one(holder, weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int,
                        n_power_iterations: int, eps: float, u_first: bool, impl: str | None) -> SNResult:
    """:func:`power_iteration` for one weight, as a layer's forward calls it at every step: the checks, the impl
    choice and the launch's descriptor record of the first call are kept on ``holder`` (the layer's spectral-norm
    object) and reused while everything they depend on (addresses, shape, strides, dtype, device, settings, the
    default impl) is unchanged, so a repeated CPU call costs the launch and a few µs (the general route: ≈30 µs).
    Other calls (CUDA, tracing, a choice other than the C++ kernel) take :func:`power_iteration`."""
    key = (weight.data_ptr(), u.data_ptr(), v.data_ptr(), weight.shape, weight.stride(), weight.dtype, weight.device,
           u.is_contiguous(), v.is_contiguous(), dim, n_power_iterations, eps, u_first, impl, default_impl())
    plan = holder.__dict__.get("_ganfast_plan")
    if plan is None or plan[0] != key:
        result = power_iteration([weight], [u], [v], [dim], [n_power_iterations], [eps], [u_first], impl)[0]
        plan = None
        if (weight.device.type == "cpu" and weight.is_contiguous() and not torch.compiler.is_compiling()
                and OP.resolve(impl, weight.device, weight.dtype) == "ext"):
            table = _descriptors([weight], [u], [v], [dim % weight.ndim], [int(n_power_iterations)], [float(eps)],
                                 [bool(u_first)], [0])  # the arguments as power_iteration has just accepted them
            plan = (key, table, _ext.DTYPE_CODES[weight.dtype], 1 + u.shape[0] + v.shape[0], 1 + u.shape[0])
        holder.__dict__["_ganfast_plan"] = plan
        return result
    _, table, code, total, v_start = plan
    out = torch.empty(total, dtype=weight.dtype)
    _ext.launch("spectral_norm", out.device, code, 1, table.data_ptr(), out.data_ptr())
    torch.autograd.graph.increment_version((u, v))
    return SNResult(out[0], out[1:v_start], out[v_start:])


def spectral_norm_sigma(weight: torch.Tensor, result: SNResult, dim: int) -> torch.Tensor:
    """σ = uᵀ W_mat v from a :func:`power_iteration` result, differentiable in ``weight`` (dσ/dW = u vᵀ).

    The value is ``result.sigma`` (computed in the power launch), so ``result`` must come from this same weight as
    it is now: run the iteration with 0 iterations to get σ for a changed weight.
    """
    if torch.compiler.is_compiling():
        return torch.ops.ganfast.spectral_norm_sigma(weight, result.u, result.v, result.sigma, dim)
    return _EagerSigma.apply(weight, result.u, result.v, result.sigma, dim)
