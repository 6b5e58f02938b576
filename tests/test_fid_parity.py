"""FID and KID of ganfast equal pytorch-fid's, clean-fid's and torch-fidelity's for the same images and weights.

Real weights cannot be downloaded here, so the detectors have seeded random weights, saved in each tool's format.
Two layers of checks, because the full Inception-v3 at 299 px costs about 0.4 s per image on a CPU core:
- the network: ganfast's FIDInceptionV3, loaded from a ``pt_inception-2015-12-05``-layout state dict, gives the
  features of pytorch-fid's InceptionV3 (resize inside, ``legacy_pytorch``) and of torch-fidelity's
  ``inception-v3-compat`` (``legacy_tensorflow``) from the same file, and of clean-fid's wrapper around an NVlabs-style
  TorchScript of it (``clean``), on a few images;
- the pipeline (decoding, resize, normalisation, statistics, FID, KID) on 512 + 512 images of 32 px, each tool
  running its own folder pipeline with a small random network standing in for the Inception layers. The stand-in
  gives 256 features where the tool allows it (pytorch-fid, torch-fidelity): the tools' scipy ``sqrtm`` of a
  2048x2048 matrix takes minutes on a loaded 2-core CPU. clean-fid's wrapper insists on 2048: there its features
  are compared with ganfast's, KID on all 2048, FID (its own formula) on the first 256.
KID is checked with one subset of all 512 images (each tool draws subsets with its own RNG; a subset of every
image is the same set whichever RNG draws it, so more subsets would repeat the same value).
"""
import io
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

from cleanfid import fid as cleanfid_fid  # noqa: E402
from cleanfid.inception_torchscript import InceptionV3W  # noqa: E402
from pytorch_fid import fid_score as pfid_score  # noqa: E402
from pytorch_fid import inception as pfid_inception  # noqa: E402
import torch_fidelity  # noqa: E402
from torch_fidelity.feature_extractor_base import FeatureExtractorBase  # noqa: E402
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # noqa: E402
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x  # noqa: E402

from ganfast.cli import main  # noqa: E402
from ganfast.metrics.detectors import Detector, FIDInceptionV3, load_detector  # noqa: E402
from ganfast.metrics.frechet import frechet_distance  # noqa: E402
from ganfast.metrics.kid import kernel_inception_distance  # noqa: E402
from ganfast.metrics.report import Features, image_set  # noqa: E402
from support import random_inception_state, smooth_images  # noqa: E402

N, SIZE, RTOL = 512, 32, 1e-4


class NVlabsStyle(nn.Module):
    """The interface of NVlabs' TorchScript detector: uint8-valued images of any size, resized inside to 299,
    (x − 128) / 128, ``layers`` -> features (``return_features=True``, 2048 for Inception) or a class output."""

    def __init__(self, layers: nn.Module):
        super().__init__()
        self.layers = layers

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = img.to(torch.float32)
        if x.shape[2] != 299 or x.shape[3] != 299:
            x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        features = self.layers((x - 128) / 128).reshape(x.shape[0], -1)
        return features if return_features else features[:, :10]


def small_layers(dim: int, seed: int = 1) -> nn.Module:
    """A cheap stand-in for the Inception layers: 299 px -> (N, dim, 1, 1)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.AvgPool2d(13), nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, dim, 11)).eval()


def save_torchscript(module: nn.Module, path) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module.eval()), buffer)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


class _ScriptInPickle:
    """What NVlabs' .pkl files are: a serialised object that becomes a TorchScript module when loaded."""

    def __init__(self, archive: bytes):
        self.archive = archive

    def __reduce__(self):
        return torch.jit.load, (io.BytesIO(self.archive),)


def save_nvlabs_pkl(archive: bytes, path) -> None:
    path.write_bytes(pickle.dumps(_ScriptInPickle(archive), protocol=4))


def write_images(folder, seed: int, shift: float) -> None:
    """N smooth random RGB images of SIZE px (:func:`support.smooth_images`), as PNG files."""
    folder.mkdir()
    for i, img in enumerate(smooth_images(seed, shift, N, SIZE)):
        Image.fromarray(img).save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    write_images(root / "a", 0, 0.0)
    write_images(root / "b", 1, 40.0)
    return str(root / "a"), str(root / "b")


