"""color_matrix: a per-image affine map of each pixel's channel vector (ADA's colour transforms in one pass).

    out[n, :, y, x] = matrix[n] · x[n, :, y, x] + offset[n]        matrix (N, C, C), offset (N, C), C ≤ 4

Registered op ``ganfast::color_matrix`` (with a fake impl). It is affine in x, so the gradient is the same op
with matrix[n]ᵀ and no offset: every derivative order runs on the kernels. No gradient flows to matrix or offset
(augmentation parameters are drawn, not learnt).
Backends: "ext" (C++ on CPU, CUDA on GPU), "triton", "ref" (ganfast.reference.color_matrix: one baddbmm).
"""
from __future__ import annotations

import torch

from .. import _ext
from .._dispatch import register_op
from ..reference.color_matrix import color_matrix as color_matrix_ref
from ._common import check_same_device, check_tensor, compute_dtype, custom_op, no_autocast, register_autograd

__all__ = ["color_matrix"]

# auto on CPU: the C++ kernel. Measured (benchmarks/test_bench_augment.py as a script, 32x3x256x256 fp32, 2 threads
# on a busy machine): 17.2 ms against 59.5 ms for the reference's baddbmm and 17.0 ms for copying the images.
# auto on CUDA: CUDA kernel, then Triton; not yet measured on a GPU.
_OP = register_op("color_matrix", {"cpu": ("ext", "ref"), "cuda": ("ext", "triton", "ref")})


def _launch(impl: str, x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if out.numel() == 0:
        return out
    if impl == "triton":
        from ..triton import color_matrix as triton_color_matrix
        triton_color_matrix.color_matrix(out, x, matrix, offset)
    else:
        _ext.launch("color_matrix", x.device, _ext.DTYPE_CODES[x.dtype], list(x.shape), list(x.stride()),
                    list(out.stride()), _ext.address(out), _ext.address(x), _ext.address(matrix),
                    _ext.address(offset))
    return out


@custom_op("ganfast::color_matrix", mutates_args=())
def _color_matrix_op(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, impl: str) -> torch.Tensor:
    return _launch(impl, x, matrix, offset)


@_color_matrix_op.register_fake
def _(x, matrix, offset, impl):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    _, matrix, offset, impl = inputs
    ctx.impl = impl
    ctx.save_for_backward(matrix, offset)
    ctx.set_materialize_grads(False)


def _backward(ctx, dy):
    matrix, offset = ctx.saved_tensors
    dx = None
    if dy is not None and ctx.needs_input_grad[0]:
        transposed = matrix.transpose(1, 2).contiguous()
        dx = torch.ops.ganfast.color_matrix(dy.contiguous(), transposed, torch.zeros_like(offset), ctx.impl)
    return dx, None, None, None


register_autograd("ganfast::color_matrix", _backward, setup_context=_setup_context)


def color_matrix(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, impl: str | None = None
                 ) -> torch.Tensor:
    """``matrix[n] · x[n, :, y, x] + offset[n]`` for every pixel of every image.

    Args:
        x: (N, C, H, W), C ≤ 4, float16/bfloat16/float32/float64, any layout; the output is contiguous.
        matrix: (N, C, C) and offset: (N, C) float tensors on x's device, computed in x's arithmetic type
            (float64 for float64 x, else float32); no gradient flows to them.
        impl: None/"auto"/"cuda", "ref", "ext" or "triton" (see ganfast._dispatch).
    """
    check_tensor("x", x, ndim=4)
    check_tensor("matrix", matrix, ndim=3)
    check_tensor("offset", offset, ndim=2)
    n, c = x.shape[:2]
    if not 1 <= c <= 4:
        raise ValueError(f"x must have 1 to 4 channels, got {c}")
    if matrix.shape != (n, c, c) or offset.shape != (n, c):
        raise ValueError(f"matrix must be ({n}, {c}, {c}) and offset ({n}, {c}) for x of shape {tuple(x.shape)}, got "
                         f"{tuple(matrix.shape)} and {tuple(offset.shape)}")
    check_same_device(x, matrix=matrix, offset=offset)
    chosen = _OP.resolve(impl, x.device, x.dtype)
    if chosen == "ref":
        with no_autocast(x):
            return color_matrix_ref(x, matrix, offset)
    compute = compute_dtype(x.dtype)
    return torch.ops.ganfast.color_matrix(x, matrix.detach().to(compute).contiguous(),
                                          offset.detach().to(compute).contiguous(), chosen)
