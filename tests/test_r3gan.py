"""R3GAN: the model against a plain-PyTorch composition of the same weights (float64), its initialisation, the
cosine schedules, a short ``--model r3gan`` run and its exact resume, and ``patch_stylegan()`` on a stand-in of
R3GAN's ``AdversarialTraining`` (tests/r3gan_standin). The fused R1+R2 loss itself is in test_losses.py."""
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from support import rel_err
from test_train import _noise_zip

import ganfast
from ganfast.cli import main
from ganfast.checkpoint import checkpoint_extra, load_generator
from ganfast.models import R3GANDiscriminator, R3GANGenerator
from ganfast.train import r3gan as r3gan_presets
from ganfast.train import schedules
from ganfast.train.trainer import TrainConfig

STANDIN = Path(__file__).parent / "r3gan_standin"
ARCH = dict(img_resolution=8, img_channels=3, widths=(6, 4), cardinalities=(2, 4), blocks=(2, 1), expansion=2)


def _fir_kernel(channels, dtype):
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=dtype)
    k = torch.outer(f, f) / f.sum() ** 2
    return k.expand(channels, 1, 4, 4)


def _plain_up(x):
    """x2 bilinear upsampling by the [1, 3, 3, 1] filter: zero-insertion, then the filter times 4."""
    c = x.shape[1]
    return F.conv_transpose2d(x, 4 * _fir_kernel(c, x.dtype), stride=2, padding=1, groups=c)


def _plain_down(x):
    c = x.shape[1]
    return F.conv2d(x, _fir_kernel(c, x.dtype), stride=2, padding=1, groups=c)


def _plain_block(block, x):
    y = F.conv2d(x, block.conv1.weight)
    y = F.leaky_relu(y + block.act1.bias.view(1, -1, 1, 1), 0.2)
    y = F.conv2d(y, block.conv2.weight, padding=1, groups=block.conv2.groups)
    y = F.leaky_relu(y + block.act2.bias.view(1, -1, 1, 1), 0.2)
    return x + F.conv2d(y, block.conv3.weight)


def _plain_g(G, z, c=None):
    x = z if c is None else torch.cat([z, c @ G.embed.weight.T], dim=1)
    for i, stage in enumerate(G.stages):
        first, *blocks = stage
        if i == 0:
            x = first.basis.unsqueeze(0) * (x @ first.linear.weight.T)[:, :, None, None]
        else:
            x = _plain_up(x if first.linear is None else F.conv2d(x, first.linear.weight))
        for block in blocks:
            x = _plain_block(block, x)
    return F.conv2d(x, G.to_rgb.weight)


def _plain_d(D, img, c=None):
    x = F.conv2d(img, D.from_rgb.weight)
    for stage in D.stages:
        *blocks, last = stage
        for block in blocks:
            x = _plain_block(block, x)
        if hasattr(last, "basis"):
            x = F.conv2d(x, last.basis.weight, groups=x.shape[1]).flatten(1) @ last.linear.weight.T
        else:
            x = _plain_down(x)
            x = x if last.linear is None else F.conv2d(x, last.linear.weight)
    if c is not None:
        x = (x * (c @ D.embed.weight.T)).sum(dim=1, keepdim=True)
    return x.reshape(-1)


