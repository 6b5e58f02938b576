"""Modulated convolution (StyleGAN2) and the fused synthesis-layer op, first and second derivatives.

    y = act(d[n, o] · conv(x · s[n, i], w)[n, o] + noise + b[o]) · gain, clamped to ±clamp
    d[n, o] = rsqrt(Σ_i s[n, i]² · Σ_k w[o, i, k]² + 1e-8)        (demodulation; 1 without it)

The style s scales input channels and d scales output channels, so one convolution shared by the batch does
the work of StyleGAN2's per-sample weights. Routes by resampling (pads from StyleGAN2-ADA's conv2d_resample):
    up = 1, down = 1   one convolution with the whole epilogue fused (noise, bias, act, gain, clamp)
    up = 1, down > 1   FIR filter (upfirdn2d), then a strided convolution with the fused epilogue
    up > 1             transposed convolution (stride up) scaled by s and d, then the FIR filter
                       (ganfast.ops.upfirdn2d), then noise + bias_act (the filter sits between the conv and
                       the epilogue; it is not fused into the Triton kernel)

Registered ops (fake impls; autograd made of registered ops, so double backward works):
    ganfast::modconv              raw = conv(x · in_scale, w); y = epilogue(raw · out_scale)   → (y, raw)
    ganfast::modconv_weight_grad  dw = Σ_{n,hw} (g · g_scale) ⋆ (x · x_scale)                  (the GEMM for dw)
    ganfast::modconv_demod        d = rsqrt(Σ_i s² · W2 + 1e-8), W2 = Σ_k w²
Backward of modconv: dz from the epilogue (bias_act_grad), then
    dx = in_scale · conv_adjoint(dz · out_scale, w)   (the same op in the adjoint geometry: scale by d before,
                                                       by s after), d in_scale = Σ_hw x · conv_adjoint(...)
    dw = modconv_weight_grad(x, in_scale, dz, out_scale), d out_scale = Σ_hw dz · raw, db = Σ dz, dnoise = Σ dz.
The weight-gradient op's backward is two modconv calls, and modconv_demod's backward is two small matmuls.

Backends (the ``impl`` string of the registered ops):
    "triton"  Triton implicit-GEMM kernel for direct convolutions of any stride and transposed ones of
              stride 1 (the input gradient of a stride-1 conv), style scale folded into the weight tile as it
              is loaded; demodulation, noise, bias, activation, gain and clamp in the epilogue. Triton kernels
              for the weight gradient (scales applied as loaded, reduced over batch and pixels) and for the
              demodulation coefficients. Strided transposed convolutions (the up=2 forward core, the input
              gradient of down=2) run on torch's convolutions.
    "ext"     no ganfast C++/CUDA kernel: every convolution runs on torch's compiled kernels (cuDNN / oneDNN),
              the epilogue on ganfast's bias_act kernel. The public function's "ext" means this route.
Public ``impl="ref"`` calls ``ganfast.reference.modulated_conv2d`` (autograd by torch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._dispatch import register_op
from ..reference.bias_act import ACTIVATIONS
from ..reference.bias_act import bias_act as bias_act_ref
from ..reference.conv2d_resample import check_factor, oriented_weight, resample_padding
from ..reference.modulated_conv2d import DEMOD_EPS, prenormalize
from ..reference.modulated_conv2d import modulated_conv2d as modulated_conv2d_ref
from ..reference.upfirdn2d import IntOrPair
from ._common import (autocast_input, check_epilogue, check_same_device, check_tensor, custom_op, no_autocast,
                      register_autograd)
from .bias_act import bias_act
from .upfirdn2d import upfirdn2d

__all__ = ["modulated_conv2d", "modulated_conv2d_bias_act"]


# auto on CPU, measured (2 shared cores, fp32, 3×3 kernels, forward+backward / forward only, ms):
#   4×64×32² up=1: ext 72 / 17, reference fused_modconv 81 / 36, reference non-fused 123 / 57
#   8×128×16² up=1: ext 140 / 30, fused 354 / 113, non-fused 236 / 90
#   4×64×16² up=2: ext 134 / 19, fused 114 / 56, non-fused 150 / 32
# so "ext" (the registered ops on oneDNN convolutions) is auto on CPU.
# auto on CUDA is NOT measured (no GPU was available when this was written); the rule until
# benchmarks/test_bench_modulated_conv2d.py decides per shape class: Triton for up=1 layers, where the whole
# epilogue fuses into the kernel; the cuDNN route ("ext") for up>1 layers ("cuda:up"), whose core, a strided
# transposed convolution, the Triton kernel does not cover.
_OP = register_op("modulated_conv2d", {"cpu": ("ext", "ref"), "cuda": ("triton", "ext", "ref"),
                                       "cuda:up": ("ext", "triton", "ref")},
                  notes={"ext": "torch's convolutions (cuDNN/oneDNN) with ganfast's bias_act and upfirdn2d kernels; "
                                "no ganfast convolution kernel",
                         "triton": "strided transposed convolutions (the up>1 core, the input gradient of down>1) "
                                   "run on torch's conv_transpose2d"})


# ---- geometry ---------------------------------------------------------------------------------------------------
# A convolution's geometry is (stride, padding [ph, pw], transposed, output_padding [oh, ow]) in torch's
# conv2d / conv_transpose2d sense; a transposed convolution takes its weight as (in, out, kh, kw).

def _out_hw(hw, weight, stride, padding, transposed, output_padding) -> list[int]:
    k = weight.shape[2:]
    if transposed:
        return [(hw[i] - 1) * stride - 2 * padding[i] + k[i] + output_padding[i] for i in range(2)]
    return [(hw[i] + 2 * padding[i] - k[i]) // stride + 1 for i in range(2)]


def _adjoint(in_hw, weight, stride, padding, transposed, output_padding):
    """The geometry of the adjoint convolution, which maps the output space back onto an input of size in_hw."""
    if transposed:
        return stride, padding, False, [0, 0]
    out = _out_hw(in_hw, weight, stride, padding, False, output_padding)
    k = weight.shape[2:]
    return stride, padding, True, [in_hw[i] - ((out[i] - 1) * stride - 2 * padding[i] + k[i]) for i in range(2)]


def _conv(x, weight, stride, padding, transposed, output_padding):
    if transposed:
        return F.conv_transpose2d(x, weight, stride=stride, padding=padding, output_padding=output_padding)
    return F.conv2d(x, weight, stride=stride, padding=padding)


def _scale(t: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """t (N, C, H, W) times scale (N, C) per channel."""
    return t if scale is None else t * scale[:, :, None, None]


def _is_identity(act: str, gain: float, clamp: float | None) -> bool:
    return act == "linear" and gain == 1 and clamp is None


def _bias_act_impl(impl: str) -> str:
    """The bias_act kernels that go with this op's backend."""
    return "triton" if impl == "triton" else "ext"


