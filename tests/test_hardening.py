"""Hardening: kill -9 and resume (training, sampling), a full disk and unwritable output, tampered checkpoints and
hostile model arguments, hostile data sets (zip slip, links out of a folder, broken images, bombs, pickled arrays),
sizes past 2**31 elements and CUDA's grid limits. Memory growth, two threads and CUDA-graph capture of the ops are
in test_op_resources.py."""
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
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save

import ganfast
from ganfast.models import MLPGenerator
from ganfast.models._spec import model_spec
from ganfast.train.checkpoint import FORMAT, load_checkpoint, load_generator, save_checkpoint, tensor_digest
from support import DEVICE, available_impls

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
def _generator_checkpoint(path: Path, G=None, spec=None) -> Path:
    G = G or MLPGenerator(z_dim=4, hidden=8, depth=1)
    opt = torch.optim.Adam(G.parameters())
    G(torch.randn(2, 4)).sum().backward()
    opt.step()
    save_checkpoint(str(path), {"G_ema": G}, {"opt": opt}, {"models": {"G": spec or model_spec(G)}})
    return path


def _header_span(blob: bytes) -> tuple[int, int]:
    return 8, 8 + int.from_bytes(blob[:8], "little")


def _loaders(path):
    G = MLPGenerator(z_dim=4, hidden=8, depth=1)
    yield lambda: load_generator(path)
    yield lambda: load_checkpoint(str(path), {"G_ema": G}, {"opt": torch.optim.Adam(G.parameters())},
                                  restore_rng=False)


def test_checkpoint_loads_back(tmp_path):
    path = _generator_checkpoint(tmp_path / "ok.safetensors")
    G = load_generator(path)
    assert isinstance(G, MLPGenerator) and not G.training
    for load in _loaders(path):
        load()


@pytest.mark.parametrize("damage", ["header_length", "header_not_json", "metadata_not_json", "format", "truncated",
                                    "truncated_header", "empty"])
def test_damaged_checkpoint_gives_clear_error(tmp_path, damage):
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    blob = bytearray(path.read_bytes())
    start, end = _header_span(blob)
    if damage == "header_length":
        blob[:8] = (len(blob) * 4).to_bytes(8, "little")
    elif damage == "header_not_json":
        blob[start] = ord("x")
    elif damage == "metadata_not_json":
        at = blob.index(b'"ganfast":"{', start) + len('"ganfast":"')
        blob[at] = ord("[")
    elif damage == "format":
        at = blob.index(FORMAT.encode(), start)
        blob[at + len("ganfast-checkpoint-")] = ord("9")
    elif damage == "truncated":
        blob = blob[:end + (len(blob) - end) // 2]
    elif damage == "truncated_header":
        blob = blob[:end // 2]
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))
    for load in _loaders(path):
        with pytest.raises(ValueError, match="checkpoint: "):
            load()


def test_random_header_flips_never_crash(tmp_path):
    """A flipped byte in the header or metadata either still loads (e.g. a float in the optimizer's settings
    changed) or raises a ValueError naming the checkpoint: never another exception, never an unpickling."""
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    clean = path.read_bytes()
    start, end = _header_span(clean)
    rng = random.Random(0)
    errors = 0
    for _ in range(40):
        blob = bytearray(clean)
        at = rng.randrange(start, end)
        blob[at] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(blob))
        for load in _loaders(path):
            try:
                load()
            except ValueError as exc:
                assert str(exc).startswith("checkpoint: "), exc
                errors += 1
    assert errors > 20


