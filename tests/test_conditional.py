"""Conditional GANs: every model takes labels c, conditional training (exact resume, DDP), and labelled
synthetic data (determinism per (seed, class), labels in every output format, the manifest's label choice)."""
import json
import os
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from support import npz_samples, sample_in_processes

import ganfast
from ganfast.data import Dataset, load_dataset
from ganfast.models import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, SNGANDiscriminator,
                            SNGANGenerator, StyleGAN2Discriminator, StyleGAN2Generator)
from ganfast.models._spec import build_model, model_spec
from ganfast.sampling import seed_classes
from ganfast.train import Trainer, TrainConfig, d_step, g_step, load_generator

C = 3


def _pair(kind: str, c_dim: int = C):
    if kind == "mlp":
        return MLPGenerator(z_dim=4, hidden=16, depth=2, c_dim=c_dim), MLPDiscriminator(hidden=16, depth=2, c_dim=c_dim)
    if kind in ("dcgan", "sngan"):
        D = (DCGANDiscriminator if kind == "dcgan" else SNGANDiscriminator)(base_channels=4, c_dim=c_dim)
        return (DCGANGenerator if kind == "dcgan" else SNGANGenerator)(z_dim=8, base_channels=8, c_dim=c_dim), D
    return (StyleGAN2Generator(z_dim=8, c_dim=c_dim, w_dim=8, channel_max=8, mapping_layers=1),
            StyleGAN2Discriminator(c_dim=c_dim, channel_max=8))


def _one_hot(classes) -> torch.Tensor:
    return torch.eye(C)[torch.as_tensor(classes)]


@pytest.mark.parametrize("kind", ["mlp", "dcgan", "sngan", "stylegan2"])
def test_models_take_labels(kind):
    G, D = _pair(kind)
    z, c = torch.randn(4, G.z_dim), _one_hot([0, 1, 2, 0])
    with torch.no_grad():  # randomise the conditional gains/biases (they start as the identity)
        for name, p in G.named_parameters():
            if name.endswith(("gain.weight", "shift.weight")):
                p.normal_()
    x = G(z, c)
    logits = D(x, c)
    assert x.shape[0] == 4 and logits.shape[0] == 4
    other = _one_hot([1, 2, 0, 1])
    assert not torch.allclose(G(z, other), x)                      # the label changes the sample ...
    assert not torch.allclose(D(x, other), logits)                 # ... and the verdict
    for model, args in ((G, (z,)), (D, (x.detach(),))):
        with pytest.raises(ValueError, match="is conditional: c .* is required"):
            model(*args)
        with pytest.raises(ValueError, match=r"shape \(4, 3\).*got \(4, 2\)"):
            model(*args, c[:, :2])
        with pytest.raises(ValueError, match=r"shape \(4, 3\).*got \(3, 3\)"):
            model(*args, c[:3])
    G0, D0 = _pair(kind, c_dim=0)
    with pytest.raises(ValueError, match="unconditional"):
        G0(z, c)
    with pytest.raises(ValueError, match="unconditional"):
        D0(x.detach(), c)
    assert G0(z, torch.zeros(4, 0)).shape == G0(z).shape          # NVlabs' empty c is accepted


@pytest.mark.parametrize("kind", ["mlp", "dcgan", "sngan", "stylegan2"])
def test_label_embeddings_get_gradients_and_rebuild_from_spec(kind):
    G, D = _pair(kind)
    z, c = torch.randn(4, G.z_dim), _one_hot([0, 1, 2, 0])
    D(G(z, c), c).sum().backward()
    label_params = {name: p for module in (G, D) for name, p in module.named_parameters()
                    if any(k in name for k in ("gain", "shift", "embed", "net.0"))}
    assert label_params
    for name, p in label_params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for model in (G, D):
        rebuilt = build_model(json.loads(json.dumps(model_spec(model))))
        assert rebuilt.c_dim == C
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
            {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["mlp", "dcgan"])
def test_conditional_models_trace_without_graph_breaks(kind):
    G, D = _pair(kind)
    z, c = torch.randn(4, G.z_dim), _one_hot([0, 1, 2, 0])
    torch._dynamo.reset()
    compiled_g = torch.compile(G, backend="eager", fullgraph=True)
    compiled_d = torch.compile(D, backend="eager", fullgraph=True)
    x = compiled_g(z, c)
    torch.testing.assert_close(compiled_d(x, c), D(x, c))