# ---- registered ops -----------------------------------------------------------------------------------------------

@custom_op("ganfast::modconv", mutates_args=())
def _modconv_op(x: torch.Tensor, weight: torch.Tensor, in_scale: torch.Tensor | None,
                out_scale: torch.Tensor | None, noise: torch.Tensor | None, bias: torch.Tensor | None, stride: int,
                padding: list[int], transposed: bool, output_padding: list[int], act: str, alpha: float,
                gain: float, clamp: float | None, need_raw: bool, impl: str) -> tuple[torch.Tensor, torch.Tensor]:
    geom = (stride, padding, transposed, output_padding)
    if impl == "triton":
        from ..triton import modulated_conv2d as triton_modconv
        if triton_modconv.supports(x, weight, *geom):
            return triton_modconv.modconv(x, weight, in_scale, out_scale, noise, bias, *geom, ACTIVATIONS[act].code,
                                          alpha, gain, clamp, need_raw)
    raw = _conv(_scale(x, in_scale), weight, *geom).contiguous()
    z = _scale(raw, out_scale)
    if noise is not None:
        z = z + noise
    if bias is not None or not _is_identity(act, gain, clamp):
        z = torch.ops.ganfast.bias_act(z, bias, 1, act, alpha, gain, clamp, _bias_act_impl(impl))
    elif z is raw and need_raw:
        z = raw.clone()  # two outputs may not share storage
    return z.contiguous(), raw if need_raw else raw.new_empty(0)


