"""Property-based tests (hypothesis): every op on random shapes (size-1 and odd sizes), layouts (channels_last,
permuted, strided, offset and expanded views), dtypes and impls either matches its pure-PyTorch reference
(forward, and the gradient for a random cotangent) or raises a clear ValueError/TypeError/ImplNotSupportedError
where the inputs are invalid: never a wrong answer, a NaN or a crash.

The references run in float64 on the same values; tolerances are norm-wise relative errors per dtype.
Hypothesis is derandomized (CI reproducible), without deadline or example database; examples are few and
small so the file stays well under two minutes on a busy 2-core machine (Triton under the interpreter: fewer
and tinier still). ``HYPOTHESIS_PROFILE=ganfast-dev`` runs many more examples locally.
"""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import DEVICE, available_impls, rel_err

import ganfast.reference as reference
from ganfast._dispatch import ImplNotSupportedError
from ganfast.ops import (ACTIVATIONS, bias_act, conv2d_resample, downsample2d, filter2d, filtered_lrelu,
                         grad_penalty, modulated_conv2d, modulated_conv2d_bias_act, sample_lerp, setup_filter,
                         upfirdn2d, upsample2d)
from ganfast.ops.spectral_norm import power_iteration
from ganfast.ops.upfirdn2d import output_size
from ganfast.reference.losses import grad_penalty as grad_penalty_ref
from ganfast.reference.losses import sample_lerp as sample_lerp_ref
from ganfast.reference.modulated_conv2d import demod_coefficients
from ganfast.reference.spectral_norm import power_iteration as power_iteration_ref
from ganfast.reference.upfirdn2d import parse_padding

_COMMON = dict(deadline=None, derandomize=True, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("ganfast-ci", max_examples=25, **_COMMON)
settings.register_profile("ganfast-dev", max_examples=300, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ganfast-ci"))

IMPLS = available_impls()
HOST_IMPLS = ["ref"] + [i for i in IMPLS if i == "ext"]
TRITON = "triton" in IMPLS
TRITON_EXAMPLES = settings.default.max_examples // 5  # interpreted kernels are slow: 5 examples in CI
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# the Triton interpreter has no bfloat16 arithmetic (tests/test_upfirdn2d.py); on a GPU every dtype runs
TRITON_DTYPES = DTYPES if DEVICE.type == "cuda" else DTYPES[:3]
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}
LAYOUTS = ["contiguous", "channels_last", "permuted", "strided", "offset", "expanded"]
CLEAR_ERRORS = (ValueError, TypeError, ImplNotSupportedError)


# ---- inputs -------------------------------------------------------------------------------------------------------

class Input:
    """A differentiable leaf and a view of it in some layout: ``view`` feeds the op; the float64 twin
    (``view64``, a view of ``leaf64`` with the same values) feeds the reference; gradients are compared on the
    leaves, so expanded and strided views are checked through their sums."""

    def __init__(self, leaf: torch.Tensor, make_view, layout: str):
        self.leaf = leaf.requires_grad_()
        self.leaf64 = leaf.detach().double().requires_grad_()
        self.layout = layout
        self.view = make_view(self.leaf)
        self.view64 = make_view(self.leaf64)


def draw_input(data, gen: torch.Generator, shape, dtype, layouts=LAYOUTS, scale: float = 2.0) -> Input:
    """A tensor of ``shape`` and ``dtype`` (random normal values) in a layout drawn from ``layouts``."""
    shape = list(shape)
    ndim = len(shape)
    choices = [lay for lay in layouts if (lay != "channels_last" or ndim == 4) and (lay == "contiguous" or ndim)]
    layout = data.draw(st.sampled_from(choices), label="layout")
    leaf_shape, make_view = shape, lambda t: t
    if layout == "channels_last":
        make_view = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    elif layout == "permuted":
        perm = data.draw(st.permutations(range(ndim)), label="perm")
        inverse = sorted(range(ndim), key=perm.__getitem__)
        leaf_shape = [shape[p] for p in perm]
        make_view = lambda t: t.permute(inverse)  # noqa: E731
    elif layout == "strided":  # every other element along the last dim: not dense
        leaf_shape = shape[:-1] + [2 * shape[-1]]
        make_view = lambda t: t[..., ::2]  # noqa: E731
    elif layout == "offset":  # a non-zero storage offset
        leaf_shape = [shape[0] + 1] + shape[1:]
        make_view = lambda t: t[1:]  # noqa: E731
    elif layout == "expanded":  # stride 0 along one dim
        dim = data.draw(st.integers(0, ndim - 1), label="expanded dim")
        leaf_shape = shape[:dim] + [1] + shape[dim + 1:]
        make_view = lambda t: t.expand(shape)  # noqa: E731
    leaf = (torch.randn(leaf_shape, generator=gen, dtype=torch.float64) * scale).to(device=DEVICE, dtype=dtype)
    inp = Input(leaf, make_view, layout)
    assert inp.view.shape == tuple(shape)
    return inp


def generator(data) -> torch.Generator:
    return torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 31 - 1), label="seed"))


def randn(gen, *shape, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=DEVICE, dtype=dtype)


