"""Feature detectors for FID/KID (Inception-v3, 2048-d pool features) and precision/recall (VGG16, 4096-d fc2),
read from the files the field uses, recognised by their content (never by their name); nothing is downloaded.

Formats:
- ``nvlabs-pkl``: StyleGAN2-ADA/StyleGAN3's ``inception-2015-12-05.pkl`` / ``vgg16.pkl``, a serialised Python
  object holding a TorchScript module. It is not executed: ganfast reads the stream's opcodes, finds the
  TorchScript archive it carries and loads that with ``torch.jit.load``.
- ``torchscript``: a TorchScript archive (clean-fid's ``inception-2015-12-05.pt``, NVlabs' ``.pt``).
- ``state-dict``: a ``torch.save`` state dict read with ``weights_only=True``: pytorch-fid's / torch-fidelity's
  ``pt_inception-2015-12-05`` into :class:`FIDInceptionV3`, a torchvision-layout VGG16 into :class:`VGG16`.

Modes (how images of any size reach the network; uint8 values, RGB, greyscale repeated):
- ``legacy_tensorflow``: TensorFlow 1's bilinear resize (``align_corners=False``, no half-pixel offset), then
  (x − 128) / 128 (Inception) or ImageNet mean/std (VGG16). For a TorchScript file: the file's own forward,
  whose resize is inside it (what StyleGAN2-ADA reports, clean-fid's ``legacy_tensorflow``); for a state dict:
  torch-fidelity's ``inception-v3-compat`` / ``vgg16``. Default for TorchScript files.
- ``legacy_pytorch``: x / 255, ``torch.nn.functional.interpolate`` bilinear (``align_corners=False``), 2x − 1:
  pytorch-fid (and clean-fid's ``legacy_pytorch``). Default for state dicts.
- ``clean``: Pillow's bicubic resize in float (clean-fid's ``clean``), clipped to [0, 255], then (x − 128) / 128.
For a TorchScript file the modes other than ``legacy_tensorflow`` call its ``layers`` submodule (clean-fid's
convention for the NVlabs network) on the resized, normalised images.

Precisions (how the network runs; the images reach it the same way):
- ``exact``: float32, NCHW: the arithmetic of the reference tools (the parity tests use it);
- ``fast`` (default): float32, channels_last (network and input): the same products in another memory layout,
  so another summation order; FID moved by at most 4e-7 relative in the measurements (README);
- ``bf16``: channels_last under bfloat16 autocast (convolutions and matrix products in bf16 with float32
  accumulation); 2-3x faster on a CPU with AVX512-BF16, but FID moved by about 1e-2 relative (README).
On CUDA every precision runs under torch's TF32 settings (``torch.backends.cudnn.allow_tf32``, on by default).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import pickletools
import zipfile
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION, VGG16_KIND = "inception", "vgg16"
KINDS = (INCEPTION, VGG16_KIND)
MODES = ("legacy_tensorflow", "legacy_pytorch", "clean")
PRECISIONS = ("fast", "exact", "bf16")
INPUT_SIZE = {INCEPTION: 299, VGG16_KIND: 224}
FEATURES = {INCEPTION: 2048, VGG16_KIND: 4096}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_EXPECTED = {INCEPTION: "NVlabs' inception-2015-12-05.pkl, a TorchScript .pt such as clean-fid's, or pytorch-fid's "
                        "pt_inception-2015-12-05 state dict",
             VGG16_KIND: "NVlabs' vgg16.pkl, a TorchScript .pt, or a torchvision-layout VGG16 state dict"}


# -- the networks ------------------------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 0.001, running statistics) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(d))
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """The last blocks; the FID network pools with an average (count_include_pad=False) in Mixed_7b and a max in
    Mixed_7c, as the TensorFlow graph does."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)
        self.pool = pool

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg3(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The Inception-v3 of TensorFlow's FID (``inception-2015-12-05``) with torchvision's layer names, as in
    pytorch-fid's ``pt_inception-2015-12-05`` state dict. ``forward`` takes normalised ``(N, 3, H, W)`` images
    (H, W >= 75) and returns the ``(N, 2048)`` average-pooled features of Mixed_7c. It compiles with
    ``torch.jit.script``."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, "avg"), InceptionE(2048, "max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(F.max_pool2d(x, 3, stride=2))))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        return self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x))).mean(dim=(2, 3))


_VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_feature_layers() -> list[nn.Module]:
    """torchvision's ``vgg16().features``, in order: 3x3 convolutions (padding 1) each followed by a ReLU, and 2x2
    max pools (:data:`_VGG16_LAYERS`)."""
    layers, cin = [], 3
    for spec in _VGG16_LAYERS:
        if spec == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, spec, 3, padding=1), nn.ReLU()]
            cin = spec
    return layers


