"""filtered_lrelu: float64 parity with ganfast.reference (forward, first and second derivatives, gradcheck,
gradgradcheck) over a curated grid of up/down, filters, padding, clamp, flip_filter, gain/slope and bias; dtypes,
channels_last, the compact mask, opcheck, torch.compile, impl selection and the errors bad input gets."""
import math

import pytest
import torch
from support import DEVICE, assert_grad_graph_parity, available_impls, grad_graph, rel_err

import ganfast
from ganfast.ops import filtered_lrelu
from ganfast.reference import filtered_lrelu as filtered_lrelu_ref

IMPLS = available_impls()


def _filter(kind, taps):
    """A float32 filter: "sep" 1-D, "2d" an asymmetric taps × (taps − 1) one, or None."""
    if kind is None:
        return None
    f = torch.rand(taps) + 0.1 if kind == "sep" else torch.rand(taps, taps - 1) + 0.1
    return (f / f.sum()).to(DEVICE)


# (up, down, fu, fd, padding, clamp, flip_filter, gain, slope, bias): every up/down in {1, 2, 4}, separable, 2-D
# and no filters on both sides, positive, negative and asymmetric padding, clamp on and off, flip, gain/slope
CASES = [
    (1, 1, None, None, 0, None, False, math.sqrt(2), 0.2, True),
    (2, 2, "sep", "sep", [5, 4, 3, 6], None, False, math.sqrt(2), 0.2, True),
    (2, 2, "sep", "sep", 4, 0.5, True, 1.3, 0.25, True),
    (2, 1, "2d", "sep", 3, 0.7, True, 1.0, 0.0, False),
    (1, 2, "sep", "2d", [3, 2, -1, 4], None, False, 2.0, 0.5, True),
    (4, 2, "2d", "2d", [2, 1, -1, 3], 0.4, True, math.sqrt(2), 0.2, True),
    (2, 4, "sep", None, [7, 8], None, False, 0.7, 1.0, False),
    (4, 4, "sep", "sep", [6, 5, 7, 4], 0.3, False, math.sqrt(2), 0.2, True),
    (1, 4, None, "sep", [6, 5, 4, 7], 1.0, True, 1.5, 0.1, True),
    (4, 1, "2d", None, [-1, 2, 0, 1], None, False, math.sqrt(2), 0.2, True),
    (1, 1, "2d", "2d", [-1, 2, 1, -1], 0.6, False, math.sqrt(2), 0.3, True),
]


def _case(case, shape=(2, 3, 7, 6), dtype=torch.float64):
    up, down, fu_kind, fd_kind, padding, clamp, flip, gain, slope, bias = case
    x = torch.randn(shape, dtype=torch.float64).to(device=DEVICE, dtype=dtype).requires_grad_()
    b = torch.randn(shape[1], dtype=torch.float64).to(device=DEVICE, dtype=dtype).requires_grad_() if bias else None
    kwargs = {"fu": _filter(fu_kind, 2 * up + 1), "fd": _filter(fd_kind, 2 * down + 2), "b": b, "up": up, "down": down,
                  "padding": padding, "gain": gain, "slope": slope, "clamp": clamp, "flip_filter": flip}
    return x, kwargs


def _inputs(x, kwargs):
    return (x,) if kwargs["b"] is None else (x, kwargs["b"])


def test_impls_available_here():
    assert "ext" in IMPLS and "triton" in IMPLS, IMPLS


