"""ganfast.data: the embedded data sets, users' folders / zips / .npz files with labels, the uint8 cache, x-flips,
the checkpointable data order and the batch loader."""
import json
import math
import zipfile
from pathlib import Path

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
    with pytest.warns(UserWarning) as notices:
        ds = data.load_dataset(str(tmp_path / "imgs"), resolution=16)
    assert sorted(str(w.message).split(": ", 1)[1] for w in notices) == [
        "3 of 3 images are not square (e.g. 'sub/img0.jpg', 20x12); they are centre-cropped to squares",
        "3 of 3 images are resized to 16x16 (e.g. 'sub/img0.jpg', 20x12)"]
    assert ds.data.shape == (3, 3, 16, 16) and ds.data.dtype == torch.uint8 and not ds.is_2d and ds.modes is None
    assert ds.labels is None and ds.c_dim == 0 and ds.num_classes is None
    # sorted: img0 (jpg, red), img1 (png, blue), img2 (jpg, green); JPEG is lossy
    x = ds.batch(torch.arange(3))
    assert x.dtype == torch.float32 and torch.equal(x[1, :, 5, 5], torch.tensor([-1.0, -1.0, 1.0]))
    assert x[0, 0].mean() > 0.9 and x[2, 1].mean() > 0.9
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        for f in sorted((tmp_path / "imgs" / "sub").iterdir()):
            zf.write(f, f.name)
    zipped = data.load_dataset(str(tmp_path / "imgs.zip"), resolution=16)
    assert torch.equal(zipped.data, ds.data)


def test_greyscale_folder(tmp_path):
    _write_images(tmp_path / "grey", [0, 255], mode="L", size=(32, 32))
    ds = data.load_dataset(str(tmp_path / "grey"))
    assert ds.data.shape == (2, 1, 32, 32)                      # the images' own size by default
    assert torch.equal(ds.batch([1])[0], torch.ones(1, 32, 32))


def test_default_resolution_is_the_images_own_power_of_two(tmp_path):
    _write_images(tmp_path / "a", [0, 255], mode="L", size=(24, 24))
    with pytest.warns(UserWarning, match=r"2 of 2 images are resized to 16x16 \(e.g. 'img0.jpg', 24x24\)"):
        assert data.load_dataset(str(tmp_path / "a")).sample_shape == (1, 16, 16)
    _write_images(tmp_path / "b", [0, 255], mode="L", size=(64, 40))
    with pytest.warns(UserWarning, match="centre-cropped") as notices:
        assert data.load_dataset(str(tmp_path / "b")).sample_shape == (1, 32, 32)
    assert len(notices) == 2                                    # one notice each for cropping and resizing
    assert data.load_dataset("digits").sample_shape == (1, 16, 16)


def test_npz(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float64)
    np.savez(tmp_path / "pts.npz", x=pts, other=np.zeros(3))
    ds = data.load_dataset(str(tmp_path / "pts.npz"))
    assert ds.is_2d and torch.allclose(ds.data, torch.from_numpy(pts).float())
    imgs = np.full((4, 16, 16, 3), 255, dtype=np.uint8)
    imgs[:, :, :, 1] = 0
    np.savez(tmp_path / "imgs.npz", imgs)
    ds = data.load_dataset(str(tmp_path / "imgs.npz"))
    assert ds.data.shape == (4, 3, 16, 16) and ds.data.dtype == torch.uint8
    x = ds.batch(torch.arange(4))
    assert torch.equal(x[:, 1], -torch.ones(4, 16, 16)) and torch.equal(x[:, 0], torch.ones(4, 16, 16))
    floats = np.linspace(-1, 1, 4 * 8 * 8, dtype=np.float32).reshape(4, 1, 8, 8)
    np.savez(tmp_path / "floats.npz", images=floats, labels=np.array([2, 0, 1, 2]))
    ds = data.load_dataset(str(tmp_path / "floats.npz"))
    assert ds.data.dtype == torch.uint8 and (ds.batch(torch.arange(4)) - torch.from_numpy(floats)).abs().max() < 0.004
    assert ds.num_classes == 3 and torch.equal(ds.labels, torch.tensor([2, 0, 1, 2]))
    with pytest.warns(UserWarning, match="resized to 4x4"):
        assert data.load_dataset(str(tmp_path / "floats.npz"), resolution=4).sample_shape == (1, 4, 4)
    np.savez(tmp_path / "two.npz", a=pts, b=pts)
    with pytest.raises(ValueError, match="name the data array 'images'"):
        data.load_dataset(str(tmp_path / "two.npz"))
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="must be"):
        data.load_dataset(str(tmp_path / "bad.npz"))


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, 2]), "has 3 labels for 4 images"),
    (np.array([0, -1, 2, 3]), "must be >= 0"),
    (np.array([0.5, 1, 2, 3]), r"\(N,\) class indices \(integers\) or \(N, D\) vectors"),
    (np.full((4, 2), np.nan), "NaN or inf"),
])
def test_npz_bad_labels(tmp_path, labels, message):
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 1, 8, 8), np.uint8), labels=labels)
    with pytest.raises(ValueError, match=message):
        data.load_dataset(str(tmp_path / "d.npz"))