@_modconv_op.register_fake
def _(x, weight, in_scale, out_scale, noise, bias, stride, padding, transposed, output_padding, act, alpha, gain,
      clamp, need_raw, impl):
    channels = weight.shape[1] if transposed else weight.shape[0]
    shape = (x.shape[0], channels, *_out_hw(x.shape[2:], weight, stride, padding, transposed, output_padding))
    return x.new_empty(shape), x.new_empty(shape if need_raw else (0,))


@custom_op("ganfast::modconv_weight_grad", mutates_args=())
def _modconv_weight_grad_op(x: torch.Tensor, x_scale: torch.Tensor | None, g: torch.Tensor,
                            g_scale: torch.Tensor | None, weight_shape: list[int], stride: int, padding: list[int],
                            transposed: bool, output_padding: list[int], impl: str) -> torch.Tensor:
    if impl == "triton":
        from ..triton import modulated_conv2d as triton_modconv
        if triton_modconv.weight_grad_supports(x, g, weight_shape):
            return triton_modconv.weight_grad(x, x_scale, g, g_scale, weight_shape, stride, padding, transposed)
    xs, gs = _scale(x, x_scale), _scale(g, g_scale)
    if transposed:  # raw = conv_transpose(x, w) is the adjoint of conv(·, w): the roles of x and g swap
        xs, gs = gs, xs
    return torch.nn.grad.conv2d_weight(xs, weight_shape, gs, stride=stride, padding=padding)


@_modconv_weight_grad_op.register_fake
def _(x, x_scale, g, g_scale, weight_shape, stride, padding, transposed, output_padding, impl):
    return x.new_empty(weight_shape)


@custom_op("ganfast::modconv_demod", mutates_args=())
def _modconv_demod_op(weight: torch.Tensor, styles: torch.Tensor, impl: str) -> torch.Tensor:
    w2 = weight.square().sum(dim=(2, 3))
    if impl == "triton":
        from ..triton import modulated_conv2d as triton_modconv
        return triton_modconv.demod(styles, w2)
    return (styles.square() @ w2.t() + DEMOD_EPS).rsqrt()


@_modconv_demod_op.register_fake
def _(weight, styles, impl):
    return styles.new_empty(styles.shape[0], weight.shape[0])


# ---- autograd ---------------------------------------------------------------------------------------------------

def _modconv(x, weight, in_scale, out_scale, geom, need_raw, impl, noise=None, bias=None, act="linear", alpha=0.0,
             gain=1.0, clamp=None):
    return torch.ops.ganfast.modconv(x, weight, in_scale, out_scale, noise, bias, *geom, act, alpha, gain, clamp,
                                     need_raw, impl)


def _setup_modconv(ctx, inputs, output):
    x, weight, in_scale, out_scale, noise, bias, *geom_epi, need_raw, impl = inputs
    ctx.geom, ctx.epilogue, ctx.impl = tuple(geom_epi[:4]), tuple(geom_epi[4:]), impl
    ctx.set_materialize_grads(False)  # raw's gradient is None unless a double backward used raw
    ctx.save_for_backward(x, weight, in_scale, out_scale, noise, bias, *output)


