"""ganfast.data: the embedded data sets, users' folders / zips / .npz files, and the checkpointable data order."""
import math
import zipfile

import numpy as np
import pytest
import torch

from ganfast import data


@pytest.mark.parametrize("name,count,std", [("ring8", 8, data.RING8_STD), ("grid25", 25, data.GRID25_STD)])
def test_mixtures(name, count, std):
    ds = data.load_dataset(name, seed=3)
    assert ds.is_2d and ds.modes.shape == (count, 2) and ds.std == std and len(ds) == data.MIXTURE_SIZE
    dist, nearest = torch.cdist(ds.data.double(), ds.modes.double()).min(1)
    counts = torch.bincount(nearest, minlength=count).double()
    assert (counts / len(ds)).sub(1 / count).abs().max() < 0.01           # equal weights
    offsets = ds.data.double() - ds.modes.double()[nearest]
    assert offsets.std(0).sub(std).abs().max() < 0.05 * std                # per-axis std as documented
    assert torch.equal(ds.data, data.load_dataset(name, seed=3).data)
    assert not torch.equal(ds.data, data.load_dataset(name, seed=4).data)


def test_mixture_geometry():
    ring = data.ring8_modes()
    assert torch.allclose(ring.norm(dim=1), torch.full((8,), data.RING8_RADIUS))
    assert torch.allclose(ring[0], torch.tensor([2.0, 0.0]))
    angles = torch.atan2(ring[:, 1], ring[:, 0]).remainder(2 * math.pi)
    assert torch.allclose(angles, torch.arange(8) * (2 * math.pi / 8), atol=1e-6)
    grid = data.grid25_modes()
    assert sorted(set(grid[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(p) for p in grid.tolist()}) == 25


@pytest.mark.parametrize("resolution", [16, 32])
def test_digits(resolution):
    x, y = data.digits_with_labels(resolution)
    assert x.shape == (1797, 1, resolution, resolution) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.99 and x.max() > 0.9
    assert y.shape == (1797,) and set(y.tolist()) == set(range(10))
    # the resize keeps the images: averaging back to 8x8 is close to the originals
    from sklearn.datasets import load_digits
    original = torch.from_numpy(load_digits().images).float() / 8 - 1
    back = torch.nn.functional.adaptive_avg_pool2d(x, 8)[:, 0]
    assert (back - original).abs().mean() < 0.15
    with pytest.raises(ValueError, match="resolution"):
        data.digits(20)


def _write_images(folder, colours, mode="RGB", size=(20, 12)):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(colours):
        Image.new(mode, size, c).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")


def test_image_folder_and_zip(tmp_path):
    _write_images(tmp_path / "imgs" / "sub", [(255, 0, 0), (0, 0, 255), (0, 255, 0)])
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    ds = data.load_dataset(str(tmp_path / "imgs"), resolution=16)
    assert ds.data.shape == (3, 3, 16, 16) and not ds.is_2d and ds.modes is None
    # sorted: img0 (jpg, red), img1 (png, blue), img2 (jpg, green); JPEG is lossy
    assert torch.allclose(ds.data[1, :, 5, 5], torch.tensor([-1.0, -1.0, 1.0]))
    assert ds.data[0, 0].mean() > 0.9 and ds.data[2, 1].mean() > 0.9
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        for f in sorted((tmp_path / "imgs" / "sub").iterdir()):
            zf.write(f, f.name)
    zipped = data.load_dataset(str(tmp_path / "imgs.zip"), resolution=16)
    assert torch.equal(zipped.data, ds.data)


def test_greyscale_folder(tmp_path):
    _write_images(tmp_path / "grey", [0, 255], mode="L")
    ds = data.load_dataset(str(tmp_path / "grey"), resolution=32)
    assert ds.data.shape == (2, 1, 32, 32)
    assert torch.allclose(ds.data[1], torch.ones(1, 32, 32))


def test_npz(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float64)
    np.savez(tmp_path / "pts.npz", x=pts, other=np.zeros(3))
    ds = data.load_dataset(str(tmp_path / "pts.npz"))
    assert ds.is_2d and torch.allclose(ds.data, torch.from_numpy(pts).float())
    imgs = np.full((4, 16, 16, 3), 255, dtype=np.uint8)
    imgs[:, :, :, 1] = 0
    np.savez(tmp_path / "imgs.npz", imgs)
    ds = data.load_dataset(str(tmp_path / "imgs.npz"), resolution=16)
    assert ds.data.shape == (4, 3, 16, 16)
    assert torch.equal(ds.data[:, 1], -torch.ones(4, 16, 16)) and torch.equal(ds.data[:, 0], torch.ones(4, 16, 16))
    np.savez(tmp_path / "two.npz", a=pts, b=pts)
    with pytest.raises(ValueError, match="name the data array 'x'"):
        data.load_dataset(str(tmp_path / "two.npz"))
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="must be"):
        data.load_dataset(str(tmp_path / "bad.npz"))


def test_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.load_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG/JPEG"):
        data.load_dataset(str(tmp_path / "empty"))
    (tmp_path / "f.csv").write_text("1,2")
    with pytest.raises(ValueError, match="neither"):
        data.load_dataset(str(tmp_path / "f.csv"))


def _batches(order, n):
    return [order.next_batch() for _ in range(n)]


def test_data_order_epochs_and_resume():
    x = torch.arange(10).float().unsqueeze(1)
    order = data.DataOrder(x, batch_size=4, seed=5)
    first = _batches(order, 2)  # 8 of the 10 rows: epoch 0, no repeats
    rows = torch.cat(first).flatten().tolist()
    assert len(set(rows)) == 8
    state = order.state_dict()
    rest = _batches(order, 5)   # 2 batches per epoch (the 2-row tail is skipped): epochs 1, 2 and 3
    assert order.epoch == 3
    again = data.DataOrder(x, batch_size=4, seed=5)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(rest, _batches(again, 5)))
    other = data.DataOrder(x, batch_size=4, seed=6)
    assert not all(torch.equal(a, b) for a, b in zip(first, _batches(other, 2)))
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)


def test_data_order_ranks_split_the_global_batch():
    x = torch.arange(40).float().unsqueeze(1)
    single = _batches(data.DataOrder(x, batch_size=8, seed=1), 7)
    ranks = [_batches(data.DataOrder(x, batch_size=8, seed=1, rank=r, world_size=2), 7) for r in range(2)]
    for step, whole in enumerate(single):
        parts = torch.cat([ranks[0][step], ranks[1][step]])
        assert sorted(parts.flatten().tolist()) == sorted(whole.flatten().tolist())
    with pytest.raises(ValueError, match="multiple of world_size"):
        data.DataOrder(x, batch_size=7, world_size=2)
    with pytest.raises(ValueError, match="exceeds"):
        data.DataOrder(x, batch_size=64)
