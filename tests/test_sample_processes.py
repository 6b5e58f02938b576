"""A seed's image is the same in every process: the same seeds sampled by separate ``ganfast sample`` processes
(each sampling as its first work, at 1 and 2 threads, other batch sizes and shards) are byte-identical to one
another and to the images this process samples, npz and PNG, for DCGAN, StyleGAN2 and StyleGAN3 generators,
unconditional and conditional (on the GPU runbook, on CUDA). Several fresh processes per generator, because a
process's first forward rounds differently in only some processes on machines where it does at all (README,
"Determinism")."""
import pytest
import torch
from support import DEVICE, npz_samples, sample_in_processes

import ganfast
from ganfast.checkpoint import load_generator, save_checkpoint
from ganfast.models import DCGANGenerator, StyleGAN2Generator, StyleGAN3Generator
from ganfast.models._spec import model_spec

SEEDS, NUM_SEEDS = "0-63", 64  # as many as the report sampled, in one batch of the CPU default
COUNTS = [5, 1, 3]  # images per class of the conditional generators' (notional) training set


def _build(kind: str) -> torch.nn.Module:
    torch.manual_seed(1)
    if kind.startswith("dcgan"):  # the default DCGAN, the one the issue measured
        G = DCGANGenerator(c_dim=3 if kind == "dcgan-cond" else 0)
    elif kind == "stylegan2-cond":
        G = StyleGAN2Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=16, channel_max=8, mapping_layers=1)
    else:
        G = StyleGAN3Generator(z_dim=8, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                               num_layers=3, margin_size=2)
    with torch.no_grad():  # trained-looking weights: batch-norm statistics, class gains, noise strengths not 0
        for module in G.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
        for p in G.parameters():
            if not p.any():
                p.normal_(0, 0.3)
    return G.eval()


@pytest.fixture(scope="module", params=["dcgan", "dcgan-cond", "stylegan2-cond", "stylegan3"])
def checkpoint(request, tmp_path_factory):
    kind = request.param
    path = tmp_path_factory.mktemp(kind) / "checkpoint.safetensors"
    G = _build(kind)
    labels = {"c_dim": 3, "num_classes": 3, "class_counts": COUNTS} if G.c_dim else None
    save_checkpoint(str(path), {"G_ema": G}, {}, {"models": {"G": model_spec(G)}, "labels": labels})
    return kind, path


def test_every_process_samples_the_same_bytes(checkpoint, tmp_path):
    kind, path = checkpoint
    noise = "random" if kind.startswith("stylegan") else None
    common = ("--seeds", SEEDS, "--device", DEVICE.type, *(("--noise-mode", noise) if noise else ()))
    # on a CPU, other batch sizes too; on a GPU one batch size (other shapes may run other kernels: README)
    batch_size = 4 if DEVICE.type == "cpu" else None
    png = (path, tmp_path / "png", 2 if kind == "dcgan" else 1, *common, "--format", "png",
           *(("--batch-size", "5") if batch_size else ()))
    if kind == "dcgan-cond":  # two shards, each in a process of its own
        npz = [(path, tmp_path / "npz", 2, *common, "--format", "npz", "--shard", f"{i}/2", "--shard-size", "16")
               for i in range(2)]
    else:
        npz = [(path, tmp_path / "npz", 2, *common, "--format", "npz")]
    sample_in_processes([*npz, png])

    G = load_generator(path, device=DEVICE)
    here = {}
    for batch in ganfast.sample(G, SEEDS, batch_size=batch_size, noise_mode=noise):
        labels = [None] * len(batch.seeds) if batch.labels is None else batch.labels.tolist()
        here.update({seed: (image.tobytes(), label) for seed, image, label in zip(batch.seeds.tolist(), batch.images,
                                                                                 labels)})
    assert npz_samples(tmp_path / "npz") == here
    assert len({image for image, _ in here.values()}) == NUM_SEEDS  # not a comparison of blank images
    if G.c_dim:
        assert len({label for _, label in here.values()}) > 1
    ganfast.write_samples(G, SEEDS, tmp_path / "here", fmt="png", batch_size=batch_size, progress=False,
                          noise_mode=noise)
    pngs = sorted(p.relative_to(tmp_path / "here") for p in (tmp_path / "here").rglob("*.png"))
    assert len(pngs) == NUM_SEEDS
    assert sorted(p.relative_to(tmp_path / "png") for p in (tmp_path / "png").rglob("*.png")) == pngs
    for name in pngs:
        assert (tmp_path / "png" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name
