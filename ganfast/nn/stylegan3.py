"""StyleGAN3 (alias-free) building blocks on ganfast ops: the Kaiser/jinc low-pass filter design, the layer
schedule (cutoffs, stopbands, sampling rates, sizes, channels), the Fourier-feature ``SynthesisInput`` and the
``AliasFreeSynthesisLayer`` (modulated conv, then ``filtered_lrelu``), after Karras et al., "Alias-Free Generative
Adversarial Networks" (2021), appendix, with the parameters, buffers and initialisation of NVlabs' StyleGAN3.

    layer = ganfast.nn.AliasFreeSynthesisLayer(w_dim=512, in_channels=512, out_channels=512, in_size=36,
                                              out_size=36, in_sampling_rate=16, out_sampling_rate=16,
                                              in_cutoff=2, out_cutoff=2.8, in_half_width=6, out_half_width=5.2)
    y = layer(x, w)                        # x: (N, 512, 36, 36), w: (N, 512) -> (N, 512, 36, 36)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..ops.filtered_lrelu import filtered_lrelu
from ..ops.modulated_conv2d import modulated_conv2d
from .stylegan import FullyConnectedLayer

__all__ = ["AliasFreeSynthesisLayer", "LayerSchedule", "SynthesisInput", "design_lowpass_filter", "kaiser_atten",
           "kaiser_beta", "kaiser_window", "layer_schedule"]


# ---- filter design ---------------------------------------------------------------------------------------------

def kaiser_atten(numtaps: int, width: float) -> float:
    """Stopband attenuation (dB) of a Kaiser-windowed FIR with ``numtaps`` taps and transition ``width``
    (normalised to Nyquist = 1), from Kaiser's formula A = 2.285·(numtaps − 1)·π·width + 7.95."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def kaiser_beta(atten: float) -> float:
    """Kaiser's β for a stopband attenuation of ``atten`` dB (Oppenheim & Schafer, eq. 7.75)."""
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def kaiser_window(numtaps: int, beta: float) -> torch.Tensor:
    """float64 (numtaps,): w[n] = I0(β·√(1 − (2n/(numtaps − 1) − 1)²)) / I0(β)."""
    if numtaps == 1:
        return torch.ones(1, dtype=torch.float64)
    t = torch.linspace(-1, 1, numtaps, dtype=torch.float64)
    return torch.special.i0(beta * (1 - t.square()).clamp(min=0).sqrt()) / torch.special.i0(
        torch.tensor(beta, dtype=torch.float64))


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """A low-pass FIR with unit DC gain, float32; None for ``numtaps`` = 1 (the identity).

    Separable (1-D, ``radial`` False): the windowed-sinc design of ``scipy.signal.firwin(numtaps, cutoff,
    width=width, fs=fs)``: h[n] = (2·cutoff/fs)·sinc(2·cutoff/fs·m)·w[n], m = n − (numtaps − 1)/2, with the Kaiser
    window w of the β that gives ``width`` (Hz) as transition band, normalised to Σh = 1.
    Radial (2-D, numtaps²): the jinc h(r) = J1(2π·cutoff·r)/(π·r), r the distance from the centre in samples/fs,
    times the outer product of that Kaiser window, normalised to Σh = 1 (StyleGAN3-R's downsampling filters).
    """
    if not isinstance(numtaps, int) or numtaps < 1:
        raise ValueError(f"numtaps must be an int >= 1, got {numtaps!r}")
    if numtaps == 1:
        return None
    if not 0 < cutoff < fs / 2:
        raise ValueError(f"cutoff must lie in (0, fs/2) = (0, {fs / 2:g}), got {cutoff!r}")
    nyquist = fs / 2
    window = kaiser_window(numtaps, kaiser_beta(kaiser_atten(numtaps, width / nyquist)))
    m = torch.arange(numtaps, dtype=torch.float64) - (numtaps - 1) / 2
    if not radial:
        band = cutoff / nyquist
        f = band * torch.sinc(band * m) * window
    else:
        x = m / fs
        r = torch.hypot(x[None, :], x[:, None])
        safe = torch.where(r > 0, r, torch.ones_like(r))
        f = torch.where(r > 0, torch.special.bessel_j1(2 * math.pi * cutoff * safe) / (math.pi * safe),
                        torch.full_like(r, cutoff))  # the limit at r = 0: J1(z) ~ z/2
        f = f * torch.outer(window, window)
    return (f / f.sum()).to(torch.float32)


