"""Discriminator augmentation: StyleGAN2-ADA's pipeline with its adaptive strength, and DiffAugment.

:class:`AugmentPipe` (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data") applies
each enabled transform to each image independently with probability ``p`` (times the transform's strength):

    geometric  xflip, rotate90, xint (integer translation ≤ 0.125 of the size), scale (lognormal, std 0.2 in
               log2), rotate (uniform ±180°, applied before and after aniso, each with probability
               1 − sqrt(1 − p) so that some rotation happens with probability p), aniso (lognormal, std 0.2),
               xfrac (fractional translation, normal std 0.125 of the size);
    colour     brightness (normal std 0.2), contrast (lognormal std 0.5), lumaflip, hue (uniform ±180° about
               the luma axis), saturation (lognormal std 1);
    filter     4 octave bands each amplified by a lognormal gain (std 1), total power kept;
    noise      additive Gaussian noise with sigma = |normal| · 0.1;
    cutout     a box of half the image size, zeroed.

Geometric transforms compose into one matrix per image and run as one resampling pass
(:func:`ganfast.ops.affine_resample`); colour transforms compose into one 4×4 matrix per image, applied in one
pass (:func:`ganfast.ops.color_matrix`).
:class:`AdaController` adjusts ``p`` from the discriminator's overfitting heuristic r_t = E[sign(D(real))].
:class:`DiffAugment` is Zhao et al. 2020's cheaper fixed policy (colour, translation, cutout).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from .ops.affine_resample import affine_resample
from .ops.color_matrix import color_matrix
from .reference import augment as ref

# Named transform sets: StyleGAN2-ADA's presets (each transform at strength 1) and R3GAN's mix (its train.py:
# blit and geometry at 1, colour at 0.5, cutout at 1).
GEOM = ("scale", "rotate", "aniso", "xfrac")
BLIT = ("xflip", "rotate90", "xint")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
PRESETS = {
    "blit": BLIT, "geom": GEOM, "color": COLOR, "filter": ("imgfilter",), "noise": ("noise",),
    "cutout": ("cutout",), "bg": BLIT + GEOM, "bgc": BLIT + GEOM + COLOR,
    "bgcf": BLIT + GEOM + COLOR + ("imgfilter",), "bgcfn": BLIT + GEOM + COLOR + ("imgfilter", "noise"),
    "bgcfnc": BLIT + GEOM + COLOR + ("imgfilter", "noise", "cutout"),
    "r3gan": {**dict.fromkeys(BLIT + GEOM, 1.0), **dict.fromkeys(COLOR, 0.5), "cutout": 1.0},
}
AUG_MODES = ("ada", "fixed", "noaug", "diffaug")
TRANSFORMS = BLIT + GEOM + COLOR + ("imgfilter", "noise", "cutout")
LUMA_AXIS = (float(torch.tensor(1 / math.sqrt(3), dtype=torch.float32)),) * 3  # unit grey axis, float32-rounded


class AugmentPipe(torch.nn.Module):
    """StyleGAN2-ADA's augmentation pipeline: ``pipe(images)`` augments a (N, C, H, W) batch (C = 1 or 3 for the
    colour transforms), differentiably (any order) in the images.

    Args:
        preset: one of :data:`PRESETS` (default ``"bgc"``), or None with ``strengths``.
        p: probability multiplier (the ADA controller sets ``pipe.p``).
        strengths: transform name → strength, overriding the preset (e.g. ``{"xflip": 0}``).
        impl: the implementation of the geometric and colour passes (None: auto; "ref": the reference, e.g.
            affine_grid/grid_sample and a batched matmul).
    The parameter ranges (``xint_max``, ``scale_std``, ...) are attributes with StyleGAN2-ADA's defaults.
    Random numbers come from torch's generator of the images' device (checkpointed by the trainer), drawn as
    StyleGAN2-ADA's AugmentPipe draws them: the same seed, device and batch give its parameters.
    """

    xint_max, scale_std, rotate_max, aniso_std, xfrac_std = 0.125, 0.2, 1.0, 0.2, 0.125
    brightness_std, contrast_std, hue_max, saturation_std = 0.2, 0.5, 1.0, 1.0
    imgfilter_std, noise_std, cutout_size = 1.0, 0.1, 0.5
    imgfilter_bands = (1.0, 1.0, 1.0, 1.0)

    def __init__(self, preset: str | None = "bgc", p: float = 0.0, strengths: dict | None = None,
                 impl: str | None = None):
        super().__init__()
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        self.strength = {name: 0.0 for name in TRANSFORMS}
        chosen = PRESETS.get(preset, ())
        self.strength.update(chosen if isinstance(chosen, dict) else dict.fromkeys(chosen, 1.0))
        for name, value in (strengths or {}).items():
            if name not in self.strength:
                raise ValueError(f"strengths: unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
            self.strength[name] = float(value)
        self.preset, self.impl = preset, impl
        self.p = float(p)

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        value = float(value)
        if not 0 <= value <= 1:
            raise ValueError(f"p must be in [0, 1], got {value}")
        self._p = value

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, p={self.p:.4f}"

    # -- parameters --------------------------------------------------------------------------------------------
    # The draws follow StyleGAN2-ADA's AugmentPipe call for call, so that one seed gives its parameters: each
    # enabled transform (strength > 0) draws whatever p is, its value first and then one coin per image; the
    # coin's threshold strength · p is float32 arithmetic (p is a float32 buffer there), as are the matrices.

    def _threshold(self, *factors: float) -> float:
        """p · factors in float32, the threshold a coin (uniform in [0, 1)) must fall below."""
        threshold = torch.tensor(self.p, dtype=torch.float32)
        for factor in factors:
            threshold = factor * threshold
        return threshold.item()

    @staticmethod
    def _gated(value: torch.Tensor, threshold: float, identity: float) -> torch.Tensor:
        """``value`` (N, ...) where a coin drawn after it, one per image, falls below ``threshold``; else
        ``identity``."""
        coin = torch.rand([value.shape[0]] + [1] * (value.ndim - 1), device=value.device)
        return torch.where(coin < threshold, value, torch.full_like(value, identity))

    def sample_params(self, n: int, channels: int, height: int, width: int, device) -> ref.AugmentParams:
        """Draws the per-image parameters of one batch from torch's generator of ``device``. At p = 0 the
        generator advances as at any other p, and the parameters are empty (the images stay as they are)."""
        s, params = self.strength, ref.AugmentParams()
        if any(s[name] > 0 for name in BLIT + GEOM):
            params.G_inv = self._geometric_matrix(n, height, width, device)
        if any(s[name] > 0 for name in COLOR):
            params.C = self._color_matrix(n, channels, device)
        if s["imgfilter"] > 0:
            params.band_gains = self._band_gains(n, device)
        if s["noise"] > 0:
            sigma = torch.randn([n, 1, 1, 1], device=device).abs() * self.noise_std
            sigma = self._gated(sigma, self._threshold(s["noise"]), 0)
            params.noise = torch.randn([n, channels, height, width], device=device) * sigma
        if s["cutout"] > 0:
            size = self._gated(torch.full([n, 2], self.cutout_size, device=device), self._threshold(s["cutout"]), 0)
            params.cutout_size, params.cutout_center = size, torch.rand([n, 2], device=device)
        return params if self.p > 0 else ref.AugmentParams()

    def _geometric_matrix(self, n: int, height: int, width: int, device) -> torch.Tensor:
        """The composed inverse map G⁻¹ (N, 3, 3): output pixel → input pixel, origin at the image centre; each
        transform's inverse multiplies on the right."""
        s, ones = self.strength, torch.ones(n, device=device)
        G = torch.eye(3, device=device).repeat(n, 1, 1)
        if s["xflip"] > 0:
            i = self._gated(torch.floor(torch.rand(n, device=device) * 2), self._threshold(s["xflip"]), 0)
            G = G @ ref.scale2d(1 - 2 * i, ones)
        if s["rotate90"] > 0:
            i = self._gated(torch.floor(torch.rand(n, device=device) * 4), self._threshold(s["rotate90"]), 0)
            G = G @ ref.rotate2d(math.pi / 2 * i)
        if s["xint"] > 0:
            t = (torch.rand([n, 2], device=device) * 2 - 1) * self.xint_max
            t = self._gated(t, self._threshold(s["xint"]), 0)
            G = G @ ref.translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
        if s["scale"] > 0:
            scale = self._gated(torch.exp2(torch.randn(n, device=device) * self.scale_std),
                                self._threshold(s["scale"]), 1)
            G = G @ ref.scale2d(1 / scale, 1 / scale)
        # two rotations, each with probability 1 − sqrt(1 − strength · p): some rotation with probability strength · p
        rotate_p = torch.tensor(self._threshold(s["rotate"]), dtype=torch.float32)
        rotate_threshold = (1 - torch.sqrt((1 - rotate_p).clamp(0, 1))).item()
        if s["rotate"] > 0:  # before aniso
            theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * self.rotate_max
            G = G @ ref.rotate2d(self._gated(theta, rotate_threshold, 0))
        if s["aniso"] > 0:
            scale = self._gated(torch.exp2(torch.randn(n, device=device) * self.aniso_std),
                                self._threshold(s["aniso"]), 1)
            inverse = 1 / scale
            G = G @ ref.scale2d(inverse, 1 / inverse)
        if s["rotate"] > 0:  # after aniso
            theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * self.rotate_max
            G = G @ ref.rotate2d(self._gated(theta, rotate_threshold, 0))
        if s["xfrac"] > 0:
            t = self._gated(torch.randn([n, 2], device=device) * self.xfrac_std, self._threshold(s["xfrac"]), 0)
            G = G @ ref.translate2d(-t[:, 0] * width, -t[:, 1] * height)
        return G

    def _color_matrix(self, n: int, channels: int, device) -> torch.Tensor:
        """The composed colour matrix C (N, 4, 4) on homogeneous RGB; each transform multiplies on the left."""
        s = self.strength
        C = torch.eye(4, device=device).repeat(n, 1, 1)
        v = torch.tensor([*LUMA_AXIS, 0.0], device=device)
        vv = torch.outer(v, v)
        if s["brightness"] > 0:
            b = self._gated(torch.randn(n, device=device) * self.brightness_std, self._threshold(s["brightness"]), 0)
            C = ref.translate3d(b, b, b) @ C
        if s["contrast"] > 0:
            c = self._gated(torch.exp2(torch.randn(n, device=device) * self.contrast_std),
                            self._threshold(s["contrast"]), 1)
            C = ref.scale3d(c, c, c) @ C
        if s["lumaflip"] > 0:
            i = self._gated(torch.floor(torch.rand([n, 1, 1], device=device) * 2), self._threshold(s["lumaflip"]), 0)
            C = (torch.eye(4, device=device) - 2 * vv * i) @ C  # Householder reflection through the luma plane
        if s["hue"] > 0 and channels > 1:
            theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * self.hue_max
            C = ref.rotate3d(LUMA_AXIS, self._gated(theta, self._threshold(s["hue"]), 0)) @ C
        if s["saturation"] > 0 and channels > 1:
            sat = self._gated(torch.exp2(torch.randn([n, 1, 1], device=device) * self.saturation_std),
                              self._threshold(s["saturation"]), 1)
            C = (vv + (torch.eye(4, device=device) - vv) * sat) @ C
        return C

    def _band_gains(self, n: int, device) -> torch.Tensor:
        """Per image, gains of the 4 bands: each band amplified by a lognormal factor with probability
        p · band strength, the gains renormalised so the expected power of a natural image stays the same."""
        power = torch.tensor(ref.BAND_POWER, device=device)
        gains = torch.ones([n, 4], device=device)
        for band, strength in enumerate(self.imgfilter_bands):
            t_band = self._gated(torch.exp2(torch.randn(n, device=device) * self.imgfilter_std),
                                 self._threshold(self.strength["imgfilter"], strength), 1)
            t = torch.ones([n, 4], device=device)
            t[:, band] = t_band
            gains = gains * (t / (power * t.square()).sum(dim=-1, keepdim=True).sqrt())
        return gains

    # -- application -------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"images must be a (N, C, H, W) tensor, got "
                             f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        params = self.sample_params(images.shape[0], images.shape[1], images.shape[2], images.shape[3], images.device)
        return self.apply(images, params)

    def apply(self, images: torch.Tensor, params: ref.AugmentParams) -> torch.Tensor:
        """``images`` transformed by drawn ``params`` (on ganfast's ops unless impl="ref"). A geometric or
        colour stage whose matrices are all the identity (small p) is skipped: its resampling would be the
        identity anyway (the symlet-6 up/down pair is orthonormal), so the batch skips a pass for nothing."""
        for name in ("G_inv", "C"):
            matrices = getattr(params, name)
            if matrices is not None and torch.equal(matrices, torch.eye(matrices.shape[-1], device=matrices.device,
                                                                        dtype=matrices.dtype).expand_as(matrices)):
                params = dataclasses.replace(params, **{name: None})

        def geometric(x, G_inv):
            return affine_resample(x, G_inv, impl=self.impl)

        def color(x, matrix, offset):
            return color_matrix(x, matrix, offset, impl=self.impl)
        return ref.apply(images, params, geometric, color)


