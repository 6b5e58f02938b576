"""modulated_conv2d / modulated_conv2d_bias_act: float64 parity with ganfast.reference (forward, first and
second derivatives), the Triton kernels under the interpreter, fp16 pre-normalisation, opcheck, impl selection
and the errors bad input gets."""
import itertools

import pytest
import torch
from support import DEVICE, assert_grad_graph_parity, record_grids, rel_err

import ganfast
from ganfast._dispatch import common_reasons
from ganfast.ops import modulated_conv2d, modulated_conv2d_bias_act
from ganfast.reference import bias_act as bias_act_ref
from ganfast.reference import modulated_conv2d as modulated_conv2d_ref
from ganfast.reference import setup_filter
from ganfast.reference.modulated_conv2d import prenormalize

IMPLS = [impl for impl in ("ext", "triton") if not common_reasons(impl, DEVICE)]
F64 = dict(dtype=torch.float64, device=DEVICE)


def _filter():
    return setup_filter([1, 3, 3, 1]).to(**F64)


def _inputs(batch=2, c_in=3, c_out=4, size=(5, 7), k=3, requires_grad=True, dtype=torch.float64):
    x = torch.randn(batch, c_in, *size, dtype=torch.float64)
    w = torch.randn(c_out, c_in, k, k, dtype=torch.float64)
    s = torch.randn(batch, c_in, dtype=torch.float64) + 1
    return [t.to(device=DEVICE, dtype=dtype).requires_grad_(requires_grad) for t in (x, w, s)]


def _kwargs(up, down, k):
    return dict(up=up, down=down, padding=k // 2, resample_filter=_filter(), flip_weight=up == 1)


def test_impls_available_here():
    assert "ext" in IMPLS and "triton" in IMPLS, IMPLS


@pytest.mark.parametrize("up,down,k", [(1, 1, 3), (2, 1, 3), (1, 2, 3), (2, 1, 1), (2, 2, 3)])
def test_reference_routes_agree(up, down, k):
    """StyleGAN2's two routes (grouped conv with per-sample weights; scaling activations) are the same function."""
    x, w, s = _inputs(k=k, requires_grad=False)
    for demodulate in (True, False):
        a = modulated_conv2d_ref(x, w, s, demodulate=demodulate, fused_modconv=True, **_kwargs(up, down, k))
        b = modulated_conv2d_ref(x, w, s, demodulate=demodulate, fused_modconv=False, **_kwargs(up, down, k))
        assert rel_err(a, b) < 1e-13


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("up,down,k", list(itertools.product([1, 2], [1, 2], [1, 3])))
@pytest.mark.parametrize("demodulate,with_noise", [(True, True), (False, False), (True, False)])
def test_forward_and_grads_float64(impl, up, down, k, demodulate, with_noise):
    batch = 1 if (up + down + k) % 2 else 2  # batch 1 in half of the cases
    x, w, s = _inputs(batch=batch, k=k)
    kwargs = _kwargs(up, down, k)
    ref = modulated_conv2d_ref(x, w, s, demodulate=demodulate, **kwargs)
    noise = None
    if with_noise:
        noise = torch.randn(batch, 1, *ref.shape[2:], **F64).requires_grad_()
        ref = ref + noise
    out = modulated_conv2d(x, w, s, noise, demodulate=demodulate, impl=impl, **kwargs)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert rel_err(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    inputs = (x, w, s) + ((noise,) if with_noise else ())
    for got, want in zip(torch.autograd.grad(out, inputs, dy), torch.autograd.grad(ref, inputs, dy)):
        assert rel_err(got, want) < 1e-12


def _tiny(up, down):
    x, w, s = _inputs(batch=1, c_in=2, c_out=2, size=(3, 3) if down == 1 else (4, 4))
    side = 3 * up // down if down == 1 else 2
    noise = torch.randn(1, 1, side, 1 if down > 1 else side, **F64).requires_grad_()  # broadcast in one case
    return x, w, s, noise


@pytest.mark.parametrize("impl,up,down", [("ext", 1, 1), ("ext", 2, 1), ("ext", 1, 2)]
                         + [("triton", 1, 1)] * ("triton" in IMPLS))  # interpreted: the other routes are slow
def test_gradcheck(impl, up, down):
    def fn(x, w, s, noise):
        return modulated_conv2d(x, w, s, noise, impl=impl, **_kwargs(up, down, 3))

    assert torch.autograd.gradcheck(fn, _tiny(up, down))


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1)])
def test_gradgradcheck(up, down):
    """On the torch-convolution backend (the interpreted Triton kernels are checked against the reference's
    second derivatives in test_path_length_style_second_order_matches_reference instead: much faster)."""
    x, w, s, noise = _tiny(up, down)

    def fn(x, w, s):
        return modulated_conv2d(x, w, s, noise.detach(), impl="ext", **_kwargs(up, down, 3))

    assert torch.autograd.gradgradcheck(fn, (x, w, s))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("flip_weight", [True, False])
