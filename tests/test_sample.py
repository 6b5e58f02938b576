"""Sampling: determinism (batch size, shards), every format read back, resume after an interrupted or killed
run, and the errors bad arguments get."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import ganfast
from ganfast import _ext
from ganfast.sampling import parse_seeds, parse_shard, seed_latents

TINY_G = textwrap.dedent("""
    import time
    import torch

    class TinyG(torch.nn.Module):
        '''z (N, 8) -> images (N, C, 4, 5) in [-1, 1]; sleeps per call when asked (to be killed mid-run).'''
        z_dim = 8

        def __init__(self, channels=3, delay=0.0):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(8, channels * 20)
            self.channels, self.delay = channels, delay

        def forward(self, z, truncation_psi=1.0, noise_mode="const"):
            time.sleep(self.delay)
            return torch.tanh(2 * self.fc(z * truncation_psi)).view(-1, self.channels, 4, 5)
""")
namespace: dict = {}
exec(TINY_G, namespace)
TinyG = namespace["TinyG"]


def _all_images(batches):
    seeds, images = zip(*((b.seeds, b.images) for b in batches))
    return np.concatenate(seeds), np.concatenate(images)


def _npz_contents(out):
    seeds, images = [], []
    for path in sorted(out.glob("*.npz")):
        with np.load(path) as data:
            seeds.append(data["seeds"])
            images.append(data["images"])
    return np.concatenate(seeds), np.concatenate(images)


def test_latents_follow_numpy_randomstate():
    z = seed_latents([0, 7], 8)
    assert z.dtype == torch.float32
    np.testing.assert_array_equal(z[1].numpy(), np.random.RandomState(7).randn(8).astype(np.float32))


EDGE_SEEDS = [0, 1, 2, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1] + [int(s) for s in
                                                             np.random.default_rng(5).integers(0, 2 ** 32, 200)]


@pytest.mark.skipif(not _ext.loaded(), reason="the compiled latents need the extension")
@pytest.mark.parametrize("z_dim", [1, 2, 7, 512, 513])
def test_compiled_latents_bit_exact_with_numpy(z_dim):
    """The extension's MT19937 + polar Gaussian against RandomState.randn, in float64 (every bit of NumPy's value)
    and through seed_latents (float32), over edge and random seeds."""
    want = np.stack([np.random.RandomState(s).randn(z_dim) for s in EDGE_SEEDS])
    seeds = torch.tensor(EDGE_SEEDS, dtype=torch.int64)
    got = torch.empty(len(EDGE_SEEDS), z_dim, dtype=torch.float64)
    _ext._C.seed_latents_cpu(seeds.data_ptr(), len(EDGE_SEEDS), z_dim, _ext.DTYPE_CODES[torch.float64],
                             got.data_ptr())
    np.testing.assert_array_equal(got.numpy().view(np.uint64), want.view(np.uint64))
    np.testing.assert_array_equal(seed_latents(EDGE_SEEDS, z_dim).numpy(), want.astype(np.float32))


@pytest.mark.skipif(not _ext.loaded(), reason="the compiled draws need the extension")
@pytest.mark.parametrize("high", [1, 2, 10, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 3 * 2 ** 40 + 7, 2 ** 63 - 1])
def test_compiled_randint_bit_exact_with_numpy(high):
    """RandomState([seed, stream]).randint(high) (init_by_array seeding, masked rejection with 32- and 64-bit
    draws), over edge and random seeds and three streams; and seed_classes with and without the extension."""
    seeds = torch.tensor(EDGE_SEEDS, dtype=torch.int64)
    for stream in (ganfast.sampling.LABEL_STREAM, 0, 2 ** 32 - 1):
        want = np.array([np.random.RandomState([s, stream]).randint(high) for s in EDGE_SEEDS])
        got = torch.empty(len(EDGE_SEEDS), dtype=torch.int64)
        _ext._C.seed_randint_cpu(seeds.data_ptr(), len(EDGE_SEEDS), stream, high, got.data_ptr())
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.skipif(not _ext.loaded(), reason="the compiled draws need the extension")
def test_compiled_seed_classes_match_numpy(monkeypatch):
    from ganfast.sampling import seed_classes
    counts = [[1], [5, 0, 3], [1] * 10, [2 ** 40, 1, 2 ** 33]]
    compiled = [seed_classes(EDGE_SEEDS, c) for c in counts]
    monkeypatch.setattr(_ext, "_C", None)
    for c, got in zip(counts, compiled):
        np.testing.assert_array_equal(got, seed_classes(EDGE_SEEDS, c))
    with pytest.raises(ValueError, match="Seed must be between 0 and 2"):
        seed_classes([2 ** 32], [1, 1])


@pytest.mark.skipif(not _ext.loaded(), reason="the compiled draws need the extension")
def test_compiled_randint_refuses_bad_arguments():
    from ganfast.sampling import seed_classes
    with pytest.raises(ValueError, match="seed_randint: seed 4294967296 is outside"):
        seed_classes([1, 2 ** 32], [1, 1])
    seeds, out = torch.zeros(1, dtype=torch.int64), torch.empty(1, dtype=torch.int64)
    for stream, high, match in ((0, 0, "high must be >= 1"), (2 ** 32, 1, "stream 4294967296 is outside")):
        with pytest.raises(ValueError, match=match):
            _ext._C.seed_randint_cpu(seeds.data_ptr(), 1, stream, high, out.data_ptr())


def test_latents_without_the_extension_use_numpy(monkeypatch):
    monkeypatch.setattr(_ext, "_C", None)
    z = seed_latents([3, 2 ** 32 - 1], 5)
    np.testing.assert_array_equal(z.numpy(), np.stack([np.random.RandomState(s).randn(5) for s in (3, 2 ** 32 - 1)])
                                  .astype(np.float32))


@pytest.mark.skipif(not _ext.loaded(), reason="the compiled latents need the extension")
def test_compiled_latents_refuse_bad_seeds():
    seeds = torch.tensor([2 ** 32], dtype=torch.int64)
    out = torch.empty(1, 4)
    with pytest.raises(ValueError, match="seed 4294967296 is outside"):
        _ext._C.seed_latents_cpu(seeds.data_ptr(), 1, 4, _ext.DTYPE_CODES[torch.float32], out.data_ptr())


def test_batch_size_does_not_change_the_images():
    G = TinyG()
    seeds_a, images_a = _all_images(ganfast.sample(G, "0-12", batch_size=1))
    seeds_b, images_b = _all_images(ganfast.sample(G, range(13), batch_size=5))
    assert images_a.shape == (13, 4, 5, 3) and images_a.dtype == np.uint8
    np.testing.assert_array_equal(seeds_a, np.arange(13))
    np.testing.assert_array_equal(images_a, images_b)
    assert len(np.unique(images_a.reshape(13, -1), axis=0)) == 13  # different seeds, different images
    assert G.training  # the caller's mode is restored



@pytest.mark.parametrize("threads", [1, 2])
def test_no_image_comes_from_the_first_forward(threads):
    """A generator whose first forward in each thread rounds differently (as a process's first forward may:
    README, "Determinism") still samples the images of its later forwards: a discarded batch-1 forward runs first,
    at 1 and at 2 torch threads."""
    class FirstForwardOff(TinyG):
        def __init__(self):
            super().__init__()
            self.calls = []  # (thread, batch)

        def forward(self, z, truncation_psi=1.0, noise_mode="const"):
            first = threading.get_ident() not in {t for t, _ in self.calls}
            self.calls.append((threading.get_ident(), len(z)))
            images = super().forward(z, truncation_psi, noise_mode)
            return images + 0.02 if first else images  # 2.55 pixel levels

    G, saved = FirstForwardOff(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, first = _all_images(ganfast.sample(G, range(6), batch_size=4))
        _, later = _all_images(ganfast.sample(G, range(6), batch_size=4))
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(saved)
    np.testing.assert_array_equal(first, later)
    np.testing.assert_array_equal(first, _all_images(ganfast.sample(TinyG(), range(6), batch_size=4))[1])
    firsts = {}
    for thread, batch in G.calls:
        firsts.setdefault(thread, batch)
    assert set(firsts.values()) == {1}
    assert [b for _, b in G.calls] == [1, 4, 2] * 2


def _at_threads(threads, fn):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(saved)


def test_thread_count_does_not_change_the_bits():
    """At 2 or 3 torch threads the same bytes as at 1 thread, in seed order (a folded DCGAN; a StyleGAN2 with
    per-seed random layer noise); the caller's thread count is left as it was."""
    from ganfast.models import StyleGAN2Generator
    dcgan = _dcgan_with_running_stats().eval()
    torch.manual_seed(1)
    stylegan = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=16, channel_max=8, mapping_layers=1)
    with torch.no_grad():
        for p in stylegan.parameters():
            p.add_(torch.randn_like(p), alpha=0.3)  # noise strengths not 0
    for G, kw in ((dcgan, {}), (stylegan, {"noise_mode": "random"})):
        want = _at_threads(1, lambda: _all_images(ganfast.sample(G, range(11), batch_size=4, **kw)))
        for threads in (2, 3):
            seeds, images = _at_threads(threads, lambda: _all_images(ganfast.sample(G, range(11), batch_size=4, **kw)))
            np.testing.assert_array_equal(seeds, want[0])
            np.testing.assert_array_equal(images, want[1])
            assert _at_threads(threads, torch.get_num_threads) == threads


