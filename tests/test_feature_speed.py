"""Fast feature extraction: the ``fast`` precision (float32, channels_last) keeps FID within FAST_RTOL of the
``exact`` one (float32, NCHW), ``bf16`` within BF16_RTOL (Inception-v3; its TorchScript formats: features within
FAST_RTOL; VGG16: the same precision/recall); overlapped generation gives byte-identical features; metric lines
carry seconds and images/s.

The detectors have seeded random weights. To keep the test in seconds, 128 + 128 images (32 px) are resized to
75 px for Inception-v3 (its smallest input) and 32 px for VGG16 instead of 299 / 224, and FID is taken on 256
feature columns; the whole FID at the full sizes was measured once (README, "Feature extraction speed").
"""
import copy
import io

import pytest
import torch
from torch import nn

from ganfast.metrics import detectors
from ganfast.metrics.detectors import VGG16, Detector, load_detector
from ganfast.metrics.frechet import frechet_distance
from ganfast.metrics.precision_recall import precision_recall
from ganfast.metrics.report import Features, compute_metric, extract_all, generated_images, produced_ahead
from ganfast.models import DCGANGenerator
from support import random_inception_state, smooth_images

N = 128
# Measured relative FID changes against ``exact`` (Inception-v3, random weights, all 2048 columns): fast 2.5e-8
# (75 px, 512 images), 3.5e-7 (75 px, 128), 0 (299 px, 128); bf16 9.0e-3 (75 px, 512), 1.2e-2 (75 px, 128),
# 1.5e-2 (299 px, 128).
FAST_RTOL, BF16_RTOL = 1e-5, 3e-2


@pytest.fixture(scope="module")
def image_sets():
    return [torch.from_numpy(smooth_images(seed, shift, N, 32)).permute(0, 3, 1, 2) for seed, shift in
            ((0, 0.0), (1, 40.0))]


@pytest.fixture
def small_inputs(monkeypatch):
    monkeypatch.setitem(detectors.INPUT_SIZE, detectors.INCEPTION, 75)
    monkeypatch.setitem(detectors.INPUT_SIZE, detectors.VGG16_KIND, 32)


class _OwnResize(nn.Module):
    """A TorchScript detector whose own forward resizes (to 75 px) and normalises, as NVlabs' file does."""

    def __init__(self, layers: nn.Module):
        super().__init__()
        self.layers = layers

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = nn.functional.interpolate(img.float(), size=(75, 75), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128).flatten(1)


def _inception_files(tmp_path):
    sd = random_inception_state()
    torch.save(sd, tmp_path / "pt_inception.pth")
    net = detectors.FIDInceptionV3().eval()
    net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")})
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_OwnResize(net)), buffer)
    (tmp_path / "inception.pt").write_bytes(buffer.getvalue())
    return {"state-dict": tmp_path / "pt_inception.pth", "torchscript": tmp_path / "inception.pt"}


def test_fast_and_bf16_keep_fid_within_tolerance(tmp_path, image_sets, small_inputs, one_thread):
    files = _inception_files(tmp_path)
    feats = {precision: [Features("inception", load_detector(str(files["state-dict"]), precision=precision))(s)
                         for s in image_sets] for precision in ("exact", "fast", "bf16")}
    # FID on the first 256 feature columns: a 2048-d one costs 6-9 s of a loaded core, and 256 columns move as the
    # whole does (bf16, measured: 1.5e-2 vs 1.2e-2 relative); every column's fast features are checked directly
    fid = {precision: frechet_distance(*(f[:, :256] for f in feats[precision])) for precision in feats}
    assert fid["exact"] > 0.1 and abs(fid["fast"] - fid["exact"]) <= FAST_RTOL * fid["exact"], fid
    assert abs(fid["bf16"] - fid["exact"]) <= BF16_RTOL * fid["exact"], fid
    for fast, exact in zip(feats["fast"], feats["exact"]):
        assert (fast - exact).abs().max() <= FAST_RTOL * exact.abs().max()
    # the TorchScript formats run the same network: their fast features stay as close as the state dict's
    for mode in ("legacy_tensorflow", "clean"):
        exact, fast = (load_detector(str(files["torchscript"]), mode=mode, precision=p)(image_sets[1][:32])
                       for p in ("exact", "fast"))
        assert (fast - exact).abs().max() <= FAST_RTOL * exact.abs().max(), mode


def test_fast_vgg16_keeps_precision_recall(image_sets, small_inputs, one_thread):
    torch.manual_seed(0)
    net = VGG16().eval()                                  # as load_detector reads it (a file costs seconds here)
    results = {}
    for precision in ("exact", "fast"):
        detector = Detector("vgg16", "-", "state-dict", "legacy_pytorch", "-", copy.deepcopy(net), torch.device("cpu"),
                            precision)
        results[precision] = precision_recall(*(Features("vgg16", detector)(s[:32]) for s in image_sets), k=3)
    assert results["fast"] == results["exact"] and 0 < results["exact"]["precision"] < 1, results


def test_bad_precision_is_refused(tmp_path):
    with pytest.raises(ValueError, match="precision must be one of fast, exact, bf16; got 'half'"):
        load_detector(str(tmp_path / "any.pt"), precision="half")


def _generator():
    torch.manual_seed(0)
    return DCGANGenerator(z_dim=16, resolution=16, channels=3, base_channels=8).eval()


@pytest.mark.parametrize("split", [False, True])
def test_overlapped_generation_gives_identical_features(split):
    G = _generator()
    extract = Features("pool", lambda x: nn.functional.avg_pool2d(x.float(), 4).flatten(1), batch_size=7)
    threads = torch.get_num_threads()
    sequential, _ = extract_all(extract, generated_images(G, 50, batch_size=16), overlap=False)
    overlapped, seconds = extract_all(extract, generated_images(G, 50, batch_size=16), overlap=True,
                                      split_threads=split)
    assert sequential.shape == (50, 3 * 16) and seconds > 0
    assert sequential.numpy().tobytes() == overlapped.numpy().tobytes()
    assert torch.get_num_threads() == threads                                       # restored


def test_producer_errors_and_early_exit():
    def failing():
        yield torch.zeros(1)
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        list(produced_ahead(failing()))
    made = []

    def endless():
        while True:
            made.append(1)
            yield torch.zeros(1)

    stream = produced_ahead(endless(), depth=2)
    next(stream)
    stream.close()                                                  # the producer stops, at most depth + 2 ahead
    assert len(made) <= 4


def test_metric_records_seconds_and_images_per_second():
    from ganfast.data import load_dataset
    dataset = load_dataset("digits")
    G = DCGANGenerator(z_dim=16, resolution=dataset.sample_shape[-1], channels=1, base_channels=8).eval()
    features = Features("pool", lambda x: x.float().mean(dim=(2, 3)))
    memory: dict = {}
    first = compute_metric("fd100", G, dataset, features, real_cache=memory)
    again = compute_metric("fd100", G, dataset, features, real_cache=memory, overlap=True)
    assert first["fake_seconds"] > 0 and first["fake_images_per_second"] > 0
    assert first["real_seconds"] > 0 and first["real_images_per_second"] > 0
    assert again["real_seconds"] is None and again["real_images_per_second"] is None   # the cached reals
    assert again["results"] == first["results"]