class VGG16(nn.Module):
    """VGG16 with torchvision's layer names (``features.*``, ``classifier.*``); ``forward`` returns the 4096-d
    fc2 activations after their ReLU (the features of StyleGAN2-ADA's and torch-fidelity's precision/recall)
    of normalised ``(N, 3, 224, 224)`` images."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*vgg16_feature_layers())
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(4096, 4096), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 7).flatten(1))


# -- resizing ----------------------------------------------------------------------------------------------------
def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def pil_bicubic_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """float64 ``(size_out, size_in)``: Pillow's bicubic resampling along one axis (support 2, widened by the
    reduction factor when shrinking, weights normalised to sum 1; the taps Pillow's ``precompute_coeffs`` uses)."""
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    m = torch.zeros(size_out, size_in, dtype=torch.float64)
    for xx in range(size_out):
        center = (xx + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        w = torch.tensor([_bicubic((x - center + 0.5) / filterscale) for x in range(lo, hi)], dtype=torch.float64)
        m[xx, lo:hi] = w / w.sum() if w.sum() != 0 else w
    return m


def tf1_bilinear_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """float64 ``(size_out, size_in)``: TensorFlow 1's ``resize_bilinear`` (align_corners=False, no half-pixel
    offset): output y samples input ``y · in/out``, between rows floor(·) and min(floor(·) + 1, in − 1)."""
    m = torch.zeros(size_out, size_in, dtype=torch.float64)
    for y in range(size_out):
        src = y * (size_in / size_out)
        top = math.floor(src)
        frac = src - top
        m[y, top] += 1 - frac
        m[y, min(top + 1, size_in - 1)] += frac
    return m


class _Resize:
    """Separable resizing to ``size`` by per-axis matrices, cached per input size and device."""

    def __init__(self, make, size: int):
        self.make, self.size, self.cache = make, size, {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        key = (h, w, x.device)
        if key not in self.cache:
            self.cache[key] = (self.make(h, self.size).to(x.device, torch.float32),
                               self.make(w, self.size).to(x.device, torch.float32))
        mh, mw = self.cache[key]
        return torch.einsum("yh,nchw,xw->ncyx", mh, x, mw)


# -- reading files -----------------------------------------------------------------------------------------------
def _is_torchscript_zip(data: bytes) -> bool:
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return any("/code/" in name or name.endswith("constants.pkl") for name in z.namelist())
    except zipfile.BadZipFile:
        return False


def _embedded_torchscript(data: bytes) -> bytes | None:
    """The largest TorchScript archive among the byte strings of a serialised-object stream, read opcode by
    opcode (nothing in it is executed); None if it holds none or is not such a stream."""
    found = None
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8") and len(arg) > 100 and \
                    _is_torchscript_zip(bytes(arg)) and (found is None or len(arg) > len(found)):
                found = bytes(arg)
    except Exception:  # a truncated or foreign stream: whatever it is, it holds no archive we can use
        return found
    return found


def _state_dict(path: str) -> dict | None:
    """A ``torch.save`` dict of tensors read without executing anything, else None."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        obj = next(iter(obj.values()))  # {"state_dict": {...}}
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        return obj
    return None


def _state_dict_kind(sd: dict) -> str | None:
    if "Mixed_7c.branch_pool.conv.weight" in sd:
        return INCEPTION
    if "features.0.weight" in sd and "classifier.3.weight" in sd:
        return VGG16_KIND
    return None


def _network_from_state_dict(sd: dict, kind: str, where: str) -> nn.Module:
    net = FIDInceptionV3() if kind == INCEPTION else VGG16()
    dropped = ("fc.",) if kind == INCEPTION else ("classifier.6.",)  # the class logits, not features
    sd = {k: v for k, v in sd.items() if not k.startswith(dropped) and not k.endswith("num_batches_tracked")}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{where}: a {kind} state dict, but {len(missing)} tensors are missing (e.g. "
                         f"{(missing or ['-'])[0]}) and {len(unexpected)} unexpected (e.g. {(unexpected or ['-'])[0]})")
    return net


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Detector:
    """A feature network read from ``path`` and the way images reach it (``mode``).

    Call it on ``(N, C, H, W)`` images holding uint8 values (uint8 or float; C = 1 is repeated to RGB) to get
    ``(N, F)`` float64 features. ``digest`` is the file's SHA-256 (with ``mode`` and ``precision`` it keys cached
    features); ``precision``: how the network runs (see the module's docstring; ``fast`` and ``bf16`` convert
    ``network`` to channels_last in place)."""

    kind: str
    path: str
    format: str
    mode: str
    digest: str
    network: torch.nn.Module
    device: torch.device
    precision: str = "fast"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        self.channels_last = self.precision != "exact"
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        size = INPUT_SIZE[self.kind]
        self.resize = {"legacy_tensorflow": _Resize(tf1_bilinear_matrix, size),
                       "clean": _Resize(pil_bicubic_matrix, size),
                       "legacy_pytorch": lambda x: F.interpolate(x, size=(size, size), mode="bilinear",
                                                                 align_corners=False)}[self.mode]
        if self.format != "state-dict":
            schema = str(getattr(self.network.forward, "schema", ""))
            self.wants_flag = "return_features" in schema

    @property
    def name(self) -> str:
        return f"{self.kind} ({os.path.basename(self.path)}, {self.format}, {self.mode}, {self.precision})"

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Resized images in [0, 255] -> the network's input range."""
        if self.kind == VGG16_KIND:
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
            return (x - mean) / std
        return (x - 128) / 128

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"detector: images must be (N, 1 or 3, H, W); got shape {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if self.format != "state-dict" and self.mode == "legacy_tensorflow":
            run = (lambda t: self.network(t, return_features=True)) if self.wants_flag else self.network
            return self._run(run, x)
        if self.mode == "legacy_pytorch" and self.kind == INCEPTION:
            x = self.resize(x / 255) * 2 - 1  # pytorch-fid's order of operations, to the last bit
        else:
            x = self._normalise(self.resize(x).clamp(0, 255) if self.mode == "clean" else self.resize(x))
        return self._run(self.network if self.format == "state-dict" else self.network.layers, x)

    def _run(self, net, x: torch.Tensor) -> torch.Tensor:
        """``net``'s float64 ``(N, F)`` features of ``x`` in this detector's precision (resizing stays float32
        except where it is inside the file's own forward)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            return net(x).reshape(len(x), -1).double()


def read_network_file(path: str, where: str, expected: str, device: torch.device) -> tuple[str, object, str]:
    """``(format, content, digest)`` of a network file recognised by content: the loaded TorchScript module for
    ``nvlabs-pkl`` and ``torchscript``, the dict of tensors for ``state-dict``; ``digest`` is the file's SHA-256.
    Anything else is a one-line error starting with ``where`` and saying what was ``expected``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where} does not exist (expected {expected}; ganfast downloads nothing)")
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    archive, fmt = (data, "torchscript") if _is_torchscript_zip(data) else (None, None)
    if archive is None and data[:1] == b"\x80" and not data.startswith(b"\x80\x02\x8a\x0a"):  # not torch's legacy
        archive, fmt = _embedded_torchscript(data), "nvlabs-pkl"
        if archive is None:
            raise ValueError(f"{where}: a serialised Python object that carries no TorchScript archive (expected "
                             f"{expected}; ganfast never runs such a file's code)")
    if archive is not None:
        try:
            return fmt, torch.jit.load(io.BytesIO(archive), map_location=device).eval(), digest
        except Exception as exc:
            raise ValueError(f"{where}: its TorchScript archive does not load ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    sd = _state_dict(path)
    if sd is None:
        raise ValueError(f"{where} is not a detector ganfast can read (expected {expected})")
    return "state-dict", sd, digest


def load_detector(path: str, kind: str = INCEPTION, mode: str | None = None,
                  device: str | torch.device = "cpu", precision: str = "fast") -> Detector:
    """The ``kind`` ("inception" or "vgg16") network in ``path``, recognised by content (see the module's
    docstring); ``mode`` None: ``legacy_tensorflow`` for TorchScript, ``legacy_pytorch`` for a state dict;
    ``precision``: "fast", "exact" or "bf16" (the module's docstring). A file that is none of the formats is a
    one-line ValueError naming it."""
    if kind not in KINDS:
        raise ValueError(f"detector kind must be one of {KINDS}; got {kind!r}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    where = f"{kind} file {path!r}"
    device = torch.device(device)
    fmt, content, digest = read_network_file(path, where, _EXPECTED[kind], device)
    if fmt != "state-dict":
        mode = mode or "legacy_tensorflow"
        if mode != "legacy_tensorflow" and (kind != INCEPTION or not hasattr(content, "layers")):
            raise ValueError(f"{where}: --mode {mode} needs an Inception TorchScript with a 'layers' submodule "
                             f"(clean-fid's convention); this file supports legacy_tensorflow (its own resize)")
        return Detector(kind, path, fmt, mode, digest, content, device, precision)
    found = _state_dict_kind(content)
    if found != kind:
        what = f"a {found} state dict" if found else "a state dict of neither Inception-v3 nor VGG16 layout"
        raise ValueError(f"{where} holds {what} (expected {_EXPECTED[kind]})")
    net = _network_from_state_dict(content, kind, where).eval().to(device)
    return Detector(kind, path, "state-dict", mode or "legacy_pytorch", digest, net, device, precision)
