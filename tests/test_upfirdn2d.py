"""upfirdn2d: parity with ganfast.reference (float64 forward and gradients, gradcheck, gradgradcheck), dtypes,
layouts, the up/down/filter2d helpers, torch.library.opcheck, impl selection and the errors bad input gets."""
import itertools

import pytest
import torch
from support import DEVICE, assert_grad_graph_parity, assert_layout_parity, available_impls, record_grids, rel_err

import ganfast
from ganfast.ops import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from ganfast.ops.upfirdn2d import gradient_padding, output_size
from ganfast.reference import upfirdn2d as upfirdn2d_ref
from ganfast.reference.upfirdn2d import downsample2d as downsample2d_ref
from ganfast.reference.upfirdn2d import filter2d as filter2d_ref
from ganfast.reference.upfirdn2d import upsample2d as upsample2d_ref

IMPLS = available_impls()


def _filter(kind):
    """Filters as StyleGAN builds them, plus an arbitrary (asymmetric, odd-sized) 2-D one."""
    return {
        "none": None,
        "box2": setup_filter([1, 1]),                         # 2x2
        "fir4": setup_filter([1, 3, 3, 1]),                   # 4x4, StyleGAN2's resample filter
        "tap3": setup_filter([1, 2, 1]),                      # 3x3, odd
        "sep8": setup_filter([1, 2, 4, 7, 7, 4, 2, 1]),       # 1-D of 8 taps: stays separable
        "asym": torch.arange(1.0, 7.0).reshape(3, 2) / 21,    # 3 rows x 2 columns, not symmetric
    }[kind].to(DEVICE) if kind != "none" else None


FILTERS = ["none", "box2", "fir4", "tap3", "sep8", "asym"]
SCALINGS = [1, 2, [1, 2]]
PADDINGS = [0, 2, [1, -1], [2, 1, -1, 3]]


def _cases():
    """(up, down, padding, flip_filter, filter kind) combinations whose output is at least 1x1 for a 7x6 input."""
    cases = []
    for up, down, padding, flip, kind in itertools.product(SCALINGS, [1, 2, [2, 1]], PADDINGS, [False, True],
                                                           FILTERS):
        f = _filter(kind)
        (upx, upy), (dx, dy) = [(s, s) if isinstance(s, int) else s for s in (up, down)]
        p = [padding] * 4 if isinstance(padding, int) else (
            [padding[0], padding[0], padding[1], padding[1]] if len(padding) == 2 else padding)
        fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
        if output_size(6, upx, dx, p[0], p[1], fw) >= 1 and output_size(7, upy, dy, p[2], p[3], fh) >= 1:
            cases.append((up, down, padding, flip, kind))
    return cases


CASES = _cases()


def _x(shape=(2, 3, 7, 6), dtype=torch.float64, requires_grad=False):
    return torch.randn(shape, dtype=torch.float64).to(device=DEVICE, dtype=dtype).requires_grad_(requires_grad)


def test_impls_available_here():
    assert "ext" in IMPLS and "triton" in IMPLS, IMPLS


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_and_gradient_float64(impl):
    # the float64 reference is slow on CPU (and the Triton interpreter slower): every 3rd case on the kernel,
    # every 13th on the interpreter; strides prime to the grid's inner sizes still cover every value of each
    cases = CASES[::3] if impl == "ext" or DEVICE.type == "cuda" else CASES[::13]
    assert len(cases) > 25
    for position, values in ((0, SCALINGS), (2, PADDINGS), (4, FILTERS)):
        assert all(any(case[position] == v for case in cases) for v in values)
    for up, down, padding, flip, kind in cases:
        f = _filter(kind)
        x = _x(requires_grad=True)
        ref = upfirdn2d_ref(x, f, up, down, padding, flip, gain=1.7)
        out = upfirdn2d(x, f, up, down, padding, flip, gain=1.7, impl=impl)
        case = (up, down, padding, flip, kind)
        assert out.shape == ref.shape and out.dtype == x.dtype, case
        assert rel_err(out, ref) < 1e-12, case
        dy = torch.randn_like(ref)
        assert rel_err(torch.autograd.grad(out, x, dy)[0], torch.autograd.grad(ref, x, dy)[0]) < 1e-12, case


