"""Hardening of runs: training and sampling killed with SIGKILL (repeatedly) resume exactly; a full disk and
unwritable output keep the previous files; the CLI and TrainConfig refuse bad values, naming them."""
import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import ganfast
from ganfast.models import MLPGenerator
from ganfast.checkpoint import FORMAT


TRAIN_ARGS = ["--dataset", "ring8", "--steps", "150", "--batch-size", "32", "--tick", "5", "--snapshot-ticks", "1",
              "--threads", "1", "--no-progress"]


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


def _stats(folder: Path) -> list[dict]:
    records = [json.loads(line) for line in (folder / "stats.jsonl").read_text().splitlines()]
    for r in records:
        for key in ("img_per_s", "time", "sec_per_tick", "sec_per_kimg", "peak_rss_mib", "peak_cuda_mib"):
            r.pop(key, None)  # the fields that depend on the clock or the process's memory
    return records


def _wait_for(condition, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def _kill(proc) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _assert_whole_checkpoint(path: Path) -> None:
    """A checkpoint that exists is complete: every tensor reads back and its metadata is a ganfast checkpoint."""
    if path.exists():
        load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            assert json.loads(f.metadata()["ganfast"])["format"] == FORMAT


def small_trainer(out: Path):
    from ganfast.data import load_dataset
    from ganfast.train import Trainer, TrainConfig
    torch.manual_seed(0)
    config = TrainConfig(batch_size=16, tick_steps=3, snapshot_ticks=2, num_fixed=16)
    return Trainer(MLPGenerator(hidden=16, depth=1), ganfast.models.MLPDiscriminator(hidden=16, depth=1),
                   load_dataset("ring8"), str(out), config, progress=False)


# -- faults: kill -9 and resume -----------------------------------------------------------------------------------
@pytest.mark.usefixtures("one_thread")
def test_training_killed_repeatedly_resumes_exactly(tmp_path):
    from ganfast.cli import main
    straight, run = tmp_path / "straight", tmp_path / "killed"
    assert main(["train", "--out", str(straight)] + TRAIN_ARGS) == 0
    command = [sys.executable, "-m", "ganfast.cli", "train", "--out", str(run), "--resume"] + TRAIN_ARGS
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(8)
    records = lambda: len((run / "stats.jsonl").read_text().splitlines()) if (run / "stats.jsonl").exists() else 0
    kills = 0
    for attempt in range(4):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt == 0:
            time.sleep(0.3)  # still importing: killed before its first checkpoint, so --resume starts afresh
        else:
            target = records() + rng.randint(1, 6)  # then at a random point a few ticks further on
            _wait_for(lambda: records() >= target, proc)
            time.sleep(rng.uniform(0.0, 0.05))
        kills += proc.poll() is None
        _kill(proc)
        _assert_whole_checkpoint(run / "checkpoint.safetensors")
    assert kills >= 3, "the run finished before it could be killed"
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(str(straight / "checkpoint.safetensors")), load_file(str(run / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _stats(run) == _stats(straight)                       # nothing lost, nothing duplicated
    assert [r["tick"] for r in _stats(run)] == list(range(1, 31))
    assert not _temp_files(run)


def test_resume_trims_stats_and_starts_afresh_without_checkpoint(tmp_path):
    trainer = small_trainer(tmp_path)
    trainer.train(6)                                             # ticks 1 and 2, checkpoint at tick 2
    stats = tmp_path / "stats.jsonl"
    good = stats.read_text()
    with open(stats, "a") as f:                                  # as if killed after tick 3's record, mid-tick 4's
        f.write(json.dumps({"tick": 3, "step": 9}) + "\n" + '{"tick": 4, "st')
    resumed = small_trainer(tmp_path)
    assert resumed.resume() and resumed.tick == 2
    assert stats.read_text() == good
    (tmp_path / "checkpoint.safetensors").unlink()
    fresh = small_trainer(tmp_path)
    assert fresh.resume(missing_ok=True) is False and fresh.step == 0
    assert stats.read_text() == ""
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fresh.resume()


SAMPLE_SCRIPT = textwrap.dedent("""
    import sys, time, torch, ganfast

    class SlowG(torch.nn.Module):
        z_dim = 8

        def __init__(self, delay):
            super().__init__()
            torch.manual_seed(0)
            self.fc, self.delay = torch.nn.Linear(8, 3 * 16), delay

        def forward(self, z, truncation_psi=1.0, noise_mode="const"):
            time.sleep(self.delay)
            return torch.tanh(self.fc(z)).view(-1, 3, 4, 4)

    ganfast.write_samples(SlowG(float(sys.argv[2])), "0-79", sys.argv[1], fmt=sys.argv[3], batch_size=2,
                          shard_size=4, progress=False)
""")


@pytest.mark.parametrize("fmt,pattern", [("png", "*.png"), ("npz", "*.npz"), ("webdataset", "*.tar")])
def test_sampling_killed_repeatedly_resumes(tmp_path, fmt, pattern):
    script, out = tmp_path / "sample.py", tmp_path / "out"
    script.write_text(SAMPLE_SCRIPT)
    rng = random.Random(fmt)
    count = lambda: len(list(out.rglob(pattern)))
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(out), "0.02", fmt])
        target = count() + rng.randint(1, 4)
        _wait_for(lambda: count() >= target, proc)
        assert proc.poll() is None, "the run finished before it could be killed"
        _kill(proc)
    subprocess.run([sys.executable, str(script), str(out), "0", fmt], check=True, timeout=300)
    namespace: dict = {}
    exec(SAMPLE_SCRIPT.split("ganfast.write_samples")[0], namespace)
    expected = np.concatenate([b.images for b in ganfast.sample(namespace["SlowG"](0.0), "0-79")])
    if fmt == "png":
        files = sorted(out.rglob("*.png"))
        assert [f.name for f in files] == [f"seed{s:08d}.png" for s in range(80)]
        got = np.stack([np.asarray(Image.open(f)) for f in files])
    elif fmt == "npz":
        got, seeds = [], []
        for f in sorted(out.glob("*.npz")):
            with np.load(f) as data:
                got.append(data["images"])
                seeds.append(data["seeds"])
        got = np.concatenate(got)
        np.testing.assert_array_equal(np.concatenate(seeds), np.arange(80))
    else:
        got, names = [], []
        for f in sorted(out.glob("*.tar")):
            with tarfile.open(f) as tar:
                names += tar.getnames()
                got += [np.asarray(Image.open(tar.extractfile(m))) for m in tar.getmembers() if m.name.endswith(".png")]
        assert names == [f"{s:08d}.{ext}" for s in range(80) for ext in ("png", "json")]
        got = np.stack(got)
    np.testing.assert_array_equal(got, expected)
    assert not _temp_files(out)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = small_trainer(tmp_path)
    trainer.train(6)
    path = tmp_path / "checkpoint.safetensors"
    before = path.read_bytes()
    trainer.train_step()
    monkeypatch.setattr(os, "fsync", _no_space)                  # the disk fills up while the file is written
    with pytest.raises(OSError, match=r"could not write .*checkpoint\.safetensors: No space left") as info:
        trainer.save()
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and not _temp_files(tmp_path)
    monkeypatch.undo()
    resumed = small_trainer(tmp_path)
    resumed.resume()
    assert resumed.step == 6


def test_full_disk_while_sampling(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _no_space)

    class ImageG(torch.nn.Module):
        z_dim = 4

        def forward(self, z, truncation_psi=1.0, noise_mode="const"):
            return torch.tanh(z[:, :3, None, None].expand(-1, 3, 2, 2))

    with pytest.raises(OSError, match="No space left") as info:
        ganfast.write_samples(ImageG(), "0-7", tmp_path, fmt="npz", shard_size=4, progress=False, workers=1)
    assert info.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir())                          # no partial shard or manifest, no temporary file


