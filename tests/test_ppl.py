"""ppl2_wend: ganfast's perceptual path length against a float64 implementation written here from the formula and
against torch-fidelity's PPL, LPIPS files in NVlabs' and the lpips package's / torchvision's layouts (seeded random
weights), and the refusals (no W space, unreadable files)."""
import json
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from support import nvlabs_pickle
from test_train import _noise_zip

from ganfast.checkpoint import save_checkpoint
from ganfast.cli import main
from ganfast.metrics import ppl
from ganfast.metrics.ppl import (LPIPSVGG16, load_lpips, lpips_file, lpips_images, pair_distances, ppl_distances,
                                 trimmed_mean)
from ganfast.models._spec import model_spec
from ganfast.models.conv import DCGANGenerator
from ganfast.models.stylegan2 import StyleGAN2Generator

CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)     # torchvision vgg16.features conv indices
TAPS = (2, 7, 14, 21, 28)                                       # relu1_2 ... relu5_3 follow these convs
SHIFT, SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)  # the lpips package's ScalingLayer
EPS = 1e-4


def _generator(noise: bool = True) -> StyleGAN2Generator:
    torch.manual_seed(3)
    G = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                           mapping_layers=2)
    with torch.no_grad():  # trained-looking: biases and noise strengths not 0
        for name, p in G.named_parameters():
            if not p.any() and (noise or "noise_strength" not in name):
                p.normal_(0, 0.3)
    return G.eval()


@pytest.fixture(scope="module")
def weights():
    """Seeded random LPIPS-VGG16 tensors with torchvision's names (features.*) and the lin layers (>= 0, as
    LPIPS' are)."""
    torch.manual_seed(7)
    sd = {}
    cin = 3
    for i in CONVS:
        cout = 64 if i < 4 else 128 if i < 9 else 256 if i < 16 else 512
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3) * math.sqrt(2 / (9 * cin))
        sd[f"features.{i}.bias"] = torch.randn(cout) * 0.1
        cin = cout
    for k, c in enumerate((64, 128, 256, 512, 512)):
        sd[f"lin{k}.model.1.weight"] = torch.rand(1, c, 1, 1)
    return sd


def _lpips_layout(sd: dict) -> dict:
    """The lpips package's / torch-fidelity's names: features.i -> net.slice<k>.i, plus its scaling buffers."""
    ends = (4, 9, 16, 23, 30)
    out = {"scaling_layer.shift": torch.tensor(SHIFT).view(1, 3, 1, 1),
           "scaling_layer.scale": torch.tensor(SCALE).view(1, 3, 1, 1)}
    for key, value in sd.items():
        if key.startswith("features."):
            i = int(key.split(".")[1])
            key = f"net.slice{next(k for k, end in enumerate(ends) if i < end) + 1}.{key[len('features.'):]}"
        out[key] = value
    return out