def test_conditional_batch_norm_starts_as_batch_norm():
    G, _ = _pair("dcgan")
    G0, _ = _pair("dcgan", c_dim=0)
    G0.load_state_dict({k: v for k, v in G.state_dict().items() if k in G0.state_dict()})
    z = torch.randn(4, 8)
    torch.testing.assert_close(G(z, _one_hot([0, 1, 2, 0])), G0(z))
    torch.testing.assert_close(G.state_dict()["input.2.running_mean"], G0.state_dict()["input.2.running_mean"])


def test_steps_pass_labels():
    G, D = _pair("stylegan2")
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-3) for m in (G, D))
    real, real_c, z, fake_c = torch.rand(4, 1, 16, 16) * 2 - 1, _one_hot([0, 1, 2, 0]), torch.randn(4, 8), \
        _one_hot([2, 2, 1, 0])
    stats = d_step(G, D, opt_d, real, z, real_c=real_c, fake_c=fake_c, r1_gamma=1.0, regularize=True)
    assert stats["r1"] > 0
    pl = ganfast.losses.PathLengthPenalty()
    stats = g_step(G, D, opt_g, z, fake_c=fake_c, path_length=pl, pl_weight=2.0, regularize=True)
    assert np.isfinite(stats["pl"]) and pl.mean > 0
    with pytest.raises(ValueError, match="is required"):
        d_step(G, D, opt_d, real, z)


# ---- training ------------------------------------------------------------------------------------------------

def _trainer(out, kind="sngan", dataset=None, **config):
    ds = dataset or load_dataset("digits")
    torch.manual_seed(0)
    G, D = _pair(kind, c_dim=ds.c_dim)
    cfg = TrainConfig(**{"batch_size": 16, "r1_gamma": 0.5, "r1_interval": 2, "ema_kimg": 0.1, "tick_steps": 3,
                         "snapshot_ticks": 2, "num_fixed": 9, "cond": True, "pl_weight": 2.0 * (kind == "stylegan2"),
                         "pl_interval": 2, **config})
    return Trainer(G, D, ds, str(out), cfg, progress=False)


@pytest.mark.parametrize("kind", ["sngan", "stylegan2"])
def test_conditional_resume_is_exact(tmp_path, kind, one_thread):
    straight = _trainer(tmp_path / "straight", kind)
    straight.train(6)
    first = _trainer(tmp_path / "resumed", kind)
    first.train(3)
    resumed = _trainer(tmp_path / "resumed", kind)
    resumed.resume()
    resumed.train(6)
    a = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    record = json.loads((tmp_path / "straight" / "stats.jsonl").read_text().splitlines()[-1])
    assert len(record["diversity_per_class"]) == 10
    with safe_open(str(tmp_path / "straight" / "checkpoint.safetensors"), framework="pt") as f:
        labels = json.loads(f.metadata()["ganfast"])["extra"]["labels"]
    counts = torch.bincount(load_dataset("digits").labels).tolist()
    assert labels == {"c_dim": 10, "num_classes": 10, "class_counts": counts}
    G = load_generator(tmp_path / "straight")
    assert G.c_dim == 10 and G.class_counts == counts
    # and their samples, each run's in a process of its own, are the same bytes
    sample_in_processes([(tmp_path / run, tmp_path / f"samples-{run}", 2, "--seeds", "0-7", "--format", "npz")
                         for run in ("straight", "resumed")])
    assert npz_samples(tmp_path / "samples-straight") == npz_samples(tmp_path / "samples-resumed")


def test_real_labels_come_with_their_images_and_fake_labels_follow_the_data(tmp_path):
    # one class holds 3/4 of a data set whose labels are written on the images themselves
    labels = torch.tensor([0] * 48 + [1] * 8 + [2] * 8)
    images = (labels.float() - 1).view(-1, 1, 1, 1).expand(-1, 1, 16, 16).contiguous()
    trainer = _trainer(tmp_path, "dcgan", Dataset("labelled", images, labels=labels))
    for _ in range(4):
        real, real_c = trainer._next_real()
        torch.testing.assert_close(real[:, 0, 0, 0], real_c.argmax(1).float() - 1)
    drawn = torch.cat([trainer._fakes(phase)[1] for phase in (0, 1)]).argmax(1)
    assert torch.equal(drawn, torch.cat([trainer._fakes(phase)[1] for phase in (0, 1)]).argmax(1))  # seeded
    trainer.step = 1
    many = torch.cat([trainer._fakes(0)[1].argmax(1) for trainer.step in range(40)])
    assert 0.65 < (many == 0).float().mean() < 0.85


