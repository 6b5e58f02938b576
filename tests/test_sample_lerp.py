"""sample_lerp (the WGAN-GP interpolation): float64 parity with ganfast.reference.losses.sample_lerp,
gradcheck/gradgradcheck, the gradient graph (None where the reference has None) and opcheck."""
import pytest
import torch
from support import DEVICE, assert_grad_graph_parity, available_impls, rel_err

import ganfast
from ganfast.ops import sample_lerp
from ganfast.reference import losses as ref

IMPLS = available_impls()


def _images(batch, shape=(3, 6, 5)):
    return torch.randn(batch, *shape, device=DEVICE, dtype=torch.float64)


def _assert_same(got, want, tol=1e-12):
    assert rel_err(got, want) < tol


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_sample_lerp(impl):
    if impl not in IMPLS + ["ref"]:
        pytest.skip(f"{impl} not available here")
    a, b = _images(3, (2, 2, 3)).requires_grad_(True), _images(3, (2, 2, 3)).requires_grad_(True)
    eps = torch.rand(3, device=DEVICE, dtype=torch.float64, requires_grad=True)
    out = sample_lerp(a, b, eps, impl=impl)
    e = eps.view(-1, 1, 1, 1)
    _assert_same(out, e * a + (1 - e) * b)
    assert torch.autograd.gradcheck(lambda a, b, e: sample_lerp(a, b, e, impl=impl), (a, b, eps))
    assert torch.autograd.gradgradcheck(lambda a, b, e: sample_lerp(a, b, e, impl=impl), (a, b, eps))


def test_opcheck():
    if "triton" not in IMPLS:
        pytest.skip("triton not available here")
    g = torch.randn(3, 2, 5, device=DEVICE, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(3, device=DEVICE, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.ganfast.sample_lerp.default,
                          (g, torch.randn_like(g, requires_grad=True), eps, "triton"))


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "ext"] + ["ref"])
def test_gradient_graph_matches_reference(impl):
    a, b = _images(3, (2, 3)), _images(3, (2, 3))
    eps = torch.rand(3, device=DEVICE, dtype=torch.float64)
    assert_grad_graph_parity(lambda a, b, e: sample_lerp(a, b, e, impl=impl), ref.sample_lerp, (a, b, eps),
                             ("a", "b", "eps"))


def test_errors():
    with pytest.raises(ganfast.ImplNotSupportedError, match="no compiled-extension kernel"):
        sample_lerp(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2), impl="ext")
    with pytest.raises(ValueError, match="eps has"):
        sample_lerp(torch.ones(2, 3), torch.ones(2, 3), torch.ones(3))
