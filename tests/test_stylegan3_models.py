"""StyleGAN3: the low-pass filter design (against scipy.signal.firwin when scipy is there, and by its properties),
the layer schedule, the Fourier input's equivariance, the generator (T and R) and its training, checkpoints and
sampling."""
import json
import math

import numpy as np
import pytest
import torch
from support import rel_err

import ganfast
from ganfast.models import StyleGAN3Generator
from ganfast.nn import AliasFreeSynthesisLayer, SynthesisInput, design_lowpass_filter, layer_schedule
from ganfast.nn.stylegan3 import kaiser_atten, kaiser_beta

pytestmark = pytest.mark.usefixtures("one_thread")

# (numtaps, cutoff, width, fs): StyleGAN3-T layer filters (up and down, critically sampled and not) and odd sizes
FILTERS = [(12, 2.0, 12.0, 32), (24, 5.3, 7.1, 64), (12, 8.0, 3.3, 32), (12, 4.0, 4.6, 32), (13, 3.0, 4.0, 20)]


def _response(f: torch.Tensor, freq: float, fs: float) -> float:
    """The frequency response of a symmetric 1-D FIR at ``freq`` (real: the filter is even about its centre)."""
    n = torch.arange(f.shape[-1], dtype=torch.float64) - (f.shape[-1] - 1) / 2
    return (f.double() * torch.cos(2 * math.pi * freq / fs * n)).sum().item()


@pytest.mark.parametrize("numtaps,cutoff,width,fs", FILTERS)
def test_lowpass_filter_properties(numtaps, cutoff, width, fs):
    f = design_lowpass_filter(numtaps, cutoff, width, fs)
    assert f.dtype == torch.float32 and f.shape == (numtaps,)
    torch.testing.assert_close(f, f.flip(0), rtol=0, atol=1e-7)  # linear phase
    assert _response(f, 0, fs) == pytest.approx(1, abs=1e-6)      # unit DC gain
    if width <= 2 * cutoff:  # the windowed sinc passes half the amplitude at its cutoff
        assert 0.4 < _response(f, cutoff, fs) < 0.6
    atten = kaiser_atten(numtaps, width / (fs / 2))
    stopband = np.linspace(cutoff + width / 2, fs / 2, 200)
    worst = max(abs(_response(f, s, fs)) for s in stopband)
    assert 20 * math.log10(worst) < -(atten - 6)  # Kaiser's attenuation, within a few dB

    radial = design_lowpass_filter(numtaps, cutoff, width, fs, radial=True)
    assert radial.shape == (numtaps, numtaps) and radial.sum().item() == pytest.approx(1, abs=1e-6)
    for symmetric in (radial.t(), radial.flip(0), radial.flip(1), torch.rot90(radial)):
        torch.testing.assert_close(symmetric, radial, rtol=0, atol=1e-7)
    assert design_lowpass_filter(1, cutoff, width, fs) is None  # one tap: the identity


def test_kaiser_beta_and_errors():
    assert kaiser_beta(60) == pytest.approx(0.1102 * 51.3)
    assert kaiser_beta(30) == pytest.approx(0.5842 * 9 ** 0.4 + 0.07886 * 9)
    assert kaiser_beta(10) == 0
    with pytest.raises(ValueError, match="numtaps"):
        design_lowpass_filter(0, 1, 1, 8)
    with pytest.raises(ValueError, match="cutoff"):
        design_lowpass_filter(6, 4, 1, 8)


@pytest.mark.parametrize("numtaps,cutoff,width,fs", FILTERS)
def test_lowpass_filter_equals_scipy(numtaps, cutoff, width, fs):
    signal = pytest.importorskip("scipy.signal")
    special = pytest.importorskip("scipy.special")
    want = signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
    np.testing.assert_allclose(design_lowpass_filter(numtaps, cutoff, width, fs).double().numpy(), want,
                               rtol=0, atol=1e-7)
    # the jinc design written with scipy's Bessel J1 and Kaiser helpers (even sizes: no sample at r = 0)
    if numtaps % 2 == 0:
        x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
        r = np.hypot(*np.meshgrid(x, x))
        window = np.kaiser(numtaps, signal.kaiser_beta(signal.kaiser_atten(numtaps, width / (fs / 2))))
        jinc = special.j1(2 * math.pi * cutoff * r) / (math.pi * r) * np.outer(window, window)
        np.testing.assert_allclose(design_lowpass_filter(numtaps, cutoff, width, fs, radial=True).double().numpy(),
                                   jinc / jinc.sum(), rtol=0, atol=1e-7)


