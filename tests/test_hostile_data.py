"""Hardening of data sets: zip slip, links out of a folder, broken or oversized images, zip bombs, pickled or
garbage .npz arrays are refused with errors naming the file."""
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image



def _png_bytes(value: int, side: int = 4, fmt: str = "PNG") -> bytes:
    import io
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side), value, np.uint8), "L").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["../escape.png", "a/../../escape.png", "/etc/escape.png", "C:/escape.png",
                                  "..\\escape.png"])
def test_zip_slip_is_refused(tmp_path, name):
    from ganfast.data import load_dataset
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.png", _png_bytes(10))
        zf.writestr(zipfile.ZipInfo(name), _png_bytes(20))
    assert name in zipfile.ZipFile(path).namelist()
    with pytest.raises(ValueError, match="escapes the archive root"):
        load_dataset(str(path), resolution=16)


def test_zip_with_safe_names_loads(tmp_path):
    from ganfast.data import load_dataset
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/one.png", _png_bytes(0))
        zf.writestr("two..png", _png_bytes(255))               # '..' inside a name is harmless
    data = load_dataset(str(path), resolution=16).data
    assert data.shape == (2, 1, 16, 16) and data.dtype == torch.uint8 and data[0].max() == 0 and data[1].min() == 255


def test_folder_links_out_of_the_root(tmp_path):
    from ganfast.data import load_dataset
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.png").write_bytes(_png_bytes(0))
    (outside / "secret.png").write_bytes(_png_bytes(255))
    (root / "sub" / "inside-link.png").symlink_to(root / "a.png")      # a link within the root is fine
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)  # folder links are not followed
    assert load_dataset(str(root), resolution=16).data.shape == (2, 1, 16, 16)
    (root / "b.png").symlink_to(outside / "secret.png")
    with pytest.raises(ValueError, match="outside the data folder"):
        load_dataset(str(root), resolution=16)


@pytest.mark.parametrize("damage", ["truncated", "not_an_image", "other_format", "bomb"])
@pytest.mark.parametrize("container", ["folder", "zip"])
def test_broken_or_oversized_images_name_the_file(tmp_path, monkeypatch, damage, container):
    """A truncated image, a non-image or a picture of another format (a GIF) with a PNG's name, or one of more
    pixels than Pillow's decompression-bomb limit (lowered here to 100 for a 16×16 picture) is a ValueError
    naming the file."""
    from ganfast.data import load_dataset
    png = _png_bytes(7, side=16)
    bad = {"truncated": png[:len(png) // 2 + 8], "not_an_image": b"not an image at all",
           "other_format": _png_bytes(7, side=16, fmt="GIF"), "bomb": png}[damage]
    if damage == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    if container == "folder":
        path = tmp_path / "data"
        path.mkdir()
        (path / "good.png").write_bytes(_png_bytes(1))
        (path / "bad.png").write_bytes(bad)
    else:
        path = tmp_path / "data.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("good.png", _png_bytes(1))
            zf.writestr("bad.png", bad)
    with pytest.raises(ValueError, match=r"dataset: '[^']*bad\.png' is not a readable PNG/JPEG image"):
        load_dataset(str(path), resolution=16)


def test_zip_member_failing_its_crc_names_it(tmp_path):
    from ganfast.data import load_dataset
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:                      # stored: the PNG's bytes appear as they are
        zf.writestr("good.png", _png_bytes(1))
        zf.writestr("bad.png", _png_bytes(9, side=16))
    blob = bytearray(path.read_bytes())
    at = blob.rindex(b"IDAT") + 6
    blob[at] ^= 0x01                                            # inside bad.png's image data
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"'bad\.png' is not a readable PNG/JPEG image"):
        load_dataset(str(path), resolution=16)


def test_zip_bomb_member_is_refused(tmp_path, monkeypatch):
    from ganfast import data
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", _png_bytes(1))
        zf.writestr("huge.png", bytes(1 << 16))                 # 64 KiB of zeros, deflated to a few hundred bytes
    monkeypatch.setattr(data, "MAX_MEMBER_BYTES", 1 << 15)
    with pytest.raises(ValueError, match="'huge.png' of 65536 bytes uncompressed"):
        data.load_dataset(str(path), resolution=16)


@pytest.mark.parametrize("array, message", [
    (np.array([[0.0, np.nan]] * 4), "holds NaN or inf"),
    (np.full((4, 1, 8, 8), np.inf, np.float32), "holds NaN or inf"),
    (np.zeros((0, 2)), "non-empty array of real numbers"),
    (np.zeros((4, 2), np.complex64), "non-empty array of real numbers"),
    (np.full((4, 8, 8, 3), 255.0), r"values in \[255.0, 255.0\]; give uint8"),
    (np.full((4, 1, 8, 8), 300, np.uint16), r"values in \[300, 300\]; give uint8"),
])
def test_npz_arrays_that_would_train_on_garbage_are_refused(tmp_path, array, message):
    from ganfast.data import load_dataset
    np.savez(tmp_path / "data.npz", x=array)
    with pytest.raises(ValueError, match=message):
        load_dataset(str(tmp_path / "data.npz"), resolution=8)


def test_npz_images_in_zero_one_get_a_warning(tmp_path):
    from ganfast.data import load_dataset
    np.savez(tmp_path / "data.npz", x=np.full((4, 1, 8, 8), 0.5, np.float32))
    with pytest.warns(UserWarning, match=r"scale them to \[-1, 1\]"):
        load_dataset(str(tmp_path / "data.npz"), resolution=8)


def test_temporary_files_of_other_machines_are_kept(tmp_path):
    """A shared output folder: stale temporary files of this machine's dead processes go, another machine's
    (whose processes this one cannot see) stay."""
    from ganfast._io import TMP_MARK, remove_stale_temps, temp_path
    dead = 2 ** 22 + 12345                                       # beyond pid_max's default: no such process
    mine = temp_path(tmp_path / "a.npz")
    mine = mine.with_name(mine.name.rpartition("-")[0] + f"-{dead}")
    theirs, legacy = tmp_path / f".b.npz{TMP_MARK}other_host-{dead}", tmp_path / f".c.npz{TMP_MARK}{dead}"
    for f in (mine, theirs, legacy):
        f.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == 2
    assert [f.exists() for f in (mine, theirs, legacy)] == [False, True, False]


def test_pickled_npz_is_refused(tmp_path):
    from ganfast.data import load_dataset
    path = tmp_path / "data.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_dataset(str(path))


# -- large sizes -----------------------------------------------------------------------------------------------------
# Sizes past 2**31 elements, and grids past CUDA's 65535 programs on axes 1 and 2. Nothing here allocates more than
# a few MiB: logically huge inputs are expanded (stride-0) views, and grid limits are lowered by monkeypatching
# the launchers' MAX_GRID_YZ so that the grid-stride loops of the Triton kernels run on tiny shapes.