class _NVlabsLikeVGG16(nn.Module):
    """NVlabs' vgg16 interface: ``forward(img in [0, 255], resize_images, return_lpips)`` -> one vector per image
    whose squared distances are LPIPS: each tap normalised over channels, times √lin / √(H·W), flattened."""

    def __init__(self, sd: dict):
        super().__init__()
        self.convs = nn.ModuleList()
        for i in CONVS:
            conv = nn.Conv2d(sd[f"features.{i}.weight"].shape[1], sd[f"features.{i}.weight"].shape[0], 3, padding=1)
            conv.weight.data, conv.bias.data = sd[f"features.{i}.weight"], sd[f"features.{i}.bias"]
            self.convs.append(conv)
        self.taps = [i in TAPS for i in CONVS]
        self.register_buffer("lin", torch.cat([sd[f"lin{k}.model.1.weight"].flatten() for k in range(5)]))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        h = (img / 127.5 - 1 - self.shift) / self.scale
        parts = []
        offset = 0
        for i, conv in enumerate(self.convs):
            h = F.relu(conv(h))
            if self.taps[i]:
                c, hw = h.shape[1], h.shape[2] * h.shape[3]
                n = h / (h.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                w = self.lin[offset:offset + c].sqrt().view(1, c, 1, 1)
                parts.append((n * w).flatten(1) / math.sqrt(hw))
                offset += c
                h = F.max_pool2d(h, 2) if offset < self.lin.numel() else h
        return torch.cat(parts, dim=1)


@pytest.fixture(scope="module")
def files(weights, tmp_path_factory):
    """The same LPIPS weights as NVlabs' pickled TorchScript, an lpips-layout and a torchvision-layout state dict."""
    root = tmp_path_factory.mktemp("lpips")
    (root / "vgg16.pkl").write_bytes(nvlabs_pickle(_NVlabsLikeVGG16(weights)))
    torch.save(_lpips_layout(weights), root / "lpips_vgg.pth")
    torch.save({"state_dict": weights}, root / "torchvision_plus_lin.pth")
    return {"nvlabs-pkl": root / "vgg16.pkl", "lpips": root / "lpips_vgg.pth",
            "torchvision": root / "torchvision_plus_lin.pth"}


def _lpips64(sd: dict, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """LPIPS in float64 from its definition (Zhang et al. 2018)."""
    shift, scale = torch.tensor(SHIFT, dtype=torch.float64), torch.tensor(SCALE, dtype=torch.float64)

    def taps(x):
        h = (x.double() / 127.5 - 1 - shift.view(1, 3, 1, 1)) / scale.view(1, 3, 1, 1)
        out = []
        for i in CONVS:
            h = F.conv2d(h, sd[f"features.{i}.weight"].double(), sd[f"features.{i}.bias"].double(), padding=1).relu()
            if i in TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
                h = F.max_pool2d(h, 2) if i != TAPS[-1] else h
        return out

    return sum((sd[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1) * (a - b) ** 2).sum(1).mean(dim=(1, 2))
               for k, (a, b) in enumerate(zip(taps(x0), taps(x1))))


def _reference_distances(G, sd: dict, count: int, c: torch.Tensor | None = None) -> np.ndarray:
    """d_i of pairs 0..count-1 one pair at a time: seeds 2i, 2i + 1 (NumPy's latents) with label ``c`` (one row),
    lerp by ε in W, seed 2i's layer noise for both images, [-1, 1] -> [0, 255], float64 LPIPS / ε²."""
    from ganfast.nn.noise import per_sample_noise
    out = []
    with torch.no_grad():
        for i in range(count):
            z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in (2 * i, 2 * i + 1)]))
            w = G.mapping(z.float(), None if c is None else c.repeat(2, 1))
            with per_sample_noise([torch.Generator().manual_seed(2 ** 32 + 2 * i) for _ in range(2)]):
                img = G.synthesis(torch.stack([w[0], torch.lerp(w[0], w[1], EPS)]), noise_mode="random")
            x = (img + 1) * 127.5
            out.append(_lpips64(sd, x[:1], x[1:]).item() / EPS ** 2)
    return np.array(out)


def test_ppl_matches_the_formula_for_each_file_format(weights, files):
    """Per pair within float32's accuracy: ε² = 1e-8 divides differences of nearly equal float32 images, whose
    rounding leaves about 1e-3 of each distance (measured: 2.8e-3 at most over 120 pairs, 1.8e-5 on their mean)."""
    G = _generator()
    ref = _reference_distances(G, weights, 32)
    for fmt, batch in (("lpips", 16), ("nvlabs-pkl", 7), ("torchvision", 32)):
        lpips = load_lpips(str(files[fmt]))
        assert lpips.format == ("nvlabs-pkl" if fmt == "nvlabs-pkl" else "state-dict")
        d = ppl_distances(G, lpips, len(ref), batch_size=batch).double().numpy()
        assert np.abs(d - ref).max() < 5e-3 * ref.max(), fmt
        assert d.mean() == pytest.approx(ref.mean(), rel=1e-3), fmt  # 32 pairs: P1 and P99 trim nothing
        assert trimmed_mean(torch.from_numpy(d)) == d.mean()
    torch.manual_seed(3)
    G = StyleGAN2Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=16, img_channels=3, channel_base=64,
                           channel_max=8, mapping_layers=2).eval()
    G.class_counts = [0, 9, 0]                                  # every pair draws class 1
    ref = _reference_distances(G, weights, 4, c=torch.tensor([[0.0, 1.0, 0.0]]))
    d = ppl_distances(G, load_lpips(str(files["lpips"])), 4).double().numpy()
    assert np.abs(d - ref).max() < 5e-3 * ref.max()
    assert np.abs(_reference_distances(G, weights, 4, c=torch.tensor([[1.0, 0.0, 0.0]])) - d).max() > 0.05 * ref.max()