def test_flip_weight_and_non_square_kernel(impl, up, down, flip_weight):
    x, w, s = _inputs(batch=2, c_in=2, c_out=3, size=(5, 6))
    w = torch.randn(3, 2, 3, 2, **F64).requires_grad_()  # kh != kw
    kwargs = dict(up=up, down=down, padding=[1, 2], resample_filter=_filter(), flip_weight=flip_weight)
    ref = modulated_conv2d_ref(x, w, s, **kwargs)
    out = modulated_conv2d(x, w, s, impl=impl, **kwargs)
    assert rel_err(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, w, s), dy), torch.autograd.grad(ref, (x, w, s), dy)):
        assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("up", [1, 2])
def test_path_length_style_second_order_matches_reference(impl, up):
    """Path-length regularisation differentiates the gradient w.r.t. the styles (and the input) again."""
    x, w, s = _inputs(batch=2, c_in=3, c_out=3, size=(4, 5))
    b = torch.randn(3, **F64).requires_grad_()
    results = []
    for use in (impl, "ref"):
        y = modulated_conv2d_bias_act(x, w, s, None, b, act="lrelu", clamp=4.0, impl=use, **_kwargs(up, 1, 3))
        probe = torch.cos(torch.arange(y.numel(), **F64)).reshape(y.shape)
        gs, gx = torch.autograd.grad((y * probe).sum(), (s, x), create_graph=True)
        penalty = gs.square().sum() + gx.square().sum()
        results.append((gs, gx, *torch.autograd.grad(penalty, (x, w, s, b), allow_unused=True)))
    assert results[0][-1] is None and results[1][-1] is None  # lrelu'' = 0: the bias cannot influence gs or gx
    for got, want in zip(results[0][:-1], results[1][:-1]):
        assert rel_err(got, want) < 1e-11


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act,clamp", [("lrelu", 1.5), ("linear", None), ("swish", 2.0)])
@pytest.mark.parametrize("up", [1, 2])
def test_bias_act_fused_matches_reference(impl, act, clamp, up):
    x, w, s = _inputs(batch=2, c_out=5)
    b = torch.randn(5, **F64).requires_grad_()
    kwargs = _kwargs(up, 1, 3)
    pre = modulated_conv2d_ref(x, w, s, **kwargs)
    noise = torch.randn(*pre.shape[2:], **F64).requires_grad_()  # StyleGAN2's const noise: (H, W)
    ref = bias_act_ref(pre + noise, b, act=act, gain=1.3, clamp=clamp)
    out = modulated_conv2d_bias_act(x, w, s, noise, b, act=act, gain=1.3, clamp=clamp, impl=impl, **kwargs)
    assert rel_err(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, w, s, noise, b), dy),
                         torch.autograd.grad(ref, (x, w, s, noise, b), dy)):
        assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
def test_strided_bias_and_odd_batch_weight_gradient(impl):
    """Regressions from a kernel review: a non-contiguous bias was read as if contiguous; the weight gradient's
    batch reduction is split over programs (an odd batch leaves the slices uneven)."""
    x, w, s = _inputs(batch=3, c_out=5)
    b = torch.randn(5, 2, **F64)[:, 0].requires_grad_()
    ref = bias_act_ref(modulated_conv2d_ref(x, w, s, padding=1), b, act="lrelu")
    out = modulated_conv2d_bias_act(x, w, s, None, b, act="lrelu", padding=1, impl=impl)
    assert rel_err(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (w, b), dy), torch.autograd.grad(ref, (w, b), dy)):
        assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("impl", IMPLS + ["ref"])
