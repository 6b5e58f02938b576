"""Feature extraction throughput (images/s) of the metrics: the detector alone in each precision (exact: float32
NCHW; fast: float32 channels_last; bf16: bfloat16 autocast), and fakes end to end (generation, uint8
quantisation, features) sequential vs overlapped by a producer thread (with the torch threads shared or split).

The detectors have seeded random weights (ganfast ships none). pytest runs a smoke version (tiny generator,
Inception at 75 px, a few images); as a script it prints images/s with the load average:

    python benchmarks/test_bench_metrics.py [--threads 2] [--images 64] [--rounds 3] [--size 299]
"""
import argparse
import os
import statistics
import sys
import time

import pytest
import torch
from bench_support import DEVICE, ON_GPU, synced

from ganfast.metrics import detectors
from ganfast.metrics.report import Features, extract_all, generated_images
from ganfast.models import DCGANGenerator

PRECISIONS = ("exact", "fast", "bf16")
PIPELINES = {"sequential": dict(overlap=False), "overlapped": dict(overlap=True),
             "overlapped_split": dict(overlap=True, split_threads=True)}


def inception(precision: str) -> detectors.Detector:
    """FIDInceptionV3 with seeded random weights on DEVICE, ``legacy_pytorch`` resizing."""
    torch.manual_seed(0)
    net = detectors.FIDInceptionV3().eval().to(DEVICE)
    return detectors.Detector("inception", "random", "state-dict", "legacy_pytorch", "-", net, DEVICE, precision)


def generator(resolution: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return DCGANGenerator(z_dim=64, resolution=resolution, channels=3).eval().to(DEVICE)


def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "-"


@pytest.fixture
def small_inception(monkeypatch):
    monkeypatch.setitem(detectors.INPUT_SIZE, detectors.INCEPTION, 75)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_detector_throughput(benchmark, small_inception, precision):
    if precision == "bf16" and not ON_GPU and not torch.backends.mkldnn.is_available():
        pytest.skip("bf16 convolutions need oneDNN on a CPU")
    detector = inception(precision)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    benchmark.group = "detector inception 75px"
    benchmark.extra_info.update(images=len(images), variant=precision)
    out = benchmark.pedantic(synced(lambda: detector(images)), rounds=1, iterations=1)
    assert out.shape == (4, 2048)


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_fakes_throughput(benchmark, small_inception, pipeline):
    G, features = generator(16), Features("inception", inception("fast"), batch_size=4)
    benchmark.group = "fakes dcgan16 + inception 75px"
    benchmark.extra_info.update(images=8, variant=pipeline)
    feats, _ = benchmark.pedantic(lambda: extract_all(features, generated_images(G, 8, batch_size=4),
                                                      device=DEVICE, **PIPELINES[pipeline]), rounds=1, iterations=1)
    assert feats.shape == (8, 2048)


def _rate(fn, images: int) -> float:
    started = time.perf_counter()
    fn()
    if ON_GPU:
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--images", type=int, default=64, help="images per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is printed)")
    parser.add_argument("--size", type=int, default=299, help="Inception input size (299: the real one)")
    parser.add_argument("--resolution", type=int, default=32, help="the generator's resolution (16-128)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    detectors.INPUT_SIZE[detectors.INCEPTION] = args.size
    batch = 32
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
    nets = {p: inception(p) for p in PRECISIONS}
    G = generator(args.resolution)
    print(f"{DEVICE}, {args.threads} threads, Inception at {args.size} px (random weights), "
          f"DCGAN {args.resolution} px, {args.images} images, median of {args.rounds} rounds; load {_load()}")
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for p, det in nets.items():
            det(images[:2])  # warm-up
            rates.setdefault(f"detector {p}", []).append(
                _rate(lambda: [det(images) for _ in range(max(1, args.images // batch))],
                      batch * max(1, args.images // batch)))
        for name, options in PIPELINES.items():
            for p in ("exact", "fast"):
                features = Features("inception", nets[p], batch_size=batch)
                rates.setdefault(f"fakes {p} {name}", []).append(_rate(
                    lambda: extract_all(features, generated_images(G, args.images, batch_size=batch), device=DEVICE,
                                        **options), args.images))
        rates.setdefault("generation alone", []).append(
            _rate(lambda: list(generated_images(G, args.images, batch_size=batch)), args.images))
    for name, values in rates.items():
        print(f"{name:34s} {statistics.median(values):9.2f} images/s   ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"load {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