class AdaController:
    """Adaptive augmentation strength (StyleGAN2-ADA): every ``interval`` steps, with r_t = E[sign(D(real))]
    over the images since the last adjustment, p ← clip(p + sign(r_t − target) · N / (speed_kimg · 1000), 0, 1)
    where N is the number of images in that window — p can move from 0 to 1 in ``speed_kimg`` thousand images.
    ``state_dict`` holds p and the running sums, so a resumed run continues exactly."""

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, speed_kimg: float = 500):
        if not 0 < target < 1:
            raise ValueError(f"target must be in (0, 1), got {target}")
        self.pipe, self.target, self.interval, self.speed_kimg = pipe, float(target), int(interval), float(speed_kimg)
        self.sign_sum, self.count, self.steps, self.rt = 0.0, 0, 0, 0.0

    def accumulate(self, sign_sum: float, count: int) -> None:
        """Adds Σ sign(D(augment(real))) over ``count`` real images."""
        self.sign_sum += float(sign_sum)
        self.count += int(count)

    def update(self) -> None:
        """Counts a step; every ``interval`` steps adjusts p from the accumulated r_t and resets the sums."""
        self.steps += 1
        if self.steps % self.interval or self.count == 0:
            return
        self.rt = self.sign_sum / self.count
        adjust = math.copysign(1.0, self.rt - self.target) * self.count / (self.speed_kimg * 1000)
        # rounded to 1e-12 so that steps up and down by the same amount come back to exactly 0
        self.pipe.p = min(max(round(self.pipe.p + adjust, 12), 0.0), 1.0 - 1e-9)
        self.sign_sum, self.count = 0.0, 0

    def state_dict(self) -> dict:
        return {"p": self.pipe.p, "sign_sum": self.sign_sum, "count": self.count, "steps": self.steps, "rt": self.rt}

    def load_state_dict(self, state: dict) -> None:
        self.pipe.p = state["p"]
        self.sign_sum, self.count, self.steps, self.rt = state["sign_sum"], state["count"], state["steps"], state["rt"]


