"""ganfast.validate and its metrics: blocked nearest neighbours, KID, density/coverage against direct formulas;
sample folders of every format (labelled layouts included) read back; a planted duplicate found; memorised and
fresh sets told apart; TSTR/TRTR on labelled folders; the CLI's one-line errors."""
import io
import json
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import ganfast
from ganfast import metrics
from ganfast.validate import read_samples, summary, validate

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- metric math -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("exclude_self", [False, True])
def test_blocked_nearest_neighbours_match_brute_force(exclude_self):
    gen = torch.Generator().manual_seed(0)
    refs = torch.randn(37, 5, generator=gen, dtype=torch.float64)
    queries = refs if exclude_self else torch.randn(23, 5, generator=gen, dtype=torch.float64)
    d = torch.cdist(queries, refs)
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    want_d, want_i = d.topk(3, dim=1, largest=False)
    for block in (4, 7, 1000):  # several blocks on both sides, blocks straddling the diagonal, one block
        got_d, got_i = metrics.nearest_neighbours(queries, refs, k=3, exclude_self=exclude_self, block=block)
        torch.testing.assert_close(got_d, want_d, rtol=0, atol=1e-9)
        assert torch.equal(got_i, want_i)
    torch.testing.assert_close(metrics.knn_radii(refs, 2, block=5), torch.cdist(refs, refs).kthvalue(3, dim=1).values,
                               rtol=0, atol=1e-9)


def test_nearest_neighbours_of_uint8_images_are_exact():
    gen = torch.Generator().manual_seed(1)
    refs = torch.randint(0, 256, (30, 1, 6, 6), generator=gen, dtype=torch.uint8)
    queries = torch.cat([refs[[4, 17]], torch.randint(0, 256, (5, 1, 6, 6), generator=gen, dtype=torch.uint8)])
    d, i = metrics.nearest_neighbours(queries, refs, block=8)
    assert d[0, 0] == 0 and d[1, 0] == 0 and i[:2, 0].tolist() == [4, 17]  # copies at exactly 0
    brute = torch.cdist(queries.flatten(1).double(), refs.flatten(1).double())
    torch.testing.assert_close(d[:, 0], brute.min(1).values, rtol=1e-12, atol=1e-9)


