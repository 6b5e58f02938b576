"""affine_resample: StyleGAN2-ADA's geometric augmentation as one fused resampling pass.

Per image and channel (csrc/affine_resample.h has every stage's formula):
    out = D_y D_x S_A U_y U_x P x
P reflection padding by the plan's margins, U 2× upsampling with the symlet-6 filter, S_A bilinear sampling of
the (2H + K) × (2W + K) canvas at the pixel-space matrix A, D 2× downsampling — the same as the reference's four
torch calls (ganfast.reference.affine_resample: F.pad, upsample2d, grid_sample, downsample2d) without their
full-size intermediates: the kernels read reflected, upsampled values on the fly.

Registered ops (with fake impls, so torch.compile traces them):
    ganfast::affine_resample            out = R x
    ganfast::affine_resample_transpose  dx = Rᵀ dy = Pᵀ U_xᵀ U_yᵀ S_Aᵀ D_xᵀ D_yᵀ dy
R is linear in x, so the gradient of each is the other: every derivative order runs on the kernels. No gradient
flows to the matrices (augmentations are drawn, not learnt).
Backends: "ext" (C++ on CPU, CUDA on GPU), "triton", "ref" (the reference composition).
"""
from __future__ import annotations

import torch

from .. import _ext
from .._dispatch import register_op
from ..reference.affine_resample import affine_resample as affine_resample_ref
from ..reference.affine_resample import geometric_filter, geometric_plan
from ..reference.affine_sample import pixel_matrix
from ._common import (check_same_device, check_tensor, compute_dtype, custom_op, dense, no_autocast,
                      register_adjoint_pair)

__all__ = ["affine_resample", "resample_args"]

# auto on CPU: the C++ kernel. Measured (`python benchmarks/test_bench_affine_resample.py 3`, 32x3x256x256 float32,
# the bgc pipeline's matrices at p = 1, 2 shared cores at load average 2.4-5.5, median wall ms): forward 112 vs
# 964 for the same stages as four ganfast ops (F.pad, upsample2d, affine_sample, downsample2d), 5185 for the
# reference and 2161 for torch.compile(reference); forward+backward 227 vs 1746, 17066 and 5419. auto on CUDA:
# CUDA kernel, then Triton; not yet measured on a GPU.
_OP = register_op("affine_resample", {"cpu": ("ext", "ref"), "cuda": ("ext", "triton", "ref")})


def _launch(impl: str, src: torch.Tensor, matrix: torch.Tensor, filt: torch.Tensor, margins: list[int],
            transpose: bool) -> torch.Tensor:
    """R src (forward) or Rᵀ src (transpose), both of src's shape.

    The scatters (the transposes on CUDA and in Triton) take float32 and float64 and a zeroed output to accumulate
    into (atomics): half types run in float32 there. The forwards and the C++ transpose write every element."""
    on_cuda = _ext.runs_cuda_kernels(src.device)
    scatter = transpose and (on_cuda or impl == "triton")
    if src.dtype in (torch.float16, torch.bfloat16) and scatter:
        return _launch(impl, src.float(), matrix, filt, margins, transpose).to(src.dtype)
    arithmetic = compute_dtype(src.dtype)
    if matrix.dtype != arithmetic or filt.dtype != arithmetic or matrix.shape != (src.shape[0], 2, 3):
        raise ValueError(f"affine_resample: matrix must be ({src.shape[0]}, 2, 3) and both matrix and filter "
                         f"{arithmetic} for {src.dtype} images, got {tuple(matrix.shape)} {matrix.dtype} and "
                         f"{filt.dtype} (see resample_args)")
    out = (torch.zeros if scatter else torch.empty)(src.shape, dtype=src.dtype, device=src.device)
    if out.numel() == 0:
        return out
    src, matrix, filt = dense(src), matrix.contiguous(), filt.contiguous()
    if impl == "triton":
        from ..triton import affine_resample as triton_affine_resample
        triton_affine_resample.affine_resample(out, src, matrix, filt, margins, transpose)
    else:
        _ext.launch("affine_resample", src.device, _ext.DTYPE_CODES[src.dtype], int(transpose), list(src.shape),
                    list(margins), filt.numel(), list(src.stride()), list(out.stride()), _ext.address(out),
                    _ext.address(src), _ext.address(matrix), _ext.address(filt))
    return out


