"""Runs a researcher can trust: run folders, resume with the run's own definition, preemption, snapshots,
fine-tuning, statistics, metrics, the collapse monitor, and one-line errors."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import _noise_zip

from ganfast.cli import main
from ganfast.checkpoint import checkpoint_extra, load_generator

RING = ["--dataset", "ring8", "--batch-size", "32", "--tick", "4", "--no-progress"]


def _tiny_image_run(zipped, out, *extra):
    return ["train", "--dataset", zipped, "--out", str(out), "--model", "dcgan", "--cbase", "4", "--batch-size",
            "8", "--tick", "2", "--no-progress", *extra]


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_out_refuses_a_used_folder_and_outdir_numbers_runs(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "2", *RING]) == 0
    assert "--out" in _error(capsys, ["train", "--out", str(out), "--steps", "2", *RING]) and \
        "add --resume" in capsys.readouterr().err + "add --resume"
    assert [r["tick"] for r in _records(out / "stats.jsonl")] == [1]       # the refused run wrote nothing
    root = tmp_path / "runs"
    (root / "00007-old").mkdir(parents=True)
    assert main(["train", "--outdir", str(root), "--steps", "1", *RING]) == 0
    assert main(["train", "--outdir", str(root), "--steps", "1", *RING]) == 0
    assert sorted(os.listdir(root)) == ["00007-old", "00008-ring8-mlp", "00009-ring8-mlp"]
    from ganfast.train.run import new_run_folder
    made = []
    threads = [threading.Thread(target=lambda: made.append(new_run_folder(str(root), "x.zip", "dcgan")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(os.path.basename(p)[5:] == "-x-dcgan" for p in made)


def test_resume_restores_the_run_definition(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "4", "--lr", "0.001", "--seed", "3", "--r1-gamma", "0.5",
                 *RING]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--steps", "8", "--no-progress"]) == 0
    assert f"resumed at step 4 (kimg 0.128) from {out}" in capsys.readouterr().out
    extra = checkpoint_extra(str(out))
    cfg = extra["config"]
    assert (extra["step"], cfg["lr_g"], cfg["lr_d"], cfg["seed"], cfg["r1_gamma"], cfg["tick_steps"],
            cfg["batch_size"]) == (8, 0.001, 0.001, 3, 0.5, 4, 32)
    assert [r["step"] for r in _records(out / "stats.jsonl")] == [4, 8]
    for option, value, named in (("--tick", "50", "--tick 50 conflicts with the run's 4"),
                                 ("--lr", "0.01", "--lr 0.01 conflicts with the run's 0.001"),
                                 ("--seed", "0", "--seed 0 conflicts"), ("--dataset", "grid25", "--dataset")):
        err = _error(capsys, ["train", "--out", str(out), "--resume", "--steps", "9", option, value])
        assert named in err, err
    assert main(["train", "--out", str(out), "--resume", "--steps", "9", "--lr", "0.001", "--tick", "4",
                 "--no-progress", "--snap", "1"]) == 0                  # the same values, and --snap, are fine
    zipped = _noise_zip(tmp_path / "noise.zip", n=16)
    image_run = tmp_path / "image"
    assert main(_tiny_image_run(zipped, image_run, "--steps", "1")) == 0
    for option, value in (("--resolution", "32"), ("--model", "sngan")):
        err = _error(capsys, ["train", "--out", str(image_run), "--resume", "--steps", "2", option, value])
        assert "holds a dcgan model at 16x16 px" in err and f"{option} {value} does not match" in err, err
    assert "--cond True conflicts with the run's False" in _error(
        capsys, ["train", "--out", str(image_run), "--resume", "--steps", "2", "--cond"])
    conditional = tmp_path / "conditional"
    assert main(_tiny_image_run(zipped, conditional, "--steps", "1", "--cond", "--mirror")) == 0
    assert main(["train", "--out", str(conditional), "--resume", "--steps", "2", "--no-progress"]) == 0
    extra = checkpoint_extra(str(conditional))
    assert extra["config"]["cond"] and extra["run"]["mirror"] and extra["labels"]["num_classes"] == 3
    assert load_generator(str(conditional)).c_dim == 3


def test_sigterm_then_resume_is_bit_exact(tmp_path, capsys, one_thread):
    """A run stopped by SIGTERM mid-way saves its step and exits 0; resumed, it ends bit-identical to a run
    that was never interrupted. A first Ctrl-C saves as well and exits 130."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    runs = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        out = tmp_path / sig.name
        proc = subprocess.Popen([sys.executable, "-m", "ganfast.cli", "train", "--out", str(out), "--steps",
                                 "1000000", *RING], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        deadline = time.monotonic() + 120
        while not (out / "stats.jsonl").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == (0 if sig == signal.SIGTERM else 130), stderr[-2000:]
        assert f"{sig.name}: stopped at step" in stdout and \
            f"resume with: ganfast train --out {out} --resume --steps 1000000" in stdout, stdout
        assert "Traceback" not in stderr
        runs[sig] = out
    out = runs[signal.SIGTERM]
    stopped = checkpoint_extra(str(out))["step"]
    assert 0 < stopped < 1000000
    total = str(stopped + 6)
    assert main(["train", "--out", str(out), "--resume", "--steps", total, "--no-progress"]) == 0
    assert main(["train", "--out", str(tmp_path / "straight"), "--steps", total, *RING]) == 0
    a = load_file(str(out / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_second_ctrl_c_aborts(tmp_path):
    from ganfast.data import load_dataset
    from ganfast.models import MLPDiscriminator, MLPGenerator
    from ganfast.train import Trainer
    trainer = Trainer(MLPGenerator(4), MLPDiscriminator(), load_dataset("ring8"), str(tmp_path), progress=False)
    with trainer._stop_on_signals(print) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop[0] == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored


def test_snapshots_sample_and_init(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--dataset", "ring8", "--steps", "8", "--tick", "4", "--snap", "1",
                 "--no-progress"]) == 0                                   # batch 256: kimg 1.024, 2.048
    snaps = sorted(p for p in os.listdir(out) if p.startswith("network-snapshot-"))
    assert snaps == ["network-snapshot-000001.safetensors", "network-snapshot-000002.safetensors"]
    kept = load_file(str(out / snaps[-1]))
    assert {k.split("/")[0] for k in kept} == {"G", "D", "G_ema", "rng"}   # no optimizer state
    latest, snapshot = load_generator(str(out)), load_generator(str(out / snaps[-1]))
    for (k, a), b in zip(latest.state_dict().items(), snapshot.state_dict().values()):
        assert torch.equal(a, b), k
    first = load_generator(str(out / snaps[0]))
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), snapshot.state_dict().values()))
    # fine-tuning starts from the snapshot's networks, with fresh optimizers and step 0
    from ganfast.train.run import build_trainer
    tuned, _ = build_trainer("ring8", str(tmp_path / "tuned"), progress=False)
    tuned.init_from(str(out / snaps[0]))
    for name, module in (("G", tuned.G), ("D", tuned.D), ("G_ema", tuned.G_ema)):
        stored = load_file(str(out / snaps[0]))
        for key, value in module.state_dict().items():
            assert torch.equal(value, stored[f"{name}/{key}"]), (name, key)
    assert tuned.step == 0 and not tuned.opt_g.state
    assert main(["train", "--out", str(tmp_path / "cli-tuned"), "--dataset", "ring8", "--steps", "1",
                 "--init", str(out), "--no-progress"]) == 0
    assert f"init: G, D and G_ema from {out}" in capsys.readouterr().out
    extra = checkpoint_extra(str(tmp_path / "cli-tuned"))
    assert extra["step"] == 1 and extra["run"]["init"] == str(out)
    # an image run's snapshot samples like a checkpoint
    zipped = _noise_zip(tmp_path / "noise.zip", n=16)
    image_run = tmp_path / "image"
    assert main(_tiny_image_run(zipped, image_run, "--steps", "2", "--snap", "1")) == 0
    snap = next(p for p in os.listdir(image_run) if p.startswith("network-snapshot-"))
    assert main(["sample", "--checkpoint", str(image_run / snap), "--seeds", "0-3", "--out", str(tmp_path / "s"),
                 "--no-progress"]) == 0
    assert len(list((tmp_path / "s").rglob("*.png"))) == 4