def test_nearest_neighbours_errors():
    with pytest.raises(ValueError, match="differ in dimension"):
        metrics.nearest_neighbours(torch.zeros(3, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="k must be in"):
        metrics.nearest_neighbours(torch.zeros(3, 2), torch.zeros(3, 2), k=3, exclude_self=True)


def test_ball_counts_density_coverage_match_direct_formulas():
    gen = torch.Generator().manual_seed(2)
    real = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    fake = torch.randn(15, 3, generator=gen, dtype=torch.float64) * 1.3 + 0.2
    k = 4
    d_rr = torch.cdist(real, real)
    radii = torch.tensor([sorted(row.tolist())[k] for row in d_rr], dtype=torch.float64)  # k-th other: skip self
    d_fr = torch.cdist(fake, real)
    inside = d_fr <= radii[None, :]
    torch.testing.assert_close(metrics.knn_radii(real, k, block=6), radii)
    assert torch.equal(metrics.ball_counts(fake, real, radii, block=6), inside.sum(1))
    got = metrics.density_coverage(real, fake, k=k)
    assert got["density"] == pytest.approx(inside.sum().item() / (k * len(fake)), rel=1e-12)
    assert got["coverage"] == pytest.approx(inside.any(0).double().mean().item(), rel=1e-12)
    same = metrics.density_coverage(real, real.clone(), k=k)
    assert same["coverage"] == 1.0 and same["density"] == pytest.approx((k + 1) / k)  # itself + k neighbours


def test_kid_matches_the_direct_unbiased_formula():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(6, 4, generator=gen, dtype=torch.float64) + 0.5

    def kern(a, b):
        return (float(a @ b) / 4 + 1) ** 3
    m = 6
    xx = sum(kern(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kern(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(kern(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    want = xx + yy - 2 * xy
    assert metrics.kid.mmd2_unbiased(x, y) == pytest.approx(want, rel=1e-12)
    # subsets of all rows: every subset is a permutation of the sets, MMD² does not depend on the order
    got = metrics.kernel_inception_distance(x, y, num_subsets=3, subset_size=100)
    assert got["kid"] == pytest.approx(want, rel=1e-12) and got["kid_std"] == pytest.approx(0, abs=1e-12)
    assert got["subset_size"] == 6
    big = torch.randn(400, 4, generator=gen, dtype=torch.float64)
    same = metrics.kernel_inception_distance(big[:200], big[200:], num_subsets=20, subset_size=100)
    assert abs(same["kid"]) < 3 * same["kid_std"] + 1e-3  # unbiased: ~0 for one distribution
    with pytest.raises(ValueError, match="feature dimensions differ"):
        metrics.kernel_inception_distance(x, y[:, :2])


# ---- sample folders --------------------------------------------------------------------------------------------

class SquareG(torch.nn.Module):
    """z (N, 8) -> (N, C, 8, 8) images in [-1, 1]."""
    z_dim = 8

    def __init__(self, channels=1):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, channels * 64)
        self.channels = channels

    def forward(self, z):
        return torch.tanh(2 * self.fc(z)).view(-1, self.channels, 8, 8)


@pytest.mark.parametrize("fmt", ["png", "npz", "webdataset"])
@pytest.mark.parametrize("channels", [1, 3])
def test_read_samples_of_every_format(tmp_path, fmt, channels):
    G = SquareG(channels)
    expected = np.concatenate([b.images for b in ganfast.sample(G, "995-1004")]).transpose(0, 3, 1, 2)
    ganfast.write_samples(G, "995-1004", tmp_path, fmt=fmt, shard_size=4, progress=False)
    got, note = read_samples(str(tmp_path))
    assert note is None and got.labels is None
    np.testing.assert_array_equal(got.images.numpy(), expected)  # seed order: png folders and shards sort by seed
    assert len(got.ids) == 10 and len(set(got.ids)) == 10


def _labelled(n=12, size=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, size, size), generator=gen, dtype=torch.uint8), torch.arange(n) % 3


def _png_bytes(chw):
    buf = io.BytesIO()
    Image.fromarray(chw[0].numpy()).save(buf, format="PNG")
    return buf.getvalue()


def test_read_labelled_layouts(tmp_path):
    images, labels = _labelled()
    # png: DIR/class<K>/<seed // 1000>/seed%08d.png
    for seed, (img, k) in enumerate(zip(images, labels.tolist())):
        path = tmp_path / "png" / f"class{k}" / "00000" / f"seed{seed:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png_bytes(img))
    # npz shards with labels
    (tmp_path / "npz").mkdir()
    for lo in (0, 6):
        np.savez(tmp_path / "npz" / f"seeds{lo:08d}-{lo + 5:08d}.npz", images=images[lo:lo + 6].permute(0, 2, 3, 1),
                 seeds=np.arange(lo, lo + 6), labels=labels[lo:lo + 6].numpy())
    # webdataset: %08d.png + %08d.json with "class"
    (tmp_path / "wds").mkdir()
    with tarfile.open(tmp_path / "wds" / "seeds00000000-00000011.tar", "w") as tar:
        for seed, (img, k) in enumerate(zip(images, labels.tolist())):
            for name, data in ((f"{seed:08d}.png", _png_bytes(img)),
                               (f"{seed:08d}.json", json.dumps({"seed": seed, "class": k}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    for fmt in ("npz", "wds"):
        got, _ = read_samples(str(tmp_path / fmt))
        assert torch.equal(got.images, images) and torch.equal(got.labels, labels), fmt
    one, _ = read_samples(str(tmp_path / "npz" / "seeds00000006-00000011.npz"))  # a single shard
    assert torch.equal(one.images, images[6:]) and one.ids[0] == "seeds00000006-00000011.npz#seed6"
    got, _ = read_samples(str(tmp_path / "png"))  # sorted by path: class folders first
    order = sorted(range(12), key=lambda s: (labels[s].item(), s))
    assert torch.equal(got.images, images[order]) and torch.equal(got.labels, labels[order])
    np.savez(tmp_path / "npz" / "seeds00000100-00000100.npz", images=images[:1].permute(0, 2, 3, 1),
             seeds=np.arange(100, 101), labels=np.ones((1, 4), np.float32))
    with pytest.raises(ValueError):  # vector labels next to class labels in one folder
        read_samples(str(tmp_path / "npz"))


def test_read_samples_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_samples(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no samples"):
        read_samples(str(tmp_path / "empty"))
    (tmp_path / "mixed").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "mixed" / "a.png")
    np.savez(tmp_path / "mixed" / "b.npz", images=np.zeros((1, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="mixes sample formats"):
        read_samples(str(tmp_path / "mixed"))
    (tmp_path / "sizes").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "sizes" / "a.png")
    Image.new("L", (9, 9)).save(tmp_path / "sizes" / "b.png")
    with pytest.raises(ValueError, match="b.png"):
        read_samples(str(tmp_path / "sizes"))


# ---- the report ------------------------------------------------------------------------------------------------

def _blobs(n, seed, size=8):
    """Smooth random uint8 images: low-resolution noise upsampled (neighbours are not all equally far)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 3, 3, generator=gen)
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (up * 255).round().to(torch.uint8)


def test_planted_duplicate_is_found_and_memorisation_measured(tmp_path):
    train, holdout = _blobs(60, 0), _blobs(30, 1)
    synthetic = _blobs(30, 2)
    synthetic[11] = train[42]  # the planted copy
    report = validate(synthetic, train, holdout=holdout, out=str(tmp_path / "r"), progress=False)
    first = report["near_duplicates"][0]
    assert (first["synthetic_index"], first["train_index"], first["distance"]) == (11, 42, 0.0)
    assert report["near_duplicates_found"] >= 1 and report["exact_copies"] == pytest.approx(1 / 30)
    assert report["features"].startswith("pixels 1x8x8")
    assert report["tstr_accuracy"] is None and "no class labels" in report["utility_note"]
    for key in ("fd", "kid", "precision", "recall", "density", "coverage", "tstr_accuracy", "trtr_accuracy",
                "memorized_share", "dcr_median", "n_synthetic", "n_real", "features"):
        assert key in report, key
    on_disk = json.loads((tmp_path / "r" / "report.json").read_text())
    assert on_disk["near_duplicates"][0]["train_index"] == 42
    for name in ("report.md", "near_duplicates.png", "pixel_histograms.png"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    pairs = np.asarray(Image.open(tmp_path / "r" / "near_duplicates.png"))
    assert pairs.ndim == 3 and pairs.shape[2] == 3
    # copies of training images: all memorised; fresh images from the same distribution: about 5%
    copies = validate(train[:30], train, holdout=holdout, progress=False)
    assert copies["memorized_share"] == 1.0 and copies["dcr_median"] == 0
    fresh = validate(_blobs(30, 3), train, holdout=holdout, progress=False)
    assert fresh["memorized_share"] <= 0.2
    assert report["fd"] > 0 and copies["precision"] == 1.0
    in_features = validate(train[:30], train, holdout=holdout, privacy_space="features", progress=False)
    assert in_features["memorized_share"] == 1.0 and in_features["privacy_space"].startswith("features")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| synthetic[11] | real[42] | 0 |" in md and "near_duplicates.png" in md
    small = validate(synthetic, train, holdout=holdout, max_samples=12, seed=3, progress=False)
    assert (small["n_synthetic"], small["n_real"], small["n_holdout"]) == (12, 12, 12)
    assert any("subsampled" in note for note in small["notes"])


def test_without_holdout_memorized_share_is_null():
    train = _blobs(40, 0)
    report = validate(_blobs(20, 5), train, progress=False)
    assert report["memorized_share"] is None and report["memorized_threshold"] is None
    assert "no holdout" in report["privacy_note"] and len(report["near_duplicates"]) == 20
    assert report["near_duplicates_found"] is None
    assert "memorized_share n/a" in summary(report)


def test_tstr_and_trtr_on_a_labelled_folder(tmp_path):
    # class k: a bright square in quadrant k; synthetic = real images plus noise, in the labelled png layout
    gen = torch.Generator().manual_seed(0)

    def make(n):
        labels = torch.arange(n) % 4
        x = torch.zeros(n, 1, 8, 8)
        for i, k in enumerate(labels.tolist()):
            x[i, 0, (k // 2) * 4:(k // 2) * 4 + 4, (k % 2) * 4:(k % 2) * 4 + 4] = 200
        return (x + 30 * torch.rand(x.shape, generator=gen)).round().clamp(0, 255).to(torch.uint8), labels
    real, hold = make(48), make(24)
    syn_x, syn_y = make(40)
    for seed, (img, k) in enumerate(zip(syn_x, syn_y.tolist())):
        path = tmp_path / "syn" / f"class{k}" / "00000" / f"seed{seed:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(path)
    report = validate(str(tmp_path / "syn"), real, holdout=hold, utility_steps=60, progress=False)
    assert report["tstr_accuracy"] >= 0.9 and report["trtr_accuracy"] >= 0.9
    assert report["tstr_trtr_ratio"] == pytest.approx(report["tstr_accuracy"] / report["trtr_accuracy"])
    assert report["utility_test_set"].startswith("24 real images (the holdout)")
    assert set(report["per_class"]) == {"0", "1", "2", "3"}
    assert report["per_class"]["2"]["n_synthetic"] == 10 and report["per_class"]["2"]["tstr_accuracy"] is not None
    assert "fd" in report["per_class"]["0"]  # 10 per class on both sides: per-class fidelity
    # wrong labels on the synthetic side ruin TSTR but not TRTR
    wrong = validate((syn_x, (syn_y + 1) % 4), real, holdout=hold, utility_steps=60, progress=False)
    assert wrong["tstr_accuracy"] < 0.3 and wrong["trtr_accuracy"] == report["trtr_accuracy"]


def test_real_data_from_a_dataset_spec(tmp_path):
    from ganfast.data import digits_with_labels
    x, y = digits_with_labels(8)
    u8 = (x * 127.5 + 127.5).round().to(torch.uint8)
    report = validate((u8[:50], y[:50]), "digits", features="pixels", utility_steps=5, max_samples=200,
                      progress=False)
    assert report["n_real"] == 200 and report["trtr_accuracy"] is not None  # the digits' labels came along
    assert report["exact_copies"] > 0  # the subsample of the training set still holds some of the 50 copies
    with pytest.raises(ValueError, match="real: .* 1x8x8 images"):
        validate(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), "digits", progress=False)
    with pytest.raises(ValueError, match="2-D point set"):
        validate(u8[:10], "ring8", progress=False)


def test_samples_generated_from_a_training_run(tmp_path):
    from ganfast.data import load_dataset
    from ganfast.models import DCGANGenerator, SNGANDiscriminator
    from ganfast.train import TrainConfig, Trainer
    run = tmp_path / "run"
    torch.manual_seed(0)
    Trainer(DCGANGenerator(z_dim=8, base_channels=8), SNGANDiscriminator(base_channels=4), load_dataset("digits"),
            str(run), TrainConfig(batch_size=8, tick_steps=2, num_fixed=8), progress=False).train(2)
    report = validate(str(run), "digits", seeds="0-19", features="pixels", max_samples=100, progress=False)
    assert report["n_synthetic"] == 20 and report["synthetic"].endswith("seeds 0-19")
    with pytest.raises(ValueError, match="give --seeds"):
        validate(str(run), "digits", progress=False)


# ---- command line ----------------------------------------------------------------------------------------------

def _cli_error(capsys, *args):
    from ganfast.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--no-progress", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_report_and_errors(tmp_path, capsys):
    from ganfast.cli import main
    train, holdout = _blobs(40, 0), _blobs(20, 1)
    np.savez(tmp_path / "train.npz", x=train.numpy())
    np.savez(tmp_path / "holdout.npz", x=holdout.numpy())
    syn = tmp_path / "syn"
    syn.mkdir()
    np.savez(syn / "seeds00000000-00000019.npz", images=_blobs(20, 2).permute(0, 2, 3, 1).numpy(),
             seeds=np.arange(20))
    assert main(["validate", "--synthetic", str(syn), "--real", str(tmp_path / "train.npz"), "--holdout",
                 str(tmp_path / "holdout.npz"), "--out", str(tmp_path / "rep"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "memorized_share" in out and "features: pixels 1x8x8" in out and len(out.splitlines()) <= 25
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["n_holdout"] == 20
    err = _cli_error(capsys, "--synthetic", str(tmp_path / "missing"), "--real", str(tmp_path / "train.npz"))
    assert "missing" in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    err = _cli_error(capsys, "--synthetic", str(tmp_path / "empty"), "--real", str(tmp_path / "train.npz"))
    assert str(tmp_path / "empty") in err and "holds no samples" in err
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    Image.new("L", (8, 8)).save(sizes / "a.png")
    Image.new("L", (6, 6)).save(sizes / "b.png")
    err = _cli_error(capsys, "--synthetic", str(sizes), "--real", str(tmp_path / "train.npz"))
    assert str(sizes / "b.png") in err
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)).save(rgb / f"{i}.png")
    err = _cli_error(capsys, "--synthetic", str(rgb), "--real", str(tmp_path / "train.npz"))
    assert "train.npz" in err and "1x8x8" in err
    err = _cli_error(capsys, "--synthetic", str(syn), "--real", str(tmp_path / "train.npz"), "--features",
                     str(tmp_path / "inception.pt"))
    assert "inception.pt" in err
    assert os.path.isdir(tmp_path / "rep")


def test_pixel_statistics_match_numpy():
    from ganfast.validate import _pixel_stats
    gen = torch.Generator().manual_seed(4)
    real = torch.randint(0, 256, (7, 3, 4, 4), generator=gen, dtype=torch.uint8)
    fake = torch.randint(100, 256, (5, 3, 4, 4), generator=gen, dtype=torch.uint8)
    stats = _pixel_stats(real, fake, chunk=3)
    for ch in range(3):
        hr = np.bincount(real[:, ch].numpy().ravel(), minlength=256) / real[:, ch].numel()
        hf = np.bincount(fake[:, ch].numpy().ravel(), minlength=256) / fake[:, ch].numel()
        assert stats["tv_distance"][ch] == pytest.approx(np.abs(hr - hf).sum() / 2, rel=1e-12)
        assert stats["mean_real"][ch] == pytest.approx(real[:, ch].double().mean().item(), rel=1e-12)
        assert stats["mean_synthetic"][ch] == pytest.approx(fake[:, ch].double().mean().item(), rel=1e-12)
    assert _pixel_stats(real, real.clone())["tv_distance"] == [0.0, 0.0, 0.0]