@pytest.mark.parametrize("up", [1, 2])
def test_float16_prenormalisation(impl, up):
    """Weights × styles of 300 × 300 overflow float16's modulated weights, and their d underflows, without
    StyleGAN2's pre-normalisation; with it the float16 result matches float64."""
    x, w, s = _inputs(batch=2, c_in=8, c_out=4, size=(4, 4), requires_grad=False)
    w, s = w * 300, s * 300
    want = modulated_conv2d_ref(x, w, s, **_kwargs(up, 1, 3))
    got = modulated_conv2d(x.half(), w.float(), s.float(), impl=impl, **_kwargs(up, 1, 3))
    assert got.dtype == torch.float16 and rel_err(got, want) < 1e-2
    w16, s16 = prenormalize(w, s)
    assert torch.allclose(w16.abs().amax(dim=(1, 2, 3)), torch.full((4,), (8 * 9) ** -0.5, **F64))
    assert torch.allclose(s16.abs().amax(dim=1), torch.ones(2, **F64))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 5e-3)])
def test_lower_precision_forward_backward(impl, dtype, tol):
    if impl == "triton" and dtype == torch.bfloat16 and DEVICE.type == "cpu":
        pytest.skip("the Triton interpreter has no bfloat16 arithmetic")
    x, w, s = _inputs(batch=2, c_in=4, c_out=3, size=(5, 6), dtype=dtype)
    xd, wd, sd = (t.detach().double().requires_grad_() for t in (x, w, s))
    out = modulated_conv2d_bias_act(x, w, s, act="lrelu", impl=impl, padding=1)
    ref = bias_act_ref(modulated_conv2d_ref(xd, wd, sd, padding=1), act="lrelu")
    assert out.dtype == dtype and rel_err(out, ref) < tol
    dy = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, w, s), dy.to(dtype)), torch.autograd.grad(ref, (xd, wd, sd), dy)):
        assert got.dtype == dtype and rel_err(got, want) < 2 * tol


@pytest.mark.parametrize("impl", IMPLS)
def test_channels_last_and_padding_forms(impl):
    x, w, s = _inputs(batch=2, k=3, requires_grad=False)
    for padding in ([2, 0], [1, 2, 0, 1], -1):
        ref = modulated_conv2d_ref(x, w, s, padding=padding)
        out = modulated_conv2d(x.to(memory_format=torch.channels_last), w, s, padding=padding, impl=impl)
        assert rel_err(out, ref) < 1e-12, padding


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    x, w, s = _inputs(batch=2, c_in=2, c_out=3, size=(4, 5))
    d = torch.rand(2, 3, **F64).add(0.5).requires_grad_()
    b = torch.randn(3, **F64).requires_grad_()
    noise = torch.randn(2, 1, 4, 5, **F64).requires_grad_()
    wt = torch.randn(2, 3, 3, 3, **F64).requires_grad_()
    for args in [(x, w, s, d, noise, b, 1, [1, 1], False, [0, 0], "lrelu", 0.2, 1.4, 1.0, True, impl),
                 (x, w, None, d, None, None, 2, [0, 1], False, [0, 0], "linear", 0.0, 1.0, None, False, impl),
                 (x, wt, s, None, None, None, 1, [1, 1], True, [0, 0], "linear", 0.0, 1.0, None, True, impl),
                 (x, wt, s, d, None, None, 2, [0, 0], True, [1, 0], "linear", 0.0, 1.0, None, True, impl)]:
        torch.library.opcheck(torch.ops.ganfast.modconv.default, args)
    g = torch.randn(2, 3, 4, 5, **F64).requires_grad_()
    torch.library.opcheck(torch.ops.ganfast.modconv_weight_grad.default,
                          (x, s, g, d, [3, 2, 3, 3], 1, [1, 1], False, [0, 0], impl))
    torch.library.opcheck(torch.ops.ganfast.modconv_demod.default, (w, s, impl))