def test_layer_names_trimmed_mean_and_lpips_images(weights):
    assert set(LPIPSVGG16().state_dict()) == {k for k in _lpips_layout(weights) if not k.startswith("scaling")}
    d = torch.tensor([5.0, 1.0, 3.0, 100.0, 2.0, 4.0] * 50)
    ref = np.sort(d.numpy())
    assert trimmed_mean(d) == pytest.approx(ref[(ref >= ref[2]) & (ref <= ref[-4])].mean())
    img = torch.rand(2, 3, 512, 512) * 2 - 1
    x = lpips_images(img, 512)
    assert x.shape == (2, 3, 256, 256)
    assert torch.allclose(x, (F.avg_pool2d(img, 2) + 1) * 127.5, atol=1e-4)
    assert torch.equal(lpips_images(torch.zeros(1, 1, 16, 16), 16), torch.full((1, 3, 16, 16), 127.5))


def test_torch_fidelity_ppl_parity(weights, tmp_path, monkeypatch):
    """torch-fidelity's PPL (its LPIPS-VGG16 reads its two weight files from torch's hub cache, placed there
    offline) of a generator whose latent is w, against ganfast's pair distances of the same latent pairs."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    from torch_fidelity import GenerativeModelModuleWrapper, calculate_metrics
    from torch_fidelity.noise import batch_lerp, random_normal
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    classifier = {"0.weight": (4096, 512 * 7 * 7), "0.bias": (4096,), "3.weight": (4096, 4096), "3.bias": (4096,),
                  "6.weight": (1000, 4096), "6.bias": (1000,)}             # unused by LPIPS: one stored zero each
    vgg = {f"classifier.{k}": torch.zeros(1).expand(shape) for k, shape in classifier.items()}
    vgg.update({k: v for k, v in weights.items() if k.startswith("features.")})
    torch.save(vgg, cache / "vgg16-397923af.pth")
    torch.save({k: v for k, v in weights.items() if k.startswith("lin")}, cache / "weights-vgg16-lpips.pth")
    torch.save(weights, tmp_path / "lpips.pth")

    G = _generator(noise=False)                                  # noise: ganfast draws it, the wrapper does not

    class WSpace(nn.Module):
        def forward(self, w):
            return (G.synthesis(w.unsqueeze(1).repeat(1, G.num_ws, 1), noise_mode="const") + 1) * 127.5

    count, batch, seed = 104, 26, 11                            # P1 and P99 of 104 values trim one at each end
    percentile = np.percentile
    with monkeypatch.context() as patch:                        # torch-fidelity 0.4.0 passes NumPy < 2.4's argument
        patch.setattr(np, "percentile", lambda a, q, interpolation: percentile(a, q, method=interpolation))
        theirs = calculate_metrics(input1=GenerativeModelModuleWrapper(WSpace(), G.w_dim, "normal", 0),
                                   input1_model_num_samples=count, ppl=True, ppl_sample_similarity_resize=None,
                                   ppl_sample_similarity_dtype=None, batch_size=batch, rng_seed=seed, cuda=False,
                                   verbose=False)["perceptual_path_length_mean"]
    rng = np.random.RandomState(seed)
    w0 = random_normal(rng, (count, G.w_dim))
    w1 = batch_lerp(w0, random_normal(rng, (count, G.w_dim)), EPS)
    lpips = load_lpips(str(tmp_path / "lpips.pth"))
    broadcast = lambda w: w.unsqueeze(1).repeat(1, G.num_ws, 1)  # noqa: E731
    distances = torch.cat([pair_distances(G, lpips, broadcast(w0[i:i + batch]), broadcast(w1[i:i + batch]),
                                          range(i, i + batch)) for i in range(0, count, batch)])
    assert trimmed_mean(distances) == pytest.approx(theirs, rel=1e-4)
    assert abs(distances.double().mean().item() / theirs - 1) > 1e-3   # the trimming mattered


def test_refusals(files, weights, tmp_path, monkeypatch, capsys):
    lpips = load_lpips(str(files["lpips"]))
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="'ppl2_wend' interpolates in W.*DCGANGenerator has none"):
        ppl_distances(DCGANGenerator(), lpips, 4)
    torch.save({k: v for k, v in weights.items() if k.startswith("lin")}, tmp_path / "lin_only.pth")
    torch.save({k: v for k, v in weights.items() if k.startswith("features")}, tmp_path / "vgg_only.pth")
    (tmp_path / "noise.bin").write_bytes(np.random.RandomState(0).bytes(4096))

    class Features(nn.Module):
        def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return img.mean(dim=(2, 3))

    torch.jit.script(Features()).save(str(tmp_path / "no_lpips.pt"))
    for name, message in (("lin_only.pth", "lin layers without VGG16's convolutions"),
                          ("vgg_only.pth", "VGG16 without LPIPS' lin layers"),
                          ("noise.bin", "is not a detector ganfast can read"),
                          ("no_lpips.pt", "forward takes no return_lpips")):
        with pytest.raises(ValueError, match=rf"LPIPS file .*{name}.*{message}.*expected NVlabs' vgg16"):
            load_lpips(str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match="missing.pth.*downloads nothing"):
        load_lpips(str(tmp_path / "missing.pth"))
    for env in ("GANFAST_LPIPS", "GANFAST_VGG16"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(ValueError, match=r"needs an LPIPS file: --lpips PATH or \$GANFAST_LPIPS"):
        lpips_file()
    assert lpips_file(vgg16="vgg16.pkl") == "vgg16.pkl"           # NVlabs' pr file also holds LPIPS
    with pytest.raises(SystemExit) as exit_info:                 # a bad file stops training before it starts
        main(["train", "--dataset", "digits", "--out", str(tmp_path / "run"), "--model", "stylegan2",
              "--metrics", "ppl2_wend", "--lpips", str(tmp_path / "noise.bin"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "noise.bin" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):                              # so is a model without W space
        main(["train", "--dataset", _noise_zip(tmp_path / "d.zip"), "--out", str(tmp_path / "run"), "--model",
              "dcgan", "--cbase", "4", "--batch-size", "8", "--metrics", "ppl2_wend", "--lpips", str(files["lpips"]),
              "--no-progress", "--logger", "none"])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "DCGANGenerator has none" in err


def test_metrics_command_writes_ppl_records(files, tmp_path, monkeypatch, capsys):
    from ganfast.checkpoint import load_generator
    from ganfast.metrics.report import parse_metric, snapshot_metrics_hook
    assert parse_metric("ppl2_wend") == {"kind": "ppl", "count": 50000, "k": 0, "full": False}
    for bad in ("ppl2_wend10k", "ppl_wend", "ppl2_zfull"):
        with pytest.raises(ValueError, match="ppl2_wend"):
            parse_metric(bad)
    monkeypatch.setattr(ppl, "PPL_SAMPLES", 24)                  # 50,000 pairs are beyond a unit test
    for kind, G in (("stylegan2", _generator()), ("dcgan", DCGANGenerator())):
        save_checkpoint(str(tmp_path / f"{kind}.safetensors"), {"G_ema": G}, {}, {"models": {"G": model_spec(G)}})
    monkeypatch.setenv("GANFAST_LPIPS", str(files["nvlabs-pkl"]))
    assert main(["metrics", "--checkpoint", str(tmp_path / "stylegan2.safetensors"), "--metrics", "ppl2_wend"]) == 0
    record, = [json.loads(line) for line in (tmp_path / "metric-ppl2_wend.jsonl").read_text().splitlines()]
    G = load_generator(str(tmp_path / "stylegan2.safetensors"))
    expected = trimmed_mean(ppl_distances(G, load_lpips(str(files["nvlabs-pkl"])), 24))
    assert record["results"]["ppl"] == pytest.approx(expected, rel=1e-6) and record["num_fakes"] == 48
    assert record["features"] == "lpips-vgg16 (vgg16.pkl, nvlabs-pkl)" and record["fake_images_per_second"] > 0
    assert "ppl2_wend of stylegan2.safetensors" in capsys.readouterr().out
    hook = snapshot_metrics_hook(["ppl2_wend"], lpips=str(files["lpips"]))  # what train --metrics runs
    record, = hook(str(tmp_path / "stylegan2.safetensors"))
    assert record["results"]["ppl"] == pytest.approx(expected, rel=1e-3) and record["features"].endswith("state-dict)")
    assert "ppl2_wend of stylegan2.safetensors: ppl " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["metrics", "--checkpoint", str(tmp_path / "dcgan.safetensors"), "--metrics", "ppl2_wend",
              "--data", "digits", "--lpips", str(files["lpips"])])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "DCGANGenerator has none" in err
