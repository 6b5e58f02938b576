"""ganfast.train: the functional steps, EMA, the non-finite guard, checkpoints, exact resume, DDP, the CLI."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ganfast.data import load_dataset
from ganfast.models import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator,
                            SNGANDiscriminator, StyleGAN2Discriminator, StyleGAN2Generator)
from ganfast.train import Trainer, TrainConfig, d_step, ema_beta, ema_update, g_step, step


pytestmark = pytest.mark.usefixtures("one_thread")


def test_models_shapes():
    z = torch.randn(3, 16)
    assert MLPGenerator()(z).shape == (3, 2) and MLPDiscriminator()(torch.randn(3, 2)).shape == (3,)
    for res in (16, 32, 64, 128):
        G = DCGANGenerator(z_dim=8, resolution=res, channels=3, base_channels=4)
        x = G(torch.randn(2, 8))
        assert x.shape == (2, 3, res, res) and x.abs().max() <= 1
        for D in (DCGANDiscriminator(res, 3, base_channels=2), SNGANDiscriminator(res, 3, base_channels=2)):
            assert D(x).shape == (2,)
    sn = SNGANDiscriminator(16, 1)
    assert any("parametrizations.weight" in k for k in sn.state_dict())
    for res in (8, 256):
        with pytest.raises(ValueError, match="resolution"):
            DCGANGenerator(resolution=res)


def test_ema():
    assert ema_beta(32, nimg=10**9, ema_kimg=10, rampup=None) == pytest.approx(0.5 ** (32 / 10000))
    assert ema_beta(32, nimg=1000, ema_kimg=10, rampup=0.05) == pytest.approx(0.5 ** (32 / 50))  # ramp-up
    G, G_ema = MLPGenerator(depth=1), MLPGenerator(depth=1)
    before = [p.clone() for p in G_ema.parameters()]
    ema_update(G_ema, G, 0.9)
    for b, p, q in zip(before, G.parameters(), G_ema.parameters()):
        assert torch.allclose(q, 0.9 * b + 0.1 * p)
    bn, bn_ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    bn(torch.randn(8, 3))
    ema_update(bn_ema, bn, 0.9)
    assert torch.equal(bn_ema.running_mean, bn.running_mean)


def test_steps_update_only_their_network():
    G, D = MLPGenerator(depth=1), MLPDiscriminator(depth=1)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    g0, d0 = [p.clone() for p in G.parameters()], [p.clone() for p in D.parameters()]
    stats = d_step(G, D, opt_d, torch.randn(8, 2), torch.randn(8, 16), r1_gamma=1.0, regularize=True)
    assert all(torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    assert stats["r1"] > 0 and 0 <= stats["d_real_acc"] <= 1 and not stats["skipped_d"]
    d1 = [p.clone() for p in D.parameters()]
    stats = g_step(G, D, opt_g, torch.randn(8, 16))
    assert all(torch.equal(a, b) for a, b in zip(d1, D.parameters())) and all(p.grad is None for p in D.parameters())
    assert not any(torch.equal(a, b) for a, b in zip(g0, G.parameters())) and stats["grad_norm_g"] > 0
    for loss in ("hinge", "wasserstein", "least_squares"):
        assert torch.isfinite(torch.tensor(d_step(G, D, opt_d, torch.randn(8, 2), torch.randn(8, 16), loss=loss)
                                           ["loss_d"]))
    with pytest.raises(ValueError, match="loss must be one of"):
        g_step(G, D, opt_g, torch.randn(8, 16), loss="ns")


def test_non_finite_gradients_are_skipped():
    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(layer.parameters())
    before = [p.clone() for p in layer.parameters()]
    layer(torch.tensor([[float("nan"), 1.0]])).sum().backward()
    norm, skipped = step.apply_gradients(list(layer.parameters()), opt)
    assert skipped and norm != norm
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters())) and not opt.state
    assert all(p.grad is None for p in layer.parameters())


def test_bf16_autocast_step():
    G, D = DCGANGenerator(z_dim=8, base_channels=8), DCGANDiscriminator(base_channels=8)
    opt_d = torch.optim.Adam(D.parameters())
    stats = d_step(G, D, opt_d, torch.rand(4, 1, 16, 16) * 2 - 1, torch.randn(4, 8), r1_gamma=1.0,
                   regularize=True, bf16=True)
    assert all(torch.isfinite(torch.tensor(stats[k])) for k in ("loss_d", "r1", "grad_norm_d"))


def _trainer(name, out, model, mirror=False, **config):
    ds = load_dataset(name, seed=0, mirror=mirror)
    torch.manual_seed(0)
    if model == "mlp":
        G, D = MLPGenerator(hidden=32, depth=2), MLPDiscriminator(hidden=32, depth=2)
    elif model == "stylegan2":  # with lazy path-length regularisation, whose running mean is checkpointed
        G = StyleGAN2Generator(z_dim=8, w_dim=8, channel_max=8, mapping_layers=1)
        D = StyleGAN2Discriminator(channel_max=8)
        config = {"pl_weight": 2.0, "pl_interval": 2, **config}
    else:
        channels = ds.sample_shape[0]
        G = DCGANGenerator(z_dim=8, base_channels=8, channels=channels)
        D = SNGANDiscriminator(base_channels=4, channels=channels)
    cfg = TrainConfig(**{"batch_size": 16, "r1_gamma": 0.5, "r1_interval": 2, "ema_kimg": 0.1, "tick_steps": 3,
                         "snapshot_ticks": 2, "num_fixed": 16, **config})
    return Trainer(G, D, ds, str(out), cfg, progress=False)


def _noise_zip(path, n=24, side=16, labels=True):
    """A zip of ``n`` random RGB PNGs in StyleGAN2-ADA's layout, with 3 class labels."""
    import io
    import zipfile

    from PIL import Image
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        names = [f"{i // 10:05d}/img{i:08d}.png" for i in range(n)]
        for name in names:
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, format="PNG")
            zf.writestr(name, buffer.getvalue())
        zf.writestr("dataset.json", json.dumps({"labels": [[m, i % 3] for i, m in enumerate(names)] if labels
                                                else None}))
    return str(path)