# ---- registered ops ---------------------------------------------------------------------------------------------

@custom_op("ganfast::affine_resample", mutates_args=())
def _resample_op(x: torch.Tensor, matrix: torch.Tensor, filter: torch.Tensor, margins: list[int],
                 impl: str) -> torch.Tensor:
    return _launch(impl, x, matrix, filter, margins, transpose=False)


@custom_op("ganfast::affine_resample_transpose", mutates_args=())
def _transpose_op(dy: torch.Tensor, matrix: torch.Tensor, filter: torch.Tensor, margins: list[int],
                  impl: str) -> torch.Tensor:
    return _launch(impl, dy, matrix, filter, margins, transpose=True)


def _fake(x, matrix, filter, margins, impl):
    """Both ops keep the input's shape."""
    return x.new_empty(x.shape)


_resample_op.register_fake(_fake)
_transpose_op.register_fake(_fake)


register_adjoint_pair("ganfast::affine_resample", "ganfast::affine_resample_transpose",
                      lambda inputs: ((inputs[1], inputs[2]), (list(inputs[3]), inputs[4])))


# ---- public API -------------------------------------------------------------------------------------------------

def affine_resample(images: torch.Tensor, G_inv: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """StyleGAN2-ADA's geometric augmentation of each image by its (N, 3, 3) inverse map ``G_inv`` (output pixel →
    input pixel, origin at the image centre): reflection padding, 2× upsampling, bilinear sampling, 2×
    downsampling, fused into one pass (ganfast.reference.affine_resample is the oracle).

    Args:
        images: (N, C, H, W) float16/bfloat16/float32/float64, any layout.
        G_inv: (N, 3, 3) float tensor on images' device; no gradient. Its margins are planned on the host (one
            read of the matrices, ganfast.reference.augment.geometric_plan).
        impl: None/"auto"/"cuda", "ref", "ext" or "triton" (see ganfast._dispatch).
    Returns:
        (N, C, H, W), contiguous, differentiable (any order) in images.
    """
    check_tensor("images", images, ndim=4)
    check_tensor("G_inv", G_inv, ndim=3)
    if G_inv.shape != (images.shape[0], 3, 3):
        raise ValueError(f"G_inv must have shape ({images.shape[0]}, 3, 3), got {tuple(G_inv.shape)}")
    check_same_device(images, G_inv=G_inv)
    chosen = _OP.resolve(impl, images.device, images.dtype)
    if images.shape[0] == 0:  # nothing to plan margins for
        return images.clone(memory_format=torch.contiguous_format)
    if chosen == "ref":
        with no_autocast(images):
            return affine_resample_ref(images, G_inv)
    matrix, filt, margins = resample_args(G_inv.detach(), images.shape[2], images.shape[3], images.dtype)
    return torch.ops.ganfast.affine_resample(images, matrix, filt, margins, chosen)


def resample_args(G_inv: torch.Tensor, height: int, width: int, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The registered ops' (matrix, filter, margins) for ``G_inv`` and images of ``height × width`` and ``dtype``:
    the (N, 2, 3) map from canvas pixels to positions in the 2× upsampled padded image, the K-tap filter (both
    contiguous, in the kernels' arithmetic type) and the reflection margins (pad_x0, pad_x1, pad_y0, pad_y1) of
    ganfast.reference.augment.geometric_plan."""
    dtype = compute_dtype(dtype)
    filt = geometric_filter(G_inv.device, dtype)
    (mx0, mx1, my0, my1), theta, size = geometric_plan(G_inv, height, width, filt.numel())
    padded = (2 * (height + my0 + my1), 2 * (width + mx0 + mx1))
    return pixel_matrix(theta, padded, size).to(dtype).contiguous(), filt, [mx0, mx1, my0, my1]
