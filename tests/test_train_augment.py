"""Augmentation in training: D sees augmented reals and fakes in both steps, R1 through the augmentation, the
ADA controller's state in checkpoints (exact resume), stats fields and the CLI options."""
import json

import pytest
import torch
from safetensors.torch import load_file
from support import npz_samples, sample_in_processes

from ganfast.data import load_dataset
from ganfast.models import DCGANGenerator, MLPDiscriminator, MLPGenerator, SNGANDiscriminator
from ganfast.train import TrainConfig, Trainer, d_step, g_step

pytestmark = pytest.mark.usefixtures("one_thread")


def test_steps_augment_reals_and_fakes():
    seen = []

    def augment(x):
        seen.append(x.requires_grad)
        return x.flip(1) * 0.5

    G, D = MLPGenerator(depth=1), MLPDiscriminator(depth=1)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    stats = d_step(G, D, opt_d, torch.randn(8, 2), torch.randn(8, 16), r1_gamma=1.0, regularize=True, augment=augment)
    assert seen == [True, False] and stats["r1"] > 0 and -1 <= stats["real_sign"] <= 1
    g_step(G, D, opt_g, torch.randn(8, 16), augment=augment)
    assert seen == [True, False, True]  # the fakes of the G step, differentiated through the augmentation


def _trainer(out, **config):
    ds = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    G, D = DCGANGenerator(z_dim=8, base_channels=8), SNGANDiscriminator(base_channels=4)
    cfg = TrainConfig(**{"batch_size": 16, "r1_gamma": 0.5, "r1_interval": 2, "ema_kimg": 0.1, "tick_steps": 3,
                         "snapshot_ticks": 2, "num_fixed": 16, "aug": "ada", "aug_p": 0.3, "ada_interval": 2,
                         "ada_kimg": 0.2, **config})
    return Trainer(G, D, ds, str(out), cfg, progress=False)


def test_resume_is_exact_with_ada(tmp_path):
    n = 5
    straight = _trainer(tmp_path / "straight")
    straight.train(2 * n)
    first = _trainer(tmp_path / "resumed")
    first.train(n)
    resumed = _trainer(tmp_path / "resumed")
    resumed.resume()
    assert resumed.ada.state_dict() == first.ada.state_dict()
    resumed.train(2 * n)
    assert straight.ada.state_dict() == resumed.ada.state_dict() and straight.augment.p != 0.3
    a = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and their samples, each run's in a process of its own, are the same bytes
    sample_in_processes([(tmp_path / run, tmp_path / f"samples-{run}", 2, "--seeds", "0-7", "--format", "npz")
                         for run in ("straight", "resumed")])
    assert npz_samples(tmp_path / "samples-straight") == npz_samples(tmp_path / "samples-resumed")
    records = [json.loads(line) for line in (tmp_path / "straight" / "stats.jsonl").read_text().splitlines()]
    assert all("aug_p" in r and "rt" in r for r in records)
    _trainer(tmp_path / "other", aug="noaug").save()
    with pytest.raises(ValueError, match="aug="):
        _trainer(tmp_path / "other").resume()


def test_config_checks():
    with pytest.raises(ValueError, match="aug"):
        TrainConfig(aug="more")
    with pytest.raises(ValueError, match="augpipe"):
        TrainConfig(augpipe="xyz")
    with pytest.raises(ValueError, match="aug_p"):
        TrainConfig(aug_p=2)
    with pytest.raises(ValueError, match="2-D"):
        Trainer(MLPGenerator(), MLPDiscriminator(), load_dataset("ring8"), "unused", TrainConfig(aug="ada"))


def test_cli_aug_options(tmp_path, capsys):
    from ganfast.cli import main
    out = str(tmp_path / "fixed")
    args = ["train", "--dataset", "digits", "--batch-size", "8", "--tick", "2", "--steps", "2", "--no-progress"]
    assert main(args + ["--out", out, "--aug", "fixed", "--p", "0.5", "--augpipe", "bg"]) == 0
    assert "augment   fixed (bg, p = 0.5)" in capsys.readouterr().out
    record = json.loads((tmp_path / "fixed" / "stats.jsonl").read_text().splitlines()[0])
    assert record["aug_p"] == 0.5 and -1 <= record["rt"] <= 1
    assert main(args + ["--out", str(tmp_path / "diff"), "--aug", "diffaug"]) == 0
    assert "augment   diffaug" in capsys.readouterr().out
    grid = ["train", "--dataset", "grid25", "--batch-size", "8", "--steps", "1", "--no-progress"]
    assert main(grid + ["--out", str(tmp_path / "grid")]) == 0
    assert "augment   noaug" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(grid + ["--out", str(tmp_path / "grid2"), "--aug", "ada"])
    assert "2-D data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--out", str(tmp_path / "bad"), "--p", "1.5"])
    assert "--p" in capsys.readouterr().err