def test_checkpoint_with_wrong_shapes_or_foreign_class(tmp_path):
    small = MLPGenerator(z_dim=4, hidden=8, depth=1)
    wrong = _generator_checkpoint(tmp_path / "wrong.safetensors", G=MLPGenerator(z_dim=4, hidden=16, depth=1),
                                  spec=model_spec(small))     # weights of another size than the spec says
    generator, checkpoint = _loaders(wrong)
    with pytest.raises(ValueError, match=r"model spec for G does not fit its weights \(.*'net.0.weight'"):
        generator()
    with pytest.raises(ValueError, match="(?s)does not fit 'G_ema'.*size mismatch"):
        checkpoint()
    for name in ("Trainer", "os.system", "BuildableModule", "Module", "__builtins__"):
        path = _generator_checkpoint(tmp_path / f"{name}.safetensors", spec={"class": name, "kwargs": {}})
        with pytest.raises(ValueError, match=f"names '{re.escape(name)}', which is not a model in ganfast.models"):
            load_generator(path)
    path = _generator_checkpoint(tmp_path / "kwargs.safetensors",
                                 spec={"class": "MLPGenerator", "kwargs": {"evil": "__import__('os')"}})
    with pytest.raises(ValueError, match="unusable model spec"):
        load_generator(path)
    meta = {"format": "ganfast-checkpoint-1", "optimizers": {}, "extra": {"models": "G"}}
    (tmp_path / "meta.safetensors").write_bytes(save({"x": torch.zeros(1)}, metadata={"ganfast": json.dumps(meta)}))
    with pytest.raises(ValueError, match="no model spec"):
        load_generator(tmp_path / "meta.safetensors")