def assert_close(out, ref, dtype, what, factor=1.0, floor=0.0):
    """‖out − ref‖ / max(‖ref‖, floor) within the dtype's tolerance; no NaN."""
    assert out.shape == ref.shape, (what, tuple(out.shape), tuple(ref.shape))
    assert not torch.isnan(out).any(), f"{what}: NaN"
    err = rel_err(out, ref) if floor == 0 else ((out.double() - ref).norm() / max(ref.norm().item(), floor)).item()
    assert err < TOL[dtype] * factor, f"{what}: relative error {err:.3g} (dtype {dtype})"


def check_grads(outs, refs, inputs, inputs64, dtype, gen, what, factor=2.0, mask=None):
    """Gradients of ⟨outs, dy⟩ and ⟨refs, dy⟩ for one random cotangent dy per output agree on the inputs."""
    dys = [randn(gen, *r.shape) for r in refs]
    got = torch.autograd.grad(outs, inputs, [dy.to(o.dtype) for dy, o in zip(dys, outs)], allow_unused=True)
    want = torch.autograd.grad(refs, inputs64, dys, allow_unused=True)
    for k, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None or not g.any(), f"{what}: gradient {k} should be zero"
            continue
        assert g is not None, f"{what}: no gradient for input {k}"
        assert g.dtype == inputs[k].dtype, (what, k, g.dtype)
        if mask is not None and k == 0:
            g, w = g.masked_fill(mask, 0), w.masked_fill(mask, 0)
        # floor 1: a gradient that cancels to ~0 (e.g. a demodulated weight's, nearly scale-invariant) is
        # compared absolutely, against the O(1) terms that cancel
        assert_close(g, w, dtype, f"{what} gradient {k}", factor, floor=1.0)


def dtypes_for(impl):
    return TRITON_DTYPES if impl == "triton" else DTYPES


# ---- per-op properties ----------------------------------------------------------------------------------------

def check_bias_act(data, impl, max_side):
    gen = generator(data)
    dtype = data.draw(st.sampled_from(dtypes_for(impl)), label="dtype")
    shape = data.draw(st.lists(st.integers(1, max_side), min_size=0, max_size=4), label="shape")
    act = data.draw(st.sampled_from(sorted(ACTIVATIONS)), label="act")
    alpha = data.draw(st.sampled_from([None, 0.0, 0.3]), label="alpha")
    gain = data.draw(st.sampled_from([None, 1.0, 0.5, 2.0]), label="gain")
    clamp = data.draw(st.sampled_from([None, 0.0, 0.4, 2.5]), label="clamp")
    with_b = bool(shape) and data.draw(st.booleans(), label="with_b")
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim") if with_b else 1
    x = draw_input(data, gen, shape, dtype)
    args = (act, alpha, gain, clamp)
    if with_b:
        b = draw_input(data, gen, [shape[dim]], dtype, layouts=["contiguous", "strided", "expanded"])
        out = bias_act(x.view, b.view, dim, *args, impl=impl)
        ref = reference.bias_act(x.view64, b.view64, dim, *args)
        inputs, inputs64 = (x.leaf, b.leaf), (x.leaf64, b.leaf64)
    else:
        out = bias_act(x.view, None, dim, *args, impl=impl)
        ref = reference.bias_act(x.view64, None, dim, *args)
        inputs, inputs64 = (x.leaf,), (x.leaf64,)
    assert out.dtype == dtype and out.device == x.view.device
    assert_close(out, ref, dtype, "bias_act")
    if x.layout == "channels_last" and impl != "ref":
        assert out.is_contiguous(memory_format=torch.channels_last)
    # where |y| is within rounding of the clamp, a low-precision y may land either side of it; where x + b is
    # within rounding of relu/lrelu's kink, its slope may come out either side: both are left out
    eps = torch.finfo(dtype).eps
    z = ref.detach()
    near = torch.zeros_like(z, dtype=torch.bool)
    if clamp is not None:
        near |= (z.abs() - clamp).abs() <= 8 * eps * max(clamp, 1.0)
    if act in ("relu", "lrelu"):
        pre = x.view64.detach() + (0 if not with_b else
                                   b.view64.detach().reshape([-1 if i == dim % len(shape) else 1
                                                              for i in range(len(shape))]))
        near |= pre.abs() <= 8 * eps
    mask = None
    if near.any():
        if x.layout != "contiguous" or with_b:
            return  # masked elements would feed sums (b's gradient, a view's leaf): the forward was checked
        mask = near
    check_grads([out], [ref], inputs, inputs64, dtype, gen, "bias_act", mask=mask)


def _filter(data, dtype):
    kind = data.draw(st.sampled_from(["none", "separable", "2d", "setup"]), label="filter")
    if kind == "none":
        return None
    if kind == "setup":
        return setup_filter(data.draw(st.sampled_from([[1, 1], [1, 3, 3, 1], [1, 2, 1]]), label="taps"),
                            device=DEVICE)
    gen = generator(data)
    if kind == "separable":
        return randn(gen, data.draw(st.integers(1, 4), label="taps"), dtype=dtype)
    return randn(gen, data.draw(st.integers(1, 4), label="fh"), data.draw(st.integers(1, 4), label="fw"), dtype=dtype)


