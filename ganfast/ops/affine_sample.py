"""affine_sample: bilinear sampling at an affine map of the output grid, and the geometric augmentation pass.

    affine_sample(x, theta, size) == grid_sample(x, affine_grid(theta, (N, C, *size)), "bilinear", "zeros")
with align_corners=False (ganfast/reference/affine_sample.py). The kernels take theta as the pixel-space matrix
A (N, 2, 3) of ``pixel_matrix`` and compute each output's position A·(ox, oy, 1) on the fly: no grid tensor.

Registered ops (with fake impls, so torch.compile traces them):
    ganfast::affine_sample            out = S_A x          (gather: four neighbours per output pixel)
    ganfast::affine_sample_transpose  dx = S_Aᵀ dy         (scatter of each output back to its four neighbours)
The map is linear in x, so the gradient of each is the other: every derivative order runs on the kernels.
No gradient flows to theta (augmentation matrices are drawn, not learnt).

StyleGAN2-ADA's geometric pass, which samples this way between a 2× upsampling and a 2× downsampling, is the
fused op ``ganfast.ops.affine_resample``.
Backends: "ext" (C++ on CPU, CUDA on GPU), "triton", "ref".
"""
from __future__ import annotations

import torch

from .. import _ext
from .._dispatch import register_op
from ..reference.affine_sample import affine_sample as affine_sample_ref
from ..reference.affine_sample import pixel_matrix
from ._common import (check_same_device, check_tensor, compute_dtype, custom_op, dense, no_autocast,
                      register_adjoint_pair)

__all__ = ["affine_sample"]

# auto on CPU: the C++ kernel. Measured (one thread, busy 2-core machine, 8x3x200x200 -> 200x200 rotations, fp32):
# forward 55 ms vs 51 ms for affine_grid + grid_sample, forward+backward 121 ms vs 184 ms (the training use:
# every augmented D input is differentiated). auto on CUDA: CUDA kernel, then Triton; not yet measured on a GPU.
_OP = register_op("affine_sample", {"cpu": ("ext", "ref"), "cuda": ("ext", "triton", "ref")})


def _launch(impl: str, src: torch.Tensor, matrix: torch.Tensor, size: list[int], transpose: bool) -> torch.Tensor:
    """sample (out of spatial ``size``) or transpose (out of the input's spatial ``size``) of ``src``.

    The GPU scatters (the transposes, and the CUDA kernel altogether) take float32 and float64: half types run
    in float32 there (an atomic add in 16 bits would round at every add)."""
    on_cuda = _ext.runs_cuda_kernels(src.device)
    scatter = transpose and (on_cuda or impl == "triton")
    if src.dtype in (torch.float16, torch.bfloat16) and ((on_cuda and impl == "ext") or scatter):
        return _launch(impl, src.float(), matrix, size, transpose).to(src.dtype)
    n, c = src.shape[:2]
    out = (torch.zeros if scatter else torch.empty)([n, c, *size], dtype=src.dtype, device=src.device)
    if out.numel() == 0 or src.numel() == 0:
        return out.zero_()
    src = dense(src)
    in_hw, out_hw = (size, list(src.shape[2:])) if transpose else (list(src.shape[2:]), size)
    if impl == "triton":
        from ..triton import affine_sample as triton_affine_sample
        triton_affine_sample.affine_sample(out, src, matrix, in_hw, out_hw, transpose)
    else:
        _ext.launch("affine_sample", src.device, _ext.DTYPE_CODES[src.dtype], int(transpose),
                    [n, c, *in_hw, *out_hw], list(src.stride()), list(out.stride()), _ext.address(out),
                    _ext.address(src), _ext.address(matrix))
    return out


# ---- registered ops ---------------------------------------------------------------------------------------------

@custom_op("ganfast::affine_sample", mutates_args=())
def _sample_op(x: torch.Tensor, matrix: torch.Tensor, size: list[int], impl: str) -> torch.Tensor:
    return _launch(impl, x, matrix, size, transpose=False)


@custom_op("ganfast::affine_sample_transpose", mutates_args=())
def _transpose_op(dy: torch.Tensor, matrix: torch.Tensor, in_size: list[int], impl: str) -> torch.Tensor:
    return _launch(impl, dy, matrix, in_size, transpose=True)


def _fake(x, matrix, size, impl):
    """Both ops map (N, C, ·, ·) to (N, C, *size)."""
    return x.new_empty([x.shape[0], x.shape[1], *size])


_sample_op.register_fake(_fake)
_transpose_op.register_fake(_fake)


# the transpose of either op goes back to the size of that op's input
register_adjoint_pair("ganfast::affine_sample", "ganfast::affine_sample_transpose",
                      lambda inputs: ((inputs[1],), (list(inputs[0].shape[2:]), inputs[3])))


# ---- public API -------------------------------------------------------------------------------------------------

def _check_size(size) -> list[int]:
    try:
        values = [int(v) for v in size]
        ok = len(values) == 2 and all(v >= 1 and v == s for v, s in zip(values, size))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"size must be (height, width) with both >= 1, got {size!r}")
    return values


def affine_sample(x: torch.Tensor, theta: torch.Tensor, size, impl: str | None = None) -> torch.Tensor:
    """Bilinear samples of each image of x at ``affine_grid(theta, (N, C, *size), align_corners=False)``, zeros
    outside: a drop-in for that grid_sample call without the grid tensor.

    Args:
        x: (N, C, H, W) float16/bfloat16/float32/float64, any layout.
        theta: (N, 2, 3) float tensor on x's device (normalised coordinates, as for affine_grid); no gradient.
        size: (H_out, W_out).
        impl: None/"auto"/"cuda", "ref", "ext" or "triton" (see ganfast._dispatch).
    Returns:
        (N, C, H_out, W_out), contiguous, differentiable (any order) in x.
    """
    check_tensor("x", x, ndim=4)
    check_tensor("theta", theta, ndim=3)
    if theta.shape != (x.shape[0], 2, 3):
        raise ValueError(f"theta must have shape ({x.shape[0]}, 2, 3) for x of batch {x.shape[0]}, "
                         f"got {tuple(theta.shape)}")
    check_same_device(x, theta=theta)
    size = _check_size(size)
    chosen = _OP.resolve(impl, x.device, x.dtype)
    if chosen == "ref":
        with no_autocast(x):
            return affine_sample_ref(x, theta, size)
    matrix = pixel_matrix(theta.detach(), x.shape[2:], size).to(compute_dtype(x.dtype)).contiguous()
    return torch.ops.ganfast.affine_sample(x, matrix, size, chosen)

