"""Metrics of a run's network snapshots, named as StyleGAN2-ADA names them, appended to ``metric-<name>.jsonl``.

A name is ``<kind><count>[<k>][_full]``: kind ``fid`` (Fréchet Inception distance), ``kid`` (kernel inception
distance, Bińkowski et al. 2018: unbiased MMD², mean over 100 subsets of at most 1000), ``pr`` (improved
precision/recall, Kynkäänniemi et al. 2019, ``k`` neighbours, default 3) or ``fd`` (Fréchet distance in whatever
features are used); count = fakes generated, ``50k`` = 50000 (small counts such as ``fd500`` or ``kid2k`` are for
quick checks and tests); ``_full`` compares with every real image, else with at most ``count`` of them (drawn with
a fixed seed). Examples: ``fid50k_full``, ``kid50k_full``, ``pr50k3_full``, ``fd1k``.

``modes[<count>]`` is mode coverage on ``stacked-digits`` (:mod:`ganfast.metrics.modes`): modes covered of 1000
and KL(fakes' mode histogram || uniform) of ``count`` fakes (default 26k, 26 per mode; a uniform generator's
expected KL is then 0.019), the share of fakes read confidently, and the digit classifier's accuracy on as many
reals.

Features: a TorchScript Inception file given by ``inception`` or ``$GANFAST_INCEPTION`` (nothing is downloaded);
without one ``fd``, ``kid`` and ``pr`` use the built-in digits classifier's features on the ``digits`` data set
(on ``stacked-digits``: the features of each channel, concatenated), and ``fid`` is refused. Each record holds the
snapshot's file name, its kimg, the features and the counts.
"""
from __future__ import annotations

import json
import os
import re
import time

import torch

INCEPTION_ENV = "GANFAST_INCEPTION"
_NAME = re.compile(r"^(?P<kind>fid|kid|fd|pr|modes)(?P<count>\d*)(?P<thousands>k?)(?P<k>\d*)(?P<full>_full)?$")
MODES_COUNT = 26_000  # fakes of a bare ``modes``


def parse_metric(name: str) -> dict:
    """``{"kind", "count", "k", "full"}`` of a metric name; a ValueError naming it when it is not one."""
    m = _NAME.match(name)
    modes = m is not None and m["kind"] == "modes"
    if m is None or (m["k"] and (m["kind"] != "pr" or not m["thousands"])) or \
            (not m["count"] and not (modes and not m["thousands"])) or (modes and m["full"]):
        raise ValueError(f"metric {name!r}: expected <fid|kid|fd|pr><count>[k][_full] or modes[<count>[k]], e.g. "
                         "fid50k_full, kid50k_full, pr50k3_full, fd1k, modes, modes10k")
    count = int(m["count"]) * (1000 if m["thousands"] else 1) if m["count"] else MODES_COUNT
    k = int(m["k"] or 3)
    if count < max(2, k + 1):
        raise ValueError(f"metric {name!r}: needs more than {max(1, k)} samples")
    return {"kind": m["kind"], "count": count, "k": k, "full": bool(m["full"])}


def feature_extractor(dataset, inception: str | None, device) -> tuple[str, object]:
    """``(features name, extractor)``: the Inception file (``inception`` or ``$GANFAST_INCEPTION``), else the
    digits classifier for the digits data set; else a ValueError saying what to give."""
    from .frechet import inception_extractor
    inception = inception or os.environ.get(INCEPTION_ENV) or None
    if inception:
        return "inception", inception_extractor(inception, device)
    if dataset.name in ("digits", "stacked-digits"):
        from .digits_classifier import digits_extractor
        extract = digits_extractor(dataset.sample_shape[-1], device)
        if dataset.name == "digits":
            return "digits", extract
        return "stacked-digits", lambda images: torch.cat([extract(images[:, k:k + 1]) for k in range(3)], dim=1)
    raise ValueError(f"metrics on {dataset.name!r} need an Inception TorchScript file: --inception PATH or "
                     f"${INCEPTION_ENV} (ganfast downloads nothing; the digits data sets have built-in features)")


@torch.no_grad()
def generated_images(G: torch.nn.Module, count: int, batch_size: int = 256) -> torch.Tensor:
    """float images in [-1, 1] of seeds 0..count-1 (``ganfast.sample``'s latents and uint8 rounding)."""
    from ..sampling import sample
    chunks = [torch.from_numpy(b.images).permute(0, 3, 1, 2) for b in sample(G, range(count), batch_size)]
    return torch.cat(chunks).float() / 127.5 - 1


