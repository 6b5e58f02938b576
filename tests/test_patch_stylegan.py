"""ganfast.patch_stylegan() on a tiny stand-in code base with StyleGAN2-ADA's and StyleGAN3's module names
(tests/stylegan_standin: torch_utils.ops.{bias_act,upfirdn2d,conv2d_resample,filtered_lrelu}, training.networks,
training.networks_stylegan3, ...)."""
import sys
import warnings
from pathlib import Path

import pytest
import torch
from support import rel_err

import ganfast

STANDIN = Path(__file__).parent / "stylegan_standin"
PACKAGES = ("torch_utils", "training")
TARGETS = [("torch_utils.ops.bias_act", "bias_act"), ("torch_utils.ops.upfirdn2d", "upfirdn2d"),
           ("torch_utils.ops.upfirdn2d", "upsample2d"), ("torch_utils.ops.upfirdn2d", "downsample2d"),
           ("torch_utils.ops.upfirdn2d", "filter2d"), ("torch_utils.ops.conv2d_resample", "conv2d_resample"),
           ("torch_utils.ops.filtered_lrelu", "filtered_lrelu"),
           ("training.networks", "modulated_conv2d"), ("training.networks_stylegan2", "modulated_conv2d"),
           ("training.loss", "bias_act"), ("training.loss", "fir"),
           ("training.networks_stylegan3", "flrelu")]  # the last three: bound by name elsewhere


def _forget_standin():
    for name in [m for m in sys.modules if m.split(".")[0] in PACKAGES]:
        del sys.modules[name]


@pytest.fixture
def standin(monkeypatch):
    _forget_standin()
    monkeypatch.syspath_prepend(str(STANDIN))
    import training.loss  # noqa: F401
    import training.networks
    import training.networks_stylegan2  # noqa: F401
    import training.networks_stylegan3  # noqa: F401
    yield training.networks
    _forget_standin()


def _layer_inputs(up):
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(2, 1, 5 * up, 5 * up, dtype=torch.float64)
    return x, weight, styles, bias, noise


def _run(networks, up):
    torch.manual_seed(1)
    x, weight, styles, bias, noise = _layer_inputs(up)
    f = networks.make_filter().double()
    y = networks.synthesis_layer(x, weight, styles, bias, noise, f, up)
    return (y, *torch.autograd.grad((y * y.detach().sin()).sum(), (x, weight, styles, bias)))


@pytest.mark.parametrize("up", [1, 2])
def test_patch_replaces_rebinds_same_numbers_and_undo_restores(standin, up):
    from torch_utils.ops import bias_act as bias_act_module
    before = {target: getattr(sys.modules[target[0]], target[1]) for target in TARGETS}
    want = _run(standin, up)

    handle = ganfast.patch_stylegan()
    try:
        for (module, name), original in before.items():
            now = getattr(sys.modules[module], name)
            assert now is not original and getattr(now, "__ganfast_patch__", False), (module, name)
        assert {f"{m}.{n}" for m, n in TARGETS} <= set(handle.patched)
        bias_act_module.CALLS.clear()
        got = _run(standin, up)
        assert bias_act_module.CALLS == []  # the stand-in's own bias_act was not called
        for a, b in zip(got, want):
            assert rel_err(a, b) < 1e-12
    finally:
        handle.undo()
    for (module, name), original in before.items():
        assert getattr(sys.modules[module], name) is original, (module, name)
    handle.undo()  # idempotent


def test_patched_functions_accept_nvlabs_arguments(standin):
    from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    calls = {
        "bias_act": lambda m: m.bias_act(x, torch.ones(3, dtype=torch.float64), dim=1, act="lrelu", alpha=0.1,
                                         gain=1.5, clamp=0.8, impl="ref"),
        "upfirdn2d": lambda m: m.upfirdn2d(x, f, up=2, down=1, padding=[1, 2, 0, 1], flip_filter=True, gain=3,
                                           impl="cuda"),
        "upsample2d": lambda m: m.upsample2d(x, f, up=2, padding=1, impl="ref"),
        "downsample2d": lambda m: m.downsample2d(x, f, down=2, flip_filter=True, impl="cuda"),
        "filter2d": lambda m: m.filter2d(x, f, padding=1, gain=2, impl="cuda"),
        "conv2d_resample": lambda m: m.conv2d_resample(x=x, w=w, f=f, up=2, padding=1, flip_weight=False),
    }
    modules = {"bias_act": bias_act, "conv2d_resample": conv2d_resample}
    want = {name: fn(modules.get(name, upfirdn2d)) for name, fn in calls.items()}
    with ganfast.patch_stylegan(impl="ext"):
        for name, fn in calls.items():
            assert rel_err(fn(modules.get(name, upfirdn2d)), want[name]) < 1e-12, name
        from training import networks
        styles = torch.randn(2, 3, dtype=torch.float64)
        out = networks.modulated_conv2d(x=x, weight=w, styles=styles, noise=None, up=1, down=2, padding=1,
                                        resample_filter=f, demodulate=True, flip_weight=True, fused_modconv=False)
    torch.testing.assert_close(out, ganfast.reference.modulated_conv2d(x, w, styles, down=2, padding=1,
                                                                       resample_filter=f))


