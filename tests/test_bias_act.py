"""bias_act: parity with ganfast.reference (float64 forward, gradcheck, gradgradcheck), dtypes, layouts,
torch.library.opcheck, torch.compile, impl selection and the errors bad input gets."""
import math

import pytest
import torch
from support import DEVICE, assert_grad_graph_parity, assert_layout_parity, available_impls, grad_graph, rel_err

import ganfast
from ganfast.ops import ACTIVATIONS, bias_act
from ganfast.reference import bias_act as bias_act_ref

IMPLS = available_impls()
ACTS = sorted(ACTIVATIONS)
CLAMPS = [None, 0.5]


def _inputs(shape=(2, 5, 3, 4), dim=1, dtype=torch.float64, device=DEVICE, with_b=True, requires_grad=False):
    x = (torch.randn(shape, dtype=torch.float64) * 2).to(device=device, dtype=dtype)
    b = torch.randn(shape[dim], dtype=torch.float64).to(device=device, dtype=dtype) if with_b else None
    x.requires_grad_(requires_grad)
    if b is not None:
        b.requires_grad_(requires_grad)
    return x, b


def test_impls_available_here():
    # CI builds the extension and installs triton: both must be testable on CPU, or this suite proves little.
    assert "ext" in IMPLS and "triton" in IMPLS, IMPLS


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("clamp", CLAMPS)
def test_forward_float64(impl, act, clamp):
    x, b = _inputs()
    ref = bias_act_ref(x, b, act=act, clamp=clamp)
    out = bias_act(x, b, act=act, clamp=clamp, impl=impl)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert rel_err(out, ref) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_and_gradgradcheck(impl, act):
    x, b = _inputs(shape=(2, 3, 2, 3), requires_grad=True)
    clamp = 0.9 if act in ("lrelu", "swish", "tanh") else None  # exercise the clamp mask on a few

    def fn(x, b):
        return bias_act(x, b, act=act, alpha=0.3 if act == "lrelu" else None, gain=1.7, clamp=clamp, impl=impl)

    if clamp is not None:  # keep samples away from the clamp boundary, where the derivative jumps
        with torch.no_grad():
            y = bias_act_ref(x, b, act=act, gain=1.7, alpha=0.3 if act == "lrelu" else None)
            x[(y.abs() - clamp).abs() < 0.05] += 0.2
    if act in ("relu", "lrelu", "elu", "selu"):  # and away from the kink at 0
        with torch.no_grad():
            z = x + b.view(1, -1, 1, 1)
            x[z.abs() < 0.05] += 0.2
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act", ["lrelu", "swish", "tanh"])
def test_second_order_matches_reference(impl, act):
    """The R1-style pattern: grad with create_graph, then differentiate a function of it."""
    x, b = _inputs(requires_grad=True)
    results = []
    for use in (impl, "ref"):
        y = bias_act(x, b, act=act, clamp=1.5, impl=use)
        (gx,) = torch.autograd.grad((y * y.cos()).sum(), x, create_graph=True)
        results.append((gx, *torch.autograd.grad(gx.square().sum(), (x, b))))
    for got, want in zip(*results):
        assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 1e-2)])
@pytest.mark.parametrize("act", ["lrelu", "swish", "softplus", "selu"])
def test_dtypes_forward_backward(impl, dtype, tol, act):
    x, b = _inputs(shape=(3, 7, 5, 3), dtype=dtype, requires_grad=True)
    xd, bd = (t.detach().double().requires_grad_() for t in (x, b))
    out = bias_act(x, b, act=act, clamp=2.0, impl=impl)
    ref = bias_act_ref(xd, bd, act=act, clamp=2.0)
    assert out.dtype == dtype
    assert rel_err(out, ref) < tol
    dy = torch.randn_like(ref)
    gx, gb = torch.autograd.grad(out, (x, b), dy.to(dtype))
    rx, rb = torch.autograd.grad(ref, (xd, bd), dy)
    assert gx.dtype == dtype and gb.dtype == dtype
    # where |y| is within rounding of the clamp, a half-precision y may land either side of it: skip those
    near_clamp = (ref.detach().abs() - 2.0).abs() < 2.0 * 2 * torch.finfo(dtype).eps
    assert rel_err(gx.masked_fill(near_clamp, 0), rx.masked_fill(near_clamp, 0)) < tol
    if not near_clamp.any():
        assert rel_err(gb, rb) < 4 * tol


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", ["channels_last", "dim2", "dim_last", "permuted", "strided_view", "batch1"])
def test_layouts(impl, layout):
    if layout == "channels_last":
        x, b = _inputs(shape=(2, 6, 3, 5))
        x = x.to(memory_format=torch.channels_last)
        dim = 1
    elif layout == "dim2":
        x, b = _inputs(shape=(2, 3, 7, 5), dim=2)
        dim = 2
    elif layout == "dim_last":
        x, b = _inputs(shape=(4, 9), dim=1)
        dim = -1
    elif layout == "permuted":
        x, b = _inputs(shape=(3, 4, 5), dim=0)
        x = x.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # dense, neither contiguous nor channels_last
        dim = 0
    elif layout == "strided_view":
        x, b = _inputs(shape=(2, 5, 6, 6))
        x = x[:, :, ::2, 1:]  # not dense: computed on a contiguous copy
        dim = 1
    else:
        x, b = _inputs(shape=(1, 3, 1, 1))
        dim = 1
    x.requires_grad_()
    out = bias_act(x, b, dim=dim, act="swish", clamp=1.0, impl=impl)
    ref = bias_act_ref(x, b, dim=dim, act="swish", clamp=1.0)
    assert_layout_parity(out, ref, x, layout)


