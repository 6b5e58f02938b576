"""The Triton kernel of affine_resample (ganfast/triton/affine_resample.py), called directly with the arguments the
op builds (margins, matrix, filter as in the geometric plan): parity with the reference composition
(ganfast.reference.augment.geometric) in float64, forward and transpose, across tile edges; the transpose is the
adjoint; half types and float32 forward within tolerances."""
import math

import pytest
import torch
from support import DEVICE, rel_err

from ganfast.reference.affine_sample import pixel_matrix
from ganfast.reference.augment import geometric, geometric_filter, geometric_plan, rotate2d, scale2d, translate2d
from ganfast.triton.affine_resample import affine_resample

F64 = torch.float64


def _args(images: torch.Tensor, G_inv: torch.Tensor, dtype: torch.dtype):
    """(matrix, filter, margins) as the op passes them, in the arithmetic ``dtype``. The taps are the reference's:
    geometric() runs its filter in float32, so float64 parity holds to rounding with those taps."""
    height, width = images.shape[2:]
    filt = geometric_filter(images.device, torch.float32).to(dtype)
    taps = filt.numel()
    margins, theta, _ = geometric_plan(G_inv, height, width, taps)
    padded_h, padded_w = height + margins[2] + margins[3], width + margins[0] + margins[1]
    matrix = pixel_matrix(theta, (2 * padded_h, 2 * padded_w), (2 * height + taps, 2 * width + taps))
    return matrix.to(dtype).contiguous(), filt, margins


def _run(src: torch.Tensor, G_inv: torch.Tensor, transpose: bool, canvas_tile: int = 64, dtype=F64) -> torch.Tensor:
    out = (torch.zeros if transpose else torch.empty)(src.shape, dtype=src.dtype, device=src.device)
    affine_resample(out, src, *_args(src, G_inv, dtype), transpose, canvas_tile=canvas_tile)
    return out


def _batch(*matrices) -> torch.Tensor:
    return torch.cat(matrices).to(DEVICE)


def _one(v: float) -> torch.Tensor:
    return torch.tensor([v], dtype=F64)


IDENTITY = torch.eye(3, dtype=F64)[None]
CASES = {  # name: (shape, G_inv, canvas tile); 16 and 32 put tile edges inside the image
    "identity": ((1, 2, 8, 8), IDENTITY, 64),
    "rotation": ((1, 1, 12, 10), rotate2d(_one(0.5)), 32),
    "anisotropic_scale": ((1, 1, 9, 12), scale2d(_one(1.4), _one(0.7)), 32),
    "fractional_translation": ((1, 1, 7, 6), translate2d(_one(0.37), _one(-1.6)), 16),
    "max_padding": ((1, 1, 6, 5), rotate2d(_one(math.pi / 4)) @ scale2d(_one(1.9), _one(1.9)), 16),
    "odd_batch": ((3, 1, 5, 7), torch.cat([rotate2d(_one(2.0)) @ translate2d(_one(0.5), _one(0.25)),
                                           scale2d(_one(0.8), _one(1.3)), rotate2d(_one(-0.3))]), 64),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_reference_float64(name):
    shape, G_inv, tile = CASES[name]
    G_inv = G_inv.to(DEVICE)
    x = torch.randn(shape, dtype=F64, device=DEVICE, requires_grad=True)
    margins = _args(x, G_inv, F64)[2]
    if name == "max_padding":  # the corners reach past the reflection's limit: margins clamped to size − 1
        assert margins == (shape[3] - 1, shape[3] - 1, shape[2] - 1, shape[2] - 1)
    ref = geometric(x, G_inv)
    assert rel_err(_run(x.detach(), G_inv, False, tile), ref) < 1e-13
    dy = torch.randn(shape, dtype=F64, device=DEVICE)
    assert rel_err(_run(dy, G_inv, True, tile), torch.autograd.grad(ref, x, dy)[0]) < 1e-13


def test_transpose_is_the_adjoint():
    """⟨R x, y⟩ = ⟨x, Rᵀ y⟩ on an image of 3 × 2 tiles."""
    G_inv = _batch(rotate2d(_one(1.1)) @ scale2d(_one(0.9), _one(1.2)) @ translate2d(_one(0.3), _one(-0.2)))
    x = torch.randn(1, 1, 7, 5, dtype=F64, device=DEVICE)
    y = torch.randn(1, 1, 7, 5, dtype=F64, device=DEVICE)
    rx, rty = _run(x, G_inv, False, 16), _run(y, G_inv, True, 16)
    assert abs((rx * y).sum() - (x * rty).sum()) < 1e-13 * rx.abs().sum() * y.abs().max()


def test_inputs_are_read_by_stride():
    G_inv = _batch(rotate2d(_one(0.4)))
    x = torch.randn(1, 2, 6, 10, dtype=F64, device=DEVICE)
    for transpose in (False, True):
        for view in (x.to(memory_format=torch.channels_last), x[..., ::2]):
            assert torch.equal(_run(view, G_inv, transpose), _run(view.contiguous(), G_inv, transpose))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 1e-2)])
def test_lower_precision(dtype, tol):
    """Half types and float32 compute in float32 (the op's transposes run in float32 for half types)."""
    G_inv = _batch(rotate2d(_one(0.7)) @ scale2d(_one(1.1), _one(0.9)) @ translate2d(_one(-0.4), _one(1.3)))
    x = torch.randn(1, 2, 8, 9, dtype=F64, device=DEVICE, requires_grad=True)
    ref = geometric(x, G_inv)
    out = _run(x.detach().to(dtype), G_inv, False, dtype=torch.float32)
    assert out.dtype == dtype and rel_err(out, ref) < tol
    dy = torch.randn_like(ref)
    grad = _run(dy.to(dtype).float(), G_inv, True, dtype=torch.float32)
    assert rel_err(grad, torch.autograd.grad(ref, x, dy.to(dtype).double())[0]) < 1e-5