def _rewrite(path: Path, change) -> None:
    """Rewrites a checkpoint after ``change(tensors, meta)`` edits its tensors and parsed metadata in place."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["ganfast"])
    change(tensors, meta)
    path.write_bytes(save(tensors, metadata={"ganfast": json.dumps(meta)}))


def test_changed_tensor_values_fail_their_digest(tmp_path):
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    blob = bytearray(path.read_bytes())
    start, end = _header_span(blob)
    first, _ = json.loads(blob[start:end])["G_ema/net.0.weight"]["data_offsets"]
    blob[end + first + 1] ^= 0x10                               # one bit of a weight
    path.write_bytes(bytes(blob))
    for load in _loaders(path):
        with pytest.raises(ValueError, match="is damaged: tensor '.*' fails its SHA-256 check"):
            load()


@pytest.mark.parametrize("change", ["tensor_added", "digest_removed", "digests_missing", "digest_not_str"])
def test_tensors_and_digests_must_agree(tmp_path, change):
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    edits = {"tensor_added": lambda t, m: t.update({"G_ema/extra": torch.zeros(2)}),
             "digest_removed": lambda t, m: m["digests"].pop("G_ema/net.0.bias"),
             "digests_missing": lambda t, m: m.pop("digests"),
             "digest_not_str": lambda t, m: m["digests"].update({"G_ema/net.0.bias": 7})}
    _rewrite(path, edits[change])
    message = {"tensor_added": "tensors and its digests differ|spec for G does not fit its weights",
               "digest_removed": "tensors and its digests differ"}.get(change, "'digests'")
    for load in _loaders(path):
        with pytest.raises(ValueError, match=message):
            load()


def test_first_format_loads_unverified(tmp_path):
    """Checkpoints written before digests existed (format 1) still load."""
    G = MLPGenerator(z_dim=4, hidden=8, depth=1)
    path = _generator_checkpoint(tmp_path / "old.safetensors", G=G)

    def first_format(tensors, meta):
        del meta["digests"]
        meta["format"] = "ganfast-checkpoint-1"
    _rewrite(path, first_format)
    loaded = load_generator(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), G.state_dict().values()))


_MLP = {"z_dim": 4, "hidden": 8, "depth": 1}


@pytest.mark.parametrize("spec, message", [
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "hidden": 10 ** 7}}, "argument beyond any model's: 10000000"),
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "depth": 10 ** 9}}, "argument beyond any model's"),
    ({"class": "StyleGAN2Generator", "kwargs": {"num_fp16_res": -1e308}}, "argument beyond any model's"),
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "z_dim": [[[[[1]]]]]}}, "argument beyond any model's"),
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "hidden": 1 << 20}}, "does not fit its weights"),
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "depth": 1 << 20}}, "registers more than 72 parameters and buffers"),
    ({"class": "StyleGAN2Generator", "kwargs": {"channel_base": 0}}, "unusable model spec for G: ZeroDivisionError"),
])
def test_hostile_model_arguments_allocate_nothing(tmp_path, spec, message):
    """Arguments that would need terabytes, 10^9 layers or huge numbers are refused before anything is built;
    sane-looking ones are sized on the meta device (a 2^20-wide layer of 4 TiB, 2^20 layers: refused after 72
    registrations) and must match the stored weights; arithmetic errors on them are ValueErrors too."""
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors", spec=spec)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        load_generator(path)
    assert time.perf_counter() - started < 5


def test_weights_in_another_dtype_are_refused(tmp_path):
    """Weights stored as uint8 (digests rewritten to match) would load lossily as float32: refused."""
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")

    def to_bytes(tensors, meta):
        key = "G_ema/net.0.weight"
        tensors[key] = tensors[key].to(torch.uint8)
        meta["digests"][key] = tensor_digest(tensors[key])
    _rewrite(path, to_bytes)
    for load in _loaders(path):
        with pytest.raises(ValueError, match="stores G_ema/net.0.weight as torch.uint8, but the model holds "
                                             "torch.float32"):
            load()


def test_loaded_state_does_not_follow_the_file(tmp_path):
    """Tensors are copied out of the file: rewriting it afterwards changes nothing already loaded."""
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    G = MLPGenerator(z_dim=4, hidden=8, depth=1)
    opt = torch.optim.Adam(G.parameters())
    load_checkpoint(str(path), {"G_ema": G}, {"opt": opt}, restore_rng=False)
    before = [t.clone() for t in (*G.state_dict().values(), *opt.state[next(iter(opt.state))].values())]
    with open(path, "r+b") as f:                                 # in place: a memory map would see it
        start, end = _header_span(f.read())
        f.seek(end)
        f.write(bytes(os.path.getsize(path) - end))
    after = [*G.state_dict().values(), *opt.state[next(iter(opt.state))].values()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_registration_budget_counts_only_its_own_thread():
    from concurrent.futures import ThreadPoolExecutor

    from ganfast.train.checkpoint import _registration_budget
    with _registration_budget(2):
        with ThreadPoolExecutor(1) as pool:                       # another thread's modules are not counted
            assert pool.submit(lambda: torch.nn.Linear(3, 3)).result().weight.shape == (3, 3)
        torch.nn.Linear(3, 3)                                    # weight and bias: 2 registrations
        with pytest.raises(ValueError, match="registers more than 2"):
            torch.nn.Linear(3, 3)


@pytest.mark.parametrize("model", ["StyleGAN2Generator", "SNGANGenerator", "DCGANGenerator"])
def test_every_generator_round_trips(tmp_path, model):
    import ganfast.models
    G = getattr(ganfast.models, model)()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(str(path), {"G_ema": G}, {}, {"models": {"G": model_spec(G)}})
    loaded = load_generator(path)
    assert type(loaded) is type(G)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), G.state_dict().values()))


def test_nothing_in_ganfast_unpickles():
    """No ``pickle``, no ``torch.load`` without ``weights_only=True``, no ``np.load(allow_pickle=True)``."""
    sources = sorted(Path(ganfast.__file__).parent.rglob("*.py"))
    assert len(sources) > 20
    for source in sources:
        text = source.read_text()
        assert not re.search(r"\b(c?pickle|dill|marshal|shelve)\b", text), source
        assert "allow_pickle=True" not in text and "weights_only=False" not in text, source
        for call in re.finditer(r"torch\.load\(", text):
            args = text[call.end():text.find(")", call.end())]
            assert "weights_only=True" in args, f"{source}: torch.load without weights_only=True"


# -- hostile files: data sets ------------------------------------------------------------------------------------
def _png_bytes(value: int, side: int = 4, fmt: str = "PNG") -> bytes:
    import io
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side), value, np.uint8), "L").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["../escape.png", "a/../../escape.png", "/etc/escape.png", "C:/escape.png",
                                  "..\\escape.png"])
def test_zip_slip_is_refused(tmp_path, name):
    from ganfast.data import load_dataset
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.png", _png_bytes(10))
        zf.writestr(zipfile.ZipInfo(name), _png_bytes(20))
    assert name in zipfile.ZipFile(path).namelist()
    with pytest.raises(ValueError, match="escapes the archive root"):
        load_dataset(str(path), resolution=16)


def test_zip_with_safe_names_loads(tmp_path):
    from ganfast.data import load_dataset
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/one.png", _png_bytes(0))
        zf.writestr("two..png", _png_bytes(255))               # '..' inside a name is harmless
    data = load_dataset(str(path), resolution=16).data
    assert data.shape == (2, 1, 16, 16) and data.dtype == torch.uint8 and data[0].max() == 0 and data[1].min() == 255


def test_folder_links_out_of_the_root(tmp_path):
    from ganfast.data import load_dataset
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.png").write_bytes(_png_bytes(0))
    (outside / "secret.png").write_bytes(_png_bytes(255))
    (root / "sub" / "inside-link.png").symlink_to(root / "a.png")      # a link within the root is fine
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)  # folder links are not followed
    assert load_dataset(str(root), resolution=16).data.shape == (2, 1, 16, 16)
    (root / "b.png").symlink_to(outside / "secret.png")
    with pytest.raises(ValueError, match="outside the data folder"):
        load_dataset(str(root), resolution=16)


@pytest.mark.parametrize("damage", ["truncated", "not_an_image", "other_format", "bomb"])
@pytest.mark.parametrize("container", ["folder", "zip"])
def test_broken_or_oversized_images_name_the_file(tmp_path, monkeypatch, damage, container):
    """A truncated image, a non-image or a picture of another format (a GIF) with a PNG's name, or one of more
    pixels than Pillow's decompression-bomb limit (lowered here to 100 for a 16×16 picture) is a ValueError
    naming the file."""
    from ganfast.data import load_dataset
    png = _png_bytes(7, side=16)
    bad = {"truncated": png[:len(png) // 2 + 8], "not_an_image": b"not an image at all",
           "other_format": _png_bytes(7, side=16, fmt="GIF"), "bomb": png}[damage]
    if damage == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    if container == "folder":
        path = tmp_path / "data"
        path.mkdir()
        (path / "good.png").write_bytes(_png_bytes(1))
        (path / "bad.png").write_bytes(bad)
    else:
        path = tmp_path / "data.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("good.png", _png_bytes(1))
            zf.writestr("bad.png", bad)
    with pytest.raises(ValueError, match=r"dataset: '[^']*bad\.png' is not a readable PNG/JPEG image"):
        load_dataset(str(path), resolution=16)


def test_zip_member_failing_its_crc_names_it(tmp_path):
    from ganfast.data import load_dataset
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:                      # stored: the PNG's bytes appear as they are
        zf.writestr("good.png", _png_bytes(1))
        zf.writestr("bad.png", _png_bytes(9, side=16))
    blob = bytearray(path.read_bytes())
    at = blob.rindex(b"IDAT") + 6
    blob[at] ^= 0x01                                            # inside bad.png's image data
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"'bad\.png' is not a readable PNG/JPEG image"):
        load_dataset(str(path), resolution=16)


def test_zip_bomb_member_is_refused(tmp_path, monkeypatch):
    from ganfast import data
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", _png_bytes(1))
        zf.writestr("huge.png", bytes(1 << 16))                 # 64 KiB of zeros, deflated to a few hundred bytes
    monkeypatch.setattr(data, "MAX_MEMBER_BYTES", 1 << 15)
    with pytest.raises(ValueError, match="'huge.png' of 65536 bytes uncompressed"):
        data.load_dataset(str(path), resolution=16)


@pytest.mark.parametrize("array, message", [
    (np.array([[0.0, np.nan]] * 4), "holds NaN or inf"),
    (np.full((4, 1, 8, 8), np.inf, np.float32), "holds NaN or inf"),
    (np.zeros((0, 2)), "non-empty array of real numbers"),
    (np.zeros((4, 2), np.complex64), "non-empty array of real numbers"),
    (np.full((4, 8, 8, 3), 255.0), r"values in \[255.0, 255.0\]; give uint8"),
    (np.full((4, 1, 8, 8), 300, np.uint16), r"values in \[300, 300\]; give uint8"),
])
def test_npz_arrays_that_would_train_on_garbage_are_refused(tmp_path, array, message):
    from ganfast.data import load_dataset
    np.savez(tmp_path / "data.npz", x=array)
    with pytest.raises(ValueError, match=message):
        load_dataset(str(tmp_path / "data.npz"), resolution=8)


def test_npz_images_in_zero_one_get_a_warning(tmp_path):
    from ganfast.data import load_dataset
    np.savez(tmp_path / "data.npz", x=np.full((4, 1, 8, 8), 0.5, np.float32))
    with pytest.warns(UserWarning, match=r"scale them to \[-1, 1\]"):
        load_dataset(str(tmp_path / "data.npz"), resolution=8)


def test_temporary_files_of_other_machines_are_kept(tmp_path):
    """A shared output folder: stale temporary files of this machine's dead processes go, another machine's
    (whose processes this one cannot see) stay."""
    from ganfast._io import TMP_MARK, remove_stale_temps, temp_path
    dead = 2 ** 22 + 12345                                       # beyond pid_max's default: no such process
    mine = temp_path(tmp_path / "a.npz")
    mine = mine.with_name(mine.name.rpartition("-")[0] + f"-{dead}")
    theirs, legacy = tmp_path / f".b.npz{TMP_MARK}other_host-{dead}", tmp_path / f".c.npz{TMP_MARK}{dead}"
    for f in (mine, theirs, legacy):
        f.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == 2
    assert [f.exists() for f in (mine, theirs, legacy)] == [False, True, False]


def test_pickled_npz_is_refused(tmp_path):
    from ganfast.data import load_dataset
    path = tmp_path / "data.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_dataset(str(path))


# -- large sizes -----------------------------------------------------------------------------------------------------
# Sizes past 2**31 elements, and grids past CUDA's 65535 programs on axes 1 and 2. Nothing here allocates more than
# a few MiB: logically huge inputs are expanded (stride-0) views, and grid limits are lowered by monkeypatching
# the launchers' MAX_GRID_YZ so that the grid-stride loops of the Triton kernels run on tiny shapes.
class _GridRecorder:
    """Stands in for a @triton.jit kernel: records each launch's grid, then launches the kernel."""

    def __init__(self, kernel):
        self.kernel, self.grids = kernel, []

    def __getitem__(self, grid):
        self.grids.append(tuple(grid))
        return self.kernel[grid]