def _pair(data, lo, hi, label):
    """An int or an [x, y] pair in [lo, hi]."""
    return data.draw(st.one_of(st.integers(lo, hi), st.lists(st.integers(lo, hi), min_size=2, max_size=2)),
                     label=label)


def _as_list(value, n):
    return [value] * n if isinstance(value, int) else list(value)


def check_upfirdn2d(data, impl, max_side):
    gen = generator(data)
    dtype = data.draw(st.sampled_from(dtypes_for(impl)), label="dtype")
    shape = [data.draw(st.integers(1, 3), label="N"), data.draw(st.integers(1, 3), label="C"),
             data.draw(st.integers(1, max_side), label="H"), data.draw(st.integers(1, max_side), label="W")]
    f = _filter(data, data.draw(st.sampled_from([torch.float32, dtype]), label="filter dtype"))
    flip_filter = data.draw(st.booleans(), label="flip_filter")
    gain = data.draw(st.sampled_from([1.0, 0.5, 3.0]), label="gain")
    x = draw_input(data, gen, shape, dtype)
    helper = data.draw(st.sampled_from(["upfirdn2d", "upsample2d", "downsample2d", "filter2d"]), label="helper")
    if helper == "upfirdn2d":
        up, down = _pair(data, 1, 3, "up"), _pair(data, 1, 3, "down")
        padding = data.draw(st.one_of(st.integers(-1, 3), st.lists(st.integers(-2, 3), min_size=4, max_size=4)),
                            label="padding")
        (upx, upy), (downx, downy) = _as_list(up, 2), _as_list(down, 2)
        pads = _as_list(padding, 4)
        fh, fw = (1, 1) if f is None else (f.shape[0], f.shape[-1])
        valid = (output_size(shape[2], upy, downy, pads[2], pads[3], fh) >= 1 and
                 output_size(shape[3], upx, downx, pads[0], pads[1], fw) >= 1)
        call = lambda t, f, **kw: upfirdn2d(t, f, up, down, padding, flip_filter, gain, **kw)  # noqa: E731
        call_ref = lambda t, f: reference.upfirdn2d(t, f, up, down, padding, flip_filter, gain)  # noqa: E731
    else:
        factor = _pair(data, 1, 2, "factor")
        padding = data.draw(st.integers(0, 2), label="padding")
        op, op_ref = {"upsample2d": (upsample2d, reference.upsample2d), "downsample2d": (downsample2d,
                      reference.downsample2d), "filter2d": (filter2d, reference.filter2d)}[helper]
        extra = () if helper == "filter2d" else (factor,)
        call = lambda t, f, **kw: op(t, f, *extra, padding, flip_filter, gain, **kw)  # noqa: E731
        call_ref = lambda t, f: op_ref(t, f, *extra, padding, flip_filter, gain)  # noqa: E731
        try:
            call_ref(x.view64, f)
            valid = True
        except (ValueError, RuntimeError):
            valid = False
    if not valid:
        with pytest.raises(ValueError, match="upfirdn2d output would be"):
            call(x.view, f, impl=impl)
        return
    out = call(x.view, f, impl=impl)
    ref = call_ref(x.view64, f)
    assert out.dtype == dtype
    assert_close(out, ref, dtype, helper)
    if x.layout == "channels_last" and impl != "ref" and out.shape[1] > 1 and out.shape[2] * out.shape[3] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    check_grads([out], [ref], (x.leaf,), (x.leaf64,), dtype, gen, helper)


