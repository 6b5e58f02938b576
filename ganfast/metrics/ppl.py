"""Perceptual path length (Karras et al. 2019) as StyleGAN2-ADA's ``ppl2_wend`` computes it, and the LPIPS
distance (Zhang et al. 2018, VGG16 variant) it is measured with.

For pair i of ``count``: z₀, z₁ are the latents of seeds 2i and 2i + 1 (``ganfast.sample``'s convention), w₀, w₁
their mapped styles (truncation ψ = 1; a conditional generator gets seed 2i's class for both, drawn as
``ganfast.sample`` draws it, from the training set's class frequencies). With sampling ``end`` the path starts at
t = 0: the images of w₀ and of lerp(w₀, w₁, ε), ε = 1e-4, are synthesised in float32 with the same layer noise
(seed 2i's, as ``ganfast.sample`` draws it with ``noise_mode="random"``), area-downsampled to 256 px when larger,
scaled from [-1, 1] to [0, 255] (greyscale repeated to RGB), and

    d_i = LPIPS(x(w₀), x(lerp(w₀, w₁, ε))) / ε²
    PPL = mean of the d_i within [P1 (NumPy's 'lower'), P99 ('higher')].

LPIPS of two images in [0, 255]: x ↦ (x − 127.5(1 + shift)) · 2 / (255 · scale) (the ``lpips`` package's scaling
layer), the VGG16 activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, each normalised over channels
(f / (‖f‖ + 1e-10)); the distance is Σ_layers mean_{h,w} Σ_c lin_c · (f̂₀ − f̂₁)². NVlabs' ``vgg16`` TorchScript
returns, with ``return_lpips=True``, one vector per image whose squared Euclidean distances are that sum.

Files (recognised by content, nothing downloaded): NVlabs' ``vgg16.pkl`` / ``vgg16.pt`` (the file ``pr`` uses;
read as :mod:`ganfast.metrics.detectors` reads it, never unpickled) or a state dict in the ``lpips`` package's /
torch-fidelity's layout (``net.slice1.0.weight`` ..., ``lin0.model.1.weight`` ...) or with torchvision's VGG16
names (``features.0.weight`` ...) and the ``lin`` layers, loaded into :class:`LPIPSVGG16`.
"""
from __future__ import annotations

import copy
import os
import re
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .detectors import read_network_file, vgg16_feature_layers

EPSILON = 1e-4
PPL_NAME, PPL_SAMPLES = "ppl2_wend", 50_000
LPIPS_ENV = "GANFAST_LPIPS"
LPIPS_SHIFT, LPIPS_SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)
_SLICE_ENDS = (4, 9, 16, 23, 30)  # torchvision's vgg16.features indices after relu1_2, ..., relu5_3
_EXPECTED = ("NVlabs' vgg16.pkl / vgg16.pt (TorchScript with return_lpips), or an LPIPS-VGG16 state dict: the lpips "
             "package's / torch-fidelity's layout (net.slice*, lin0-lin4) or torchvision's features.* with lin0-lin4")