def _backward_modconv(ctx, gy, graw):
    x, weight, in_scale, out_scale, noise, bias, y, raw = ctx.saved_tensors
    act, alpha, gain, clamp = ctx.epilogue
    geom, impl = ctx.geom, ctx.impl
    needs = ctx.needs_input_grad
    identity = _is_identity(act, gain, clamp)
    graw = graw if graw is not None and graw.shape == y.shape else None  # (raw is empty unless the forward kept it)
    d_in = d_w = d_in_scale = d_out_scale = d_noise = d_bias = None
    dz = None  # the gradient at the epilogue's input; None (not zeros) when y got none, so nothing looks used
    if gy is not None:
        if raw.numel() != y.numel() and (out_scale is not None and needs[3] or not identity):
            raw = _modconv(x, weight, in_scale, None, geom, False, impl)[0]  # not kept in the forward: recompute
        if identity:
            dz = gy
        elif act == "linear" and clamp is None:  # depends on gy alone: the conv's inputs stay out of its graph
            dz = gy * gain
        else:
            z = _scale(raw, out_scale)
            z = z if noise is None else z + noise
            dz = torch.ops.ganfast.bias_act_grad(gy, z, bias, y, 1, act, alpha, gain, clamp, _bias_act_impl(impl))
        if bias is not None and needs[5]:
            d_bias = dz.sum(dim=(0, 2, 3))
        if noise is not None and needs[4]:
            d_noise = dz.sum_to_size(noise.shape)
        if out_scale is not None and needs[3]:
            d_out_scale = (dz * raw).sum(dim=(2, 3))
    # the gradient reaching raw: dz · out_scale (folded into the next ops as a scale), plus raw's own gradient
    if dz is None and graw is None:
        return (None,) * 16
    if graw is None:
        g, g_scale = dz, out_scale
    else:
        g, g_scale = graw if dz is None else _scale(dz, out_scale) + graw, None
    if needs[0] or (in_scale is not None and needs[2]):
        adjoint = _adjoint(x.shape[2:], weight, *geom)
        d_in, u = _modconv(g, weight, g_scale, in_scale, adjoint, in_scale is not None and needs[2], impl)
        if in_scale is not None and needs[2]:
            d_in_scale = (u * x).sum(dim=(2, 3))
    if needs[1]:
        d_w = torch.ops.ganfast.modconv_weight_grad(x, in_scale, g, g_scale, list(weight.shape), *geom, impl)
    return (d_in if needs[0] else None, d_w, d_in_scale, d_out_scale, d_noise, d_bias,
            None, None, None, None, None, None, None, None, None, None)


def _setup_weight_grad(ctx, inputs, output):
    x, x_scale, g, g_scale, weight_shape, *geom, impl = inputs
    ctx.geom, ctx.impl = tuple(geom), impl
    ctx.set_materialize_grads(False)  # no gradient in, None out
    ctx.save_for_backward(x, x_scale, g, g_scale)


def _backward_weight_grad(ctx, gdw):
    """dw = W(x·x_scale, g·g_scale) is bilinear: ⟨gdw, dw⟩ = ⟨g·g_scale, conv(x·x_scale, gdw)⟩, so the
    gradient for g is a forward convolution with gdw and the one for x the adjoint convolution."""
    x, x_scale, g, g_scale = ctx.saved_tensors
    geom, impl, needs = ctx.geom, ctx.impl, ctx.needs_input_grad
    dx = dxs = dg = dgs = None
    if gdw is None:
        return (None,) * 10
    if needs[0] or (x_scale is not None and needs[1]):
        adjoint = _adjoint(x.shape[2:], gdw, *geom)
        dx, u = _modconv(g, gdw, g_scale, x_scale, adjoint, x_scale is not None and needs[1], impl)
        if x_scale is not None and needs[1]:
            dxs = (u * x).sum(dim=(2, 3))
    if needs[2] or (g_scale is not None and needs[3]):
        dg, v = _modconv(x, gdw, x_scale, g_scale, geom, g_scale is not None and needs[3], impl)
        if g_scale is not None and needs[3]:
            dgs = (v * g).sum(dim=(2, 3))
    return (dx if needs[0] else None, dxs, dg if needs[2] else None, dgs, None, None, None, None, None, None)


def _setup_demod(ctx, inputs, output):
    weight, styles, impl = inputs
    ctx.set_materialize_grads(False)  # no gradient in, None out
    ctx.save_for_backward(weight, styles, output)


def _backward_demod(ctx, gd):
    """With t = gd · d³: ∂/∂s[n,i] = −s[n,i] Σ_o t[n,o] W2[o,i] and
    ∂/∂w[o,i,k] = −w[o,i,k] Σ_n t[n,o] s[n,i]²."""
    weight, styles, d = ctx.saved_tensors
    d_weight = d_styles = None
    if gd is None:
        return d_weight, d_styles, None
    t = gd * d.pow(3)
    if ctx.needs_input_grad[0]:
        d_weight = -weight * (t.t() @ styles.square())[:, :, None, None]
    if ctx.needs_input_grad[1]:
        d_styles = -styles * (t @ weight.square().sum(dim=(2, 3)))
    return d_weight, d_styles, None


