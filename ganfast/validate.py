"""Validation of a synthetic image data set against the real one: fidelity, utility and privacy.

    report = ganfast.validate("synth/", "digits", holdout="holdout.npz", out="report/")

- **Fidelity and diversity** in a feature space: Fréchet distance, KID (Bińkowski et al. 2018), precision/recall
  (Kynkäänniemi et al. 2019), density/coverage (Naeem et al. 2020); per class when both sets are labelled; and
  per-channel pixel histograms (total-variation distance, picture) to catch colour or quantisation artefacts.
  Features: a TorchScript Inception file when given (``features="inception.pt"``); ganfast's digit classifier
  (:func:`ganfast.metrics.digits_extractor`) when the real data is the embedded ``digits``; otherwise the
  pixels themselves, area-downsampled to at most 16×16 (``"pixels"``): no learnt features ship with ganfast,
  so such numbers compare runs on the same data, not across papers. ``report["features"]`` names the space.
  FD and KID are in that space's units (KID's cubic kernel grows with the feature scale: with the digit
  features it runs to the hundreds); KID, being unbiased, can be slightly negative.
- **Utility** (labelled data, the Classification Accuracy Score of Ravuri & Vinyals 2019): one small CNN
  trained on the synthetic images (TSTR) and one trained on the real ones (TRTR), same architecture, seed,
  batch size and number of steps, both tested on the same real images: the holdout when it is labelled,
  otherwise a seeded 20% split of the real data (then TRTR trains on the other 80%).
- **Privacy**: the distance of every synthetic image to its nearest training image (DCR, Euclidean in pixel
  space, [-1, 1] units, by default) against the same distance for the holdout's images, which the generator
  never saw. ``memorized_share`` is the share of synthetic images strictly closer to the training set than the
  holdout's 5th percentile (≈ 0.05 for a generator that does not copy, 1 for copies). Without a holdout there
  is no reference for how close a fresh image of the data distribution comes to the training set, so no share
  can be called memorised: ``memorized_share`` is null, and only the DCR distribution, the share of exact copies
  (DCR = 0) and the closest pairs (for inspection) are reported.

Outputs in ``out``: ``report.json``, ``report.md``, ``near_duplicates.png`` (synthetic | nearest training image)
and ``pixel_histograms.png``. Nearest neighbours are exact, by blocked matrix products on the device
(:mod:`ganfast.metrics.neighbours`).
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import tarfile
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageSet", "read_samples", "validate"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
PIXEL_FEATURE_SIZE = 16       # the pixel fallback feature space: images area-downsampled to at most 16×16
CLASSIFIER_SIZE = 32          # the utility classifier sees images area-downsampled to at most 32×32
MEMORIZED_QUANTILE = 0.05
NEAR_DUPLICATES_LISTED = 50
PICTURE_PAIRS = 16
MIN_PER_CLASS = 10            # per-class fidelity needs this many images of the class on both sides
_CLASS_DIR = re.compile(r"^class(\d+)$")
_MANIFEST = "ganfast-samples.json"


@dataclass
class ImageSet:
    """uint8 ``(N, C, H, W)`` images, int64 class labels ``(N,)`` or None, and where each image came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    ids: list[str]
    source: str

    def subset(self, rows: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[rows], None if self.labels is None else self.labels[rows],
                        [self.ids[i] for i in rows.tolist()], self.source)

    def __len__(self) -> int:
        return self.images.shape[0]


# ---- reading ---------------------------------------------------------------------------------------------------

def _decode(name: str, data: bytes | str) -> np.ndarray:
    """A PNG/JPEG (bytes or path) as uint8 (C, H, W): 1 channel for greyscale, else 3 (RGB)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data, formats=["PNG", "JPEG"]) as img:
            grey = img.mode in ("L", "LA", "1", "I", "I;16")
            a = np.asarray(img.convert("L" if grey else "RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"synthetic: {name!r} is not a readable PNG/JPEG image ({exc})") from None
    return a[None] if grey else a.transpose(2, 0, 1)


class _Collector:
    """Fills one preallocated uint8 tensor image by image, checking every image has the first one's shape."""

    def __init__(self, count: int, progress: bool):
        from tqdm.auto import tqdm
        self.count, self.images, self.n = count, None, 0
        self.bar = tqdm(total=count, desc="reading", unit="img", disable=not progress, leave=False, dynamic_ncols=True)

    def add(self, name: str, images: np.ndarray) -> None:
        """``images``: one (C, H, W) image or a (N, C, H, W) batch, uint8."""
        batch = images if images.ndim == 4 else images[None]
        if self.images is None:
            self.images = torch.empty((self.count, *batch.shape[1:]), dtype=torch.uint8)
        elif tuple(batch.shape[1:]) != tuple(self.images.shape[1:]):
            raise ValueError(f"synthetic: {name!r} holds {'x'.join(map(str, batch.shape[1:]))} (CxHxW) images but "
                             f"those read before are {'x'.join(map(str, self.images.shape[1:]))}; "
                             f"all images of a set must have one size")
        self.images[self.n:self.n + len(batch)].numpy()[...] = batch
        self.n += len(batch)
        self.bar.update(len(batch))
        if self.n == self.count:
            self.bar.close()


