"""Metrics of a run's network snapshots, named as StyleGAN2-ADA names them, appended to ``metric-<name>.jsonl``.

A name is ``<kind><count>[<k>][_full]``: kind ``fid`` (Fréchet Inception distance), ``kid`` (kernel inception
distance, Bińkowski et al. 2018: unbiased MMD², mean over 100 subsets of at most 1000), ``pr`` (improved
precision/recall, Kynkäänniemi et al. 2019, ``k`` neighbours, default 3) or ``fd`` (Fréchet distance in whatever
features are used); count = fakes generated, ``50k`` = 50000 (small counts such as ``fd500`` or ``kid2k`` are for
quick checks and tests); ``_full`` compares with every real image, else with at most ``count`` of them (drawn with
a fixed seed). Examples: ``fid50k_full``, ``kid50k_full``, ``pr50k3_full``, ``fd1k``.

``ppl2_wend`` is StyleGAN2-ADA's perceptual path length (:mod:`ganfast.metrics.ppl`: 50,000 pairs, W space,
path ends, LPIPS-VGG16 from ``lpips``, ``$GANFAST_LPIPS`` or the VGG16 file of ``pr``), for generators with a
mapping network; it uses no real images.

``modes[<count>]`` is mode coverage on ``stacked-digits`` (:mod:`ganfast.metrics.modes`): modes covered of 1000
and KL(fakes' mode histogram || uniform) of ``count`` fakes (default 26k, 26 per mode; a uniform generator's
expected KL is then 0.019), the share of fakes read confidently, and the digit classifier's accuracy on as many
reals.

Features: an Inception file given by ``inception`` or ``$GANFAST_INCEPTION`` for ``fid``/``kid``/``fd``, and a VGG16
file (``vgg16`` or ``$GANFAST_VGG16``) for ``pr`` as StyleGAN2-ADA computes it (without one ``pr`` uses the Inception
features); any format :mod:`ganfast.metrics.detectors` reads, nothing downloaded. Without an Inception file ``fd``,
``kid`` and ``pr`` use the built-in digits classifier's features on the ``digits`` data set (on ``stacked-digits``:
the features of each channel, concatenated), and ``fid`` is refused. A count above the images the data set holds is
refused (``_full`` uses them all). The real features of each data set and detector file are cached on disk, keyed by
the images' bytes, the file's SHA-256, the mode and the precision. Each record holds the snapshot's file name, its
kimg, the features, the counts, ``fake_seconds`` and ``fake_images_per_second`` (generation and feature extraction
of the fakes) and ``real_seconds`` / ``real_images_per_second`` (None when the real features came from a cache).
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import threading
import time
from typing import Callable, Iterable, Iterator

import torch

INCEPTION_ENV, VGG16_ENV = "GANFAST_INCEPTION", "GANFAST_VGG16"
FEATURE_CACHE_VERSION = 1  # bump when extraction changes: older cached features are then never read
_NAME = re.compile(r"^(?P<kind>fid|kid|fd|pr|modes)(?P<count>\d*)(?P<thousands>k?)(?P<k>\d*)(?P<full>_full)?$")
MODES_COUNT = 26_000  # fakes of a bare ``modes``


def parse_metric(name: str) -> dict:
    """``{"kind", "count", "k", "full"}`` of a metric name; a ValueError naming it when it is not one."""
    from .ppl import PPL_NAME, PPL_SAMPLES
    if name == PPL_NAME:
        return {"kind": "ppl", "count": PPL_SAMPLES, "k": 0, "full": False}
    m = _NAME.match(name)
    modes = m is not None and m["kind"] == "modes"
    if m is None or (m["k"] and (m["kind"] != "pr" or not m["thousands"])) or \
            (not m["count"] and not (modes and not m["thousands"])) or (modes and m["full"]):
        raise ValueError(f"metric {name!r}: expected <fid|kid|fd|pr><count>[k][_full], modes[<count>[k]] or "
                         "ppl2_wend, e.g. fid50k_full, kid50k_full, pr50k3_full, fd1k, modes, modes10k")
    count = int(m["count"]) * (1000 if m["thousands"] else 1) if m["count"] else MODES_COUNT
    k = int(m["k"] or 3)
    if count < max(2, k + 1):
        raise ValueError(f"metric {name!r}: needs more than {max(1, k)} samples")
    return {"kind": m["kind"], "count": count, "k": k, "full": bool(m["full"])}


class Features:
    """A named feature space: ``extract`` maps uint8 ``(N, C, H, W)`` images to ``(N, F)`` features; ``key`` (None:
    do not cache) identifies the detector file and mode for the on-disk cache of real features."""

    def __init__(self, name: str, extract, key: str | None = None, batch_size: int = 64):
        self.name, self.extract, self.key, self.batch_size = name, extract, key, batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.extract(images[i:i + self.batch_size]).double()
                          for i in range(0, len(images), self.batch_size)])


def detector_features(path: str, kind: str, mode: str | None, device, precision: str = "fast") -> Features:
    """:class:`Features` of the Inception or VGG16 network in ``path`` (see :func:`detectors.load_detector`)."""
    from .detectors import load_detector
    detector = load_detector(path, kind, mode=mode, device=device, precision=precision)
    return Features(kind, detector, key=f"{kind}-{detector.digest}-{detector.mode}-{detector.precision}")


def feature_extractor(dataset, inception: str | None, device, mode: str | None = None,
                      precision: str = "fast") -> Features:
    """The Inception file (``inception`` or ``$GANFAST_INCEPTION``) run in ``precision``, else the digits
    classifier for the digits data set; else a ValueError saying what to give."""
    inception = inception or os.environ.get(INCEPTION_ENV) or None
    if inception:
        return detector_features(inception, "inception", mode, device, precision)
    if dataset.name in ("digits", "stacked-digits"):
        from .digits_classifier import digits_extractor
        extract = digits_extractor(dataset.sample_shape[-1], device)
        if dataset.name == "digits":
            return Features("digits", lambda x: extract(x.to(device).float() / 127.5 - 1))
        return Features("stacked-digits", lambda x: torch.cat(
            [extract(x[:, k:k + 1].to(device).float() / 127.5 - 1) for k in range(3)], dim=1))
    raise ValueError(f"metrics on {dataset.name!r} need an Inception file: --inception PATH or ${INCEPTION_ENV} "
                     "(NVlabs' .pkl, a TorchScript .pt or pytorch-fid's state dict; ganfast downloads nothing; the "
                     "digits data sets have built-in features)")


def generated_images(G: torch.nn.Module, count: int, batch_size: int = 256):
    """uint8 ``(n, C, H, W)`` batches of the images of seeds 0..count-1 (``ganfast.sample``'s latents)."""
    from ..sampling import sample
    for b in sample(G, range(count), batch_size):
        yield torch.from_numpy(b.images).permute(0, 3, 1, 2)


def produced_ahead(batches: Iterable, depth: int = 2, device=None, threads: int | None = None) -> Iterator:
    """The items of ``batches`` in order, produced by a thread that runs at most ``depth`` items ahead of the
    caller: torch ops release the GIL, so making item i+1 (a generator forward, uint8 quantisation) overlaps the
    caller's work on item i. On a CUDA ``device`` the producer enqueues its work on a stream of its own;
    ``threads``: the producer's torch CPU threads (None: the process's setting). An exception in the producer is
    raised here; leaving the loop early stops the producer."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        device_ = torch.device(device) if device is not None else torch.device("cpu")
        stream = torch.cuda.Stream(device_) if device_.type == "cuda" else None
        iterator = iter(batches)
        if threads is not None:
            torch.set_num_threads(threads)  # this thread's OpenMP team (the caller restores the process setting)
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                for item in iterator:
                    if stream is not None:
                        stream.synchronize()  # the item is complete before the caller sees it
                    if not put((item, None)):
                        return
            put((end, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            put((end, exc))
        finally:
            getattr(iterator, "close", lambda: None)()

    thread = threading.Thread(target=produce, name="ganfast-producer", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def extract_all(features, batches: Iterable, overlap: bool | None = None, device=None, split_threads: bool = False
                ) -> tuple[torch.Tensor, float]:
    """``(features of every image, seconds)`` of uint8 ``(n, C, H, W)`` ``batches``, made on ``device``;
    ``overlap`` (None: on): batches are produced ahead by a thread (:func:`produced_ahead`); ``split_threads``:
    the producer and the caller share the torch CPU threads (half each, at least one) instead of having them each.
    The features are the same either way. Defaults measured on a CPU (benchmarks/test_bench_metrics.py, README
    "Feature extraction speed"): at 2 threads overlapping beat the sequential path, and splitting the threads
    helped only where generation cost as much as extraction, not with Inception at 299 px."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    overlap = True if overlap is None else overlap
    threads = torch.get_num_threads()
    producer = max(1, threads // 2) if overlap and split_threads else None
    started = time.perf_counter()
    if producer is not None:
        torch.set_num_threads(max(1, threads - producer))
    try:
        source = produced_ahead(batches, device=device, threads=producer) if overlap else batches
        feats = torch.cat([features(batch) for batch in source])
    finally:
        if producer is not None:
            torch.set_num_threads(threads)
    return feats, time.perf_counter() - started


def _features_folder() -> str:
    base = os.environ.get("GANFAST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ganfast")
    return os.path.join(base, "features")


def real_features(dataset, index: torch.Tensor, features: Features, memory: dict | None = None
                  ) -> tuple[torch.Tensor, float | None]:
    """``(features, seconds)`` of ``dataset``'s images at ``index``: from ``memory``, else the disk cache (keyed by
    the images' bytes and ``features.key``; seconds None), else computed (and stored in both, the file written
    atomically; seconds: the extraction's)."""
    import hashlib

    from safetensors.torch import load_file, save

    from .._io import atomic_write
    memory = {} if memory is None else memory
    h = hashlib.sha256(f"{FEATURE_CACHE_VERSION}:{features.key}:{len(index)}".encode())
    for i in range(0, len(index), 1024):
        h.update(dataset.rows(index[i:i + 1024]).contiguous().numpy().tobytes())
    key = (features.name, h.hexdigest())
    if key in memory:
        return memory[key], None
    path = os.path.join(_features_folder(), f"{features.name}-{key[1][:40]}.safetensors")
    if features.key is not None and os.path.isfile(path):
        try:
            memory[key] = load_file(path)["features"].double()
            return memory[key], None
        except Exception:  # an unreadable cache file is recomputed and replaced
            pass
    feats, seconds = extract_all(features, (dataset.rows(index[i:i + 1024]) for i in range(0, len(index), 1024)),
                                 overlap=False)
    if features.key is not None:
        atomic_write(path, lambda f: f.write(save({"features": feats.float().contiguous()})))
    memory[key] = feats
    return feats, seconds


def _timing(who: str, count: int, seconds: float | None) -> dict:
    """``<who>_seconds`` and ``<who>_images_per_second`` of an extraction (None: nothing was computed)."""
    return {f"{who}_seconds": seconds, f"{who}_images_per_second": None if seconds is None else count / seconds}


def compute_metric(name: str, G: torch.nn.Module, dataset, features: Features, seed: int = 0,
                   real_cache: dict | None = None, pr_features: Features | None = None, lpips=None,
                   overlap: bool | None = None) -> dict:
    """One metric of generator ``G`` against ``dataset`` (its stored images, without x-flips); ``pr_features``
    (VGG16) replace ``features`` for ``pr``; ``lpips`` (:func:`ganfast.metrics.ppl.load_lpips`) is ``ppl2_wend``'s
    network; ``overlap``: see :func:`extract_all`. The record holds the seconds and images/s of the fakes
    (generation and extraction) and of the reals (None when they came from a cache)."""
    from .frechet import frechet_distance
    from .kid import kernel_inception_distance
    from .precision_recall import precision_recall
    spec = parse_metric(name)
    if spec["kind"] == "modes":
        return _modes_metric(name, spec["count"], G, dataset, seed, real_cache, overlap)
    if spec["kind"] == "ppl":
        from .ppl import perceptual_path_length
        if lpips is None:
            raise ValueError(f"metric {name!r} needs an LPIPS network (ganfast.metrics.ppl.load_lpips)")
        result = perceptual_path_length(G, lpips, spec["count"])
        return {"metric": name, "results": {"ppl": result["ppl"]}, "features": lpips.name,
                "num_fakes": 2 * spec["count"], "num_reals": 0,
                **_timing("fake", 2 * spec["count"], spec["count"] / result["pairs_per_second"]),
                **_timing("real", 0, None)}
    if spec["kind"] == "fid" and features.name != "inception":
        raise ValueError(f"metric {name!r} needs an Inception file (--inception PATH or ${INCEPTION_ENV}); "
                         f"fd{name[3:]} is the Fréchet distance in the {features.name} features")
    if spec["kind"] == "pr" and pr_features is not None:
        features = pr_features
    if not spec["full"] and spec["count"] > dataset.num_stored:
        raise ValueError(f"metric {name!r} compares {spec['count']} fakes with as many reals, but {dataset.name!r} "
                         f"holds {dataset.num_stored} images: name a count it holds "
                         f"({spec['kind']}{dataset.num_stored}) or use {name}_full (all reals); a smaller sample "
                         "would give a different number under the same name")
    n = dataset.num_stored if spec["full"] else spec["count"]
    index = torch.randperm(dataset.num_stored, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    real, real_seconds = real_features(dataset, index, features, real_cache)
    device = next(G.parameters()).device
    fake, fake_seconds = extract_all(features, generated_images(G, spec["count"]), overlap, device)
    if spec["kind"] in ("fid", "fd"):
        results = {spec["kind"]: frechet_distance(real, fake)}
    elif spec["kind"] == "kid":
        results = kernel_inception_distance(real, fake, seed=seed)
    else:
        results = precision_recall(real, fake, k=spec["k"])
    return {"metric": name, "results": results, "features": features.name, "num_fakes": spec["count"],
            "num_reals": n, **_timing("fake", spec["count"], fake_seconds), **_timing("real", n, real_seconds)}


def _modes_metric(name: str, count: int, G: torch.nn.Module, dataset, seed: int, real_cache: dict | None,
                  overlap: bool | None) -> dict:
    """``modes``: mode coverage of ``count`` fakes and the classifier's accuracy on ``count`` reals at most."""
    from .modes import classifier_accuracy, fake_modes, read_stacked_digits
    if dataset.name != "stacked-digits":
        raise ValueError(f"metric {name!r}: mode coverage is defined on the stacked-digits data set; got "
                         f"{dataset.name!r}")
    n = min(count, dataset.num_stored)
    cache = real_cache if real_cache is not None else {}
    real_seconds = None
    if ("modes", n) not in cache:
        index = torch.randperm(dataset.num_stored, generator=torch.Generator().manual_seed(seed))[:n].sort().values
        started = time.perf_counter()
        cache[("modes", n)] = classifier_accuracy(read_stacked_digits(dataset.batch(index)), dataset.labels[index])
        real_seconds = time.perf_counter() - started
    read, fake_seconds = extract_all(lambda batch: read_stacked_digits(batch.float() / 127.5 - 1),
                                     generated_images(G, count), overlap, next(G.parameters()).device)
    coverage = fake_modes(read)
    return {"metric": name, "results": {"modes": coverage["modes"], "kl": coverage["kl"],
                                        "confident": coverage["confident"], **cache[("modes", n)]},
            "features": "digits-classifier", "num_fakes": count, "num_reals": n,
            **_timing("fake", count, fake_seconds), **_timing("real", n, real_seconds)}


def evaluate_snapshot(path: str, names: list[str], data: str | None = None, inception: str | None = None,
                      device="cpu", cache: dict | None = None, vgg16: str | None = None,
                      mode: str | None = None, lpips: str | None = None, precision: str = "fast",
                      overlap: bool | None = None,
                      log: Callable[[dict, list[dict]], list[str]] | None = None) -> list[dict]:
    """Computes ``names`` for the generator (G_ema) of a snapshot or checkpoint file and appends each result to
    ``metric-<name>.jsonl`` beside it; ``data`` replaces the run's own data set; ``mode`` and ``precision``: how
    images reach the detectors and how they run (:mod:`ganfast.metrics.detectors`); ``overlap``: see
    :func:`extract_all`; ``lpips``: ``ppl2_wend``'s network file (:func:`ganfast.metrics.ppl.lpips_file`).
    ``log(record, earlier_lines)``, called before a line is written, sends the record to loggers and returns their
    names, kept in the line as ``loggers`` (:func:`ganfast.train.loggers.log_metric`). Returns the records."""
    from ..data import load_dataset
    from ..checkpoint import checkpoint_extra, load_generator
    from ..train.run_report import read_jsonl
    extra = checkpoint_extra(path)
    run = extra.get("run") or {}
    data = data or run.get("dataset")
    uses_data = any(parse_metric(name)["kind"] != "ppl" for name in names)  # ppl2_wend needs no real images
    if data is None and uses_data:
        raise ValueError(f"metrics: {path!r} does not name its data set; give --data")
    cache = {} if cache is None else cache
    if uses_data and data not in cache:
        dataset = load_dataset(data, resolution=run.get("resolution"))
        needs_features = any(parse_metric(name)["kind"] not in ("modes", "ppl") for name in names)
        vgg16 = vgg16 or os.environ.get(VGG16_ENV) or None
        pr_features = detector_features(vgg16, "vgg16", mode, device, precision) if vgg16 else None
        features = feature_extractor(dataset, inception, device, mode, precision) if needs_features else None
        cache[data] = (dataset, features, pr_features, {})
    dataset, features, pr_features, real_cache = cache[data] if uses_data else (None, None, None, None)
    perceptual = _lpips_network(names, lpips, vgg16, device, cache)
    G = load_generator(path, device=device)
    records = []
    for name in names:
        started = time.perf_counter()
        record = {"snapshot": os.path.basename(path), "kimg": extra.get("nimg", 0) / 1000, "data": data,
                  **compute_metric(name, G, dataset, features, real_cache=real_cache, pr_features=pr_features,
                                   lpips=perceptual, overlap=overlap),
                  "seconds": 0.0, "time": time.time()}
        record["seconds"] = time.perf_counter() - started
        lines = os.path.join(os.path.dirname(os.path.abspath(path)), f"metric-{name}.jsonl")
        if log is not None:
            record["loggers"] = log(record, read_jsonl(lines) if os.path.isfile(lines) else [])
        with open(lines, "a") as f:
            f.write(json.dumps(record) + "\n")
        records.append(record)
    return records


def _lpips_network(names: list[str], lpips: str | None, vgg16: str | None, device, cache: dict):
    """``ppl2_wend``'s LPIPS network when ``names`` ask for it (loaded once into ``cache``), else None."""
    from .ppl import load_lpips, lpips_file
    if not any(parse_metric(name)["kind"] == "ppl" for name in names):
        return None
    path = lpips_file(lpips, vgg16)
    if ("lpips", path) not in cache:
        cache[("lpips", path)] = load_lpips(path, device)
    return cache[("lpips", path)]


def snapshot_metrics_hook(names: list[str], inception: str | None = None, device="cpu", vgg16: str | None = None,
                          lpips: str | None = None, loggers: tuple[str, ...] = (), precision: str = "fast"):
    """A ``Trainer`` ``snapshot_hook``: :func:`evaluate_snapshot` on each network snapshot (data set and real
    features loaded once), its results printed and its records returned: the trainer sends them to its
    ``loggers``, which each line lists. The LPIPS file of ``ppl2_wend`` is read now, so a bad one fails before
    training."""
    cache: dict = {}
    names = [n for n in names if parse_metric(n)]
    _lpips_network(names, lpips, vgg16, device, cache)

    def hook(path: str) -> list[dict]:
        records = evaluate_snapshot(path, names, inception=inception, device=device, cache=cache, vgg16=vgg16,
                                    lpips=lpips, precision=precision, log=lambda record, earlier: list(loggers))
        for record in records:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in record["results"].items() if isinstance(v, (int, float)))
            rate = record.get("fake_images_per_second")
            print(f"{record['metric']} of {record['snapshot']}: {shown}" + (f" ({rate:.0f} fakes/s)" if rate else ""),
                  flush=True)
        return records

    return hook


def image_set(path: str, count: int | None, device="cpu", seed: int = 0):
    """``(label, uint8 (N, C, H, W) batches, the device that makes them)`` of an image set: a run folder or
    checkpoint (``count`` images of seeds 0..count-1 from its G_ema on ``device``, default 50000) or anything
    ``ganfast train --dataset`` takes (all its images, or a fixed random subset of ``count``; fewer than ``count``
    is refused)."""
    from ..checkpoint import CHECKPOINT_NAME, load_generator
    from ..data import load_dataset
    if path.endswith(".safetensors") or os.path.isfile(os.path.join(path, CHECKPOINT_NAME)):
        count = 50000 if count is None else count
        return (f"{count} images from {path}", generated_images(load_generator(path, device=device), count),
                torch.device(device))
    dataset = load_dataset(path)
    if dataset.is_2d:
        raise ValueError(f"fid: {path!r} is 2-D points, not images")
    if count is not None and count > dataset.num_stored:
        raise ValueError(f"fid: {path!r} holds {dataset.num_stored} images, fewer than --num {count}")
    n = dataset.num_stored if count is None else count
    index = torch.randperm(dataset.num_stored, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return (f"{n} images of {path}", (dataset.rows(index[i:i + 1024]) for i in range(0, n, 1024)),
            torch.device("cpu"))


def fid_between(path1: str, path2: str, inception: str | None = None, mode: str | None = None,
                count: int | None = None, device="cpu", batch_size: int = 64, precision: str = "fast",
                overlap: bool | None = None) -> dict:
    """FID of two image sets (see :func:`image_set`) with the Inception file ``inception`` (default
    ``$GANFAST_INCEPTION``) run in ``precision``; ``overlap``: see :func:`extract_all`. Returns ``{"fid", "num",
    "mode", "detector", "images_per_second", "seconds"}`` (the last two: loading and extracting both sets)."""
    from .frechet import feature_stats, frechet_distance
    inception = inception or os.environ.get(INCEPTION_ENV) or None
    if not inception:
        raise ValueError(f"fid needs an Inception file: --inception PATH or ${INCEPTION_ENV} (NVlabs' .pkl, a "
                         "TorchScript .pt or pytorch-fid's state dict; ganfast downloads nothing)")
    features = detector_features(inception, "inception", mode, device, precision)
    features.batch_size = batch_size
    stats, labels, done = [], [], 0
    started = time.perf_counter()
    for path in (path1, path2):
        label, batches, made_on = image_set(path, count, device)
        feats, _ = extract_all(features, batches, overlap, made_on)
        stats.append(feature_stats(feats))
        labels.append(label)
        done += len(feats)
    seconds = time.perf_counter() - started
    return {"fid": frechet_distance(*stats), "num": labels, "mode": features.extract.mode,
            "detector": features.extract.name, "images_per_second": done / seconds, "seconds": seconds}
