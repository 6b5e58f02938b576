"""Detector files recognised by content, their one-line errors, the resize matrices, the real-feature cache and
the refusal of metric counts a data set cannot supply."""
import io
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ganfast.cli import main
from ganfast.data import load_dataset
from ganfast.metrics.detectors import (FIDInceptionV3, VGG16, load_detector, pil_bicubic_matrix,
                                       tf1_bilinear_matrix)
from ganfast.metrics.report import Features, compute_metric, real_features


class _Pool(nn.Module):
    """A TorchScript detector with NVlabs' interface: features = per-channel means; ``layers`` for the other
    modes."""

    def __init__(self):
        super().__init__()
        self.layers = nn.AdaptiveAvgPool2d(1)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return img.mean(dim=(2, 3))


def _script_bytes(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_formats_by_content(tmp_path):
    archive = _script_bytes(_Pool())
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    expected = images.double().mean(dim=(2, 3))
    (tmp_path / "a.weights").write_bytes(archive)                          # the name does not matter
    (tmp_path / "b.pkl").write_bytes(pickle.dumps(_Reduce(torch.jit.load, (io.BytesIO(archive),)), protocol=4))
    for name, fmt in (("a.weights", "torchscript"), ("b.pkl", "nvlabs-pkl")):
        det = load_detector(str(tmp_path / name))
        assert (det.format, det.mode) == (fmt, "legacy_tensorflow")
        assert torch.allclose(det(images), expected)
        assert det(images[:, :1]).shape == (3, 3)                          # greyscale repeated to RGB
    # clean mode: resized to 299 by Pillow's bicubic, (x - 128) / 128, then `layers`
    det = load_detector(str(tmp_path / "a.weights"), mode="clean")
    m = pil_bicubic_matrix(8, 299)
    ref = (torch.einsum("yh,nchw,xw->ncyx", m, images.double(), m).clamp(0, 255) - 128) / 128
    assert torch.allclose(det(images), ref.mean(dim=(2, 3)), atol=1e-5)


def test_state_dicts_load_into_ganfast_networks(tmp_path):
    net = FIDInceptionV3()
    sd = dict(net.state_dict(), **{"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)})
    torch.save(sd, tmp_path / "pt_inception.pth")
    det = load_detector(str(tmp_path / "pt_inception.pth"))
    assert (det.format, det.mode, det.kind) == ("state-dict", "legacy_pytorch", "inception")
    assert det(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)).shape == (1, 2048)
    with pytest.raises(ValueError, match=r"pt_inception\.pth.* holds a inception state dict"):
        load_detector(str(tmp_path / "pt_inception.pth"), kind="vgg16")
    del sd["Mixed_6b.branch1x1.conv.weight"]
    torch.save({"state_dict": sd}, tmp_path / "broken.pth")                # {"state_dict": ...} is unwrapped
    with pytest.raises(ValueError, match=r"broken\.pth.*1 tensors are missing \(e\.g\. Mixed_6b"):
        load_detector(str(tmp_path / "broken.pth"))


def test_vgg16_matches_torchvision_layout():
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision
    ref = torchvision.models.vgg16().eval()
    ours = VGG16().eval()
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("classifier.6.")})
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref.classifier[:5](torch.flatten(ref.avgpool(ref.features(x)), 1))
        assert torch.allclose(ours(x), expected, rtol=1e-5, atol=1e-6)


def test_unreadable_files_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt.*downloads nothing"):
        load_detector(str(tmp_path / "missing.pt"))
    marker = tmp_path / "ran"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Reduce(os.system, (f"touch {marker}",))))
    (tmp_path / "noise.bin").write_bytes(os.urandom(4096))
    torch.save({"w": torch.zeros(3)}, tmp_path / "other.pth")
    for name in ("evil.pkl", "noise.bin", "other.pth"):
        with pytest.raises(ValueError, match=rf"inception file .*{name}.*\(expected NVlabs' inception-2015-12-05"):
            load_detector(str(tmp_path / name))
    assert not marker.exists()                                              # nothing in the stream was executed
    torch.jit.script(nn.Flatten()).save(str(tmp_path / "plain.pt"))
    with pytest.raises(ValueError, match="needs an Inception TorchScript with a 'layers' submodule"):
        load_detector(str(tmp_path / "plain.pt"), mode="clean")
    with pytest.raises(ValueError, match="mode must be one of"):
        load_detector(str(tmp_path / "plain.pt"), mode="bicubic")
    with pytest.raises(SystemExit) as exit_info:
        main(["fid", "digits", "digits", "--inception", str(tmp_path / "noise.bin")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "noise.bin" in err


def test_resize_matrices_match_pillow_and_tensorflow1():
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    a = np.random.RandomState(0).rand(37, 23).astype(np.float32) * 255
    for out in (299, 11):                                                   # up and down
        pil = np.asarray(Image.fromarray(a, mode="F").resize((out, out), resample=Image.BICUBIC))
        ours = pil_bicubic_matrix(37, out) @ torch.from_numpy(a).double() @ pil_bicubic_matrix(23, out).T
        assert np.abs(ours.numpy() - pil).max() < 1e-4 * np.abs(pil).max()
        tf = interpolate_bilinear_2d_like_tensorflow1x(torch.from_numpy(a)[None, None], size=(out, out),
                                                       align_corners=False)[0, 0].double()
        ours = tf1_bilinear_matrix(37, out) @ torch.from_numpy(a).double() @ tf1_bilinear_matrix(23, out).T
        assert (ours - tf).abs().max() < 1e-4 * tf.abs().max()


def test_real_features_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFAST_CACHE", str(tmp_path))
    dataset = load_dataset("digits")
    calls = []

    def extract(x):
        calls.append(len(x))
        return x.float().mean(dim=(2, 3))

    features = Features("pool", extract, key="pool-test")
    index = torch.arange(100)
    first, seconds = real_features(dataset, index, features)
    assert sum(calls) == 100 and len(list((tmp_path / "features").iterdir())) == 1 and seconds > 0
    again, seconds = real_features(dataset, index, features)               # a new process: read from disk
    assert sum(calls) == 100 and torch.equal(first, again) and seconds is None
    dataset.data = dataset.data.clone()
    dataset.data[0] += 1                                                    # other images: another key
    real_features(dataset, index, features)
    assert sum(calls) == 200 and len(list((tmp_path / "features").iterdir())) == 2


def test_counts_above_the_data_set_are_refused():
    dataset = load_dataset("digits")                                        # 1797 images
    features = Features("inception", lambda x: x.float().mean(dim=(2, 3)))
    with pytest.raises(ValueError, match=r"'fid2k' compares 2000 fakes .* holds 1797 images.*fid1797.*fid2k_full"):
        compute_metric("fid2k", None, dataset, features)