def _record(monkeypatch, module, *names) -> dict:
    recorders = {name: _GridRecorder(getattr(module, name)) for name in names}
    for name, recorder in recorders.items():
        monkeypatch.setattr(module, name, recorder)
    return recorders


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_large_penalty_grids_walk_samples_and_grow_chunks(monkeypatch):
    """grad_penalty (forward, backward) and sample_lerp with more samples than grid axis 1 takes (the launchers'
    limit lowered to 3): the kernels stride over the samples; a sample longer than 3 chunks gets longer chunks."""
    from ganfast.ops import grad_penalty, sample_lerp
    from ganfast.reference.losses import grad_penalty as grad_penalty_ref
    from ganfast.reference.losses import sample_lerp as sample_lerp_ref
    from ganfast.triton import penalty
    monkeypatch.setattr(penalty, "MAX_GRID_YZ", 3)
    grids = _record(monkeypatch, penalty, "_grad_penalty_fwd_kernel", "_grad_penalty_bwd_kernel",
                    "_sample_lerp_fwd_kernel")
    for shape in [(7, 3, 5, 5), (2, 5 * penalty.REDUCE_CHUNK + 7)]:  # 7 samples; 2 samples of 5+ chunks
        g = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        term, norm = grad_penalty(g, center=1.0, impl="triton")
        want_term, want_norm = grad_penalty_ref(g, 1.0)
        assert _rel(term, want_term) < 1e-13 and _rel(norm, want_norm) < 1e-13
        w = torch.randn(shape[0], dtype=torch.float64)
        got, want = (torch.autograd.grad((w * t).sum(), g)[0] for t in (term, want_term))
        assert _rel(got, want) < 1e-12
    a, b, eps = torch.randn(7, 3, 4), torch.randn(7, 3, 4), torch.rand(7)
    assert _rel(sample_lerp(a, b, eps, impl="triton"), sample_lerp_ref(a, b, eps)) < 1e-6
    launched = [grid for recorder in grids.values() for grid in recorder.grids]
    assert len(launched) == 5 and all(grid[1] <= 3 for grid in launched), launched
    assert grids["_grad_penalty_fwd_kernel"].grids[1] == (2, 3)  # 5+ chunks' worth in 3 longer ones