@pytest.mark.parametrize("shape, dim", [((3, 200, 9, 11), 1), ((2, 70000), 1), ((5, 7, 300), 1)])
def test_short_channel_stride_on_the_cpu_kernel(shape, dim):
    """A small channel stride (channels_last: 1) takes the C++ kernel's bias-row path, whose period (stride x
    channels) does not divide the threads' chunks here; a period over its limit (70000 channels) takes the
    per-channel path; dim 1 of (5, 7, 300) has stride 300, above the row path's limit."""
    if "ext" not in available_impls():
        pytest.skip("the compiled extension is not available")
    x, b = _inputs(shape=shape, dim=dim, dtype=torch.float32, device="cpu")
    if x.ndim == 4:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = bias_act(x, b, dim=dim, act="lrelu", clamp=1.5, impl="ext")
    ref = bias_act_ref(x, b, dim=dim, act="lrelu", clamp=1.5)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    assert out.stride() == x.stride()
    dy = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, dy)[0], torch.autograd.grad(ref, x, dy)[0], rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_no_bias_scalar_and_empty(impl):
    x = torch.randn(7, dtype=torch.float64)
    assert rel_err(bias_act(x, act="tanh", impl=impl), torch.tanh(x)) < 1e-12
    s = torch.tensor(-0.5, dtype=torch.float64)
    assert bias_act(s, act="lrelu", impl=impl).item() == pytest.approx(-0.1 * math.sqrt(2))
    e = torch.empty(0, 3, dtype=torch.float64)
    assert bias_act(e, torch.zeros(3, dtype=torch.float64), act="relu", impl=impl).shape == (0, 3)


@pytest.mark.parametrize("impl", IMPLS)
def test_nan_and_inf_propagate(impl):
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), 1.0]], dtype=torch.float32)
    for act in ACTS:
        out, ref = bias_act(x, act=act, impl=impl), bias_act_ref(x, act=act)
        assert torch.equal(torch.isnan(out), torch.isnan(ref)), act
        finite = ~torch.isnan(ref)
        torch.testing.assert_close(out[finite], ref[finite], msg=act)
    clamped = bias_act(x, act="linear", clamp=0.5, impl=impl)
    assert torch.isnan(clamped[0, 0]) and clamped[0, 1:].tolist() == [0.5, -0.5, 0.5]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_rounding_matches_torch(impl, dtype):
    """Half types are computed in float32 and rounded to nearest even, exactly as torch rounds."""
    x = (torch.randn(4096) * 100).to(dtype)
    x[:4] = torch.tensor([65504.0, 1e-7, -3e-8, 0.0]).to(dtype)  # max, subnormals, zero
    for gain in (1.0, 0.3, 1.7):
        want = (x.float() * gain).to(dtype)
        got = bias_act(x, act="linear", gain=gain, impl=impl)
        ulps = (got.view(torch.int16).int() - want.view(torch.int16).int()).abs().max().item()
        assert ulps <= (1 if _interpreted_bf16(impl, dtype) else 0), gain


def _interpreted_bf16(impl, dtype):
    """The Triton interpreter has no bfloat16 type and truncates on conversion (GPUs round to nearest even)."""
    return impl == "triton" and dtype == torch.bfloat16 and DEVICE.type == "cpu"