class DiffAugment(torch.nn.Module):
    """DiffAugment's colour, translation and cutout policy (Zhao et al. 2020), on images in [-1, 1]:

    colour: + U(−0.5, 0.5) brightness; saturation × U(0, 2) about the channel mean; contrast × U(0.5, 1.5) about
    the image mean; translation: integer shifts up to 1/8 of the size, zeros shifted in; cutout: a box of half
    the size (zeroed) at a uniformly drawn position. Every transform applies to every image."""

    def __init__(self, policy: str = "color,translation,cutout", translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5):
        super().__init__()
        self.policy = [name for name in policy.split(",") if name]
        unknown = set(self.policy) - {"color", "translation", "cutout"}
        if unknown:
            raise ValueError(f"policy: unknown DiffAugment transforms {sorted(unknown)}")
        self.translation_ratio, self.cutout_ratio = translation_ratio, cutout_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev, dt = x.device, x.dtype
        if "color" in self.policy:
            x = x + (torch.rand(n, 1, 1, 1, device=dev, dtype=dt) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=dev, dtype=dt) * 2) + mean
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=dev, dtype=dt) + 0.5) + mean
        if "translation" in self.policy:
            sx, sy = int(w * self.translation_ratio + 0.5), int(h * self.translation_ratio + 0.5)
            tx = torch.randint(-sx, sx + 1, [n, 1, 1], device=dev)
            ty = torch.randint(-sy, sy + 1, [n, 1, 1], device=dev)
            src_y = torch.arange(h, device=dev)[None, :, None] + ty      # (N, H, 1): row read by each row
            src_x = torch.arange(w, device=dev)[None, None, :] + tx      # (N, 1, W)
            inside = ((src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)).to(dt)[:, None]
            index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).flatten(1)   # (N, H·W)
            flat = x.flatten(2)
            x = flat.gather(2, index[:, None, :].expand(-1, x.shape[1], -1)).view_as(x) * inside
        if "cutout" in self.policy:
            cx, cy = int(w * self.cutout_ratio + 0.5), int(h * self.cutout_ratio + 0.5)
            ox = torch.randint(0, w + (1 - cx % 2), [n, 1, 1], device=dev)
            oy = torch.randint(0, h + (1 - cy % 2), [n, 1, 1], device=dev)
            xs = torch.arange(w, device=dev)[None, None, :] - ox + cx // 2
            ys = torch.arange(h, device=dev)[None, :, None] - oy + cy // 2
            box = (xs >= 0) & (xs < cx) & (ys >= 0) & (ys < cy)
            x = x * (~box).to(dt)[:, None]
        return x