def test_large_upfirdn2d_grid_walks_planes(monkeypatch):
    """Triton upfirdn2d with more (n, c) planes than grid axis 1 takes (limit lowered to 2): 2-D grid, planes
    grid-strided, several tiles per plane (tiles on axis 0, so wide images never meet the 65535 limit)."""
    from ganfast.ops import setup_filter, upfirdn2d
    from ganfast.reference.upfirdn2d import upfirdn2d as upfirdn2d_ref
    from ganfast.triton import upfirdn2d as triton_upfirdn2d
    monkeypatch.setattr(triton_upfirdn2d, "MAX_GRID_YZ", 2)
    grids = _record(monkeypatch, triton_upfirdn2d, "_upfirdn2d_fwd_kernel")["_upfirdn2d_fwd_kernel"].grids
    x = torch.randn(5, 1, 9, 70, dtype=torch.float64).to(memory_format=torch.channels_last)
    f = setup_filter([1, 3, 3, 1]).double()
    for kwargs in [dict(up=2, padding=[2, 1]), dict(down=2, padding=1)]:
        assert _rel(upfirdn2d(x, f, impl="triton", **kwargs), upfirdn2d_ref(x, f, **kwargs)) < 1e-13
    assert grids == [(6, 2), (1, 2)]  # 17x141 outputs: 2x3 tiles of 16x64; 4x35: one tile of 4x64