def _alias_free_layer(radial):
    """ganfast's StyleGAN3 layer (filters, padding and up/down from the paper's design), with non-trivial state."""
    torch.manual_seed(2)
    layer = ganfast.nn.AliasFreeSynthesisLayer(w_dim=4, in_channels=3, out_channels=4, in_size=12, out_size=12,
                                               in_sampling_rate=16, out_sampling_rate=16, in_cutoff=2, out_cutoff=3,
                                               in_half_width=6, out_half_width=5, use_radial_filters=radial)
    with torch.no_grad():
        layer.bias.normal_()
        layer.magnitude_ema.fill_(2.0)
    return layer.eval()


@pytest.mark.parametrize("radial", [False, True])
def test_patch_stylegan3_layer(standin, radial):
    """A layer of the stand-in networks_stylegan3 calls ganfast's filtered_lrelu after the patch, with the same
    numbers and gradients; ganfast's own AliasFreeSynthesisLayer computes what that NVlabs-style code does."""
    from torch_utils.ops import filtered_lrelu
    from training import networks_stylegan3
    layer = _alias_free_layer(radial)
    x, w = torch.randn(2, 3, 12, 12), torch.randn(2, 4)
    with torch.no_grad():
        nvlabs_style = networks_stylegan3.synthesis_layer(x, layer.weight, layer.affine(w), layer.bias,
                                                          layer.up_filter, layer.down_filter, layer.up_factor,
                                                          layer.down_factor, layer.padding, layer.magnitude_ema)
        assert rel_err(layer(x, w), nvlabs_style) < 1e-5

    def run():
        torch.manual_seed(3)
        leaves = [t.double().requires_grad_() for t in (x, layer.weight, layer.affine(w).detach(), layer.bias)]
        y = networks_stylegan3.synthesis_layer(*leaves, layer.up_filter, layer.down_filter, layer.up_factor,
                                               layer.down_factor, layer.padding, layer.magnitude_ema.double())
        return (y, *torch.autograd.grad((y * y.detach().sin()).sum(), leaves))

    def call_with_every_argument():
        fu = ganfast.nn.design_lowpass_filter(8, 3, 4, 16)
        fd = ganfast.nn.design_lowpass_filter(4, 2, 3, 8, radial=True)
        return filtered_lrelu.filtered_lrelu(x=x.double(), fu=fu, fd=fd, b=torch.ones(3, dtype=torch.float64), up=2,
                                             down=1, padding=[3, 2, 4, 1], gain=1.5, slope=0.1, clamp=0.9,
                                             flip_filter=True, impl="cuda")

    want, want_args = run(), call_with_every_argument()
    with ganfast.patch_stylegan():
        filtered_lrelu.CALLS.clear()
        got, got_args = run(), call_with_every_argument()
        assert filtered_lrelu.CALLS == []
        assert networks_stylegan3.flrelu is filtered_lrelu.filtered_lrelu
    for a, b in zip((*got, got_args), (*want, want_args)):
        assert rel_err(a, b) < 1e-12


def test_patch_without_code_base_warns_and_does_nothing():
    _forget_standin()
    with pytest.warns(RuntimeWarning, match="nothing was replaced"):
        handle = ganfast.patch_stylegan()
    assert handle.patched == []


def test_patch_twice_does_not_wrap_twice(standin):
    first = ganfast.patch_stylegan()
    with warnings.catch_warnings(record=True):
        second = ganfast.patch_stylegan()
    assert second.patched == []
    first.undo()
    from torch_utils.ops import bias_act
    assert not getattr(bias_act.bias_act, "__ganfast_patch__", False)


def test_patch_bad_impl(standin):
    with pytest.raises(ValueError, match="impl must be one of"):
        ganfast.patch_stylegan(impl="fastest")


@pytest.mark.parametrize("conv_clamp", [None, 256])
def test_to_rgb_bias_gets_no_path_length_gradient(standin, conv_clamp):
    """The path-length penalty differentiates the images w.r.t. the styles; a ToRGB bias cannot influence that
    gradient, so it must get None (not a zero gradient, which Adam would step on), patched or not."""
    def bias_grad_and_style_grad():
        torch.manual_seed(3)
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
        weight = torch.randn(3, 3, 1, 1, dtype=torch.float64, requires_grad=True)
        styles = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
        img = standin.to_rgb(x, weight, styles, bias, conv_clamp)
        (g,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), styles, create_graph=True)
        g.square().sum().backward()
        return bias.grad, weight.grad
    want_bias, want_weight = bias_grad_and_style_grad()
    with ganfast.patch_stylegan():
        got_bias, got_weight = bias_grad_and_style_grad()
    assert want_bias is None and got_bias is None
    assert rel_err(got_weight, want_weight) < 1e-12
