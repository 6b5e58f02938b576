"""ganfast.metrics: 2-D mode coverage, Fréchet distance (vs SciPy's sqrtm), precision/recall, extractors."""
import math

import numpy as np
import pytest
import torch

from ganfast import data, metrics


pytestmark = pytest.mark.usefixtures("one_thread")


def test_mixture_metrics_on_real_collapsed_and_off_samples():
    modes, std = data.ring8_modes(), data.RING8_STD
    real = data.gaussian_mixture(modes, std, 4000, seed=1)
    m = metrics.mixture_metrics(real, modes, std)
    assert m["modes"] == 8 and m["num_modes"] == 8
    assert abs(m["hq"] - (1 - math.exp(-4.5))) < 0.01      # P(‖N(0, σ²I₂)‖ ≤ 3σ) = 1 − e^{−9/2}
    assert m["kl"] < 0.01
    one = modes[3] + std * torch.randn(500, 2)
    m = metrics.mixture_metrics(one, modes, std)
    assert m["modes"] == 1 and m["kl"] == pytest.approx(math.log(8)) and m["max_kl"] == pytest.approx(math.log(8))
    m = metrics.mixture_metrics(torch.zeros(100, 2), modes, std)  # the centre of the ring: no mode
    assert m["modes"] == 0 and m["hq"] == 0 and m["kl"] is None
    # a mode with only a few stray samples (below 2% of its fair share) does not count as covered
    mostly = torch.cat([modes[0] + 0 * torch.randn(990, 2), modes[1].expand(1, 2)])
    assert metrics.mixture_metrics(mostly, modes, std)["modes"] == 1
    with pytest.raises(ValueError, match="samples must have shape"):
        metrics.mixture_metrics(torch.zeros(10, 3), modes, std)


def _scipy_fd(a, b):
    from scipy import linalg
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_sqrtm():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 12, generator=gen, dtype=torch.float64) @ torch.randn(12, 12, generator=gen,
                                                                                dtype=torch.float64)
    b = torch.randn(300, 12, generator=gen, dtype=torch.float64) * 2 + 0.5
    ours = metrics.frechet_distance(a, b)
    assert ours == pytest.approx(_scipy_fd(a.numpy(), b.numpy()), rel=1e-8)
    assert metrics.frechet_distance(metrics.feature_stats(a), a) == pytest.approx(0, abs=1e-8)
    # equal covariances: FD is the squared distance between the means
    shift = torch.arange(12, dtype=torch.float64)
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        metrics.frechet_distance(a, b[:, :5])
    with pytest.raises(ValueError, match="features must be"):
        metrics.feature_stats(torch.zeros(1, 3))


def test_precision_recall():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(300, 4, generator=gen)
    assert metrics.precision_recall(real, real.clone()) == {"precision": 1.0, "recall": 1.0}
    far = metrics.precision_recall(real, real + 100)
    assert far == {"precision": 0.0, "recall": 0.0}
    # fakes that cover a quarter of the real data: high precision, low recall
    part = real[real[:, 0] > 0.67]
    pr = metrics.precision_recall(real, part + 0.01 * torch.randn(part.shape, generator=gen))
    assert pr["precision"] > 0.9 and pr["recall"] < 0.5
    with pytest.raises(ValueError, match="N > k"):
        metrics.precision_recall(real, real[:3])


def test_digits_classifier_and_extractor(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFAST_CACHE", str(tmp_path))
    from ganfast.metrics import digits_classifier as dc
    monkeypatch.setattr(dc, "train_digits_classifier",
                        lambda resolution, epochs=5, seed=0, _train=dc.train_digits_classifier: _train(
                            resolution, epochs, seed))
    model, accuracy = dc.load_digits_classifier(16)
    assert accuracy > 0.9                                     # held-out accuracy of the real-digit classifier
    assert (tmp_path / f"digits_classifier_v{dc.VERSION}_16px.safetensors").is_file()
    cached, cached_accuracy = dc.load_digits_classifier(16)   # loaded, not retrained
    assert cached_accuracy == accuracy
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cached.state_dict().values()))
    extract = metrics.digits_extractor(16)
    x = data.digits(16)
    real_a, real_b = extract(x[:900]), extract(x[900:])
    noise = extract(torch.rand(900, 1, 16, 16) * 2 - 1)
    assert real_a.shape == (900, dc.FEATURES)
    assert metrics.frechet_distance(real_a, real_b) * 10 < metrics.frechet_distance(real_a, noise)
    with pytest.raises(ValueError, match="images must be"):
        extract(torch.zeros(2, 1, 32, 32))


class _TinyDetector(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if return_features else pooled.sum(1, keepdim=True)


def test_inception_extractor_hook(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"inception\.pt.*does not exist"):
        metrics.inception_extractor(str(tmp_path / "inception.pt"))
    path = str(tmp_path / "detector.pt")
    torch.jit.script(_TinyDetector()).save(path)
    extract = metrics.inception_extractor(path)
    feats = extract(torch.full((2, 1, 8, 8), 1.0))             # greyscale -> RGB, [-1, 1] -> [0, 255]
    assert feats.shape == (2, 3) and torch.equal(feats, torch.full((2, 3), 255.0, dtype=torch.float64))
    plain = str(tmp_path / "plain.pt")
    torch.jit.script(torch.nn.Flatten()).save(plain)                # a module without return_features
    assert metrics.inception_extractor(plain)(torch.zeros(2, 3, 2, 2)).shape == (2, 12)