def test_reproducible_algorithms_on_cuda_only_and_restored():
    """While G runs on CUDA: cuDNN benchmark off, deterministic algorithms on (warn-only unless already strict),
    no NaN fill; the settings before are restored; on other devices nothing changes."""
    from ganfast.sampling import reproducible_algorithms
    cudnn, fill = torch.backends.cudnn, torch.utils.deterministic
    before = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), fill.fill_uninitialized_memory)
    try:
        cudnn.benchmark, cudnn.deterministic = True, False
        torch.use_deterministic_algorithms(False)
        with reproducible_algorithms(torch.device("cpu")):
            assert cudnn.benchmark and not cudnn.deterministic and not torch.are_deterministic_algorithms_enabled()
        with reproducible_algorithms(torch.device("cuda")):
            assert not cudnn.benchmark and cudnn.deterministic and not fill.fill_uninitialized_memory
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert cudnn.benchmark and not cudnn.deterministic and not torch.are_deterministic_algorithms_enabled()
        assert fill.fill_uninitialized_memory
        torch.use_deterministic_algorithms(True)  # already strict: stays strict, and on afterwards
        with pytest.raises(RuntimeError, match="boom"), reproducible_algorithms(torch.device("cuda")):
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
            raise RuntimeError("boom")
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert cudnn.benchmark
    finally:
        cudnn.benchmark, cudnn.deterministic, fill.fill_uninitialized_memory = before[0], before[1], before[4]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])