def test_third_order_raises_clearly():
    x, b = _inputs(requires_grad=True)
    y = bias_act(x, b, act="tanh", impl="ext")
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="third-order"):
        torch.autograd.grad(g2.sum(), x)


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    x, b = _inputs(requires_grad=True)
    y = torch.ops.ganfast.bias_act(x, b, 1, "swish", 0.0, 1.4, 1.0, impl).detach()
    dy = torch.randn_like(x)
    for args in [(x, b, 1, "swish", 0.0, 1.4, 1.0, impl), (x, None, 1, "lrelu", 0.2, 1.4, None, impl)]:
        torch.library.opcheck(torch.ops.ganfast.bias_act.default, args)
    torch.library.opcheck(torch.ops.ganfast.bias_act_grad.default,
                          (dy.requires_grad_(), x, b, y, 1, "swish", 0.0, 1.4, 1.0, impl))
    torch.library.opcheck(torch.ops.ganfast.bias_act_grad2.default,
                          (dy.detach(), dy.detach(), x.detach(), b.detach(), y, 1, "swish", 0.0, 1.4, 1.0, impl))


def test_torch_compile_fullgraph():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 6, bias=False)
            self.bias = torch.nn.Parameter(torch.randn(6))

        def forward(self, x):
            return bias_act(self.lin(x), self.bias, act="lrelu", clamp=1.0, impl="ext").sum()

    model = Block()
    x = torch.randn(5, 8)
    compiled = torch.compile(model, fullgraph=True)
    eager_grads = torch.autograd.grad(model(x), list(model.parameters()))
    compiled_out = compiled(x)
    torch.testing.assert_close(compiled_out, model(x))
    for got, want in zip(torch.autograd.grad(compiled_out, list(model.parameters())), eager_grads):
        torch.testing.assert_close(got, want)


# ---- impl selection -------------------------------------------------------------------------------------------

def test_auto_selection_and_overrides(monkeypatch):
    x, b = _inputs(dtype=torch.float32)
    entry = ganfast._dispatch.OPS["bias_act"]
    assert entry.resolve(None, x.device, x.dtype) == "ext"              # linear/relu/lrelu: the C++ kernel
    assert entry.resolve("cuda", x.device, x.dtype) == "ext"            # NVlabs' spelling of auto
    assert entry.resolve(None, x.device, x.dtype, "other") == "ref"     # measured faster on CPU
    with ganfast.use_impl("ref"):
        assert entry.resolve(None, x.device, x.dtype) == "ref"
        with ganfast.use_impl("triton"):
            assert entry.resolve(None, x.device, x.dtype) == "triton"
    monkeypatch.setenv("GANFAST_IMPL", "ref")
    assert entry.resolve(None, x.device, x.dtype) == "ref"
    assert entry.resolve("ext", x.device, x.dtype) == "ext"             # an explicit impl= wins
    monkeypatch.setenv("GANFAST_IMPL", "bogus")
    with pytest.raises(ValueError, match="GANFAST_IMPL"):
        bias_act(x, b)


def test_impl_that_cannot_serve_says_why(monkeypatch):
    x, b = _inputs(dtype=torch.float32, device="cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ganfast.ImplNotSupportedError, match="TRITON_INTERPRET"):
        bias_act(x, b, impl="triton")
    monkeypatch.setattr(ganfast._ext, "_C", None)
    with pytest.raises(ganfast.ImplNotSupportedError, match="not available"):
        bias_act(x, b, impl="ext")
    # auto falls back to the reference and still gives the right answer
    torch.testing.assert_close(bias_act(x, b, act="lrelu", clamp=1.0), bias_act_ref(x, b, act="lrelu", clamp=1.0))


def test_info_reports_build_and_choices():
    report = ganfast.info()
    assert report["extension_loaded"] and report["torch"] == torch.__version__
    assert report["ops"]["bias_act"]["cpu"]["impl"] == "ext"
    text = ganfast.info.__module__ and __import__("ganfast.info", fromlist=["format_info"]).format_info(report)
    assert "bias_act" in text and "extension: ganfast._C loaded" in text
    # routes that hand convolutions to torch say so
    assert "torch's convolutions" in report["ops"]["modulated_conv2d"]["cpu"]["notes"]["ext"]
    assert "conv2d_resample" in report["ops"] and "torch's conv2d" in text


def test_cli_info_runs(capsys):
    from ganfast.cli import main
    assert main(["info", "--json"]) == 0
    assert '"extension_loaded": true' in capsys.readouterr().out


# ---- errors ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(act="gelu"), ValueError, "act must be one of"),
    (dict(b=torch.zeros(4)), ValueError, "b has length 4"),
    (dict(b=torch.zeros(5, dtype=torch.float64)), TypeError, "b has dtype"),
    (dict(b=torch.zeros(5, 1)), ValueError, "b must be 1-D"),
    (dict(b=torch.zeros(5), dim=4), ValueError, "dim=4 is out of range"),
    (dict(b=torch.zeros(5), dim=1.0), TypeError, "dim must be an int"),
    (dict(b=[0.0] * 5), TypeError, "b must be a torch.Tensor"),
    (dict(clamp=-1.0), ValueError, "clamp must be None or a finite number >= 0"),
    (dict(clamp=float("nan")), ValueError, "clamp must be"),
    (dict(gain=float("inf")), ValueError, "gain must be finite"),
    (dict(impl="fast"), ValueError, "impl must be one of"),
])
def test_bad_input_errors(kwargs, exc, match):
    x = torch.randn(2, 5, 3)
    with pytest.raises(exc, match=match):
        bias_act(x, **kwargs)