@pytest.mark.parametrize("case", [(2, 1, 0, False, "fir4"), (1, 2, [1, -1], True, "asym"),
                                  ([1, 2], [2, 1], [2, 1, -1, 3], False, "tap3"), (2, 2, 1, False, "sep8")],
                         ids=str)
def test_gradcheck_and_gradgradcheck(case):
    up, down, padding, flip, kind = case
    f = _filter(kind)
    x = _x((1, 1, 5, 4), requires_grad=True)

    def fn(x):  # the extension; Triton's derivatives are checked against the reference in the tests above/below
        return upfirdn2d(x, f, up, down, padding, flip, gain=0.8, impl="ext")
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_gradient_padding_gives_the_input_size():
    for in_size, up, down, pad0, pad1, taps in itertools.product(range(1, 6), [1, 2, 3], [1, 2, 3], [-1, 0, 2],
                                                                 [-2, 0, 1], [1, 2, 4, 5]):
        out = output_size(in_size, up, down, pad0, pad1, taps)
        if out >= 1:
            g0, g1 = gradient_padding(in_size, out, up, down, pad0, taps)
            assert output_size(out, down, up, g0, g1, taps) == in_size


@pytest.mark.parametrize("impl", IMPLS)
def test_second_order_matches_reference(impl):
    """Differentiate a function of the gradient (the R1 pattern) through two upfirdn2d's."""
    f = _filter("fir4")
    x = _x((1, 2, 5, 4), requires_grad=True)
    results = []
    for use in (impl, "ref"):
        y = upsample2d(x, f, impl=use)
        y = downsample2d(y.square(), f, impl=use)
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum(), x)[0])
    assert rel_err(*results) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("helper", ["upsample2d", "downsample2d", "filter2d"])
@pytest.mark.parametrize("kind", ["fir4", "sep8", "tap3"])
def test_helpers_match_reference(impl, helper, kind):
    f = _filter(kind)
    x = _x((1, 3, 8, 6))
    ours = {"upsample2d": upsample2d, "downsample2d": downsample2d, "filter2d": filter2d}[helper]
    ref_fn = {"upsample2d": upsample2d_ref, "downsample2d": downsample2d_ref, "filter2d": filter2d_ref}[helper]
    for padding in (0, [1, 0, 0, 2]):
        out, ref = ours(x, f, padding=padding, impl=impl), ref_fn(x, f, padding=padding)
        assert out.shape == ref.shape and rel_err(out, ref) < 1e-12
    scale = {"upsample2d": 2.0, "downsample2d": 0.5, "filter2d": 1.0}[helper]
    assert ours(x, f, impl=impl).shape[2:] == (int(8 * scale), int(6 * scale))


def _interpreted_bf16(impl, dtype):
    return impl == "triton" and dtype == torch.bfloat16 and DEVICE.type == "cpu"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 1e-2)])