def _randomized(module):
    """Non-zero weights everywhere (the fix-up init zeroes each block's last conv, which would hide it)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module.double()


@pytest.mark.parametrize("c_dim", [0, 3])
def test_model_matches_a_plain_pytorch_composition(c_dim):
    G = _randomized(R3GANGenerator(z_dim=5, c_dim=c_dim, **ARCH))
    D = _randomized(R3GANDiscriminator(c_dim=c_dim, **ARCH))
    z = torch.randn(3, 5, dtype=torch.float64)
    c = torch.eye(3, dtype=torch.float64)[[0, 2, 1]] if c_dim else None
    img = G(z, c)
    assert img.shape == (3, 3, 8, 8) and img.dtype == torch.float64
    assert rel_err(img, _plain_g(G, z, c)) < 1e-12
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    logits = D(x, c)
    assert logits.shape == (3,)
    assert rel_err(logits, _plain_d(D, x, c)) < 1e-12
    # the gradients through the ganfast ops (bias_act, upfirdn2d) match the plain composition's
    for model, call in ((G, lambda: G(z, c)), (D, lambda: D(x, c))):
        plain = _plain_g if model is G else _plain_d
        arg = z if model is G else x
        ours = torch.autograd.grad(call().square().sum(), list(model.parameters()))
        theirs = torch.autograd.grad(plain(model, arg, c).square().sum(), list(model.parameters()))
        assert max(rel_err(a, b) for a, b in zip(ours, theirs)) < 1e-10


def test_fixup_initialisation_and_errors():
    torch.manual_seed(0)
    G = R3GANGenerator(z_dim=8, img_resolution=16, widths=(32, 32, 32), cardinalities=(4, 4, 4), blocks=(2, 2, 2))
    block = G.stages[1][1]
    assert torch.count_nonzero(block.conv3.weight) == 0
    gain = math.sqrt(2 / 1.04) * 6 ** -0.25  # L = 6 blocks
    for conv in (block.conv1, block.conv2):
        fan_in = conv.weight[0].numel()
        assert abs(conv.weight.std().item() * math.sqrt(fan_in) / gain - 1) < 0.1
    assert all(torch.count_nonzero(p) == 0 for n, p in G.named_parameters() if n.endswith(".bias"))
    with pytest.raises(ValueError, match="widths must list 3 positive integers"):
        R3GANGenerator(img_resolution=16, widths=(8, 8))
    with pytest.raises(ValueError, match="cardinality 3 must divide the expanded width 16"):
        R3GANDiscriminator(img_resolution=8, widths=(8, 8), cardinalities=(3, 3), blocks=(1, 1))
    with pytest.raises(ValueError, match="R3GANDiscriminator is conditional"):
        R3GANDiscriminator(c_dim=2, img_resolution=4, widths=(8,), cardinalities=(2,), blocks=(1,))(
            torch.randn(1, 3, 4, 4))


def test_bf16_stages_run_in_bf16_and_return_float32():
    G = R3GANGenerator(z_dim=8, img_resolution=8, widths=(16, 16), cardinalities=(2, 2), blocks=(1, 1))
    D = R3GANDiscriminator(img_resolution=8, widths=(16, 16), cardinalities=(2, 2), blocks=(1, 1))
    _randomized(G).float(), _randomized(D).float()
    z, x = torch.randn(4, 8), torch.randn(4, 3, 8, 8)
    full_g, full_d = G(z), D(x)
    seen = []
    hook = G.stages[1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    G.bf16_stages = D.bf16_stages = 1
    low_g, low_d = G(z), D(x)
    hook.remove()
    assert seen == [torch.bfloat16] and low_g.dtype == low_d.dtype == torch.float32
    assert 0 < rel_err(low_g, full_g) < 0.05 and 0 < rel_err(low_d, full_d) < 0.05


def test_cosine_schedules_start_middle_end_and_hold():
    cfg = TrainConfig(lr_g=2e-4, lr_d=2e-4, lr_end=5e-5, betas=(0.0, 0.9), beta2_end=0.99, r1_gamma=1.0,
                      ema_kimg=10.0, decay_kimg=2.0, aug="fixed", aug_p=0.5)
    start, middle, end, later = (schedules.at(cfg, n) for n in (0, 1000, 2000, 5000))
    assert start == {"lr_g": 2e-4, "lr_d": 2e-4, "beta2": 0.9, "r1_gamma": 1.0, "ema_kimg": 0.0, "aug_p": 0.0}
    expected_middle = {"lr_g": 1.25e-4, "lr_d": 1.25e-4, "beta2": 0.945, "r1_gamma": 0.55, "ema_kimg": 5.0,
                       "aug_p": 0.25}  # the cosine's midpoint is the mean of start and end
    assert all(math.isclose(middle[k], v, rel_tol=1e-12) for k, v in expected_middle.items())
    assert end == later == {"lr_g": 5e-5, "lr_d": 5e-5, "beta2": 0.99, "r1_gamma": 0.1, "ema_kimg": 10.0,
                            "aug_p": 0.5}  # gamma_end None: gamma / 10
    quarter = schedules.at(cfg, 500)["lr_g"]
    assert math.isclose(quarter, 5e-5 + 1.5e-4 * (1 + math.cos(math.pi / 4)) / 2, rel_tol=1e-12)
    flat = TrainConfig(lr_g=1e-3, r1_gamma=0.3, ema_kimg=4.0)
    assert schedules.at(flat, 0) == schedules.at(flat, 10**6)
    with pytest.raises(ValueError, match="TrainConfig.beta2_end"):
        TrainConfig(decay_kimg=1.0, beta2_end=1.0)


def test_paper_presets_per_stage():
    """R3GAN's CIFAR10 / FFHQ-64 presets: widths and cardinalities from 4x4 upwards, the bf16 stage counts."""
    from ganfast.train import r3gan
    cifar = r3gan.model_kwargs("cifar", 32, 3, 10, on_cuda=True)
    assert (cifar["widths"], cifar["cardinalities"], cifar["blocks"], cifar["bf16_stages"]) == \
        ([768] * 4, [96] * 4, [2] * 4, 3)
    ffhq = r3gan.model_kwargs("ffhq64", 64, 3, 0, on_cuda=True)
    assert (ffhq["widths"], ffhq["cardinalities"], ffhq["bf16_stages"]) == ([768] * 4 + [384], [96] * 4 + [48], 4)
    assert r3gan.model_kwargs("ffhq64", 64, 3, 0, on_cuda=False)["bf16_stages"] == 0
    with pytest.raises(ValueError, match="preset 'ffhq64' sets width for 5 stages .64 px.; --resolution 128 needs 6"):
        r3gan.model_kwargs("ffhq64", 128, 3, 0, on_cuda=False)
    D = R3GANDiscriminator(c_dim=3, img_resolution=8, widths=[16, 8], cardinalities=[2, 2], blocks=[1, 1])
    assert D.embed.out_features == 16  # R3GAN: D's label embedding is as wide as its 4x4 stage
    from ganfast.augment import AugmentPipe
    assert r3gan.config_fields("cifar")["augpipe"] == "r3gan"
    strength = AugmentPipe("r3gan").strength
    assert strength["xflip"] == strength["aniso"] == strength["cutout"] == 1.0 and strength["hue"] == 0.5
    assert strength["imgfilter"] == strength["noise"] == 0.0