def test_compiled_sampling_is_per_seed_deterministic():
    """torch.compile'd G: an image still depends on its seed alone (not the batch it was in), and matches eager."""
    G = TinyG()
    _, eager = _all_images(ganfast.sample(G, range(7), batch_size=7, compile=False))
    _, compiled_a = _all_images(ganfast.sample(G, range(7), batch_size=4, compile=True))
    _, compiled_b = _all_images(ganfast.sample(G, range(7), batch_size=3, compile=True))
    np.testing.assert_array_equal(compiled_a, compiled_b)
    np.testing.assert_array_equal(compiled_a, eager)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("backend exploded")
    monkeypatch.setattr(torch, "compile", lambda G: broken)
    G = TinyG()
    with pytest.warns(RuntimeWarning, match="torch.compile of TinyG failed .*backend exploded.*eagerly"):
        _, images = _all_images(ganfast.sample(G, range(5), batch_size=2, compile=True))
    np.testing.assert_array_equal(images, _all_images(ganfast.sample(G, range(5), compile=False))[1])


def test_sampling_defaults():
    """batch 256 and no compile on a CPU (measured: see ganfast.sampling)."""
    from ganfast import sampling
    assert sampling.batch_size_for(TinyG(), None) == 256 and sampling.batch_size_for(TinyG(), 3) == 3
    with pytest.raises(ValueError, match="batch_size"):
        sampling.batch_size_for(TinyG(), 0)
    assert not sampling.sample_options(TinyG(), num_seeds=10 ** 6).compile


def test_truncation_is_passed_and_checked():
    G = TinyG()
    _, plain = _all_images(ganfast.sample(G, "0-3"))
    _, truncated = _all_images(ganfast.sample(G, "0-3", truncation_psi=0.5))
    assert not np.array_equal(plain, truncated)

    class NoTruncation(torch.nn.Module):
        z_dim = 8

        def forward(self, z):
            return z.view(-1, 1, 2, 4)
    with pytest.raises(ValueError, match="truncation_psi"):
        ganfast.sample(NoTruncation(), "0-3", truncation_psi=0.7)


