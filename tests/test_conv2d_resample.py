"""conv2d_resample: every fast route agrees with the reference's definition (float64 forward and gradients,
gradcheck, gradgradcheck), dtypes, torch.compile, and the errors bad input gets."""
import itertools

import pytest
import torch
from support import DEVICE, assert_grad_graph_parity, available_impls, rel_err

import ganfast
from ganfast.ops import conv2d_resample, setup_filter
from ganfast.reference import conv2d_resample as conv2d_resample_ref

FIR = setup_filter([1, 3, 3, 1]).to(DEVICE)
ODD = setup_filter([1, 2, 1]).to(DEVICE)


def _inputs(n=2, c=4, o=6, k=3, groups=1, hw=(7, 6), dtype=torch.float64, requires_grad=False):
    x = torch.randn(n, c, *hw, dtype=torch.float64).to(device=DEVICE, dtype=dtype).requires_grad_(requires_grad)
    w = torch.randn(o, c // groups, k, k, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    return x, w.requires_grad_(requires_grad)


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_matches_reference_float64(up, down, k, groups):
    for flip_weight, flip_filter, padding, f in itertools.product(
            [True, False], [False, True], [0, 1, [1, 0, 2, -1]], [FIR, ODD]):
        if (flip_filter or f is ODD) and up == down == 1:
            continue  # f plays no part without resampling
        x, w = _inputs(k=k, groups=groups, requires_grad=True)
        kwargs = dict(f=f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight,
                      flip_filter=flip_filter)
        ref = conv2d_resample_ref(x, w, **kwargs)
        out = conv2d_resample(x, w, **kwargs)
        assert out.shape == ref.shape, kwargs
        assert rel_err(out, ref) < 1e-12, kwargs
        dy = torch.randn_like(ref)
        for got, want in zip(torch.autograd.grad(out, (x, w), dy), torch.autograd.grad(ref, (x, w), dy)):
            assert rel_err(got, want) < 1e-12, kwargs


def test_batch1_odd_sizes_and_no_filter():
    for up, down in [(2, 1), (1, 2), (2, 2)]:
        x, w = _inputs(n=1, c=3, o=5, k=3, hw=(5, 9))
        for f in (None, FIR):
            out = conv2d_resample(x, w, f=f, up=up, down=down, padding=1)
            assert rel_err(out, conv2d_resample_ref(x, w, f=f, up=up, down=down, padding=1)) < 1e-12


@pytest.mark.parametrize("up,down,k,padding", [(2, 1, 3, 1), (1, 2, 3, 1), (2, 1, 1, 0), (1, 2, 1, 0),
                                               (2, 2, 3, 0), (1, 1, 3, [1, 0, 2, -1])])
def test_gradcheck_and_gradgradcheck(up, down, k, padding):
    x, w = _inputs(n=1, c=2, o=2, k=k, hw=(4, 3), requires_grad=True)

    def fn(x, w):
        return conv2d_resample(x, w, f=FIR, up=up, down=down, padding=padding, flip_weight=False)
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


@pytest.mark.parametrize("impl", available_impls())
def test_filter_steps_on_each_impl(impl):
    x, w = _inputs(n=1, c=2, o=3, k=3, hw=(4, 5))
    with ganfast.use_impl(impl):
        for up, down in [(2, 1), (1, 2)]:
            out = conv2d_resample(x, w, f=FIR, up=up, down=down, padding=1)
            assert rel_err(out, conv2d_resample_ref(x, w, f=FIR, up=up, down=down, padding=1)) < 1e-12


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 1e-2)])
def test_dtypes(dtype, tol):
    x, w = _inputs(dtype=dtype)
    for up, down in [(2, 1), (1, 2)]:
        out = conv2d_resample(x, w, f=FIR, up=up, down=down, padding=1)
        ref = conv2d_resample_ref(x.double(), w.double(), f=FIR, up=up, down=down, padding=1)
        assert out.dtype == dtype and rel_err(out, ref) < tol


def test_weight_is_cast_to_x_dtype():
    x, w = _inputs(dtype=torch.float32)
    out = conv2d_resample(x, w.double(), f=FIR, up=2, padding=1)
    assert out.dtype == torch.float32
    assert rel_err(out, conv2d_resample_ref(x, w.float(), f=FIR, up=2, padding=1)) < 1e-6


@pytest.mark.slow
def test_torch_compile_fullgraph():
    """A StyleGAN-like block (up-conv, filtered down-conv) compiles without graph breaks and agrees."""
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w_up = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
            self.w_down = torch.nn.Parameter(torch.randn(2, 4, 3, 3))
            self.register_buffer("f", setup_filter([1, 3, 3, 1]))

        def forward(self, x):
            y = conv2d_resample(x, self.w_up, f=self.f, up=2, padding=1, flip_weight=False)
            return conv2d_resample(y, self.w_down, f=self.f, down=2, padding=1).square().sum()

    model = Block()
    x = torch.randn(2, 3, 6, 5)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, model(x))
    for got, want in zip(torch.autograd.grad(out, list(model.parameters())),
                         torch.autograd.grad(model(x), list(model.parameters()))):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("impl", available_impls() + ["ref"])
@pytest.mark.parametrize("up,down", [(2, 1), (1, 2)])
def test_impl_selects_the_filter_kernels(impl, up, down, monkeypatch):
    """``impl`` reaches every upfirdn2d step (an explicit impl that cannot serve raises), "ref" is the reference."""
    x, w = _inputs(n=1, c=2, o=2, hw=(5, 5))
    f = setup_filter([1, 3, 3, 1]).to(DEVICE)
    out = conv2d_resample(x, w, f, up=up, down=down, padding=1, impl=impl)
    assert rel_err(out, conv2d_resample_ref(x, w, f, up=up, down=down, padding=1)) < 1e-12
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ganfast.ImplNotSupportedError, match="TRITON_INTERPRET"):
        conv2d_resample(x.cpu(), w.cpu(), f.cpu(), up=up, down=down, padding=1, impl="triton")


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(w=torch.zeros(4, 4, 3)), ValueError, "w must be 4-D"),
    (dict(w=torch.zeros(4, 3, 3, 3)), ValueError, "x has 4 channels but w expects 3"),
    (dict(w=torch.zeros(5, 2, 3, 3), groups=2), ValueError, "groups=2 must divide"),
    (dict(groups=0), ValueError, "groups must be an int >= 1"),
    (dict(up=0), ValueError, "up must be an int >= 1"),
    (dict(down=[2, 2]), ValueError, "down must be an int >= 1"),
    (dict(w=torch.zeros(4, 4, 3, 3, dtype=torch.int32)), TypeError, "w must have dtype"),
    (dict(x=torch.zeros(1, 4, 5)), ValueError, "x must be 4-D"),
    (dict(padding=[1, 2, 3]), ValueError, "padding must be"),
])
def test_bad_input_errors(kwargs, exc, match):
    args = dict(x=torch.zeros(1, 4, 5, 5), w=torch.zeros(4, 4, 3, 3), f=FIR.cpu())
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        conv2d_resample(**args)


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
def test_gradient_graph_matches_reference(up, down):
    x, w = _inputs(n=2, c=2, o=3, hw=(5, 5))
    f = setup_filter([1, 3, 3, 1]).to(DEVICE)
    assert_grad_graph_parity(lambda x, w: conv2d_resample(x, w, f, up=up, down=down, padding=1),
                             lambda x, w: conv2d_resample_ref(x, w, f, up=up, down=down, padding=1), (x, w),
                             ("x", "w"))