def _r3gan_run(zipped, out, *extra):
    return ["train", "--dataset", zipped, "--out", str(out), "--model", "r3gan", "--preset", "tiny", "--batch-size",
            "4", "--tick", "2", "--decay-kimg", "0.02", "--aug", "fixed", "--p", "0.5", "--no-progress", *extra]


def test_r3gan_run_schedules_and_resumes_bit_exactly(tmp_path, capsys, one_thread):
    zipped = _noise_zip(tmp_path / "noise.zip", n=12, side=8)
    straight = tmp_path / "straight"
    assert main(_r3gan_run(zipped, straight, "--steps", "6", "--cond")) == 0
    assert "R3GANGenerator" in capsys.readouterr().out
    extra = checkpoint_extra(str(straight))
    cfg, run = extra["config"], extra["run"]
    assert (run["model"], run["preset"], run["bf16_stages"], cfg["loss"], cfg["r2"], cfg["r1_interval"],
            cfg["decay_kimg"], cfg["ema_rampup"]) == ("r3gan", "tiny", 0, "rpgan", True, 1, 0.02, None)
    assert isinstance(load_generator(str(straight)), R3GANGenerator)  # rebuilt from the checkpoint's model spec
    records = [__import__("json").loads(line) for line in (straight / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert records[0]["lr_g"] > records[1]["lr_g"] > records[2]["lr_g"] == pytest.approx(5e-5)  # 24 img > 20
    assert 0 < records[0]["aug_p"] < records[1]["aug_p"] < 0.5  # p as set for the tick's last step (16 images)
    assert all(r["r1"] > 0 and r["r2"] > 0 for r in records)
    resumed = tmp_path / "resumed"
    assert main(_r3gan_run(zipped, resumed, "--steps", "2", "--cond")) == 0
    assert main(["train", "--out", str(resumed), "--resume", "--steps", "6", "--no-progress"]) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    a, b = load_file(str(resumed / "checkpoint.safetensors")), load_file(str(straight / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(SystemExit):
        main(["train", "--out", str(resumed), "--resume", "--steps", "8", "--preset", "stacked16", "--no-progress"])
    assert "--preset stacked16 conflicts with the run's tiny" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--dataset", zipped, "--out", str(tmp_path / "x"), "--model", "dcgan", "--preset", "tiny"])
    assert "--preset tiny applies to --model r3gan" in capsys.readouterr().err


def test_rpgan_loss_trains_another_model(tmp_path, one_thread):
    zipped = _noise_zip(tmp_path / "noise.zip", n=8, side=16)
    out = tmp_path / "dcgan"
    assert main(["train", "--dataset", zipped, "--out", str(out), "--model", "dcgan", "--cbase", "4", "--batch-size",
                 "4", "--tick", "2", "--steps", "2", "--loss", "rpgan", "--r1-gamma", "0.5", "--r1-interval", "1",
                 "--r2", "--aug", "noaug", "--no-progress"]) == 0
    record = __import__("json").loads((out / "stats.jsonl").read_text().splitlines()[-1])
    assert record["r1"] > 0 and record["r2"] > 0 and math.isfinite(record["loss_g"])


# ---- patch_stylegan() on R3GAN's AdversarialTraining -----------------------------------------------------------

@pytest.fixture
def r3gan_trainer(monkeypatch):
    sys.modules.pop("R3GAN.Trainer", None)
    sys.modules.pop("R3GAN", None)
    monkeypatch.syspath_prepend(str(STANDIN))
    import R3GAN.Trainer
    yield R3GAN.Trainer
    sys.modules.pop("R3GAN.Trainer", None)
    sys.modules.pop("R3GAN", None)


def _d_step(trainer_module, c_dim, gamma=0.7, scale=1.3, flip=True, rows=None):
    torch.manual_seed(5)
    G = _randomized(R3GANGenerator(z_dim=5, c_dim=c_dim, **ARCH))
    D = _randomized(R3GANDiscriminator(c_dim=c_dim, **ARCH))
    if rows is not None:  # the batch size of each D forward
        D.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    D.from_rgb.weight.requires_grad_(False)  # a frozen weight: None in both steps
    noise, real = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 3, 8, 8, dtype=torch.float64)
    c = torch.eye(3, dtype=torch.float64)[[1, 0, 2]] if c_dim else None
    generator = torch.Generator().manual_seed(9)

    def preprocessor(x):  # random per-sample flips: the halves must draw in R3GAN's order
        keep = torch.rand(x.shape[0], 1, 1, 1, generator=generator, dtype=x.dtype) < 0.5
        return torch.where(keep, x, x.flip(3)) if flip else x
    out = trainer_module.AdversarialTraining(G, D).AccumulateDiscriminatorGradients(noise, real, c, gamma, scale,
                                                                                    preprocessor)
    grads = {n: p.grad for n, p in D.named_parameters()}
    assert all(p.grad is None for p in G.parameters())
    return out, grads


@pytest.mark.parametrize("c_dim", [0, 3])
@pytest.mark.parametrize("passes", ["auto", 1])
def test_patch_fuses_r3gan_discriminator_step(r3gan_trainer, c_dim, passes):
    from ganfast.patch.r3gan import patch_adversarial_training
    original = r3gan_trainer.AdversarialTraining.AccumulateDiscriminatorGradients
    two_pass, grads_two = _d_step(r3gan_trainer, c_dim)
    rows = []
    if passes == "auto":  # patch_stylegan's choice: two D passes on the CPU
        with ganfast.patch_stylegan(impl="ext") as handle:
            assert "AdversarialTraining.AccumulateDiscriminatorGradients" in handle.patched
            assert r3gan_trainer.AdversarialTraining.AccumulateDiscriminatorGradients is not original
            one_pass, grads_one = _d_step(r3gan_trainer, c_dim, rows=rows)
        assert rows == [3, 3]
    else:
        [(cls, name, _, _)] = patch_adversarial_training("ext", passes=1)
        try:
            one_pass, grads_one = _d_step(r3gan_trainer, c_dim, rows=rows)
        finally:
            setattr(cls, name, original)
        assert rows == [6]  # one D forward on [reals; fakes]
    assert r3gan_trainer.AdversarialTraining.AccumulateDiscriminatorGradients is original
    assert len(one_pass) == 4
    for a, b in zip(one_pass, two_pass):
        assert a.shape == b.shape and not a.requires_grad and rel_err(a, b) < 1e-12
    assert grads_one.keys() == grads_two.keys()
    for name in grads_two:
        assert (grads_one[name] is None) == (grads_two[name] is None), name
        if grads_two[name] is not None:
            assert rel_err(grads_one[name], grads_two[name]) < 1e-10, name
    assert grads_one["from_rgb.weight"] is None


def test_patch_keeps_two_passes_for_batch_statistics(r3gan_trainer):
    class BatchNormD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(3)
            self.fc = torch.nn.Linear(3 * 4 * 4, 1)

        def forward(self, x, c=None):
            return self.fc(self.bn(x).flatten(1)).reshape(-1)

    G = R3GANGenerator(z_dim=4, img_resolution=4, widths=(4,), cardinalities=(2,), blocks=(1,))
    trainer = r3gan_trainer.AdversarialTraining(G, BatchNormD())
    with ganfast.patch_stylegan():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = trainer.AccumulateDiscriminatorGradients(torch.randn(2, 4), torch.randn(2, 3, 4, 4), None, 1.0)
    assert len(out) == 4 and any("bn (BatchNorm2d, batch statistics)" in str(w.message) for w in caught)


def test_stacked16_steps_cover_its_schedules():
    """The CPU preset for stacked digits ends where its cosine schedules end."""
    spec = r3gan_presets.PRESETS["stacked16"]
    assert spec["steps"] * spec["config"]["batch_size"] == spec["config"]["decay_kimg"] * 1000