def test_cond_needs_labels_and_conditional_models(tmp_path, capsys):
    ring = load_dataset("ring8")
    with pytest.raises(ValueError, match="'ring8' has no labels"):
        Trainer(MLPGenerator(c_dim=2), MLPDiscriminator(c_dim=2), ring, str(tmp_path), TrainConfig(cond=True))
    digits = load_dataset("digits")
    with pytest.raises(ValueError, match="cond is False"):
        Trainer(*_pair("dcgan", c_dim=10), digits, str(tmp_path), TrainConfig())
    with pytest.raises(ValueError, match="dimension 10, but G and D were built with c_dim 3"):
        Trainer(*_pair("dcgan"), digits, str(tmp_path), TrainConfig(cond=True))
    from ganfast.cli import main
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "ring8", "--cond", "--out", str(tmp_path / "r"), "--steps", "1"])
    assert "--cond: the data set 'ring8' has no labels" in capsys.readouterr().err


_DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    from safetensors.torch import save_file
    from ganfast.train.run import build_trainer, init_distributed
    import torch.distributed as dist
    torch.set_num_threads(1)
    device = init_distributed()
    out = sys.argv[1]
    trainer, _ = build_trainer("digits", out, overrides={"batch_size": 8, "tick_steps": 2, "snapshot_ticks": 1,
                               "num_fixed": 4, "cond": True}, device=device, progress=False, eval_samples=50)
    trainer.train(2)
    save_file({k: v.contiguous() for k, v in trainer.G.state_dict().items()}, f"{out}/G-rank{dist.get_rank()}.st")
    dist.destroy_process_group()