def test_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.load_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG/JPEG"):
        data.load_dataset(str(tmp_path / "empty"))
    (tmp_path / "f.csv").write_text("1,2")
    with pytest.raises(ValueError, match="neither"):
        data.load_dataset(str(tmp_path / "f.csv"))
    with pytest.raises(ValueError, match="x-flips apply to images"):
        data.load_dataset("ring8", mirror=True)


# -- labels (StyleGAN2-ADA's dataset.json) --------------------------------------------------------------------------
def _labelled_folder(folder, labels, n=4, size=8):
    """``n`` greyscale images ``c/img<i>.png`` (grey level 10·i) and a dataset.json with ``labels`` (a list of
    labels, given to the images in order, or the raw JSON text)."""
    from PIL import Image
    names = [f"c{i % 2}/img{i}.png" for i in range(n)]
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (size, size), 10 * i).save(folder / name)
    text = labels if isinstance(labels, str) else json.dumps({"labels": [[n, v] for n, v in zip(names, labels)]})
    (folder / "dataset.json").write_text(text)
    return names


def _zip_folder(folder, path):
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())


def test_class_labels_folder_and_zip(tmp_path):
    _labelled_folder(tmp_path / "d", [2, 0, 1, 2])
    ds = data.load_dataset(str(tmp_path / "d"))
    # images are sorted by path (c0/img0, c0/img2, c1/img1, c1/img3): labels follow their images
    assert ds.data[:, 0, 0, 0].tolist() == [0, 20, 10, 30]
    assert ds.labels.dtype == torch.int64 and torch.equal(ds.labels, torch.tensor([2, 1, 0, 2]))
    assert ds.num_classes == 3 and ds.c_dim == 3
    assert torch.equal(ds.label_vectors([0, 1, 2]), torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]))
    _zip_folder(tmp_path / "d", tmp_path / "d.zip")
    zipped = data.load_dataset(str(tmp_path / "d.zip"))
    assert torch.equal(zipped.labels, ds.labels) and torch.equal(zipped.data, ds.data)


def test_vector_and_null_labels(tmp_path):
    _labelled_folder(tmp_path / "v", [[0.5, 1], [1, 2], [3, 4.25], [0, 0]])
    ds = data.load_dataset(str(tmp_path / "v"))
    assert ds.labels.dtype == torch.float32 and ds.c_dim == 2 and ds.num_classes is None
    assert torch.equal(ds.label_vectors([0, 2]), torch.tensor([[0.5, 1.0], [1.0, 2.0]]))   # sorted: img0, img2, img1
    _labelled_folder(tmp_path / "n", '{"labels": null}')
    assert data.load_dataset(str(tmp_path / "n")).labels is None


def test_digits_carry_their_classes():
    ds = data.load_dataset("digits")
    x, y = data.digits_with_labels(16)
    assert ds.data.dtype == torch.uint8 and ds.num_classes == 10 and ds.c_dim == 10 and torch.equal(ds.labels, y)
    assert (ds.batch(torch.arange(len(ds))) - x).abs().max() <= 1 / 255 + 1e-6     # uint8 rounding only


