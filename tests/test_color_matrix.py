"""color_matrix: parity with the reference (one baddbmm) in float64, gradients of every order, opcheck, layouts,
half types and argument errors."""
import pytest
import torch
from support import DEVICE, assert_grad_graph_parity, assert_layout_parity, available_impls, rel_err

from ganfast.ops import color_matrix
from ganfast.reference.color_matrix import color_matrix as color_matrix_ref

IMPLS = available_impls()


def _args(n, c, dtype=torch.float64):
    return torch.randn(n, c, c, dtype=dtype, device=DEVICE), torch.randn(n, c, dtype=dtype, device=DEVICE)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 4, 4), (3, 4, 2, 9)])
def test_matches_reference_float64(impl, shape):
    x = torch.randn(shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    m, b = _args(shape[0], shape[1])
    assert_layout_parity(color_matrix(x, m, b, impl=impl), color_matrix_ref(x, m, b), x, "contiguous", tol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_graph_matches_reference(impl):
    """The derivative is matrixᵀ applied to dy alone: x is outside its graph (None at second order), as in the
    reference's baddbmm. matrix and offset are fixed (drawn augmentation parameters: no gradient flows to them)."""
    m, b = _args(2, 3)
    assert_grad_graph_parity(lambda x: color_matrix(x, m, b, impl=impl), lambda x: color_matrix_ref(x, m, b),
                             (torch.randn(2, 3, 4, 5, dtype=torch.float64, device=DEVICE),), ("x",))


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_and_gradgradcheck(impl):
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    m, b = _args(2, 3)
    fn = lambda x: color_matrix(x, m, b, impl=impl)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    x = torch.randn(2, 3, 4, 5, device=DEVICE, requires_grad=True)
    m, b = _args(2, 3, torch.float32)
    torch.library.opcheck(torch.ops.ganfast.color_matrix.default, (x, m, b, impl))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lower_precision_and_channels_last(impl, dtype):
    x = torch.randn(2, 3, 6, 5, device=DEVICE).to(dtype).to(memory_format=torch.channels_last)
    m, b = _args(2, 3, torch.float32)
    out = color_matrix(x, m, b, impl=impl)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert out.dtype == dtype and rel_err(out, color_matrix_ref(x.double(), m.double(), b.double())) < tol


def test_errors():
    x = torch.randn(2, 3, 4, 4)
    m, b = _args(2, 3, torch.float32)
    with pytest.raises(ValueError, match="1 to 4 channels"):
        color_matrix(torch.randn(2, 5, 4, 4), torch.zeros(2, 5, 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="matrix must be"):
        color_matrix(x, m[:, :2], b)
    with pytest.raises(ValueError, match="offset"):
        color_matrix(x, m, b[:1])
    with pytest.raises(TypeError, match="matrix"):
        color_matrix(x, m.long(), b)
    with pytest.raises(ValueError, match="offset is on meta but x is on cpu"):
        color_matrix(x, m, b.to("meta"))