def test_layer_schedule_of_the_paper():
    """StyleGAN3's 1024² configuration (14 layers, channel_base 32768): sizes, rates and widths per layer."""
    s = layer_schedule(1024, 3, 32768, 512, 14)
    assert s.sizes == (36, 36, 52, 52, 84, 148, 148, 276, 276, 532, 1044, 1044, 1044, 1024, 1024)
    assert s.sampling_rates == (16, 16, 32, 32, 64, 128, 128, 256, 256, 512, 1024, 1024, 1024, 1024, 1024)
    assert s.channels == (512,) * 7 + (323, 203, 128, 81, 51, 32, 32, 3)
    assert s.cutoffs[0] == 2 and s.cutoffs[-3:] == (512,) * 3  # the last two layers are critically sampled
    assert s.stopbands[0] == pytest.approx(2 ** 2.1) and s.stopbands[-1] == pytest.approx(512 * 2 ** 0.3)
    assert all(h == pytest.approx(max(t, r / 2) - c)
               for h, t, r, c in zip(s.half_widths, s.stopbands, s.sampling_rates, s.cutoffs))
    with pytest.raises(ValueError, match="num_layers"):
        layer_schedule(16, 1, 1024, 64, 2)


@pytest.mark.parametrize("radial", [False, True])
def test_layer_geometry(radial):
    """Every layer's padding makes filtered_lrelu's output exactly out_size; filters as configured."""
    s = layer_schedule(256, 3, 16384, 512, 8)
    for i in range(9):
        p = max(i - 1, 0)
        layer = AliasFreeSynthesisLayer(8, 4, 4, s.sizes[p], s.sizes[i], s.sampling_rates[p], s.sampling_rates[i],
                                        s.cutoffs[p], s.cutoffs[i], s.half_widths[p], s.half_widths[i],
                                        is_torgb=i == 8, is_critically_sampled=i >= 6, use_radial_filters=radial,
                                        conv_kernel=1 if radial else 3)
        taps = [1 if f is None else f.shape[-1] for f in (layer.up_filter, layer.down_filter)]
        px0, px1 = layer.padding[:2]
        conv_out = s.sizes[p] + layer.conv_kernel - 1
        out = (conv_out * layer.up_factor + px0 + px1 - (taps[0] - 1) - (taps[1] - 1) + layer.down_factor - 1) \
            // layer.down_factor
        assert out == s.sizes[i], i
        assert layer.down_filter is None or layer.down_filter.ndim == (2 if radial and i < 6 else 1)
        assert (layer.up_filter is None) == (i == 8 or layer.up_factor == 1)


def test_synthesis_input_transform_equivariance():
    torch.manual_seed(0)
    layer = SynthesisInput(w_dim=8, channels=16, size=20, sampling_rate=16, bandwidth=2)
    w = torch.randn(3, 8)
    with torch.no_grad():
        y = layer(w)
        # at initialisation the learned transform is the identity: plain Fourier features
        p = (torch.arange(20) + 0.5 - 10) / 16  # pixel centres, in units of 1/sampling_rate
        fx, fy, phase = (t[:, None, None] for t in (*layer.freqs.unbind(1), layer.phases))
        features = torch.sin(2 * math.pi * (fx * p[None, None, :] + fy * p[None, :, None] + phase))  # (C, y, x)
        want = torch.einsum("ck,kyx->cyx", layer.weight / 4, features)
        torch.testing.assert_close(y, want.expand_as(y), rtol=1e-5, atol=1e-5)
        layer.set_transform(translate=(2 / 16, 1 / 16))  # 2 px right, 1 px down: a phase shift of -f·t
        torch.testing.assert_close(layer(w)[..., 1:, 2:], y[..., :-1, :-2], rtol=0, atol=1e-5)
        layer.set_transform(rotate=math.pi / 2)  # a quarter turn about the centre: the same pixels, rotated
        torch.testing.assert_close(layer(w), torch.rot90(y, -1, (2, 3)), rtol=0, atol=1e-5)