@pytest.mark.parametrize("impl", available_impls())
def test_upfirdn2d_many_tiles_per_plane(impl):
    """Outputs of several tiles in both directions for every kernel (CUDA tiles are at most 32x64, Triton's
    16x64): 69x151 from up=2, channels_last and contiguous."""
    from ganfast.ops import setup_filter, upfirdn2d
    from ganfast.reference.upfirdn2d import upfirdn2d as upfirdn2d_ref
    f = setup_filter([1, 3, 3, 1], device=DEVICE).double()
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 35, 75, dtype=torch.float64, device=DEVICE).to(memory_format=layout)
        y = upfirdn2d(x, f, up=2, padding=[2, 1], impl=impl)
        assert y.shape == (2, 3, 69, 151) and _rel(y, upfirdn2d_ref(x, f, up=2, padding=[2, 1])) < 1e-13


def test_large_upfirdn2d_of_an_expanded_input_past_2_pow_32_elements():
    """Triton upfirdn2d of an expanded (stride-0) input of 2·3·3·2**32 logical elements, downsampled by 2**28
    along x: sizes and o·down products past 2**31 (the polyphase math is 64-bit), nothing materialised. (The C++
    CPU kernel lays whole input rows out per task, so rows of 2**32 pixels are a MemoryError there.)"""
    from ganfast.ops import upfirdn2d
    values = torch.randn(1, 3, 1, 1, dtype=torch.float64)
    x = values.expand(2, 3, 3, 2**32)
    f = torch.tensor([0.25, 0.75], dtype=torch.float64)  # sums to 1: every output is its channel's value
    y = upfirdn2d(x, f, down=[2**28, 1], impl="triton")
    assert y.shape == (2, 3, 2, 16)
    assert torch.allclose(y, values.expand_as(y), rtol=1e-15, atol=0)


def test_large_modconv_sizes_take_the_torch_route(monkeypatch):
    """Planes or weights of 2**31 elements or more are beyond the Triton convolution kernels' 32-bit index
    products: supports()/weight_grad_supports() say so (meta tensors: nothing allocated), and with the limit
    lowered, the modulated convolution and its gradients still match the reference through the torch route."""
    from ganfast.ops import modulated_conv2d
    from ganfast.reference import modulated_conv2d as modulated_conv2d_ref
    from ganfast.triton import modulated_conv2d as triton_modconv
    meta = dict(device="meta")
    w3 = torch.empty(4, 3, 3, 3, **meta)
    assert triton_modconv.supports(torch.empty(2, 3, 64, 64, **meta), w3, 1, [1, 1], False, [0, 0])
    assert not triton_modconv.supports(torch.empty(1, 3, 2**16, 2**15, **meta), w3, 1, [1, 1], False, [0, 0])
    assert not triton_modconv.supports(torch.empty(1, 3, 2**16, 2**15 - 2, **meta), w3, 1, [0, 0], True, [0, 0])
    assert not triton_modconv.supports(torch.empty(1, 2**16, 4, 4, **meta), torch.empty(2**15, 2**16, 1, 1, **meta),
                                       1, [0, 0], False, [0, 0])
    assert not triton_modconv.weight_grad_supports(torch.empty(1, 3, 2**16, 2**15, **meta),
                                                   torch.empty(1, 4, 8, 8, **meta), (4, 3, 3, 3))
    calls = []
    monkeypatch.setattr(triton_modconv, "INT32_LIMIT", 30)  # every 5x7 plane now counts as too large
    for name in ("modconv", "weight_grad"):
        monkeypatch.setattr(triton_modconv, name, lambda *a, _name=name, **k: calls.append(_name))
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    out, ref = modulated_conv2d(x, w, s, padding=1, impl="triton"), modulated_conv2d_ref(x, w, s, padding=1)
    assert _rel(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, w, s), dy), torch.autograd.grad(ref, (x, w, s), dy)):
        assert _rel(got, want) < 1e-12
    assert calls == []