register_autograd("ganfast::modconv", _backward_modconv, setup_context=_setup_modconv)
register_autograd("ganfast::modconv_weight_grad", _backward_weight_grad,
                  setup_context=_setup_weight_grad)
register_autograd("ganfast::modconv_demod", _backward_demod, setup_context=_setup_demod)


# ---- public API -------------------------------------------------------------------------------------------------

def _check_inputs(x, weight, styles, noise, bias, up, down, resample_filter):
    check_tensor("x", x, ndim=4)
    check_tensor("weight", weight, ndim=4)
    check_tensor("styles", styles, ndim=2)
    check_same_device(x, weight=weight, styles=styles, noise=noise, resample_filter=resample_filter)
    batch, channels = x.shape[:2]
    if weight.shape[1] != channels:
        raise ValueError(f"weight has {weight.shape[1]} input channels but x has {channels}")
    if styles.shape != (batch, channels):
        raise ValueError(f"styles must have shape (N, I) = {(batch, channels)}, got {tuple(styles.shape)}")
    if bias is not None:
        check_tensor("bias", bias, ndim=1)
        if bias.shape[0] != weight.shape[0] or bias.device != x.device:
            raise ValueError(f"bias must have {weight.shape[0]} entries on {x.device}, got {tuple(bias.shape)} "
                             f"on {bias.device}")
    if noise is not None:
        check_tensor("noise", noise)
    check_factor(up, "up")
    check_factor(down, "down")
    if resample_filter is not None:
        check_tensor("resample_filter", resample_filter)
        if resample_filter.ndim not in (1, 2):
            raise ValueError(f"resample_filter must be 1-D or 2-D, got shape {tuple(resample_filter.shape)}")


def _check_noise(noise, out_shape):
    if noise is None:
        return None
    try:
        fits = noise.ndim <= 4 and torch.broadcast_shapes(noise.shape, out_shape) == out_shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"noise of shape {tuple(noise.shape)} must broadcast to the output {tuple(out_shape)}")
    return noise