def test_shards_partition_the_set(tmp_path):
    G = TinyG()
    whole = ganfast.write_samples(G, "0-24", tmp_path / "whole", fmt="npz", shard_size=4, progress=False)
    assert whole.images == 25 and whole.skipped == 0
    for i in range(3):
        ganfast.write_samples(G, "0-24", tmp_path / "split", fmt="npz", shard=f"{i}/3", shard_size=4,
                              batch_size=3, progress=False)
    seeds_w, images_w = _npz_contents(tmp_path / "whole")
    seeds_s, images_s = _npz_contents(tmp_path / "split")
    np.testing.assert_array_equal(seeds_w, np.arange(25))
    np.testing.assert_array_equal(seeds_s, seeds_w)  # union == whole set, nothing twice
    np.testing.assert_array_equal(images_s, images_w)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_and_webdataset_read_back(tmp_path, channels):
    G = TinyG(channels)
    _, expected = _all_images(ganfast.sample(G, "998-1001"))
    ganfast.write_samples(G, "998-1001", tmp_path / "png", fmt="png", progress=False)
    for seed, image in zip(range(998, 1002), expected):
        path = tmp_path / "png" / f"{seed // 1000:05d}" / f"seed{seed:08d}.png"
        decoded = np.asarray(Image.open(path))
        np.testing.assert_array_equal(decoded.reshape(image.shape), image)
    ganfast.write_samples(G, "998-1001", tmp_path / "wds", fmt="webdataset", shard_size=3, truncation_psi=1.0,
                          progress=False)
    with tarfile.open(tmp_path / "wds" / "seeds00000998-00001000.tar") as tar:
        names = tar.getnames()
        assert names == ["00000998.png", "00000998.json", "00000999.png", "00000999.json", "00001000.png",
                         "00001000.json"]
        meta = json.load(tar.extractfile("00000999.json"))
        decoded = np.asarray(Image.open(tar.extractfile("00000999.png")))
    assert meta == {"seed": 999, "truncation_psi": 1.0, "noise_mode": "const"}  # what G was called with
    np.testing.assert_array_equal(decoded.reshape(expected[1].shape), expected[1])
    assert (tmp_path / "wds" / "seeds00001001-00001001.tar").exists()


def test_rerun_after_failure_finishes_the_rest(tmp_path):
    class FailingG(TinyG):
        calls = 0

        def forward(self, z, truncation_psi=1.0, noise_mode="const"):
            FailingG.calls += 1
            if FailingG.calls == 8:
                raise RuntimeError("simulated crash")
            return super().forward(z, truncation_psi, noise_mode)

    with pytest.raises(RuntimeError, match="simulated crash"):
        ganfast.write_samples(FailingG(), "0-19", tmp_path, fmt="npz", shard_size=2, batch_size=2, progress=False)
    done_before = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert 0 < len(done_before) < 10
    report = ganfast.write_samples(TinyG(), "0-19", tmp_path, fmt="npz", shard_size=2, batch_size=2,
                                   progress=False)
    assert report.skipped == 2 * len(done_before) and report.images == 20 - report.skipped
    seeds, images = _npz_contents(tmp_path)
    np.testing.assert_array_equal(seeds, np.arange(20))
    _, expected = _all_images(ganfast.sample(TinyG(), "0-19"))
    np.testing.assert_array_equal(images, expected)


@pytest.mark.parametrize("psi", [float("nan"), float("inf"), "0.5"])
def test_truncation_must_be_a_finite_number(tmp_path, psi):
    with pytest.raises(ValueError, match="truncation_psi must be a finite number"):
        ganfast.sample(TinyG(), "0-1", truncation_psi=psi)
    with pytest.raises(ValueError, match="truncation_psi must be a finite number"):
        ganfast.write_samples(TinyG(), "0-1", tmp_path / "out", truncation_psi=psi, progress=False)
    assert not (tmp_path / "out").exists()                      # refused before anything is written