def test_dtypes(impl, dtype, tol):
    if _interpreted_bf16(impl, dtype):
        pytest.skip("the Triton interpreter has no bfloat16 arithmetic")
    f = _filter("fir4")
    x = _x((2, 3, 9, 8), dtype=dtype, requires_grad=True)
    xd = x.detach().double().requires_grad_()
    for up, down in [(2, 1), (1, 2), (1, 1)]:
        out = upfirdn2d(x, f, up, down, [2, 1, 1, 2], gain=up * up, impl=impl)
        ref = upfirdn2d_ref(xd, f, up, down, [2, 1, 1, 2], gain=up * up)
        assert out.dtype == dtype and rel_err(out, ref) < tol
        dy = torch.randn_like(ref)
        (gx,) = torch.autograd.grad(out, x, dy.to(dtype))
        assert gx.dtype == dtype and rel_err(gx, torch.autograd.grad(ref, xd, dy)[0]) < tol


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", ["channels_last", "strided_view", "expanded", "batch1_1x1"])
def test_layouts(impl, layout):
    f = _filter("fir4")
    if layout == "channels_last":
        x = _x((2, 5, 6, 7)).to(memory_format=torch.channels_last)
    elif layout == "strided_view":
        x = _x((2, 6, 9, 8))[:, ::2, 1:, ::2]
    elif layout == "expanded":
        x = _x((1, 3, 1, 5)).expand(2, 3, 4, 5)  # stride 0 along N and H, as autograd hands out for sum()
    else:
        x = _x((1, 1, 1, 1))
    x.requires_grad_()
    out = upsample2d(x, f, impl=impl)
    ref = upsample2d_ref(x, f)
    assert_layout_parity(out, ref, x, layout)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_input_and_batch(impl):
    f = _filter("fir4")
    for shape in [(1, 2, 0, 4), (0, 2, 3, 3)]:
        x = torch.zeros(shape, dtype=torch.float64, device=DEVICE)
        out, ref = upfirdn2d(x, f, padding=2, impl=impl), upfirdn2d_ref(x, f, padding=2)
        assert out.shape == ref.shape and torch.equal(out, ref)


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    f = _filter("fir4")
    x = _x((1, 2, 5, 4), requires_grad=True)
    for args in [(x, f, [2, 2], [1, 1], [2, 1, 2, 1], False, 4.0, impl),
                 (x, None, [1, 2], [2, 1], [1, -1, 0, 2], True, 1.0, impl),
                 (x.detach().to(memory_format=torch.channels_last).requires_grad_(), f, [1, 1], [2, 2],
                  [1, 1, 1, 1], False, 1.0, impl)]:
        torch.library.opcheck(torch.ops.ganfast.upfirdn2d.default, args)


def test_no_gradient_to_the_filter():
    f = _filter("fir4").clone().requires_grad_()
    x = _x((1, 2, 4, 4), requires_grad=True)
    y = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], impl="ext")
    gx, gf = torch.autograd.grad(y.sum(), (x, f), allow_unused=True)
    assert gx is not None and gf is None


# ---- impl selection -------------------------------------------------------------------------------------------

def test_auto_selection_and_info():
    entry = ganfast._dispatch.OPS["upfirdn2d"]
    assert entry.resolve(None, torch.device("cpu"), torch.float32) == "ext"
    with ganfast.use_impl("ref"):
        assert entry.resolve(None, torch.device("cpu"), torch.float32) == "ref"
    assert ganfast.info()["ops"]["upfirdn2d"]["cpu"]["impl"] == "ext"


def test_impl_that_cannot_serve_says_why(monkeypatch):
    x, f = _x((1, 2, 4, 4), dtype=torch.float32).cpu(), _filter("fir4").cpu()
    monkeypatch.setattr(ganfast._ext, "_C", None)
    with pytest.raises(ganfast.ImplNotSupportedError, match="not available"):
        upfirdn2d(x, f, impl="ext")
    torch.testing.assert_close(upfirdn2d(x, f, up=2), upfirdn2d_ref(x, f, up=2))  # auto falls back to ref


# ---- errors ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=torch.zeros(2, 3, 4)), ValueError, "x must be 4-D"),
    (dict(x=torch.zeros(1, 1, 4, 4, dtype=torch.int64)), TypeError, "x must have dtype"),
    (dict(x=[[1.0]]), TypeError, "x must be a torch.Tensor"),
    (dict(f=torch.ones(2, 2, 2)), ValueError, "f must be None or a non-empty 1-D"),
    (dict(f=torch.ones(0)), ValueError, "f must be None or a non-empty"),
    (dict(f=torch.ones(3, dtype=torch.int32)), TypeError, "f must have dtype"),
    (dict(f=[1.0, 1.0]), TypeError, "f must be a torch.Tensor"),
    (dict(up=0), ValueError, "up must be an int >= 1"),
    (dict(down=[1, 2, 3]), ValueError, "down must be an int >= 1 or a pair"),
    (dict(up=1.5), ValueError, "up must be"),
    (dict(padding=[1, 2, 3]), ValueError, "padding must be an int"),
    (dict(padding=-3), ValueError, "must be at least 1x1"),
    (dict(gain=float("nan")), ValueError, "gain must be finite"),
    (dict(impl="fast"), ValueError, "impl must be one of"),
])
def test_bad_input_errors(kwargs, exc, match):
    args = dict(x=torch.zeros(1, 2, 4, 4), f=torch.ones(2, 2))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        upfirdn2d(**args)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