@pytest.mark.parametrize("name,model", [("ring8", "mlp"), ("digits", "sngan"), ("digits", "stylegan2"),
                                        ("zip", "sngan")])
def test_resume_is_exact(tmp_path, monkeypatch, name, model):
    """A run resumed from its checkpoint ends bit-identical to the uninterrupted run; the zip case has x-flips
    and reads its images from the cache when resumed (nothing decoded again)."""
    from ganfast import data
    mirror = name == "zip"
    if name == "zip":
        name = _noise_zip(tmp_path / "noise.zip")
    n = 5
    straight = _trainer(name, tmp_path / "straight", model, mirror=mirror)
    straight.train(2 * n)
    first = _trainer(name, tmp_path / "resumed", model, mirror=mirror)
    first.train(n)
    monkeypatch.setattr(data, "decode_image", None)              # a resume decodes nothing: the cache has it all
    resumed = _trainer(name, tmp_path / "resumed", model, mirror=mirror)
    resumed.resume()
    assert resumed.step == n and resumed.nimg == n * 16
    resumed.train(2 * n)
    a = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("opt_d/state/") for k in a)
    assert any("running_mean" in k for k in a) if model == "sngan" else True
    assert ("path_length/mean" in a and a["path_length/mean"] > 0) if model == "stylegan2" else True
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _trainer(name, tmp_path / "nowhere", model).resume()


def test_run_outputs_and_checkpoint_contents(tmp_path):
    trainer = _trainer("ring8", tmp_path, "mlp")
    trainer.train(7)
    records = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6, 7]
    for key in ("kimg", "img_per_s", "loss_g", "loss_d", "d_real_acc", "d_fake_acc", "grad_norm_g", "grad_norm_d",
                "modes", "hq", "kl", "diversity", "collapse_alarm", "skipped_steps"):
        assert key in records[-1], key
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".png")) == ["fakes_init.png", "reals.png",
                                                                            "samples-0000006.png",
                                                                            "samples-0000007.png"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]      # the atomic write left nothing
    tensors = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert {k.split("/")[0] for k in tensors} == {"G", "D", "G_ema", "opt_g", "opt_d", "rng"}
    with pytest.raises(ValueError, match="not a ganfast checkpoint"):
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        trainer.resume(str(tmp_path / "other.safetensors"))


def test_collapse_alarm(tmp_path, capsys):
    trainer = _trainer("ring8", tmp_path, "mlp", tick_steps=1)
    trainer.best_diversity = 100.0          # as if samples had once been far more diverse
    trainer.train(1)
    record = json.loads((tmp_path / "stats.jsonl").read_text())
    assert record["collapse_alarm"] is True
    captured = capsys.readouterr()
    assert "mode-collapse alarm" in captured.out + captured.err


_DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    from safetensors.torch import save_file
    from ganfast.train.run import build_trainer, init_distributed
    import torch.distributed as dist
    torch.set_num_threads(1)
    device = init_distributed()
    out, dataset = sys.argv[1], sys.argv[2]
    trainer, _ = build_trainer(dataset, out, overrides={"batch_size": 32 if dataset == "ring8" else 8,
                               "tick_steps": 4, "snapshot_ticks": 1}, device=device, progress=False,
                               mirror=dataset != "ring8")
    initial = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    trainer.train(8)
    changed = any(not torch.equal(initial[k], v) for k, v in trainer.G.state_dict().items())
    save_file({k: v.contiguous() for k, v in trainer.G.state_dict().items()},
              f"{out}/G-rank{dist.get_rank()}.safetensors", metadata={"changed": str(changed),
              "world": str(dist.get_world_size()), "report": trainer.dataset.report.split(" (")[0]})
    dist.destroy_process_group()
""")


@pytest.mark.parametrize("dataset", ["ring8", "zip"])
def test_ddp_two_cpu_processes(tmp_path, dataset):
    """Two ranks stay in sync; with a zip (x-flips on), rank 0 decodes it into the cache and rank 1 reads it."""
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    if dataset == "zip":
        dataset = _noise_zip(tmp_path / "noise.zip", n=12)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path), dataset], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = []
    for rank in range(2):
        path = str(tmp_path / f"G-rank{rank}.safetensors")
        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
            assert meta.pop("report").startswith("" if dataset == "ring8" else "decoded 12 images" if rank == 0
                                                 else "cache hit")
            assert meta == {"changed": "True", "world": "2"}
        states.append(load_file(path))
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key       # the ranks stay in sync
    records = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8]                      # written once, by rank 0
    with safe_open(str(tmp_path / "checkpoint.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["ganfast"])["extra"]["world_size"] == 2


def test_cli_train_and_resume(tmp_path):
    from ganfast.cli import main
    out = str(tmp_path / "run")
    args = ["train", "--dataset", "grid25", "--out", out, "--batch-size", "32", "--tick", "5", "--no-progress"]
    assert main(args + ["--steps", "5"]) == 0
    assert main(args + ["--steps", "10", "--resume"]) == 0
    records = [json.loads(line) for line in open(os.path.join(out, "stats.jsonl"))]
    assert [r["step"] for r in records] == [5, 10] and all("modes" in r and "hq" in r for r in records)
    assert records[-1]["num_modes"] == 25


def test_sample_pictures(tmp_path):
    from PIL import Image

    from ganfast.train.visual import save_image_grid, save_scatter
    images = -torch.ones(5, 1, 4, 4)                                    # black
    images[2] = 1.0
    save_image_grid(images, str(tmp_path / "grid.png"), columns=3, scale=2, gap=1)
    grid = torch.from_numpy(np.array(Image.open(tmp_path / "grid.png")))
    assert grid.shape == (2 * 9 + 1, 3 * 9 + 1)                       # 2 rows x 3 columns of 8x8 + 1 px gaps
    assert (grid[1:9, 19:27] == 255).all() and (grid[1:9, 1:9] == 0).all()    # image 2 white, image 0 black
    assert (grid[0] == 128).all() and (grid[:, 9] == 128).all()             # grey gaps
    save_scatter(torch.tensor([[0.0, 0.0]]), str(tmp_path / "pts.png"), modes=torch.tensor([[1.0, 1.0]]), size=64)
    pts = Image.open(tmp_path / "pts.png").convert("RGB")
    assert pts.size == (64, 64)
    assert (0, 0, 0) in {pts.getpixel((x, y)) for x in (31, 32) for y in (31, 32)}      # the point, at the centre
    assert (255, 0, 0) in {pts.getpixel((x, y)) for x in range(64) for y in range(64)}  # the mode marker


def test_cli_demo_small(tmp_path, monkeypatch, capsys):
    from ganfast.cli import main
    monkeypatch.setenv("GANFAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "4", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["fd"] > 0 and metrics["fd_untrained"] > 0
    assert os.path.isfile(metrics["samples"]) and metrics["samples"] in capsys.readouterr().out
    record = json.loads((out / "stats.jsonl").read_text().splitlines()[-1])
    assert {"fd", "precision", "recall"} <= record.keys()


def test_training_holds_images_as_uint8(tmp_path, monkeypatch):
    """The data set stays uint8 (memory-mapped from the cache); only batches and the handful of fixed reals are
    ever converted to float."""
    from ganfast import data
    sizes = []
    to_float = data.to_float
    monkeypatch.setattr(data, "to_float", lambda x: sizes.append(x.shape[0]) or to_float(x))
    trainer = _trainer(_noise_zip(tmp_path / "noise.zip", n=40), tmp_path / "run", "sngan", mirror=True,
                       batch_size=8, num_fixed=4)
    assert trainer.dataset.data.dtype == torch.uint8 and len(trainer.dataset) == 80
    trainer.train(3)
    assert sizes and max(sizes) == 8


def test_stylegan2_auto_config_and_model_sizes():
    from ganfast.train.run import build_models, stylegan2_auto
    auto = stylegan2_auto(256)
    assert auto["config"]["batch_size"] == 16 and auto["config"]["r1_gamma"] == pytest.approx(0.0002 * 256 ** 2 / 16)
    assert auto["config"]["ema_kimg"] == pytest.approx(5.0) and auto["config"]["lr_g"] == 0.0025
    assert auto["model"]["channel_base"] == 16384 and auto["model"]["channel_max"] == 512
    assert auto["model"]["mapping_layers"] == 2 and auto["model"]["mbstd_group_size"] == 4
    assert stylegan2_auto(1024)["model"]["channel_base"] == 32768 and stylegan2_auto(1024)["config"]["lr_g"] == 0.002
    assert stylegan2_auto(64, world_size=8)["config"]["batch_size"] == 64                # capped at 64
    assert stylegan2_auto(64, batch_size=4)["config"]["r1_gamma"] == pytest.approx(0.0002 * 64 ** 2 / 4)
    assert stylegan2_auto(64, batch_size=6)["model"]["mbstd_group_size"] == 2                 # divides the batch
    from ganfast.data import Dataset
    ds = Dataset("tiny", torch.zeros(4, 3, 64, 64, dtype=torch.uint8))
    G, D = build_models("stylegan2", ds, cbase=256, cmax=8, map_layers=1, fp16_res=2, auto=stylegan2_auto(64)["model"])
    assert G.z_dim == 512 and len(G.mapping.layers) == 1 and G.blocks[-1].use_fp16 and not G.blocks[0].use_fp16
    assert max(b.conv1.weight.shape[0] for b in G.blocks) == 8 and G.blocks[-1].conv1.weight.shape[0] == 4
    assert G(torch.randn(2, 512)).shape == (2, 3, 64, 64) and D(torch.randn(4, 3, 64, 64)).shape == (4, 1)
    G, D = build_models("dcgan", Dataset("tiny", torch.zeros(4, 1, 64, 64, dtype=torch.uint8)), cbase=4)
    assert G(torch.randn(2, 64)).shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="--map, --fp16-res and --cmax apply to stylegan2"):
        build_models("sngan", ds, map_layers=2)


def test_cli_train_on_a_zip_prints_the_run(tmp_path, capsys):
    from ganfast.cli import main
    zipped = _noise_zip(tmp_path / "noise.zip", n=16, side=32)
    args = ["train", "--dataset", zipped, "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "8",
            "--model", "stylegan2", "--cbase", "64", "--cmax", "4", "--map", "1", "--mirror", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"dataset   {zipped}: 16 images, 32x32, 3 channels, x-flips: 32 in all" in out
    assert "labels    3 classes" in out and "decoding  decoded 16 images in" in out
    assert "model     G StyleGAN2Generator" in out and "device    cpu, 1 threads, batch 8" in out
    assert main(args + ["--resume", "--steps", "3"]) == 0
    assert "decoding  cache hit, no decoding" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(args[:-1] + ["--resolution", "48"])
    assert "must be a power of two" in capsys.readouterr().err


def test_next_real_gives_the_labels_of_its_images(tmp_path):
    """In conditional training each real batch comes with its images' one-hot labels, x-flipped copies keeping
    theirs; without, the labels are None."""
    from ganfast.data import DataOrder
    ds = load_dataset(_noise_zip(tmp_path / "noise.zip", n=12), mirror=True)
    G = StyleGAN2Generator(z_dim=8, w_dim=8, channel_max=4, mapping_layers=1, img_channels=3, c_dim=ds.c_dim)
    D = StyleGAN2Discriminator(channel_max=4, img_channels=3, c_dim=ds.c_dim)
    trainer = Trainer(G, D, ds, str(tmp_path / "run"), TrainConfig(batch_size=8, num_fixed=4, cond=True),
                      progress=False)
    reference = DataOrder(ds, 8, seed=0)
    for _ in range(4):
        real, real_c = trainer._next_real()
        indices = reference.next_indices()
        assert torch.equal(real, ds.batch(indices)) and torch.equal(real_c, ds.label_vectors(indices))
        assert torch.equal(real_c.argmax(1), ds.labels[indices % 12]) and real_c.shape == (8, 3)
    G = StyleGAN2Generator(z_dim=8, w_dim=8, channel_max=4, mapping_layers=1, img_channels=3)
    unconditional = Trainer(G, StyleGAN2Discriminator(channel_max=4, img_channels=3), ds, str(tmp_path / "run2"),
                            TrainConfig(batch_size=8, num_fixed=4), progress=False)
    assert unconditional._next_real()[1] is None