def test_bad_x_errors():
    with pytest.raises(TypeError, match="x must have dtype"):
        bias_act(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        bias_act([1.0, 2.0])
    with pytest.raises(ValueError, match="x must have at least one dimension"):
        bias_act(torch.tensor(1.0), torch.zeros(1))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="b is on"):
            bias_act(torch.zeros(2, 3, device="cuda"), torch.zeros(3))


# ---- regressions from the kernel review -----------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_clamp_mask_uses_the_stored_clamp(impl, dtype):
    """fp16(0.1) < 0.1: clamped outputs stored as fp16(0.1) must still count as clamped in the backward."""
    if _interpreted_bf16(impl, dtype):
        pytest.skip("the Triton interpreter truncates to bfloat16, so outputs near the clamp round differently")
    x = torch.linspace(-3, 3, 1001).to(dtype).requires_grad_()
    for clamp in (0.1, 181.01933598375618 / 100):
        (got,) = torch.autograd.grad(bias_act(x, act="lrelu", clamp=clamp, impl=impl).sum(), x)
        (want,) = torch.autograd.grad(bias_act_ref(x, act="lrelu", clamp=clamp).sum(), x)
        assert torch.equal(got != 0, want != 0), clamp


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck_non_dense_input(impl):
    x = torch.randn(2, 6, 5, dtype=torch.float64)[:, ::2, 1:].requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.ganfast.bias_act.default, (x, b, 1, "tanh", 0.0, 1.0, None, impl))


@pytest.mark.parametrize("impl", IMPLS)
def test_clamped_gradient_is_exact_zero(impl):
    x = torch.tensor([3.0, 2.0, -3.0, -4.0], requires_grad=True)  # 10·sigmoid: 9.5, 8.8 clamped; 0.47, 0.18 not
    y = bias_act(x, act="sigmoid", gain=10.0, clamp=0.5, impl=impl)
    (g,) = torch.autograd.grad(y, x, torch.tensor([float("nan"), float("inf"), 1.0, 1.0]))
    assert g[:2].tolist() == [0.0, 0.0] and torch.isfinite(g[2:]).all()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act", ["tanh", "elu", "selu", "softplus", "swish", "sigmoid"])
def test_float32_relative_accuracy_near_zero_and_in_tails(impl, act):
    z = torch.cat([torch.logspace(-7, 0, 40), -torch.logspace(-7, 0, 40), -torch.linspace(15, 60, 10)])
    got = bias_act(z, act=act, gain=1.0, impl=impl).double()
    want = bias_act_ref(z.double(), act=act, gain=1.0)
    rel = ((got - want).abs() / want.abs().clamp_min(1e-300)).max().item()
    assert rel < 1e-5, rel


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act,gain,clamp", [("linear", None, None), ("linear", 2.0, None), ("linear", None, 0.8),
                                            ("lrelu", None, None), ("lrelu", None, 0.8), ("relu", 0.5, 0.8),
                                            ("tanh", None, 0.8), ("swish", None, None)])
def test_gradient_graph_matches_reference(impl, act, gain, clamp):
    """None (not zeros) wherever the reference has None, first and second derivative: a linear bias_act's
    backward depends on dy alone, and a piecewise-linear one's second derivative on neither x nor b."""
    x, b = _inputs()
    assert_grad_graph_parity(lambda x, b: bias_act(x, b, act=act, gain=gain, clamp=clamp, impl=impl),
                             lambda x, b: bias_act_ref(x, b, act=act, gain=gain, clamp=clamp), (x, b), ("x", "b"))