def test_gradient_graph_matches_reference(impl, up, down):
    """The gradient is linear in dy alone: x is not an input of it (None in the second derivative)."""
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, device=DEVICE)
    f = setup_filter([1, 3, 3, 1]).to(DEVICE)
    assert_grad_graph_parity(lambda x: upfirdn2d(x, f, up=up, down=down, padding=1, impl=impl),
                             lambda x: upfirdn2d_ref(x, f, up=up, down=down, padding=1), (x,), ("x",))


def test_large_upfirdn2d_grid_walks_planes(monkeypatch):
    """Triton upfirdn2d with more (n, c) planes than grid axis 1 takes (limit lowered to 2): 2-D grid, planes
    grid-strided, several tiles per plane (tiles on axis 0, so wide images never meet the 65535 limit)."""
    from ganfast.ops import setup_filter, upfirdn2d
    from ganfast.reference.upfirdn2d import upfirdn2d as upfirdn2d_ref
    from ganfast.triton import upfirdn2d as triton_upfirdn2d
    monkeypatch.setattr(triton_upfirdn2d, "MAX_GRID_YZ", 2)
    grids = record_grids(monkeypatch, triton_upfirdn2d, "_upfirdn2d_fwd_kernel")["_upfirdn2d_fwd_kernel"].grids
    x = torch.randn(5, 1, 9, 70, dtype=torch.float64).to(memory_format=torch.channels_last)
    f = setup_filter([1, 3, 3, 1]).double()
    for kwargs in [dict(up=2, padding=[2, 1]), dict(down=2, padding=1)]:
        assert rel_err(upfirdn2d(x, f, impl="triton", **kwargs), upfirdn2d_ref(x, f, **kwargs)) < 1e-13
    assert grids == [(6, 2), (1, 2)]  # 17x141 outputs: 2x3 tiles of 16x64; 4x35: one tile of 4x64


@pytest.mark.parametrize("impl", available_impls())
def test_upfirdn2d_many_tiles_per_plane(impl):
    """Outputs of several tiles in both directions for every kernel (CUDA tiles are at most 32x64, Triton's
    16x64): 69x151 from up=2, channels_last and contiguous."""
    from ganfast.ops import setup_filter, upfirdn2d
    from ganfast.reference.upfirdn2d import upfirdn2d as upfirdn2d_ref
    f = setup_filter([1, 3, 3, 1], device=DEVICE).double()
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 35, 75, dtype=torch.float64, device=DEVICE).to(memory_format=layout)
        y = upfirdn2d(x, f, up=2, padding=[2, 1], impl=impl)
        assert y.shape == (2, 3, 69, 151) and rel_err(y, upfirdn2d_ref(x, f, up=2, padding=[2, 1])) < 1e-13


def test_large_upfirdn2d_of_an_expanded_input_past_2_pow_32_elements():
    """Triton upfirdn2d of an expanded (stride-0) input of 2·3·3·2**32 logical elements, downsampled by 2**28
    along x: sizes and o·down products past 2**31 (the polyphase math is 64-bit), nothing materialised. (The C++
    CPU kernel lays whole input rows out per task, so rows of 2**32 pixels are a MemoryError there.)"""
    from ganfast.ops import upfirdn2d
    values = torch.randn(1, 3, 1, 1, dtype=torch.float64)
    x = values.expand(2, 3, 3, 2**32)
    f = torch.tensor([0.25, 0.75], dtype=torch.float64)  # sums to 1: every output is its channel's value
    y = upfirdn2d(x, f, down=[2**28, 1], impl="triton")
    assert y.shape == (2, 3, 2, 16)
    assert torch.allclose(y, values.expand_as(y), rtol=1e-15, atol=0)