def test_large_modconv_flattened_grids(monkeypatch):
    """The Triton convolution kernels put (pixel tiles × channel tiles) on grid axis 0: several tiles of each
    (20 output channels, 6x7 pixels, 45 = I·kh·kw rows for 16-wide interpreter tiles), forward and gradients."""
    from ganfast.ops import modulated_conv2d
    from ganfast.reference import modulated_conv2d as modulated_conv2d_ref
    from ganfast.triton import modulated_conv2d as triton_modconv
    grids = _record(monkeypatch, triton_modconv, "_modconv_fwd_kernel", "_modconv_wgrad_kernel",
                    "_modconv_demod_kernel")
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(20, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(3, 1, 6, 7, dtype=torch.float64)
    out = modulated_conv2d(x, w, s, noise, padding=1, impl="triton")
    ref = modulated_conv2d_ref(x, w, s, noise, padding=1)
    assert _rel(out, ref) < 1e-12
    dy = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, w, s), dy), torch.autograd.grad(ref, (x, w, s), dy)):
        assert _rel(got, want) < 1e-12
    launched = {name: recorder.grids for name, recorder in grids.items()}
    assert (6, 1, 3) in launched["_modconv_fwd_kernel"]         # 3 pixel tiles (42 of 16) x 2 channel tiles
    assert (6,) in launched["_modconv_demod_kernel"]            # 3 samples x 2 channel tiles
    assert {grid[0] for grid in launched["_modconv_wgrad_kernel"]} == {6}  # 2 channel tiles x 3 K tiles (45 of 16)


@pytest.mark.skipif(not ganfast._ext.cuda_compiled(), reason="the extension was built without CUDA")
def test_large_cuda_launchers_reject_what_one_grid_cannot_hold():
    """The CUDA launchers check sizes before touching the device: a clear ValueError, never a wrapped grid."""
    from ganfast import _ext
    with pytest.raises(ValueError, match="batch too large"):
        _ext._C.grad_penalty_fwd_cuda(0, 2**31, 1, -1.0, 8, 8, 8, 0, 0)
    with pytest.raises(ValueError, match="too many weights"):
        _ext._C.spectral_norm_cuda(0, 2**31, 8, 8, 0, 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error path where no GPU is usable")
@pytest.mark.skipif(not ganfast._ext.cuda_compiled(), reason="the extension was built without CUDA")
def test_large_cuda_launchers_raise_clear_errors_without_a_device():
    """Every CUDA entry point turns a failing CUDA call into a RuntimeError naming the call (no crash, no
    silent no-op)."""
    from ganfast import _ext
    calls = {
        "bias_act_cuda": (0, 2, 0, 4, 1, 1, 0.2, 1.0, -1.0, 8, 8, 0, 0, 0, 0),
        "upfirdn2d_cuda": (0, [1, 1, 2, 2, 2, 2], [1, 1, 1, 1], [0, 0], [1, 1], [4, 4, 2, 1], [4, 4, 2, 1], 8, 8, 8),
        "grad_penalty_fwd_cuda": (0, 2, 2, -1.0, 8, 8, 8),
        "grad_penalty_bwd_cuda": (0, 2, 2, -1.0, 8, 8, 8, 8, 8),
        "spectral_norm_cuda": (0, 1, 8, 8),
    }
    for name, args in calls.items():
        with pytest.raises(RuntimeError, match="ganfast CUDA error in"):
            getattr(_ext._C, name)(*args, 0, 0)