# ---- impl selection -------------------------------------------------------------------------------------------

def test_auto_selection():
    entry = ganfast._dispatch.OPS["modulated_conv2d"]
    assert entry.resolve(None, torch.device("cpu"), torch.float32) == "ext"  # measured: see the op module
    assert entry.auto_order["cuda"][0] == "triton" and entry.auto_order["cuda:up"][0] == "ext"
    x, w, s = _inputs(requires_grad=False)
    with ganfast.use_impl("ref"):
        torch.testing.assert_close(modulated_conv2d(x, w, s, padding=1), modulated_conv2d_ref(x, w, s, padding=1))


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, w, s = _inputs(requires_grad=False)
    with pytest.raises(ganfast.ImplNotSupportedError, match="TRITON_INTERPRET"):
        modulated_conv2d(x, w, s, impl="triton")


# ---- errors ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,exc,match", [
    (dict(x=torch.zeros(2, 3, 5)), ValueError, "x must be 4-D"),
    (dict(x=torch.zeros(2, 3, 5, 5, dtype=torch.int64)), TypeError, "x must have dtype"),
    (dict(weight=torch.zeros(4, 2, 3, 3)), ValueError, "weight has 2 input channels"),
    (dict(styles=torch.zeros(2, 4)), ValueError, "styles must have shape"),
    (dict(styles=[1.0]), TypeError, "styles must be a torch.Tensor"),
    (dict(noise=torch.zeros(3, 1, 5, 5)), ValueError, "noise of shape"),
    (dict(bias=torch.zeros(3)), ValueError, "bias must have 4 entries"),
    (dict(up=0), ValueError, "up must be an int >= 1"),
    (dict(down=1.5), ValueError, "down must be an int >= 1"),
    (dict(padding=[1, 2, 3]), ValueError, "padding must be"),
    (dict(act="gelu"), ValueError, "act must be one of"),
    (dict(clamp=-1.0), ValueError, "clamp must be None or a finite number"),
    (dict(resample_filter=torch.zeros(1, 1, 1)), ValueError, "resample_filter must be 1-D or 2-D"),
    (dict(impl="fast"), ValueError, "impl must be one of"),
])
def test_bad_input_errors(change, exc, match):
    args = dict(x=torch.randn(2, 3, 5, 5), weight=torch.randn(4, 3, 3, 3), styles=torch.randn(2, 3), padding=1)
    args.update(change)
    with pytest.raises(exc, match=match):
        modulated_conv2d_bias_act(**args)


# ---- modules ----------------------------------------------------------------------------------------------------

def _synthesis_reference(layer, x, w, noise_mode, gain=1):
    """StyleGAN2's synthesis layer written out with the reference ops and the layer's parameters."""
    styles = w @ (layer.affine.weight * layer.affine.weight_gain).t() + layer.affine.bias
    noise = None
    if noise_mode == "const":
        noise = layer.noise_const * layer.noise_strength
    y = modulated_conv2d_ref(x, layer.weight, styles, noise, up=layer.up, padding=layer.padding,
                             resample_filter=layer.resample_filter, flip_weight=layer.up == 1)
    clamp = None if layer.conv_clamp is None else layer.conv_clamp * gain
    return bias_act_ref(y, layer.bias, act=layer.activation, gain=layer.act_gain * gain, clamp=clamp)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("up", [1, 2])