@pytest.mark.parametrize("impl", IMPLS)
def test_second_derivative_of_piecewise_linear_is_missing_for_x_and_b(impl):
    """As StyleGAN2-ADA's CUDA op: lrelu'' = 0 a.e., so x and b are not inputs of the second derivative."""
    x, b = _inputs(requires_grad=True)
    for clamp in (None, 1.0):
        (gx,) = torch.autograd.grad(bias_act(x, b, act="lrelu", clamp=clamp, impl=impl).sum(), x, create_graph=True)
        assert torch.autograd.grad(gx.sum(), (x, b), allow_unused=True) == (None, None)


@pytest.mark.parametrize("impl", IMPLS)
def test_sign_of_zero_kept(impl):
    x = torch.tensor([-0.0, 0.0])
    assert torch.signbit(bias_act(x, act="linear", impl=impl)).tolist() == [True, False]


@pytest.mark.skipif(not ganfast._ext.loaded(), reason="the eager shortcut is taken for the C++ kernel")
def test_no_grad_shortcut_matches_the_op_and_tracers_still_see_it():
    """Without autograd, an eager call runs the op's body directly: same values as the registered op (bitwise),
    and torch.jit.trace / make_fx, which must record the op, still get it."""
    from torch.fx.experimental.proxy_tensor import make_fx
    x, b = torch.randn(2, 4, 3, 5), torch.randn(4)

    def f(x, b):
        return bias_act(x, b, act="lrelu", clamp=1.0, impl="ext")
    with torch.no_grad():
        want = torch.ops.ganfast.bias_act(x, b, 1, "lrelu", 0.2, math.sqrt(2), 1.0, "ext")
        assert torch.equal(f(x, b), want)
        assert "ganfast.bias_act.default" in str(make_fx(f)(x, b).graph)
        with pytest.warns(torch.jit.TracerWarning):
            assert "ganfast::bias_act" in str(torch.jit.trace(f, (x, b)).graph)


@pytest.mark.skipif(not ganfast._ext.loaded(), reason="the eager autograd route is taken for the C++ kernel")
@pytest.mark.parametrize("act,clamp", [("lrelu", None), ("lrelu", 1.0), ("linear", 0.5), ("relu", None)])
def test_eager_autograd_route_matches_the_registered_op(act, clamp):
    """An eager call with autograd takes autograd.Function twins of the registered ops: the same values and the
    same gradient graph (None where the op gives None), first and second derivative, bitwise in float64; auto on
    the CPU takes the C++ kernel for unclamped piecewise-linear activations too (R3GAN's lrelu)."""
    x, b = _inputs(device="cpu")
    assert ganfast._dispatch.OPS["bias_act"].resolve(None, x.device, x.dtype) == "ext"
    alpha, gain = (0.2 if act == "lrelu" else 0.0), 1.3

    def via_op(x, b):
        return torch.ops.ganfast.bias_act(x, b, 1, act, alpha, gain, clamp, "ext")
    y = bias_act(x.detach().requires_grad_(True), b, act=act, alpha=alpha, gain=gain, clamp=clamp)
    assert type(y.grad_fn).__name__.startswith("_EagerBiasAct")
    got = grad_graph(lambda x, b: bias_act(x, b, act=act, alpha=alpha, gain=gain, clamp=clamp), (x, b))
    want = grad_graph(via_op, (x, b))
    for got_grads, want_grads in zip(got, want):
        for g, w in zip(got_grads, want_grads):
            assert (g is None) == (w is None) and (g is None or torch.equal(g, w))


@pytest.mark.skipif(not ganfast._ext.loaded(), reason="the eager autograd route is taken for the C++ kernel")
def test_eager_route_takes_parameters_and_plain_backwards():
    """A model's bias (nn.Parameter) takes the eager route too, and a backward that records no graph (no
    create_graph) gives the registered op's gradients, bitwise."""
    x, b = _inputs(device="cpu")
    x.requires_grad_(True)
    bias = torch.nn.Parameter(b.clone())
    y = bias_act(x, bias, act="lrelu")
    assert type(y.grad_fn).__name__ == "_EagerBiasActBackward"
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, bias), dy)
    want = torch.autograd.grad(torch.ops.ganfast.bias_act(x, bias, 1, "lrelu", 0.2, math.sqrt(2), None, "ext"),
                               (x, bias), dy)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