def test_a_folder_holds_samples_of_one_kind(tmp_path):
    """A rerun with the same settings resumes (any shard of as many); other settings, weights or numbers of shards
    are refused by name."""
    G, out = TinyG(), tmp_path / "out"
    base = dict(fmt="npz", shard_size=2, progress=False)
    ganfast.write_samples(G, "0-9", out, shard=(0, 2), **base)
    assert ganfast.write_samples(G, "0-9", out, shard=(1, 2), batch_size=3, **base).skipped == 0
    assert ganfast.write_samples(G, "0-9", out, shard=(0, 2), **base).skipped == 5
    changes = [("seeds", dict(seeds="0-11")), ("truncation_psi", dict(truncation_psi=0.5)),
               ("shards", dict(shard=(0, 1))),
               ("format", dict(fmt="webdataset")), ("shard_size", dict(shard_size=5)), ("dtype", dict(dtype="bf16"))]
    for key, change in changes:
        kwargs = {"seeds": "0-9", **base, "shard": (0, 2), **change}
        with pytest.raises(ValueError, match=f"holds samples written with {key}="):
            ganfast.write_samples(G, kwargs.pop("seeds"), out, **kwargs)
    other = TinyG()
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="holds samples written with generator="):
        ganfast.write_samples(other, "0-9", out, **base)
    (out / ganfast.sampling.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="is not a readable sample manifest"):
        ganfast.write_samples(G, "0-9", out, **base)
    seeds, _ = _npz_contents(out)
    np.testing.assert_array_equal(seeds, np.arange(10))       # nothing was added by the refused runs


def test_manifest_records_what_g_is_called_with(tmp_path):
    """noise_mode None means G's default ("const" for TinyG): the same samples, so the same folder; png files
    are one seed each, so a longer seed list extends a png folder."""
    G, out = TinyG(), tmp_path / "png"
    ganfast.write_samples(G, "0-3", out, progress=False)
    assert ganfast.write_samples(G, "0-7", out, noise_mode="const", progress=False).skipped == 4
    with pytest.raises(ValueError, match="noise_mode='const', but this run has noise_mode='random'"):
        ganfast.write_samples(G, "0-7", out, noise_mode="random", progress=False)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        ganfast.write_samples(G, "0-7", tmp_path / "never", batch_size=0, progress=False)
    assert not (tmp_path / "never").exists()


def test_concurrent_claims_of_one_folder(tmp_path, monkeypatch):
    """Two runs starting at once with different settings: the manifest is created exclusively, so the one that
    comes second compares against the first's and is refused, even before any sample exists."""
    import os
    out = tmp_path / "out"
    out.mkdir()
    link = os.link
    settings = ganfast.sampling._settings(TinyG(), list(range(4)), "npz", 2, ganfast.sampling.sample_options(TinyG()))

    def other_run_first(src, dst):  # the other run's manifest lands between our check and our link
        (out / ganfast.sampling.MANIFEST).write_text(json.dumps({**settings, "dtype": "bf16"}))
        return link(src, dst)
    monkeypatch.setattr(os, "link", other_run_first)
    with pytest.raises(ValueError, match=r"was claimed \(it holds no samples yet\) with dtype='bf16'"):
        ganfast.write_samples(TinyG(), "0-3", out, fmt="npz", shard_size=2, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [ganfast.sampling.MANIFEST]  # no temporary file left


def test_kill_mid_run_then_resume(tmp_path):
    script = tmp_path / "run.py"
    out = tmp_path / "out"
    script.write_text(TINY_G + textwrap.dedent(f"""
        import sys, ganfast
        ganfast.write_samples(TinyG(delay=float(sys.argv[1])), "0-59", {str(out)!r}, fmt="png", batch_size=2,
                              progress=False)
    """))
    proc = subprocess.Popen([sys.executable, str(script), "0.05"])
    deadline = time.monotonic() + 120
    while len(list(out.rglob("*.png"))) < 6 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(out.rglob("*.png")))
    assert 6 <= written < 60, written  # killed mid-way
    subprocess.run([sys.executable, str(script), "0"], check=True)
    files = sorted(out.rglob("*.png"))
    assert [f.name for f in files] == [f"seed{s:08d}.png" for s in range(60)]
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary files left behind
    _, expected = _all_images(ganfast.sample(TinyG(), "0-59"))
    for f, image in zip(files, expected):
        np.testing.assert_array_equal(np.asarray(Image.open(f)), image)


def test_npz_of_other_seeds_is_not_overwritten(tmp_path):
    ganfast.write_samples(TinyG(), "0-3", tmp_path, fmt="npz", shard_size=4, progress=False)
    path = tmp_path / "seeds00000000-00000003.npz"
    np.savez(path, images=np.zeros((4, 4, 5, 3), np.uint8), seeds=np.array([0, 1, 2, 9]))
    with pytest.raises(FileExistsError, match="holds seeds 0-2,9, not 0-3"):
        ganfast.write_samples(TinyG(), "0-3", tmp_path, fmt="npz", shard_size=4, progress=False)


@pytest.mark.parametrize("spec,match", [("5-3", "empty"), ("a-b", "inclusive ranges"), ("", "inclusive ranges"),
                                        ("1,1", "duplicates"), ("-1", "inclusive ranges"),
                                        ("0-4294967296", "lie in")])
