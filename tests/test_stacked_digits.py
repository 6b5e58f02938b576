"""Stacked digits (1000 modes) and the mode-coverage metric: the data set's construction, the metric's math, the
metric on the real images, on a collapsed generator and during a short training run, the CLI paths."""
import json
import math

import pytest
import torch

from ganfast import data
from ganfast.metrics import classifier_accuracy, fake_modes, mode_coverage, read_stacked_digits
from ganfast.metrics.modes import CONFIDENCE, confident_share, expected_uniform_kl, modes_of
from ganfast.metrics.report import MODES_COUNT, compute_metric, feature_extractor, parse_metric


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """The data set, cached where conftest's private cache is (module fixtures run before its monkeypatch)."""
    return data.load_dataset("stacked-digits", cache_dir=tmp_path_factory.getbasetemp() / "ganfast-cache" / "datasets")


def test_stacked_digits_construction(stacked, tmp_path):
    ds = stacked
    assert ds.data.shape == (data.STACKED_DIGITS_SIZE, 3, 16, 16) and ds.data.dtype == torch.uint8
    assert ds.num_classes == 1000 and ds.c_dim == 1000 and ds.labels.dtype == torch.int64
    counts = torch.bincount(ds.labels, minlength=1000)
    assert counts.min() == counts.max() == data.STACKED_DIGITS_SIZE // 1000     # every mode equally often
    # each channel is a digit image of the class its label names, the three drawn independently
    pool, classes = data.digits_with_labels(16)
    pool = data.to_uint8(pool)[:, 0].flatten(1)
    rows = torch.arange(0, data.STACKED_DIGITS_SIZE, 97)
    digits = torch.stack([ds.labels[rows] // 100, ds.labels[rows] // 10 % 10, ds.labels[rows] % 10], dim=1)
    which = torch.empty(len(rows), 3, dtype=torch.int64)
    for k in range(3):
        match = (ds.data[rows, k].flatten(1)[:, None, :] == pool[None]).all(dim=2)   # (rows, 1797)
        assert match.any(dim=1).all()
        which[:, k] = match.float().argmax(dim=1)
        assert torch.equal(classes[which[:, k]], digits[:, k])
    same_class = digits[:, 0] == digits[:, 1]
    assert (which[same_class, 0] != which[same_class, 1]).float().mean() > 0.9   # not one image copied twice
    # deterministic: rebuilt in another cache, loaded again from the cache, the same for any run seed
    built, labels, report = data.stacked_digits(16, cache_dir=tmp_path)
    assert "built" in report and torch.equal(built, ds.data) and torch.equal(labels, ds.labels)
    again, _, report = data.stacked_digits(16, cache_dir=tmp_path)
    assert "cache hit" in report and torch.equal(again, ds.data)
    assert torch.equal(data.load_dataset("stacked-digits", seed=5).data, ds.data)
    small, small_labels, _ = data.stacked_digits(8, size=2500, seed=1, cache_dir=tmp_path)
    assert small.shape == (2500, 3, 8, 8) and torch.bincount(small_labels).max() == 3
    assert not torch.equal(small_labels, data.stacked_digit_labels(2500, seed=2))
    with pytest.raises(ValueError, match="mirror"):
        data.load_dataset("stacked-digits", mirror=True)
    with pytest.raises(ValueError, match="resolution"):
        data.load_dataset("stacked-digits", resolution=64)
    with pytest.raises(ValueError, match="size"):
        data.stacked_digit_labels(0)


def test_mode_coverage_math():
    uniform = torch.arange(3000) % 1000
    assert mode_coverage(uniform) == {"modes": 1000, "kl": 0.0, "num_samples": 3000}
    one = mode_coverage(torch.full((50,), 7))
    assert one["modes"] == 1 and math.isclose(one["kl"], math.log(1000), rel_tol=1e-12)
    modes = torch.randint(0, 40, (5000,)) * 3
    p = torch.bincount(modes, minlength=1000).double() / len(modes)
    expected = torch.special.xlogy(p, p * 1000).sum().item()          # Σ p log(p / (1/1000)), 0 log 0 = 0
    got = mode_coverage(modes)
    assert got["modes"] == len(modes.unique()) and math.isclose(got["kl"], expected, rel_tol=1e-12)
    assert modes_of(torch.tensor([[1, 2, 3], [0, 0, 9]])).tolist() == [123, 9]
    p = torch.full((4, 3, 10), 0.01)
    p[:, :, 0] = 0.91
    p[1, 2] = 0.1                       # one channel of image 1 read without confidence
    p[2, 0, 0], p[2, 0, 5] = 0.5, 0.42  # and of image 2
    assert confident_share(p) == 0.5 and confident_share(p, threshold=0.5) == 0.75 and CONFIDENCE == 0.9
    for bad in (torch.tensor([1000]), torch.tensor([-1]), torch.tensor([0.5]), torch.tensor([], dtype=torch.long)):
        with pytest.raises(ValueError, match="modes"):
            mode_coverage(bad)


class _Replay(torch.nn.Module):
    """A generator that returns stored images, the one picked by its latent: ``images[hash(z) % len(images)]``."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.z_dim, self.images = 8, images
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z):
        pick = (z[:, 0].double().abs() * 1e6).long() % len(self.images)
        return self.images[pick] + self.anchor


def test_modes_metric_real_and_collapsed(stacked):
    n = 6000
    real = stacked.batch(torch.arange(n))
    probabilities = read_stacked_digits(real)
    assert probabilities.shape == (n, 3, 10) and torch.allclose(probabilities.sum(2), torch.ones(n, 3))
    # the real images: nearly every mode (n rows miss about 1000 e^-6 = 2.5 of them), KL near 0: the sampling noise
    # of n rows, (K - 1) / 2n = 0.083, and the classifier's misreadings; most read confidently (82% measured)
    coverage = fake_modes(probabilities)
    assert coverage["modes"] >= 990 and coverage["kl"] < 2 * expected_uniform_kl(n), coverage
    assert coverage["confident"] > 0.75
    accuracy = classifier_accuracy(probabilities, stacked.labels[:n])
    assert accuracy["classifier_acc"] > 0.9 and accuracy["classifier_acc_digit"] > 0.97
    assert accuracy["classifier_acc"] <= accuracy["classifier_acc_digit"]
    assert accuracy["confident_real"] == coverage["confident"]
    with pytest.raises(ValueError, match=r"\(N, 3, 16, 16\)"):
        read_stacked_digits(real[:2, :1])
    # a collapsed generator (five real images read confidently), through the metric's whole path: at most five
    # modes, KL at least log(1000 / 5); the classifier's accuracy on 1000 reals beside it
    sure = torch.nonzero(probabilities.amax(2).amin(1) >= CONFIDENCE)[:5, 0]
    record = compute_metric("modes1k", _Replay(real[sure]), stacked, features=None)
    assert record["num_fakes"] == record["num_reals"] == 1000
    collapsed = record["results"]
    assert collapsed["modes"] <= 5 and collapsed["kl"] >= math.log(200) - 1e-9
    assert collapsed["classifier_acc"] > 0.9 and collapsed["classifier_acc_digit"] > 0.97
    assert collapsed["confident"] == 1.0
    # noise lands in many modes, read without confidence: the share that tells coverage by noise apart
    noise = fake_modes(read_stacked_digits(torch.rand(2000, 3, 16, 16) * 2 - 1))
    assert noise["modes"] > 100 and noise["confident"] < 0.05
    # fd/kid/pr on stacked digits: the digit features of each channel, concatenated
    extract = feature_extractor(stacked, None, "cpu")
    stored = stacked.rows(torch.arange(4))  # uint8, as the metrics take images
    features = extract(stored)
    assert extract.name == "stacked-digits" and features.shape == (4, 192)
    assert torch.equal(features[:, 64:128], extract(stored[:, [1, 1, 1]])[:, :64])
    # names
    assert parse_metric("modes") == {"kind": "modes", "count": MODES_COUNT, "k": 3, "full": False}
    assert parse_metric("modes10k")["count"] == 10_000
    for bad in ("modes_full", "modesk", "modes10k3", "fd"):
        with pytest.raises(ValueError, match="expected"):
            parse_metric(bad)
    with pytest.raises(ValueError, match="stacked-digits"):
        compute_metric("modes100", _Replay(real), data.load_dataset("digits"), features=None)


def test_training_moves_the_metric_and_cli(tmp_path, one_thread, monkeypatch):
    """A DCGAN on stacked digits for 60 steps: the modes its EMA generator covers rise and the KL falls (per-tick
    evaluator, 3000 fakes here); ``ganfast metrics --metrics modes2k`` on the run, a resume naming the data set,
    and --cond."""
    from ganfast.cli import main
    from ganfast.train import run
    from ganfast.train.run import build_trainer
    monkeypatch.setattr(run, "MODES_TICK_SAMPLES", 3000)
    out = tmp_path / "run"
    overrides = {"batch_size": 32, "tick_steps": 30, "snapshot_ticks": 2, "aug": "noaug", "ema_kimg": 0.1}
    trainer, _ = build_trainer("stacked-digits", str(out), model="dcgan", overrides=overrides, progress=False)
    before = trainer.evaluate(trainer.G_ema)
    trainer.train(60)
    after = trainer.evaluate(trainer.G_ema)
    assert after["modes"] > 2 * before["modes"] and after["kl"] < before["kl"] - 0.5, (before, after)
    ticks = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [t["modes"] for t in ticks][-1] == after["modes"] and all("kl" in t for t in ticks)
    assert main(["metrics", "--run", str(out), "--metrics", "modes2k"]) == 0
    record = json.loads((out / "metric-modes2k.jsonl").read_text().splitlines()[-1])
    assert record["results"]["modes"] > 2 * before["modes"] and record["results"]["classifier_acc"] > 0.9
    assert main(["train", "--out", str(out), "--resume", "--dataset", "stacked-digits", "--steps", "61",
                 "--no-progress"]) == 0
    cond, _ = build_trainer("stacked-digits", str(tmp_path / "cond"), model="dcgan",
                            overrides={**overrides, "cond": True}, progress=False)
    assert cond.G.c_dim == 1000
    cond.train(1)
    assert 1 <= cond.evaluate(cond.G_ema)["modes"] <= 1000