def check_filtered_lrelu(data, impl, max_side):
    gen = generator(data)
    dtype = data.draw(st.sampled_from(dtypes_for(impl)), label="dtype")
    shape = [data.draw(st.integers(1, 2), label="N"), data.draw(st.integers(1, 3), label="C"),
             data.draw(st.integers(1, max_side), label="H"), data.draw(st.integers(1, max_side), label="W")]
    fu, fd = _filter(data, torch.float32), _filter(data, torch.float32)
    up, down = data.draw(st.integers(1, 4), label="up"), data.draw(st.integers(1, 4), label="down")
    padding = data.draw(st.one_of(st.integers(-1, 4), st.lists(st.integers(-2, 5), min_size=2, max_size=2),
                                  st.lists(st.integers(-2, 5), min_size=4, max_size=4)), label="padding")
    kw = {"up": up, "down": down, "padding": padding, "flip_filter": data.draw(st.booleans(), label="flip"),
          "gain": data.draw(st.sampled_from([2 ** 0.5, 1.0, 0.5]), label="gain"),
          "slope": data.draw(st.sampled_from([0.2, 0.0, 1.5]), label="slope"),
          "clamp": data.draw(st.sampled_from([None, 0.5, 2.0]), label="clamp")}
    x = draw_input(data, gen, shape, dtype)
    b = (draw_input(data, gen, [shape[1]], dtype, layouts=["contiguous", "strided", "expanded"])
         if data.draw(st.booleans(), label="with_b") else None)
    pads = parse_padding(padding)
    (fu_h, fu_w), (fd_h, fd_w) = [(1, 1) if f is None else (f.shape[0], f.shape[-1]) for f in (fu, fd)]
    out_hw = [(shape[2] * up + pads[2] + pads[3] - fu_h - fd_h + down + 1) // down,
              (shape[3] * up + pads[0] + pads[1] - fu_w - fd_w + down + 1) // down]
    if min(out_hw) < 1:
        with pytest.raises(ValueError, match="filtered_lrelu output would be"):
            filtered_lrelu(x.view, fu, fd, None if b is None else b.view, **kw, impl=impl)
        return
    out = filtered_lrelu(x.view, fu, fd, None if b is None else b.view, **kw, impl=impl)
    ref = reference.filtered_lrelu(x.view64, fu, fd, None if b is None else b.view64, **kw)
    assert out.dtype == dtype and list(out.shape[2:]) == out_hw
    assert_close(out, ref, dtype, "filtered_lrelu", floor=1e-6)
    if x.layout == "channels_last" and impl != "ref" and out.shape[1] > 1 and out.shape[2] * out.shape[3] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    # the gradient's mask is the sign of the upsampled values and whether they clamp: values within rounding of
    # 0 or of the clamp (in x's dtype: the reference rounds its intermediates to it) may fall either side in
    # another precision, and then only the forward is compared
    with torch.no_grad():
        pre = reference.bias_act(x.view64, None if b is None else b.view64)
        mid = reference.upfirdn2d(pre, fu, up=up, padding=pads, gain=up ** 2, flip_filter=kw["flip_filter"])
        eps = 64 * torch.finfo(dtype).eps
        scale = 1 + mid.abs().max().item()
        near = mid.abs() <= eps * scale
        if kw["clamp"] is not None:
            act = torch.where(mid > 0, mid, mid * kw["slope"]) * kw["gain"]
            near |= (act.abs() - kw["clamp"]).abs() <= eps * scale * 4
    if near.any():
        return
    inputs, inputs64 = ((x.leaf,), (x.leaf64,)) if b is None else ((x.leaf, b.leaf), (x.leaf64, b.leaf64))
    check_grads([out], [ref], inputs, inputs64, dtype, gen, "filtered_lrelu")


def check_conv2d_resample(data, impl, max_side):
    del impl  # conv2d_resample has no impl argument: its filtering steps take upfirdn2d's auto choice
    gen = generator(data)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    groups = data.draw(st.integers(1, 2), label="groups")
    c_in, c_out = groups * data.draw(st.integers(1, 2), label="C/g"), groups * data.draw(st.integers(1, 2), label="O/g")
    kh, kw = data.draw(st.integers(1, 3), label="kh"), data.draw(st.integers(1, 3), label="kw")
    shape = [data.draw(st.integers(1, 2), label="N"), c_in, data.draw(st.integers(1, max_side), label="H"),
             data.draw(st.integers(1, max_side), label="W")]
    up, down = data.draw(st.integers(1, 2), label="up"), data.draw(st.integers(1, 2), label="down")
    f = _filter(data, torch.float32)
    padding = data.draw(st.one_of(st.integers(-1, 2), st.lists(st.integers(-1, 2), min_size=4, max_size=4)),
                        label="padding")
    flips = dict(flip_weight=data.draw(st.booleans(), label="flip_weight"),
                 flip_filter=data.draw(st.booleans(), label="flip_filter"))
    x = draw_input(data, gen, shape, dtype)
    w = draw_input(data, gen, [c_out, c_in // groups, kh, kw], dtype, layouts=["contiguous", "permuted"])
    try:
        ref = reference.conv2d_resample(x.view64, w.view64, f, up, down, padding, groups, **flips)
    except (ValueError, RuntimeError):  # the geometry leaves nothing to convolve
        with pytest.raises(CLEAR_ERRORS + (RuntimeError,)):
            conv2d_resample(x.view, w.view, f, up, down, padding, groups, **flips)
        return
    out = conv2d_resample(x.view, w.view, f, up, down, padding, groups, **flips)
    assert out.dtype == dtype
    factor = 1.0 if dtype in (torch.float64, torch.float32) else 2.0
    assert_close(out, ref, dtype, "conv2d_resample", factor, floor=0.0 if factor == 1 else ref.numel() ** 0.5)
    check_grads([out], [ref], (x.leaf, w.leaf), (x.leaf64, w.leaf64), dtype, gen, "conv2d_resample", 2 * factor)


def check_modulated_conv2d(data, impl, max_side):
    gen = generator(data)
    dtype = data.draw(st.sampled_from(dtypes_for(impl)), label="dtype")
    batch, c_in, c_out = (data.draw(st.integers(1, 3), label=n) for n in ("N", "I", "O"))
    k = data.draw(st.integers(1, 3), label="k")
    shape = [batch, c_in, data.draw(st.integers(1, max_side), label="H"),
             data.draw(st.integers(1, max_side), label="W")]
    up, down = data.draw(st.integers(1, 2), label="up"), data.draw(st.integers(1, 2), label="down")
    f = None if up == down == 1 else setup_filter([1, 3, 3, 1], device=DEVICE)
    padding = data.draw(st.integers(0, 1), label="padding") if up == down == 1 else k // 2
    demodulate = data.draw(st.booleans(), label="demodulate")
    flip_weight = data.draw(st.booleans(), label="flip_weight")
    fused = data.draw(st.booleans(), label="fused_modconv")
    x = draw_input(data, gen, shape, dtype)
    # StyleGAN keeps float32 weights and styles under float16 activations; same-dtype parameters work too
    param_dtype = data.draw(st.sampled_from([dtype, torch.float32 if dtype != torch.float64 else dtype]),
                            label="weight dtype")
    w = draw_input(data, gen, [c_out, c_in, k, k], param_dtype, layouts=["contiguous", "permuted", "strided"])
    # equal styles on every channel (an expanded view) with demodulation: their summed gradient is exactly 0
    # (y does not change when all styles scale together), left to rounding noise; no such view then
    s = draw_input(data, gen, [batch, c_in], param_dtype,
                   layouts=["contiguous", "strided"] + ([] if demodulate else ["expanded"]))
    geometry = dict(up=up, down=down, padding=padding, resample_filter=f, flip_weight=flip_weight)
    try:
        ref = reference.modulated_conv2d(x.view64, w.view64, s.view64, None, demodulate=demodulate,
                                         fused_modconv=fused, **geometry)
    except (ValueError, RuntimeError):  # the geometry leaves nothing to convolve
        # impl="ref" is the reference itself, which leaves this to torch's convolution (a RuntimeError)
        with pytest.raises(RuntimeError if impl == "ref" else ValueError,
                           match="Kernel size can't be greater" if impl == "ref" else "output would be"):
            modulated_conv2d(x.view, w.view, s.view, None, demodulate=demodulate, impl=impl, **geometry)
        return
    fused_epilogue = data.draw(st.booleans(), label="bias_act variant")
    noise_shape = data.draw(st.sampled_from([None, "full", "per-pixel", "per-channel"]), label="noise")
    inputs, inputs64 = [x.leaf, w.leaf, s.leaf], [x.leaf64, w.leaf64, s.leaf64]
    noise = noise64 = None
    if noise_shape is not None:
        n_shape = {"full": ref.shape, "per-pixel": (ref.shape[0], 1, *ref.shape[2:]),
                   "per-channel": (1, ref.shape[1], 1, 1)}[noise_shape]
        nz = draw_input(data, gen, n_shape, dtype, layouts=["contiguous", "expanded"])
        noise, noise64 = nz.view, nz.view64
        inputs.append(nz.leaf)
        inputs64.append(nz.leaf64)
        ref = ref + noise64
    if fused_epilogue:
        act = data.draw(st.sampled_from(["linear", "lrelu", "tanh", "swish"]), label="act")
        clamp = data.draw(st.sampled_from([None, 1.5]), label="clamp")
        bias = draw_input(data, gen, [c_out], dtype)
        out = modulated_conv2d_bias_act(x.view, w.view, s.view, noise, bias.view, demodulate=demodulate, act=act,
                                        clamp=clamp, impl=impl, **geometry)
        pre = ref.detach()
        ref = reference.bias_act(ref, bias.view64, 1, act, clamp=clamp)
        inputs.append(bias.leaf)
        inputs64.append(bias.leaf64)
    else:
        act, clamp = "linear", None
        out = modulated_conv2d(x.view, w.view, s.view, noise, demodulate=demodulate, fused_modconv=fused, impl=impl,
                               **geometry)
    assert out.dtype == dtype
    factor = 1.0 if dtype in (torch.float64, torch.float32) else 2.0
    # low precision: an output that cancels to ~0 (few terms) is compared against unit-RMS values, not itself
    assert_close(out, ref, dtype, "modulated_conv2d", factor, floor=0.0 if factor == 1 else ref.numel() ** 0.5)
    if demodulate and dtype != torch.float64 and \
            demod_coefficients(w.view64, s.view64).max() > 5:
        return  # a nearly vanishing Σ(w·s)²: the gradient cancels to rounding noise in low precision
    eps = torch.finfo(dtype).eps * 64
    if clamp is not None and ((ref.detach().abs() - clamp).abs() < eps * clamp).any():
        return  # an output within rounding of the clamp: its gradient may go either way
    if act == "lrelu" and (pre.abs() < eps * pre.abs().max()).any():
        return  # an input within rounding of the kink
    check_grads([out], [ref], inputs, inputs64, dtype, gen, "modulated_conv2d", factor=2 * factor)


def check_power_iteration(data, impl, max_side):
    gen = generator(data)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    count = data.draw(st.integers(1, 3), label="weights")
    weights, us, vs, dims = [], [], [], []
    for _ in range(count):
        shape = data.draw(st.lists(st.integers(1, max_side), min_size=1, max_size=4), label="shape")
        w = draw_input(data, gen, shape, dtype, layouts=["contiguous", "permuted", "strided", "channels_last"])
        dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
        rows = shape[dim]
        weights.append(w.view.detach())
        dims.append(dim)
        us.append(torch.nn.functional.normalize(randn(gen, rows), dim=0).to(dtype))
        vs.append(torch.nn.functional.normalize(randn(gen, w.view.numel() // rows), dim=0).to(dtype))
    n_iters = data.draw(st.lists(st.integers(0, 3), min_size=count, max_size=count), label="n_iters")
    eps = data.draw(st.lists(st.sampled_from([1e-12, 1e-4]), min_size=count, max_size=count), label="eps")
    u_first = data.draw(st.lists(st.booleans(), min_size=count, max_size=count), label="u_first")
    ref_us, ref_vs = [u.double().clone() for u in us], [v.double().clone() for v in vs]  # us are updated in place
    results = power_iteration(weights, us, vs, dims, n_iters, eps, u_first, impl=impl)
    for k in range(count):
        sigma = power_iteration_ref(weights[k].double(), ref_us[k], ref_vs[k], dims[k] % weights[k].ndim,
                                    n_iters[k], eps[k], u_first[k])
        # low precision: torch would iterate in the weight dtype, the kernels in float32, so compare to float64
        # with the dtype's tolerance; σ is a quotient of the vectors, so its error is about twice theirs
        factor = 1.0 if dtype == torch.float64 else 4.0
        assert results[k].sigma.dtype == dtype and results[k].u.dtype == dtype
        assert_close(results[k].u, ref_us[k], dtype, f"u[{k}]", factor)
        assert_close(results[k].v, ref_vs[k], dtype, f"v[{k}]", factor)
        assert_close(us[k], ref_us[k], dtype, f"us[{k}] in place", factor)
        assert_close(results[k].sigma.reshape(1), sigma.reshape(1), dtype, f"sigma[{k}]", 2 * factor)


def check_grad_penalty(data, impl, max_side):
    gen = generator(data)
    dtype = data.draw(st.sampled_from(dtypes_for(impl)), label="dtype")
    shape = data.draw(st.lists(st.integers(1, max_side), min_size=1, max_size=4), label="shape")
    center = data.draw(st.sampled_from([None, 0.0, 1.0, 2.5]), label="center")
    g = draw_input(data, gen, shape, dtype)
    zero_sample = data.draw(st.booleans(), label="zero sample") and g.layout == "contiguous"
    if zero_sample:  # a sample with norm 0, where the norm's gradient is the subgradient 0
        with torch.no_grad():
            g.leaf[0] = 0
            g.leaf64[0] = 0
    term, norm = grad_penalty(g.view, center, impl=impl)
    ref_term, ref_norm = grad_penalty_ref(g.view64, center)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert term.dtype == acc and norm.dtype == acc
    # accumulated in float32 for the half types: only the input's rounding remains
    tol_dtype = dtype if dtype in (torch.float64, torch.float32) else torch.float32
    assert_close(term, ref_term, tol_dtype, "grad_penalty term", 10.0)
    assert_close(norm, ref_norm, tol_dtype, "grad_penalty norm", 10.0)
    check_grads([term, norm], [ref_term, ref_norm], (g.leaf,), (g.leaf64,), dtype, gen, "grad_penalty")


def check_sample_lerp(data, impl, max_side):
    gen = generator(data)
    dtype = data.draw(st.sampled_from(dtypes_for(impl)), label="dtype")
    shape = data.draw(st.lists(st.integers(1, max_side), min_size=1, max_size=4), label="shape")
    a, b = draw_input(data, gen, shape, dtype), draw_input(data, gen, shape, dtype)
    eps = draw_input(data, gen, [shape[0]], dtype, layouts=["contiguous", "strided", "expanded"], scale=0.5)
    if impl == "ext":  # no compiled kernel: asking for one is a clear error
        with pytest.raises(ImplNotSupportedError, match="no compiled-extension kernel"):
            sample_lerp(a.view, b.view, eps.view, impl=impl)
        return
    out = sample_lerp(a.view, b.view, eps.view, impl=impl)
    ref = sample_lerp_ref(a.view64, b.view64, eps.view64)
    assert out.dtype == dtype
    assert_close(out, ref, dtype, "sample_lerp")
    check_grads([out], [ref], (a.leaf, b.leaf, eps.leaf), (a.leaf64, b.leaf64, eps.leaf64), dtype, gen,
                "sample_lerp", factor=4.0)


CHECKS = {"bias_act": (check_bias_act, HOST_IMPLS), "upfirdn2d": (check_upfirdn2d, HOST_IMPLS),
          "conv2d_resample": (check_conv2d_resample, ["auto"]),
          "modulated_conv2d": (check_modulated_conv2d, HOST_IMPLS),
          "power_iteration": (check_power_iteration, HOST_IMPLS),
          "grad_penalty": (check_grad_penalty, HOST_IMPLS), "sample_lerp": (check_sample_lerp, HOST_IMPLS),
          "filtered_lrelu": (check_filtered_lrelu, HOST_IMPLS)}
TRITON_CHECKS = ["bias_act", "upfirdn2d", "modulated_conv2d", "grad_penalty", "sample_lerp", "filtered_lrelu"]


@pytest.mark.parametrize("op", list(CHECKS))
@given(data=st.data())
def test_matches_reference(op, data):
    check, impls = CHECKS[op]
    check(data, data.draw(st.sampled_from(impls), label="impl"), max_side=6)


@pytest.mark.skipif(not TRITON, reason="triton is not available here")
@pytest.mark.parametrize("op", TRITON_CHECKS)
@settings(max_examples=TRITON_EXAMPLES)
@given(data=st.data())
def test_triton_matches_reference(op, data):
    CHECKS[op][0](data, "triton", max_side=3)


# ---- bad arguments: a clear error, never a crash ------------------------------------------------------------------

def _bad_calls():
    """(name, call) pairs: each call passes one invalid argument to an op on otherwise valid inputs."""
    x4 = torch.randn(2, 3, 5, 5, dtype=torch.float64, device=DEVICE)
    b3 = torch.randn(3, dtype=torch.float64, device=DEVICE)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=DEVICE)
    s = torch.randn(2, 3, dtype=torch.float64, device=DEVICE)
    nan = float("nan")
    return {
        "bias_act b length": lambda impl: bias_act(x4, b3[:2], impl=impl),
        "bias_act b 2-D": lambda impl: bias_act(x4, b3[None], impl=impl),
        "bias_act b dtype": lambda impl: bias_act(x4, b3.float(), impl=impl),
        "bias_act dim": lambda impl: bias_act(x4, b3, dim=4, impl=impl),
        "bias_act act": lambda impl: bias_act(x4, b3, act="gelu", impl=impl),
        "bias_act clamp<0": lambda impl: bias_act(x4, b3, clamp=-1.0, impl=impl),
        "bias_act clamp nan": lambda impl: bias_act(x4, b3, clamp=nan, impl=impl),
        "bias_act gain inf": lambda impl: bias_act(x4, b3, gain=float("inf"), impl=impl),
        "bias_act int x": lambda impl: bias_act(x4.long(), impl=impl),
        "bias_act impl": lambda impl: bias_act(x4, b3, impl="fast"),
        "upfirdn2d 3-D x": lambda impl: upfirdn2d(x4[0], None, impl=impl),
        "upfirdn2d up=0": lambda impl: upfirdn2d(x4, None, up=0, impl=impl),
        "upfirdn2d down=-1": lambda impl: upfirdn2d(x4, None, down=[1, -1], impl=impl),
        "upfirdn2d padding len 3": lambda impl: upfirdn2d(x4, None, padding=[1, 1, 1], impl=impl),
        "upfirdn2d 3-D f": lambda impl: upfirdn2d(x4, torch.ones(2, 2, 2, dtype=torch.float64), impl=impl),
        "upfirdn2d empty f": lambda impl: upfirdn2d(x4, torch.ones(0), impl=impl),
        "upfirdn2d crop all": lambda impl: upfirdn2d(x4, None, padding=-3, impl=impl),
        "upfirdn2d gain nan": lambda impl: upfirdn2d(x4, None, gain=nan, impl=impl),
        "filtered_lrelu b length": lambda impl: filtered_lrelu(x4, b=b3[:2], impl=impl),
        "filtered_lrelu 3-D fu": lambda impl: filtered_lrelu(x4, torch.ones(2, 2, 2, device=DEVICE), impl=impl),
        "filtered_lrelu float64 fd": lambda impl: filtered_lrelu(x4, fd=b3, impl=impl),
        "filtered_lrelu crop all": lambda impl: filtered_lrelu(x4, padding=-3, impl=impl),
        "filtered_lrelu slope<0": lambda impl: filtered_lrelu(x4, slope=-1.0, impl=impl),
        "conv2d_resample groups": lambda impl: conv2d_resample(x4, w, groups=2),
        "conv2d_resample channels": lambda impl: conv2d_resample(x4[:, :2], w),
        "conv2d_resample up=0": lambda impl: conv2d_resample(x4, w, up=0),
        "modconv styles shape": lambda impl: modulated_conv2d(x4, w, s[:1], impl=impl),
        "modconv weight channels": lambda impl: modulated_conv2d(x4, w[:, :2], s, impl=impl),
        "modconv noise shape": lambda impl: modulated_conv2d(x4, w, s, torch.zeros(2, 4, 7, 7, dtype=torch.float64,
                                                                                  device=DEVICE), impl=impl),
        "modconv bias length": lambda impl: modulated_conv2d_bias_act(x4, w, s, bias=b3, impl=impl),
        "modconv act": lambda impl: modulated_conv2d_bias_act(x4, w, s, act="gelu", impl=impl),
        "modconv clamp<0": lambda impl: modulated_conv2d_bias_act(x4, w, s, clamp=-2.0, impl=impl),
        "modconv alpha nan": lambda impl: modulated_conv2d_bias_act(x4, w, s, act="lrelu", alpha=nan, impl=impl),
        "modconv gain inf": lambda impl: modulated_conv2d_bias_act(x4, w, s, gain=float("inf"), impl=impl),
        "conv2d_resample impl": lambda impl: conv2d_resample(x4, w, impl="cuda_graph"),
        "conv2d_resample f device": lambda impl: conv2d_resample(x4, w, f=torch.ones(3, device="meta")),
        "power_iteration u length": lambda impl: power_iteration([w], [torch.zeros(3, dtype=torch.float64)],
                                                                 [torch.zeros(27, dtype=torch.float64)], [0], [1],
                                                                 [1e-12], [True], impl=impl),
        "power_iteration u strided": lambda impl: power_iteration([w], [torch.zeros(8, dtype=torch.float64)[::2]],
                                                                  [torch.zeros(27, dtype=torch.float64)], [0], [1],
                                                                  [1e-12], [True], impl=impl),
        "power_iteration shared u v": lambda impl: power_iteration([w[0, 0]], [s[0]], [s[0]], [0], [1], [1e-12],
                                                                   [True], impl=impl),
        "power_iteration eps 0": lambda impl: power_iteration([w], [torch.zeros(4, dtype=torch.float64)],
                                                              [torch.zeros(27, dtype=torch.float64)], [0], [1],
                                                              [0.0], [True], impl=impl),
        "power_iteration dtype": lambda impl: power_iteration([w], [torch.zeros(4)], [torch.zeros(27)], [0], [1],
                                                              [1e-12], [True], impl=impl),
        "grad_penalty center<0": lambda impl: grad_penalty(x4, -1.0, impl=impl),
        "grad_penalty center nan": lambda impl: grad_penalty(x4, nan, impl=impl),
        "grad_penalty empty batch": lambda impl: grad_penalty(x4[:0], impl=impl),
        "grad_penalty scalar": lambda impl: grad_penalty(x4[0, 0, 0, 0], impl=impl),
        "sample_lerp shapes": lambda impl: sample_lerp(x4, x4[:, :2], s[:, 0], impl=impl),
        "sample_lerp eps length": lambda impl: sample_lerp(x4, x4, b3, impl=impl),
        "sample_lerp eps dtype": lambda impl: sample_lerp(x4, x4, s[:, 0].float(), impl=impl),
        "sample_lerp ext": lambda impl: sample_lerp(x4, x4, s[:, 0], impl="ext"),
        "power_iteration triton": lambda impl: power_iteration([w], [torch.zeros(4, dtype=torch.float64)],
                                                               [torch.zeros(27, dtype=torch.float64)], [0], [1],
                                                               [1e-12], [True], impl="triton"),
    }


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("impl", HOST_IMPLS + [None])
@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_arguments_raise_clear_errors(name, impl):
    with pytest.raises(CLEAR_ERRORS) as info:
        BAD_CALLS[name](impl)
    assert str(info.value), name


# ---- sizes beyond 32-bit indexing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape,taps", [((1, 2, 2 ** 20, 4096), 3), ((1, 1, 2 ** 31 + 3, 1), 1)])
def test_upfirdn2d_beyond_int32_elements(impl, shape, taps):
    """An expanded (stride-0) input of more than 2^31 elements, downsampled along y to one row: the kernels
    index in 64 bits (Triton's o·down once overflowed int32 here) and read only what the output needs, so this
    allocates almost nothing. (The other ext
    kernels copy non-dense inputs first, so their > 2^31 cases would need tens of GiB: not tested here.)"""
    row = torch.randn(1, shape[1], 1, shape[3], dtype=torch.float64, device=DEVICE)
    x = row.expand(shape)
    assert x.numel() > 2 ** 31
    f = torch.arange(1.0, taps + 1, dtype=torch.float64, device=DEVICE)
    down = [1, shape[2]]
    out = upfirdn2d(x, f, down=down, padding=[taps // 2, taps // 2, 0, 0], impl=impl)
    assert out.shape == (1, shape[1], 1, shape[3])
    want = reference.upfirdn2d(x[:, :, :taps], f, down=down, padding=[taps // 2, taps // 2, 0, 0])
    assert rel_err(out, want) < 1e-12


# ---- regressions found by the properties above ----------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_bias_act_op_reads_strided_bias(impl):
    """torch.ops.ganfast.bias_act called directly, as modulated_conv2d_bias_act does, with a strided bias view:
    the kernels read b with stride 1, so the launch makes it contiguous (it used to read the wrong elements)."""
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=DEVICE)
    b = torch.randn(6, dtype=torch.float64, device=DEVICE)[::2]
    out = torch.ops.ganfast.bias_act(x, b, 1, "lrelu", 0.2, 1.4, None, impl)
    assert rel_err(out, reference.bias_act(x, b, 1, "lrelu", 0.2, 1.4)) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("down", [1, 2])
def test_modulated_conv2d_bias_act_strided_bias(impl, down):
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, device=DEVICE)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=DEVICE)
    s = torch.randn(1, 2, dtype=torch.float64, device=DEVICE)
    bias = torch.randn(3, 2, dtype=torch.float64, device=DEVICE)[:, 1]
    f = setup_filter([1, 3, 3, 1], device=DEVICE) if down > 1 else None
    out = modulated_conv2d_bias_act(x, w, s, bias=bias, down=down, padding=1, resample_filter=f, act="lrelu",
                                    impl=impl)
    ref = modulated_conv2d_bias_act(x, w, s, bias=bias.contiguous(), down=down, padding=1, resample_filter=f,
                                    act="lrelu", impl="ref")
    assert rel_err(out, ref) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
def test_modulated_conv2d_empty_output_is_an_error(impl):
    """A 1×1 input, 3×3 kernel and down=2 leave no output pixel: a ValueError for every impl (Triton's kernel used
    to return an empty tensor while torch's convolution raised)."""
    x = torch.randn(1, 1, 1, 1, dtype=torch.float64, device=DEVICE)
    w = torch.randn(1, 1, 3, 3, dtype=torch.float64, device=DEVICE)
    s = torch.ones(1, 1, dtype=torch.float64, device=DEVICE)
    with pytest.raises(ValueError, match="output would be 0x0"):
        modulated_conv2d(x, w, s, down=2, padding=1, resample_filter=setup_filter([1, 3, 3, 1], device=DEVICE),
                         impl=impl)
