"""Every ganfast op under CPU bf16 autocast (the rule in ganfast/ops/_common.py, item 7): called as a model calls
it (float32 parameters, activations float32 or bf16), it runs on every impl, returns the rule's dtype (the same
for the reference and the kernels), matches the float32 computation within bf16's precision, and sends each input
a gradient of its own dtype; torch.compile traces it with the same dtypes; every registered op has the autocast
kernel that keeps autocast out of it."""
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from support import rel_err

import ganfast
from ganfast import ops
from ganfast.ops import spectral_norm as sn
from ganfast.ops._common import AUTOCAST_DEVICES
from ganfast.reference import setup_filter

BF16, F32 = torch.bfloat16, torch.float32
# bf16 keeps 8 bits of mantissa (relative step 2^-8 ≈ 4e-3); the kernels compute in float32 and round once, and stay
# within TOL. The reference rounds every intermediate to bf16: a bias gradient, a sum of hundreds of such terms that
# largely cancel, is 5e-2 off (filtered_lrelu) and gets TOL_REF. Clamps are StyleGAN's 256, out of reach: an element
# within a bf16 rounding of a clamp would flip its gradient.
TOL, TOL_REF = 3e-2, 1e-1


@dataclass
class Case:
    fn: Callable              # fn(*inputs, impl=...) -> output tensor
    inputs: Callable          # () -> list of tensors: (dtype, requires_grad) as a model has them
    out_dtype: torch.dtype    # the rule's output dtype under bf16 autocast
    impls: tuple = ("ref", "ext")


def _t(*shape, dtype=F32, grad=True, scale=1.0, offset=0.0):
    return (torch.randn(*shape) * scale + offset).to(dtype).requires_grad_(grad)


F = setup_filter([1, 3, 3, 1])
FU = setup_filter([1, 4, 6, 4, 1])
THETA = torch.tensor([[[0.9, 0.2, 0.05], [-0.2, 0.9, -0.1]]]).repeat(2, 1, 1)

CASES = {
    # elementwise / filter ops: x's dtype; a float32 bias under autocast is cast to it
    "bias_act": Case(lambda x, b, impl: ops.bias_act(x, b, act="lrelu", clamp=256.0, impl=impl),
                     lambda: [_t(2, 4, 5, 5, dtype=BF16), _t(4)], BF16),
    "upfirdn2d_f32": Case(lambda x, impl: ops.upsample2d(x, F, impl=impl), lambda: [_t(2, 3, 6, 6)], F32),
    "upfirdn2d_bf16": Case(lambda x, impl: ops.downsample2d(x, F, impl=impl), lambda: [_t(2, 3, 8, 8, dtype=BF16)],
                           BF16),
    "filtered_lrelu": Case(lambda x, b, impl: ops.filtered_lrelu(x, FU, FU, b, up=2, down=2, padding=4, clamp=256.0,
                                                                 impl=impl),
                           lambda: [_t(2, 3, 8, 8, dtype=BF16), _t(3)], BF16),
    "color_matrix": Case(lambda x, impl: ops.color_matrix(x, torch.eye(3).repeat(2, 1, 1) * 0.8 + 0.1,
                                                          torch.full((2, 3), 0.2), impl=impl),
                         lambda: [_t(2, 3, 5, 5, dtype=BF16)], BF16),
    "affine_sample": Case(lambda x, impl: ops.affine_sample(x, THETA, (6, 6), impl=impl),
                          lambda: [_t(2, 3, 6, 6, dtype=BF16)], BF16),
    "sample_lerp": Case(lambda a, b, eps, impl: ops.sample_lerp(a, b, eps, impl=impl),
                        lambda: [_t(2, 3, 4, 4), _t(2, 3, 4, 4, dtype=BF16), torch.rand(2).requires_grad_()], F32,
                        ("ref", "triton")),
    "grad_penalty": Case(lambda g, impl: torch.stack(ops.grad_penalty(g, center=1.0, impl=impl)),
                         lambda: [_t(2, 3, 8, 8, dtype=BF16, scale=0.1)], F32),
    # convolutions: autocast's dtype, as torch's conv2d; float32 weights, styles, noise and biases
    "modulated_conv2d": Case(lambda x, w, s, noise, impl: ops.modulated_conv2d(x, w, s, noise, padding=1, impl=impl),
                             lambda: [_t(2, 3, 6, 6), _t(4, 3, 3, 3), _t(2, 3, offset=1.0), _t(2, 1, 6, 6)], BF16),
    "modulated_conv2d_up": Case(lambda x, w, s, impl: ops.modulated_conv2d(x, w, s, up=2, padding=1,
                                                                          resample_filter=F, impl=impl),
                                lambda: [_t(2, 3, 5, 5, dtype=BF16), _t(4, 3, 3, 3), _t(2, 3, offset=1.0)], BF16),
    "modulated_conv2d_bias_act": Case(
        lambda x, w, s, b, impl: ops.modulated_conv2d_bias_act(x, w, s, bias=b, down=2, padding=1, resample_filter=F,
                                                               act="lrelu", clamp=256.0, impl=impl),
        lambda: [_t(2, 3, 8, 8), _t(4, 3, 3, 3), _t(2, 3, offset=1.0), _t(4)], BF16),
    "conv2d_resample": Case(lambda x, w, impl: ops.conv2d_resample(x, w, F, up=2, padding=1, impl=impl),
                            lambda: [_t(2, 3, 5, 5), _t(4, 3, 3, 3, scale=0.3)], BF16),
}