def test_stats_pictures_version_and_help(tmp_path, capsys, one_thread):
    zipped = _noise_zip(tmp_path / "noise.zip", n=16)
    out = tmp_path / "run"
    assert main(_tiny_image_run(zipped, out, "--steps", "2")) == 0
    record = _records(out / "stats.jsonl")[0]
    assert abs(record["time"] - time.time()) < 600 and record["sec_per_tick"] > 0
    assert record["sec_per_kimg"] == pytest.approx(record["sec_per_tick"] / (2 * 8) * 1000)
    assert record["peak_rss_mib"] > 10
    log = capsys.readouterr().out
    assert "sec_per_kimg" in log and "peak_rss_mib" in log
    from PIL import Image
    for name in ("reals.png", "fakes_init.png"):
        assert Image.open(out / name).size[0] > 64
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("ganfast 0.")
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 256 on a CPU, 64 on a GPU)" in text and "(default: png)" in text and "(default: None)" not in text


class _Inception(torch.nn.Module):
    """A stand-in TorchScript "Inception": 3x4x4 average-pooled pixels of uint8-range RGB images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x / 255, 4).flatten(1)


def test_metrics_at_snapshots_and_afterwards(tmp_path, capsys, monkeypatch, one_thread):
    from ganfast.metrics.report import parse_metric
    assert parse_metric("fid50k_full") == {"kind": "fid", "count": 50000, "k": 3, "full": True}
    assert parse_metric("pr50k5") == {"kind": "pr", "count": 50000, "k": 5, "full": False}
    assert parse_metric("fd200")["count"] == 200
    for bad in ("fid", "fd50k3", "is50k", "kid1"):
        with pytest.raises(ValueError, match="metric"):
            parse_metric(bad)
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--out", str(out), "--model", "dcgan", "--cbase", "4", "--batch-size",
            "16", "--tick", "2", "--steps", "4", "--no-progress"]
    assert main(args + ["--metrics", "fd100,kid100", "--snap", "1"]) == 0
    assert "fd100 of network-snapshot-000000.safetensors: fd " in capsys.readouterr().out
    rows = _records(out / "metric-fd100.jsonl")
    assert [r["snapshot"] for r in rows] == ["network-snapshot-000000.safetensors"] * 2   # kimg 0.032, 0.064
    assert rows[0]["features"] == "digits" and rows[0]["num_fakes"] == 100 and rows[0]["results"]["fd"] > 0
    err = _error(capsys, ["metrics", "--run", str(out), "--metrics", "fid100"])
    assert "needs an Inception file" in err and "fd100" in err
    inception = tmp_path / "inception.pt"
    torch.jit.script(_Inception()).save(str(inception))
    monkeypatch.setenv("GANFAST_INCEPTION", str(inception))
    assert main(["metrics", "--run", str(out), "--metrics", "fid100,pr100_full", "--vgg16", str(inception)]) == 0
    fid, = _records(out / "metric-fid100.jsonl")
    pr, = _records(out / "metric-pr100_full.jsonl")
    assert fid["features"] == "inception" and fid["results"]["fid"] > 0 and pr["num_reals"] == 1797
    assert pr["features"] == "vgg16"                                # pr in the --vgg16 network's features
    assert 0 <= pr["results"]["recall"] <= 1 and fid["fake_images_per_second"] > 0
    capsys.readouterr()
    assert main(["metrics", "--checkpoint", str(out), "--metrics", "fid100"]) == 0      # the run's checkpoint
    again = _records(out / "metric-fid100.jsonl")[-1]
    assert again["snapshot"] == "checkpoint.safetensors" and again["results"]["fid"] > 0
    capsys.readouterr()
    assert main(["fid", str(out), "digits", "--num", "100"]) == 0                       # sampled vs data set
    assert float(capsys.readouterr().out.strip()) > 0
    err = _error(capsys, ["metrics", "--run", str(out), "--metrics", "fid2k"])          # digits hold 1797
    assert "holds 1797 images" in err and "fid2k_full" in err


def test_collapse_alarm_on_a_dropped_class(tmp_path, capsys, one_thread):
    """A generator that never draws a nine: the per-class coverage names class 9 and the alarm reports it."""
    from ganfast.train.run import build_trainer
    trainer, _ = build_trainer("digits", str(tmp_path), overrides={"tick_steps": 1, "batch_size": 16},
                               progress=False, eval_samples=400)
    real, labels = trainer.dataset.batch(torch.arange(trainer.dataset.num_stored)), trainer.dataset.labels
    kept = real[labels != 9]

    class NoNines(torch.nn.Module):
        z_dim = 8

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, z):
            index = (z[:, 0].abs() * 1e4).long() % len(kept)
            return kept[index] + 0 * self.w

    record = trainer.evaluate(NoNines())
    assert record["classes_dropped"] == [9] and record["class_coverage"][9] < 0.1, record["class_coverage"]
    assert min(record["class_coverage"][:9]) > 0.5
    assert trainer._collapse_reasons({"diversity": 1.0, **record}) == [
        "classes the generator dropped: [9]"]
    assert "recall of the real data" in trainer._collapse_reasons({"diversity": 1.0, "recall": 0.05})[0]


def test_rough_edges_are_one_line_errors(tmp_path, capsys):
    not_zip = tmp_path / "images.zip"
    not_zip.write_text("hello")
    assert "is not a readable zip file" in _error(capsys, ["train", "--dataset", str(not_zip), "--out",
                                                           str(tmp_path / "a"), "--no-progress"])
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.png").write_text("not an image")
    assert "its bytes are neither format, whatever its name says" in _error(
        capsys, ["train", "--dataset", str(folder), "--out", str(tmp_path / "b"), "--no-progress"])
    if not torch.cuda.is_available():
        assert "torch sees no CUDA device" in _error(capsys, ["train", "--dataset", "ring8", "--out",
                                                              str(tmp_path / "c"), "--device", "cuda"])
        assert "torch sees no CUDA device" in _error(capsys, ["sample", "--checkpoint", str(tmp_path), "--seeds",
                                                              "0", "--out", str(tmp_path / "s"), "--device", "cuda"])
    from ganfast.data import load_dataset
    from ganfast.models import DCGANGenerator, MLPDiscriminator, MLPGenerator
    from ganfast.train import Trainer
    with pytest.raises(TypeError, match="dataset must be a ganfast.data.Dataset, got Tensor"):
        Trainer(MLPGenerator(4), MLPDiscriminator(), torch.zeros(8, 2), str(tmp_path / "d"))
    import ganfast
    with pytest.raises(ValueError, match="StyleGAN2Generator, StyleGAN3Generator take it"):
        ganfast.sample(DCGANGenerator(8, 16, 1, base_channels=4), "0-1", truncation_psi=0.5)
    # the Python Trainer follows the CLI's thread policy: 1 on the CPU unless told otherwise
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Trainer(MLPGenerator(4), MLPDiscriminator(), load_dataset("ring8"), str(tmp_path / "e"), device="cpu")
        assert torch.get_num_threads() == 1
        Trainer(MLPGenerator(4), MLPDiscriminator(), load_dataset("ring8"), str(tmp_path / "f"), device="cpu",
                threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_shards_split_the_seeds(tmp_path):
    """3 npz files' worth of seeds over 4 shards: every shard writes images, sizes differ by at most one."""
    import ganfast
    from ganfast.sampling import shard_seeds
    G = ganfast.models.DCGANGenerator(8, 16, 1, base_channels=4)
    written = [ganfast.write_samples(G, "0-8", tmp_path, fmt="npz", shard=(i, 4), shard_size=3,
                                     progress=False).images for i in range(4)]
    assert written == [2, 2, 2, 3]
    seeds = np.concatenate([np.load(p)["seeds"] for p in sorted(tmp_path.glob("*.npz"))])
    assert sorted(seeds.tolist()) == list(range(9))
    assert [len(shard_seeds(list(range(10)), i, 3)) for i in range(3)] == [3, 3, 4]
    assert shard_seeds([5], 1, 2) == [5] and shard_seeds([5], 0, 2) == []