def test_output_size_formula():
    for case in CASES:
        x, kw = _case(case)
        up, down, pad = kw["up"], kw["down"], kw["padding"]
        pad = [pad] * 4 if isinstance(pad, int) else [pad[0], pad[0], pad[1], pad[1]] if len(pad) == 2 else pad
        fu_h, fu_w = (1, 1) if kw["fu"] is None else (kw["fu"].shape[0], kw["fu"].shape[-1])
        fd_h, fd_w = (1, 1) if kw["fd"] is None else (kw["fd"].shape[0], kw["fd"].shape[-1])
        expected = [(7 * up + pad[2] + pad[3] - (fu_h - 1) - (fd_h - 1) + down - 1) // down,
                    (6 * up + pad[0] + pad[1] - (fu_w - 1) - (fd_w - 1) + down - 1) // down]
        assert min(expected) >= 1, case
        assert list(filtered_lrelu_ref(x, **kw).shape[2:]) == expected
        assert list(filtered_lrelu(x, **kw).shape[2:]) == expected


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_forward_and_gradients_float64(impl, case):
    if impl == "triton" and DEVICE.type == "cpu" and case % 3:
        pytest.skip("the Triton interpreter is slow: every third case")
    x, kw = _case(CASES[case])
    out, ref = filtered_lrelu(x, **kw, impl=impl), filtered_lrelu_ref(x, **kw)
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert rel_err(out, ref) < 1e-12
    inputs = _inputs(x, kw)
    dy = torch.randn_like(ref).requires_grad_()
    grads = torch.autograd.grad(out, inputs, dy, create_graph=True)
    grads_ref = torch.autograd.grad(ref, inputs, dy, create_graph=True)
    for g, g_ref in zip(grads, grads_ref):
        assert rel_err(g, g_ref) < 1e-12
    # second order (the R1 / path-length pattern): a function of the gradient, differentiated again
    h = torch.randn_like(x)
    second = torch.autograd.grad((grads[0] * h).sum(), (dy, *inputs), allow_unused=True)
    second_ref = torch.autograd.grad((grads_ref[0] * h).sum(), (dy, *inputs), allow_unused=True)
    assert rel_err(second[0], second_ref[0]) < 1e-12
    for d, d_ref in zip(second[1:], second_ref[1:]):  # the mask is piecewise constant: None (the reference: or 0)
        assert d is None and (d_ref is None or not d_ref.any())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", [0, 2, 5])
def test_gradient_graph_matches_reference(impl, case):
    """The reference's None-vs-tensor pattern in x and b, first and second order. The derivative is L*(dy), with
    the mask fixed: x and b are outside its graph, so the second derivative is None in both (as NVlabs' CUDA op,
    where plain autograd through a leaky ReLU could give zeros; ganfast's reference gives None as well)."""
    x, kw = _case(CASES[case], shape=(1, 2, 5, 4))
    b = kw.pop("b")
    if b is None:
        b = torch.randn(2, dtype=torch.float64, device=DEVICE)

    def fn(x, b):
        return filtered_lrelu(x, b=b, **kw, impl=impl)

    def ref_fn(x, b):
        return filtered_lrelu_ref(x, b=b, **kw)
    assert_grad_graph_parity(fn, ref_fn, (x, b), ("x", "b"))
    first, second = grad_graph(fn, (x, b))
    assert all(g is not None for g in first) and all(g is None for g in second)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fu_kind,fd_kind", [("sep", "sep"), ("2d", "sep")])
def test_many_tiles_and_bands(impl, fu_kind, fd_kind):
    """StyleGAN3's 12-tap filters on an output of several kernel tiles / CPU bands per axis: the mask bytes each
    tile owns, the halos between tiles, gradients through the stored mask."""
    x = torch.randn(1, 2, 37, 70, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    kw = {"fu": _filter(fu_kind, 12), "fd": _filter(fd_kind, 12), "b": b, "up": 2, "down": 2,
          "padding": [10, 9, 11, 8], "clamp": 0.5}
    out, ref = filtered_lrelu(x, **kw, impl=impl), filtered_lrelu_ref(x, **kw)
    assert out.shape[2] > 32 and out.shape[3] > 64 and rel_err(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    for g, g_ref in zip(torch.autograd.grad(out, (x, b), dy), torch.autograd.grad(ref, (x, b), dy)):
        assert rel_err(g, g_ref) < 1e-12


@pytest.mark.parametrize("case", [1, 5, 8])
def test_gradcheck_and_gradgradcheck(case):
    x, kw = _case(CASES[case], shape=(1, 2, 5, 4))
    b = kw.pop("b")
    if b is None:
        b = torch.randn(2, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def fn(x, b):
        return filtered_lrelu(x, b=b, **kw, impl="ext")
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("impl", IMPLS)
def test_none_gradients_match_reference(impl):
    x, kw = _case(CASES[2])
    fu, fd = kw["fu"].clone().requires_grad_(), kw["fd"].clone().requires_grad_()
    kw.update(fu=fu, fd=fd, b=None)
    # no gradient flows to the filters (as NVlabs' op; the reference, plain autograd, differentiates them)
    gx, gfu, gfd = torch.autograd.grad(filtered_lrelu(x, **kw, impl=impl).sum(), (x, fu, fd), allow_unused=True)
    assert gx is not None and gfu is None and gfd is None
    (gfu,) = torch.autograd.grad(filtered_lrelu(x.detach(), **kw, impl=impl).sum(), fu, allow_unused=True)
    assert gfu is None  # only a filter asks for gradients: nothing flows, and no mask was needed
    b = torch.zeros(3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    kw.update(b=b)
    x.requires_grad_(False)
    (gb,) = torch.autograd.grad(filtered_lrelu(x, **kw, impl=impl).sum(), (b,))
    (gb_ref,) = torch.autograd.grad(filtered_lrelu_ref(x, **kw).sum(), (b,))
    assert rel_err(gb, gb_ref) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
def test_channels_last_and_strided_views(impl):
    x, kw = _case(CASES[2], shape=(2, 5, 8, 7))
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    out = filtered_lrelu(x_cl, **kw, impl=impl)
    ref = filtered_lrelu_ref(x_cl, **kw)
    assert out.is_contiguous(memory_format=torch.channels_last) and rel_err(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    assert rel_err(torch.autograd.grad(out, x_cl, dy)[0], torch.autograd.grad(ref, x_cl, dy)[0]) < 1e-12
    view = x.detach()[:, 1:4, ::2, 1:]
    assert rel_err(filtered_lrelu(view, **{**kw, "b": kw["b"][:3]}, impl=impl),
                   filtered_lrelu_ref(view, **{**kw, "b": kw["b"][:3]})) < 1e-12


def _interpreted_bf16(impl, dtype):
    return impl == "triton" and dtype == torch.bfloat16 and DEVICE.type == "cpu"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 1e-2)])
def test_dtypes(impl, dtype, tol):
    if _interpreted_bf16(impl, dtype):
        pytest.skip("the Triton interpreter has no bfloat16 arithmetic")
    x, kw = _case(CASES[1], shape=(2, 3, 9, 8), dtype=dtype)
    kw["clamp"] = 1.0
    x64 = x.detach().double().requires_grad_()
    kw64 = {**kw, "b": kw["b"].detach().double()}
    out, ref = filtered_lrelu(x, **kw, impl=impl), filtered_lrelu_ref(x64, **kw64)
    assert out.dtype == dtype and rel_err(out, ref) < tol
    dy = torch.randn_like(ref)
    gx = torch.autograd.grad(out, x, dy.to(dtype))[0]
    assert gx.dtype == dtype and rel_err(gx, torch.autograd.grad(ref, x64, dy)[0]) < tol


@pytest.mark.parametrize("impl", IMPLS)
def test_backward_saves_a_two_bit_mask(impl):
    """The backward keeps 2 bits per mid pixel (uint8, 4 pixels a byte) and the filters: no float tensor of
    the upsampled size, no copy of x."""
    x, kw = _case(CASES[1], shape=(2, 3, 16, 16), dtype=torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = filtered_lrelu(x, **kw, impl=impl)
    mid_h, mid_w = (y.shape[2] - 1) * 2 + 6, (y.shape[3] - 1) * 2 + 6
    masks = [t for t in saved if t.dtype == torch.uint8]
    assert len(masks) == 1 and masks[0].shape == (2, 3, mid_h, (mid_w + 3) // 4)
    floats = [t for t in saved if t.dtype != torch.uint8]
    assert all(t.numel() <= 6 for t in floats), [t.shape for t in floats]  # the filters only
    with torch.no_grad():  # no mask without autograd
        torch.testing.assert_close(filtered_lrelu(x, **kw, impl=impl), y.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    x, kw = _case(CASES[5], shape=(1, 2, 5, 4))
    fu, fd, b = kw["fu"], kw["fd"], kw["b"]
    pad = [2, 1, -1, 3]
    torch.library.opcheck(torch.ops.ganfast.filtered_lrelu.default,
                          (x, fu, fd, b, 4, 2, pad, 1.4, 0.2, 0.4, True, True, impl))
    torch.library.opcheck(torch.ops.ganfast.filtered_lrelu.default,
                          (x.detach().to(memory_format=torch.channels_last), None, fd, None, 1, 2, [1, 1, 2, 2], 1.0,
                           0.3, None, False, False, impl))
    _, mask = torch.ops.ganfast.filtered_lrelu(x, fu, fd, b, 4, 2, pad, 1.4, 0.2, 0.4, True, True, impl)
    y = filtered_lrelu(x, **kw, impl=impl)
    for t, transpose in ((x, False), (torch.randn_like(y).requires_grad_(), True)):
        torch.library.opcheck(torch.ops.ganfast.filtered_lrelu_linear.default,
                              (t, mask, fu, fd, 4, 2, pad, 1.4, 0.2, True, transpose, [5, 4], impl))


def test_torch_compile_fullgraph():
    x, kw = _case(CASES[2], shape=(1, 2, 6, 6), dtype=torch.float32)

    def fn(x, b):
        return filtered_lrelu(x, b=b, **{k: v for k, v in kw.items() if k != "b"}).square().sum()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    gx, gb = torch.autograd.grad(compiled(x, kw["b"]), (x, kw["b"]))
    gx_ref, gb_ref = torch.autograd.grad(fn(x, kw["b"]), (x, kw["b"]))
    assert rel_err(gx, gx_ref) < 1e-6 and rel_err(gb, gb_ref) < 1e-6


# ---- impl selection -------------------------------------------------------------------------------------------

def test_auto_selection_and_info():
    entry = ganfast._dispatch.OPS["filtered_lrelu"]
    assert entry.resolve(None, torch.device("cpu"), torch.float32) == "ext"
    with ganfast.use_impl("ref"):
        assert entry.resolve(None, torch.device("cpu"), torch.float32) == "ref"
    assert ganfast.info()["ops"]["filtered_lrelu"]["cpu"]["impl"] == "ext"


def test_impl_that_cannot_serve_says_why(monkeypatch):
    x, kw = _case(CASES[1], dtype=torch.float32)
    x = x.detach().cpu()
    kw = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    monkeypatch.setattr(ganfast._ext, "_C", None)
    with pytest.raises(ganfast.ImplNotSupportedError, match="not available"):
        filtered_lrelu(x, **kw, impl="ext")
    torch.testing.assert_close(filtered_lrelu(x, **kw), filtered_lrelu_ref(x, **kw))  # auto falls back to ref


# ---- errors ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    ({"x": torch.zeros(2, 3, 4)}, ValueError, "x must be 4-D"),
    ({"x": torch.zeros(1, 2, 8, 8, dtype=torch.int64)}, TypeError, "x must have dtype"),
    ({"x": [[1.0]]}, TypeError, "x must be a torch.Tensor"),
    ({"fu": torch.ones(2, 2, 2)}, ValueError, "fu must be None or a non-empty 1-D"),
    ({"fd": torch.ones(0)}, ValueError, "fd must be None or a non-empty"),
    ({"fu": torch.ones(4, dtype=torch.float64)}, TypeError, "fu must have dtype"),
    ({"fd": torch.ones(4, device="meta")}, ValueError, "fd is on meta"),
    ({"b": torch.zeros(3)}, ValueError, "b has length 3 but x has 2 channels"),
    ({"b": torch.zeros(2, dtype=torch.float64)}, TypeError, "b has dtype"),
    ({"b": torch.zeros(2, 1)}, ValueError, "b must be 1-D"),
    ({"up": 0}, ValueError, "up must be an int >= 1"),
    ({"down": 1.5}, ValueError, "down must be an int >= 1"),
    ({"padding": [1, 2, 3]}, ValueError, "padding must be an int"),
    ({"padding": -6}, ValueError, "output would be -1x-1"),
    ({"gain": float("nan")}, ValueError, "gain must be finite"),
    ({"gain": -1.0}, ValueError, "gain must be finite and >= 0, got -1.0"),
    ({"slope": "steep"}, TypeError, "slope must be a number, got str"),
    ({"clamp": float("inf")}, ValueError, "clamp must be None or a finite number >= 0"),
    ({"slope": -0.1}, ValueError, "slope must be finite and >= 0"),
    ({"clamp": -1}, ValueError, "clamp must be None or a finite number >= 0"),
    ({"impl": "fast"}, ValueError, "impl must be one of"),
])
def test_bad_input_errors(kwargs, exc, match):
    args = {"x": torch.zeros(1, 2, 8, 8), "fu": torch.ones(4) / 4, "fd": torch.ones(4) / 4, "up": 2, "down": 2,
            "padding": 3}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        filtered_lrelu(**args)