def compute_metric(name: str, G: torch.nn.Module, dataset, features: tuple[str, object], seed: int = 0,
                   real_cache: dict | None = None) -> dict:
    """One metric of generator ``G`` against ``dataset`` (its stored images, without x-flips)."""
    from .frechet import extract_features, frechet_distance
    from .kid import kernel_inception_distance
    from .precision_recall import precision_recall
    spec = parse_metric(name)
    if spec["kind"] == "modes":
        return _modes_metric(name, spec["count"], G, dataset, seed, real_cache)
    feature_name, extractor = features
    if spec["kind"] == "fid" and feature_name != "inception":
        raise ValueError(f"metric {name!r} needs an Inception file (--inception PATH or ${INCEPTION_ENV}); "
                         f"fd{name[3:]} is the Fréchet distance in the {feature_name} features")
    n = dataset.num_stored if spec["full"] else min(spec["count"], dataset.num_stored)
    key = (feature_name, n)
    cache = real_cache if real_cache is not None else {}
    if key not in cache:
        index = torch.randperm(dataset.num_stored, generator=torch.Generator().manual_seed(seed))[:n].sort().values
        cache[key] = torch.cat([extract_features(extractor, dataset.batch(index[i:i + 1024]))
                                for i in range(0, n, 1024)])
    real = cache[key]
    fake = extract_features(extractor, generated_images(G, spec["count"]))
    if spec["kind"] in ("fid", "fd"):
        results = {spec["kind"]: frechet_distance(real, fake)}
    elif spec["kind"] == "kid":
        results = kernel_inception_distance(real, fake, seed=seed)
    else:
        results = precision_recall(real, fake, k=spec["k"])
    return {"metric": name, "results": results, "features": feature_name, "num_fakes": spec["count"],
            "num_reals": n}


def _modes_metric(name: str, count: int, G: torch.nn.Module, dataset, seed: int, real_cache: dict | None) -> dict:
    """``modes``: mode coverage of ``count`` fakes and the classifier's accuracy on ``count`` reals at most."""
    from .modes import classifier_accuracy, fake_modes, read_stacked_digits
    if dataset.name != "stacked-digits":
        raise ValueError(f"metric {name!r}: mode coverage is defined on the stacked-digits data set; got "
                         f"{dataset.name!r}")
    n = min(count, dataset.num_stored)
    cache = real_cache if real_cache is not None else {}
    if ("modes", n) not in cache:
        index = torch.randperm(dataset.num_stored, generator=torch.Generator().manual_seed(seed))[:n].sort().values
        cache[("modes", n)] = classifier_accuracy(read_stacked_digits(dataset.batch(index)), dataset.labels[index])
    coverage = fake_modes(read_stacked_digits(generated_images(G, count)))
    return {"metric": name, "results": {"modes": coverage["modes"], "kl": coverage["kl"],
                                        "confident": coverage["confident"], **cache[("modes", n)]},
            "features": "digits-classifier", "num_fakes": count, "num_reals": n}


def evaluate_snapshot(path: str, names: list[str], data: str | None = None, inception: str | None = None,
                      device="cpu", cache: dict | None = None) -> list[dict]:
    """Computes ``names`` for the generator (G_ema) of a snapshot or checkpoint file and appends each result to
    ``metric-<name>.jsonl`` beside it; ``data`` replaces the run's own data set. Returns the records."""
    from ..data import load_dataset
    from ..checkpoint import checkpoint_extra, load_generator
    extra = checkpoint_extra(path)
    run = extra.get("run") or {}
    data = data or run.get("dataset")
    if data is None:
        raise ValueError(f"metrics: {path!r} does not name its data set; give --data")
    cache = {} if cache is None else cache
    if data not in cache:
        dataset = load_dataset(data, resolution=run.get("resolution"))
        needs_features = any(parse_metric(name)["kind"] != "modes" for name in names)
        cache[data] = (dataset, feature_extractor(dataset, inception, device) if needs_features else None, {})
    dataset, features, real_cache = cache[data]
    G = load_generator(path, device=device)
    records = []
    for name in names:
        started = time.perf_counter()
        record = {"snapshot": os.path.basename(path), "kimg": extra.get("nimg", 0) / 1000, "data": data,
                  **compute_metric(name, G, dataset, features, real_cache=real_cache),
                  "seconds": 0.0, "time": time.time()}
        record["seconds"] = time.perf_counter() - started
        with open(os.path.join(os.path.dirname(os.path.abspath(path)), f"metric-{name}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        records.append(record)
    return records


def snapshot_metrics_hook(names: list[str], inception: str | None = None, device="cpu"):
    """A ``Trainer`` ``snapshot_hook``: :func:`evaluate_snapshot` on each network snapshot (data set and real
    features loaded once), its results printed."""
    cache: dict = {}
    names = [n for n in names if parse_metric(n)]

    def hook(path: str) -> None:
        for record in evaluate_snapshot(path, names, inception=inception, device=device, cache=cache):
            shown = ", ".join(f"{k} {v:.4g}" for k, v in record["results"].items() if isinstance(v, (int, float)))
            print(f"{record['metric']} of {record['snapshot']}: {shown}", flush=True)

    return hook