def test_sigterm_mid_tick_resumes_exactly_with_layer_noise(tmp_path, one_thread):
    """StyleGAN2 draws its training noise from the global RNG: a SIGTERM in the middle of a tick (here raised by
    the process itself during step 4) still leaves a checkpoint whose resumed run matches the straight one."""
    from test_train import _trainer
    straight = _trainer("digits", tmp_path / "straight", "stylegan2")
    straight.train(8)
    stopped = _trainer("digits", tmp_path / "stopped", "stylegan2")
    step = stopped.train_step

    def step_then_signal():
        stats = step()
        if stopped.step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return stats

    stopped.train_step = step_then_signal
    stopped.train(8)
    assert stopped.interrupted == "SIGTERM" and stopped.step == 4 and stopped.tick == 1   # tick_steps 3
    assert checkpoint_extra(str(tmp_path / "stopped"))["step"] == 4        # saved at the step it stopped
    with pytest.raises(ValueError, match=r"was trained with lr_g=0.0002, lr_d=0.0002; this Trainer has "
                                         r"lr_g=0.01, lr_d=0.01 \(a resumed run keeps its definition"):
        _trainer("digits", tmp_path / "stopped", "stylegan2", lr_g=0.01, lr_d=0.01).resume()
    resumed = _trainer("digits", tmp_path / "stopped", "stylegan2")
    resumed.resume()
    resumed.train(8)
    a = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "stopped" / "checkpoint.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_demo_replaces_only_an_earlier_demo(tmp_path, capsys):
    """`ganfast demo` twice into one folder replaces the first demo (saying so); a folder of other files is
    refused with one line."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--no-progress"]) == 0
    assert main(["demo", "--out", str(out), "--steps", "2", "--no-progress"]) == 0
    assert "holds an earlier demo: it is replaced" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out", str(other), "--steps", "2", "--no-progress"])
    assert info.value.code == 2 and (other / "notes.txt").exists()
    assert "holds no earlier demo" in capsys.readouterr().err