def _run(case: Case, inputs, impl: str, autocast: bool):
    with torch.autocast("cpu", dtype=BF16, enabled=autocast):
        out = case.fn(*inputs, impl=impl)
    probe = torch.cos(torch.arange(out.numel(), dtype=F32).reshape(out.shape))
    grads = torch.autograd.grad((out.float() * probe).sum(), inputs)
    return out, grads


@pytest.mark.parametrize("name", CASES)
def test_op_under_bf16_autocast(name):
    case = CASES[name]
    inputs = case.inputs()
    # float32 on the values bf16 holds: a rounded parameter moves no element across an activation's kink
    want, want_grads = _run(case, [t.detach().to(BF16).float().requires_grad_() for t in inputs], "ref",
                            autocast=False)
    for impl in case.impls:
        out, grads = _run(case, inputs, impl, autocast=True)
        assert out.dtype == case.out_dtype, (impl, out.dtype)
        assert rel_err(out, want) < TOL, impl
        for t, g, w in zip(inputs, grads, want_grads):
            assert g.dtype == t.dtype, (impl, g.dtype, t.dtype)
            assert rel_err(g, w) < (TOL_REF if impl == "ref" else TOL), impl


def test_float64_stays_float64_under_autocast():
    """autocast leaves float64 alone, and so do the convolutions."""
    x, w, s = _t(1, 2, 4, 4, dtype=torch.float64), _t(3, 2, 3, 3), _t(1, 2)
    with torch.autocast("cpu", dtype=BF16):
        for impl in ("ref", "ext"):
            assert ops.modulated_conv2d(x, w, s, padding=1, impl=impl).dtype == torch.float64
            assert ops.conv2d_resample(x, w.double(), impl=impl).dtype == torch.float64


def test_double_backward_under_autocast():
    """R1 and path length take gradients of gradients: created and differentiated inside the autocast region."""
    x, w, s, b = _t(2, 3, 6, 6), _t(4, 3, 3, 3), _t(2, 3, offset=1.0), _t(4)
    results = {}
    for impl in ("ref", "ext"):
        with torch.autocast("cpu", dtype=BF16):
            y = ops.modulated_conv2d_bias_act(x, w, s, bias=b, padding=1, act="lrelu", impl=impl)
            (gx,) = torch.autograd.grad(y.float().square().sum(), [x], create_graph=True)
            second = torch.autograd.grad(gx.square().sum(), [x, w, s], allow_unused=True)
        assert gx.dtype == F32 and [g.dtype for g in second] == [F32] * 3
        results[impl] = [gx, *second]
    for got, want in zip(results["ext"], results["ref"]):
        assert rel_err(got, want) < TOL


def test_spectral_norm_under_autocast_is_float32():
    """The power iteration runs on the weights' dtype; autocast (whose matmuls are bf16) stays out of it."""
    weight = torch.randn(6, 3, 3, 3, requires_grad=True)
    u0, v0 = torch.nn.functional.normalize(torch.randn(6), dim=0), torch.nn.functional.normalize(torch.randn(27), dim=0)
    for impl in ("ref", "ext"):
        results = []
        for autocast in (False, True):
            u, v = u0.clone(), v0.clone()
            with torch.autocast("cpu", dtype=BF16, enabled=autocast):
                (res,) = sn.power_iteration([weight], [u], [v], [0], [3], [1e-12], [True], impl=impl)
                sigma = sn.spectral_norm_sigma(weight, res, 0)
            results.append((sigma, u, v, *torch.autograd.grad(sigma, weight)))
        for got, want in zip(*results):
            assert got.dtype == F32
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_every_registered_op_has_the_autocast_kernel():
    """Ops made with ganfast.ops._common.custom_op: a new op registered with plain torch.library.custom_op would
    let autocast into its body (its outputs then disagree with its fake impl)."""
    import ganfast.ops  # noqa: F401  (registers every op)
    names = [name for name in torch._C._dispatch_get_all_op_names() if name.startswith("ganfast::")]
    assert len(names) >= 15, names
    for name in names:
        for device_type in AUTOCAST_DEVICES:
            key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, key), (name, key)


def test_torch_compile_under_autocast_matches_eager():
    """A StyleGAN3-like layer (modulated conv, filtered lrelu, bias_act) under autocast, compiled with fullgraph
    (aot_eager: dynamo and AOTAutograd trace the ops through their fake impls and autocast kernels): same dtypes
    as eager (the fake impls agree with the kernels) and the same numbers and gradients."""
    x, w, s, b, b2 = _t(2, 3, 8, 8), _t(4, 3, 3, 3), _t(2, 3, offset=1.0), _t(4), _t(4)

    def layer(x, w, s, b, b2):
        y = ops.modulated_conv2d(x, w, s, padding=1, impl="ext")
        y = ops.filtered_lrelu(y, FU, FU, b, up=2, down=2, padding=6, clamp=16.0, impl="ext")
        return ops.bias_act(y, b2, act="lrelu", impl="ext")

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    inputs = [x, w, s, b, b2]
    with torch.autocast("cpu", dtype=BF16):
        eager = layer(*inputs)
        out = compiled(*inputs)
    assert eager.dtype == out.dtype == BF16
    torch.testing.assert_close(out, eager)
    for got, want in zip(torch.autograd.grad(out.float().square().sum(), inputs),
                         torch.autograd.grad(eager.float().square().sum(), inputs)):
        assert got.dtype == want.dtype == F32
        torch.testing.assert_close(got, want)


def test_outside_autocast_a_parameter_of_another_dtype_is_still_an_error():
    x = torch.randn(2, 4, 3, 3, dtype=BF16)
    with pytest.raises(TypeError, match="b has dtype torch.float32 but x has torch.bfloat16"):
        ganfast.ops.bias_act(x, torch.randn(4))