@pytest.fixture(scope="module", params=[256, 2048], ids=["256d", "2048d"])
def small_detector(request, tmp_path_factory):
    """The stand-in network as clean-fid finds it (``<folder>/inception-2015-12-05.pt``) and its layers."""
    folder = tmp_path_factory.mktemp("detector")
    layers = small_layers(request.param)
    save_torchscript(NVlabsStyle(layers), folder / "inception-2015-12-05.pt")
    return folder, layers


small256 = pytest.mark.parametrize("small_detector", [256], indirect=True)


def _close(ours: float, theirs: float) -> None:
    print(f"ganfast {ours:.10g} tool {theirs:.10g} relative difference {abs(ours - theirs) / abs(theirs):.2e}")
    assert theirs > 0 and abs(ours - theirs) <= RTOL * abs(theirs), (ours, theirs)


def _ganfast_fid(capsys, a, b, *options) -> float:
    assert main(["fid", a, b, "--precision", "exact", *options]) == 0
    return float(capsys.readouterr().out.strip())


def _ganfast_features(path: str, detector) -> torch.Tensor:
    _, batches, _ = image_set(path, None)
    return torch.cat([Features("inception", detector)(b) for b in batches])


# -- the network -------------------------------------------------------------------------------------------------
def test_inception_network_matches_each_tool(tmp_path, monkeypatch, one_thread):
    sd = random_inception_state()
    pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, pth)
    images = torch.from_numpy(np.random.RandomState(2).randint(0, 256, (2, 3, SIZE, SIZE)).astype(np.uint8))

    monkeypatch.setattr(pfid_inception, "load_state_dict_from_url", lambda *a, **k: torch.load(pth))
    with torch.no_grad():
        pytorch_fid = pfid_inception.InceptionV3([3]).eval()(images.float() / 255)[0].flatten(1).double()
    ours = load_detector(str(pth), precision="exact")(images)    # a state dict: legacy_pytorch by default
    assert ours.shape == (2, 2048) and ours.std() > 0.05
    assert torch.allclose(ours, pytorch_fid, rtol=1e-5, atol=1e-6)

    fidelity = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(pth))
    with torch.no_grad():
        theirs = fidelity(images)[0].double()
    ours = load_detector(str(pth), mode="legacy_tensorflow", precision="exact")(images)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5)

    net = FIDInceptionV3()
    net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")})
    archive = save_torchscript(NVlabsStyle(net), tmp_path / "inception-2015-12-05.pt")
    save_nvlabs_pkl(archive, tmp_path / "inception-2015-12-05.pkl")
    clean = InceptionV3W(str(tmp_path), download=False, resize_inside=False)
    resized = torch.from_numpy(np.stack([cleanfid_fid.build_resizer("clean")(im) for im in
                                         images.permute(0, 2, 3, 1).numpy()])).permute(0, 3, 1, 2)
    with torch.no_grad():
        theirs = clean(resized).double()
    for name in ("inception-2015-12-05.pt", "inception-2015-12-05.pkl"):
        ours = load_detector(str(tmp_path / name), mode="clean", precision="exact")(images)
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5), name


# -- the pipeline ------------------------------------------------------------------------------------------------
@small256
def test_fid_matches_pytorch_fid(sets, small_detector, capsys, monkeypatch, one_thread):
    folder, layers = small_detector
    monkeypatch.setattr(pfid_inception, "fid_inception_v3", lambda: types.SimpleNamespace(
        Conv2d_1a_3x3=nn.Identity(), Conv2d_2a_3x3=nn.Identity(), Conv2d_2b_3x3=nn.Identity()))
    model = pfid_inception.InceptionV3([0]).eval()                   # pytorch-fid's own resize and normalisation
    model.blocks = nn.ModuleList([layers])
    stats = []
    for path in sets:
        files = sorted(str(p) for p in __import__("pathlib").Path(path).glob("*.png"))
        stats.append(pfid_score.calculate_activation_statistics(files, model, 64, 256, "cpu", 0))
    theirs = pfid_score.calculate_frechet_distance(*stats[0], *stats[1])
    ours = _ganfast_fid(capsys, *sets, "--inception", str(folder / "inception-2015-12-05.pt"),
                        "--mode", "legacy_pytorch")
    _close(ours, theirs)