def _tiny(config="t", resolution=16, c_dim=0, img_channels=3, **kwargs):
    torch.manual_seed(0)
    return StyleGAN3Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=resolution, img_channels=img_channels,
                              channel_base=64, channel_max=8, num_layers=3, margin_size=2,
                              conv_kernel=3 if config == "t" else 1, use_radial_filters=config == "r", **kwargs)


@pytest.mark.parametrize("config,resolution", [("t", 16), ("r", 16), ("t", 32), ("r", 32)])
def test_generator_shapes(config, resolution):
    G = _tiny(config, resolution)
    img = G(torch.randn(2, 8))
    assert img.shape == (2, 3, resolution, resolution) and img.dtype == torch.float32 and torch.isfinite(img).all()
    assert G.num_ws == 5 and len(G.synthesis.layers) == 4
    radial = [layer.down_filter is not None and layer.down_filter.ndim == 2 for layer in G.synthesis.layers]
    assert any(radial) == (config == "r")


def test_generator_conditioning_truncation_and_emas():
    G = _tiny(c_dim=4)
    z, c = torch.randn(4, 8), torch.eye(4)
    with pytest.raises(ValueError, match="class labels"):
        G(z)
    G(z, c)  # training mode: w_avg and the magnitude EMAs move
    assert G.mapping.w_avg.abs().sum() > 0
    assert all(layer.magnitude_ema.item() != 1 for layer in G.synthesis.layers)
    G.eval()
    frozen = {k: v.clone() for k, v in G.state_dict().items()}
    img = G(z, c, noise_mode="const")
    torch.testing.assert_close(G(z, c, noise_mode="none"), img, rtol=0, atol=0)  # noise_mode is ignored
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in frozen.items())
    torch.testing.assert_close(G(z, c, truncation_psi=0), G(torch.randn(4, 8), c, truncation_psi=0))
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, c, noise_mode="loud")
    with pytest.raises(ValueError, match="ws must have shape"):
        G.synthesis(torch.randn(4, 3, 8))


def test_generator_ganfast_ops_match_reference_and_backward():
    G = _tiny("t").eval()
    z = torch.randn(2, 8)
    img = G(z)
    with ganfast.use_impl("ref"):
        want = G(z)
    assert rel_err(img, want) < 1e-5
    G.train()
    G(z).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.synthesis.parameters())
    G.zero_grad()
    ws = G.mapping(z)
    ganfast.losses.PathLengthPenalty()(G.synthesis(ws), ws).backward()  # double backward through the layers
    assert all(layer.weight.grad.abs().sum() > 0 for layer in G.synthesis.layers)


def _emas(G):
    return [G.mapping.w_avg.clone()] + [layer.magnitude_ema.clone() for layer in G.synthesis.layers]


def test_emas_move_in_the_d_step_only():
    """As in StyleGAN3's training loop: the D step's generation moves w_avg and every layer's magnitude_ema, the
    G step (in training mode, with gradients) leaves them where they are."""
    from ganfast.models import StyleGAN2Discriminator
    from ganfast.train.step import d_step, g_step
    G = _tiny(img_channels=1).train()
    D = StyleGAN2Discriminator(img_resolution=16, img_channels=1, channel_base=64, channel_max=8)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    before = _emas(G)
    g_step(G, D, opt_g, torch.randn(4, 8))
    assert all(torch.equal(a, b) for a, b in zip(before, _emas(G)))
    d_step(G, D, opt_d, torch.rand(4, 1, 16, 16) * 2 - 1, torch.randn(4, 8))
    assert all(not torch.equal(a, b) for a, b in zip(before, _emas(G)))