def test_bad_seeds(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_seeds(spec)


@pytest.mark.parametrize("spec", ["3/2", "1", "a/b", "-1/2", "0/0"])
def test_bad_shard(spec):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(spec)


def test_bad_arguments(tmp_path):
    G = TinyG()
    assert parse_seeds("0-2, 7") == [0, 1, 2, 7] and parse_shard("1/4") == (1, 4)
    with pytest.raises(ValueError, match="fmt"):
        ganfast.write_samples(G, "0-3", tmp_path, fmt="jpg")
    with pytest.raises(ValueError, match="batch_size"):
        ganfast.sample(G, "0-3", batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        ganfast.sample(G, "0-3", dtype="int8")
    with pytest.raises(TypeError, match="z_dim"):
        ganfast.sample(torch.nn.Linear(2, 2), "0-3")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot create the output directory"):
        ganfast.write_samples(G, "0-3", blocker / "sub", progress=False)


def test_cli_sample_from_a_training_run(tmp_path, capsys):
    from ganfast.cli import main
    from ganfast.data import load_dataset
    from ganfast.models import DCGANGenerator, SNGANDiscriminator
    from ganfast.train import Trainer, TrainConfig, load_generator
    run = tmp_path / "run"
    torch.manual_seed(0)
    trainer = Trainer(DCGANGenerator(z_dim=8, base_channels=8), SNGANDiscriminator(base_channels=4),
                      load_dataset("digits"), str(run), TrainConfig(batch_size=8, tick_steps=2, num_fixed=8),
                      progress=False)
    trainer.train(2)
    G = load_generator(run)
    for key, value in trainer.G_ema.state_dict().items():
        assert torch.equal(G.state_dict()[key], value), key
    assert main(["sample", "--checkpoint", str(run), "--seeds", "0-5", "--out", str(tmp_path / "npz"),
                 "--format", "npz", "--shard-size", "4", "--no-progress"]) == 0
    seeds, images = _npz_contents(tmp_path / "npz")
    np.testing.assert_array_equal(seeds, np.arange(6))
    np.testing.assert_array_equal(images, _all_images(ganfast.sample(G, "0-5"))[1])
    assert images.shape == (6, 16, 16, 1)
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", str(tmp_path / "nowhere"), "--seeds", "0-1", "--out", str(tmp_path / "x")])
    assert "ganfast sample: error: checkpoint: no checkpoint at" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_generator(tmp_path / "bad.safetensors")


def test_generator_must_return_images():
    class PointsG(torch.nn.Module):
        z_dim = 2

        def forward(self, z):
            return z
    with pytest.raises(ValueError, match="images"):
        next(ganfast.sample(PointsG(), "0-1"))


# ---- CUDA graphs: the CPU-testable logic, with the capture replaced by a stand-in ---------------------------------

class _FakeGraph:
    """Stands in for a captured CUDA graph: replay() reruns the forward on the static inputs into the static
    output (``shift`` makes the replay differ from the eager forward) and records what it was given."""

    def __init__(self, run, inputs, kwargs, shift=0):
        self.run, self.inputs, self.kwargs, self.shift = run, inputs, kwargs, shift
        self.output = run(*inputs, **kwargs).clone()
        self.replayed = []

    def replay(self):
        self.replayed.append([x.clone() for x in self.inputs])
        self.output.copy_(self.run(*self.inputs, **self.kwargs) + self.shift)


def _fake_capture(monkeypatch, shift=0):
    graphs = []

    def capture(run, inputs, kwargs):
        graphs.append(_FakeGraph(run, inputs, kwargs, shift))
        return graphs[-1], graphs[-1].output
    monkeypatch.setattr(ganfast.sampling, "_capture_cuda_graph", capture)
    return graphs


def _graphed(G, seeds, batch_size, **options):
    """ganfast.sample's batches with cuda_graph forced on (the options refuse it on a CPU)."""
    from dataclasses import replace
    opts = replace(ganfast.sampling.sample_options(G, num_seeds=len(seeds), **options), cuda_graph=True)
    return ganfast.sampling._generate(G, list(seeds), batch_size, opts, opts.labels_for(list(seeds)))


def _cond_g():
    from ganfast.models import DCGANGenerator
    torch.manual_seed(0)
    return DCGANGenerator(z_dim=8, resolution=16, channels=1, base_channels=4, c_dim=3)


@pytest.mark.parametrize("make_g", [TinyG, _cond_g])
def test_cuda_graph_replay_pads_the_last_batch(monkeypatch, make_g):
    """One capture for the run; every batch replayed through the static buffers, the last (1 of 3 rows) padded
    with zero rows; the images are the eager ones, seed by seed."""
    graphs = _fake_capture(monkeypatch)
    G = make_g()
    seeds, images = _all_images(_graphed(G, range(7), 3))
    _, eager = _all_images(ganfast.sample(G, range(7), batch_size=7, cuda_graph=False))
    np.testing.assert_array_equal(seeds, np.arange(7))
    np.testing.assert_array_equal(images, eager)
    assert len(graphs) == 1 and len(graphs[0].replayed) == 3
    last = graphs[0].replayed[-1]
    assert len(last) == (2 if getattr(G, "c_dim", 0) else 1) and all(x.shape[0] == 3 and not x[1:].any() for x in last)
    assert last[0][0].equal(seed_latents([6], 8)[0])


def test_cuda_graph_not_captured_for_one_batch(monkeypatch):
    graphs = _fake_capture(monkeypatch)
    _all_images(_graphed(TinyG(), range(3), 3))
    assert graphs == []


@pytest.mark.parametrize("failure,match", [("capture", "capture failed .RuntimeError: operation not permitted"),
                                           ("replay", "its images differ from the eager forward's")])
def test_cuda_graph_failure_falls_back_to_eager(monkeypatch, failure, match):
    """A capture that raises, or a replay whose images differ from eager: one warning naming why, then G runs
    without a graph (never captured again) and the images are the eager ones."""
    graphs = _fake_capture(monkeypatch, shift=0 if failure == "capture" else 0.5)
    if failure == "capture":
        def broken(run, inputs, kwargs):
            graphs.append(None)
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        monkeypatch.setattr(ganfast.sampling, "_capture_cuda_graph", broken)
    G = TinyG()
    with pytest.warns(RuntimeWarning, match=f"CUDA graph of TinyG: {match}.*; running it without a graph") as record:
        _, images = _all_images(_graphed(G, range(7), 2))
    assert len(record) == 1 and len(graphs) == 1
    np.testing.assert_array_equal(images, _all_images(ganfast.sample(G, range(7), cuda_graph=False))[1])


def test_cuda_graph_option():
    """Default: on a CUDA device unless noise is random; asking for it where it cannot work is an error."""
    from ganfast.sampling import _check_cuda_graph, sample_options
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert _check_cuda_graph(None, cuda, None) and _check_cuda_graph(None, cuda, "const")
    assert not _check_cuda_graph(None, cuda, "random") and not _check_cuda_graph(None, cpu, None)
    assert not _check_cuda_graph(False, cuda, "const") and _check_cuda_graph(True, cuda, "none")
    assert sample_options(TinyG()).cuda_graph is False
    with pytest.raises(ValueError, match="cuda_graph=True needs a generator on a CUDA device; G is on cpu"):
        sample_options(TinyG(), cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph=True cannot be used with noise_mode='random'"):
        _check_cuda_graph(True, cuda, "random")
    with pytest.raises(ValueError, match="cuda_graph must be True, False or None"):
        sample_options(TinyG(), cuda_graph="yes")


@pytest.mark.parametrize("flag,expected", [([], None), (["--cuda-graph"], True), (["--no-cuda-graph"], False)])
def test_cli_cuda_graph_flag(monkeypatch, tmp_path, flag, expected):
    from ganfast import checkpoint, sampling
    from ganfast.cli import main
    seen = {}

    def write_samples(G, seeds, out, **kwargs):
        seen.update(kwargs)
        return sampling.SampleReport(0, 0, 0.0, out)
    monkeypatch.setattr(checkpoint, "load_generator", lambda *args, **kwargs: TinyG())
    monkeypatch.setattr(sampling, "write_samples", write_samples)
    assert main(["sample", "--checkpoint", "x", "--seeds", "0-3", "--out", str(tmp_path), "--device", "cpu",
                 "--no-progress", *flag]) == 0
    assert seen["cuda_graph"] is expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_cuda_graph_on_a_gpu(monkeypatch, dtype):
    """On a GPU, by default: captured once, no warning, the images of the eager forward at the same batch size
    (the last batch of 2 padded to 4)."""
    import warnings
    from ganfast.models import StyleGAN2Generator
    captures = []
    capture = ganfast.sampling._capture_cuda_graph
    monkeypatch.setattr(ganfast.sampling, "_capture_cuda_graph", lambda *a: captures.append(1) or capture(*a))
    torch.manual_seed(0)
    G = StyleGAN2Generator(img_resolution=16, num_fp16_res=2, conv_clamp=256).cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, graphed = _all_images(ganfast.sample(G, range(10), batch_size=4, dtype=dtype))
    _, eager = _all_images(ganfast.sample(G, range(10), batch_size=4, dtype=dtype, cuda_graph=False))
    assert captures == [1]
    np.testing.assert_array_equal(graphed[:8], eager[:8])
    _, last_padded = _all_images(ganfast.sample(G, [8, 9, 0, 1], batch_size=4, dtype=dtype, cuda_graph=False))
    np.testing.assert_array_equal(graphed[8:], last_padded[:2])


def _dcgan_with_running_stats(c_dim=0):
    from ganfast.models import DCGANGenerator
    torch.manual_seed(3)
    G = DCGANGenerator(z_dim=16, resolution=16, base_channels=8, c_dim=c_dim)
    for m in G.modules():  # statistics as after training, so that folding them changes something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    return G


def test_one_channel_conv_matches_conv2d():
    """The GEMM-and-shifted-adds form of a one-channel "same" convolution equals Conv2d in float64 (kernels 1, 3,
    5, with and without bias, channels_last input), gives a row the same bits at any batch size (float32), and
    replaces only the convolutions it computes."""
    from ganfast.sampling import _OneChannelConv
    torch.manual_seed(0)
    for k, bias in ((1, True), (3, True), (3, False), (5, True)):
        conv = torch.nn.Conv2d(6, 1, k, padding=k // 2, bias=bias).double()
        x = torch.randn(3, 6, 7, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        assert _OneChannelConv.fits(conv)
        torch.testing.assert_close(_OneChannelConv(conv)(x), conv(x), rtol=1e-12, atol=1e-12)
    conv = torch.nn.Conv2d(32, 1, 3, padding=1)
    x = torch.randn(64, 32, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        full = _OneChannelConv(conv)(x)
        assert all(torch.equal(_OneChannelConv(conv)(x[:n]), full[:n]) for n in (1, 5, 63))
    for other in (torch.nn.Conv2d(6, 2, 3, padding=1), torch.nn.Conv2d(6, 1, 3), torch.nn.Conv2d(6, 1, 3, 2, 1),
                  torch.nn.Conv2d(6, 1, (3, 1), padding=(1, 0)), torch.nn.Conv2d(6, 1, 2, padding=1),
                  torch.nn.Conv2d(6, 1, 3, padding=1, padding_mode="reflect"), torch.nn.Linear(6, 1)):
        assert not _OneChannelConv.fits(other)


def test_inference_model_folds_batch_norm_and_every_path_uses_it(monkeypatch):
    """On a CPU, sampling runs a copy of G with its eval-mode batch norms folded into the layers before them,
    channels_last, its ReLUs in place, its output conv a _OneChannelConv: close to G (float rounding), G itself
    untouched, and the same bits for a seed at any batch size; a generator without random layer noise gets no
    per-seed noise generators."""
    from ganfast.sampling import inference_model, to_uint8_nhwc
    G = _dcgan_with_running_stats().eval()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    folded = inference_model(G)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded.to_image, ganfast.sampling._OneChannelConv)
    relus = [m for m in folded.modules() if isinstance(m, torch.nn.ReLU)]  # each follows a fold: runs in place
    assert relus and all(m.inplace for m in relus)
    assert not any(m.inplace for m in G.modules() if isinstance(m, torch.nn.ReLU))
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    z = seed_latents(range(12), 16)
    with torch.no_grad():
        want, got = G(z), folded(z)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.equal(got, want)  # the fold is real: the floats differ in the last bits
    monkeypatch.setattr(ganfast.sampling, "per_sample_noise", None)  # must not be called: G has no noise inputs
    seeds, images = _all_images(ganfast.sample(G, range(12), batch_size=5))
    np.testing.assert_array_equal(images, _all_images(ganfast.sample(G, range(12)))[1])
    np.testing.assert_array_equal(images, to_uint8_nhwc(got).numpy())
    assert G.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())
    conditional = _dcgan_with_running_stats(c_dim=3).eval()  # label-dependent batch norm: nothing to fold
    assert inference_model(conditional) is conditional