def _npz_count(path: str) -> int:
    """The number of images in a sample shard, from the ``images`` array's header (nothing decoded)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("images.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape = read_header(f)[0]
    except (KeyError, zipfile.BadZipFile, OSError, ValueError) as exc:  # KeyError: no images.npy member
        raise ValueError(f"synthetic: {path!r} is not a sample shard with an 'images' array ({exc})") from None
    if len(shape) != 4:
        raise ValueError(f"synthetic: 'images' in {path!r} must be (N, H, W, C); got shape {shape}")
    return shape[0]


def _read_npz(files: list[str], root: str, progress: bool) -> tuple[torch.Tensor, list, list[str]]:
    collector, labels, ids = _Collector(sum(_npz_count(f) for f in files), progress), [], []
    for f in files:
        with np.load(f) as shard:
            images = shard["images"]
            if images.dtype != np.uint8:
                raise ValueError(f"synthetic: 'images' in {f!r} must be uint8 (N, H, W, C); got {images.dtype}")
            seeds = shard["seeds"] if "seeds" in shard else np.arange(len(images))
            labels.extend(shard["labels"] if "labels" in shard else [None] * len(images))
        collector.add(f, images.transpose(0, 3, 1, 2))
        rel = os.path.relpath(f, root)
        ids.extend(f"{rel}#seed{int(s)}" for s in seeds)
    return collector.images, labels, ids


def _read_tars(files: list[str], root: str, progress: bool) -> tuple[torch.Tensor, list, list[str]]:
    members = {}
    for f in files:
        try:
            with tarfile.open(f) as tar:
                members[f] = sorted(m.name for m in tar.getmembers() if m.isfile())
        except (tarfile.TarError, OSError) as exc:
            raise ValueError(f"synthetic: {f!r} is not a readable tar shard ({exc})") from None
    count = sum(1 for names in members.values() for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    collector, labels, ids = _Collector(count, progress), [], []
    for f, names in members.items():
        with tarfile.open(f) as tar:
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() not in IMAGE_EXTENSIONS:
                    continue
                where = f"{os.path.relpath(f, root)}/{name}"
                collector.add(where, _decode(where, tar.extractfile(name).read()))
                record = {}
                if f"{stem}.json" in names:
                    try:
                        record = json.loads(tar.extractfile(f"{stem}.json").read())
                    except ValueError:
                        raise ValueError(f"synthetic: {f!r} member {stem}.json is not JSON") from None
                labels.append(record.get("class"))
                ids.append(where)
    return collector.images, labels, ids


def _read_pngs(files: list[str], root: str, progress: bool) -> tuple[torch.Tensor, list, list[str]]:
    collector, labels, ids = _Collector(len(files), progress), [], []
    for f in files:
        collector.add(f, _decode(f, f))
        rel = os.path.relpath(f, root)
        classes = [int(m.group(1)) for part in rel.split(os.sep) if (m := _CLASS_DIR.match(part))]
        labels.append(classes[-1] if classes else None)
        ids.append(rel)
    return collector.images, labels, ids


def _class_labels(raw: list, source: str) -> tuple[torch.Tensor | None, str | None]:
    """Per-image labels as int64 class indices, or None with the reason when they are absent or not classes."""
    present = [x is not None for x in raw]
    if not any(present):
        return None, None
    if not all(present):
        raise ValueError(f"synthetic: {source!r} mixes labelled and unlabelled images")
    values = np.asarray(raw)
    if values.ndim != 1 or values.dtype.kind not in "iu":
        return None, (f"the labels of {source!r} are vectors, not class indices: no per-class or TSTR figures")
    if values.min() < 0:
        raise ValueError(f"synthetic: {source!r} holds negative class labels")
    return torch.from_numpy(values.astype(np.int64)), None


def read_samples(path: str, progress: bool = False) -> tuple[ImageSet, str | None]:
    """A folder written by ``ganfast sample`` in any format (png, npz, webdataset; labelled layouts included:
    npz ``labels``, webdataset json ``"class"``, png ``class<K>/`` folders), a single npz shard, or any folder of
    PNG/JPEG images, as an :class:`ImageSet`; and a note when labels exist but are not class indices."""
    if not os.path.exists(path):
        raise ValueError(f"synthetic: {path!r} does not exist")
    if os.path.isfile(path):
        if not path.lower().endswith(".npz"):
            raise ValueError(f"synthetic: {path!r} is a file but not an npz sample shard; give the sample folder")
        files, root = [path], os.path.dirname(path)
    else:
        files = sorted(os.path.join(r, f) for r, _, names in os.walk(path) for f in names
                       if f != _MANIFEST and not f.startswith("."))
        root = path
    kinds = {kind for f in files for kind, exts in (("npz", (".npz",)), ("tar", (".tar",)), ("img", IMAGE_EXTENSIONS))
             if f.lower().endswith(exts)}
    if not kinds:
        raise ValueError(f"synthetic: {path!r} holds no samples (PNG/JPEG images, .npz or .tar shards)")
    if len(kinds) > 1:
        raise ValueError(f"synthetic: {path!r} mixes sample formats ({', '.join(sorted(kinds))}); "
                         "one folder, one format")
    kind = kinds.pop()
    reader = {"npz": _read_npz, "tar": _read_tars, "img": _read_pngs}[kind]
    chosen = [f for f in files if f.lower().endswith({"npz": (".npz",), "tar": (".tar",)}.get(kind, IMAGE_EXTENSIONS))]
    images, raw, ids = reader(chosen, root, progress)
    if images is None or len(images) == 0:
        raise ValueError(f"synthetic: {path!r} holds no images")
    labels, note = _class_labels(raw, path)
    return ImageSet(images, labels, ids, path), note


def _as_uint8(images: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Images (N, C, H, W) as uint8: uint8 as they are, floats in [-1, 1] mapped by x·127.5 + 127.5, rounded."""
    x = torch.as_tensor(images)
    if x.dim() != 4:
        raise ValueError(f"{name}: images must be (N, C, H, W); got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point():
        raise ValueError(f"{name}: images must be uint8 or floats in [-1, 1]; got {x.dtype}")
    return (x.float() * 127.5 + 127.5).round_().clamp_(0, 255).to(torch.uint8)


def _load_real(spec, resolution: int, name: str) -> tuple[ImageSet, str | None]:
    """Real images as an :class:`ImageSet`: ``spec`` is anything ``ganfast train --dataset`` takes (loaded at
    ``resolution``; labels from the data set when it has class labels, the digits' classes for ``digits``), or
    an ``(images, labels)`` pair / an images tensor or array. Also a note when labels are not class indices."""
    from .data import load_dataset
    source = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else f"<{name} array>"
    if isinstance(spec, (tuple, list)):
        images, labels = spec
    elif isinstance(spec, (torch.Tensor, np.ndarray)):
        images, labels = spec, None
    else:
        dataset = load_dataset(os.fspath(spec), resolution=resolution)
        if dataset.is_2d:
            raise ValueError(f"{name}: {spec!r} is a 2-D point set; validate compares images")
        images, labels = dataset.data, getattr(dataset, "labels", None)
        if labels is None and spec == "digits":  # data sets without a labels attribute: the digits' classes
            from .data import digits_with_labels
            labels = digits_with_labels(resolution)[1]
    note = None
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.is_floating_point():
            labels, note = None, (f"the labels of {source!r} are vectors, not class indices: no per-class or TSTR "
                                  "figures")
        else:
            labels = labels.long()
    images = _as_uint8(images, name)
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{name}: {len(labels)} labels for {len(images)} images")
    return ImageSet(images, labels, [f"{name}[{i}]" for i in range(len(images))], source), note


def _generate(checkpoint: str, seeds: str, weights: str, device: torch.device, progress: bool) -> ImageSet:
    """Samples of a run folder's (or checkpoint's) generator for ``seeds``, generated in memory."""
    from .sampling import parse_seeds, sample
    from .checkpoint import load_generator
    G = load_generator(checkpoint, which=weights, device=device)
    if getattr(G, "c_dim", 0):
        raise ValueError(f"synthetic: the generator in {checkpoint!r} is conditional; write labelled samples with "
                         f"`ganfast sample --checkpoint {checkpoint} --seeds {seeds} --out DIR` and validate DIR")
    seed_list = parse_seeds(seeds)
    collector = _Collector(len(seed_list), progress)
    for batch in sample(G, seed_list, batch_size=256):
        collector.add(checkpoint, batch.images.transpose(0, 3, 1, 2))
    return ImageSet(collector.images, None, [f"seed{s}" for s in seed_list], f"{checkpoint} seeds {seeds}")


def _subsample(images: ImageSet, limit: int | None, seed: int) -> ImageSet:
    if limit is None or len(images) <= limit:
        return images
    rows = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return images.subset(rows)


# ---- feature spaces --------------------------------------------------------------------------------------------

def _to_unit(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device).float() / 127.5 - 1


def _feature_space(features: str | None, real: ImageSet, real_spec, device: torch.device):
    """(name, extractor of uint8 batches) for the requested or default feature space."""
    from .metrics import digits_extractor, inception_extractor
    c, h, w = real.images.shape[1:]
    if features not in (None, "digits", "pixels"):
        extract = inception_extractor(features, device=device)
        return f"inception ({os.path.basename(features)}: the network's pool features)", \
            lambda x: extract(_to_unit(x, device)).double()
    if features == "digits" or (features is None and real_spec == "digits"):
        if c != 1 or h != w or h not in (8, 16, 32):
            raise ValueError(f"features: the digit classifier takes 1-channel 8, 16 or 32 px images; the data is "
                             f"{c}x{h}x{w}")
        extract = digits_extractor(h, device=device)
        return (f"digits-cnn-64 (ganfast's digit classifier trained on scikit-learn's digits at {h} px, "
               f"penultimate layer)"), lambda x: extract(_to_unit(x, device)).double()
    size = (min(h, PIXEL_FEATURE_SIZE), min(w, PIXEL_FEATURE_SIZE))

    def pixels(x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(_to_unit(x, device), size).flatten(1).double()
    return (f"pixels {c}x{size[0]}x{size[1]} (images area-downsampled, values in [-1, 1]; no learnt features: "
           f"give an Inception file for FID-comparable numbers)"), pixels


def _features(extract, images: torch.Tensor, progress: bool = False, batch: int = 512) -> torch.Tensor:
    """Features of uint8 images, ``batch`` at a time on the extractor's device, kept there as float32."""
    from tqdm.auto import tqdm
    out = []
    with torch.no_grad(), tqdm(total=len(images), desc="features", unit="img", disable=not progress, leave=False,
                               dynamic_ncols=True) as bar:
        for i in range(0, len(images), batch):
            out.append(extract(images[i:i + batch]).float())
            bar.update(len(out[-1]))
    return torch.cat(out)


def _fidelity(real: torch.Tensor, fake: torch.Tensor, seed: int, device: torch.device) -> dict:
    """FD, KID, precision/recall (k = 3), density/coverage (k = 5) of fake against real features."""
    from .metrics import density_coverage, frechet_distance, kernel_inception_distance, precision_recall
    out = {"fd": frechet_distance(real, fake)}
    kid = kernel_inception_distance(real, fake, seed=seed)
    out.update(kid=kid["kid"], kid_std=kid["kid_std"])
    out.update(precision_recall(real, fake, k=3))
    out.update(density_coverage(real, fake, k=5, device=device))
    return out


def _pixel_stats(real: torch.Tensor, fake: torch.Tensor, chunk: int = 4096) -> dict:
    """Per-channel 256-bin histograms (frequencies) of the uint8 values, counted ``chunk`` images at a time; their
    total-variation distance and the channel means (0-255)."""
    def hist(x):
        counts = torch.zeros(x.shape[1], 256, dtype=torch.float64)
        for i in range(0, len(x), chunk):
            for ch in range(x.shape[1]):
                counts[ch] += torch.bincount(x[i:i + chunk, ch].flatten().long(), minlength=256)
        return counts / counts.sum(1, keepdim=True)
    hr, hf = hist(real), hist(fake)
    values = torch.arange(256, dtype=torch.float64)
    return {"tv_distance": [float((a - b).abs().sum() / 2) for a, b in zip(hr, hf)],
            "mean_real": (hr @ values).tolist(), "mean_synthetic": (hf @ values).tolist(), "histograms": (hr, hf)}


# ---- utility ---------------------------------------------------------------------------------------------------

class _SmallCNN(torch.nn.Module):
    """conv 32 -> max-pool -> conv 64 -> average-pool to 4×4 -> linear: the TSTR/TRTR classifier."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(), torch.nn.Linear(64 * 16, classes))

    def forward(self, x):
        return self.net(x)


def _classifier_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = _to_unit(images, device)
    h, w = x.shape[-2:]
    return F.adaptive_avg_pool2d(x, (min(h, CLASSIFIER_SIZE), min(w, CLASSIFIER_SIZE)))


def train_and_test(train: ImageSet, test: ImageSet, classes: int, steps: int, seed: int, device: torch.device,
                   batch_size: int = 64) -> torch.Tensor:
    """Trains :class:`_SmallCNN` (Adam, lr 2e-3) for ``steps`` batches drawn with ``seed`` from ``train`` and
    returns its predictions on ``test`` (int64, on the host)."""
    torch.manual_seed(seed)
    model = _SmallCNN(train.images.shape[1], classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(len(train), (min(batch_size, len(train)),), generator=gen)
        loss = F.cross_entropy(model(_classifier_input(train.images[rows], device)), train.labels[rows].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return torch.cat([model(_classifier_input(test.images[i:i + 512], device)).argmax(1).cpu()
                          for i in range(0, len(test), 512)])


def _accuracy(pred: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[float, list]:
    correct = (pred == labels).double()
    per_class = [float(correct[labels == k].mean()) if (labels == k).any() else None for k in range(classes)]
    return float(correct.mean()), per_class


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def _utility(synthetic: ImageSet, real: ImageSet, holdout: ImageSet | None, classes: int, steps: int, seed: int,
             device: torch.device) -> dict:
    if holdout is not None and holdout.labels is not None:
        train_real, test, test_name = real, holdout, "the holdout"
    else:
        order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
        cut = max(1, len(real) // 5)
        test, train_real = real.subset(order[:cut].sort().values), real.subset(order[cut:].sort().values)
        test_name = ("a seeded 20% split of the real data, TRTR training on the other 80%; the generator may have "
                     "seen them, give a labelled holdout for an unbiased test")
    tstr, tstr_k = _accuracy(train_and_test(synthetic, test, classes, steps, seed, device), test.labels, classes)
    trtr, trtr_k = _accuracy(train_and_test(train_real, test, classes, steps, seed, device), test.labels, classes)
    return {"tstr_accuracy": tstr, "trtr_accuracy": trtr, "tstr_trtr_ratio": _ratio(tstr, trtr),
            "utility_test_set": f"{len(test)} real images ({test_name})",
            "utility_classifier": f"small CNN, {steps} Adam steps of batch 64, seed {seed}, images at most "
                                  f"{CLASSIFIER_SIZE} px", "per_class_utility": (tstr_k, trtr_k)}


# ---- privacy ---------------------------------------------------------------------------------------------------

def _privacy(synthetic: ImageSet, real: ImageSet, holdout: ImageSet | None, rows: dict, space: str,
             device: torch.device, progress) -> dict:
    """DCR of every synthetic image (and holdout image) to the training set; see the module docstring.

    ``rows``: the vectors compared, per set ("synthetic", "real", "holdout"): features, or the flattened uint8
    images for ``space == "pixels"`` (integers, exact in float64: copies are at distance 0; reported in [-1, 1]
    units)."""
    from .metrics import nearest_neighbours
    scale = 1 / 127.5 if space == "pixels" else 1.0
    dcr, nearest = nearest_neighbours(rows["synthetic"], rows["real"], device=device, progress=progress)
    dcr, nearest = dcr[:, 0] * scale, nearest[:, 0]
    out = {"privacy_space": "pixels ([-1, 1] units, Euclidean)" if space == "pixels" else "features (Euclidean)",
           "dcr_median": float(dcr.median()), "dcr_5th_percentile": float(np.quantile(dcr.numpy(), MEMORIZED_QUANTILE)),
           "exact_copies": float((dcr == 0).double().mean())}
    if holdout is not None:
        hold = nearest_neighbours(rows["holdout"], rows["real"], device=device, progress=progress)[0][:, 0] * scale
        threshold = float(np.quantile(hold.numpy(), MEMORIZED_QUANTILE))
        flagged = (dcr < threshold).nonzero().flatten()
        out.update(memorized_share=float((dcr < threshold).double().mean()), memorized_threshold=threshold,
                   holdout_dcr_median=float(hold.median()),
                   holdout_exact_copies=float((hold == 0).double().mean()))
        if threshold == 0:
            out["privacy_note"] = ("at least 5% of the holdout images are exact copies of training images (duplicates "
                                   "across the split): the threshold is 0 and no synthetic image can fall below it")
        listed = flagged[dcr[flagged].argsort()]
    else:
        out.update(memorized_share=None, memorized_threshold=None, holdout_dcr_median=None,
                   privacy_note=("no holdout: without the distances of unseen real images to the training set there "
                                 "is no reference for how close a fresh sample comes to it, so no share can be called "
                                 "memorised (memorized_share is null); exact copies and the closest pairs are listed "
                                 "for inspection"))
        listed = dcr.argsort()[:NEAR_DUPLICATES_LISTED]
    out["near_duplicates"] = [{"synthetic": synthetic.ids[i], "synthetic_index": i, "train": real.ids[nearest[i]],
                               "train_index": int(nearest[i]), "distance": float(dcr[i])}
                              for i in listed[:NEAR_DUPLICATES_LISTED].tolist()]
    out["near_duplicates_found"] = len(listed) if holdout is not None else None
    out["_pairs"] = [(i, int(nearest[i])) for i in listed[:PICTURE_PAIRS].tolist()]
    return out


# ---- pictures and text -----------------------------------------------------------------------------------------

def _pairs_picture(path: str, synthetic: ImageSet, real: ImageSet, pairs: list[tuple[int, int]]) -> None:
    """Rows of (synthetic | nearest training image) pairs, four pairs per row, upscaled to at least 48 px."""
    from PIL import Image
    c, h, w = synthetic.images.shape[1:]
    scale = max(1, math.ceil(48 / max(h, w)))
    tile_h, tile_w, gap = h * scale, w * scale, 2 * scale
    per_row = min(4, len(pairs))
    rows = math.ceil(len(pairs) / per_row)
    canvas = np.full((rows * (tile_h + gap) + gap, per_row * (2 * tile_w + 3 * gap) + gap, 3), 255, np.uint8)
    for n, (i, j) in enumerate(pairs):
        top = gap + (n // per_row) * (tile_h + gap)
        left = gap + (n % per_row) * (2 * tile_w + 3 * gap)
        for k, img in enumerate((synthetic.images[i], real.images[j])):
            a = img.numpy().transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1)
            x = left + k * (tile_w + gap // 2)
            canvas[top:top + tile_h, x:x + tile_w] = a if c == 3 else a[..., :1]
    Image.fromarray(canvas).save(path)


def _histogram_picture(path: str, histograms) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    real, fake = histograms
    fig, axes = plt.subplots(1, len(real), figsize=(4 * len(real), 2.6), squeeze=False)
    names = ["grey"] if len(real) == 1 else ["red", "green", "blue"]
    for ax, name, hr, hf in zip(axes[0], names, real, fake):
        ax.step(range(256), hr.numpy(), where="mid", label="real", color="tab:blue")
        ax.step(range(256), hf.numpy(), where="mid", label="synthetic", color="tab:orange", alpha=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{name} channel: pixel values")
        ax.set_xlabel("value (0-255)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def summary(report: dict) -> str:
    """The one-screen text summary of a report."""
    lines = [(f"synthetic: {report['n_synthetic']} images ({report['synthetic']}); real: {report['n_real']} "
             f"({report['real']}); holdout: {report['n_holdout'] or 'none'}"),
             f"features: {report['features']}",
             (f"fidelity   FD {_fmt(report['fd'])}   KID {_fmt(report['kid'], 5)} ± {_fmt(report['kid_std'], 5)}   "
             f"precision {_fmt(report['precision'])}   recall {_fmt(report['recall'])}   "
             f"density {_fmt(report['density'])}   coverage {_fmt(report['coverage'])}"),
             "pixels     histogram TV distance per channel " + ", ".join(_fmt(t) for t in report["pixel_tv_distance"])]
    if report["tstr_accuracy"] is not None:
        lines.append(f"utility    TSTR {_fmt(report['tstr_accuracy'])}   TRTR {_fmt(report['trtr_accuracy'])}   "
                     f"ratio {_fmt(report['tstr_trtr_ratio'])}   tested on {report['utility_test_set']}")
    else:
        lines.append(f"utility    n/a: {report['utility_note']}")
    if report["memorized_share"] is not None:
        lines.append(f"privacy    memorized_share {_fmt(report['memorized_share'])} (closer to the training set than "
                     f"95% of the holdout; ~0.05 without copying)")
        lines.append(f"           DCR median {_fmt(report['dcr_median'])} vs holdout "
                     f"{_fmt(report['holdout_dcr_median'])}"
                     f"; threshold {_fmt(report['memorized_threshold'])}; near-duplicates "
                     f"{report['near_duplicates_found']}; exact copies {_fmt(report['exact_copies'])}")
    else:
        lines.append(f"privacy    DCR median {_fmt(report['dcr_median'])}; exact copies "
                     f"{_fmt(report['exact_copies'])}; "
                     f"memorized_share n/a (no holdout: give real images G never saw)")
    per_class = report.get("per_class") or {}
    cells = [f"{k}: FD {_fmt(v.get('fd'), 1)} TSTR {_fmt(v.get('tstr_accuracy'), 2)}" for k, v in per_class.items()]
    if len(cells) > 20:
        cells = cells[:20] + [f"... {len(cells) - 20} more classes in report.md"]
    for start in range(0, len(cells), 5):
        lines.append(("per class  " if start == 0 else " " * 11) + "   ".join(cells[start:start + 5]))
    lines += [f"  note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def _markdown(report: dict) -> str:
    rows = [("n_synthetic / n_real / n_holdout", (f"{report['n_synthetic']} / {report['n_real']} / "
                                                 f"{report['n_holdout'] or '-'}"))]
    rows += [(key, _fmt(report[key], 5 if key == "kid" else 3)) for key in
             ("fd", "kid", "precision", "recall", "density", "coverage", "tstr_accuracy", "trtr_accuracy",
              "tstr_trtr_ratio", "memorized_share", "memorized_threshold", "dcr_median", "holdout_dcr_median",
              "exact_copies")]
    text = ["# Synthetic data validation", "", (f"Synthetic: `{report['synthetic']}`; real: `{report['real']}`; "
            f"holdout: `{report['holdout']}`."), "", f"Features: {report['features']}.", "",
            "| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if report["per_class"]:
        keys = ["n_synthetic", "n_real", "fd", "kid", "precision", "recall", "density", "coverage",
                "tstr_accuracy", "trtr_accuracy", "tstr_trtr_ratio"]
        text += ["", "## Per class", "", "| class | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        text += [f"| {k} | " + " | ".join(_fmt(v.get(key), 4 if key == "kid" else 3) for key in keys) + " |"
                 for k, v in report["per_class"].items()]
    text += ["", "## Privacy", "", (f"DCR: distance of each synthetic image to its nearest training image, "
             f"{report['privacy_space']}. memorized_share: share of synthetic images strictly closer than the "
             f"holdout's 5th percentile ({_fmt(report['memorized_threshold'])})."), ""]
    text += [report["privacy_note"], ""] if report.get("privacy_note") else []
    pairs = report["near_duplicates"]
    if pairs:
        title = "Near-duplicates" if report["memorized_share"] is not None else "Closest pairs"
        text += [f"{title} ({len(pairs)} listed, closest first; picture: the first {min(len(pairs), PICTURE_PAIRS)}):",
                 "", "| synthetic | nearest training image | distance |", "|---|---|---|"]
        text += [f"| {d['synthetic']} | {d['train']} | {d['distance']:.4g} |" for d in pairs[:10]]
        text += ["", "![synthetic | nearest training image](near_duplicates.png)", ""]
    else:
        text += ["No synthetic image is closer to the training set than the holdout's 5th percentile.", ""]
    text += ["## Pixel statistics", "", "Total-variation distance of the per-channel histograms: "
             + ", ".join(_fmt(t) for t in report["pixel_tv_distance"]) + ".", "",
             "![per-channel pixel histograms](pixel_histograms.png)", ""]
    text += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] if report["notes"] else []
    return "\n".join(text) + "\n"


# ---- the whole validation --------------------------------------------------------------------------------------

def validate(synthetic, real, holdout=None, out: str | None = None, *, max_samples: int | None = None,
             seed: int = 0, features: str | None = None, seeds: str | None = None, weights: str = "G_ema",
             privacy_space: str = "pixels", utility_steps: int = 500, device: str | torch.device | None = None,
             progress: bool = True, verbose: bool = False) -> dict:
    """Validates ``synthetic`` images against the ``real`` (training) data; returns the report (a dict).

    synthetic: a ``ganfast sample`` folder (any format), an npz shard, a folder of images, a run folder or
    checkpoint together with ``seeds`` (generated in memory), or an ``(images, labels)`` pair / tensor
    (uint8 or [-1, 1] NCHW). real, holdout: anything ``ganfast train --dataset`` takes (labels included), or
    an ``(images, labels)`` pair / tensor. holdout: real images the generator was not trained on (privacy
    reference; TSTR/TRTR test set when labelled). out: folder for report.json, report.md and the pictures
    (None: nothing written). max_samples: each set is subsampled (seeded) to at most this many images.
    features: an Inception TorchScript file, "digits" or "pixels" (default: see the module docstring).
    privacy_space: "pixels" or "features" (the feature space above) for the DCR. verbose: print the summary.
    """
    from tqdm.auto import tqdm
    if privacy_space not in ("pixels", "features"):
        raise ValueError(f"privacy_space must be 'pixels' or 'features'; got {privacy_space!r}")
    if max_samples is not None and max_samples < 6:
        raise ValueError(f"max_samples must be >= 6; got {max_samples}")
    if not isinstance(utility_steps, int) or utility_steps < 1:
        raise ValueError(f"utility_steps must be an int >= 1; got {utility_steps!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    stages = ["reading", "features", "fidelity", "per class", "utility", "privacy", "pictures"]
    bar = tqdm(total=len(stages), desc="validate", unit="stage", disable=not progress, dynamic_ncols=True)
    notes = []

    def stage(name):
        bar.set_description(f"validate: {name}")

    stage("reading")
    if seeds is not None:
        if not isinstance(synthetic, (str, os.PathLike)):
            raise ValueError("seeds: give a run folder or checkpoint as synthetic to generate from")
        syn = _generate(os.fspath(synthetic), seeds, weights, device, progress)
    elif isinstance(synthetic, (str, os.PathLike)):
        if os.path.isfile(os.path.join(synthetic, "checkpoint.safetensors")) or \
                os.fspath(synthetic).endswith(".safetensors"):
            raise ValueError(f"synthetic: {os.fspath(synthetic)!r} is a training run; give --seeds to generate "
                             f"samples from it, or a folder written by `ganfast sample`")
        syn, note = read_samples(os.fspath(synthetic), progress)
        notes += [note] if note else []
    else:
        syn, note = _load_real(synthetic, 0, "synthetic")
        notes += [note] if note else []
    _c, h, w = syn.images.shape[1:]
    if h != w:
        raise ValueError(f"synthetic: images are {h}x{w}; validate compares square images like the data sets")
    sets = {"real": _load_real(real, h, "real")}
    if holdout is not None:
        sets["holdout"] = _load_real(holdout, h, "holdout")
    for name, (images, note) in sets.items():
        notes += [note] if note else []
        if images.images.shape[1:] != syn.images.shape[1:]:
            raise ValueError(f"{name}: {images.source!r} has {'x'.join(map(str, images.images.shape[1:]))} images "
                             f"(CxHxW), the synthetic ones are {'x'.join(map(str, syn.images.shape[1:]))}")
    real_set = sets["real"][0]
    hold = sets["holdout"][0] if holdout is not None else None
    syn, real_set = _subsample(syn, max_samples, seed), _subsample(real_set, max_samples, seed + 1)
    hold = _subsample(hold, max_samples, seed + 2) if hold is not None else None
    for name, s in (("synthetic", syn), ("real", real_set), ("holdout", hold)):
        if s is not None and len(s) < 6:
            raise ValueError(f"{name}: {s.source!r} holds {len(s)} images; validation needs at least 6")
    if max_samples is not None:
        notes.append(f"each set subsampled (seed {seed}) to at most {max_samples} images: distances to the training "
                     f"set are to the subsample")
    bar.update()

    stage("features")
    feature_name, extract = _feature_space(features, real_set, real, device)
    f_syn, f_real = _features(extract, syn.images, progress), _features(extract, real_set.images, progress)
    bar.update()

    stage("fidelity")
    report = {"synthetic": syn.source, "real": real_set.source, "holdout": hold.source if hold is not None else None,
              "n_synthetic": len(syn), "n_real": len(real_set), "n_holdout": len(hold) if hold is not None else None,
              "features": feature_name, **_fidelity(f_real, f_syn, seed, device)}
    pixels = _pixel_stats(real_set.images, syn.images)
    report.update(pixel_tv_distance=pixels["tv_distance"], pixel_mean_real=pixels["mean_real"],
                  pixel_mean_synthetic=pixels["mean_synthetic"])
    bar.update()

    stage("per class")
    labelled = syn.labels is not None and real_set.labels is not None
    classes = 0
    if labelled:
        classes = int(max(real_set.labels.max(), syn.labels.max(), hold.labels.max() if hold is not None and
                          hold.labels is not None else 0)) + 1
    per_class = {}
    for k in range(classes):
        in_syn, in_real = syn.labels == k, real_set.labels == k
        entry = {"n_synthetic": int(in_syn.sum()), "n_real": int(in_real.sum())}
        if min(entry.values()) >= MIN_PER_CLASS:
            entry.update(_fidelity(f_real[in_real.to(f_real.device)], f_syn[in_syn.to(f_syn.device)], seed, device))
        per_class[str(k)] = entry
    if labelled and any("fd" not in v for v in per_class.values()):
        notes.append(f"classes with fewer than {MIN_PER_CLASS} images on a side have no per-class fidelity figures")
    bar.update()

    stage("utility")
    report.update(tstr_accuracy=None, trtr_accuracy=None, tstr_trtr_ratio=None, utility_test_set=None)
    if labelled:
        utility = _utility(syn, real_set, hold, classes, utility_steps, seed, device)
        tstr_k, trtr_k = utility.pop("per_class_utility")
        report.update(utility)
        for k in range(classes):
            per_class[str(k)].update(tstr_accuracy=tstr_k[k], trtr_accuracy=trtr_k[k],
                                     tstr_trtr_ratio=_ratio(tstr_k[k], trtr_k[k]))
        report["utility_note"] = None
    else:
        missing = [name for name, s in (("synthetic", syn), ("real", real_set)) if s.labels is None]
        report["utility_note"] = f"no class labels for the {' and '.join(missing)} images (TSTR/TRTR need both)"
    report["per_class"] = per_class or None
    bar.update()

    stage("privacy")
    with tqdm(total=len(syn) + (len(hold) if hold is not None else 0), desc="nearest training images", unit="img",
              disable=not progress, leave=False, dynamic_ncols=True) as nn_bar:
        if privacy_space == "pixels":
            rows = {"synthetic": syn.images.flatten(1), "real": real_set.images.flatten(1),
                    "holdout": hold.images.flatten(1) if hold is not None else None}
        else:
            rows = {"synthetic": f_syn, "real": f_real,
                    "holdout": _features(extract, hold.images) if hold is not None else None}
        privacy = _privacy(syn, real_set, hold, rows, privacy_space, device, nn_bar)
    pairs = privacy.pop("_pairs")
    report.update(privacy)
    bar.update()

    stage("pictures")
    report["notes"] = notes
    if out is not None:
        os.makedirs(out, exist_ok=True)
        picture = os.path.join(out, "near_duplicates.png")
        if pairs:
            _pairs_picture(picture, syn, real_set, pairs)
        elif os.path.exists(picture):  # from an earlier report in this folder
            os.remove(picture)
        _histogram_picture(os.path.join(out, "pixel_histograms.png"), pixels["histograms"])
        with open(os.path.join(out, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(out, "report.md"), "w") as f:
            f.write(_markdown(report))
    bar.update()
    bar.close()
    if verbose:
        print(summary(report))
    return report