# ---- layer schedule --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSchedule:
    """Per layer i = 0..num_layers (index 0 also describes the Fourier input): cutoff f_c, minimum stopband f_t,
    sampling rate s, transition half-width f_h, spatial size and channels."""
    cutoffs: tuple[float, ...]
    stopbands: tuple[float, ...]
    sampling_rates: tuple[int, ...]
    half_widths: tuple[float, ...]
    sizes: tuple[int, ...]
    channels: tuple[int, ...]


def layer_schedule(img_resolution: int, img_channels: int, channel_base: int, channel_max: int, num_layers: int,
                   num_critical: int = 2, first_cutoff: float = 2, first_stopband: float = 2 ** 2.1,
                   last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10) -> LayerSchedule:
    """The StyleGAN3 schedule (the paper's appendix; NVlabs' defaults): cutoffs and stopbands grow geometrically from
    (first_cutoff, first_stopband) to (img_resolution/2, img_resolution/2 · last_stopband_rel) over the first
    num_layers − num_critical layers and stay there (the last ``num_critical`` layers are critically sampled);
    s = the power of two ≥ 2·f_t, at most img_resolution; f_h = max(f_t, s/2) − f_c; size = s + 2·margin_size
    (the last two: img_resolution); channels = min(channel_base/2 / f_c, channel_max) (the last: img_channels)."""
    if num_layers <= num_critical:
        raise ValueError(f"num_layers must exceed num_critical = {num_critical}, got {num_layers}")
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return LayerSchedule(tuple(cutoffs.tolist()), tuple(stopbands.tolist()),
                         tuple(int(s) for s in sampling_rates), tuple(half_widths.tolist()),
                         tuple(int(s) for s in sizes), tuple(int(c) for c in channels))


# ---- layers ----------------------------------------------------------------------------------------------------