def _modulated(x, weight, styles, noise, bias, up, down, padding, resample_filter, demodulate, flip_weight,
               fused_modconv, act, alpha, gain, clamp, impl):
    _check_inputs(x, weight, styles, noise, bias, up, down, resample_filter)
    act, alpha, gain, clamp = check_epilogue(act, alpha, gain, clamp)
    x = autocast_input(x)  # a convolution: under autocast it computes in autocast's dtype (ganfast.ops._common)
    px0, px1, py0, py1 = resample_padding(resample_filter, up, down, padding)
    chosen = _OP.resolve(impl, x.device, x.dtype, "up" if up > 1 else None)
    epilogue = bias is not None or not _is_identity(act, gain, clamp)
    if chosen == "ref":
        with no_autocast(x):
            y = modulated_conv2d_ref(x, weight, styles, None, up, down, padding, resample_filter, demodulate,
                                     flip_weight, fused_modconv)
            _check_noise(noise, y.shape)
            y = y if noise is None else y + noise.to(y.dtype)
            return bias_act_ref(y, bias.to(y.dtype) if bias is not None else None, 1, act, alpha, gain, clamp) \
                if epilogue else y

    if x.dtype == torch.float16 and demodulate:
        weight, styles = prenormalize(weight, styles)
    if weight.dtype != styles.dtype:
        common = torch.promote_types(weight.dtype, styles.dtype)
        weight, styles = weight.to(common), styles.to(common)
    dcoefs = torch.ops.ganfast.modconv_demod(weight, styles, chosen).to(x.dtype) if demodulate else None
    w, s = weight.to(x.dtype), styles.to(x.dtype)
    bias = None if bias is None else bias.to(x.dtype).contiguous()  # the kernels index b[o] directly
    noise = None if noise is None else noise.to(x.dtype)
    need_raw = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                               for t in (x, weight, styles, noise, bias))
    kh, kw = weight.shape[2:]
    if up == 1:  # filter first when downsampling, then one (strided) convolution with the epilogue fused
        if down > 1:
            x, pad = upfirdn2d(x, resample_filter, padding=[px0, px1, py0, py1], impl=chosen), [0, 0]
        elif px0 == px1 >= 0 and py0 == py1 >= 0:
            pad = [py0, px0]
        else:
            x, pad = F.pad(x, [px0, px1, py0, py1]), [0, 0]
        geom = (down, pad, False, [0, 0])
        out_shape = (x.shape[0], w.shape[0], *_out_hw(x.shape[2:], w, *geom))
        if min(out_shape[2:]) < 1:  # torch's conv raises here, the Triton kernel would return an empty tensor
            raise ValueError(f"modulated_conv2d output would be {out_shape[2]}x{out_shape[3]} (H x W) for input "
                             f"{x.shape[2]}x{x.shape[3]}, kernel {kh}x{kw}, down={down}, padding={padding}: "
                             f"it must be at least 1x1")
        noise = _check_noise(noise, out_shape)
        y, _ = _modconv(x, oriented_weight(w, flip_weight), s, dcoefs, geom, need_raw, chosen, noise, bias, act,
                        alpha, gain, clamp)
        return y
    # up: the transposed convolution is the full correlation of the zero-upsampled x with the oriented weight;
    # cropping/padding it and filtering gives conv2d_resample's result (see the module docstring).
    wt = (w.flip([2, 3]) if flip_weight else w).transpose(0, 1)
    t, _ = _modconv(x, wt, s, dcoefs, (up, [0, 0], True, [0, 0]), need_raw, chosen)
    y = upfirdn2d(t, resample_filter, padding=[px0 - kw + 1, px1 + up - kw, py0 - kh + 1, py1 + up - kh],
                  gain=up ** 2, impl=chosen)
    if down > 1:
        y = upfirdn2d(y, resample_filter, down=down, impl=chosen)
    noise = _check_noise(noise, y.shape)
    y = y if noise is None else y + noise
    if epilogue:
        y = bias_act(y, bias, 1, act, alpha, gain, clamp, impl=_bias_act_impl(chosen))
    return y


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, down: int = 1, padding: IntOrPair = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True,
                     impl: str | None = None) -> torch.Tensor:
    """StyleGAN2-ADA's ``modulated_conv2d``: same arguments, same numbers (see the module docstring).

    Args:
        x: (N, I, H, W). weight: (O, I, kh, kw). styles: (N, I). noise: broadcastable to the output, added after
            demodulation. up, down, padding, resample_filter, flip_weight: as ``conv2d_resample``.
        demodulate: normalise each output channel of the modulated weights (StyleGAN2's demodulation).
        fused_modconv: accepted for compatibility; both of StyleGAN2's routes give the same result, and only
            impl="ref" (the reference) follows the flag.
        impl: None/"auto"/"cuda", "ref", "triton" or "ext" (torch's convolutions around ganfast's epilogue).
    Returns:
        (N, O, H', W') in x's dtype (under autocast: autocast's, as torch's conv2d; weight, styles and noise are
        cast to it where used and get their gradients in their own dtypes). Differentiable twice in x, weight,
        styles and noise.
    """
    return _modulated(x, weight, styles, noise, None, up, down, padding, resample_filter, demodulate, flip_weight,
                      fused_modconv, "linear", None, None, None, impl)


def modulated_conv2d_bias_act(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                              noise: torch.Tensor | None = None, bias: torch.Tensor | None = None, up: int = 1,
                              down: int = 1, padding: IntOrPair = 0, resample_filter: torch.Tensor | None = None,
                              demodulate: bool = True, flip_weight: bool = True, act: str = "linear",
                              alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
                              impl: str | None = None) -> torch.Tensor:
    """The StyleGAN2 synthesis layer's core in one op:
    ``bias_act(modulated_conv2d(x, weight, styles, noise, ...), bias, act=act, alpha=alpha, gain=gain, clamp=clamp)``.

    For up=1 the noise, bias, activation, gain and clamp run in the convolution's epilogue (one pass over the
    activations with impl="triton"); for up>1 they follow the FIR filter. Arguments as ``modulated_conv2d`` and
    ``bias_act`` (bias: (O,); act: one of ``ACTIVATIONS``; gain None: the activation's default gain).
    """
    return _modulated(x, weight, styles, noise, bias, up, down, padding, resample_filter, demodulate, flip_weight,
                      True, act, alpha, gain, clamp, impl)