def test_synthesis_layer_matches_reference(impl, up):
    layer = ganfast.nn.SynthesisLayer(3, 4, w_dim=5, resolution=6, up=up, conv_clamp=1.0, impl=impl).double()
    with torch.no_grad():
        layer.noise_strength.fill_(0.3)
        layer.bias.normal_()
    x = torch.randn(2, 3, 6 // up, 6 // up, **F64)
    w = torch.randn(2, 5, **F64)
    out = layer(x, w, noise_mode="const", gain=1.5)
    ref = _synthesis_reference(layer, x, w, "const", gain=1.5)
    assert rel_err(out, ref) < 1e-12
    params = [layer.weight, layer.bias, layer.noise_strength, layer.affine.weight, layer.affine.bias]
    for got, want in zip(torch.autograd.grad(out.sum(), params), torch.autograd.grad(ref.sum(), params)):
        assert rel_err(got, want) < 1e-12
    assert layer(x, w, noise_mode="random").shape == (2, 4, 6, 6)
    assert rel_err(layer(x, w, noise_mode="none"), _synthesis_reference(layer, x, w, "none")) < 1e-12
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        layer(x, w, noise_mode="fixed")


@pytest.mark.parametrize("impl", IMPLS)
def test_torgb_and_modulated_conv2d_modules(impl):
    torgb = ganfast.nn.ToRGBLayer(4, 3, w_dim=5, conv_clamp=0.5, impl=impl).double()
    x, w = torch.randn(2, 4, 5, 5, **F64), torch.randn(2, 5, **F64)
    styles = torgb.affine(w) * torgb.weight_gain
    ref = bias_act_ref(modulated_conv2d_ref(x, torgb.weight, styles, demodulate=False), torgb.bias, clamp=0.5)
    assert rel_err(torgb(x, w), ref) < 1e-12
    conv = ganfast.nn.ModulatedConv2d(4, 2, kernel_size=3, down=2, impl=impl).double()
    s = torch.randn(2, 4, **F64)
    ref = modulated_conv2d_ref(x, conv.weight, s, down=2, padding=1, resample_filter=conv.resample_filter)
    assert rel_err(conv(x, s), ref) < 1e-12


def test_torch_compile_fullgraph_synthesis_layer():
    layer = ganfast.nn.SynthesisLayer(4, 4, w_dim=8, resolution=8, up=2, conv_clamp=256, impl="ext")
    x, w = torch.randn(2, 4, 4, 4), torch.randn(2, 8)
    compiled = torch.compile(layer, fullgraph=True)
    params = list(layer.parameters())
    eager = layer(x, w, noise_mode="const")
    out = compiled(x, w, noise_mode="const")
    torch.testing.assert_close(out, eager)
    for got, want in zip(torch.autograd.grad(out.square().sum(), params),
                         torch.autograd.grad(eager.square().sum(), params)):
        torch.testing.assert_close(got, want)


def test_fully_connected_layer():
    fc = ganfast.nn.FullyConnectedLayer(6, 4, activation="lrelu", lr_multiplier=0.01, bias_init=0.5).double()
    x = torch.randn(3, 6, **F64)
    want = bias_act_ref(x @ (fc.weight * 0.01 / 6 ** 0.5).t(), fc.bias * 0.01, act="lrelu")
    assert rel_err(fc(x), want) < 1e-12 and torch.all(fc.bias == 0.5)
    linear = ganfast.nn.FullyConnectedLayer(6, 4, bias_init=1).double()
    assert rel_err(linear(x), x @ (linear.weight / 6 ** 0.5).t() + 1) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_gradient_graph_matches_reference(impl, up, demodulate):
    x, w, s = _inputs(batch=2, c_in=2, c_out=3, size=(4, 4), requires_grad=False)
    assert_grad_graph_parity(
        lambda x, w, s: modulated_conv2d(x, w, s, demodulate=demodulate, impl=impl, **_kwargs(up, 1, 3)),
        lambda x, w, s: modulated_conv2d_ref(x, w, s, demodulate=demodulate, **_kwargs(up, 1, 3)),
        (x, w, s), ("x", "weight", "styles"))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("act,gain,clamp", [("linear", None, None), ("linear", 2.0, None), ("linear", None, 0.7),
                                            ("lrelu", None, 0.7), ("swish", None, None)])
def test_bias_act_gradient_graph_matches_reference(impl, up, act, gain, clamp):
    """The ToRGB case (linear, no clamp, demodulate=False): the bias cannot influence the gradient w.r.t. the
    styles, so the second derivative has None for it, as in StyleGAN2-ADA (Adam then leaves the bias alone)."""
    x, w, s = _inputs(batch=2, c_in=2, c_out=3, size=(4, 4), requires_grad=False)
    b = torch.randn(3, **F64)
    kwargs = dict(act=act, gain=gain, clamp=clamp, demodulate=act != "linear", **_kwargs(up, 1, 3))

    def ref(x, w, s, b):
        y = modulated_conv2d_ref(x, w, s, demodulate=kwargs["demodulate"], **_kwargs(up, 1, 3))
        return bias_act_ref(y, b, 1, act, None, gain, clamp)
    assert_grad_graph_parity(lambda x, w, s, b: modulated_conv2d_bias_act(x, w, s, None, b, impl=impl, **kwargs),
                             ref, (x, w, s, b), ("x", "weight", "styles", "bias"))


def test_large_modconv_sizes_take_the_torch_route(monkeypatch):
    """Planes or weights of 2**31 elements or more are beyond the Triton convolution kernels' 32-bit index
    products: supports()/weight_grad_supports() say so (meta tensors: nothing allocated), and with the limit
    lowered, the modulated convolution and its gradients still match the reference through the torch route."""
    from ganfast.ops import modulated_conv2d
    from ganfast.reference import modulated_conv2d as modulated_conv2d_ref
    from ganfast.triton import modulated_conv2d as triton_modconv
    meta = dict(device="meta")
    w3 = torch.empty(4, 3, 3, 3, **meta)
    assert triton_modconv.supports(torch.empty(2, 3, 64, 64, **meta), w3, 1, [1, 1], False, [0, 0])
    assert not triton_modconv.supports(torch.empty(1, 3, 2**16, 2**15, **meta), w3, 1, [1, 1], False, [0, 0])
    assert not triton_modconv.supports(torch.empty(1, 3, 2**16, 2**15 - 2, **meta), w3, 1, [0, 0], True, [0, 0])
    assert not triton_modconv.supports(torch.empty(1, 2**16, 4, 4, **meta), torch.empty(2**15, 2**16, 1, 1, **meta),
                                       1, [0, 0], False, [0, 0])
    assert not triton_modconv.weight_grad_supports(torch.empty(1, 3, 2**16, 2**15, **meta),
                                                   torch.empty(1, 4, 8, 8, **meta), (4, 3, 3, 3))
    calls = []
    monkeypatch.setattr(triton_modconv, "INT32_LIMIT", 30)  # every 5x7 plane now counts as too large
    for name in ("modconv", "weight_grad"):
        monkeypatch.setattr(triton_modconv, name, lambda *a, _name=name, **k: calls.append(_name))
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    out, ref = modulated_conv2d(x, w, s, padding=1, impl="triton"), modulated_conv2d_ref(x, w, s, padding=1)
    assert rel_err(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, w, s), dy), torch.autograd.grad(ref, (x, w, s), dy)):
        assert rel_err(got, want) < 1e-12
    assert calls == []