@pytest.mark.parametrize("small_detector", [2048], indirect=True)
@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_features_fid_and_kid_match_clean_fid(sets, small_detector, mode, one_thread):
    folder, _ = small_detector
    model = InceptionV3W(str(folder), download=False, resize_inside=mode == "legacy_tensorflow")
    detector = load_detector(str(folder / "inception-2015-12-05.pt"), mode=mode, precision="exact")
    theirs, ours = [], []
    for path in sets:
        theirs.append(torch.from_numpy(cleanfid_fid.get_folder_features(
            path, model, num_workers=0, batch_size=64, device=torch.device("cpu"), mode=mode, verbose=False)))
        ours.append(_ganfast_features(path, detector))
        assert ours[-1].shape == (N, 2048) and torch.allclose(ours[-1], theirs[-1].double(), rtol=1e-5, atol=1e-5)
    np.random.seed(0)                         # clean-fid permutes with numpy's global RNG; its float32 sums follow
    _close(kernel_inception_distance(*ours, num_subsets=1)["kid"],
           cleanfid_fid.kernel_distance(*(t.numpy() for t in theirs), num_subsets=1))
    head = [t[:, :256].double().numpy() for t in theirs]
    fid = cleanfid_fid.frechet_distance(head[0].mean(0), np.cov(head[0], rowvar=False), head[1].mean(0),
                                        np.cov(head[1], rowvar=False))
    _close(frechet_distance(ours[0][:, :256], ours[1][:, :256]), fid)


class _SmallTF1(FeatureExtractorBase):
    """torch-fidelity's ``inception-v3-compat`` preprocessing (TF1 bilinear to 299, (x − 128) / 128) in front of
    the stand-in layers."""

    layers = None

    def __init__(self, name, features_list, **_):
        super().__init__(name, features_list)

    def forward(self, x):
        x = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
        return (self.layers((x - 128) / 128).flatten(1),)

    @staticmethod
    def get_provided_features_list():
        return ("256",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "256"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


@small256
def test_fid_and_kid_match_torch_fidelity(sets, small_detector, one_thread):
    _, layers = small_detector
    _SmallTF1.layers = layers
    if "ganfast-small-tf1" not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor("ganfast-small-tf1", _SmallTF1)
    theirs = torch_fidelity.calculate_metrics(input1=sets[1], input2=sets[0], fid=True, kid=True, cuda=False,
                                              feature_extractor="ganfast-small-tf1", kid_subset_size=N, kid_subsets=1,
                                              cache=False, verbose=False, batch_size=64, save_cpu_ram=True)
    detector = Detector("inception", "small", "state-dict", "legacy_tensorflow", "-", layers, torch.device("cpu"),
                        "exact")
    real, fake = (_ganfast_features(p, detector) for p in sets)
    _close(frechet_distance(real, fake), theirs["frechet_inception_distance"])
    _close(kernel_inception_distance(real, fake, num_subsets=1)["kid"], theirs["kernel_inception_distance_mean"])


def test_precision_recall_match_torch_fidelity():
    """pr50k3's statistic: k = 3 nearest-neighbour balls, the same shares as torch-fidelity's ``prc``."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    from ganfast.metrics.precision_recall import precision_recall
    g = torch.Generator().manual_seed(3)
    real = torch.randn(N, 8, generator=g)
    fake = 0.9 * torch.randn(N, 8, generator=g) + 0.8
    theirs = prc_features_to_metric(fake, real, prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=False,
                                    verbose=False)
    ours = precision_recall(real, fake, k=3)
    assert 0.05 < ours["precision"] < 0.95 and 0.05 < ours["recall"] < 0.95
    assert ours["precision"] == theirs["precision"] and ours["recall"] == theirs["recall"]
