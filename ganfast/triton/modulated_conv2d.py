"""Triton kernels for the modulated convolution (StyleGAN2 synthesis layer).

``_modconv_fwd_kernel`` is an implicit-GEMM convolution over one sample per program column:
    raw[n, o, p] = Σ_{i,kh,kw} w[o, i, kh, kw] · s[n, i] · x[n, i, p·stride − pad + (kh, kw)]
with the style s folded into the weight tile as it is loaded (so x is read once, unscaled), and the epilogue
    y = clamp(act(raw · d[n, o] + noise + b[o]) · gain)
applied to the accumulator before the single store (``raw`` is stored too when the backward needs it).
GEMM view: M = output pixels of sample n, N = output channels, K = I·kh·kw (weight passed K-major).
``_modconv_demod_kernel``: d[n, o] = rsqrt(Σ_i s[n, i]² · W2[o, i] + 1e-8), W2[o, i] = Σ_k w[o, i, k]².
The oracle is ganfast/reference/modulated_conv2d.py (through ganfast.ops.modulated_conv2d).
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ..reference.modulated_conv2d import DEMOD_EPS
from ._common import MAX_GRID_YZ, compute_type, on_device, split_f64
from .bias_act import act_gain_clamp


@triton.jit
def _modconv_fwd_kernel(y_ptr, raw_ptr, x_ptr, w_ptr, s_ptr, d_ptr, noise_ptr, b_ptr,
                        C_in, H, W, C_out, H_out, W_out, stride, pad_h, pad_w,
                        noise_sn, noise_sc, noise_sh, noise_sw,
                        alpha_hi, alpha_lo, gain_hi, gain_lo, clamp_hi, clamp_lo,
                        KH: tl.constexpr, KW: tl.constexpr, HAS_S: tl.constexpr, HAS_D: tl.constexpr,
                        HAS_NOISE: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr,
                        NEED_RAW: tl.constexpr, ACC: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[n, o, p] = clamp(act(d[n,o] · Σ_k (w[o,k] · s[n,i(k)]) · x[n, i(k), p + offset(k)] + noise + b[o])
    · gain); raw = the sum itself."""
    tiles_m = tl.cdiv(H_out * W_out, BLOCK_M)  # grid: (pixel tiles × channel tiles, 1, samples)
    pid_m, pid_n, n = tl.program_id(0) % tiles_m, tl.program_id(0) // tiles_m, tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < H_out * W_out, offs_n < C_out
    h0 = (offs_m // W_out) * stride - pad_h
    w0 = (offs_m % W_out) * stride - pad_w
    K = C_in * KH * KW
    x_base = x_ptr + n * C_in * H * W
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        ci, kh, kw = (offs_k // (KH * KW)).to(tl.int64), (offs_k // KW) % KH, offs_k % KW  # int64: C·H·W may pass 2**31
        hi = h0[:, None] + kh[None, :]
        wi = w0[:, None] + kw[None, :]
        inside = mask_m[:, None] & mask_k[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        a = tl.load(x_base + ci[None, :] * (H * W) + hi * W + wi, mask=inside, other=0)
        b = tl.load(w_ptr + offs_k[:, None] * C_out + offs_n[None, :], mask=mask_k[:, None] & mask_n[None, :],
                    other=0)
        if HAS_S:  # modulation folded into the (K × N) weight tile: the style of input channel i scales row k
            s = tl.load(s_ptr + n * C_in + ci, mask=mask_k, other=0)
            b = (compute_type(b) * compute_type(s)[:, None]).to(a.dtype)
        acc = tl.dot(a, b.to(a.dtype), acc, input_precision=INPUT_PRECISION, out_dtype=ACC)
    offs_out = n * C_out * H_out * W_out + offs_n[None, :].to(tl.int64) * (H_out * W_out) + offs_m[:, None]
    mask = mask_m[:, None] & mask_n[None, :]
    if NEED_RAW:
        tl.store(raw_ptr + offs_out, acc.to(raw_ptr.dtype.element_ty), mask=mask)
    z = acc
    if HAS_D:
        z = z * compute_type(tl.load(d_ptr + n * C_out + offs_n, mask=mask_n, other=0))[None, :]
    if HAS_NOISE:  # int64 offsets: noise is any view of y's shape (a sample of it may pass 2**31 elements)
        ho, wo, o = (offs_m // W_out).to(tl.int64), (offs_m % W_out).to(tl.int64), offs_n.to(tl.int64)
        z += compute_type(tl.load(noise_ptr + n * noise_sn + o[None, :] * noise_sc + ho[:, None] * noise_sh
                                  + wo[:, None] * noise_sw, mask=mask, other=0))
    if HAS_B:
        z += compute_type(tl.load(b_ptr + offs_n, mask=mask_n, other=0))[None, :]
    y = act_gain_clamp(z, alpha_hi, alpha_lo, gain_hi, gain_lo, clamp_hi, clamp_lo, ACT, HAS_CLAMP)
    tl.store(y_ptr + offs_out, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _modconv_demod_kernel(d_ptr, s_ptr, w2_ptr, C_in, C_out, eps, ACC: tl.constexpr, BLOCK_O: tl.constexpr,
                          BLOCK_I: tl.constexpr):
    """d[n, o] = rsqrt(Σ_i s[n, i]² · W2[o, i] + eps)."""
    tiles_o = tl.cdiv(C_out, BLOCK_O)  # grid: (samples × channel tiles,)
    n = (tl.program_id(0) // tiles_o).to(tl.int64)
    offs_o = (tl.program_id(0) % tiles_o).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)  # int64: W2 may be large
    mask_o = offs_o < C_out
    acc = tl.zeros([BLOCK_O], dtype=ACC)
    for i0 in range(0, C_in, BLOCK_I):
        offs_i = i0 + tl.arange(0, BLOCK_I)
        mask_i = offs_i < C_in
        s = tl.load(s_ptr + n * C_in + offs_i, mask=mask_i, other=0).to(ACC)
        w2 = tl.load(w2_ptr + offs_o[:, None] * C_in + offs_i[None, :], mask=mask_o[:, None] & mask_i[None, :],
                     other=0).to(ACC)
        acc += tl.sum(w2 * (s * s)[None, :], axis=1)
    tl.store(d_ptr + n * C_out + offs_o, (1 / tl.sqrt(acc + eps)).to(d_ptr.dtype.element_ty), mask=mask_o)


@triton.jit
def _modconv_wgrad_kernel(dw_ptr, x_ptr, xs_ptr, g_ptr, gs_ptr, batch, split, C_in, H, W, C_out, H_out, W_out,
                          stride, pad_h, pad_w, KH: tl.constexpr, KW: tl.constexpr, HAS_XS: tl.constexpr,
                          HAS_GS: tl.constexpr, ACC: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                          BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr):
    """dw[z, o, k] = Σ_{n ≡ z mod split} Σ_p (g[n, o, p] · gs[n, o]) · (x[n, i(k), p·stride − pad + offset(k)] ·
    xs[n, i(k)]): GEMM with M = output channels, N = I·kh·kw, reduced over output pixels and the samples of
    slice z (grid axis 1; the host sums the ``split`` slices, so few-channel layers still fill the GPU)."""
    K = C_in * KH * KW
    tiles_o = tl.cdiv(C_out, BLOCK_O)  # grid: (channel tiles × K tiles, slices)
    offs_o = (tl.program_id(0) % tiles_o) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_k = (tl.program_id(0) // tiles_o) * BLOCK_K + tl.arange(0, BLOCK_K)
    z = tl.program_id(1)
    mask_o, mask_k = offs_o < C_out, offs_k < K
    ci, kh, kw = (offs_k // (KH * KW)).to(tl.int64), (offs_k // KW) % KH, offs_k % KW
    acc = tl.zeros([BLOCK_O, BLOCK_K], dtype=ACC)
    zero64 = z.to(tl.int64) * 0  # the sample index in int64 (plane offsets can pass 2**31)
    for n in range(z, batch, split):
        n64 = zero64 + n
        g_base = g_ptr + n64 * C_out * H_out * W_out
        x_base = x_ptr + n64 * C_in * H * W
        if HAS_GS:
            gs = compute_type(tl.load(gs_ptr + n64 * C_out + offs_o, mask=mask_o, other=0))
        if HAS_XS:
            xs = compute_type(tl.load(xs_ptr + n64 * C_in + ci, mask=mask_k, other=0))
        for p0 in range(0, H_out * W_out, BLOCK_P):
            offs_p = p0 + tl.arange(0, BLOCK_P)
            mask_p = offs_p < H_out * W_out
            g = tl.load(g_base + offs_o[:, None].to(tl.int64) * (H_out * W_out) + offs_p[None, :],
                        mask=mask_o[:, None] & mask_p[None, :], other=0)
            hi = ((offs_p // W_out) * stride - pad_h)[:, None] + kh[None, :]
            wi = ((offs_p % W_out) * stride - pad_w)[:, None] + kw[None, :]
            inside = mask_p[:, None] & mask_k[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
            a = tl.load(x_base + ci[None, :] * (H * W) + hi * W + wi, mask=inside, other=0)
            if HAS_GS:
                g = (compute_type(g) * gs[:, None]).to(a.dtype)
            if HAS_XS:
                a = (compute_type(a) * xs[None, :]).to(g.dtype)
            acc = tl.dot(g.to(a.dtype), a, acc, input_precision=INPUT_PRECISION, out_dtype=ACC)
    tl.store(dw_ptr + z.to(tl.int64) * C_out * K + offs_o[:, None].to(tl.int64) * K + offs_k[None, :],
             acc.to(dw_ptr.dtype.element_ty), mask=mask_o[:, None] & mask_k[None, :])


def supports(x: torch.Tensor, weight: torch.Tensor, stride: int, padding, transposed: bool, output_padding) -> bool:
    """The kernel runs direct convolutions of any stride, and transposed ones of stride 1 (the input gradient
    of a stride-1 convolution) as direct convolutions with the flipped, transposed weight; the batch rides on
    grid axis 2, so at most 65535 samples per call, and its 32-bit index products need planes and a weight of
    fewer than 2**31 elements (others take the torch-convolution route)."""
    if transposed and stride != 1:
        return False
    kh, kw = weight.shape[2:]
    pad = [kh - 1 - padding[0], kw - 1 - padding[1]] if transposed else padding
    h_out, w_out = _output_hw(x.shape[2], x.shape[3], kh, kw, stride, pad)
    return x.shape[0] <= MAX_GRID_YZ and _fits_int32(x.shape[2] * x.shape[3], h_out * w_out, weight.numel())


def weight_grad_supports(x: torch.Tensor, g: torch.Tensor, weight_shape) -> bool:
    """Whether the weight-gradient kernel's 32-bit index products (planes of x and g, K = I·kh·kw) fit."""
    return _fits_int32(x.shape[2] * x.shape[3], g.shape[2] * g.shape[3], math.prod(weight_shape))


INT32_LIMIT = 2**31  # the kernels multiply plane sizes, pixel and weight indices in int32 (offsets are int64)


def _fits_int32(*counts: int) -> bool:
    return max(counts) < INT32_LIMIT


def _output_hw(h: int, w: int, kh: int, kw: int, stride: int, padding) -> tuple[int, int]:
    """The output size of the direct convolution the forward kernel runs."""
    return (h + 2 * padding[0] - kh) // stride + 1, (w + 2 * padding[1] - kw) // stride + 1


def _accumulator(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _input_precision(x: torch.Tensor) -> str | None:
    """fp32 GEMMs follow torch's cuDNN setting (TF32 by default, as torch's own convolutions do)."""
    if x.dtype != torch.float32:
        return None
    return "tf32" if x.is_cuda and torch.backends.cudnn.allow_tf32 else "ieee"


# Tile candidates for GPUs, chosen by Triton's autotuner per shape class at first use. Not measured here (no
# GPU was available when this was written); the interpreter (CPU tests) runs one small tile instead.
_FWD_TILES = [(128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4),
              (128, 128, 64, 8, 3), (64, 64, 64, 4, 3),
              (16, 128, 64, 4, 3), (32, 64, 32, 4, 3)]  # small M: 4×4 and 8×8 layers have 16 and 64 pixels
_WGRAD_TILES = [(64, 64, 32, 4, 3), (128, 64, 32, 8, 3), (64, 128, 32, 8, 3), (128, 128, 32, 8, 3),
                (64, 64, 64, 4, 3)]
_INTERPRETER_TILE = (16, 16, 16)


@functools.lru_cache(maxsize=None)
def _tuned(kernel_name: str):
    """The kernel wrapped in an autotuner over its GPU tiles (built on first GPU use only)."""
    kernel, tiles, names, key = {
        "fwd": (_modconv_fwd_kernel, _FWD_TILES, ("BLOCK_M", "BLOCK_N", "BLOCK_K"),
                ["C_in", "C_out", "H_out", "W_out", "stride", "KH", "KW"]),
        "wgrad": (_modconv_wgrad_kernel, _WGRAD_TILES, ("BLOCK_O", "BLOCK_K", "BLOCK_P"),
                  ["batch", "C_in", "C_out", "H_out", "W_out", "stride", "KH", "KW"]),
    }[kernel_name]
    configs = [triton.Config(dict(zip(names, tile[:3])), num_warps=tile[3], num_stages=tile[4]) for tile in tiles]
    return triton.autotune(configs, key=key)(kernel)


def _launch(kernel_name: str, x: torch.Tensor, grid, *args, **kwargs) -> None:
    """Runs a kernel: autotuned on a GPU, with the small interpreter tile on CPU. ``grid(meta)`` -> grid."""
    with on_device(x):
        if x.is_cuda:
            _tuned(kernel_name)[grid](*args, **kwargs)
        else:
            kernel = _modconv_fwd_kernel if kernel_name == "fwd" else _modconv_wgrad_kernel
            names = ("BLOCK_M", "BLOCK_N", "BLOCK_K") if kernel_name == "fwd" else ("BLOCK_O", "BLOCK_K", "BLOCK_P")
            tile = dict(zip(names, _INTERPRETER_TILE))
            kernel[grid(tile)](*args, **kwargs, **tile)


def modconv(x, weight, in_scale, out_scale, noise, bias, stride, padding, transposed, output_padding, act_code,
            alpha, gain, clamp, need_raw) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, raw) of ganfast::modconv with the fused kernel (see ``supports``)."""
    if transposed:  # stride 1: the adjoint of conv(·, w, pad p) is conv(·, flip(w)ᵀ, pad k − 1 − p)
        weight = weight.flip([2, 3]).transpose(0, 1)
        padding = [weight.shape[2] - 1 - padding[0], weight.shape[3] - 1 - padding[1]]
    x = x.contiguous()
    batch, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    weight = weight.reshape(c_out, -1).t().contiguous()  # (K, O): the weight tile's rows load coalesced
    h_out, w_out = _output_hw(h, w, kh, kw, stride, padding)
    y = x.new_empty(batch, c_out, h_out, w_out)
    raw = torch.empty_like(y) if need_raw else x.new_empty(0)
    if y.numel() == 0:
        return y, raw
    noise_strides = (0, 0, 0, 0)
    if noise is not None:
        noise = noise.expand(y.shape)
        noise_strides = noise.stride()
    scalars = (*split_f64(alpha), *split_f64(gain), *split_f64(0.0 if clamp is None else clamp))
    _launch("fwd", x, lambda meta: (triton.cdiv(h_out * w_out, meta["BLOCK_M"]) * triton.cdiv(c_out, meta["BLOCK_N"]),
                                    1, batch),
            y, raw if need_raw else y, x, weight, x if in_scale is None else in_scale.contiguous(),
            x if out_scale is None else out_scale.contiguous(), x if noise is None else noise,
            x if bias is None else bias.contiguous(), c_in, h, w, c_out, h_out, w_out, stride, padding[0], padding[1],
            *noise_strides, *scalars, KH=kh, KW=kw, HAS_S=in_scale is not None, HAS_D=out_scale is not None,
            HAS_NOISE=noise is not None, HAS_B=bias is not None, ACT=act_code, HAS_CLAMP=clamp is not None,
            NEED_RAW=need_raw, ACC=_accumulator(x.dtype), INPUT_PRECISION=_input_precision(x))
    return y, raw


def weight_grad(x, x_scale, g, g_scale, weight_shape, stride, padding, transposed) -> torch.Tensor:
    """ganfast::modconv_weight_grad with the Triton kernel, any geometry: for a transposed convolution, x and g
    swap roles (its weight gradient is that of its adjoint, the direct convolution from g's space to x's,
    whose weight is the same (in, out, kh, kw) tensor)."""
    if transposed:
        x, x_scale, g, g_scale = g, g_scale, x, x_scale
    x, g = x.contiguous(), g.contiguous()
    batch, c_in, h, w = x.shape
    c_out, h_out, w_out = g.shape[1:]
    kh, kw = weight_shape[2:]
    k = c_in * kh * kw
    if math.prod(weight_shape) == 0 or batch * h_out * w_out == 0:
        return x.new_zeros(weight_shape)
    split = _wgrad_split(x, batch, c_out, k)
    # split > 1: per-slice partial sums in the accumulator dtype, summed here (deterministic, no atomics)
    dw = x.new_empty(weight_shape) if split == 1 else x.new_empty((split, *weight_shape), dtype=_torch_acc(x.dtype))
    _launch("wgrad", x, lambda meta: (triton.cdiv(c_out, meta["BLOCK_O"]) * triton.cdiv(k, meta["BLOCK_K"]), split),
            dw, x, x if x_scale is None else x_scale.contiguous(), g, g if g_scale is None else g_scale.contiguous(),
            batch, split, c_in, h, w, c_out, h_out, w_out, stride, padding[0], padding[1], KH=kh, KW=kw,
            HAS_XS=x_scale is not None, HAS_GS=g_scale is not None, ACC=_accumulator(x.dtype),
            INPUT_PRECISION=_input_precision(x))
    return dw if split == 1 else dw.sum(0).to(x.dtype)


def _wgrad_split(x: torch.Tensor, batch: int, c_out: int, k: int) -> int:
    """How many slices the weight gradient's batch reduction is split into: enough programs for about two per SM
    (estimated with 64×64 tiles), at most one slice per sample. Under the interpreter: 2 when the batch allows
    (so that the CPU tests cover the split)."""
    if not x.is_cuda:
        return min(batch, 2)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    tiles = triton.cdiv(c_out, 64) * triton.cdiv(k, 64)
    return max(1, min(batch, triton.cdiv(2 * sms, tiles)))


def _torch_acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def demod(styles: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """d (N, O) from styles (N, I) and W2 (O, I)."""
    styles, w2 = styles.contiguous(), w2.contiguous()
    (batch, c_in), c_out = styles.shape, w2.shape[0]
    d = styles.new_empty(batch, c_out)
    if d.numel() == 0:
        return d
    block_o = 32 if styles.is_cuda else 16
    with on_device(styles):
        _modconv_demod_kernel[(batch * triton.cdiv(c_out, block_o),)](
            d, styles, w2, c_in, c_out, DEMOD_EPS, ACC=_accumulator(styles.dtype), BLOCK_O=block_o,
            BLOCK_I=128 if styles.is_cuda else 16)
    return d