def test_large_modconv_flattened_grids(monkeypatch):
    """The Triton convolution kernels put (pixel tiles × channel tiles) on grid axis 0: several tiles of each
    (20 output channels, 6x7 pixels, 45 = I·kh·kw rows for 16-wide interpreter tiles), forward and gradients."""
    from ganfast.ops import modulated_conv2d
    from ganfast.reference import modulated_conv2d as modulated_conv2d_ref
    from ganfast.triton import modulated_conv2d as triton_modconv
    grids = record_grids(monkeypatch, triton_modconv, "_modconv_fwd_kernel", "_modconv_wgrad_kernel",
                    "_modconv_demod_kernel")
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(20, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(3, 1, 6, 7, dtype=torch.float64)
    out = modulated_conv2d(x, w, s, noise, padding=1, impl="triton")
    ref = modulated_conv2d_ref(x, w, s, noise, padding=1)
    assert rel_err(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, w, s), dy), torch.autograd.grad(ref, (x, w, s), dy)):
        assert rel_err(got, want) < 1e-12
    launched = {name: recorder.grids for name, recorder in grids.items()}
    assert (6, 1, 3) in launched["_modconv_fwd_kernel"]         # 3 pixel tiles (42 of 16) x 2 channel tiles
    assert (6,) in launched["_modconv_demod_kernel"]            # 3 samples x 2 channel tiles
    assert {grid[0] for grid in launched["_modconv_wgrad_kernel"]} == {6}  # 2 channel tiles x 3 K tiles (45 of 16)