""")


def test_conditional_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = [load_file(str(tmp_path / f"G-rank{rank}.st")) for rank in range(2)]
    assert any(k.endswith("gain.weight") for k in states[0])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    record = json.loads((tmp_path / "stats.jsonl").read_text())
    assert 0 <= record["class_acc"] <= 1 and len(record["class_acc_per_class"]) == 10


# ---- labelled synthetic data ---------------------------------------------------------------------------------

class TinyCondG(torch.nn.Module):
    """z (N, 8), one-hot c (N, 3) -> images (N, 1, 4, 4) in [-1, 1]."""
    z_dim, c_dim = 8, C

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8 + C, 16)

    def forward(self, z, c, truncation_psi=1.0, noise_mode="const"):
        return torch.tanh(self.fc(torch.cat([z * truncation_psi, 3 * c], dim=1))).view(-1, 1, 4, 4)


def _images(batches):
    batches = list(batches)
    return (np.concatenate([b.seeds for b in batches]), np.concatenate([b.images for b in batches]),
            np.concatenate([b.labels for b in batches]))


def test_image_of_a_seed_and_class_depends_on_them_alone():
    G = TinyCondG()
    seeds, images, labels = _images(ganfast.sample(G, "0-9", batch_size=3, c=2))
    assert (labels == 2).all()
    _, alone, _ = _images(ganfast.sample(G, [7], c=2))
    np.testing.assert_array_equal(alone[0], images[7])
    _, drawn_images, drawn = _images(ganfast.sample(G, "0-9", batch_size=4))       # a class per seed
    np.testing.assert_array_equal(drawn, seed_classes(range(10), [1, 1, 1]))
    np.testing.assert_array_equal(_images(ganfast.sample(G, "5-9", c="all"))[2], drawn[5:])
    for seed in (0, 5):
        _, one, _ = _images(ganfast.sample(G, [seed], c=int(drawn[seed])))
        np.testing.assert_array_equal(one[0], drawn_images[seed])
    c = torch.eye(C)[[1, 0]]
    _, given, given_labels = _images(ganfast.sample(G, [3, 4], c=c))
    np.testing.assert_array_equal(given[0], _images(ganfast.sample(G, [3], c=1))[1][0])
    assert given_labels.shape == (2, C)


def test_seed_classes_follow_the_class_counts():
    classes = seed_classes(range(4000), [6, 0, 2])
    assert set(classes.tolist()) == {0, 2}
    assert 0.72 < (classes == 0).mean() < 0.78
    np.testing.assert_array_equal(classes[1000:1010], seed_classes(range(1000, 1010), [6, 0, 2]))


def test_bad_class_choices():
    G = TinyCondG()
    with pytest.raises(ValueError, match="class 3 is out of range: the generator has 3 classes"):
        ganfast.sample(G, "0-1", c=3)
    with pytest.raises(ValueError, match="class must be a class index"):
        ganfast.sample(G, "0-1", c="two")
    with pytest.raises(ValueError, match="one row per seed"):
        ganfast.sample(G, "0-1", c=torch.eye(C))
    with pytest.raises(ValueError, match="class_counts"):
        ganfast.sample(G, "0-1", class_counts=[0, 0, 0])
    unconditional = DCGANGenerator(z_dim=8, base_channels=8)
    with pytest.raises(ValueError, match="unconditional"):
        ganfast.sample(unconditional, "0-1", c=0)


@pytest.mark.parametrize("fmt", ["png", "npz", "webdataset"])
def test_labels_travel_with_the_images(tmp_path, fmt):
    G = TinyCondG()
    out = tmp_path / fmt
    ganfast.write_samples(G, "0-5", out, fmt=fmt, shard_size=4, progress=False, class_counts=[1, 1, 1],
                          shard=(1, 2))
    ganfast.write_samples(G, "0-5", out, fmt=fmt, shard_size=4, progress=False, class_counts=[1, 1, 1],
                          batch_size=5, shard=(0, 2))
    _, images, labels = _images(ganfast.sample(G, "0-5", class_counts=[1, 1, 1]))
    if fmt == "png":
        from PIL import Image
        for seed in range(6):
            path = out / f"class{labels[seed]}" / "00000" / f"seed{seed:08d}.png"
            np.testing.assert_array_equal(np.asarray(Image.open(path)), images[seed, ..., 0])
    elif fmt == "npz":
        for name, rows in (("seeds00000000-00000002.npz", slice(0, 3)), ("seeds00000003-00000005.npz", slice(3, 6))):
            with np.load(out / name) as data:
                np.testing.assert_array_equal(data["labels"], labels[rows])
                np.testing.assert_array_equal(data["images"], images[rows])
    else:
        with tarfile.open(out / "seeds00000003-00000005.tar") as tar:
            records = [json.load(tar.extractfile(f"{s:08d}.json")) for s in range(3, 6)]
        assert [r["class"] for r in records] == labels[3:].tolist()
    manifest = json.loads((out / ganfast.sampling.MANIFEST).read_text())
    assert manifest["labels"] == {"class": "all", "drawn_from_class_counts": [1, 1, 1]}
    with pytest.raises(ValueError, match=r"labels=\{'class': 'all'.*but this run has labels=\{'class': 1\}"):
        ganfast.write_samples(G, "0-5", out, fmt=fmt, shard_size=4, progress=False, class_index=1, shard=(0, 2))


def test_cli_sample_class_from_a_conditional_run(tmp_path, capsys, one_thread):
    from ganfast.cli import main
    run = tmp_path / "run"
    _trainer(run, "dcgan", tick_steps=2).train(2)
    assert main(["sample", "--checkpoint", str(run), "--seeds", "0-3", "--out", str(tmp_path / "k"),
                 "--format", "npz", "--class", "7", "--no-progress"]) == 0
    with np.load(tmp_path / "k" / "seeds00000000-00000003.npz") as data:
        assert data["labels"].tolist() == [7] * 4
        images = data["images"]
    G = load_generator(run)
    np.testing.assert_array_equal(images, _images(ganfast.sample(G, "0-3", c=7))[1])
    assert main(["sample", "--checkpoint", str(run), "--seeds", "0-3", "--out", str(tmp_path / "all"),
                 "--format", "npz", "--no-progress"]) == 0
    with np.load(tmp_path / "all" / "seeds00000000-00000003.npz") as data:
        np.testing.assert_array_equal(data["labels"], seed_classes(range(4), G.class_counts))
    for bad, message in (("10", "class 10 is out of range: the generator has 10 classes"),
                         ("-1", "class must be a class index")):
        with pytest.raises(SystemExit):
            main(["sample", "--checkpoint", str(run), "--seeds", "0-1", "--out", str(tmp_path / "x"), "--class", bad])
        assert message in capsys.readouterr().err


def test_label_vectors_train_and_must_be_given_when_sampling(tmp_path, one_thread):
    vectors = torch.rand(32, 2)
    dataset = Dataset("vectors", torch.rand(32, 1, 16, 16) * 2 - 1, labels=vectors)
    assert dataset.c_dim == 2 and dataset.num_classes is None
    torch.testing.assert_close(dataset.label_vectors(torch.tensor([3, 1])), vectors[[3, 1]])
    trainer = _trainer(tmp_path, "dcgan", dataset, tick_steps=2, num_fixed=4)
    trainer.train(2)
    G = load_generator(tmp_path)
    assert G.c_dim == 2 and G.label_vectors and not hasattr(G, "class_counts")
    with pytest.raises(ValueError, match="trained on label vectors"):
        ganfast.sample(G, "0-1")
    batch = next(ganfast.sample(G, "0-1", c=vectors[:2]))
    np.testing.assert_array_equal(batch.labels, vectors[:2].numpy())