@pytest.mark.parametrize("labels, message", [
    ("[2, 0", "is damaged: not valid JSON"),
    ('{"classes": []}', r"is damaged: expected \{\"labels\""),
    ('{"labels": {"c0/img0.png": 1}}', "is damaged: 'labels' must be a list"),
    ('{"labels": [["c0/img0.png"]]}', r"is damaged: \['c0/img0.png'\] is not a \[path, label\] pair"),
    ([1, 0, 1], r"has no label for the image 'c1/img3.png' \(1 of 4 images lack one\)"),
    ([1, 0, 1, 0, 1], r"has a label for 'c0/img4.png', which is not an image of the data set"),
    ([1, 0, [0.5], 1], r"mixes label kinds: 'c0/img0.png' has a class index, 'c0/img2.png' a vector of 1 numbers"),
    ([[1, 2], [1, 2], [1], [1, 2]],
     "mixes label kinds: 'c0/img0.png' has a vector of 2 numbers, 'c0/img2.png' a vector of 1 numbers"),
    ([1, -1, 0, 1], r"gives 'c1/img1.png' the label -1; a label is a class index"),
    ([1, 0.5, 0, 1], "gives 'c1/img1.png' the label 0.5"),
    ([1, True, 0, 1], "gives 'c1/img1.png' the label True"),
])
@pytest.mark.parametrize("container", ["folder", "zip"])
def test_bad_labels_name_the_file(tmp_path, labels, message, container):
    if isinstance(labels, list) and len(labels) == 5:               # a label for an image that is not there
        names = _labelled_folder(tmp_path / "d", labels[:4])
        doc = json.loads((tmp_path / "d" / "dataset.json").read_text())
        doc["labels"].append(["c0/img4.png", labels[4]])
        (tmp_path / "d" / "dataset.json").write_text(json.dumps(doc))
    elif isinstance(labels, list) and len(labels) == 3:              # an image without a label
        names = _labelled_folder(tmp_path / "d", labels + [0])
        doc = json.loads((tmp_path / "d" / "dataset.json").read_text())
        doc["labels"] = [e for e in doc["labels"] if e[0] != names[3]]
        (tmp_path / "d" / "dataset.json").write_text(json.dumps(doc))
    else:
        _labelled_folder(tmp_path / "d", labels)
    path = tmp_path / "d"
    if container == "zip":
        _zip_folder(path, tmp_path / "d.zip")
        path = tmp_path / "d.zip"
    with pytest.raises(ValueError, match="dataset: " + (r"'dataset.json' in '" if container == "zip" else "'")
                       + ".*" + message) as info:
        data.load_dataset(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# -- the uint8 cache ------------------------------------------------------------------------------------------------
@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    decode = data.decode_image

    def counting(*args, **kwargs):
        calls.append(args[0])
        return decode(*args, **kwargs)

    monkeypatch.setattr(data, "decode_image", counting)
    return calls


def test_cache_is_reused_and_invalidated(tmp_path, count_decodes):
    import os
    _labelled_folder(tmp_path / "d", [0, 1, 1, 0], n=4)
    cache = tmp_path / "cache"
    first = data.load_dataset(str(tmp_path / "d"), cache_dir=cache)
    assert len(count_decodes) == 4 and first.report.startswith("decoded 4 images in")
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy" and files[0].stat().st_size == 128 + 4 * 64
    again = data.load_dataset(str(tmp_path / "d"), cache_dir=cache)
    assert len(count_decodes) == 4 and again.report.startswith("cache hit, no decoding")   # nothing decoded
    assert torch.equal(again.data, first.data) and torch.equal(again.labels, first.labels)
    # another resolution is another cache file
    data.load_dataset(str(tmp_path / "d"), resolution=4, cache_dir=cache)
    assert len(count_decodes) == 8 and len(list(cache.iterdir())) == 2
    # a changed image (new content, size and modification time) is decoded again
    from PIL import Image
    changed = tmp_path / "d" / "c0" / "img2.png"
    Image.new("L", (8, 8), 200).save(changed)
    os.utime(changed, ns=(10**18, 10**18))
    fresh = data.load_dataset(str(tmp_path / "d"), cache_dir=cache)
    assert len(count_decodes) == 12 and fresh.data[1, 0, 0, 0] == 200
    assert not [f for f in cache.iterdir() if f.name.startswith(".")]                  # no temporary file left
    # the default place: $GANFAST_CACHE/datasets
    assert data.cache_root() == Path(os.environ["GANFAST_CACHE"]) / "datasets"
    assert data.cache_root(tmp_path) == tmp_path


def test_damaged_cache_file_is_rebuilt(tmp_path, count_decodes):
    _labelled_folder(tmp_path / "d", [0, 1, 1, 0])
    images = data.load_dataset(str(tmp_path / "d"), cache_dir=tmp_path / "c").data.clone()
    (cache_file,) = (tmp_path / "c").iterdir()
    cache_file.unlink()                             # the mapping keeps the old file; a new one is written in place
    cache_file.write_bytes(b"\x93NUMPY garbage")
    again = data.load_dataset(str(tmp_path / "d"), cache_dir=tmp_path / "c")
    assert len(count_decodes) == 8 and torch.equal(again.data, images)


def test_npz_images_are_cached(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", images=np.arange(4 * 64, dtype=np.uint8).reshape(4, 1, 8, 8),
             labels=np.array([1, 0, 1, 0]))
    first = data.load_dataset(str(tmp_path / "d.npz"), cache_dir=tmp_path / "c")
    monkeypatch.setattr(data, "_npz_contents", None)                    # a hit never reads the images
    again = data.load_dataset(str(tmp_path / "d.npz"), cache_dir=tmp_path / "c")
    assert again.report.startswith("cache hit") and torch.equal(again.data, first.data)
    assert torch.equal(again.labels, torch.tensor([1, 0, 1, 0]))


def test_mirror_doubles_the_set_with_flips():
    ds = data.load_dataset("digits", mirror=True)
    n = ds.num_stored
    assert len(ds) == 2 * n == 2 * 1797
    idx = torch.tensor([0, n, 5, n + 5])
    x = ds.rows(idx)
    assert torch.equal(x[1], x[0].flip(-1)) and torch.equal(x[3], x[2].flip(-1)) and not torch.equal(x[0], x[1])
    assert torch.equal(ds.label_vectors(idx)[1], ds.label_vectors(idx)[0])
    assert torch.equal(ds.data[:1], x[:1])                               # the stored images are untouched
    order = data.DataOrder(ds, batch_size=2 * n, seed=0)
    assert sorted(order.next_indices().tolist()) == list(range(2 * n))  # one epoch: every image and every flip


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
    with pytest.raises(ValueError, match="a data set of 10 samples, this run's has 12"):
        data.DataOrder(torch.arange(12), batch_size=4, seed=5).load_state_dict(state)


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


def test_peek_and_next_indices_agree():
    order = data.DataOrder(torch.arange(10), batch_size=4, seed=2, rank=1, world_size=2)
    for _ in range(7):                                       # across epoch boundaries too
        ahead = order.peek_indices()
        assert torch.equal(ahead, order.next_indices()) and len(ahead) == 2


def test_batch_loader_prefetch_keeps_the_sequence(monkeypatch):
    """Batches from the loader (which prepares the next in a thread) equal the data order's rows converted to
    float, also after the order is moved back (a resume); only batches are ever converted to float."""
    ds = data.load_dataset("digits", mirror=True)
    converted = []
    to_float = data.to_float
    monkeypatch.setattr(data, "to_float", lambda x: converted.append(x.shape[0]) or to_float(x))
    reference = data.DataOrder(ds, batch_size=8, seed=3)
    expected = [to_float(ds.rows(reference.next_indices())) for _ in range(6)]
    order = data.DataOrder(ds, batch_size=8, seed=3)
    loader = data.BatchLoader(ds, order, torch.device("cpu"))
    got = [loader.next() for _ in range(4)]
    order.load_state_dict(data.DataOrder(ds, batch_size=8, seed=3).state_dict() | {"index": 16})
    got += [loader.next() for _ in range(2)]
    want = expected[:4] + expected[2:4]
    for (x, idx), e in zip(got, want):
        assert x.dtype == torch.float32 and torch.equal(x, e) and len(idx) == 8
    assert max(converted) == 8