class SynthesisInput(torch.nn.Module):
    """Fourier features: ``channels`` sinusoids of frequencies drawn in a disc of radius ``bandwidth`` and
    uniform phases, sampled on a ``size``² grid at ``sampling_rate``, transformed per sample by the rotation and
    translation that ``affine(w)`` predicts and by the user's ``transform`` buffer (a 3×3 inverse transform of
    the image: identity by default, see :meth:`set_transform`), then mixed by a learned channels×channels matrix.

        x[n, c, y, x] = Σ_k W[c, k]/√C · a[n, k] · sin(2π (f[n, k] · p(x, y) + φ[n, k]))

    with p the pixel centres in units of 1/sampling_rate around the image centre, f and φ the transformed
    frequencies and phases, and a fading out frequencies the transform carries beyond the band (NVlabs' damping).
    """

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.w_dim, self.channels, self.size = w_dim, channels, int(size)
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = torch.nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnectedLayer(w_dim, 4)  # (cos, sin) of the rotation, translation: identity at start
        with torch.no_grad():
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    @torch.no_grad()
    def set_transform(self, rotate: float = 0.0, translate: tuple[float, float] = (0.0, 0.0)) -> None:
        """Rotates the generated image about its centre by ``rotate`` radians, from the x axis towards the y axis
        (rows run down, so clockwise as displayed), then translates it by ``translate`` = (x, y) in image widths
        (1/sampling_rate moves the features by one of their pixels). The ``transform`` buffer holds the inverse."""
        c, s = math.cos(rotate), math.sin(rotate)
        m = torch.tensor([[c, -s, translate[0]], [s, c, translate[1]], [0, 0, 1]], dtype=torch.float64)
        self.transform.copy_(torch.linalg.inv(m).to(self.transform.dtype))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """(N, channels, size, size) float32 features for w (N, w_dim)."""
        t = self.affine(w.float())
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        eye = torch.eye(3, device=w.device).expand(w.shape[0], 3, 3)
        rotation = eye.clone()  # inverse rotation of the image
        rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        translation = eye.clone()  # inverse translation of the image
        translation[:, 0, 2], translation[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = rotation @ translation @ self.transform  # rotate, then translate, then the user's transform
        phases = self.phases + (self.freqs @ transforms[:, :2, 2:]).squeeze(2)  # (N, C)
        freqs = self.freqs @ transforms[:, :2, :2]  # (N, C, 2)
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) /
                      (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        grid = (torch.arange(self.size, device=w.device, dtype=torch.float32) + 0.5 - self.size / 2) / \
            self.sampling_rate  # pixel centres
        angle = (grid[None, None, :, None] * freqs[:, None, None, :, 0] +
                 grid[None, :, None, None] * freqs[:, None, None, :, 1] + phases[:, None, None, :])  # (N, y, x, C)
        x = torch.sin(angle * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


class AliasFreeSynthesisLayer(torch.nn.Module):
    """StyleGAN3's synthesis layer: styles = affine(w); a modulated (demodulated, except for the toRGB layer)
    conv_kernel² convolution with full padding (conv_kernel − 1) of the input scaled by 1/√magnitude_ema; then
    ``filtered_lrelu``: bias, upsampling by ``up_factor`` with ``up_filter``, leaky ReLU (slope 0.2, gain √2;
    linear for toRGB), clamp to ±conv_clamp, ``down_filter`` and downsampling by ``down_factor``.

    The intermediate rate is max(in, out sampling rate) · lrelu_upsampling; the filters are
    ``design_lowpass_filter``s of filter_size · factor taps with the input's cutoff (up) and the output's cutoff
    (down; radial with ``use_radial_filters`` unless critically sampled). The padding places the samples as in
    the paper's symmetric interpretation (appendix C.3). In training mode (or with ``update_emas``) the layer
    tracks the mean square of its inputs: magnitude_ema ← lerp(mean(x²), magnitude_ema, magnitude_ema_beta).
    """

    def __init__(self, w_dim: int, in_channels: int, out_channels: int, in_size: int, out_size: int,
                 in_sampling_rate: int, out_sampling_rate: int, in_cutoff: float, out_cutoff: float,
                 in_half_width: float, out_half_width: float, is_torgb: bool = False,
                 is_critically_sampled: bool = False, use_fp16: bool = False, conv_kernel: int = 3,
                 filter_size: int = 6, lrelu_upsampling: int = 2, use_radial_filters: bool = False,
                 conv_clamp: float | None = 256, magnitude_ema_beta: float = 0.999, impl: str | None = None):
        super().__init__()
        self.w_dim, self.in_channels, self.out_channels = w_dim, in_channels, out_channels
        self.in_size, self.out_size = int(in_size), int(out_size)
        self.in_sampling_rate, self.out_sampling_rate = in_sampling_rate, out_sampling_rate
        self.is_torgb, self.is_critically_sampled, self.use_fp16 = is_torgb, is_critically_sampled, use_fp16
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp, self.magnitude_ema_beta, self.impl = conv_clamp, magnitude_ema_beta, impl
        tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.up_factor = _factor(tmp_sampling_rate, in_sampling_rate, "in_sampling_rate")
        self.down_factor = _factor(tmp_sampling_rate, out_sampling_rate, "out_sampling_rate")
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, self.conv_kernel, self.conv_kernel))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", design_lowpass_filter(up_taps, in_cutoff, in_half_width * 2,
                                                                tmp_sampling_rate))
        self.register_buffer("down_filter", design_lowpass_filter(down_taps, out_cutoff, out_half_width * 2,
                                                                  tmp_sampling_rate, radial=self.down_radial))
        # total padding = (size before downsampling) − (upsampled conv output) + (taps lost to the two filters)
        pad_total = (self.out_size - 1) * self.down_factor + 1 - \
            (self.in_size + self.conv_kernel - 1) * self.up_factor + up_taps + down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        self.padding = [pad_lo, pad_total - pad_lo, pad_lo, pad_total - pad_lo]
        self.gain, self.slope = (1.0, 1.0) if is_torgb else (math.sqrt(2), 0.2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", force_fp32: bool = False,
                update_emas: bool | None = None) -> torch.Tensor:
        """x (N, in_channels, in_size, in_size), w (N, w_dim) → (N, out_channels, out_size, out_size) in float16
        for ``use_fp16`` layers on CUDA (unless ``force_fp32``), else float32. ``noise_mode`` is accepted and
        ignored (StyleGAN3 has no noise inputs); ``update_emas`` None: in training mode."""
        expected = (self.in_channels, self.in_size, self.in_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        if self.training if update_emas is None else update_emas:
            magnitude = x.detach().float().square().mean()
            self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel ** 2))
        dtype = torch.float16 if self.use_fp16 and not force_fp32 and x.device.type == "cuda" else torch.float32
        # NVlabs pre-normalises weight and styles here; under demodulation that cancels (up to its 1e-8).
        x = x.to(dtype) * self.magnitude_ema.rsqrt().to(dtype)
        x = modulated_conv2d(x, self.weight, styles, padding=self.conv_kernel - 1, demodulate=not self.is_torgb,
                             impl=self.impl)
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias.to(x.dtype), up=self.up_factor,
                              down=self.down_factor, padding=self.padding, gain=self.gain, slope=self.slope,
                              clamp=self.conv_clamp, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, in_size={self.in_size}, "
                f"out_size={self.out_size}, up={self.up_factor}, down={self.down_factor}, is_torgb={self.is_torgb}, "
                f"radial={self.down_radial}")


def _factor(high: float, low: float, name: str) -> int:
    factor = round(high / low)
    if factor * low != high:
        raise ValueError(f"{name} {low:g} must divide the layer's intermediate sampling rate {high:g}")
    return factor
