"""affine_sample: parity with grid_sample(affine_grid(...)) in float64, gradients of every order, opcheck,
layouts, half types and argument errors."""
import pytest
import torch
from support import DEVICE, assert_grad_graph_parity, assert_layout_parity, available_impls, rel_err

from ganfast.ops import affine_sample
from ganfast.reference.affine_sample import affine_sample as affine_sample_ref

IMPLS = available_impls()


def _theta(n, scale=1.2, dtype=torch.float64):
    """Random rotations, scalings and shifts: some samples fall outside the input (zeros)."""
    angle = torch.rand(n, dtype=dtype) * 6.3
    s = scale * (0.6 + torch.rand(n, dtype=dtype))
    t = torch.randn(n, 2, dtype=dtype) * 0.3
    return torch.stack([torch.stack([s * angle.cos(), -s * angle.sin(), t[:, 0]], 1),
                        torch.stack([s * angle.sin(), s * angle.cos(), t[:, 1]], 1)], 1).to(DEVICE)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape,size", [((2, 3, 7, 9), (5, 6)), ((1, 1, 4, 4), (9, 7)), ((3, 2, 6, 5), (6, 5))])
def test_matches_reference_float64(impl, shape, size):
    x = torch.randn(shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    theta = _theta(shape[0])
    assert_layout_parity(affine_sample(x, theta, size, impl=impl), affine_sample_ref(x, theta, size), x, "contiguous")


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_graph_matches_reference(impl):
    """The derivative is the transpose applied to dy alone: x is outside its graph (None at second order), as
    in grid_sample's. theta is fixed (augmentation matrices are drawn: no gradient flows to it)."""
    theta = _theta(2)
    assert_grad_graph_parity(lambda x: affine_sample(x, theta, (5, 4), impl=impl),
                             lambda x: affine_sample_ref(x, theta, (5, 4)),
                             (torch.randn(2, 3, 6, 5, dtype=torch.float64, device=DEVICE),), ("x",))


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_and_gradgradcheck(impl):
    x = torch.randn(1, 1, 4, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    theta = _theta(1)
    fn = lambda x: affine_sample(x, theta, (3, 4), impl=impl)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    x = torch.randn(2, 3, 5, 6, device=DEVICE, requires_grad=True)
    from ganfast.reference.affine_sample import pixel_matrix
    matrix = pixel_matrix(_theta(2), (5, 6), (4, 4)).float().contiguous()
    torch.library.opcheck(torch.ops.ganfast.affine_sample.default, (x, matrix, [4, 4], impl))
    dy = torch.randn(2, 3, 4, 4, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.ganfast.affine_sample_transpose.default, (dy, matrix, [5, 6], impl))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lower_precision_and_channels_last(impl, dtype):
    x = torch.randn(2, 3, 8, 8, device=DEVICE).to(dtype).to(memory_format=torch.channels_last).requires_grad_()
    theta = _theta(2, dtype=torch.float32)
    out = affine_sample(x, theta, (8, 8), impl=impl)
    ref = affine_sample_ref(x.detach().double(), theta.double(), (8, 8))
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert out.dtype == dtype and rel_err(out, ref) < tol
    dy = torch.randn(out.shape, device=DEVICE)
    xd = x.detach().double().requires_grad_()
    grad_ref = torch.autograd.grad(affine_sample_ref(xd, theta.double(), (8, 8)), xd, dy.double())[0]
    assert rel_err(torch.autograd.grad(out, x, dy.to(dtype))[0], grad_ref) < tol


def test_identity_theta_reads_the_pixels():
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64).repeat(2, 1, 1)
    assert rel_err(affine_sample(x, theta, (6, 7), impl="ext"), x) < 1e-14


def test_errors():
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="theta must have shape"):
        affine_sample(x, torch.zeros(3, 2, 3), (4, 4))
    with pytest.raises(ValueError, match="size"):
        affine_sample(x, torch.zeros(2, 2, 3), (0, 4))
    with pytest.raises(ValueError, match="x must be 4-D"):
        affine_sample(x[0], torch.zeros(2, 2, 3), (4, 4))
    with pytest.raises(TypeError, match="theta"):
        affine_sample(x, torch.zeros(2, 2, 3, dtype=torch.int64), (4, 4))
    with pytest.raises(ValueError, match="theta is on meta but x is on cpu"):
        affine_sample(x, torch.zeros(2, 2, 3, device="meta"), (4, 4))