def _cli_error(argv, capsys) -> str:
    """What ``ganfast <argv>`` prints when it refuses its input (exit status 2, no traceback)."""
    from ganfast.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_unwritable_output_directory(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot create the output directory"):  # the API raises ...
        small_trainer(blocker / "run")
    message = _cli_error(["train", "--out", str(blocker / "run")] + TRAIN_ARGS, capsys)  # ... the CLI, one line
    assert re.match("ganfast train: error: .*cannot create the output directory", message)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if "readonly" in str(p) else real_access(p, mode))
    with pytest.raises(PermissionError, match="is not writable"):
        small_trainer(tmp_path / "readonly")
    assert "is not writable" in _cli_error(["train", "--out", str(tmp_path / "readonly")] + TRAIN_ARGS, capsys)


@pytest.mark.parametrize("args, message", [
    (["--steps", "-1"], "argument --steps: must be >= 1, got '-1'"),
    (["--tick", "0"], "argument --tick: must be >= 1, got '0'"),
    (["--snapshot-ticks", "0"], "argument --snapshot-ticks: must be >= 1"),
    (["--batch-size", "x"], "argument --batch-size: expected an integer, got 'x'"),
    (["--lr", "nan"], "argument --lr: must be a finite number, got 'nan'"),
    (["--r1-gamma", "-1"], "argument --r1-gamma: must be >= 0"),
    (["--kimg", "0"], "argument --kimg: must be > 0"),
    (["--lr", "inf"], "argument --lr: must be a finite number, got 'inf'"),
    (["--steps", "0"], "argument --steps: must be >= 1"),
    (["--seed", "99999999999999"], "argument --seed: must be >= 0 and <= 4294967295"),
    (["--batch-size", "100000"], "ganfast train: error: batch_size (100000) exceeds the data set size"),
])
def test_cli_refuses_bad_values_naming_them(tmp_path, capsys, args, message):
    argv = ["train", "--dataset", "ring8", "--out", str(tmp_path / "run"), "--no-progress"] + args
    assert message in _cli_error(argv, capsys)


@pytest.mark.parametrize("field, value", [("tick_steps", 0), ("snapshot_ticks", 0), ("batch_size", 2.5),
                                          ("lr_g", float("nan")), ("r1_gamma", -1.0), ("betas", (0.5, 1.0)),
                                          ("betas", ("a", "b")), ("ema_rampup", 0.0), ("ema_rampup", "x"),
                                          ("bf16", "no"), ("seed", 1.5), ("loss", "hinged")])
def test_train_config_names_the_bad_field(field, value):
    from ganfast.train.trainer import TrainConfig
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_train_config_takes_numpy_and_torch_scalars(tmp_path):
    from ganfast.train.trainer import TrainConfig
    cfg = TrainConfig(batch_size=np.int64(16), lr_g=np.float32(1e-3), lr_d=torch.tensor(2e-3),
                      tick_steps=torch.tensor(3), betas=[0.0, np.float64(0.99)], bf16=np.bool_(False))
    assert (cfg.batch_size, cfg.tick_steps, cfg.betas) == (16, 3, (0.0, 0.99)) and type(cfg.batch_size) is int
    assert cfg.lr_g == pytest.approx(1e-3) and type(cfg.lr_d) is float and cfg.bf16 is False
    trainer = small_trainer(tmp_path)
    trainer.train(np.int64(1))
    assert trainer.step == 1
    with pytest.raises(ValueError, match="total_steps must be an integer >= 0, got 2.0"):
        trainer.train(2.0)


# -- hostile files: checkpoints --------------------------------------------------------------------------------