@pytest.mark.parametrize("config", ["t", "r"])
def test_bf16_training_steps(tmp_path, config):
    """Two Trainer steps under bf16 autocast (R1's double backward in the first) with finite losses and gradients;
    the modulated convolutions ran in bf16."""
    from ganfast.data import load_dataset
    from ganfast.models import StyleGAN2Discriminator
    from ganfast.train import TrainConfig, Trainer
    G = _tiny(config, img_channels=1)
    D = StyleGAN2Discriminator(img_resolution=16, img_channels=1, channel_base=64, channel_max=8)
    trainer = Trainer(G, D, load_dataset("digits"), str(tmp_path / "run"),
                      TrainConfig(batch_size=4, num_fixed=4, r1_gamma=0.5, r1_interval=1, bf16=True), progress=False)
    dtypes = set()
    hook = G.synthesis.layers[1].register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    stats = [trainer.train_step() for _ in range(2)]
    hook.remove()
    assert dtypes == {torch.bfloat16}
    for record in stats:
        for key in ("loss_d", "loss_g", "r1", "grad_norm_d", "grad_norm_g"):
            assert key not in record or math.isfinite(record[key]), (key, record)
        assert not record["skipped_d"] and not record["skipped_g"]
    assert "r1" in stats[0]
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in G.parameters())


def test_errors():
    with pytest.raises(ValueError, match="img_resolution"):
        StyleGAN3Generator(img_resolution=24)
    with pytest.raises(ValueError, match="conv_kernel"):
        StyleGAN3Generator(conv_kernel=0)
    with pytest.raises(ValueError, match="x must have shape"):
        _tiny().synthesis.layers[0](torch.randn(1, 8, 5, 5), torch.randn(1, 8))


def test_cli_builds_t_and_r():
    from ganfast.data import load_dataset
    from ganfast.models import StyleGAN2Discriminator
    from ganfast.train.run import build_models, defaults
    digits = load_dataset("digits")
    G, D = build_models("stylegan3-r", digits, batch_size=40)
    assert isinstance(G, StyleGAN3Generator) and isinstance(D, StyleGAN2Discriminator)
    assert G.init_kwargs["conv_kernel"] == 1 and G.init_kwargs["use_radial_filters"]
    assert G.synthesis.layers[0].magnitude_ema_beta == pytest.approx(0.5 ** (40 / 20e3))
    T, _ = build_models("stylegan3-t", digits)
    assert T.init_kwargs["conv_kernel"] == 3 and G.init_kwargs["channel_max"] == 2 * T.init_kwargs["channel_max"]
    assert defaults(digits, "stylegan3-t")["config"].pl_weight == 0


def test_train_checkpoint_and_sample(tmp_path):
    """A few Trainer steps on the digits, the generator rebuilt from the checkpoint by ``load_generator``, and
    ``ganfast sample``'s images depending on the seed only."""
    from ganfast.cli import main
    from ganfast.data import load_dataset
    from ganfast.models import StyleGAN2Discriminator
    from ganfast.train import TrainConfig, Trainer, load_generator
    run = tmp_path / "run"
    G = _tiny(img_channels=1)
    D = StyleGAN2Discriminator(img_resolution=16, img_channels=1, channel_base=64, channel_max=8)
    trainer = Trainer(G, D, load_dataset("digits"), str(run), TrainConfig(batch_size=4, tick_steps=2, num_fixed=4,
                                                                           r1_interval=2), progress=False)
    trainer.train(2)
    records = [json.loads(line) for line in open(run / "stats.jsonl")]
    assert records[-1]["step"] == 2 and math.isfinite(records[-1]["loss_g"])
    loaded = load_generator(run)
    assert isinstance(loaded, StyleGAN3Generator)
    for key, value in trainer.G_ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.synthesis.layers[0].magnitude_ema.item() != 1  # trained buffers came back too
    images = np.concatenate([b.images for b in ganfast.sample(loaded, "0-5", batch_size=4)])
    again = np.concatenate([b.images for b in ganfast.sample(loaded, [5, 3], batch_size=2)])
    assert images.shape == (6, 16, 16, 1)
    np.testing.assert_array_equal(again, images[[5, 3]])
    assert main(["sample", "--checkpoint", str(run), "--seeds", "0-5", "--out", str(tmp_path / "npz"),
                 "--format", "npz", "--no-progress"]) == 0
    with np.load(next((tmp_path / "npz").glob("*.npz"))) as data:
        np.testing.assert_array_equal(data["seeds"], np.arange(6))
        np.testing.assert_array_equal(data["images"], images)