class LPIPSVGG16(nn.Module):
    """LPIPS with VGG16 under the ``lpips`` package's layer names: ``net.slice1`` ... ``net.slice5`` hold
    torchvision's ``features`` layers under their torchvision indices, ``lin0`` ... ``lin4`` the per-channel
    weights (``lin<k>.model.1``, a bias-free 1x1 convolution). ``forward(x0, x1)`` takes two ``(N, 3, H, W)``
    float batches in [0, 255] and returns the ``(N,)`` distances (module docstring)."""

    channels = (64, 128, 256, 512, 512)

    def __init__(self):
        super().__init__()
        layers = vgg16_feature_layers()
        self.net = nn.Module()
        for k, (start, end) in enumerate(zip((0,) + _SLICE_ENDS, _SLICE_ENDS)):
            part = nn.Sequential()
            for i in range(start, end):
                part.add_module(str(i), layers[i])
            setattr(self.net, f"slice{k + 1}", part)
        for k, c in enumerate(self.channels):
            setattr(self, f"lin{k}", nn.Module())
            getattr(self, f"lin{k}").model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))
        shift, scale = torch.tensor(LPIPS_SHIFT), torch.tensor(LPIPS_SCALE)
        self.register_buffer("mean", ((1 + shift) * 255 / 2).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", (2 / (scale * 255)).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five channel-normalised activations of images in [0, 255]."""
        h = (x.float() - self.mean) * self.inv_std
        out = []
        for k in range(len(self.channels)):
            h = getattr(self.net, f"slice{k + 1}")(h)
            out.append(h / (h.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        total = 0
        for k, (f0, f1) in enumerate(zip(self.features(x0), self.features(x1))):
            total = total + getattr(self, f"lin{k}").model(f0.sub(f1).square()).mean(dim=(2, 3)).squeeze(1)
        return total


def lpips_from_state_dict(sd: dict, where: str) -> LPIPSVGG16:
    """An :class:`LPIPSVGG16` holding the tensors of an lpips/torch-fidelity or torchvision-named state dict."""
    net = LPIPSVGG16()
    slice_of = {i: k + 1 for k, (start, end) in enumerate(zip((0,) + _SLICE_ENDS, _SLICE_ENDS))
                for i in range(start, end)}
    renamed = {}
    for key, value in sd.items():
        m = re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
        if m and int(m[1]) in slice_of:
            key = f"net.slice{slice_of[int(m[1])]}.{m[1]}.{m[2]}"
        m = re.fullmatch(r"lin(\d)\.model\.0\.weight", key)  # saved without the dropout layer
        if m:
            key = f"lin{m[1]}.model.1.weight"
        if key.startswith(("net.", "lin")):
            renamed[key] = value
    missing, unexpected = net.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        has_lin = any(k.startswith("lin") for k in renamed)
        has_vgg = any(k.startswith("net.") for k in renamed)
        what = ("LPIPS' lin layers without VGG16's convolutions (save both in one state dict)" if has_lin and not
                has_vgg else "VGG16 without LPIPS' lin layers" if has_vgg and not has_lin else
                f"{len(missing)} tensors missing (e.g. {(missing or ['-'])[0]}) and {len(unexpected)} unexpected "
                f"(e.g. {(unexpected or ['-'])[0]})")
        raise ValueError(f"{where}: a state dict with {what} (expected {_EXPECTED})")
    return net


@dataclass
class PerceptualDistance:
    """The LPIPS network read from ``path``: call it on two ``(N, 3, H, W)`` float batches in [0, 255] for the
    ``(N,)`` distances. ``digest`` is the file's SHA-256."""

    path: str
    format: str
    digest: str
    network: nn.Module
    device: torch.device

    @property
    def name(self) -> str:
        return f"lpips-vgg16 ({os.path.basename(self.path)}, {self.format})"

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        x0, x1 = x0.to(self.device, torch.float32), x1.to(self.device, torch.float32)
        if self.format == "state-dict":
            return self.network(x0, x1)
        f0, f1 = self.network(torch.cat([x0, x1]), resize_images=False, return_lpips=True).chunk(2)
        return (f0 - f1).square().sum(dim=1)


def load_lpips(path: str, device: str | torch.device = "cpu") -> PerceptualDistance:
    """The LPIPS network in ``path`` (module docstring); a file that is none of the formats is a one-line error
    naming it."""
    where, device = f"LPIPS file {path!r}", torch.device(device)
    fmt, content, digest = read_network_file(path, where, _EXPECTED, device)
    if fmt != "state-dict":
        if "return_lpips" not in str(getattr(content.forward, "schema", "")):
            raise ValueError(f"{where}: a TorchScript network whose forward takes no return_lpips (expected "
                             f"{_EXPECTED})")
        return PerceptualDistance(path, fmt, digest, content, device)
    net = lpips_from_state_dict(content, where).eval().to(device)
    return PerceptualDistance(path, fmt, digest, net, device)


def lpips_file(lpips: str | None = None, vgg16: str | None = None) -> str:
    """The LPIPS file: ``lpips``, else ``$GANFAST_LPIPS``, else the VGG16 file of ``pr`` (``vgg16``, else
    ``$GANFAST_VGG16``: NVlabs' serves both); else a ValueError saying what to give."""
    from .report import VGG16_ENV
    path = lpips or os.environ.get(LPIPS_ENV) or vgg16 or os.environ.get(VGG16_ENV)
    if not path:
        raise ValueError(f"metric {PPL_NAME!r} needs an LPIPS file: --lpips PATH or ${LPIPS_ENV} ({_EXPECTED}; "
                         "ganfast downloads nothing)")
    return path


def check_w_space(G: nn.Module, name: str = PPL_NAME) -> None:
    """A ValueError naming ``G``'s model unless it has a mapping network (W space) and a synthesis network."""
    if not (isinstance(getattr(G, "mapping", None), nn.Module) and hasattr(G, "synthesis")):
        raise ValueError(f"metric {name!r} interpolates in W: it needs a generator with a mapping network "
                         f"(stylegan2, stylegan3); {type(G).__name__} has none")
    if G.img_channels not in (1, 3):
        raise ValueError(f"metric {name!r}: LPIPS takes RGB or greyscale images; {type(G).__name__} makes "
                         f"{G.img_channels} channels")


def lpips_images(img: torch.Tensor, resolution: int) -> torch.Tensor:
    """Generator output in [-1, 1] -> LPIPS input: area-downsampled by resolution // 256 when that is > 1, scaled
    to [0, 255], greyscale repeated to RGB."""
    factor = resolution // 256
    if factor > 1:
        n, c, h, w = img.shape
        img = img.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))
    img = (img + 1) * (255 / 2)
    return img.repeat(1, 3, 1, 1) if img.shape[1] == 1 else img


@torch.no_grad()
def pair_distances(G: nn.Module, lpips: PerceptualDistance, ws0: torch.Tensor, ws1: torch.Tensor,
                   noise_seeds, epsilon: float = EPSILON) -> torch.Tensor:
    """float32 ``(N,)`` LPIPS(x(ws0), x(ws1)) / ε² of styles ``(N, num_ws, w_dim)``; both images of a pair get
    the layer noise ``ganfast.sample`` draws for the pair's entry of ``noise_seeds``. ``G`` synthesises in float32
    (see :func:`float32_copy`)."""
    from ..nn.noise import per_sample_noise
    from ..sampling import _NOISE_SEED_OFFSET
    seeds = [int(s) for s in noise_seeds] * 2
    with per_sample_noise([torch.Generator().manual_seed(_NOISE_SEED_OFFSET + s) for s in seeds]):
        img = G.synthesis(torch.cat([ws0, ws1]), noise_mode="random").float()
    x0, x1 = lpips_images(img, G.img_resolution).chunk(2)
    return lpips(x0, x1).float() / epsilon ** 2


def float32_copy(G: nn.Module) -> nn.Module:
    """An eval-mode copy of ``G`` whose every layer computes in float32 (StyleGAN2-ADA's ``force_fp32``)."""
    G = copy.deepcopy(G).eval().requires_grad_(False)
    for module in G.modules():
        if hasattr(module, "use_fp16"):
            module.use_fp16 = False
    return G


@torch.no_grad()
def ppl_distances(G: nn.Module, lpips: PerceptualDistance, count: int, epsilon: float = EPSILON,
                  batch_size: int = 16) -> torch.Tensor:
    """float32 ``(count,)``: d_i of the pairs i = 0 .. count − 1 (module docstring), ``batch_size`` pairs a call."""
    from ..sampling import _label_choice, seed_classes, seed_latents
    check_w_space(G)
    G = float32_copy(G)
    device = next(G.parameters()).device
    c_dim = getattr(G, "c_dim", 0) or 0
    _, class_counts = _label_choice(G, c_dim, None, None, None)
    out = []
    for start in range(0, count, batch_size):
        pairs = range(start, min(start + batch_size, count))
        z = seed_latents([s for i in pairs for s in (2 * i, 2 * i + 1)], G.z_dim).to(device)
        c = None
        if c_dim:
            classes = torch.from_numpy(seed_classes([2 * i for i in pairs], class_counts)).repeat_interleave(2)
            c = F.one_hot(classes, c_dim).float().to(device)
        w = G.mapping(z, c).unflatten(0, (len(pairs), 2))
        w0 = w[:, 0]
        out.append(pair_distances(G, lpips, w0, w0.lerp(w[:, 1], epsilon), [2 * i for i in pairs], epsilon).cpu())
    return torch.cat(out)


def trimmed_mean(distances: torch.Tensor) -> float:
    """The mean of ``distances`` within [1st percentile (NumPy's 'lower'), 99th ('higher')], as StyleGAN2-ADA."""
    d = distances.double().numpy()
    lo, hi = np.percentile(d, 1, method="lower"), np.percentile(d, 99, method="higher")
    return float(d[(d >= lo) & (d <= hi)].mean())


def perceptual_path_length(G: nn.Module, lpips: PerceptualDistance, count: int = PPL_SAMPLES,
                           batch_size: int = 16) -> dict:
    """``{"ppl", "pairs_per_second"}``: :func:`trimmed_mean` of :func:`ppl_distances` (``count`` pairs)."""
    started = time.perf_counter()
    distances = ppl_distances(G, lpips, count, batch_size=batch_size)
    return {"ppl": trimmed_mean(distances), "pairs_per_second": count / (time.perf_counter() - started)}
